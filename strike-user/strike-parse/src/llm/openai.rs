//! OpenAI-compatible API semantics (and Ollama's native `/api/*`): which API a request
//! uses (the Anthropic Messages API too, whose bodies `anthropic.rs` reads), what its JSON
//! body asks for, and what a response body or stream event says.
//! Lenient by design: unknown fields are ignored, a field of an unexpected type is absent.

use serde_json::{Map, Value};

use crate::{
    record::Api,
    tokens::{Timings, Usage},
};

/// Wire dialect of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Ollama,
    /// The Anthropic Messages API (`llm/anthropic.rs`).
    Anthropic,
    /// The `OpenAI` Responses API (`llm/responses.rs`).
    Responses,
    /// TGI's and Triton's native generate APIs (`llm/generate.rs`).
    Generate,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("body is not valid JSON")]
    Json {
        #[source]
        source: serde_json::Error,
    },
    #[error("JSON body is not an object")]
    NotObject,
    /// Stopped by the bounded reader at the first byte that is not JSON.
    #[error("body is not a JSON document")]
    Malformed,
}

/// Classifies a request by method and path (query string ignored).
pub fn classify(method: &str, path: &str) -> (Api, Dialect) {
    if !method.eq_ignore_ascii_case("POST") {
        return (Api::Other, Dialect::OpenAi);
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.strip_suffix('/').unwrap_or(path);
    let openai = path.strip_prefix("/v1").unwrap_or(path);
    match openai {
        "/messages" => return (Api::Messages, Dialect::Anthropic),
        "/messages/count_tokens" => return (Api::CountTokens, Dialect::Anthropic),
        "/responses" => return (Api::Responses, Dialect::Responses),
        "/chat/completions" => return (Api::ChatCompletions, Dialect::OpenAi),
        "/completions" => return (Api::Completions, Dialect::OpenAi),
        "/embeddings" => return (Api::Embeddings, Dialect::OpenAi),
        "/rerank" => return (Api::Rerank, Dialect::OpenAi),
        "/score" => return (Api::Score, Dialect::OpenAi),
        _ => {}
    }
    match super::generate::classify(path) {
        Some(false) => return (Api::TgiGenerate, Dialect::Generate),
        Some(true) => return (Api::TritonGenerate, Dialect::Generate),
        None => {}
    }
    match path {
        "/v2/rerank" => (Api::Rerank, Dialect::OpenAi),
        "/api/chat" => (Api::OllamaChat, Dialect::Ollama),
        "/api/generate" => (Api::OllamaGenerate, Dialect::Ollama),
        "/api/embed" | "/api/embeddings" => (Api::OllamaEmbed, Dialect::Ollama),
        _ => (Api::Other, Dialect::OpenAi),
    }
}

/// What the request body asks for (the prompt itself is not kept, only its size).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub model: Option<String>,
    pub stream: Option<bool>,
    pub include_usage: Option<bool>,
    pub n: Option<u64>,
    pub max_tokens: Option<u64>,
    /// Bytes of prompt text (message contents, `prompt`, `input`, `system`).
    pub prompt_bytes: u64,
    /// Prompt items given as token ids (exact counts).
    pub prompt_token_ids: u64,
}

pub(super) fn object(data: &[u8]) -> Result<Map<String, Value>, LlmError> {
    match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(LlmError::NotObject),
        Err(source) => Err(LlmError::Json { source }),
    }
}

/// Longest id or model name kept, in characters: both are chosen by whoever sends the
/// bytes (a client's `model`, a server echoing it), and end up in records and labels.
pub const MAX_NAME_CHARS: usize = 256;

/// A string field, at most [`MAX_NAME_CHARS`] long.
pub(super) fn str_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(|s| s.chars().take(MAX_NAME_CHARS).collect())
}

/// Adds up text bytes and token ids found in a prompt-like value.
fn measure_prompt(v: &Value, info: &mut RequestInfo, depth: u32) {
    if depth > 8 {
        return;
    }
    match v {
        Value::String(s) => info.prompt_bytes = info.prompt_bytes.saturating_add(s.len() as u64),
        Value::Number(_) => info.prompt_token_ids = info.prompt_token_ids.saturating_add(1),
        Value::Array(items) => {
            for item in items {
                measure_prompt(item, info, depth + 1);
            }
        }
        Value::Object(map) => {
            // Chat message parts: {"type":"text","text":"..."}; messages: {"content": ...}.
            for key in ["content", "text"] {
                if let Some(inner) = map.get(key) {
                    measure_prompt(inner, info, depth + 1);
                }
            }
        }
        Value::Null | Value::Bool(_) => {}
    }
}

