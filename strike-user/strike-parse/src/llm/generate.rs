//! The native generate APIs of Hugging Face TGI (`POST /generate`, `POST /generate_stream`)
//! and of Triton's generate extension (`POST /v2/models/{model}[/versions/{v}]/generate`,
//! `…/generate_stream`, which the TensorRT-LLM and vLLM backends serve), in the same
//! [`RequestInfo`] / [`ResponseInfo`] as the other dialects.
//!
//! TGI: the prompt is `inputs`, `parameters.max_new_tokens` bounds the output. A whole
//! response is `{"generated_text", "details": {"finish_reason", "generated_tokens",
//! "prefill": [...]}}` (`details` when the request asked for it; `prefill` lists the prompt's
//! tokens with `decoder_input_details`). A stream sends one event per token, `{"token":
//! {"text", "special"}, "generated_text": null}`; the last one repeats the whole text in
//! `generated_text` with `details`, which is not content again. Errors are `{"error",
//! "error_type"}`.
//!
//! Triton: the prompt is `text_input`; `max_tokens` and `stream` at the top level or in
//! `parameters`; the model is named by the path. A response or stream event carries
//! `text_output` (a stream's are deltas), and the counts when the backend returns them
//! (`num_input_tokens`, `num_output_tokens`). Errors are `{"error": "…"}`.

use serde_json::{Map, Value};

use super::openai::{
    body_error, object, parse_request_fields, str_of, LlmError, RequestInfo, ResponseInfo,
};
use crate::tokens::Usage;

/// The request fields whose text is the prompt (TGI's, then Triton's).
pub const PROMPT_KEYS: &[&str] = &["inputs", "text_input"];

fn u64_in(map: &Map<String, Value>, key: &str) -> Option<u64> {
    map.get(key).and_then(Value::as_u64)
}

/// Parses a TGI or Triton generate request.
pub fn parse_request(body: &[u8]) -> Result<RequestInfo, LlmError> {
    let map = object(body)?;
    let mut info = parse_request_fields(&map, PROMPT_KEYS);
    let params = map.get("parameters").and_then(Value::as_object);
    if info.max_tokens.is_none() {
        info.max_tokens =
            params.and_then(|p| u64_in(p, "max_new_tokens").or_else(|| u64_in(p, "max_tokens")));
    }
    if info.stream.is_none() {
        info.stream = params
            .and_then(|p| p.get("stream"))
            .and_then(Value::as_bool);
    }
    Ok(info)
}

/// The model a Triton path names: `/v2/models/{model}[/versions/{v}]/generate[_stream]`.
pub fn model_in_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/v2/models/")?;
    let model = rest.split('/').next().filter(|m| !m.is_empty())?;
    Some(model.chars().take(super::openai::MAX_NAME_CHARS).collect())
}

/// Whether `path` (query string removed) is a generate endpoint: TGI's (`Some(false)`) or
/// Triton's (`Some(true)`).
pub fn classify(path: &str) -> Option<bool> {
    match path {
        "/generate" | "/generate_stream" => return Some(false),
        _ => {}
    }
    let rest = path.strip_prefix("/v2/models/")?;
    let mut parts = rest.split('/');
    let _model = parts.next().filter(|m| !m.is_empty())?;
    let mut last = parts.next()?;
    if last == "versions" {
        parts.next().filter(|v| !v.is_empty())?;
        last = parts.next()?;
    }
    (matches!(last, "generate" | "generate_stream") && parts.next().is_none()).then_some(true)
}

fn nonempty(v: Option<&Value>) -> Option<usize> {
    v.and_then(Value::as_str).map(str::len).filter(|n| *n > 0)
}

fn take_content(info: &mut ResponseInfo, bytes: usize) {
    info.content_choices = 1;
    info.answer_choices = 1;
    info.content_bytes = info.content_bytes.saturating_add(bytes as u64);
}

