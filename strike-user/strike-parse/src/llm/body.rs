//! A request's or a non-streamed response's JSON body, read as it arrives in bounded memory
//! ([`BoundedJson`]), then parsed by its dialect with what the bounded copy left out added
//! back to the sizes measured: the prompt's bytes and token ids, the output's bytes.

use super::openai::{self, Dialect, LlmError, RequestInfo, ResponseInfo};
use super::TrackerStats;
use crate::protocol::json::{BoundedJson, Elided, Frame, JsonError, Seg, TextPaths};
use crate::record::Api;

/// The prompt's text as [`openai::parse_request_fields`] measures it: strings and token ids
/// under one of the dialect's prompt keys, directly, in lists, or under `content` / `text`,
/// at most 8 levels down.
#[derive(Debug)]
pub(super) struct PromptText(&'static [&'static str]);

impl TextPaths for PromptText {
    fn is_text(&self, path: &[Frame]) -> bool {
        let Some((root, rest)) = path.split_first() else {
            return false;
        };
        let Seg::Key(key) = root.seg() else {
            return false;
        };
        self.0.iter().any(|k| k.as_bytes() == key)
            && rest.len() <= 8
            && rest
                .iter()
                .all(|f| matches!(f.seg(), Seg::Index(_) | Seg::Key(b"content" | b"text")))
    }
}

/// Generated text: strings whose nearest key is one the dialects read output from.
#[derive(Debug)]
pub(super) struct OutputText;

impl TextPaths for OutputText {
    fn is_text(&self, path: &[Frame]) -> bool {
        path.iter()
            .rev()
            .find_map(|f| match f.seg() {
                Seg::Index(_) => None,
                Seg::Key(k) => Some(matches!(
                    k,
                    b"content"
                        | b"text"
                        | b"reasoning_content"
                        | b"reasoning"
                        | b"thinking"
                        | b"arguments"
                        | b"response"
                        | b"partial_json"
                )),
                Seg::OtherKey => Some(false),
            })
            .unwrap_or(false)
    }
}

/// A JSON body being read; `None` until its first byte.
#[derive(Debug)]
pub(super) struct JsonBody<P> {
    json: Option<BoundedJson<P>>,
}

impl<P> Default for JsonBody<P> {
    fn default() -> Self {
        Self { json: None }
    }
}

impl<P> JsonBody<P> {
    /// Bytes its bounded copy holds.
    pub fn buffered_bytes(&self) -> usize {
        self.json
            .as_ref()
            .map_or(0, |j| size_of::<BoundedJson<P>>() + j.buffered_bytes())
    }
}

impl<P: TextPaths> JsonBody<P> {
    /// Whether bytes are still read (the body did not fail its bounds or its syntax).
    pub fn reading(&self) -> bool {
        self.json.as_ref().is_none_or(|j| j.failed().is_none())
    }

    /// Reads decoded body bytes; `true` when they took the body over its bounds (counted
    /// here; the caller marks the record).
    pub fn feed(
        &mut self,
        data: &[u8],
        paths: impl FnOnce() -> P,
        max: usize,
        stats: &mut TrackerStats,
    ) -> bool {
        if data.is_empty() || !self.reading() {
            return false;
        }
        let json = self
            .json
            .get_or_insert_with(|| BoundedJson::new(paths(), max));
        json.feed(data);
        if json.failed() == Some(JsonError::OverLimit) {
            stats.bodies_over_limit = stats.bodies_over_limit.saturating_add(1);
            return true;
        }
        false
    }

    /// The end of the body: its compact copy parsed by `parse`, and what was elided from
    /// it; `None` for an empty body or one that failed (a syntax error is counted here).
    fn finish<T>(
        &mut self,
        stats: &mut TrackerStats,
        parse: impl FnOnce(&[u8]) -> Result<T, LlmError>,
        what: &'static str,
    ) -> Option<(T, Elided)> {
        let mut json = self.json.take()?;
        let parsed = match json.finish() {
            Ok((copy, elided)) => parse(copy).map(|v| (v, elided)),
            Err(JsonError::OverLimit) => return None,
            Err(JsonError::Malformed) => Err(LlmError::Malformed),
        };
        match parsed {
            Ok((v, elided)) => {
                if elided.any() {
                    stats.bodies_elided = stats.bodies_elided.saturating_add(1);
                }
                Some((v, elided))
            }
            Err(e) => {
                tracing::debug!(error = %e, "{what}");
                stats.json_errors = stats.json_errors.saturating_add(1);
                None
            }
        }
    }
}

impl JsonBody<PromptText> {
    /// The request's fields, its prompt measured whole.
    pub fn request(
        &mut self,
        api: Api,
        dialect: Dialect,
        stats: &mut TrackerStats,
    ) -> Option<RequestInfo> {
        let (mut info, elided) = self.finish(
            stats,
            |copy| openai::parse_request(api, dialect, copy),
            "request body",
        )?;
        info.prompt_bytes = info.prompt_bytes.saturating_add(elided.text_bytes);
        info.prompt_token_ids = info.prompt_token_ids.saturating_add(elided.numbers);
        Some(info)
    }