/// The request fields whose text is the prompt, for each API.
pub fn prompt_keys(api: Api, dialect: Dialect) -> &'static [&'static str] {
    match (api, dialect) {
        // Rerank: `query` and `documents` (strings or `{"text"}`), TEI's `texts`; score:
        // `text_1` and `text_2`.
        (Api::Rerank | Api::Score, _) => &["query", "documents", "texts", "text_1", "text_2"],
        (_, Dialect::OpenAi | Dialect::Ollama) => {
            &["messages", "prompt", "input", "system", "suffix"]
        }
        (_, Dialect::Anthropic) => super::anthropic::PROMPT_KEYS,
        (_, Dialect::Responses) => super::responses::PROMPT_KEYS,
        (_, Dialect::Generate) => super::generate::PROMPT_KEYS,
    }
}

/// Parses a request body (the Messages API's with [`super::anthropic::parse_request`]).
pub fn parse_request(api: Api, dialect: Dialect, body: &[u8]) -> Result<RequestInfo, LlmError> {
    match dialect {
        Dialect::Anthropic => return super::anthropic::parse_request(body),
        Dialect::Responses => return super::responses::parse_request(body),
        Dialect::Generate => return super::generate::parse_request(body),
        Dialect::OpenAi | Dialect::Ollama => {}
    }
    let map = object(body)?;
    let mut info = parse_request_fields(&map, prompt_keys(api, dialect));
    if dialect == Dialect::Ollama && info.stream.is_none() && !api.generates_nothing() {
        info.stream = Some(true); // Ollama streams unless told not to.
    }
    Ok(info)
}

/// The fields every dialect's request shares, and the size of the prompt under
/// `prompt_keys`.
pub(super) fn parse_request_fields(map: &Map<String, Value>, prompt_keys: &[&str]) -> RequestInfo {
    let mut info = RequestInfo {
        model: str_of(map.get("model")),
        stream: map.get("stream").and_then(Value::as_bool),
        include_usage: map
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool),
        n: map.get("n").and_then(Value::as_u64),
        max_tokens: map
            .get("max_completion_tokens")
            .and_then(Value::as_u64)
            .or_else(|| map.get("max_tokens").and_then(Value::as_u64))
            .or_else(|| {
                map.get("options")
                    .and_then(|o| o.get("num_predict"))
                    .and_then(Value::as_u64)
            }),
        ..RequestInfo::default()
    };
    for key in prompt_keys {
        if let Some(v) = map.get(*key) {
            measure_prompt(v, &mut info, 0);
        }
    }
    info
}

/// An error reported in a body or event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// `type`, else `code`, else "error".
    pub kind: String,
    pub message: Option<String>,
}

/// What one response body or stream event says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseInfo {
    pub id: Option<String>,
    pub model: Option<String>,
    /// Choices that carry content (text, reasoning or tool calls) in this body/event.
    pub content_choices: u32,
    /// Of those, choices that carry answer content (text or tool calls, not reasoning).
    pub answer_choices: u32,
    /// Bytes of generated text (content, text, reasoning) in this body/event.
    pub content_bytes: u64,
    /// `(choice index, finish_reason)` for each choice that has one.
    pub finish_reasons: Vec<(u32, String)>,
    pub usage: Option<Usage>,
    pub timings: Option<Timings>,
    /// The server's own measure of its phases (Ollama's durations, llama.cpp's timings).
    pub server_times: Option<ServerTimes>,
    pub error: Option<ErrorInfo>,
}

/// How long the server says its phases took, in ns, beside what the wire shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerTimes {
    /// Loading the model (Ollama `load_duration`).
    pub load_ns: Option<u64>,
    /// Evaluating the prompt (Ollama `prompt_eval_duration`, llama.cpp `prompt_ms`).
    pub prompt_ns: Option<u64>,
    /// Generating the output (Ollama `eval_duration`, llama.cpp `predicted_ms`).
    pub decode_ns: Option<u64>,
}

