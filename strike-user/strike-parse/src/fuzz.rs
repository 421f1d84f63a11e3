//! Bodies of the fuzz targets (`strike-parse/fuzz/`, built with cargo-afl), one per parser,
//! kept here so a normal test (`tests/fuzz_smoke.rs`) runs them too. Above the parsers, so
//! they depend on none of it.
//!
//! Every target runs its parser at the bounds the live session gives it: 64 KiB heads
//! ([`DEFAULT_MAX_HEAD_BYTES`]), 1 MiB SSE and NDJSON lines and 4 MiB SSE events, 1 MiB
//! JSON bodies and the tracker's other defaults ([`TrackerConfig::default`]), and the
//! content decoders' [`DecodeLimits::default`]. So that a short input reaches them, a byte
//! stream target's input is [`HEADER`] bytes and a payload ([`Input`]): one run of the
//! payload can be repeated many times over, and the stream is fed in pieces of a chosen
//! size. [`encode`] writes such an input.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

use crate::conn::{ConnInfo, ConnKey, Direction, Role, StreamEvent};
use crate::llm::{RequestTracker, TrackerConfig};
use crate::protocol::{
    encoding::{Coding, ContentDecoder, DecodeLimits},
    http::{RequestDecoder, ResponseDecoder, DEFAULT_MAX_HEAD_BYTES},
    json::{BoundedJson, Frame, JsonError, TextPaths},
    ndjson::{self, NdjsonDecoder},
    sse::{self, SseDecoder},
};

/// Bytes before a byte stream target's payload: `ctl`, `rep`, `len`, `at` (u16, LE).
pub const HEADER: usize = 5;
/// The most bytes a repeated run makes a stream (past the largest bound, the 4 MiB SSE event).
pub const MAX_STREAM: usize = (4 << 20) + (64 << 10);
/// The most pieces a stream is fed in (larger pieces for a longer stream), so that one run
/// stays short enough to fuzz.
const MAX_PIECES: usize = 16_384;
/// `rep` values from this one repeat a run (`1 << (rep - REPEAT_BASE + 6)` times).
const REPEAT_BASE: u8 = 0xf0;
/// Piece sizes the stream is fed in, picked by `ctl & 0x0f`.
const STEPS: [usize; 16] = [
    1,
    2,
    3,
    5,
    7,
    11,
    16,
    31,
    64,
    127,
    256,
    1000,
    4096,
    16_384,
    65_536,
    1 << 20,
];

/// A byte stream target's input, decoded from [`HEADER`] and the payload:
/// - `ctl & 0x0f` picks the piece size ([`STEPS`]; larger for a long stream, see
///   [`Input::pieces`]), `ctl >> 4` is the target's own choice
///   ([`Input::flags`]);
/// - for `rep` of 0xf0 and over, the `len` payload bytes at `at` (modulo the payload's
///   length) are there `1 << (rep - 0xea)` times in all (64 up to 2 Mi), up to
///   [`MAX_STREAM`] bytes.
pub struct Input<'a> {
    pub flags: u8,
    pub step: usize,
    pub stream: Cow<'a, [u8]>,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let h = |i: usize| data.get(i).copied().unwrap_or(0);
        let (ctl, rep, len) = (h(0), h(1), usize::from(h(2)));
        let at = usize::from(u16::from_le_bytes([h(3), h(4)]));
        let payload = data.get(HEADER..).unwrap_or_default();
        // Only the top 16 values repeat, so that most mutations of the header leave the
        // stream short (and a run fast): 2^6 up to 2^21 times.
        let times = if rep >= REPEAT_BASE { repeats(rep) } else { 1 };
        let stream = if times == 1 || len == 0 || payload.is_empty() {
            Cow::Borrowed(payload)
        } else {
            let at = at % payload.len();
            let end = at.saturating_add(len).min(payload.len());
            let run = &payload[at..end];
            let room = MAX_STREAM.saturating_sub(payload.len()) / run.len();
            let mut v = Vec::with_capacity(payload.len() + run.len() * room.min(times));
            v.extend_from_slice(&payload[..end]);
            for _ in 1..times.min(room + 1) {
                v.extend_from_slice(run);
            }
            v.extend_from_slice(&payload[end..]);
            Cow::Owned(v)
        };
        Input {
            flags: ctl >> 4,
            step: STEPS[usize::from(ctl & 0x0f)],
            stream,
        }
    }

    /// The stream in pieces of [`Input::step`] bytes, or larger when that would make more
    /// than [`MAX_PIECES`].
    pub fn pieces(&self) -> std::slice::Chunks<'_, u8> {
        self.stream
            .chunks(self.step.max(self.stream.len().div_ceil(MAX_PIECES)))
    }
}

