//! The per-request record: what Strike reports for one HTTP request to an inference server.

use serde::Serialize;

/// Which inference API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    /// `POST /v1/chat/completions` (or `/chat/completions`).
    ChatCompletions,
    /// `POST /v1/completions` (or `/completions`).
    Completions,
    /// `POST /v1/embeddings` (or `/embeddings`).
    Embeddings,
    /// Ollama's native `POST /api/chat` (NDJSON).
    OllamaChat,
    /// Ollama's native `POST /api/generate` (NDJSON).
    OllamaGenerate,
    /// Ollama's native `POST /api/embed` or `/api/embeddings`.
    OllamaEmbed,
    /// `POST /v1/messages`: the Anthropic Messages API (vLLM, `SGLang`, llama.cpp, Ollama).
    Messages,
    /// `POST /v1/responses`: the `OpenAI` Responses API (vLLM, `SGLang`).
    Responses,
    /// `POST /v1/messages/count_tokens`: the Messages API's prompt count (nothing generated).
    CountTokens,
    /// TGI's native `POST /generate` and `POST /generate_stream` (SSE).
    TgiGenerate,
    /// Triton's generate extension: `POST /v2/models/{model}[/versions/{v}]/generate` and
    /// `…/generate_stream` (SSE).
    TritonGenerate,
    /// `POST /rerank`, `/v1/rerank`, `/v2/rerank` (vLLM, TEI, Jina- and Cohere-style).
    Rerank,
    /// `POST /score`, `/v1/score` (vLLM).
    Score,
    /// Any other request (health checks, `/metrics`, `/v1/models`...): head only.
    Other,
}

impl Api {
    /// An API that generates nothing (embeddings, rerank, score, prompt counts): its
    /// output is 0 tokens.
    pub fn generates_nothing(self) -> bool {
        matches!(
            self,
            Self::Embeddings | Self::OllamaEmbed | Self::CountTokens | Self::Rerank | Self::Score
        )
    }
}

/// Where the token numbers of a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The server's own counts (`usage`, or Ollama's `prompt_eval_count`/`eval_count`).
    Usage,
    /// llama.cpp's `timings` (`prompt_n` + `cache_n`, `predicted_n`).
    Timings,
    /// Estimated by Strike (see `input_token_source`/`output_token_source`).
    Estimated,
    /// No numbers.
    None,
}

/// Where one token number came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CountSource {
    /// The server's `usage` (or Ollama's counts).
    Usage,
    /// llama.cpp's `timings`.
    Timings,
    /// Output: the number of content-bearing stream deltas summed over choices (servers
    /// such as vLLM and llama.cpp send one token per delta; an estimate).
    StreamCount,
    /// Input: the prompt's text bytes / 4, rounded up (an estimate).
    PromptBytes,
    /// Output of a non-streaming response: its generated text bytes / 4 (an estimate).
    TextBytes,
    /// Fixed by the API (embeddings produce no output tokens).
    Api,
}