impl ServerTimes {
    /// Each field of `newer` where it has one, else this one's.
    #[must_use]
    pub fn merged(self, newer: Self) -> Self {
        Self {
            load_ns: newer.load_ns.or(self.load_ns),
            prompt_ns: newer.prompt_ns.or(self.prompt_ns),
            decode_ns: newer.decode_ns.or(self.decode_ns),
        }
    }
}

/// Milliseconds as a JSON number (llama.cpp), in whole ns; `None` unless finite, ≥ 0 and
/// below a day.
fn ms_to_ns(v: Option<&Value>) -> Option<u64> {
    let ms = v?.as_f64()?;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "checked to be in 0..86_400_000 ms first"
    )]
    (ms.is_finite() && (0.0..86_400_000.0).contains(&ms)).then(|| (ms * 1e6).round() as u64)
}

/// Bytes of text in a string, or in the `text` of a list of parts (`[{"type": "text",
/// "text": …}]`); `None` when there is none.
pub(super) fn text_in(v: Option<&Value>) -> Option<u64> {
    let bytes = match v? {
        Value::String(s) => s.len() as u64,
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| nonempty_str(p.get("text")))
            .map(|n| n as u64)
            .sum(),
        _ => 0,
    };
    (bytes > 0).then_some(bytes)
}

/// The error a body carries in its `error` field, if it is not null.
pub(super) fn body_error(map: &Map<String, Value>) -> Option<ErrorInfo> {
    map.get("error").filter(|e| !e.is_null()).map(parse_error)
}

fn nonempty_str(v: Option<&Value>) -> Option<usize> {
    v.and_then(Value::as_str)
        .map(str::len)
        .filter(|len| *len > 0)
}

/// Content of a `delta`/`message` object: (bytes of text, carries content, carries answer
/// content: text or tool calls rather than reasoning).
fn message_content(msg: &Map<String, Value>) -> (u64, bool, bool) {
    let mut bytes = 0u64;
    let mut has = false;
    let mut answer = false;
    for key in ["content", "reasoning_content", "reasoning", "thinking"] {
        if let Some(n) = text_in(msg.get(key)) {
            bytes = bytes.saturating_add(n);
            has = true;
            answer |= key == "content";
        }
    }
    match msg.get("tool_calls") {
        Some(Value::Array(calls)) if !calls.is_empty() => {
            has = true;
            answer = true;
            for c in calls {
                if let Some(n) = nonempty_str(c.get("function").and_then(|f| f.get("arguments"))) {
                    bytes = bytes.saturating_add(n as u64);
                }
            }
        }
        _ => {}
    }
    (bytes, has, answer)
}

pub(super) fn parse_error(v: &Value) -> ErrorInfo {
    match v {
        Value::Object(e) => {
            let kind = e
                .get("type")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .or_else(|| match e.get("code") {
                    Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
                    Some(Value::Number(n)) => Some(n.to_string()),
                    _ => None,
                })
                .unwrap_or_else(|| "error".to_owned());
            ErrorInfo {
                kind,
                message: str_of(e.get("message")).map(truncate_message),
            }
        }
        Value::String(s) => ErrorInfo {
            kind: "error".to_owned(),
            message: Some(truncate_message(s.clone())),
        },
        _ => ErrorInfo {
            kind: "error".to_owned(),
            message: None,
        },
    }
}

pub(super) fn truncate_message(mut s: String) -> String {
    if let Some((i, _)) = s.char_indices().nth(256) {
        s.truncate(i);
    }
    s
}

/// Parses one response body or stream event in `dialect`.
pub fn parse_response_in(dialect: Dialect, data: &[u8]) -> Result<ResponseInfo, LlmError> {
    match dialect {
        Dialect::Anthropic => super::anthropic::parse_response(data),
        Dialect::Responses => super::responses::parse_response(data),
        Dialect::Generate => super::generate::parse_response(data),
        Dialect::OpenAi | Dialect::Ollama => parse_response(data),
    }
}

