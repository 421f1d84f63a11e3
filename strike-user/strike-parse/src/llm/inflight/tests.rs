//! One request in flight on its own: what each exchange event adds to the record, bodies
//! kept whole or decoded as streams, the bounds and what they count, aborts and their
//! reasons, and the timings the record derives from the kernel timestamps.

use super::*;
use crate::conn::{ConnKey, Role};
use crate::protocol::http::BodyKind;
use crate::record::{CountSource, TokenSource};

const MS: u64 = 1_000_000;
/// The request's first byte (kernel monotonic ns).
const T0: u64 = 5_000 * MS;
const CHAT: &str = "/v1/chat/completions";

/// Kernel ns `ms` milliseconds after the request's first byte.
fn at(ms: u64) -> u64 {
    T0 + ms * MS
}

fn req_head(method: &str, path: &str) -> RequestHead {
    RequestHead {
        method: method.to_owned(),
        path: path.to_owned(),
        version_minor: 1,
        content_type: Some("application/json".to_owned()),
        content_encoding: None,
        expect_continue: false,
        connection_close: false,
        host: Some("llm.internal:8000".to_owned()),
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned()),
        tenant: Some("acme".to_owned()),
        api_key_hash: Some("k-5e1f".to_owned()),
        body: BodyKind::Chunked,
        head_len: 120,
    }
}

fn res_head(status: u16, content_type: Option<&str>) -> ResponseHead {
    ResponseHead {
        status,
        version_minor: 1,
        content_type: content_type.map(str::to_owned),
        content_encoding: None,
        connection_close: false,
        body: BodyKind::Chunked,
        head_len: 80,
        header_tokens: HeaderTokens::default(),
    }
}

fn conn() -> ConnInfo {
    ConnInfo {
        key: ConnKey {
            tgid: 4242,
            conn_id: 17,
        },
        comm: "vllm".to_owned(),
        role: Role::Server,
        peer: Some("10.1.2.3:45678".parse().unwrap()),
        opened_ns: 0,
        preexisting: false,
    }
}

/// An SSE body: one `data:` event per item, each ended by a blank line.
fn sse(events: &[&str]) -> Vec<u8> {
    events
        .iter()
        .flat_map(|e| format!("data: {e}\n\n").into_bytes())
        .collect()
}

/// The offset just past the `n`th (1-based) occurrence of `pat` in `hay`.
fn after_nth(hay: &[u8], pat: &str, n: usize) -> usize {
    let pat = pat.as_bytes();
    hay.windows(pat.len())
        .enumerate()
        .filter(|(_, w)| *w == pat)
        .nth(n - 1)
        .map(|(i, _)| i + pat.len())
        .unwrap()
}

/// One exchange fed by hand, with the tracker's counters and body bound.
struct Ex {
    f: InFlight,
    stats: TrackerStats,
    max: usize,
}

impl Ex {
    fn new() -> Self {
        Self::with_max(1024 * 1024)
    }

    fn with_max(max: usize) -> Self {
        Self {
            f: InFlight::new(3),
            stats: TrackerStats::default(),
            max,
        }
    }

    /// The request's head at `T0`, its body in `pieces`, its end with `wire` bytes.
    fn request(&mut self, method: &str, path: &str, pieces: &[&[u8]], wire: u64) {
        self.f.request_head(T0, &req_head(method, path));
        for p in pieces {
            self.f
                .request_body(&Bytes::copy_from_slice(p), self.max, &mut self.stats);
        }
        self.f.request_end(wire, self.max, &mut self.stats);
    }

    fn head(&mut self, ms: u64, status: u16, content_type: Option<&str>) {
        self.f
            .response_head(at(ms), &res_head(status, content_type));
    }

    fn body(&mut self, ms: u64, data: &[u8]) {
        self.f.response_body(
            at(ms),
            &Bytes::copy_from_slice(data),
            self.max,
            &mut self.stats,
        );
    }

    fn end(&mut self, ms: u64, wire: u64) {
        self.f.response_end(at(ms), wire, self.max, &mut self.stats);
    }

    fn abort(&mut self, ts_ns: u64, wire: u64, reason: EndReason) {
        self.f.response_abort(ts_ns, wire, reason, &mut self.stats);
    }

    fn record(self) -> (RequestRecord, TrackerStats) {
        (self.f.into_record(&conn(), 0), self.stats)
    }
}

fn stats_with(f: impl FnOnce(&mut TrackerStats)) -> TrackerStats {
    let mut s = TrackerStats::default();
    f(&mut s);
    s
}

// ---- Lifecycle -------------------------------------------------------------------------

#[test]
fn new_exchange_is_empty() {
    let f = InFlight::new(9);
    assert_eq!(f.seq, 9);
    assert_eq!(f.start_ns(), None);
    assert!(!f.is_done());
    let r = f.into_record(&conn(), 0);
    assert_eq!((r.method.as_str(), r.path.as_str()), ("", ""));
    assert_eq!(r.api, Api::Other);
    assert_eq!((r.start_ns, r.start.as_str()), (0, "1970-01-01T00:00:00Z"));
    assert_eq!((r.status, r.ttft_ms, r.e2e_ms), (None, None, None));
    assert_eq!((r.input_tokens, r.output_tokens), (None, None));
    assert_eq!(r.token_source, TokenSource::None);
    assert_eq!((r.partial, r.partial_reason, r.error), (false, None, None));
    assert!(!r.stream);
    assert_eq!((r.server_address, r.server_port), (None, None));
}

#[test]
fn done_only_when_both_sides_are_over() {
    let mut x = Ex::new();
    x.f.request_head(T0, &req_head("GET", "/health"));
    assert_eq!(x.f.start_ns(), Some(T0));
    assert!(!x.f.is_done());
    x.f.request_end(40, x.max, &mut x.stats);
    assert!(!x.f.is_done(), "request over, response not begun");
    x.head(5, 200, None);
    x.body(6, b"ok");
    assert!(!x.f.is_done());
    x.end(6, 40);
    assert!(x.f.is_done());

    // The response side may be over first (a response to a request still being sent).
    let mut x = Ex::new();
    x.f.request_head(T0, &req_head("POST", CHAT));
    x.abort(at(3), 0, EndReason::Gap);
    assert!(!x.f.is_done());
    x.f.request_end(10, x.max, &mut x.stats);
    assert!(x.f.is_done());
}

#[test]
fn start_is_the_head_else_the_first_abort() {
    let mut f = InFlight::new(0);
    f.request_head(T0, &req_head("POST", CHAT));
    f.request_abort(at(5), 10, EndReason::Gap);
    assert_eq!(
        f.start_ns(),
        Some(T0),
        "an abort does not move a known start"
    );

    let mut f = InFlight::new(0);
    f.request_abort(at(5), 0, EndReason::CaptureStart);
    assert_eq!(f.start_ns(), Some(at(5)));
    f.request_abort(at(9), 0, EndReason::Gap);
    assert_eq!(f.start_ns(), Some(at(5)));
    assert!(!f.is_done());
}

// ---- Request head ----------------------------------------------------------------------

