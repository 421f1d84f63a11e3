//! `seeds REPO OUT`: writes each fuzz target's seed corpus (`OUT/<target>/`) from the real
//! inputs in the repository, reduced to what each target takes: the golden tracker scenarios
//! (`strike-parse/tests/golden/tracker`) and the recorded captures
//! (`strike-user/tests/golden/replay`), as tracker ops, request and response streams, their
//! bodies (JSON, SSE, NDJSON, compressed), and SSE event payloads; plus inputs that cross
//! the live bounds (a head over 64 KiB, lines and bodies over 1 MiB, an SSE event over
//! 4 MiB, a decompression bomb). Run by `cargo xtask fuzz`.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bytes::BytesMut;
use strike_parse::conn::{ConnKey, Direction, StreamEvent};
use strike_parse::event::CaptureEvent;
use strike_parse::fuzz::{self, encode, op};
use strike_parse::protocol::http::{
    sniff_request_line, RequestDecoder, RequestFrame, ResponseDecoder, ResponseFrame, Sniff,
};
use strike_parse::protocol::sse::SseDecoder;
use strike_parse::stream::{Reassembler, StreamConfig};

/// Pieces of 31 bytes, no repeat: a stream as it is.
const PLAIN: u8 = 0x07;

#[derive(Default)]
struct Corpus {
    seeds: BTreeMap<&'static str, BTreeSet<Vec<u8>>>,
}

impl Corpus {
    fn add(&mut self, target: &'static str, input: Vec<u8>) {
        // AFL++ takes inputs up to 1 MiB.
        if !input.is_empty() && input.len() < 1 << 20 {
            self.seeds.entry(target).or_default().insert(input);
        }
    }

    fn stream(&mut self, target: &'static str, bytes: &[u8]) {
        self.add(target, encode(PLAIN, 0, 0, 0, bytes));
    }

    fn json(&mut self, doc: &[u8]) {
        self.add("openai_event", doc.to_vec());
        self.stream("bounded_json", doc);
    }

    /// A body, in each coding.
    fn compressed(&mut self, body: &[u8]) {
        for (flags, packed) in compressed(body) {
            self.add(
                "content_decoding",
                encode(flags << 4 | PLAIN, 0, 0, 0, &packed),
            );
        }
    }

    fn write(&self, out: &Path) -> std::io::Result<()> {
        for (target, seeds) in &self.seeds {
            let dir = out.join(target);
            std::fs::create_dir_all(&dir)?;
            for (i, seed) in seeds.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i:04}")), seed)?;
            }
            println!("{target}: {} seeds", seeds.len());
        }
        Ok(())
    }
}

/// `doc` in each coding, with the flags that pick it (`fuzz_entry_content_decoding`).
fn compressed(doc: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    if gz.write_all(doc).is_ok() {
        if let Ok(v) = gz.finish() {
            out.push((0, v));
        }
    }
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    if zlib.write_all(doc).is_ok() {
        if let Ok(v) = zlib.finish() {
            out.push((1, v));
        }
    }
    let mut br = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
        let _ = w.write_all(doc);
    }
    out.push((2, br));
    if let Ok(v) = zstd::encode_all(doc, 3) {
        out.push((3, v));
    }
    out
}

/// One connection's events and its two byte streams.
#[derive(Default)]
struct Conn {
    events: Vec<StreamEvent>,
    ingress: Vec<u8>,
    egress: Vec<u8>,
}

fn by_conn(events: Vec<StreamEvent>) -> BTreeMap<(u32, u64), Conn> {
    let mut conns: BTreeMap<(u32, u64), Conn> = BTreeMap::new();
    for ev in events {
        let ConnKey { tgid, conn_id } = ev.key();
        let conn = conns.entry((tgid, conn_id)).or_default();
        if let StreamEvent::Data { dir, bytes, .. } = &ev {
            match dir {
                Direction::Ingress => conn.ingress.extend_from_slice(bytes),
                Direction::Egress => conn.egress.extend_from_slice(bytes),
            }
        }
        conn.events.push(ev);
    }
    conns
}

/// A request or response stream's bodies, each with its content type and coding.
fn bodies(stream: &[u8]) -> Vec<(String, Option<String>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = BytesMut::from(stream);
    let request = sniff_request_line(stream) == Sniff::Yes;
    let mut req = RequestDecoder::default();
    let mut res = ResponseDecoder::default();
    let mut current: Option<(String, Option<String>, Vec<u8>)> = None;
    for _ in 0..100_000 {
        let frame = if request {
            match req.decode(&mut buf) {
                Ok(Some(RequestFrame::Head(h))) => {
                    Some((Some((h.content_type, h.content_encoding)), None))
                }
                Ok(Some(RequestFrame::Body(b))) => Some((None, Some(b))),
                Ok(Some(RequestFrame::End)) => Some((None, None)),
                Ok(None) | Err(_) => None,
            }
        } else {
            match res.decode(&mut buf) {
                Ok(Some(ResponseFrame::Head(h))) => {
                    Some((Some((h.content_type, h.content_encoding)), None))
                }
                Ok(Some(ResponseFrame::Body(b))) => Some((None, Some(b))),
                Ok(Some(ResponseFrame::End)) => Some((None, None)),
                Ok(None) | Err(_) => None,
            }
        };
        match frame {
            None => break,
            Some((Some((ty, coding)), _)) => {
                current = Some((ty.unwrap_or_default(), coding, Vec::new()));
            }
            Some((None, Some(b))) => {
                if let Some((_, _, body)) = &mut current {
                    body.extend_from_slice(&b);
                }
            }
            Some((None, None)) => out.extend(current.take()),
        }
    }
    // A body delimited by the end of the connection.
    out.extend(current.filter(|(_, _, b)| !b.is_empty()));
    out
}