/// The numbers a body or event carries: `usage` (or Ollama's counts), llama.cpp's
/// `timings`, and the server's own phase times.
fn counts(map: &Map<String, Value>, info: &mut ResponseInfo) {
    if let Some(Value::Object(u)) = map.get("usage") {
        info.usage = Some(Usage {
            // A rerank's usage has `total_tokens` alone: all of them are input.
            prompt_tokens: u.get("prompt_tokens").and_then(Value::as_u64).or_else(|| {
                u.get("completion_tokens")
                    .is_none()
                    .then(|| u.get("total_tokens").and_then(Value::as_u64))
                    .flatten()
            }),
            completion_tokens: u.get("completion_tokens").and_then(Value::as_u64),
            cached_tokens: u
                .get("prompt_tokens_details")
                .and_then(|d| d.get("cached_tokens"))
                .and_then(Value::as_u64),
            reasoning_tokens: u
                .get("completion_tokens_details")
                .and_then(|d| d.get("reasoning_tokens"))
                .and_then(Value::as_u64),
            cache_write_tokens: None,
        });
    } else if map.contains_key("prompt_eval_count") || map.contains_key("eval_count") {
        info.usage = Some(Usage {
            prompt_tokens: map.get("prompt_eval_count").and_then(Value::as_u64),
            completion_tokens: map.get("eval_count").and_then(Value::as_u64),
            ..Usage::default()
        });
    }
    if let Some(Value::Object(t)) = map.get("timings") {
        info.timings = Some(Timings {
            prompt_n: t.get("prompt_n").and_then(Value::as_u64),
            predicted_n: t.get("predicted_n").and_then(Value::as_u64),
            cache_n: t.get("cache_n").and_then(Value::as_u64),
        });
        info.server_times = Some(ServerTimes {
            load_ns: None,
            prompt_ns: ms_to_ns(t.get("prompt_ms")),
            decode_ns: ms_to_ns(t.get("predicted_ms")),
        });
    }
    // Ollama's last chunk (or whole body): durations in ns.
    let ns = |k: &str| map.get(k).and_then(Value::as_u64);
    if map.contains_key("eval_duration") || map.contains_key("prompt_eval_duration") {
        info.server_times = Some(ServerTimes {
            load_ns: ns("load_duration"),
            prompt_ns: ns("prompt_eval_duration"),
            decode_ns: ns("eval_duration"),
        });
    }
}

