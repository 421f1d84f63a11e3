//! Bodies of the fuzz targets (`fuzz/`), one per parser, kept here so a normal test
//! (`tests/fuzz_smoke.rs`) runs them too. Above the parsers, so they depend on none of it.

use bytes::{Bytes, BytesMut};

use crate::conn::{ConnInfo, ConnKey, Direction, Role, StreamEvent};
use crate::llm::{RequestTracker, TrackerConfig};
use crate::protocol::{
    encoding::{Coding, ContentDecoder, DecodeLimits},
    http::{RequestDecoder, ResponseDecoder},
    json::{BoundedJson, Frame, JsonError, TextPaths},
    ndjson::NdjsonDecoder,
    sse::SseDecoder,
};

/// Splits `data` into pieces: the first byte of the input picks piece sizes.
fn pieces(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let (seed, rest) = data.split_first().map_or((7u8, data), |(s, r)| (*s, r));
    let step = usize::from(seed % 17) + 1;
    rest.chunks(step)
}

/// Request decoder over arbitrary bytes, fed in pieces.
pub fn fuzz_entry_request(data: &[u8]) {
    let mut dec = RequestDecoder::new(1024);
    let mut buf = BytesMut::new();
    for piece in pieces(data) {
        buf.extend_from_slice(piece);
        for _ in 0..10_000 {
            match dec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    dec.reset();
                    buf.clear();
                    break;
                }
            }
        }
    }
}

/// Response decoder over arbitrary bytes, fed in pieces.
pub fn fuzz_entry_response(data: &[u8]) {
    let mut dec = ResponseDecoder::new(1024);
    dec.set_head_request(data.first().is_some_and(|b| b & 0x80 != 0));
    let mut buf = BytesMut::new();
    for piece in pieces(data) {
        buf.extend_from_slice(piece);
        for _ in 0..10_000 {
            match dec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    dec.reset();
                    buf.clear();
                    break;
                }
            }
        }
    }
    let _ = dec.finish();
}

/// Content decoders over arbitrary bytes: the first byte picks the coding, the second the
/// piece sizes. Whatever the input, the output stays within the decoder's allowance.
pub fn fuzz_entry_content_decoding(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let coding = [Coding::Gzip, Coding::Deflate, Coding::Br, Coding::Zstd][usize::from(pick % 4)];
    let limits = DecodeLimits {
        max_output: 1 << 20,
        max_ratio: 64,
    };
    let mut dec = ContentDecoder::new(coding, limits);
    let mut out = Vec::new();
    for piece in pieces(rest) {
        if dec.decode(piece, &mut out).is_err() {
            break;
        }
        out.clear();
    }
    let _ = dec.finish(&mut out);
    let allowance = (dec.bytes_in() * 64).clamp(64 << 10, 1 << 20);
    assert!(
        dec.bytes_out() <= allowance,
        "{coding:?}: {} decoded bytes past the allowance {allowance}",
        dec.bytes_out()
    );
}

/// Measures nothing: the bounded reader's own invariants are what is checked.
struct NoText;
impl TextPaths for NoText {
    fn is_text(&self, path: &[Frame]) -> bool {
        path.len() % 2 == 1
    }
}

/// The bounded JSON reader over arbitrary bytes: the first byte picks the budget and the
/// piece sizes. Its copy stays within its hard bound; a document `serde_json` reads is read
/// (or is over the bound), its copy is JSON, and under the budget it is the document.
pub fn fuzz_entry_bounded_json(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let budget = 16usize << (pick % 8);
    let mut json = BoundedJson::new(NoText, budget);
    for piece in pieces(data) {
        json.feed(piece);
    }
    let whole = serde_json::from_slice::<serde_json::Value>(rest).ok();
    match json.finish() {
        Ok((copy, _)) => {
            assert!(copy.len() <= budget + (budget / 4).max(64 << 10) + rest.len().min(1 << 16));
            if let Some(whole) = whole {
                let read: serde_json::Value =
                    serde_json::from_slice(copy).expect("the copy of a JSON document is JSON");
                if rest.len() <= budget {
                    assert_eq!(read, whole, "under the budget the copy is the document");
                }
            }
        }
        Err(e) => assert!(
            whole.is_none() || e == JsonError::OverLimit,
            "a JSON document read as {e}"
        ),
    }
}