fn add_conn(corpus: &mut Corpus, conn: &Conn) {
    corpus.add("tracker", fuzz::tracker_ops(&conn.events));
    for stream in [&conn.ingress, &conn.egress] {
        if stream.is_empty() {
            continue;
        }
        if sniff_request_line(stream) == Sniff::Yes {
            corpus.stream("request_decoder", stream);
        } else if stream.starts_with(b"HTTP/1.") {
            corpus.stream("response_decoder", stream);
            // As the answer to a HEAD request too.
            corpus.add("response_decoder", encode(0x10 | PLAIN, 0, 0, 0, stream));
        } else {
            continue;
        }
        for (ty, coding, body) in bodies(stream) {
            if let Some(coding) = coding {
                let flags = match coding.as_str() {
                    "gzip" | "x-gzip" => 0,
                    "deflate" => 1,
                    "br" => 2,
                    _ => 3,
                };
                corpus.add(
                    "content_decoding",
                    encode(flags << 4 | PLAIN, 0, 0, 0, &body),
                );
            } else if ty.contains("event-stream") {
                corpus.stream("sse", &body);
                corpus.stream("ndjson", &body);
                corpus.compressed(&body);
                let mut dec = SseDecoder::default();
                let mut buf = BytesMut::from(body.as_slice());
                while let Ok(Some(ev)) = dec.decode(&mut buf) {
                    corpus.json(ev.data.as_bytes());
                }
            } else if ty.contains("ndjson") {
                corpus.stream("ndjson", &body);
                corpus.compressed(&body);
                for line in body.split(|b| *b == b'\n') {
                    corpus.json(line);
                }
            } else if ty.contains("json") || body.first() == Some(&b'{') {
                corpus.json(&body);
                corpus.compressed(&body);
            }
        }
    }
}

/// The stream events of a recorded capture, reassembled as the live session does.
fn capture_events(bytes: &[u8]) -> Result<Vec<StreamEvent>, String> {
    let rest = bytes
        .strip_prefix(b"STRIKECAP1\n".as_slice())
        .ok_or("bad magic")?;
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(len) = rest.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().map_err(|_| "short frame")?) as usize;
        let frame = rest.get(at + 4..at + 4 + len).ok_or("truncated frame")?;
        frames.push(frame);
        at += 4 + len;
    }
    let (header, frames) = frames.split_first().ok_or("no header")?;
    let header: serde_json::Value = serde_json::from_slice(header).map_err(|e| e.to_string())?;
    let cap = header["max_capture_bytes"]
        .as_u64()
        .unwrap_or(u64::from(u32::MAX));
    let mut reassembler = Reassembler::new(
        StreamConfig::default(),
        u32::try_from(cap).unwrap_or(u32::MAX),
    );
    let mut out = Vec::new();
    for frame in frames {
        let event = CaptureEvent::decode(frame).map_err(|e| e.to_string())?;
        reassembler.handle(event, &mut out);
    }
    reassembler.finish(&mut out);
    Ok(out)
}