/// An input for a byte stream target: `payload` fed in pieces of `STEPS[ctl & 0x0f]`
/// bytes, its `len` bytes at `at` there `1 << times_log2` times in all (0: as it is;
/// else 6 to 21).
pub fn encode(ctl: u8, times_log2: u8, at: u16, len: u8, payload: &[u8]) -> Vec<u8> {
    let rep = if times_log2 == 0 {
        0
    } else {
        repeat_byte(times_log2)
    };
    let [lo, hi] = at.to_le_bytes();
    let mut v = vec![ctl, rep, len, lo, hi];
    v.extend_from_slice(payload);
    v
}

/// The `rep` byte (of [`encode`], or of a [`op::REPEAT`] op) for `1 << times_log2`
/// (6 to 21) repeats.
pub fn repeat_byte(times_log2: u8) -> u8 {
    REPEAT_BASE + (times_log2.clamp(6, 21) - 6)
}

/// How many times a `rep` byte says: from 0xf0, `2^6` up to `2^21`; else up to 4.
fn repeats(rep: u8) -> usize {
    if rep >= REPEAT_BASE {
        1 << (rep - REPEAT_BASE + 6)
    } else {
        usize::from(rep % 4) + 1
    }
}

/// Runs `step` until it says there is no more, failing if it has not said so after
/// `bound` calls: a decoder that keeps returning without consuming would spin the live loop.
fn drain(bound: usize, mut step: impl FnMut() -> bool) {
    for _ in 0..bound {
        if !step() {
            return;
        }
    }
    panic!("decoder returned {bound} results without needing more input");
}

/// Frames a decoder may give for `len` buffered bytes (a head, a body piece or an end each
/// takes at least one byte, but for an end).
fn frame_bound(len: usize) -> usize {
    len.saturating_mul(2).saturating_add(16)
}

/// Request decoder at the live head bound over arbitrary bytes, fed in pieces; its buffer
/// never holds more than a head.
pub fn fuzz_entry_request(data: &[u8]) {
    let input = Input::new(data);
    let mut dec = RequestDecoder::new(DEFAULT_MAX_HEAD_BYTES);
    let mut buf = BytesMut::new();
    for piece in input.pieces() {
        buf.extend_from_slice(piece);
        drain(frame_bound(buf.len()), || match dec.decode(&mut buf) {
            Ok(Some(_)) => true,
            Ok(None) => false,
            Err(_) => {
                dec.reset();
                buf.clear();
                false
            }
        });
        assert!(
            buf.len() <= DEFAULT_MAX_HEAD_BYTES,
            "request decoder holds {} bytes",
            buf.len()
        );
    }
}

/// Response decoder at the live head bound over arbitrary bytes, fed in pieces (flag bit 0:
/// it answers a HEAD request); its buffer never holds more than a head.
pub fn fuzz_entry_response(data: &[u8]) {
    let input = Input::new(data);
    let mut dec = ResponseDecoder::new(DEFAULT_MAX_HEAD_BYTES);
    dec.set_head_request(input.flags & 1 != 0);
    let mut buf = BytesMut::new();
    for piece in input.pieces() {
        buf.extend_from_slice(piece);
        drain(frame_bound(buf.len()), || match dec.decode(&mut buf) {
            Ok(Some(_)) => true,
            Ok(None) => false,
            Err(_) => {
                dec.reset();
                buf.clear();
                false
            }
        });
        assert!(
            buf.len() <= DEFAULT_MAX_HEAD_BYTES,
            "response decoder holds {} bytes",
            buf.len()
        );
    }
    let _ = dec.finish();
}

