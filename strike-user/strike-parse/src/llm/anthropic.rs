//! Anthropic Messages API semantics (`POST /v1/messages`, which vLLM, `SGLang`, llama.cpp
//! and Ollama serve beside the `OpenAI` API): what a request asks for, and what a response
//! body or stream event says, in the same [`RequestInfo`] / [`ResponseInfo`] as the `OpenAI`
//! API.
//!
//! A stream is SSE with `event:` lines, but every event's data names its own `type`, which
//! is what is read: `message_start` (id, model, input usage), `content_block_start` and
//! `content_block_delta` (text, `thinking`, tool-use input JSON), `message_delta`
//! (`stop_reason`, output usage), `message_stop`, `ping` and `error`.
//!
//! Usage: `input_tokens` counts only the prompt tokens that were neither read from nor
//! written to the prompt cache, so the record's input tokens are `input_tokens +
//! cache_read_input_tokens + cache_creation_input_tokens`, and its cached tokens the reads.

use serde_json::{Map, Value};

use super::openai::{
    body_error, object, parse_error, parse_request_fields, str_of, ErrorInfo, LlmError,
};
use super::openai::{RequestInfo, ResponseInfo};
use crate::tokens::Usage;

/// The request fields whose text is the prompt.
pub const PROMPT_KEYS: &[&str] = &["messages", "system"];

/// Parses a Messages request body: `model`, `stream`, `max_tokens`, and the prompt's size
/// from `messages` and `system`.
pub fn parse_request(body: &[u8]) -> Result<RequestInfo, LlmError> {
    let map = object(body)?;
    Ok(parse_request_fields(&map, PROMPT_KEYS))
}

/// Bytes of generated content in a content block or a delta, whether it has any, and
/// whether that is answer (text, tool input) rather than thinking.
fn block_content(block: &Map<String, Value>) -> (u64, bool, bool) {
    let mut bytes = 0u64;
    let mut has = false;
    let mut answer = false;
    // text / text_delta; thinking / thinking_delta; tool input as it streams.
    for key in ["text", "thinking", "partial_json"] {
        if let Some(Value::String(s)) = block.get(key) {
            if !s.is_empty() {
                bytes = bytes.saturating_add(s.len() as u64);
                has = true;
                answer |= key != "thinking";
            }
        }
    }
    // A tool_use block of a whole (non-streamed) message: its input is generated.
    if block.get("type").and_then(Value::as_str) == Some("tool_use") {
        if let Some(input) = block.get("input").filter(|i| !i.is_null()) {
            bytes = bytes.saturating_add(input.to_string().len() as u64);
            has = true;
            answer = true;
        }
    }
    (bytes, has, answer)
}

/// Takes one block's or delta's content into `info`.
fn take_content(info: &mut ResponseInfo, (bytes, has, answer): (u64, bool, bool)) {
    if has {
        info.content_choices = 1;
        info.content_bytes = info.content_bytes.saturating_add(bytes);
    }
    if answer {
        info.answer_choices = 1;
    }
}

/// The usage object of a message or `message_delta`: fields absent stay `None`, so a
/// later event's partial usage does not erase an earlier one's (see the tracker's merge).
fn usage(u: &Map<String, Value>) -> Usage {
    let get = |k: &str| u.get(k).and_then(Value::as_u64);
    let (input, read, written) = (
        get("input_tokens"),
        get("cache_read_input_tokens"),
        get("cache_creation_input_tokens"),
    );
    let prompt = match (input, read, written) {
        (None, None, None) => None,
        _ => Some(
            input
                .unwrap_or(0)
                .saturating_add(read.unwrap_or(0))
                .saturating_add(written.unwrap_or(0)),
        ),
    };
    Usage {
        prompt_tokens: prompt,
        completion_tokens: get("output_tokens"),
        cached_tokens: read,
        reasoning_tokens: None,
        cache_write_tokens: written,
    }
}