#[test]
fn request_head_fields_reach_the_record() {
    let long = format!("{CHAT}?q={}", "é".repeat(3000));
    let mut x = Ex::new();
    x.request("POST", &long, &[br#"{"model":"m"}"#], 99);
    let (r, _) = x.record();
    assert_eq!(r.path.chars().count(), 2048, "path kept to 2048 chars");
    assert!(long.starts_with(&r.path));
    assert_eq!(r.api, Api::ChatCompletions, "classified on the whole path");
    assert_eq!(r.method, "POST");
    assert_eq!(r.server_address.as_deref(), Some("llm.internal"));
    assert_eq!(r.server_port, Some(8000));
    assert_eq!(
        r.traceparent.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(r.tenant.as_deref(), Some("acme"));
    assert_eq!(r.api_key_hash.as_deref(), Some("k-5e1f"));
    assert_eq!((r.pid, r.conn_id, r.comm.as_str()), (4242, 17, "vllm"));
    assert_eq!(r.peer.as_deref(), Some("10.1.2.3:45678"));
    assert_eq!(r.request_bytes, 99);
}

#[test]
fn host_forms() {
    for (host, addr, port) in [
        (Some("[::1]:8080"), Some("::1"), Some(8080)),
        (Some("example.com"), Some("example.com"), None),
        (Some("example.com:notaport"), Some("example.com"), None),
        (None, None, None),
    ] {
        let mut f = InFlight::new(0);
        let mut head = req_head("GET", "/");
        head.host = host.map(str::to_owned);
        f.request_head(T0, &head);
        let r = f.into_record(&conn(), 0);
        assert_eq!(
            (r.server_address.as_deref(), r.server_port),
            (addr, port),
            "{host:?}"
        );
    }
}

// ---- Non-streaming responses ------------------------------------------------------------

const CHAT_REQ: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hi"}],"max_tokens":32,"n":1}"#;
const CHAT_RES: &[u8] = br#"{"id":"chatcmpl-abc","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4}}}"#;

#[test]
fn non_streaming_chat_completion() {
    let mut x = Ex::new();
    let (a, b) = CHAT_REQ.split_at(40);
    x.request("POST", CHAT, &[a, b], 250);
    x.head(40, 200, Some("application/json; charset=utf-8"));
    x.body(44, b"");
    let (a, b) = CHAT_RES.split_at(100);
    x.body(45, a);
    x.body(47, b);
    x.end(48, 480);
    assert!(x.f.is_done());
    let (r, stats) = x.record();

    assert_eq!(
        uuid::Uuid::parse_str(&r.request_id)
            .unwrap()
            .get_version_num(),
        7
    );
    assert_eq!(r.status, Some(200));
    assert_eq!(r.api, Api::ChatCompletions);
    assert_eq!(r.response_id.as_deref(), Some("chatcmpl-abc"));
    assert_eq!(r.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(r.request_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(
        (r.max_tokens, r.n, r.include_usage),
        (Some(32), Some(1), None)
    );
    assert!(!r.stream);
    assert_eq!(
        (r.input_tokens, r.output_tokens, r.cached_input_tokens),
        (Some(12), Some(3), Some(4))
    );
    assert_eq!(r.token_source, TokenSource::Usage);
    assert_eq!(r.input_token_source, Some(CountSource::Usage));
    assert_eq!(r.output_token_source, Some(CountSource::Usage));
    // Not streaming: the first token is the first body byte (the empty read does not count).
    assert_eq!(r.ttft_ms, Some(45.0));
    assert_eq!(r.e2e_ms, Some(48.0));
    assert_eq!((r.tpot_ms, r.itl_mean_ms, r.itl_max_ms), (None, None, None));
    assert_eq!((r.stream_events, r.content_events), (0, 0));
    assert_eq!((r.request_bytes, r.response_bytes), (250, 480));
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.finish_reasons, vec![Some("stop".to_owned())]);
    assert_eq!((r.error, r.error_message), (None, None));
    assert_eq!((r.partial, r.partial_reason), (false, None));
    assert_eq!(r.start, "1970-01-01T00:00:05Z");
    assert_eq!(r.start_ns, T0);
    assert_eq!(r.response_head_ns, Some(at(40)));
    assert_eq!(r.first_token_ns, Some(at(45)));
    assert_eq!(r.last_token_ns, None);
    assert_eq!(r.end_ns, Some(at(48)));
    assert_eq!(
        (r.gpu_seconds, r.gpu_energy_j, r.cost_usd, r.chargeback_usd),
        (None, None, None, None)
    );
    assert_eq!(stats, TrackerStats::default());
}

#[test]
fn non_streaming_without_usage_is_estimated_from_bytes() {
    let mut x = Ex::new();
    // Prompt: 10 bytes -> 3 tokens. Text: ten bytes in five chars -> 3 tokens (bytes, not chars).
    x.request(
        "POST",
        "/v1/completions",
        &[br#"{"model":"m","prompt":"abcdefghij","stream":false}"#],
        90,
    );
    x.head(10, 200, Some("application/json"));
    x.body(
        12,
        r#"{"choices":[{"index":0,"text":"ééééé","finish_reason":"length"}]}"#.as_bytes(),
    );
    x.end(12, 150);
    let (r, stats) = x.record();
    assert_eq!(r.api, Api::Completions);
    assert_eq!(r.model.as_deref(), Some("m"), "the request's model");
    assert_eq!(r.response_id, None);
    assert_eq!((r.input_tokens, r.output_tokens), (Some(3), Some(3)));
    assert_eq!(r.input_token_source, Some(CountSource::PromptBytes));
    assert_eq!(r.output_token_source, Some(CountSource::TextBytes));
    assert_eq!(r.token_source, TokenSource::Estimated);
    assert_eq!(r.finish_reason.as_deref(), Some("length"));
    assert_eq!(r.ttft_ms, Some(12.0));
    assert!(!r.stream);
    assert_eq!(stats, TrackerStats::default());
}

#[test]
fn embeddings_make_no_output_tokens() {
    let mut x = Ex::new();
    x.request(
        "POST",
        "/v1/embeddings",
        &[br#"{"model":"e5","input":["abcd","efgh"]}"#],
        70,
    );
    x.head(3, 200, Some("application/json"));
    x.body(
        4,
        br#"{"object":"list","data":[{"embedding":[0.1]}],"model":"e5","usage":{"prompt_tokens":4,"total_tokens":4}}"#,
    );
    x.end(4, 200);
    let (r, _) = x.record();
    assert_eq!(r.api, Api::Embeddings);
    assert_eq!((r.input_tokens, r.output_tokens), (Some(4), Some(0)));
    assert_eq!(r.output_token_source, Some(CountSource::Api));
    assert_eq!(r.token_source, TokenSource::Usage);
    assert_eq!(r.ttft_ms, None, "nothing generated, no first token");
    assert_eq!(r.e2e_ms, Some(4.0));
}

#[test]
fn finish_reasons_by_choice_index_within_bound() {
    let mut x = Ex::new();
    x.request("POST", CHAT, &[br#"{"n":3}"#], 10);
    x.head(1, 200, Some("application/json"));
    x.body(
        2,
        br#"{"choices":[{"index":2,"finish_reason":"length"},{"index":0,"finish_reason":"stop"},{"index":127,"finish_reason":"tool_calls"},{"index":128,"finish_reason":"dropped"},{"index":4294967295,"finish_reason":"dropped"}]}"#,
    );
    x.end(2, 10);
    let (r, _) = x.record();
    assert_eq!(r.finish_reasons.len(), 128);
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.finish_reasons[1], None);
    assert_eq!(r.finish_reasons[2].as_deref(), Some("length"));
    assert_eq!(r.finish_reasons[127].as_deref(), Some("tool_calls"));
    assert_eq!(r.finish_reasons.iter().flatten().count(), 3);
}

// ---- Streaming: SSE --------------------------------------------------------------------

const S1: &str = r#"{"id":"chatcmpl-s1","object":"chat.completion.chunk","model":"mödel-ß","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
const S2: &str = r#"{"id":"chatcmpl-s1","object":"chat.completion.chunk","model":"mödel-ß","choices":[{"index":0,"delta":{"content":"Grüß"},"finish_reason":null}]}"#;
const S3: &str = r#"{"id":"chatcmpl-s1","object":"chat.completion.chunk","model":"mödel-ß","choices":[{"index":0,"delta":{"content":" dich"},"finish_reason":null}]}"#;
const S4: &str = r#"{"id":"chatcmpl-s1","object":"chat.completion.chunk","model":"mödel-ß","choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"stop"}]}"#;
const S5: &str = r#"{"id":"chatcmpl-s1","object":"chat.completion.chunk","model":"mödel-ß","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":6,"total_tokens":15}}"#;
const STREAM_REQ: &[u8] = br#"{"model":"base","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Greet me"}]}"#;

#[test]
fn sse_chat_stream_with_usage_split_mid_event_and_mid_utf8() {
    let body = sse(&[S1, S2, S3, S4, S5, "[DONE]"]);
    // Cuts: inside the two bytes of "ö" (S1's model), inside "ü" (S2's content), after S2,
    // between S3's two newlines, after S4, the rest.
    let cuts = [
        after_nth(&body, "mö", 1) - 1,
        after_nth(&body, "Grü", 1) - 1,
        after_nth(&body, "\n\n", 2),
        after_nth(&body, "\n\n", 3) - 1,
        after_nth(&body, "\n\n", 4),
        body.len(),
    ];
    let times = [10, 20, 30, 50, 55, 60];
    let mut x = Ex::new();
    x.request("POST", CHAT, &[STREAM_REQ], 300);
    x.head(8, 200, Some("text/event-stream; charset=utf-8"));
    let mut from = 0;
    for (cut, ms) in cuts.iter().zip(times) {
        x.body(ms, &body[from..*cut]);
        from = *cut;
    }
    x.end(61, 2000);
    let (r, stats) = x.record();

    assert_eq!(
        r.model.as_deref(),
        Some("mödel-ß"),
        "bytes joined before UTF-8"
    );
    assert_eq!(r.request_model.as_deref(), Some("base"));
    assert_eq!(r.response_id.as_deref(), Some("chatcmpl-s1"));
    assert!(r.stream);
    assert_eq!(r.include_usage, Some(true));
    // Six events ([DONE] and the role-only chunk included), three with content.
    assert_eq!((r.stream_events, r.content_events), (6, 3));
    assert_eq!((r.input_tokens, r.output_tokens), (Some(9), Some(6)));
    assert_eq!(r.token_source, TokenSource::Usage);
    // First content at 30 (S2 completes there), then S3 and S4 at 55.
    assert_eq!(r.ttft_ms, Some(30.0));
    assert_eq!(r.first_token_ns, Some(at(30)));
    assert_eq!(r.last_token_ns, Some(at(55)));
    assert_eq!(r.itl_max_ms, Some(25.0));
    assert_eq!(r.itl_mean_ms, Some(12.5), "25 ms over two gaps");
    assert_eq!(r.tpot_ms, Some(5.0), "25 ms over 6 - 1 usage tokens");
    assert_eq!(r.e2e_ms, Some(61.0));
    assert_eq!(r.response_head_ns, Some(at(8)));
    assert_eq!(r.end_ns, Some(at(61)));
    assert_eq!(r.finish_reasons, vec![Some("stop".to_owned())]);
    assert_eq!((r.request_bytes, r.response_bytes), (300, 2000));
    assert_eq!((r.partial, r.error), (false, None));
    assert_eq!(stats, TrackerStats::default());
}

/// What a stream's record says, but the times.
type Summary = (
    Option<String>,
    Option<String>,
    u32,
    u32,
    Option<u64>,
    Vec<Option<String>>,
    Option<f64>,
    TrackerStats,
);

fn summary(pieces: &[&[u8]]) -> Summary {
    let mut x = Ex::new();
    x.request("POST", CHAT, &[STREAM_REQ], 300);
    x.head(5, 200, Some("text/event-stream"));
    for p in pieces {
        x.body(20, p);
    }
    x.end(30, 2000);
    let (r, stats) = x.record();
    (
        r.model,
        r.response_id,
        r.stream_events,
        r.content_events,
        r.output_tokens,
        r.finish_reasons,
        r.ttft_ms,
        stats,
    )
}

#[test]
fn sse_every_split_gives_the_same_record() {
    let body = sse(&[S1, S2, S3, S4, S5, "[DONE]"]);
    let whole = summary(&[&body]);
    assert_eq!(whole.2, 6);
    assert_eq!(whole.3, 3);
    for i in 0..=body.len() {
        let (a, b) = body.split_at(i);
        assert_eq!(summary(&[a, b]), whole, "split at {i}");
    }
    let bytes: Vec<&[u8]> = body.chunks(1).collect();
    assert_eq!(summary(&bytes), whole, "one byte at a time");
}

#[test]
fn sse_without_usage_counts_deltas_over_choices() {
    let body = sse(&[
        r#"{"id":"c2","choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}"#,
        r#"{"id":"c2","choices":[{"index":0,"delta":{"content":"c"}}]}"#,
    ]);
    let mut x = Ex::new();
    x.request(
        "POST",
        CHAT,
        &[br#"{"model":"m","n":2,"stream":true,"messages":[{"role":"user","content":"Tell me a joke"}]}"#],
        200,
    );
    x.head(5, 200, Some("text/event-stream"));
    let cut = after_nth(&body, "\n\n", 1);
    x.body(20, &body[..cut]);
    x.body(30, &body[cut..]);
    // The last event has no blank line after it: dispatched when the response ends.
    x.body(
        35,
        br#"data: {"id":"c2","choices":[{"index":1,"delta":{"content":"d"},"finish_reason":"length"},{"index":0,"delta":{},"finish_reason":"stop"}]}
"#,
    );
    x.end(80, 900);
    let (r, stats) = x.record();
    assert_eq!(r.model.as_deref(), Some("m"));
    assert_eq!((r.stream_events, r.content_events), (3, 3));
    // Deltas summed over choices: 2 + 1 + 1.
    assert_eq!(r.output_tokens, Some(4));
    assert_eq!(r.output_token_source, Some(CountSource::StreamCount));
    // "Tell me a joke": 14 bytes -> 4.
    assert_eq!(r.input_tokens, Some(4));
    assert_eq!(r.input_token_source, Some(CountSource::PromptBytes));
    assert_eq!(r.token_source, TokenSource::Estimated);
    assert_eq!(r.ttft_ms, Some(20.0));
    assert_eq!(r.last_token_ns, Some(at(80)));
    assert_eq!(r.itl_max_ms, Some(50.0));
    assert_eq!(r.itl_mean_ms, Some(30.0));
    assert_eq!(r.tpot_ms, Some(20.0), "60 ms over 4 - 1 tokens");
    assert_eq!(
        r.finish_reasons,
        vec![Some("stop".to_owned()), Some("length".to_owned())]
    );
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(stats, TrackerStats::default());
}

#[test]
fn sse_done_only_stream_has_no_first_token() {
    let mut x = Ex::new();
    x.request("POST", CHAT, &[STREAM_REQ], 300);
    x.head(5, 200, Some("text/event-stream"));
    x.body(9, b": keep-alive\n\ndata:  [DONE] \n\n");
    x.end(10, 150);
    let (r, stats) = x.record();
    assert!(r.stream);
    assert_eq!((r.stream_events, r.content_events), (1, 0));
    assert_eq!(
        (r.ttft_ms, r.first_token_ns, r.last_token_ns),
        (None, None, None)
    );
    assert_eq!((r.tpot_ms, r.itl_mean_ms, r.itl_max_ms), (None, None, None));
    // No event parsed: the output is unknown, not zero. "Greet me" -> 2.
    assert_eq!((r.input_tokens, r.output_tokens), (Some(2), None));
    assert_eq!(r.e2e_ms, Some(10.0));
    assert_eq!(stats, TrackerStats::default());
}

#[test]
fn sse_single_content_event_has_no_gaps() {
    let mut x = Ex::new();
    x.request("POST", CHAT, &[STREAM_REQ], 300);
    x.head(5, 200, Some("text/event-stream"));
    x.body(7, &sse(&[S2, S5]));
    x.end(8, 150);
    let (r, _) = x.record();
    assert_eq!(r.content_events, 1);
    assert_eq!(r.ttft_ms, Some(7.0));
    assert_eq!(r.last_token_ns, Some(at(7)));
    assert_eq!(r.output_tokens, Some(6));
    // One event: no gap to measure; tpot over 6 tokens in zero time is 0.
    assert_eq!((r.itl_mean_ms, r.itl_max_ms), (None, None));
    assert_eq!(r.tpot_ms, Some(0.0));
}

#[test]
fn sse_bad_events_are_counted_and_skipped() {
    let mut x = Ex::new();
    x.request("POST", CHAT, &[STREAM_REQ], 300);
    x.head(5, 200, Some("text/event-stream"));
    x.body(6, b"data: {not json\n\ndata: [1,2]\n\n");
    x.body(7, &sse(&[S2, "[DONE]"]));
    x.end(8, 150);
    let (r, stats) = x.record();
    assert_eq!((r.stream_events, r.content_events), (4, 1));
    assert_eq!(r.ttft_ms, Some(7.0));
    assert_eq!(r.error, None);
    assert_eq!(stats, stats_with(|s| s.json_errors = 2));
}

#[test]
fn sse_overlong_line_is_dropped_and_counted() {
    let mut long = b"data: ".to_vec();
    long.resize(crate::protocol::sse::DEFAULT_MAX_LINE + 1, b'x');
    let mut x = Ex::new();
    x.request("POST", CHAT, &[STREAM_REQ], 300);
    x.head(5, 200, Some("text/event-stream"));
    x.body(6, &long);
    x.body(7, b"xxxx\n\n");
    x.body(8, &sse(&[S2]));
    x.end(9, 150);
    let (r, stats) = x.record();
    assert_eq!((r.stream_events, r.content_events), (1, 1));
    assert_eq!(r.ttft_ms, Some(8.0));
    assert_eq!(stats, stats_with(|s| s.sse_errors = 1));
}

#[test]
fn sse_error_events() {
    // An error event with a JSON error: its type and message.
    let mut x = Ex::new();
    x.request("POST", CHAT, &[STREAM_REQ], 300);
    x.head(5, 200, Some("text/event-stream"));
    x.body(6, &sse(&[S2]));
    x.body(
        7,
        b"event: error\ndata: {\"error\":{\"message\":\"model overloaded\",\"type\":\"server_error\",\"code\":503}}\n\n\
          event: error\ndata: {\"error\":{\"message\":\"second\",\"type\":\"other\"}}\n\n",
    );
    x.end(8, 150);
    let (r, stats) = x.record();
    assert_eq!(
        r.error.as_deref(),
        Some("server_error"),
        "the first error wins"
    );
    assert_eq!(r.error_message.as_deref(), Some("model overloaded"));
    assert_eq!(r.status, Some(200));
    assert_eq!(r.ttft_ms, Some(6.0));
    assert_eq!((r.stream_events, r.content_events), (3, 1));
    assert_eq!(stats, TrackerStats::default());

    // An error event whose data is not JSON: a stream error without a message.
    let mut x = Ex::new();
    x.request("POST", CHAT, &[STREAM_REQ], 300);
    x.head(5, 200, Some("text/event-stream"));
    x.body(6, b"event: error\ndata: upstream failed\n\n");
    x.end(8, 150);
    let (r, stats) = x.record();
    assert_eq!(r.error.as_deref(), Some("stream_error"));
    assert_eq!(r.error_message, None);
    assert_eq!(r.stream_events, 1);
    assert_eq!(stats, stats_with(|s| s.json_errors = 1));
}

#[test]
fn stream_merge_first_id_and_model_last_usage_and_timings() {
    let mut x = Ex::new();
    x.request("POST", CHAT, &[STREAM_REQ], 300);
    x.head(5, 200, Some("text/event-stream"));
    x.body(
        6,
        &sse(&[
            r#"{"id":"","model":"first","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"length"}]}"#,
            r#"{"id":"cmpl-2","model":"second","choices":[{"index":0,"delta":{"content":"b"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#,
            r#"{"id":"cmpl-3","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":9},"timings":{"prompt_n":1,"predicted_n":1,"cache_n":2}}"#,
        ]),
    );
    x.end(8, 150);
    let (r, _) = x.record();
    assert_eq!(
        r.response_id.as_deref(),
        Some("cmpl-2"),
        "first non-empty id"
    );
    assert_eq!(r.model.as_deref(), Some("first"));
    assert_eq!((r.input_tokens, r.output_tokens), (Some(7), Some(9)));
    assert_eq!(
        r.cached_input_tokens,
        Some(2),
        "usage without cached: timings'"
    );
    assert_eq!(
        r.finish_reason.as_deref(),
        Some("stop"),
        "the last one of a choice"
    );
}

#[test]
fn llamacpp_timings_without_usage() {
    let mut x = Ex::new();
    x.request("POST", CHAT, &[STREAM_REQ], 300);
    x.head(5, 200, Some("text/event-stream"));
    x.body(
        6,
        &sse(&[
            S2,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"timings":{"prompt_n":5,"predicted_n":9,"cache_n":3}}"#,
        ]),
    );
    x.end(8, 150);
    let (r, _) = x.record();
    assert_eq!(
        (r.input_tokens, r.output_tokens, r.cached_input_tokens),
        (Some(8), Some(9), Some(3))
    );
    assert_eq!(r.token_source, TokenSource::Timings);
    assert_eq!(r.output_token_source, Some(CountSource::Timings));
}

// ---- Streaming: NDJSON (Ollama) --------------------------------------------------------

const OLLAMA_REQ: &[u8] =
    br#"{"model":"llama3.2","messages":[{"role":"user","content":"Why is the sky blue?"}]}"#;
const O1: &str = r#"{"model":"llama3.2","created_at":"2025-01-01T00:00:00Z","message":{"role":"assistant","content":"The"},"done":false}"#;
const O2: &str =
    r#"{"model":"llama3.2","message":{"role":"assistant","content":" sky"},"done":false}"#;
const O3: &str = r#"{"model":"llama3.2","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":26,"eval_count":2}"#;

#[test]
fn ollama_ndjson_chat_stream() {
    let body = format!("{O1}\n{O2}\r\n\n{O3}").into_bytes();
    let cut = after_nth(&body, " s", 1);
    let mut x = Ex::new();
    x.request("POST", "/api/chat", &[OLLAMA_REQ], 180);
    x.head(50, 200, Some("application/x-ndjson"));
    x.body(100, &body[..cut]);
    x.body(150, &body[cut..]);
    // The last line has no newline: taken at the end.
    x.end(160, 700);
    let (r, stats) = x.record();
    assert_eq!(r.api, Api::OllamaChat);
    assert!(r.stream);
    assert_eq!(r.model.as_deref(), Some("llama3.2"));
    assert_eq!((r.stream_events, r.content_events), (3, 2));
    assert_eq!((r.input_tokens, r.output_tokens), (Some(26), Some(2)));
    assert_eq!(r.token_source, TokenSource::Usage);
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    assert_eq!(r.ttft_ms, Some(100.0));
    assert_eq!(r.last_token_ns, Some(at(150)));
    assert_eq!((r.itl_max_ms, r.itl_mean_ms), (Some(50.0), Some(50.0)));
    assert_eq!(r.tpot_ms, Some(50.0));
    assert_eq!(r.e2e_ms, Some(160.0));
    assert_eq!(stats, TrackerStats::default());
}

#[test]
fn ollama_request_streams_unless_told_not_to() {
    // No response seen: `stream` is what the request asked for, Ollama's default included.
    for (body, stream) in [
        (&br#"{"model":"x","prompt":"hi"}"#[..], true),
        (br#"{"model":"x","prompt":"hi","stream":false}"#, false),
    ] {
        let mut x = Ex::new();
        x.request("POST", "/api/generate", &[body], 60);
        x.abort(at(9), 0, EndReason::NoResponse);
        let (r, _) = x.record();
        assert_eq!(r.api, Api::OllamaGenerate);
        assert_eq!(r.stream, stream);
    }
}

#[test]
fn ndjson_bad_and_overlong_lines_are_counted() {
    let mut x = Ex::new();
    x.request("POST", "/api/chat", &[OLLAMA_REQ], 180);
    x.head(50, 200, Some("application/x-ndjson"));
    x.body(60, b"not json\n");
    let mut long = vec![b'x'; crate::protocol::ndjson::DEFAULT_MAX_LINE + 1];
    x.body(61, &long);
    long.truncate(3);
    long.push(b'\n');
    x.body(62, &long);
    x.body(70, format!("{O2}\n").as_bytes());
    x.end(80, 700);
    let (r, stats) = x.record();
    assert_eq!((r.stream_events, r.content_events), (2, 1));
    assert_eq!(r.ttft_ms, Some(70.0));
    assert_eq!(
        stats,
        stats_with(|s| {
            s.json_errors = 1;
            s.ndjson_errors = 1;
        })
    );
}

// ---- Bounds ----------------------------------------------------------------------------

/// A JSON object of `n` members: past its budget, a copy still keeps every member of the
/// document's object, so enough of them outgrow any bound.
fn members_without_end(n: usize) -> Vec<u8> {
    let mut body = b"{".to_vec();
    for i in 0..n {
        body.extend_from_slice(format!("\"k{i}\":{i},").as_bytes());
    }
    body.extend_from_slice(br#""model":"late"}"#);
    body
}

#[test]
fn request_body_over_its_bound_is_read_whole() {
    // Past the bound the prompt is left out of the copy but measured: the same record.
    let prompt = "Say hi to everyone in the room, one by one. ".repeat(2000);
    let body = serde_json::to_vec(&serde_json::json!({
        "model": "abcd", "messages": [{"role": "user", "content": prompt}], "max_tokens": 7
    }))
    .unwrap();
    let whole = {
        let mut x = Ex::with_max(1 << 20);
        x.request("POST", CHAT, &[&body], 100);
        x.record()
    };
    let mut x = Ex::with_max(64);
    let (a, b) = body.split_at(30);
    x.request("POST", CHAT, &[a, b], 100);
    let (r, stats) = x.record();
    assert_eq!(r.request_model.as_deref(), Some("abcd"));
    assert_eq!(r.input_tokens, whole.0.input_tokens);
    assert!(r.input_tokens > Some(20_000));
    assert_eq!((r.partial, r.partial_reason), (false, None));
    assert_eq!(whole.1, TrackerStats::default());
    assert_eq!(stats, stats_with(|s| s.bodies_elided = 1));
}

#[test]
fn request_body_over_its_hard_bound() {
    let mut x = Ex::with_max(16);
    let body = members_without_end(20_000);
    x.request("POST", CHAT, &[&body[..7], &body[7..], b"more"], 100);
    let (r, stats) = x.record();
    assert_eq!(r.request_model, None, "not parsed");
    assert_eq!(r.input_tokens, None);
    assert!(r.partial);
    assert_eq!(r.partial_reason.as_deref(), Some("request_body_over_limit"));
    assert_eq!(r.request_bytes, 100, "still counted");
    assert_eq!(
        stats,
        stats_with(|s| s.bodies_over_limit = 1),
        "counted once"
    );
}

/// A chat request for model `asked` (a 2-token prompt) and the head of its JSON response,
/// with bodies kept up to `max`.
fn asked_for_json(max: usize) -> Ex {
    let mut x = Ex::with_max(max);
    x.request(
        "POST",
        CHAT,
        &[br#"{"model":"asked","messages":[{"role":"user","content":"Say hi"}]}"#],
        100,
    );
    x.head(10, 200, Some("application/json"));
    x
}

#[test]
fn response_json_body_over_its_bound_is_read_whole() {
    let mut x = asked_for_json(128);
    let text = "Hi there! ".repeat(5000);
    let res = String::from_utf8(CHAT_RES.to_vec())
        .unwrap()
        .replace("Hi there!", &text);
    let (a, b) = res.as_bytes().split_at(100);
    x.body(11, a);
    x.body(12, b);
    x.end(14, 400);
    let (r, stats) = x.record();
    assert_eq!(r.response_id.as_deref(), Some("chatcmpl-abc"));
    assert_eq!((r.input_tokens, r.output_tokens), (Some(12), Some(3)));
    assert_eq!(r.finish_reasons, vec![Some("stop".to_owned())]);
    assert_eq!((r.ttft_ms, r.e2e_ms), (Some(11.0), Some(14.0)));
    assert!(!r.partial);
    assert_eq!(stats, stats_with(|s| s.bodies_elided = 1));
}

#[test]
fn response_json_body_over_its_hard_bound() {
    let mut x = asked_for_json(128);
    let body = members_without_end(20_000);
    let (a, b) = body.split_at(100);
    x.body(11, a);
    x.body(12, b);
    x.body(13, b"}");
    x.end(14, 400);
    let (r, stats) = x.record();
    assert_eq!(r.model.as_deref(), Some("asked"), "the body was not parsed");
    assert_eq!((r.response_id, r.output_tokens), (None, None));
    assert_eq!(r.input_tokens, Some(2), "the request's estimate");
    assert_eq!(r.ttft_ms, Some(11.0));
    assert_eq!(r.e2e_ms, Some(14.0));
    assert_eq!(r.response_bytes, 400);
    assert_eq!(
        r.partial_reason.as_deref(),
        Some("response_body_over_limit")
    );
    assert_eq!(stats, stats_with(|s| s.bodies_over_limit = 1));
}

#[test]
fn both_bodies_over_their_hard_bound() {
    let mut x = Ex::with_max(8);
    let body = members_without_end(20_000);
    x.request("POST", CHAT, &[&body], 100);
    x.head(10, 200, Some("application/json"));
    x.body(11, &body);
    x.end(14, 400);
    let (r, stats) = x.record();
    assert_eq!(
        r.partial_reason.as_deref(),
        Some("request_body_over_limit,response_body_over_limit")
    );
    assert_eq!(stats, stats_with(|s| s.bodies_over_limit = 2));
}

#[test]
fn streamed_response_is_not_bound() {
    let mut x = Ex::with_max(200);
    x.request("POST", CHAT, &[br#"{"stream":true}"#], 100);
    x.head(10, 200, Some("text/event-stream"));
    let body = sse(&[S1, S2, S3, S4, S5, "[DONE]"]);
    assert!(body.len() > 3 * 200);
    x.body(11, &body);
    x.end(12, 900);
    let (r, stats) = x.record();
    assert_eq!((r.stream_events, r.content_events), (6, 3));
    assert_eq!(r.output_tokens, Some(6));
    assert!(!r.partial);
    assert_eq!(stats, TrackerStats::default());
}

#[test]
fn other_api_keeps_no_body() {
    let mut x = Ex::with_max(4);
    x.request("GET", "/v1/models", &[b"0123456789"], 50);
    x.head(2, 200, Some("text/event-stream"));
    x.body(
        3,
        b"data: {\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n{oops",
    );
    x.end(4, 300);
    let (r, stats) = x.record();
    assert_eq!(r.api, Api::Other);
    assert!(!r.stream, "not decoded, so not seen streaming");
    assert_eq!((r.stream_events, r.content_events), (0, 0));
    assert_eq!((r.model, r.output_tokens), (None, None));
    assert_eq!(r.token_source, TokenSource::None);
    assert_eq!(r.ttft_ms, None, "no token in a non-LLM response");
    assert_eq!(r.e2e_ms, Some(4.0));
    assert_eq!(
        (r.partial, r.request_bytes, r.response_bytes),
        (false, 50, 300)
    );
    assert_eq!(stats, TrackerStats::default());
}

// ---- Errors and odd bodies --------------------------------------------------------------

#[test]
fn http_error_with_json_error_body() {
    let mut x = Ex::new();
    x.request("POST", CHAT, &[CHAT_REQ], 250);
    x.head(3, 400, Some("application/json"));
    x.body(
        4,
        br#"{"error":{"message":"max_tokens is too large","type":"invalid_request_error","code":null}}"#,
    );
    x.end(4, 200);
    let (r, stats) = x.record();
    assert_eq!(r.status, Some(400));
    assert_eq!(r.error.as_deref(), Some("invalid_request_error"));
    assert_eq!(r.error_message.as_deref(), Some("max_tokens is too large"));
    // A rejected request: no first token, and no token numbers at all.
    assert_eq!((r.ttft_ms, r.first_token_ns), (None, None));
    assert_eq!((r.input_tokens, r.output_tokens), (None, None));
    assert_eq!(r.token_source, TokenSource::None);
    assert_eq!(r.request_model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(r.e2e_ms, Some(4.0));
    assert!(!r.partial);
    assert_eq!(stats, TrackerStats::default());
}

#[test]
fn http_error_with_odd_bodies() {
    // Plain text: not JSON (counted), the error is the status.
    for (status, body, json_errors) in [(500, &b"Internal Server Error"[..], 1), (503, b"", 0)] {
        let mut x = Ex::new();
        x.request("POST", CHAT, &[CHAT_REQ], 250);
        x.head(3, status, Some("text/plain"));
        x.body(4, body);
        x.end(5, 90);
        let (r, stats) = x.record();
        assert_eq!(r.error, Some(format!("http_{status}")));
        assert_eq!(r.error_message, None);
        assert_eq!(r.ttft_ms, None);
        assert_eq!(r.e2e_ms, Some(5.0));
        assert_eq!(stats, stats_with(|s| s.json_errors = json_errors));
    }
}

#[test]
fn ok_status_with_bodies_that_do_not_parse() {
    for body in [&br#"{"id":"chatcmpl-x","choi"#[..], b"[1,2,3]", b"\xff\xfe"] {
        let mut x = Ex::new();
        x.request("POST", CHAT, &[CHAT_REQ], 250);
        x.head(3, 200, None);
        x.body(4, body);
        x.end(5, 90);
        let (r, stats) = x.record();
        assert_eq!(r.error, None);
        assert_eq!(r.response_id, None);
        assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"), "the request's");
        assert_eq!(r.output_tokens, None, "nothing parsed: unknown");
        assert_eq!(r.input_tokens, Some(2), "\"Say hi\" -> 2");
        assert_eq!(r.ttft_ms, Some(4.0), "the first body byte");
        assert!(!r.partial);
        assert_eq!(stats, stats_with(|s| s.json_errors = 1));
    }
}

#[test]
fn request_bodies_that_do_not_parse() {
    // An empty body is no JSON error: there was nothing to parse.
    for (body, errors) in [
        (&b"{\"model\":"[..], 1),
        (b"", 0),
        (b"\"just a string\"", 1),
    ] {
        let mut x = Ex::new();
        x.request("POST", CHAT, &[body], 100);
        let (r, stats) = x.record();
        assert_eq!((r.request_model, r.input_tokens), (None, None));
        assert!(!r.partial);
        assert_eq!(stats, stats_with(|s| s.json_errors = errors), "{body:?}");
    }
}

#[test]
fn error_precedence() {
    // An error in a body beats every other reason; a JSON body cut short says none.
    let mut x = Ex::new();
    x.request("POST", CHAT, &[CHAT_REQ], 250);
    x.head(3, 500, Some("application/json"));
    x.body(4, br#"{"error":"boom"}"#);
    x.abort(at(5), 60, EndReason::ClientDisconnected);
    let (r, _) = x.record();
    assert_eq!(
        r.error.as_deref(),
        Some("client_disconnected"),
        "a JSON body cut short is not parsed"
    );

    let mut x = Ex::new();
    x.request("POST", CHAT, &[CHAT_REQ], 250);
    x.head(3, 500, Some("text/event-stream"));
    x.body(4, b"data: {\"error\":\"boom\"}\n\n");
    x.abort(at(5), 60, EndReason::ClientDisconnected);
    let (r, _) = x.record();
    assert_eq!(r.error.as_deref(), Some("error"));
    assert_eq!(r.error_message.as_deref(), Some("boom"));

    // No response, then a client disconnect, then the status.
    let mut f = InFlight::new(0);
    f.request_head(T0, &req_head("POST", CHAT));
    f.request_abort(at(1), 10, EndReason::ClientDisconnected);
    f.response_abort(
        at(2),
        0,
        EndReason::NoResponse,
        &mut TrackerStats::default(),
    );
    assert_eq!(
        f.into_record(&conn(), 0).error.as_deref(),
        Some("no_response")
    );
    let mut x = Ex::new();
    x.request("POST", CHAT, &[CHAT_REQ], 250);
    x.head(3, 502, Some("text/plain"));
    x.abort(at(5), 60, EndReason::ClientDisconnected);
    let (r, _) = x.record();
    assert_eq!(r.error.as_deref(), Some("client_disconnected"));
    assert!(
        !r.partial,
        "a disconnect is a fact of the exchange, not of the capture"
    );
}

// ---- Aborts ----------------------------------------------------------------------------

/// A reason and its `partial_reason` on the request side, on the response side, and `error`.
type ReasonCase = (
    EndReason,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
);

/// Every reason, with what it makes of the record.
const REASONS: &[ReasonCase] = &[
    (
        EndReason::Gap,
        Some("request_gap"),
        Some("response_gap"),
        None,
    ),
    (
        EndReason::CaptureStart,
        Some("capture_started_mid_request"),
        Some("capture_started_mid_request"),
        None,
    ),
    (
        EndReason::ParseError,
        Some("parse_error"),
        Some("parse_error"),
        None,
    ),
    (
        EndReason::ConnectionClosed,
        Some("connection_closed"),
        Some("connection_closed"),
        None,
    ),
    (
        EndReason::PipelineOverflow,
        Some("pipeline_overflow"),
        Some("pipeline_overflow"),
        None,
    ),
    (EndReason::Evicted, Some("evicted"), Some("evicted"), None),
    (
        EndReason::Shutdown,
        Some("shutdown"),
        Some("shutdown"),
        None,
    ),
    (
        EndReason::ClientDisconnected,
        None,
        None,
        Some("client_disconnected"),
    ),
    (EndReason::NoResponse, None, None, Some("no_response")),
];

#[test]
fn request_abort_reasons() {
    for &(reason, partial, _, error) in REASONS {
        let mut f = InFlight::new(0);
        f.request_head(T0, &req_head("POST", CHAT));
        f.request_body(
            &Bytes::from_static(CHAT_REQ),
            1024,
            &mut TrackerStats::default(),
        );
        f.request_abort(at(7), 77, reason);
        assert!(!f.is_done());
        let r = f.into_record(&conn(), 0);
        assert_eq!(r.partial_reason.as_deref(), partial, "{reason:?}");
        assert_eq!(r.partial, partial.is_some(), "{reason:?}");
        assert_eq!(r.error.as_deref(), error, "{reason:?}");
        assert_eq!(r.request_bytes, 77);
        assert_eq!(r.request_model, None, "an aborted body is not parsed");
        assert_eq!(r.start_ns, T0);
    }
}

#[test]
fn response_abort_reasons() {
    for &(reason, _, partial, error) in REASONS {
        let mut x = Ex::new();
        x.request("POST", CHAT, &[CHAT_REQ], 250);
        x.head(3, 200, Some("application/json"));
        x.body(4, &CHAT_RES[..50]);
        x.abort(at(9), 120, reason);
        assert!(x.f.is_done());
        let (r, stats) = x.record();
        assert_eq!(r.partial_reason.as_deref(), partial, "{reason:?}");
        assert_eq!(r.partial, partial.is_some(), "{reason:?}");
        assert_eq!(r.error.as_deref(), error, "{reason:?}");
        assert_eq!((r.status, r.response_bytes), (Some(200), 120));
        // The truncated body is not parsed, and not counted as bad JSON.
        assert_eq!((r.response_id, r.output_tokens), (None, None));
        assert_eq!(r.ttft_ms, Some(4.0));
        assert_eq!(r.e2e_ms, Some(4.0), "the last byte seen");
        assert_eq!(stats, TrackerStats::default(), "{reason:?}");
    }
}

#[test]
fn reasons_are_listed_once_in_order() {
    let mut x = Ex::with_max(4);
    x.f.request_head(T0, &req_head("POST", CHAT));
    x.f.request_body(&Bytes::from(members_without_end(20_000)), 4, &mut x.stats);
    x.f.request_abort(at(1), 10, EndReason::Gap);
    x.abort(at(2), 0, EndReason::Gap);
    let (r, _) = x.record();
    assert_eq!(
        r.partial_reason.as_deref(),
        Some("request_body_over_limit,request_gap,response_gap")
    );

    let mut f = InFlight::new(0);
    f.request_abort(at(1), 10, EndReason::Shutdown);
    f.response_abort(at(2), 0, EndReason::Shutdown, &mut TrackerStats::default());
    let r = f.into_record(&conn(), 0);
    assert_eq!(r.partial_reason.as_deref(), Some("shutdown"));
}

#[test]
fn abort_before_any_response() {
    let mut x = Ex::new();
    x.request("POST", CHAT, &[STREAM_REQ], 300);
    x.abort(at(900), 0, EndReason::NoResponse);
    assert!(x.f.is_done());
    let (r, stats) = x.record();
    assert_eq!((r.status, r.response_head_ns), (None, None));
    assert_eq!(r.error.as_deref(), Some("no_response"));
    assert!(!r.partial);
    // No response byte: no end, so no e2e.
    assert_eq!((r.e2e_ms, r.end_ns, r.ttft_ms), (None, None, None));
    assert!(r.stream, "asked for, and no response says otherwise");
    assert_eq!(r.request_model.as_deref(), Some("base"));
    assert_eq!((r.input_tokens, r.output_tokens), (Some(2), None));
    assert_eq!((r.request_bytes, r.response_bytes), (300, 0));
    assert_eq!(stats, TrackerStats::default());
}

#[test]
fn response_abort_keeps_the_larger_byte_count() {
    let mut x = Ex::new();
    x.request("POST", CHAT, &[CHAT_REQ], 250);
    x.head(3, 200, Some("application/json"));
    x.abort(at(4), 500, EndReason::Gap);
    x.abort(at(5), 20, EndReason::Shutdown);
    let (r, _) = x.record();
    assert_eq!(r.response_bytes, 500);
    assert_eq!(r.partial_reason.as_deref(), Some("response_gap,shutdown"));
}

#[test]
fn aborted_stream_keeps_what_it_saw() {
    let mut x = Ex::new();
    x.request("POST", CHAT, &[STREAM_REQ], 300);
    x.head(5, 200, Some("text/event-stream"));
    x.body(20, &sse(&[S1, S2]));
    x.body(30, &sse(&[S3])[..20]);
    x.abort(at(31), 900, EndReason::ConnectionClosed);
    let (r, stats) = x.record();
    assert_eq!((r.stream_events, r.content_events), (2, 1));
    assert_eq!(r.output_tokens, Some(1));
    assert_eq!(r.response_id.as_deref(), Some("chatcmpl-s1"));
    assert_eq!(r.ttft_ms, Some(20.0));
    assert_eq!(r.e2e_ms, Some(30.0));
    assert_eq!(r.partial_reason.as_deref(), Some("connection_closed"));
    // The cut line ("data: {...", no line end) is dropped.
    assert_eq!(stats, TrackerStats::default());
}

/// An event not ended by a blank line is dispatched when the stream is given up; it arrived
/// with the last bytes, not at the (possibly much later) time of the abort.
#[test]
fn aborted_stream_dates_its_last_event_by_its_bytes() {
    let ten_minutes = 600_000 * MS;
    let mut x = Ex::new();
    x.request("POST", CHAT, &[STREAM_REQ], 300);
    x.head(5, 200, Some("text/event-stream"));
    x.body(20, &sse(&[S2]));
    x.body(30, format!("data: {S3}\n").as_bytes());
    x.abort(T0 + ten_minutes, 900, EndReason::Evicted);
    let (r, _) = x.record();
    assert_eq!(r.content_events, 2);
    assert_eq!(r.last_token_ns, Some(at(30)));
    assert_eq!(r.itl_max_ms, Some(10.0));
    assert_eq!(r.e2e_ms, Some(30.0));
    assert!(r.last_token_ns <= r.end_ns);

    let mut x = Ex::new();
    x.request("POST", "/api/chat", &[OLLAMA_REQ], 180);
    x.head(5, 200, Some("application/x-ndjson"));
    x.body(20, format!("{O1}\n").as_bytes());
    x.body(30, O2.as_bytes());
    x.abort(T0 + ten_minutes, 900, EndReason::Shutdown);
    let (r, _) = x.record();
    assert_eq!(r.content_events, 2);
    assert_eq!(r.last_token_ns, Some(at(30)));
    assert_eq!(r.itl_max_ms, Some(10.0));
}

// ---- A response without its request ------------------------------------------------------

#[test]
fn response_to_a_request_not_seen_is_still_parsed() {
    let mut x = Ex::new();
    x.f.request_abort(T0, 0, EndReason::CaptureStart);
    x.head(3, 200, Some("application/json"));
    x.body(4, CHAT_RES);
    x.end(5, 480);
    let (r, stats) = x.record();
    assert_eq!((r.method.as_str(), r.api), ("", Api::Other));
    assert_eq!(r.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(r.response_id.as_deref(), Some("chatcmpl-abc"));
    assert_eq!((r.input_tokens, r.output_tokens), (Some(12), Some(3)));
    assert_eq!(r.ttft_ms, None, "not streamed, API not known");
    assert_eq!(r.e2e_ms, Some(5.0));
    assert_eq!(
        r.partial_reason.as_deref(),
        Some("capture_started_mid_request")
    );
    assert_eq!(stats, TrackerStats::default());

    let mut x = Ex::new();
    x.f.request_abort(T0, 0, EndReason::CaptureStart);
    x.head(3, 200, Some("text/event-stream"));
    x.body(4, &sse(&[S1, S2, S3]));
    x.end(5, 480);
    let (r, _) = x.record();
    assert!(r.stream);
    assert_eq!(r.ttft_ms, Some(4.0), "streamed: its first content event");
    assert_eq!(r.output_tokens, Some(2));
    assert_eq!(r.output_token_source, Some(CountSource::StreamCount));
}

// ---- Wall clock --------------------------------------------------------------------------

fn start_with(start_ns: u64, offset_ns: i64) -> String {
    let mut f = InFlight::new(0);
    f.request_head(start_ns, &req_head("GET", "/"));
    let r = f.into_record(&conn(), offset_ns);
    assert_eq!(r.start_ns, start_ns, "kernel time is not shifted");
    r.start
}

#[test]
fn clock_offset_dates_the_start() {
    // 2025-01-01T00:00:00Z.
    let jan_2025: i64 = 1_735_689_600_000_000_000;
    assert_eq!(
        start_with(5_000_000_123, jan_2025),
        "2025-01-01T00:00:05.000000123Z"
    );
    assert_eq!(start_with(T0, 0), "1970-01-01T00:00:05Z");
    assert_eq!(start_with(T0, -10_000_000_000), "1969-12-31T23:59:55Z");
    assert_eq!(start_with(T0, -5_000_000_000), "1970-01-01T00:00:00Z");
    // The extremes neither wrap nor overflow.
    assert_eq!(start_with(0, i64::MIN), "1677-09-21T00:12:43.145224192Z");
    assert_eq!(
        start_with(u64::MAX, i64::MAX),
        "2846-10-30T23:21:50.564327422Z"
    );
    assert_eq!(
        start_with(u64::MAX, i64::MIN),
        "2262-04-11T23:47:16.854775807Z"
    );
}

// ---- TGI and Triton -------------------------------------------------------------------

#[test]
fn tgi_generate_counts_from_its_headers_beneath_its_body() {
    for (body, want) in [
        // No details asked: the headers' counts.
        (&br#"{"generated_text":"tok0 tok1 tok2 tok3 "}"#[..], (Some(4), Some(4))),
        // details.generated_tokens wins over the header; the prompt stays the header's.
        (
            br#"{"generated_text":"a b","details":{"finish_reason":"length","generated_tokens":2,"seed":null}}"#,
            (Some(4), Some(2)),
        ),
    ] {
        let mut x = Ex::new();
        x.request("POST", "/generate", &[br#"{"inputs":"What is deep learning","parameters":{"max_new_tokens":4}}"#], 90);
        let mut head = res_head(200, Some("application/json"));
        head.header_tokens = HeaderTokens {
            prompt: Some(4),
            generated: Some(4),
        };
        x.f.response_head(at(3), &head);
        x.body(4, body);
        x.end(5, 200);
        let (r, stats) = x.record();
        assert_eq!(r.api, Api::TgiGenerate);
        assert_eq!((r.input_tokens, r.output_tokens), want);
        assert_eq!(r.token_source, TokenSource::Usage);
        assert_eq!(r.max_tokens, Some(4));
        assert_eq!(stats, TrackerStats::default());
    }
}

#[test]
fn tgi_stream_counts_tokens_not_the_final_text() {
    let mut x = Ex::new();
    x.request(
        "POST",
        "/generate_stream",
        &[br#"{"inputs":"Tell me","parameters":{"max_new_tokens":3}}"#],
        90,
    );
    x.head(3, 200, Some("text/event-stream"));
    let ev = |i: u32, last: bool| {
        format!(
            "data:{{\"index\":{i},\"token\":{{\"id\":{i},\"text\":\"t{i} \",\"special\":false}},\"generated_text\":{},\"details\":{}}}\n\n",
            if last { "\"t1 t2 t3 \"" } else { "null" },
            if last { r#"{"finish_reason":"length","generated_tokens":3,"seed":null}"# } else { "null" }
        )
    };
    x.body(4, ev(1, false).as_bytes());
    x.body(6, ev(2, false).as_bytes());
    x.body(8, ev(3, true).as_bytes());
    x.end(9, 500);
    let (r, stats) = x.record();
    assert_eq!((r.content_events, r.stream_events), (3, 3));
    assert_eq!(r.output_tokens, Some(3));
    assert_eq!(r.output_token_source, Some(CountSource::Usage));
    assert_eq!(r.input_token_source, Some(CountSource::PromptBytes));
    assert_eq!(r.finish_reason.as_deref(), Some("length"));
    assert_eq!((r.ttft_ms, r.e2e_ms), (Some(4.0), Some(9.0)));
    assert_eq!(stats, TrackerStats::default());
}

#[test]
fn triton_names_its_model_in_the_path() {
    let mut x = Ex::new();
    x.request(
        "POST",
        "/v2/models/ensemble/versions/2/generate_stream",
        &[br#"{"text_input":"Hi","max_tokens":2,"stream":true}"#],
        90,
    );
    x.head(3, 200, Some("text/event-stream"));
    x.body(
        4,
        b"data: {\"model_name\":\"ensemble\",\"model_version\":\"2\",\"text_output\":\"a\"}\n\n",
    );
    x.body(
        5,
        b"data: {\"model_name\":\"ensemble\",\"model_version\":\"2\",\"text_output\":\"b\"}\n\n",
    );
    x.end(6, 300);
    let (r, _) = x.record();
    assert_eq!(r.api, Api::TritonGenerate);
    assert_eq!(
        (r.request_model.as_deref(), r.model.as_deref()),
        (Some("ensemble"), Some("ensemble"))
    );
    assert_eq!(
        (r.stream, r.max_tokens, r.output_tokens),
        (true, Some(2), Some(2))
    );
    assert_eq!(r.output_token_source, Some(CountSource::StreamCount));
}