/// One HTTP request seen by Strike, with its response.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Strike's id for this request (UUID v7).
    pub request_id: String,
    /// The server's response id (`id` of the completion), when seen.
    pub response_id: Option<String>,
    /// Process id (thread group id) of the traced process.
    pub pid: u32,
    /// `comm` of the traced process.
    pub comm: String,
    /// Container the traced process runs in (from its cgroup), when it runs in one.
    pub container_id: Option<String>,
    /// Kubernetes pod UID of the traced process (from its cgroup), when it runs in a pod.
    pub k8s_pod_uid: Option<String>,
    /// Strike's connection id (unique for the session).
    pub conn_id: u64,
    /// The other end of the connection, when known.
    pub peer: Option<String>,
    /// HTTP method; empty when the request itself was not captured.
    pub method: String,
    /// Request target (path and query); empty when the request was not captured.
    pub path: String,
    /// The server's name as the client addressed it (the request's `Host`).
    pub server_address: Option<String>,
    /// The server's port (from `Host`, else the traced process's only listening port).
    pub server_port: Option<u16>,
    /// The request's W3C `traceparent` header: the record's span joins that trace.
    pub traceparent: Option<String>,
    /// Final HTTP status (interim 1xx responses are not reported).
    pub status: Option<u16>,
    /// Which API the request used.
    pub api: Api,
    /// Model: the response's `model`, else the request's.
    pub model: Option<String>,
    /// The `model` the request asked for.
    pub request_model: Option<String>,
    /// The response was streamed (SSE or NDJSON), or the request asked for streaming when
    /// no response was seen.
    pub stream: bool,
    /// The request's `stream_options.include_usage`.
    pub include_usage: Option<bool>,
    /// The request's `n` (choices asked for).
    pub n: Option<u64>,
    /// The request's `max_completion_tokens`, else `max_tokens` (Ollama: `options.num_predict`).
    pub max_tokens: Option<u64>,
    /// Prompt (input) tokens.
    pub input_tokens: Option<u64>,
    /// Generated (output) tokens; 0 for embeddings.
    pub output_tokens: Option<u64>,
    /// Input tokens served from the server's prefix cache
    /// (`usage.prompt_tokens_details.cached_tokens`, llama.cpp `timings.cache_n`).
    pub cached_input_tokens: Option<u64>,
    /// Input tokens written to the prompt cache (Anthropic `cache_creation_input_tokens`),
    /// part of `input_tokens`.
    pub cache_write_input_tokens: Option<u64>,
    /// Output tokens spent reasoning (`completion_tokens_details.reasoning_tokens`), part
    /// of `output_tokens`.
    pub reasoning_output_tokens: Option<u64>,
    /// Where the token numbers came from: "usage", "timings", "estimated" or "none".
    pub token_source: TokenSource,
    /// Where `input_tokens` came from.
    pub input_token_source: Option<CountSource>,
    /// Where `output_tokens` came from.
    pub output_token_source: Option<CountSource>,
    /// Wall-clock time (RFC 3339, nanoseconds) of the request's first byte.
    pub start: String,
    /// Time to first token, ms: first content-bearing stream event (or, not streaming,
    /// first response body byte) minus the request's first byte.
    pub ttft_ms: Option<f64>,
    /// Time to the first answer token, ms (streams): the first stream event with answer
    /// content (text or tool calls, not reasoning) minus the request's first byte. Beside
    /// `ttft_ms`, it tells thinking time from answer latency.
    pub answer_ttft_ms: Option<f64>,
    /// The server's own times, ms, beside the wire's: loading the model (Ollama
    /// `load_duration`), evaluating the prompt (Ollama `prompt_eval_duration`, llama.cpp
    /// `timings.prompt_ms`), generating (Ollama `eval_duration`, llama.cpp
    /// `timings.predicted_ms`).
    pub server_load_ms: Option<f64>,
    pub server_prompt_ms: Option<f64>,
    pub server_decode_ms: Option<f64>,
    /// End to end, ms: the response's last byte minus the request's first byte.
    pub e2e_ms: Option<f64>,
    /// Time per output token, ms: (last content event - first content event) /
    /// (`output_tokens` - 1), streaming responses with at least 2 output tokens.
    pub tpot_ms: Option<f64>,
    /// Mean gap between consecutive content-bearing stream events, ms.
    pub itl_mean_ms: Option<f64>,
    /// Largest gap between consecutive content-bearing stream events, ms.
    pub itl_max_ms: Option<f64>,
    /// Events in the response stream (SSE events or NDJSON lines, `[DONE]` included).
    pub stream_events: u32,
    /// Stream events that carried content (text, reasoning or tool calls).
    pub content_events: u32,
    /// Bytes of the whole HTTP request, head included.
    pub request_bytes: u64,
    /// Bytes of the whole HTTP response, heads (1xx included) and chunk framing included.
    pub response_bytes: u64,
    /// Choice 0's `finish_reason` (Ollama: `done_reason`).
    pub finish_reason: Option<String>,
    /// Every choice's `finish_reason`, by choice index (null when not seen).
    pub finish_reasons: Vec<Option<String>>,
    /// Why the request failed: the `error.type` (or `code`) of an error body or stream
    /// event, else `http_<status>` for a 4xx/5xx, or `client_disconnected`.
    pub error: Option<String>,
    /// The error's message, truncated to 256 characters.
    pub error_message: Option<String>,
    /// GPU time attributed to this request, s (summed over devices).
    pub gpu_seconds: Option<f64>,
    /// GPU energy attributed to this request, J (at the board, before PUE).
    pub gpu_energy_j: Option<f64>,
    /// What the request cost: its share of GPU time at the GPU's hourly price plus its
    /// share of energy at the energy price × PUE.
    pub cost_usd: Option<f64>,
    /// The request's tokens at the configured per-token prices (chargeback), when set.
    pub chargeback_usd: Option<f64>,
    /// The tenant, from the configured tenant header.
    pub tenant: Option<String>,
    /// A hash of the request's API key (`Authorization: Bearer`, `x-api-key`, `api-key`):
    /// an attribution key, never the key.
    pub api_key_hash: Option<String>,
    /// Built from an incomplete capture: numbers may be missing or low.
    pub partial: bool,
    /// Why the record is partial (comma-separated when several).
    pub partial_reason: Option<String>,
    /// Kernel monotonic ns of the request's first byte.
    #[serde(skip)]
    pub start_ns: u64,
    /// Kernel monotonic ns of the final response head.
    #[serde(skip)]
    pub response_head_ns: Option<u64>,
    /// Kernel monotonic ns of the first token (first content event, or first body byte).
    #[serde(skip)]
    pub first_token_ns: Option<u64>,
    /// Kernel monotonic ns of the last content-bearing event.
    #[serde(skip)]
    pub last_token_ns: Option<u64>,
    /// Kernel monotonic ns of the response's last byte seen (`None` when no response byte
    /// arrived: an exchange given up before its response has no end).
    #[serde(skip)]
    pub end_ns: Option<u64>,
}