/// The parts of a whole message (a response body, or `message_start`'s `message`).
fn message(msg: &Map<String, Value>, info: &mut ResponseInfo) {
    info.id = str_of(msg.get("id"));
    info.model = str_of(msg.get("model"));
    if let Some(Value::Array(blocks)) = msg.get("content") {
        for block in blocks.iter().filter_map(Value::as_object) {
            take_content(info, block_content(block));
        }
    }
    if let Some(reason) = msg.get("stop_reason").and_then(Value::as_str) {
        info.finish_reasons.push((0, reason.to_owned()));
    }
    if let Some(Value::Object(u)) = msg.get("usage") {
        info.usage = Some(usage(u));
    }
}

/// Parses one response body (a whole message, or an error) or one stream event's data.
pub fn parse_response(data: &[u8]) -> Result<ResponseInfo, LlmError> {
    let map = object(data)?;
    let mut info = ResponseInfo::default();
    match map.get("type").and_then(Value::as_str) {
        Some("message") => message(&map, &mut info),
        Some("message_start") => {
            if let Some(Value::Object(msg)) = map.get("message") {
                message(msg, &mut info);
            }
        }
        Some("content_block_start") => {
            if let Some(Value::Object(block)) = map.get("content_block") {
                // A tool_use block starts with an empty `input` that its deltas fill.
                if block.get("type").and_then(Value::as_str) != Some("tool_use") {
                    take_content(&mut info, block_content(block));
                }
            }
        }
        Some("content_block_delta") => {
            if let Some(Value::Object(delta)) = map.get("delta") {
                take_content(&mut info, block_content(delta));
            }
        }
        Some("message_delta") => {
            if let Some(reason) = map
                .get("delta")
                .and_then(|d| d.get("stop_reason"))
                .and_then(Value::as_str)
            {
                info.finish_reasons.push((0, reason.to_owned()));
            }
            if let Some(Value::Object(u)) = map.get("usage") {
                info.usage = Some(usage(u));
            }
        }
        Some("error") => {
            info.error = Some(map.get("error").map_or_else(
                || ErrorInfo {
                    kind: "error".to_owned(),
                    message: None,
                },
                parse_error,
            ));
        }
        // content_block_stop, message_stop, ping, and types to come: nothing to take.
        // An OpenAI-style error body from a server's error path; `count_tokens`' answer.
        _ => {
            info.error = body_error(&map);
            if let Some(n) = map.get("input_tokens").and_then(Value::as_u64) {
                info.usage = Some(Usage {
                    prompt_tokens: Some(n),
                    ..Usage::default()
                });
            }
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What llama.cpp's llama-server answered (captured here, `-a tiny`).
    const MESSAGE: &str = r#"{"id":"chatcmpl-GxFH8yv0I2RQFTOinI87K4QNcCUQeTLt","type":"message","role":"assistant","content":[{"type":"text","text":"toX of lan wer uX"}],"model":"tiny","stop_reason":"max_tokens","stop_sequence":null,"usage":{"cache_read_input_tokens":0,"input_tokens":19,"output_tokens":8}}"#;

    #[test]
    fn count_tokens_answer() {
        let info = parse_response(br#"{"input_tokens":2095}"#).unwrap();
        assert_eq!(info.usage.unwrap().prompt_tokens, Some(2095));
        assert_eq!((info.content_choices, info.error), (0, None));
    }

    #[test]
    fn a_whole_message() {
        let info = parse_response(MESSAGE.as_bytes()).unwrap();
        assert_eq!(
            info.id.as_deref(),
            Some("chatcmpl-GxFH8yv0I2RQFTOinI87K4QNcCUQeTLt")
        );
        assert_eq!(info.model.as_deref(), Some("tiny"));
        assert_eq!((info.content_choices, info.content_bytes), (1, 17));
        assert_eq!(info.finish_reasons, [(0, "max_tokens".to_owned())]);
        assert_eq!(
            info.usage,
            Some(Usage {
                prompt_tokens: Some(19),
                completion_tokens: Some(8),
                cached_tokens: Some(0),
                ..Usage::default()
            })
        );
    }

    #[test]
    fn stream_events() {
        let start = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"tiny","stop_reason":null,"usage":{"cache_read_input_tokens":18,"input_tokens":1,"cache_creation_input_tokens":2,"output_tokens":0}}}"#;
        let info = parse_response(start.as_bytes()).unwrap();
        assert_eq!(info.id.as_deref(), Some("msg_1"));
        assert_eq!(info.content_choices, 0, "no content yet");
        assert!(info.finish_reasons.is_empty(), "stop_reason null");
        let u = info.usage.unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.cached_tokens,
                u.cache_write_tokens,
                u.completion_tokens
            ),
            (Some(21), Some(18), Some(2), Some(0))
        );

        let empty_block =
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#;
        assert_eq!(
            parse_response(empty_block.as_bytes())
                .unwrap()
                .content_choices,
            0
        );
        for (delta, bytes) in [
            (
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"as"}}"#,
                2,
            ),
            (
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hmm"}}"#,
                3,
            ),
            (
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Par"}}"#,
                13,
            ),
        ] {
            let info = parse_response(delta.as_bytes()).unwrap();
            assert_eq!(
                (info.content_choices, info.content_bytes),
                (1, bytes),
                "{delta}"
            );
        }
        let empty = r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#;
        assert_eq!(parse_response(empty.as_bytes()).unwrap().content_choices, 0);
        let tool = r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t1","name":"weather","input":{}}}"#;
        assert_eq!(parse_response(tool.as_bytes()).unwrap().content_choices, 0);

        let delta = r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":4}}"#;
        let info = parse_response(delta.as_bytes()).unwrap();
        assert_eq!(info.finish_reasons, [(0, "end_turn".to_owned())]);
        assert_eq!(
            info.usage,
            Some(Usage {
                prompt_tokens: None,
                completion_tokens: Some(4),
                cached_tokens: None,
                ..Usage::default()
            }),
            "an output-only usage leaves the input as it was"
        );
        for quiet in [
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"message_stop"}"#,
            r#"{"type":"ping"}"#,
        ] {
            assert_eq!(
                parse_response(quiet.as_bytes()).unwrap(),
                ResponseInfo::default()
            );
        }
        let error =
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        let e = parse_response(error.as_bytes()).unwrap().error.unwrap();
        assert_eq!(
            (e.kind.as_str(), e.message.as_deref()),
            ("overloaded_error", Some("Overloaded"))
        );
    }

    #[test]
    fn a_whole_message_with_thinking_and_a_tool_call() {
        let body = r#"{"id":"msg_2","type":"message","model":"m","content":[{"type":"thinking","thinking":"abc"},{"type":"tool_use","id":"t","name":"f","input":{"a":1}}],"stop_reason":"tool_use","usage":{"input_tokens":5,"output_tokens":9}}"#;
        let info = parse_response(body.as_bytes()).unwrap();
        assert_eq!((info.content_choices, info.content_bytes), (1, 3 + 7));
        assert_eq!(info.finish_reasons, [(0, "tool_use".to_owned())]);
    }

    #[test]
    fn request_fields() {
        let body = br#"{"model":"claude-x","max_tokens":64,"stream":true,"system":[{"type":"text","text":"Be brief."}],"messages":[{"role":"user","content":"hello there"},{"role":"assistant","content":[{"type":"text","text":"hi"}]}]}"#;
        let info = parse_request(body).unwrap();
        assert_eq!(info.model.as_deref(), Some("claude-x"));
        assert_eq!((info.stream, info.max_tokens), (Some(true), Some(64)));
        assert_eq!(info.prompt_bytes, 9 + 11 + 2);
        assert!(parse_request(b"[]").is_err());
    }
}