/// Parses one response body (non-streaming) or one stream event (SSE `data`, NDJSON line).
pub fn parse_response(data: &[u8]) -> Result<ResponseInfo, LlmError> {
    let map = object(data)?;
    let mut info = ResponseInfo {
        id: str_of(map.get("id")),
        model: str_of(map.get("model")),
        ..ResponseInfo::default()
    };
    if let Some(Value::Array(choices)) = map.get("choices") {
        for (pos, choice) in choices.iter().enumerate() {
            let Some(choice) = choice.as_object() else {
                continue;
            };
            let index = choice
                .get("index")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or_else(|| u32::try_from(pos).unwrap_or(u32::MAX));
            let mut bytes = 0u64;
            let mut has = false;
            let mut answer = false;
            for key in ["delta", "message"] {
                if let Some(Value::Object(msg)) = choice.get(key) {
                    let (b, h, a) = message_content(msg);
                    bytes = bytes.saturating_add(b);
                    has |= h;
                    answer |= a;
                }
            }
            if let Some(n) = nonempty_str(choice.get("text")) {
                bytes = bytes.saturating_add(n as u64);
                has = true;
                answer = true;
            }
            if has {
                info.content_choices = info.content_choices.saturating_add(1);
                info.content_bytes = info.content_bytes.saturating_add(bytes);
            }
            if answer {
                info.answer_choices = info.answer_choices.saturating_add(1);
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                info.finish_reasons.push((index, reason.to_owned()));
            }
        }
    }
    // Ollama native: message / response / thinking at the top level.
    if let Some(Value::Object(msg)) = map.get("message") {
        let (b, h, a) = message_content(msg);
        if h {
            info.content_choices = info.content_choices.saturating_add(1);
            info.content_bytes = info.content_bytes.saturating_add(b);
        }
        if a {
            info.answer_choices = info.answer_choices.saturating_add(1);
        }
    }
    let response = nonempty_str(map.get("response")).unwrap_or(0) as u64;
    let top = response.saturating_add(nonempty_str(map.get("thinking")).unwrap_or(0) as u64);
    if top > 0 {
        info.content_choices = info.content_choices.saturating_add(1);
        info.content_bytes = info.content_bytes.saturating_add(top);
    }
    if response > 0 {
        info.answer_choices = info.answer_choices.saturating_add(1);
    }
    if let Some(reason) = map.get("done_reason").and_then(Value::as_str) {
        info.finish_reasons.push((0, reason.to_owned()));
    }
    counts(&map, &mut info);
    info.error = body_error(&map);
    if info.error.is_none() && map.get("object").and_then(Value::as_str) == Some("error") {
        // Older vLLM: the error fields at the top level.
        info.error = Some(parse_error(&Value::Object(map)));
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        assert_eq!(
            classify("POST", "/v1/chat/completions").0,
            Api::ChatCompletions
        );
        assert_eq!(
            classify("POST", "/chat/completions?x=1").0,
            Api::ChatCompletions
        );
        assert_eq!(classify("POST", "/v1/completions").0, Api::Completions);
        assert_eq!(classify("POST", "/embeddings").0, Api::Embeddings);
        assert_eq!(
            classify("POST", "/api/chat"),
            (Api::OllamaChat, Dialect::Ollama)
        );
        assert_eq!(classify("GET", "/v1/chat/completions").0, Api::Other);
        assert_eq!(classify("GET", "/health").0, Api::Other);
        assert_eq!(classify("POST", "/v1/models").0, Api::Other);
        for (path, want) in [
            (
                "/v1/messages/count_tokens",
                (Api::CountTokens, Dialect::Anthropic),
            ),
            ("/generate", (Api::TgiGenerate, Dialect::Generate)),
            ("/generate_stream?x", (Api::TgiGenerate, Dialect::Generate)),
            (
                "/v2/models/ensemble/generate_stream",
                (Api::TritonGenerate, Dialect::Generate),
            ),
            ("/rerank", (Api::Rerank, Dialect::OpenAi)),
            ("/v1/rerank", (Api::Rerank, Dialect::OpenAi)),
            ("/v2/rerank", (Api::Rerank, Dialect::OpenAi)),
            ("/v1/score", (Api::Score, Dialect::OpenAi)),
        ] {
            assert_eq!(classify("POST", path), want, "{path}");
        }
    }

    #[test]
    fn ids_and_model_names_are_bounded() {
        let long = "m".repeat(65_536);
        let body = format!(r#"{{"id":"{long}","model":"{long}","choices":[]}}"#);
        let info = parse_response(body.as_bytes()).unwrap();
        assert_eq!(info.model.unwrap().len(), MAX_NAME_CHARS);
        assert_eq!(info.id.unwrap().len(), MAX_NAME_CHARS);
        let req = format!(r#"{{"model":"{long}","prompt":"x"}}"#);
        let info = parse_request(Api::Completions, Dialect::OpenAi, req.as_bytes()).unwrap();
        assert_eq!(info.model.unwrap().len(), MAX_NAME_CHARS);
    }

    #[test]
    fn rerank_and_score() {
        // vLLM's rerank: usage has total_tokens alone, all input.
        let rerank = parse_response(br#"{"id":"rerank-1","model":"bge","usage":{"total_tokens":42},"results":[{"index":1,"document":{"text":"b"},"relevance_score":0.9}]}"#).unwrap();
        let u = rerank.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(42), None));
        assert_eq!(rerank.content_choices, 0);
        let score = parse_response(br#"{"id":"score-1","object":"list","model":"bge","data":[{"index":0,"object":"score","score":0.5}],"usage":{"prompt_tokens":9,"total_tokens":9,"completion_tokens":0}}"#).unwrap();
        let u = score.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(9), Some(0)));
        let req = parse_request(
            Api::Rerank,
            Dialect::OpenAi,
            br#"{"model":"bge","query":"abcd","documents":["ef",{"text":"ghij"}]}"#,
        )
        .unwrap();
        assert_eq!((req.model.as_deref(), req.prompt_bytes), (Some("bge"), 10));
        let tei = parse_request(
            Api::Rerank,
            Dialect::OpenAi,
            br#"{"query":"ab","texts":["cd","ef"]}"#,
        )
        .unwrap();
        assert_eq!(tei.prompt_bytes, 6);
        let pair = parse_request(
            Api::Score,
            Dialect::OpenAi,
            br#"{"model":"m","text_1":"abc","text_2":["de","f"]}"#,
        )
        .unwrap();
        assert_eq!(pair.prompt_bytes, 6);
    }

    #[test]
    fn request_fields() {
        let body = br#"{"model":"llama","stream":true,"stream_options":{"include_usage":true},"n":2,"max_tokens":50,"max_completion_tokens":64,"messages":[{"role":"user","content":"Hello there"},{"role":"user","content":[{"type":"text","text":"abcd"}]}]}"#;
        let info = parse_request(Api::ChatCompletions, Dialect::OpenAi, body).unwrap();
        assert_eq!(info.model.as_deref(), Some("llama"));
        assert_eq!(info.stream, Some(true));
        assert_eq!(info.include_usage, Some(true));
        assert_eq!(info.n, Some(2));
        assert_eq!(info.max_tokens, Some(64));
        assert_eq!(info.prompt_bytes, 15);
        let info =
            parse_request(Api::Completions, Dialect::OpenAi, br#"{"prompt":[1,2,3]}"#).unwrap();
        assert_eq!(info.prompt_token_ids, 3);
        assert!(parse_request(Api::Completions, Dialect::OpenAi, b"[1]").is_err());
    }

    #[test]
    fn role_only_chunk_has_no_content() {
        let ev = br#"{"id":"chatcmpl-1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}"#;
        let info = parse_response(ev).unwrap();
        assert_eq!(info.content_choices, 0);
        assert_eq!(info.id.as_deref(), Some("chatcmpl-1"));
        assert!(info.finish_reasons.is_empty());
    }

    #[test]
    fn content_tool_calls_usage_timings_errors() {
        let info = parse_response(br#"{"choices":[{"index":0,"delta":{"content":"Hi"}},{"index":1,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":3}},"timings":{"prompt_n":2,"predicted_n":7,"cache_n":3}}"#).unwrap();
        assert_eq!(info.content_choices, 2);
        assert_eq!(info.finish_reasons, vec![(1, "tool_calls".to_owned())]);
        assert_eq!(
            info.usage,
            Some(Usage {
                prompt_tokens: Some(5),
                completion_tokens: Some(7),
                cached_tokens: Some(3),
                ..Usage::default()
            })
        );
        assert_eq!(info.timings.unwrap().cache_n, Some(3));
        let e = parse_response(
            br#"{"error":{"message":"boom","type":"InternalServerError","code":500}}"#,
        )
        .unwrap();
        assert_eq!(e.error.unwrap().kind, "InternalServerError");
        let e = parse_response(
            br#"{"object":"error","message":"bad","type":"BadRequestError","code":400}"#,
        )
        .unwrap();
        assert_eq!(e.error.unwrap().kind, "BadRequestError");
        let e = parse_response(br#"{"error":{"code":"context_length_exceeded"}}"#).unwrap();
        assert_eq!(e.error.unwrap().kind, "context_length_exceeded");
    }

    #[test]
    fn reasoning_is_content_but_not_answer() {
        let thinking = br#"{"id":"c","choices":[{"index":0,"delta":{"reasoning_content":"hmm"}}]}"#;
        let info = parse_response(thinking).unwrap();
        assert_eq!(
            (
                info.content_choices,
                info.answer_choices,
                info.content_bytes
            ),
            (1, 0, 3)
        );
        let answer = br#"{"id":"c","choices":[{"index":0,"delta":{"content":"Yes"}}]}"#;
        let info = parse_response(answer).unwrap();
        assert_eq!((info.content_choices, info.answer_choices), (1, 1));
        let tool = br#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{}"}}]}}]}"#;
        assert_eq!(parse_response(tool).unwrap().answer_choices, 1);
        let ollama = br#"{"model":"m","thinking":"so","done":false}"#;
        assert_eq!(parse_response(ollama).unwrap().answer_choices, 0);
        let usage = br#"{"usage":{"prompt_tokens":9,"completion_tokens":8,"completion_tokens_details":{"reasoning_tokens":4}}}"#;
        assert_eq!(
            parse_response(usage)
                .unwrap()
                .usage
                .unwrap()
                .reasoning_tokens,
            Some(4)
        );
    }
}