    /// What measures a request's prompt in this dialect.
    pub fn paths(api: Api, dialect: Dialect) -> impl FnOnce() -> PromptText {
        move || PromptText(openai::prompt_keys(api, dialect))
    }
}

impl JsonBody<OutputText> {
    /// What the response says, its output measured whole. A rerank or score answered with
    /// a bare JSON array (TEI's `[{"index", "score"}]`) says nothing more than that it came.
    pub fn response(
        &mut self,
        api: Api,
        dialect: Dialect,
        stats: &mut TrackerStats,
    ) -> Option<ResponseInfo> {
        let bare_list_ok = matches!(api, Api::Rerank | Api::Score);
        let (mut info, elided) = self.finish(
            stats,
            |copy| match openai::parse_response_in(dialect, copy) {
                Err(LlmError::NotObject) if bare_list_ok && copy.first() == Some(&b'[') => {
                    Ok(ResponseInfo::default())
                }
                other => other,
            },
            "response body",
        )?;
        info.content_bytes = info.content_bytes.saturating_add(elided.text_bytes);
        Some(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(dialect: Dialect, body: &[u8], max: usize) -> (Option<RequestInfo>, TrackerStats) {
        let mut stats = TrackerStats::default();
        let mut b = JsonBody::default();
        for c in body.chunks(1000) {
            assert!(!b.feed(
                c,
                JsonBody::paths(Api::ChatCompletions, dialect),
                max,
                &mut stats
            ));
        }
        (b.request(Api::ChatCompletions, dialect, &mut stats), stats)
    }

    #[test]
    fn an_8_mb_prompt_measures_as_if_kept_whole() {
        let big = "the quick brown fox jumps over the lazy dog; ".repeat(190_000);
        for (dialect, body) in [
            (
                Dialect::OpenAi,
                serde_json::json!({"model": "m", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": big}]}], "tools": [{"type": "function", "function": {"name": "f", "description": "x".repeat(100_000)}}], "stream": true, "stream_options": {"include_usage": true}, "max_tokens": 9}),
            ),
            (
                Dialect::Anthropic,
                serde_json::json!({"model": "m", "system": big, "messages": [{"role": "user", "content": "hi"}], "stream": true, "max_tokens": 9}),
            ),
            (
                Dialect::Responses,
                serde_json::json!({"model": "m", "input": [{"role": "user", "content": big}], "instructions": "be brief", "stream": true, "max_output_tokens": 9}),
            ),
        ] {
            let body = serde_json::to_vec(&body).unwrap();
            assert!(body.len() > 8_000_000);
            let whole = openai::parse_request(Api::ChatCompletions, dialect, &body).unwrap();
            let (info, stats) = request(dialect, &body, 1 << 20);
            assert_eq!(info.unwrap(), whole, "{dialect:?}");
            assert_eq!(stats.bodies_elided, 1);
            assert_eq!(stats.bodies_over_limit, 0);
        }
    }

    #[test]
    fn token_id_prompts_count_every_id() {
        let ids: Vec<u32> = (0..1_000_000).collect();
        let body =
            serde_json::to_vec(&serde_json::json!({"model": "m", "prompt": ids, "max_tokens": 3}))
                .unwrap();
        let (info, _) = request(Dialect::OpenAi, &body, 1 << 20);
        let info = info.unwrap();
        assert_eq!(
            (info.prompt_token_ids, info.max_tokens),
            (1_000_000, Some(3))
        );
    }

    #[test]
    fn a_large_response_reads_its_usage_and_output() {
        let text = "é token ".repeat(200_000);
        let body = serde_json::to_vec(&serde_json::json!({
            "id": "cmpl-1", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 30000, "prompt_tokens_details": {"cached_tokens": 2}}
        }))
        .unwrap();
        let whole = openai::parse_response(&body).unwrap();
        let mut stats = TrackerStats::default();
        let mut b = JsonBody::default();
        for c in body.chunks(4096) {
            b.feed(c, || OutputText, 1 << 20, &mut stats);
        }
        assert_eq!(
            b.response(Api::ChatCompletions, Dialect::OpenAi, &mut stats)
                .unwrap(),
            whole
        );
    }

    #[test]
    fn failures_are_counted_once() {
        let mut stats = TrackerStats::default();
        let mut b = JsonBody::<OutputText>::default();
        b.feed(b"<html>", || OutputText, 1 << 20, &mut stats);
        assert!(!b.reading());
        assert!(b
            .response(Api::ChatCompletions, Dialect::OpenAi, &mut stats)
            .is_none());
        assert_eq!(stats.json_errors, 1);
        // TEI's rerank answers with a list: a response, not an error; a chat cannot.
        for (api, ok) in [(Api::Rerank, true), (Api::ChatCompletions, false)] {
            let mut stats = TrackerStats::default();
            let mut b = JsonBody::<OutputText>::default();
            b.feed(
                br#"[{"index":1,"score":0.9}]"#,
                || OutputText,
                1 << 20,
                &mut stats,
            );
            assert_eq!(b.response(api, Dialect::OpenAi, &mut stats).is_some(), ok);
            assert_eq!(stats.json_errors, u64::from(!ok));
        }
        let (info, stats) = request(Dialect::OpenAi, b"", 1 << 20);
        assert_eq!((info, stats.json_errors), (None, 0));
    }
}