/// Parses a whole response or one stream event of either server.
pub fn parse_response(data: &[u8]) -> Result<ResponseInfo, LlmError> {
    let map = object(data)?;
    let mut info = ResponseInfo {
        model: str_of(map.get("model_name")),
        ..ResponseInfo::default()
    };
    // TGI: a stream event's token, else a whole response's text.
    if let Some(Value::Object(token)) = map.get("token") {
        let special = token.get("special").and_then(Value::as_bool) == Some(true);
        if let Some(n) = nonempty(token.get("text")).filter(|_| !special) {
            take_content(&mut info, n);
        }
    } else if let Some(n) = nonempty(map.get("generated_text")) {
        take_content(&mut info, n);
    }
    // Triton: the text (a stream's delta).
    if let Some(n) = nonempty(map.get("text_output")) {
        take_content(&mut info, n);
    }
    let mut usage = Usage::default();
    if let Some(Value::Object(d)) = map.get("details") {
        if let Some(reason) = d.get("finish_reason").and_then(Value::as_str) {
            info.finish_reasons.push((0, reason.to_owned()));
        }
        usage.completion_tokens = u64_in(d, "generated_tokens");
        // `input_length` in newer TGI's stream details; else the prefill tokens listed.
        usage.prompt_tokens = u64_in(d, "input_length").or(match d.get("prefill") {
            Some(Value::Array(p)) if !p.is_empty() => Some(p.len() as u64),
            _ => None,
        });
    }
    usage.prompt_tokens = usage
        .prompt_tokens
        .or_else(|| u64_in(&map, "num_input_tokens"));
    usage.completion_tokens = usage
        .completion_tokens
        .or_else(|| u64_in(&map, "num_output_tokens"));
    if usage != Usage::default() {
        info.usage = Some(usage);
    }
    info.error = body_error(&map).map(|mut e| {
        if let Some(kind) = map.get("error_type").and_then(Value::as_str) {
            kind.chars()
                .take(64)
                .collect::<String>()
                .clone_into(&mut e.kind);
        }
        e
    });
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::openai::ErrorInfo;

    fn error_of(data: &[u8]) -> Option<ErrorInfo> {
        parse_response(data).unwrap().error
    }

    #[test]
    fn classifies_paths() {
        for (path, want) in [
            ("/generate", Some(false)),
            ("/generate_stream", Some(false)),
            ("/v2/models/ensemble/generate", Some(true)),
            ("/v2/models/llama/versions/1/generate_stream", Some(true)),
            ("/v2/models//generate", None),
            ("/v2/models/m/infer", None),
            ("/v2/models/m/generate/x", None),
            ("/v2/models/m/versions//generate", None),
        ] {
            assert_eq!(classify(path), want, "{path}");
        }
        assert_eq!(
            model_in_path("/v2/models/ensemble/generate").as_deref(),
            Some("ensemble")
        );
    }

    #[test]
    fn requests() {
        let tgi = parse_request(br#"{"inputs":"What is Deep Learning?","parameters":{"max_new_tokens":20,"details":true}}"#).unwrap();
        assert_eq!(
            (tgi.max_tokens, tgi.prompt_bytes, tgi.model),
            (Some(20), 22, None)
        );
        let triton = parse_request(br#"{"text_input":"Hi there","max_tokens":8,"stream":true,"parameters":{"temperature":0}}"#).unwrap();
        assert_eq!(
            (triton.max_tokens, triton.stream, triton.prompt_bytes),
            (Some(8), Some(true), 8)
        );
        let nested =
            parse_request(br#"{"text_input":"x","parameters":{"max_tokens":3,"stream":false}}"#)
                .unwrap();
        assert_eq!((nested.max_tokens, nested.stream), (Some(3), Some(false)));
    }

    #[test]
    fn tgi_whole_and_streamed() {
        let whole = parse_response(br#"{"generated_text":"Deep learning is","details":{"finish_reason":"length","generated_tokens":3,"seed":null,"prefill":[{"id":1,"text":"<s>"},{"id":2,"text":"What"}],"tokens":[]}}"#).unwrap();
        assert_eq!((whole.content_bytes, whole.answer_choices), (16, 1));
        assert_eq!(whole.finish_reasons, vec![(0, "length".to_owned())]);
        let u = whole.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(2), Some(3)));

        let token = parse_response(br#"{"index":1,"token":{"id":7,"text":" Deep","logprob":-0.1,"special":false},"generated_text":null,"details":null}"#).unwrap();
        assert_eq!(
            (token.content_choices, token.content_bytes, token.usage),
            (1, 5, None)
        );
        let special = parse_response(br#"{"index":4,"token":{"id":2,"text":"</s>","logprob":0.0,"special":true},"generated_text":"Deep learning is","details":{"finish_reason":"eos_token","generated_tokens":4,"seed":null}}"#).unwrap();
        assert_eq!(
            special.content_choices, 0,
            "the last event's whole text is not content again"
        );
        assert_eq!(special.usage.unwrap().completion_tokens, Some(4));
        assert_eq!(special.finish_reasons, vec![(0, "eos_token".to_owned())]);

        let e = error_of(br#"{"error":"Input validation error: `inputs` must have less than 4096 tokens","error_type":"validation"}"#).unwrap();
        assert_eq!(e.kind, "validation");
        assert!(e.message.unwrap().starts_with("Input validation error"));
    }

    #[test]
    fn triton_whole_and_streamed() {
        let r = parse_response(br#"{"model_name":"ensemble","model_version":"1","sequence_end":false,"sequence_id":0,"sequence_start":false,"text_output":"Paris is","num_input_tokens":7,"num_output_tokens":2}"#).unwrap();
        assert_eq!((r.model.as_deref(), r.content_bytes), (Some("ensemble"), 8));
        let u = r.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (Some(7), Some(2)));
        let delta = parse_response(
            br#"{"model_name":"ensemble","model_version":"1","text_output":" the"}"#,
        )
        .unwrap();
        assert_eq!((delta.content_choices, delta.usage), (1, None));
        let e = error_of(br#"{"error":"failed to parse the request JSON buffer"}"#).unwrap();
        assert_eq!(e.kind, "error");
    }
}