/// SSE decoder over arbitrary bytes.
pub fn fuzz_entry_sse(data: &[u8]) {
    let mut dec = SseDecoder::new(256, 1024);
    let mut buf = BytesMut::new();
    for piece in pieces(data) {
        buf.extend_from_slice(piece);
        for _ in 0..10_000 {
            match dec.decode(&mut buf) {
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => break,
            }
        }
        assert!(buf.len() <= 256 + 17, "SSE buffer unbounded: {}", buf.len());
    }
    let _ = dec.finish();
}

/// NDJSON framer over arbitrary bytes.
pub fn fuzz_entry_ndjson(data: &[u8]) {
    let mut dec = NdjsonDecoder::new(256);
    let mut buf = BytesMut::new();
    for piece in pieces(data) {
        buf.extend_from_slice(piece);
        for _ in 0..10_000 {
            match dec.decode(&mut buf) {
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => break,
            }
        }
    }
    let _ = dec.finish(&mut buf);
}

/// `OpenAI` request/response JSON parsing.
pub fn fuzz_entry_openai_event(data: &[u8]) {
    let _ = crate::llm::openai::parse_response(data);
    let _ = crate::llm::anthropic::parse_response(data);
    let _ = crate::llm::anthropic::parse_request(data);
    let _ = crate::llm::responses::parse_response(data);
    let _ = crate::llm::responses::parse_request(data);
    let _ = crate::llm::openai::parse_request(
        crate::record::Api::ChatCompletions,
        crate::llm::openai::Dialect::OpenAi,
        data,
    );
    if let Ok(text) = std::str::from_utf8(data) {
        let (method, path) = text.split_once(' ').unwrap_or((text, ""));
        let _ = crate::llm::openai::classify(method, path);
    }
}

/// The tracker fed an event sequence decoded from bytes: each op byte picks an event for
/// one of two connections; Data takes a length byte and that many bytes.
pub fn fuzz_entry_tracker(data: &[u8]) {
    tracker_records(data);
}

/// [`fuzz_entry_tracker`]'s run: the records it gave, each one serialisable, every
/// connection closed at the end and every record counted.
pub fn tracker_records(data: &[u8]) -> Vec<crate::record::RequestRecord> {
    let mut tracker = RequestTracker::new(TrackerConfig {
        max_body_bytes: 512,
        max_connections: 2,
        idle_timeout_ns: 1000,
        ..TrackerConfig::default()
    });
    let mut out = Vec::new();
    let mut ts = 0u64;
    let mut i = 0usize;
    while let Some(&op) = data.get(i) {
        i += 1;
        ts = ts.saturating_add(u64::from(op >> 4) * 10);
        let key = ConnKey {
            tgid: 1,
            conn_id: u64::from(op & 1),
        };
        let dir = if op & 2 == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let ev = match (op >> 2) % 8 {
            0 => StreamEvent::Open(ConnInfo {
                key,
                comm: "fuzz".to_owned(),
                role: match op >> 5 {
                    0..=2 => Role::Server,
                    3..=5 => Role::Client,
                    _ => Role::Unknown,
                },
                peer: None,
                opened_ns: ts,
                preexisting: op & 0x10 != 0,
            }),
            5 => StreamEvent::Gap {
                key,
                dir,
                ts_ns: ts,
                missing: 1,
            },
            6 => StreamEvent::Eof { key, ts_ns: ts },
            7 => {
                if op & 0x80 != 0 {
                    tracker.evict_idle(ts, &mut out);
                    continue;
                }
                StreamEvent::Close { key, ts_ns: ts }
            }
            _ => {
                let len = usize::from(data.get(i).copied().unwrap_or(0));
                i += 1;
                let end = i.saturating_add(len).min(data.len());
                let bytes = Bytes::copy_from_slice(data.get(i..end).unwrap_or_default());
                i = end;
                StreamEvent::Data {
                    key,
                    dir,
                    ts_ns: ts,
                    bytes,
                }
            }
        };
        tracker.handle(ev, &mut out);
    }
    tracker.finish(&mut out);
    let stats = tracker.stats();
    assert_eq!(stats.connections_open, 0);
    assert_eq!(stats.records, out.len() as u64);
    for r in &out {
        assert!(serde_json::to_string(r).is_ok());
    }
    out
}
