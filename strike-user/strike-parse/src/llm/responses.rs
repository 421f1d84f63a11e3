//! `OpenAI` Responses API semantics (`POST /v1/responses`, which vLLM and `SGLang` serve): what
//! a request asks for, and what a response body or stream event says, in the same
//! [`RequestInfo`] / [`ResponseInfo`] as the other dialects.
//!
//! A whole response lists `output` items: `message` (its `output_text` parts are the
//! answer), `reasoning` (its `reasoning_text` and summary parts are reasoning),
//! `function_call` (its `arguments` are answer). A stream's events name their `type`:
//! `response.created` / `in_progress` (id, model), `response.output_text.delta`,
//! `response.reasoning_text.delta`, `response.reasoning_summary_text.delta`,
//! `response.function_call_arguments.delta` (one content event each), then
//! `response.completed`, `response.incomplete` or `response.failed` with the whole
//! response (usage, status, error), or an `error` event.
//!
//! `usage.input_tokens` includes the cached ones (`input_tokens_details.cached_tokens`) and
//! `output_tokens` the reasoning ones (`output_tokens_details.reasoning_tokens`).

use serde_json::{Map, Value};

use super::openai::{
    body_error, object, parse_request_fields, str_of, text_in, truncate_message, ErrorInfo,
    LlmError,
};
use super::openai::{RequestInfo, ResponseInfo};
use crate::tokens::Usage;

/// The request fields whose text is the prompt.
pub const PROMPT_KEYS: &[&str] = &["input", "instructions"];

/// Parses a Responses request body: `model`, `stream`, `max_output_tokens`, and the
/// prompt's size from `input` and `instructions`.
pub fn parse_request(body: &[u8]) -> Result<RequestInfo, LlmError> {
    let map = object(body)?;
    let mut info = parse_request_fields(&map, PROMPT_KEYS);
    if let Some(n) = map.get("max_output_tokens").and_then(Value::as_u64) {
        info.max_tokens = Some(n);
    }
    Ok(info)
}

fn usage(u: &Map<String, Value>) -> Usage {
    let detail = |outer: &str, inner: &str| {
        u.get(outer)
            .and_then(|d| d.get(inner))
            .and_then(Value::as_u64)
    };
    Usage {
        prompt_tokens: u.get("input_tokens").and_then(Value::as_u64),
        completion_tokens: u.get("output_tokens").and_then(Value::as_u64),
        cached_tokens: detail("input_tokens_details", "cached_tokens"),
        reasoning_tokens: detail("output_tokens_details", "reasoning_tokens"),
        cache_write_tokens: None,
    }
}

/// Bytes of text in a list of content parts.
fn parts(v: Option<&Value>) -> u64 {
    text_in(v.filter(|v| v.is_array())).unwrap_or(0)
}

/// Counts one piece of generated content into `info`.
fn take(info: &mut ResponseInfo, bytes: u64, answer: bool) {
    if bytes == 0 {
        return;
    }
    info.content_choices = 1;
    info.content_bytes = info.content_bytes.saturating_add(bytes);
    if answer {
        info.answer_choices = 1;
    }
}

/// The parts of a whole response object (a body, or the `response` of a stream event).
fn response(r: &Map<String, Value>, info: &mut ResponseInfo, with_output: bool) {
    info.id = str_of(r.get("id"));
    info.model = str_of(r.get("model"));
    if with_output {
        if let Some(Value::Array(items)) = r.get("output") {
            for item in items.iter().filter_map(Value::as_object) {
                match item.get("type").and_then(Value::as_str) {
                    Some("message") => take(info, parts(item.get("content")), true),
                    Some("reasoning") => {
                        let bytes = parts(item.get("content")) + parts(item.get("summary"));
                        take(info, bytes, false);
                    }
                    Some("function_call") => {
                        let args = item.get("arguments").and_then(Value::as_str);
                        take(info, args.map_or(0, |a| a.len() as u64), true);
                    }
                    _ => {}
                }
            }
        }
    }
    // `completed`, or why not: `incomplete` with its reason (`max_output_tokens`), `failed`.
    let reason = match r.get("status").and_then(Value::as_str) {
        Some("incomplete") => r
            .get("incomplete_details")
            .and_then(|d| d.get("reason"))
            .and_then(Value::as_str)
            .or(Some("incomplete")),
        Some(status @ ("completed" | "failed" | "cancelled")) => Some(status),
        _ => None,
    };
    if let Some(reason) = reason {
        info.finish_reasons.push((0, reason.to_owned()));
    }
    if let Some(Value::Object(u)) = r.get("usage") {
        info.usage = Some(usage(u));
    }
    if let Some(e) = body_error(r) {
        info.error = Some(e);
    }
}

