//! Every attribute key, metric name and bucket list that Strike exports, in one place.
//!
//! The `gen_ai.*` keys follow the OpenTelemetry `GenAI` semantic conventions (semconv 1.42.0,
//! since moved to the `semantic-conventions-genai` repository). The Rust constants of
//! `opentelemetry-semantic-conventions` for them are deprecated and behind an experimental
//! feature, so Strike keeps its own copies here; `docs/EXPORT.md` maps each one to its
//! `RequestRecord` field.

/// `gen_ai.operation.name`: `chat`, `text_completion` or `embeddings`.
pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
/// `gen_ai.provider.name` (semconv 1.37+; replaces `gen_ai.system`).
pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
/// `gen_ai.system`: deprecated by `gen_ai.provider.name`, emitted alongside it for backends
/// that still key on it (see `ExportConfig::legacy_gen_ai_system`).
pub const GEN_AI_SYSTEM: &str = "gen_ai.system";
/// `gen_ai.request.model`.
pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
/// `gen_ai.request.max_tokens`.
pub const GEN_AI_REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
/// `gen_ai.request.choice.count` (the request's `n`; the conventions want it when not 1).
pub const GEN_AI_REQUEST_CHOICE_COUNT: &str = "gen_ai.request.choice.count";
/// `gen_ai.request.stream`: the response was streamed.
pub const GEN_AI_REQUEST_STREAM: &str = "gen_ai.request.stream";
/// `gen_ai.response.model`.
pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
/// `gen_ai.response.id`.
pub const GEN_AI_RESPONSE_ID: &str = "gen_ai.response.id";
/// `gen_ai.response.finish_reasons` (string array, one per choice).
pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
/// `gen_ai.response.time_to_first_chunk` (seconds, streaming responses).
pub const GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
/// `gen_ai.usage.input_tokens`.
pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// `gen_ai.usage.output_tokens`.
pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// `gen_ai.usage.cache_read.input_tokens` (included in `gen_ai.usage.input_tokens`).
pub const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
/// `gen_ai.usage.cache_creation.input_tokens` (written to the cache; included in
/// `gen_ai.usage.input_tokens`).
pub const GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: &str =
    "gen_ai.usage.cache_creation.input_tokens";
/// `gen_ai.usage.reasoning.output_tokens` (included in `gen_ai.usage.output_tokens`).
pub const GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: &str = "gen_ai.usage.reasoning.output_tokens";
/// `gen_ai.token.type`: `input` or `output`.
pub const GEN_AI_TOKEN_TYPE: &str = "gen_ai.token.type";

/// `server.address` (the inference server's listening address, when known).
pub const SERVER_ADDRESS: &str = "server.address";
/// The traced process's container (a resource attribute in the conventions; on each span
/// here, since one Strike serves many containers).
pub const CONTAINER_ID: &str = "container.id";
/// The traced process's Kubernetes pod (resource attribute in the conventions, per span here).
pub const K8S_POD_UID: &str = "k8s.pod.uid";
/// `server.port`.
pub const SERVER_PORT: &str = "server.port";
/// `client.address` (the record's `peer`: the connecting client).
pub const CLIENT_ADDRESS: &str = "client.address";
/// `client.port`.
pub const CLIENT_PORT: &str = "client.port";
/// `error.type`.
pub const ERROR_TYPE: &str = "error.type";
/// `http.request.method`.
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
/// `http.response.status_code`.
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
/// `url.path` (the request target without its query, which can carry credentials).
pub const URL_PATH: &str = "url.path";