/// Records for the tests of later stages (the export, the endpoint).
#[doc(hidden)]
pub mod testing {
    use super::{Api, CountSource, RequestRecord, TokenSource};

    /// A complete streaming chat record.
    pub fn sample() -> RequestRecord {
        RequestRecord {
            request_id: "0194c3a0-0000-7000-8000-000000000001".to_owned(),
            response_id: Some("chatcmpl-42".to_owned()),
            pid: 4242,
            comm: "llama-server".to_owned(),
            container_id: None,
            k8s_pod_uid: None,
            conn_id: 7,
            peer: Some("127.0.0.1:51234".to_owned()),
            method: "POST".to_owned(),
            path: "/v1/chat/completions".to_owned(),
            server_address: Some("127.0.0.1".to_owned()),
            server_port: Some(8080),
            traceparent: None,
            status: Some(200),
            api: Api::ChatCompletions,
            model: Some("tiny".to_owned()),
            request_model: Some("tiny".to_owned()),
            stream: true,
            include_usage: Some(true),
            n: None,
            max_tokens: Some(16),
            input_tokens: Some(12),
            output_tokens: Some(16),
            cached_input_tokens: None,
            cache_write_input_tokens: None,
            reasoning_output_tokens: None,
            token_source: TokenSource::Usage,
            input_token_source: Some(CountSource::Usage),
            output_token_source: Some(CountSource::Usage),
            start: "2025-01-02T03:04:05.123456789Z".to_owned(),
            ttft_ms: Some(20.0),
            answer_ttft_ms: Some(20.0),
            server_load_ms: None,
            server_prompt_ms: None,
            server_decode_ms: None,
            e2e_ms: Some(320.0),
            tpot_ms: Some(20.0),
            itl_mean_ms: Some(20.0),
            itl_max_ms: Some(25.0),
            stream_events: 18,
            content_events: 16,
            request_bytes: 300,
            response_bytes: 4000,
            finish_reason: Some("length".to_owned()),
            finish_reasons: vec![Some("length".to_owned())],
            error: None,
            error_message: None,
            gpu_seconds: None,
            gpu_energy_j: None,
            cost_usd: None,
            chargeback_usd: None,
            tenant: None,
            api_key_hash: None,
            partial: false,
            partial_reason: None,
            start_ns: 5_000_000_000,
            response_head_ns: Some(5_010_000_000),
            first_token_ns: Some(5_020_000_000),
            last_token_ns: Some(5_320_000_000),
            end_ns: Some(5_320_000_000),
        }
    }
}