/// Parses one response body or one stream event's data.
pub fn parse_response(data: &[u8]) -> Result<ResponseInfo, LlmError> {
    let map = object(data)?;
    let mut info = ResponseInfo::default();
    let kind = map.get("type").and_then(Value::as_str);
    let delta_bytes = || {
        map.get("delta")
            .and_then(Value::as_str)
            .map_or(0, |d| d.len() as u64)
    };
    match kind {
        // A whole response body has no `type`, but `object: "response"`.
        None if map.get("object").and_then(Value::as_str) == Some("response") => {
            response(&map, &mut info, true);
        }
        Some("response.output_text.delta" | "response.function_call_arguments.delta") => {
            take(&mut info, delta_bytes(), true);
        }
        Some("response.reasoning_text.delta" | "response.reasoning_summary_text.delta") => {
            take(&mut info, delta_bytes(), false);
        }
        Some(
            "response.created"
            | "response.in_progress"
            | "response.completed"
            | "response.incomplete"
            | "response.failed",
        ) => {
            if let Some(Value::Object(r)) = map.get("response") {
                // The final event repeats the whole output, already counted from its deltas.
                response(r, &mut info, false);
            }
        }
        Some("error") => {
            info.error = Some(ErrorInfo {
                kind: map
                    .get("code")
                    .and_then(Value::as_str)
                    .filter(|c| !c.is_empty())
                    .unwrap_or("error")
                    .to_owned(),
                message: map
                    .get("message")
                    .and_then(Value::as_str)
                    .map(|m| truncate_message(m.to_owned())),
            });
        }
        _ => info.error = body_error(&map),
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_response() {
        let body = br#"{"id":"resp_1","object":"response","model":"qwen3","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[{"type":"reasoning","summary":[],"content":[{"type":"reasoning_text","text":"think"}]},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hello"}]}],"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":4},"output_tokens":9,"output_tokens_details":{"reasoning_tokens":5}},"error":null}"#;
        let info = parse_response(body).unwrap();
        assert_eq!(info.id.as_deref(), Some("resp_1"));
        assert_eq!(info.model.as_deref(), Some("qwen3"));
        assert_eq!(
            (
                info.content_choices,
                info.answer_choices,
                info.content_bytes
            ),
            (1, 1, 10)
        );
        assert_eq!(info.finish_reasons, [(0, "max_output_tokens".to_owned())]);
        assert_eq!(
            info.usage,
            Some(Usage {
                prompt_tokens: Some(12),
                completion_tokens: Some(9),
                cached_tokens: Some(4),
                reasoning_tokens: Some(5),
                cache_write_tokens: None,
            })
        );
        assert!(info.error.is_none());
    }

    #[test]
    fn stream_events() {
        let created = br#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_2","object":"response","model":"qwen3","status":"in_progress","output":[],"usage":null}}"#;
        let info = parse_response(created).unwrap();
        assert_eq!(
            (info.id.as_deref(), info.content_choices),
            (Some("resp_2"), 0)
        );
        assert!(info.finish_reasons.is_empty() && info.usage.is_none());
        let thinking = br#"{"type":"response.reasoning_text.delta","item_id":"rs_1","output_index":0,"content_index":0,"delta":"hm","sequence_number":3}"#;
        let info = parse_response(thinking).unwrap();
        assert_eq!((info.content_choices, info.answer_choices), (1, 0));
        let text = br#"{"type":"response.output_text.delta","item_id":"msg_1","output_index":1,"content_index":0,"delta":"Hi","sequence_number":7}"#;
        let info = parse_response(text).unwrap();
        assert_eq!((info.content_choices, info.answer_choices), (1, 1));
        let empty = br#"{"type":"response.output_text.delta","delta":""}"#;
        assert_eq!(parse_response(empty).unwrap().content_choices, 0);
        let done = br#"{"type":"response.output_text.done","text":"Hi there"}"#;
        assert_eq!(parse_response(done).unwrap(), ResponseInfo::default());
        let completed = br#"{"type":"response.completed","response":{"id":"resp_2","object":"response","model":"qwen3","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"Hi there"}]}],"usage":{"input_tokens":5,"output_tokens":3,"output_tokens_details":{"reasoning_tokens":1}}}}"#;
        let info = parse_response(completed).unwrap();
        assert_eq!(
            info.content_choices, 0,
            "output already counted from deltas"
        );
        assert_eq!(info.finish_reasons, [(0, "completed".to_owned())]);
        assert_eq!(info.usage.unwrap().reasoning_tokens, Some(1));
        let failed = br#"{"type":"response.failed","response":{"id":"resp_3","status":"failed","error":{"code":"server_error","message":"boom"}}}"#;
        let e = parse_response(failed).unwrap().error.unwrap();
        assert_eq!(e.message.as_deref(), Some("boom"));
        let error = br#"{"type":"error","code":"rate_limit_exceeded","message":"slow down","sequence_number":1}"#;
        let e = parse_response(error).unwrap().error.unwrap();
        assert_eq!(
            (e.kind.as_str(), e.message.as_deref()),
            ("rate_limit_exceeded", Some("slow down"))
        );
    }

    #[test]
    fn request_fields() {
        let body = br#"{"model":"qwen3","instructions":"Be brief.","input":[{"role":"user","content":[{"type":"input_text","text":"hello there"}]}],"max_output_tokens":32,"stream":true}"#;
        let info = parse_request(body).unwrap();
        assert_eq!(info.model.as_deref(), Some("qwen3"));
        assert_eq!((info.stream, info.max_tokens), (Some(true), Some(32)));
        assert_eq!(info.prompt_bytes, 9 + 11);
        let plain = parse_request(br#"{"model":"m","input":"hi"}"#).unwrap();
        assert_eq!(plain.prompt_bytes, 2);
    }
}