/// Strike's request id (UUID v7).
pub const STRIKE_REQUEST_ID: &str = "strike.request_id";
/// Traced process id.
pub const STRIKE_PID: &str = "strike.pid";
/// Traced process `comm`.
pub const STRIKE_COMM: &str = "strike.comm";
/// Strike's connection id.
pub const STRIKE_CONN_ID: &str = "strike.conn_id";
/// Where the token numbers came from (`usage`, `timings`, `estimated`, `none`).
pub const STRIKE_TOKEN_SOURCE: &str = "strike.token_source";
/// Where `gen_ai.usage.input_tokens` came from.
pub const STRIKE_INPUT_TOKEN_SOURCE: &str = "strike.input_token_source";
/// Where `gen_ai.usage.output_tokens` came from.
pub const STRIKE_OUTPUT_TOKEN_SOURCE: &str = "strike.output_token_source";
/// Where a token count came from, on `strike.token.usage` points.
pub const STRIKE_TOKEN_COUNT_SOURCE: &str = "strike.token.count_source";
/// Built from an incomplete capture.
pub const STRIKE_PARTIAL: &str = "strike.partial";
/// Why the record is partial.
pub const STRIKE_PARTIAL_REASON: &str = "strike.partial_reason";
/// Bytes of the whole HTTP request.
pub const STRIKE_REQUEST_BYTES: &str = "strike.request_bytes";
/// Bytes of the whole HTTP response.
pub const STRIKE_RESPONSE_BYTES: &str = "strike.response_bytes";
/// Time to first token, ms.
pub const STRIKE_TTFT_MS: &str = "strike.ttft_ms";
/// Time to the first answer (not reasoning) token, ms.
pub const STRIKE_ANSWER_TTFT_MS: &str = "strike.answer_ttft_ms";
/// The server's own times, ms (see `RequestRecord::server_load_ms`).
pub const STRIKE_SERVER_LOAD_MS: &str = "strike.server.load_ms";
pub const STRIKE_SERVER_PROMPT_MS: &str = "strike.server.prompt_ms";
pub const STRIKE_SERVER_DECODE_MS: &str = "strike.server.decode_ms";
/// The request's share of GPU time and energy at the configured prices, USD.
pub const STRIKE_COST_USD: &str = "strike.cost_usd";
/// GPU time attributed to the request, s (summed over devices).
pub const STRIKE_GPU_SECONDS: &str = "strike.gpu.seconds";
/// GPU energy attributed to the request, J.
pub const STRIKE_GPU_ENERGY_J: &str = "strike.gpu.energy_j";
/// The request's tokens at the configured per-token prices, USD.
pub const STRIKE_CHARGEBACK_USD: &str = "strike.chargeback_usd";
/// The tenant (configured request header).
pub const STRIKE_TENANT: &str = "strike.tenant";
/// A hash of the request's API key (never the key).
pub const STRIKE_API_KEY_HASH: &str = "strike.api_key_hash";
/// End to end, ms.
pub const STRIKE_E2E_MS: &str = "strike.e2e_ms";
/// Time per output token, ms.
pub const STRIKE_TPOT_MS: &str = "strike.tpot_ms";
/// Mean inter-token latency, ms.
pub const STRIKE_ITL_MEAN_MS: &str = "strike.itl_mean_ms";
/// Largest inter-token latency, ms.
pub const STRIKE_ITL_MAX_MS: &str = "strike.itl_max_ms";
/// Events in the response stream.
pub const STRIKE_STREAM_EVENTS: &str = "strike.stream_events";
/// Stream events that carried content.
pub const STRIKE_CONTENT_EVENTS: &str = "strike.content_events";
/// The server's error message: only with `ExportConfig::include_error_messages`.
pub const STRIKE_ERROR_MESSAGE: &str = "strike.error_message";

/// Span event at the first token (first content-bearing stream event, or first body byte).
pub const EVENT_FIRST_TOKEN: &str = "gen_ai.first_token";

/// `gen_ai.operation.name` values.
pub mod operation {
    /// Chat completions (`/v1/chat/completions`, Ollama `/api/chat`).
    pub const CHAT: &str = "chat";
    /// Completions (`/v1/completions`, Ollama `/api/generate`).
    pub const TEXT_COMPLETION: &str = "text_completion";
    /// Embeddings.
    pub const EMBEDDINGS: &str = "embeddings";
    /// Reranking documents against a query (`/rerank`): no predefined value fits, so a
    /// system-specific one, as the conventions recommend.
    pub const RERANK: &str = "rerank";
    /// Scoring text pairs (`/score`): system-specific, as `rerank`.
    pub const SCORE: &str = "score";
    /// Counting a prompt's tokens (`/v1/messages/count_tokens`): system-specific.
    pub const COUNT_TOKENS: &str = "count_tokens";
}

/// `gen_ai.token.type` values.
pub mod token_type {
    /// Prompt tokens.
    pub const INPUT: &str = "input";
    /// Generated tokens.
    pub const OUTPUT: &str = "output";
}

/// `gen_ai.provider.name` value Strike uses unless configured otherwise: the wire protocol
/// is `OpenAI`'s, and the conventions set the provider "based on the instrumentation's best
/// knowledge" (a self-hosted engine is not among the well-known values).
pub const DEFAULT_PROVIDER_NAME: &str = "openai";

/// `gen_ai.server.request.duration`, histogram, seconds.
pub const METRIC_SERVER_REQUEST_DURATION: &str = "gen_ai.server.request.duration";
/// `gen_ai.server.time_to_first_token`, histogram, seconds (successful requests).
pub const METRIC_SERVER_TIME_TO_FIRST_TOKEN: &str = "gen_ai.server.time_to_first_token";
/// `gen_ai.server.time_per_output_token`, histogram, seconds (successful requests).
pub const METRIC_SERVER_TIME_PER_OUTPUT_TOKEN: &str = "gen_ai.server.time_per_output_token";
/// Strike's token usage histogram, `{token}`, by `gen_ai.token.type`. The conventions
/// define no server-side token metric; `gen_ai.client.token.usage` would be counted twice
/// by a backend that also receives the application's client-side telemetry.
pub const METRIC_STRIKE_TOKEN_USAGE: &str = "strike.token.usage";
/// Strike's request counter, `{request}`, by operation, model, status and `error.type`.
pub const METRIC_STRIKE_REQUESTS: &str = "strike.requests";