/// Content decoders at the live limits over arbitrary bytes: flags pick the coding.
/// Whatever the input, the output stays within the decoder's allowance.
pub fn fuzz_entry_content_decoding(data: &[u8]) {
    let input = Input::new(data);
    let coding =
        [Coding::Gzip, Coding::Deflate, Coding::Br, Coding::Zstd][usize::from(input.flags % 4)];
    let limits = DecodeLimits::default();
    let mut dec = ContentDecoder::new(coding, limits);
    let mut out = Vec::new();
    for piece in input.pieces() {
        if dec.decode(piece, &mut out).is_err() {
            break;
        }
        out.clear();
    }
    let _ = dec.finish(&mut out);
    let allowance = dec
        .bytes_in()
        .saturating_mul(limits.max_ratio)
        .max(64 << 10)
        .min(limits.max_output);
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

/// The bounded JSON reader at the live body budget (`max_body_bytes`) over arbitrary bytes
/// fed in pieces. Its copy stays within its hard bound; a document `serde_json` reads is
/// read (or is over the bound), its copy is JSON, and under the budget it is the document.
pub fn fuzz_entry_bounded_json(data: &[u8]) {
    let input = Input::new(data);
    let budget = TrackerConfig::default().max_body_bytes;
    let mut json = BoundedJson::new(NoText, budget);
    for piece in input.pieces() {
        json.feed(piece);
    }
    let doc: &[u8] = &input.stream;
    let whole = serde_json::from_slice::<serde_json::Value>(doc).ok();
    match json.finish() {
        Ok((copy, _)) => {
            assert!(copy.len() <= budget + (budget / 4).max(64 << 10) + doc.len().min(1 << 16));
            if let Some(whole) = whole {
                let read: serde_json::Value =
                    serde_json::from_slice(copy).expect("the copy of a JSON document is JSON");
                if doc.len() <= budget {
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

/// SSE decoder at the live line and event bounds over arbitrary bytes; its buffer never
/// holds more than a line.
pub fn fuzz_entry_sse(data: &[u8]) {
    let input = Input::new(data);
    let mut dec = SseDecoder::new(sse::DEFAULT_MAX_LINE, sse::DEFAULT_MAX_EVENT);
    let mut buf = BytesMut::new();
    for piece in input.pieces() {
        buf.extend_from_slice(piece);
        drain(frame_bound(buf.len()), || match dec.decode(&mut buf) {
            Ok(Some(_)) | Err(_) => true,
            Ok(None) => false,
        });
        assert!(
            buf.len() <= sse::DEFAULT_MAX_LINE,
            "SSE buffer holds {}",
            buf.len()
        );
    }
    let _ = dec.finish();
}

/// NDJSON framer at the live line bound over arbitrary bytes; its buffer never holds more
/// than a line.
pub fn fuzz_entry_ndjson(data: &[u8]) {
    let input = Input::new(data);
    let mut dec = NdjsonDecoder::new(ndjson::DEFAULT_MAX_LINE);
    let mut buf = BytesMut::new();
    for piece in input.pieces() {
        buf.extend_from_slice(piece);
        drain(frame_bound(buf.len()), || match dec.decode(&mut buf) {
            Ok(Some(_)) | Err(_) => true,
            Ok(None) => false,
        });
        assert!(
            buf.len() <= ndjson::DEFAULT_MAX_LINE,
            "NDJSON buffer holds {}",
            buf.len()
        );
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

/// Time between events, picked by `op >> 4`: from none to past the idle timeout.
const DELTAS_NS: [u64; 16] = [
    0,
    0,
    1_000,
    10_000,
    100_000,
    1_000_000,
    1_000_000,
    10_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    10_000_000_000,
    100_000_000_000,
    601_000_000_000,
];

/// Op kinds of the tracker target (`(op >> 2) % 8`).
pub mod op {
    pub const OPEN: u8 = 0;
    /// Followed by a length byte and that many bytes.
    pub const DATA: u8 = 1;
    /// Followed by a length byte, a repeat byte `r` and the bytes, sent up to 4 times, or
    /// for `r` from 0xf0 (see [`super::repeat_byte`]) `2^6` up to `2^21` times.
    pub const REPEAT: u8 = 4;
    pub const GAP: u8 = 5;
    pub const EOF: u8 = 6;
    /// Close; with `0x80` set, `evict_idle` instead.
    pub const CLOSE: u8 = 7;
}

/// The tracker at its live defaults fed an event sequence decoded from bytes: each op byte
/// picks an event for one of two connections (bit 0), its direction (bit 1; for an open,
/// whether the connection is preexisting), its kind (bits 2..5, [`op`]; for an open, bits
/// 5..8 pick the role) and the time since the last one (bits 4..8, up to past the idle
/// timeout). Data carries up to [`MAX_STREAM`] bytes in all.
pub fn fuzz_entry_tracker(data: &[u8]) {
    tracker_records(data);
}

/// [`fuzz_entry_tracker`]'s run: the records it gave, each one serialisable, every
/// connection closed at the end and every record (and every partial one) counted.
pub fn tracker_records(data: &[u8]) -> Vec<crate::record::RequestRecord> {
    tracker_run(data, MAX_STREAM).0
}

/// [`tracker_records`] with at most `max_bytes` of data in all, and the tracker's stats.
pub fn tracker_run(
    data: &[u8],
    max_bytes: usize,
) -> (Vec<crate::record::RequestRecord>, crate::llm::TrackerStats) {
    let mut tracker = RequestTracker::new(TrackerConfig::default());
    let mut out = Vec::new();
    let mut ts = 0u64;
    let mut i = 0usize;
    let mut sent = 0usize;
    while let Some(&op) = data.get(i) {
        i += 1;
        ts = ts.saturating_add(DELTAS_NS[usize::from(op >> 4)]);
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
            op::OPEN => StreamEvent::Open(ConnInfo {
                key,
                comm: "fuzz".to_owned(),
                role: match op >> 5 {
                    0..=2 => Role::Server,
                    3..=5 => Role::Client,
                    _ => Role::Unknown,
                },
                peer: None,
                opened_ns: ts,
                preexisting: op & 2 != 0,
            }),
            op::GAP => StreamEvent::Gap {
                key,
                dir,
                ts_ns: ts,
                missing: 1,
            },
            op::EOF => StreamEvent::Eof { key, ts_ns: ts },
            op::CLOSE => {
                if op & 0x80 != 0 {
                    tracker.evict_idle(ts, &mut out);
                    continue;
                }
                StreamEvent::Close { key, ts_ns: ts }
            }
            kind => {
                let len = usize::from(data.get(i).copied().unwrap_or(0));
                i += 1;
                let times = if kind == op::REPEAT {
                    let r = data.get(i).copied().unwrap_or(0);
                    i += 1;
                    repeats(r)
                } else {
                    1
                };
                let end = i.saturating_add(len).min(data.len());
                let run = data.get(i..end).unwrap_or_default();
                i = end;
                let times = times.min(max_bytes.saturating_sub(sent) / run.len().max(1));
                sent += run.len() * times;
                let bytes = if times == 1 {
                    Bytes::copy_from_slice(run)
                } else {
                    Bytes::from(run.repeat(times))
                };
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
    assert_eq!(
        stats.partial_records,
        out.iter().filter(|r| r.partial).count() as u64
    );
    for r in &out {
        assert!(serde_json::to_string(r).is_ok());
    }
    (out, stats)
}

/// Tracker target ops for a sequence of stream events on up to two connections (the first
/// key seen is connection 0, any other 1): data in pieces of at most 255 bytes, with no
/// time between events. What the seed corpus and the smoke test feed it.
pub fn tracker_ops(events: &[StreamEvent]) -> Vec<u8> {
    let mut ops = Vec::new();
    let mut first = None;
    for ev in events {
        let key = ev.key();
        let conn = u8::from(*first.get_or_insert(key) != key);
        let dir_bit = |dir: &Direction| match dir {
            Direction::Ingress => 0,
            Direction::Egress => 2,
        };
        match ev {
            StreamEvent::Open(info) => {
                let role = match info.role {
                    Role::Server => 0,
                    Role::Client => 0x60,
                    Role::Unknown => 0xc0,
                };
                ops.push(conn | role | if info.preexisting { 2 } else { 0 });
            }
            StreamEvent::Data { dir, bytes, .. } => {
                for piece in bytes.chunks(255) {
                    ops.push(conn | dir_bit(dir) | op::DATA << 2);
                    ops.push(u8::try_from(piece.len()).unwrap_or(u8::MAX));
                    ops.extend_from_slice(piece);
                }
            }
            StreamEvent::Gap { dir, .. } => ops.push(conn | dir_bit(dir) | op::GAP << 2),
            StreamEvent::Eof { .. } => ops.push(conn | op::EOF << 2),
            // An eviction ends the connection as a close does, for the tracker.
            StreamEvent::Close { .. } | StreamEvent::Evicted { .. } => {
                ops.push(conn | op::CLOSE << 2);
            }
        }
    }
    ops
}