/// Inputs past the live bounds, each short: a run of the payload repeated.
fn over_the_bounds(corpus: &mut Corpus) {
    let rep = |payload: &[u8], run: &[u8], times_log2: u8, ctl: u8| {
        let at = payload
            .windows(run.len())
            .position(|w| w == run)
            .expect("the run is in the payload");
        encode(
            ctl,
            times_log2,
            u16::try_from(at).unwrap_or(0),
            u8::try_from(run.len()).unwrap_or(0),
            payload,
        )
    };
    // A 64 KiB+ request head (a header line 4096 times), and a response head.
    let req = b"POST /v1/chat/completions HTTP/1.1\r\nx-pad: aaaaaaaaaaaaaaaa\r\ncontent-length: 2\r\n\r\n{}";
    corpus.add(
        "request_decoder",
        rep(req, b"x-pad: aaaaaaaaaaaaaaaa\r\n", 12, 0x0c),
    );
    let res = b"HTTP/1.1 200 OK\r\nx-pad: aaaaaaaaaaaaaaaa\r\ncontent-length: 2\r\n\r\n{}";
    corpus.add(
        "response_decoder",
        rep(res, b"x-pad: aaaaaaaaaaaaaaaa\r\n", 12, 0x0c),
    );
    // A chunked body of 64 KiB chunk-extension lines.
    let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;aaaaaaaaaaaaaaaa\r\nhello\r\n0\r\n\r\n";
    corpus.add(
        "response_decoder",
        rep(chunked, b"aaaaaaaaaaaaaaaa", 13, 0x0c),
    );
    // A 1 MiB+ SSE line, and an event of many lines past 4 MiB.
    let sse =
        b"data: {\"choices\":[{\"delta\":{\"content\":\"xxxxxxxxxxxxxxxx\"}}]}\n\ndata: [DONE]\n\n";
    corpus.add("sse", rep(sse, b"xxxxxxxxxxxxxxxx", 17, 0x0d));
    corpus.add(
        "sse",
        rep(
            b"data: xxxxxxxxxxxxxxx\n\n",
            b"data: xxxxxxxxxxxxxxx\n",
            18,
            0x0e,
        ),
    );
    // A 1 MiB+ NDJSON line.
    let nd = b"{\"message\":{\"content\":\"xxxxxxxxxxxxxxxx\"},\"done\":false}\n{\"done\":true}\n";
    corpus.add("ndjson", rep(nd, b"xxxxxxxxxxxxxxxx", 17, 0x0d));
    // A 1 MiB+ JSON body: long strings, and many array items.
    let doc = br#"{"model":"m","messages":[{"role":"user","content":"xxxxxxxxxxxxxxxx"}]}"#;
    corpus.add("bounded_json", rep(doc, b"xxxxxxxxxxxxxxxx", 17, 0x0d));
    let items = br#"{"model":"m","input":["xxxxxxxxxxxxxx",""]}"#;
    corpus.add(
        "bounded_json",
        rep(items, br#""xxxxxxxxxxxxxx","#, 17, 0x0d),
    );
    // A zstd bomb: 8 MiB of zeros.
    if let Ok(bomb) = zstd::encode_all(vec![0u8; 8 << 20].as_slice(), 3) {
        corpus.add("content_decoding", encode(0x30 | 0x0d, 0, 0, 0, &bomb));
    }
    // The tracker: a request whose 2 MiB JSON body is one repeated run, and its response.
    let mut ops = vec![op::OPEN << 2];
    let (open, run, close) = (
        br#"{"model":"m","messages":[{"role":"user","content":""#.as_slice(),
        b"xxxxxxxxxxxxxxxx".as_slice(),
        br#""}]}"#.as_slice(),
    );
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        open.len() + (run.len() << 17) + close.len()
    );
    for (kind, bytes, times_log2) in [
        (op::DATA, head.as_bytes(), None),
        (op::DATA, open, None),
        (op::REPEAT, run, Some(fuzz::repeat_byte(17))),
        (op::DATA, close, None),
    ] {
        ops.push(kind << 2);
        ops.push(u8::try_from(bytes.len()).unwrap_or(0));
        ops.extend(times_log2);
        ops.extend_from_slice(bytes);
    }
    let res = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
    ops.push(op::DATA << 2 | 2);
    ops.push(u8::try_from(res.len()).unwrap_or(0));
    ops.extend_from_slice(res);
    corpus.add("tracker", ops);
}

fn run(repo: &Path, out: &Path) -> Result<(), String> {
    let mut corpus = Corpus::default();
    let scenarios = repo.join("strike-user/strike-parse/tests/golden/tracker");
    let captures = repo.join("strike-user/tests/golden/replay");
    let dirs = |root: &Path| -> Result<Vec<PathBuf>, String> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(|e| format!("{}: {e}", root.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        Ok(v)
    };
    for dir in dirs(&scenarios)? {
        let path = dir.join("scenario.txt");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let scenario = common::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let events: Vec<StreamEvent> = scenario
            .steps
            .into_iter()
            .filter_map(|s| match s {
                common::Step::Event(e) => Some(e),
                common::Step::Evict(_) => None,
            })
            .collect();
        corpus.add("tracker", fuzz::tracker_ops(&events));
        for conn in by_conn(events).values() {
            add_conn(&mut corpus, conn);
        }
    }
    for dir in dirs(&captures)? {
        let path = dir.join("capture.strikecap");
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let events = capture_events(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        for conn in by_conn(events).values() {
            add_conn(&mut corpus, conn);
        }
    }
    over_the_bounds(&mut corpus);
    // Request lines for `classify`, as the openai_event target reads them.
    for line in [
        "POST /v1/chat/completions",
        "POST /v1/messages",
        "POST /v1/responses",
        "POST /api/chat",
        "GET /v1/models",
    ] {
        corpus.add("openai_event", line.as_bytes().to_vec());
    }
    corpus
        .write(out)
        .map_err(|e| format!("{}: {e}", out.display()))
}

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [repo, out] = args.as_slice() else {
        eprintln!("usage: seeds REPO OUT");
        return ExitCode::from(2);
    };
    match run(repo, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seeds: {e}");
            ExitCode::FAILURE
        }
    }
}