/// Bucket boundaries of `gen_ai.server.request.duration`, as the conventions specify.
pub const REQUEST_DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Bucket boundaries of `gen_ai.server.time_to_first_token`, as the conventions specify.
pub const TIME_TO_FIRST_TOKEN_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Bucket boundaries of `gen_ai.server.time_per_output_token`, as the conventions specify.
pub const TIME_PER_OUTPUT_TOKEN_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// Bucket boundaries of `strike.token.usage`: those of `gen_ai.client.token.usage`.
pub const TOKEN_USAGE_BUCKETS: [f64; 14] = [
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
    16_777_216.0,
    67_108_864.0,
];

/// Instrumentation scope name of Strike's tracer and meter.
pub const SCOPE_NAME: &str = "strike";
/// Semantic conventions version the keys above follow.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.42.0";

/// Strike's self-telemetry instruments (Prometheus: `_total` and unit suffixes added).
pub const METRIC_STRIKE_CAPTURE_EVENTS: &str = "strike.capture.events";
pub const METRIC_STRIKE_CAPTURE_PAYLOAD: &str = "strike.capture.payload";
pub const METRIC_STRIKE_CAPTURE_LOST: &str = "strike.capture.lost";
pub const METRIC_STRIKE_CAPTURE_TRUNCATED: &str = "strike.capture.truncated";
pub const METRIC_STRIKE_CAPTURE_TRUNCATED_PAYLOAD: &str = "strike.capture.truncated.payload";
pub const METRIC_STRIKE_CAPTURE_MAP_FULL: &str = "strike.capture.map_full";
pub const METRIC_STRIKE_CAPTURE_READ_FAULTS: &str = "strike.capture.read_faults";
pub const METRIC_STRIKE_STREAM_GAPS: &str = "strike.stream.gaps";
pub const METRIC_STRIKE_STREAM_GAP_PAYLOAD: &str = "strike.stream.gap.payload";
pub const METRIC_STRIKE_STREAM_EVICTIONS: &str = "strike.stream.evictions";
pub const METRIC_STRIKE_RECORDS: &str = "strike.records";
pub const METRIC_STRIKE_RECORDS_DROPPED: &str = "strike.records.dropped";
pub const METRIC_STRIKE_EXPORT_SPANS: &str = "strike.export.spans";
pub const METRIC_STRIKE_EXPORT_METRIC_FAILURES: &str = "strike.export.metric_failures";
pub const METRIC_STRIKE_TARGETS: &str = "strike.targets";
pub const METRIC_STRIKE_PARSE_ERRORS: &str = "strike.parse.errors";
pub const METRIC_STRIKE_PARSE_LIMITS: &str = "strike.parse.limits";
pub const METRIC_STRIKE_TRACKER_EVICTIONS: &str = "strike.tracker.evictions";
pub const METRIC_STRIKE_MEMORY_BUDGET_EVICTIONS: &str = "strike.memory.budget_evictions";
pub const METRIC_STRIKE_MEMORY_BUFFERED: &str = "strike.memory.buffered";
pub const METRIC_STRIKE_GPU_SAMPLES_LOST: &str = "strike.gpu.samples.lost";
pub const METRIC_STRIKE_SESSION_FAILURES: &str = "strike.session.failures";

/// Attributes of the self-telemetry instruments.
pub const STRIKE_REASON: &str = "strike.reason";
pub const STRIKE_STAGE: &str = "strike.stage";
pub const STRIKE_MAP: &str = "strike.map";
pub const STRIKE_OUTCOME: &str = "strike.outcome";

/// Cost metrics: per model and tenant.
pub const METRIC_STRIKE_COST: &str = "strike.cost";
pub const METRIC_STRIKE_GPU_TIME: &str = "strike.gpu.time";
pub const METRIC_STRIKE_GPU_ENERGY: &str = "strike.gpu.energy";
pub const METRIC_STRIKE_TOKENS_PER_JOULE: &str = "strike.gpu.tokens_per_joule";
/// Idle cost, time and energy (no request in flight on the device).
pub const METRIC_STRIKE_GPU_IDLE_COST: &str = "strike.gpu.idle.cost";
pub const METRIC_STRIKE_GPU_IDLE_TIME: &str = "strike.gpu.idle.time";
pub const METRIC_STRIKE_GPU_IDLE_ENERGY: &str = "strike.gpu.idle.energy";
/// Token-type buckets for the tokens-per-joule histogram.
pub const TOKENS_PER_JOULE_BUCKETS: [f64; 12] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0,
];
