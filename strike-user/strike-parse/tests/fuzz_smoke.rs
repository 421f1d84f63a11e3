//! Runs every fuzz target body (`strike_parse::fuzz`) over deterministic pseudo-random
//! inputs and mutations of the golden scenarios, over inputs that cross the live bounds
//! (asserting what each bound does), and over every input `cargo xtask fuzz` found
//! (`tests/fuzz_regressions/<target>/`), so each test run covers what the fuzzer covers.

#![expect(
    clippy::cast_possible_truncation,
    reason = "test input generators truncate random words to bytes on purpose"
)]

mod common;

use std::path::Path;

use strike_parse::conn::StreamEvent;
use strike_parse::fuzz::{self, encode, op};

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap()
    }
}

/// Byte streams from the golden scenarios (each direction of each scenario).
fn corpus() -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tracker");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path().join("scenario.txt");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let scenario = common::parse(&text).unwrap();
        let mut ingress = Vec::new();
        let mut egress = Vec::new();
        for step in scenario.steps {
            if let common::Step::Event(StreamEvent::Data { dir, bytes, .. }) = step {
                match dir {
                    strike_parse::conn::Direction::Ingress => ingress.extend_from_slice(&bytes),
                    strike_parse::conn::Direction::Egress => egress.extend_from_slice(&bytes),
                }
            }
        }
        out.push(ingress);
        out.push(egress);
    }
    out
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(8) {
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = rng.below(v.len() - i).min(64);
                v.drain(i..i + n);
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let tokens: [&[u8]; 8] = [
                    b"\r\n",
                    b"\n\n",
                    b"data:",
                    b"0\r\n\r\n",
                    b"HTTP/1.1 ",
                    b"POST / HTTP/1.1\r\n",
                    b"{\"error\":{}}",
                    b"ffffffff\r\n",
                ];
                let t = tokens[rng.below(tokens.len())];
                v.splice(i..i, t.iter().copied());
            }
            3 if !v.is_empty() => {
                let cut = rng.below(v.len());
                v.truncate(cut);
            }
            _ => {
                let i = rng.below(v.len() + 1);
                let b = rng.next().to_le_bytes();
                v.splice(i..i, b);
            }
        }
    }
    v
}

/// A byte stream target's input: `payload` fed in pieces picked by `ctl`, not repeated.
fn plain(ctl: u8, payload: &[u8]) -> Vec<u8> {
    encode(ctl, 0, 0, 0, payload)
}

fn inputs(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    let corpus = corpus();
    let mut out = Vec::new();
    for c in &corpus {
        // Pieces of 1, 3, 16 and 256 bytes.
        for ctl in [0x00, 0x02, 0x06, 0x0a] {
            out.push(plain(ctl, c));
        }
    }
    for _ in 0..1500 {
        let base = &corpus[rng.below(corpus.len())];
        out.push(plain(rng.next() as u8, &mutate(&mut rng, base)));
    }
    for _ in 0..1500 {
        let len = rng.below(512);
        let mut v: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // No repeats: random repeats would make these megabytes each.
        if let Some(rep) = v.get_mut(1) {
            *rep = 0;
        }
        out.push(v);
    }
    out
}

#[test]
fn decoders_survive() {
    for input in inputs(0x5eed_0001) {
        fuzz::fuzz_entry_request(&input);
        fuzz::fuzz_entry_response(&input);
        fuzz::fuzz_entry_sse(&input);
        fuzz::fuzz_entry_ndjson(&input);
        fuzz::fuzz_entry_openai_event(&input);
        fuzz::fuzz_entry_content_decoding(&input);
        fuzz::fuzz_entry_bounded_json(&input);
        // SSE event payloads too.
        if let Some(pos) = input.windows(6).position(|w| w == b"data: ") {
            fuzz::fuzz_entry_openai_event(&input[pos + 6..]);
            fuzz::fuzz_entry_bounded_json(&plain(input[0], &input[pos + 6..]));
        }
        // And HTTP bodies.
        if let Some(pos) = input.windows(4).position(|w| w == b"\r\n\r\n") {
            fuzz::fuzz_entry_bounded_json(&plain(input[0], &input[pos + 4..]));
        }
    }
}

#[test]
fn tracker_survives() {
    let mut rng = Rng(0x5eed_0002);
    let corpus = corpus();
    for input in inputs(0x5eed_0003) {
        // Random repeat ops could make each of these megabytes: 64 KiB at most here.
        fuzz::tracker_run(&input, 64 << 10);
    }
    // Well-formed op streams carrying golden bytes: open, data in/out with length bytes.
    for _ in 0..2000 {
        let base = &corpus[rng.below(corpus.len())];
        let mut ops = vec![op::OPEN << 2]; // open conn 0 as server
        let mut pos = 0;
        while pos < base.len() {
            let len = (rng.below(255) + 1).min(base.len() - pos);
            let dir = if rng.below(2) == 0 { 0u8 } else { 2u8 };
            let kind = match rng.below(20) {
                0 => op::GAP,
                1 => op::EOF,
                _ => op::DATA,
            };
            ops.push(kind << 2 | dir | (((rng.below(4) as u8) << 5) & 0x60));
            if kind == op::DATA {
                ops.push(len as u8);
                ops.extend_from_slice(&base[pos..pos + len]);
                pos += len;
            }
        }
        fuzz::fuzz_entry_tracker(&ops);
    }
    // Each golden scenario's requests then its responses, in random pieces without loss,
    // give a record for every request line and a status for each request its response
    // answered.
    for pair in corpus.chunks(2) {
        let [ingress, egress] = pair else { continue };
        let requests = count_lines(ingress, |l| {
            strike_parse::protocol::http::sniff_request_line(l)
                == strike_parse::protocol::http::Sniff::Yes
        });
        if requests == 0 || !egress.starts_with(b"HTTP/1.") {
            continue;
        }
        let records = fuzz::tracker_records(&in_then_out(&mut rng, ingress, egress));
        assert!(
            records.len() >= requests && records.iter().any(|r| r.status.is_some()),
            "{requests} request lines gave {} records",
            records.len()
        );
    }
}

/// Tracker ops: connection 0 opened as a server, `ingress` then `egress` in random pieces.
fn in_then_out(rng: &mut Rng, ingress: &[u8], egress: &[u8]) -> Vec<u8> {
    let mut ops = vec![op::OPEN << 2];
    for (dir, bytes) in [(0u8, ingress), (2u8, egress)] {
        for piece in bytes.chunks(rng.below(200) + 1) {
            ops.push(op::DATA << 2 | dir);
            ops.push(u8::try_from(piece.len()).unwrap());
            ops.extend_from_slice(piece);
        }
    }
    ops
}

#[test]
fn golden_keepalive_through_the_tracker_target() {
    // The op encoding carries a scenario as the tracker target reads it: the keep-alive
    // scenario's three requests come out with their paths and statuses, in any pieces.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/tracker/keepalive_three_requests/scenario.txt"),
    )
    .unwrap();
    let events: Vec<StreamEvent> = common::parse(&text)
        .unwrap()
        .steps
        .into_iter()
        .filter_map(|s| match s {
            common::Step::Event(e) => Some(e),
            common::Step::Evict(_) => None,
        })
        .collect();
    let records = fuzz::tracker_records(&fuzz::tracker_ops(&events));
    let seen: Vec<(&str, Option<u16>, bool)> = records
        .iter()
        .map(|r| (r.path.as_str(), r.status, r.partial))
        .collect();
    assert_eq!(
        seen,
        [
            ("/health", Some(200), false),
            ("/v1/chat/completions", Some(200), false),
            ("/metrics", Some(200), false)
        ]
    );
}

/// Lines of `bytes` that `is` says yes to.
fn count_lines(bytes: &[u8], is: impl Fn(&[u8]) -> bool) -> usize {
    let mut n = usize::from(is(bytes));
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'\n' && is(&bytes[i + 1..]) {
            n += 1;
        }
    }
    n
}

#[test]
fn content_decoders_survive_damaged_streams() {
    use std::io::Write as _;
    let mut rng = Rng(0x5eed_0004);
    let corpus = corpus();
    for i in 0..400 {
        let base = &corpus[rng.below(corpus.len())];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(base).unwrap();
        let compressed = [
            gz.finish().unwrap(),
            zstd::encode_all(base.as_slice(), 1).unwrap(),
        ];
        for (pick, body) in [(0u8, &compressed[0]), (3u8, &compressed[1])] {
            // The intact stream, then damaged copies: the coding and a piece size.
            let ctl = pick << 4 | (rng.next() as u8 & 0x0f);
            fuzz::fuzz_entry_content_decoding(&plain(ctl, body));
            let ctl = pick << 4 | (rng.next() as u8 & 0x0f);
            fuzz::fuzz_entry_content_decoding(&plain(ctl, &mutate(&mut rng, body)));
        }
        // A bomb now and then: many zeros, compressed.
        if i % 100 == 0 {
            let zeros = vec![0u8; 8 << 20];
            let v = plain(0x3d, &zstd::encode_all(zeros.as_slice(), 3).unwrap());
            fuzz::fuzz_entry_content_decoding(&v);
        }
    }
}

/// Tracker ops: connection 0 opened as a server, then `(direction bit, bytes, repeat)`
/// each as one data op (`repeat`: the bytes sent `1 << repeat` times in one event).
fn ops(parts: &[(u8, &[u8], Option<u8>)]) -> Vec<u8> {
    let mut ops = vec![op::OPEN << 2];
    for &(dir, bytes, repeat) in parts {
        ops.push(
            if repeat.is_some() {
                op::REPEAT
            } else {
                op::DATA
            } << 2
                | dir,
        );
        ops.push(u8::try_from(bytes.len()).unwrap());
        ops.extend(repeat);
        ops.extend_from_slice(bytes);
    }
    ops
}

const OK_JSON: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

#[test]
fn a_head_over_64_kib_is_counted() {
    // 70 KiB of one header line, in events of 255 and of 16 bytes: the same outcome (a head
    // over the bound in one piece: `http.rs`'s `oversized_head_in_one_piece_is_an_error_too`).
    let line = b"x-pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut head = b"POST /v1/chat/completions HTTP/1.1\r\n".to_vec();
    while head.len() < 70 << 10 {
        head.extend_from_slice(line);
    }
    head.extend_from_slice(b"content-length: 2\r\n\r\n{}");
    for piece in [255, 16] {
        let mut parts: Vec<(u8, &[u8], Option<u8>)> =
            head.chunks(piece).map(|c| (0, c, None)).collect();
        parts.push((2, OK_JSON, None));
        let (records, stats) = fuzz::tracker_run(&ops(&parts), usize::MAX);
        assert_eq!(stats.protocol.heads_too_large, 1, "pieces of {piece}");
        // Its request line was read: one record, partial, answered by the response.
        let seen: Vec<_> = records
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str(), r.status, r.partial))
            .collect();
        assert_eq!(
            seen,
            [("POST", "/v1/chat/completions", Some(200), true)],
            "pieces of {piece}"
        );
    }
    // The decoder target takes it too (a header line repeated 4096 times: 352 KiB).
    let payload = [b"POST / HTTP/1.1\r\n".as_slice(), line, b"\r\n"].concat();
    fuzz::fuzz_entry_request(&encode(0x0c, 12, 17, line.len() as u8, &payload));
}

#[test]
fn a_json_body_over_1_mib_is_read_whole_and_counted() {
    // A 2 MiB request body: one long prompt string, past max_body_bytes.
    let (open, run, close) = (
        br#"{"model":"m","messages":[{"role":"user","content":""#.as_slice(),
        b"xxxxxxxxxxxxxxxx".as_slice(),
        br#""}]}"#.as_slice(),
    );
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        open.len() + (run.len() << 17) + close.len()
    );
    let (records, stats) = fuzz::tracker_run(
        &ops(&[
            (0, head.as_bytes(), None),
            (0, open, None),
            (0, run, Some(fuzz::repeat_byte(17))),
            (0, close, None),
            (2, OK_JSON, None),
        ]),
        usize::MAX,
    );
    assert_eq!(stats.bodies_elided, 1);
    assert_eq!(stats.bodies_over_limit, 0);
    let [r] = records.as_slice() else {
        panic!("{} records", records.len())
    };
    assert_eq!(
        (r.request_model.as_deref(), r.status, r.partial),
        (Some("m"), Some(200), false)
    );
    assert_eq!(
        r.request_bytes,
        (head.len() + open.len() + (run.len() << 17) + close.len()) as u64
    );
}

#[test]
fn stream_lines_over_1_mib_are_counted() {
    let sse_head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n".as_slice();
    let nd_head = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\n\r\n".as_slice();
    let request = b"POST /v1/chat/completions HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 27\r\n\r\n{\"model\":\"m\",\"stream\":true}";
    let ollama = b"POST /api/chat HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 14\r\n\r\n{\"model\":\"m\"}";
    // An SSE data line of 2 MiB and a normal event after it.
    let (_, sse) = fuzz::tracker_run(
        &ops(&[
            (0, request, None),
            (2, sse_head, None),
            (2, b"data: ", None),
            (2, b"xxxxxxxxxxxxxxxx", Some(fuzz::repeat_byte(17))),
            (2, b"\n\ndata: [DONE]\n\n", None),
        ]),
        usize::MAX,
    );
    assert_eq!(sse.sse_errors, 1);
    // An NDJSON line of 2 MiB.
    let (_, nd) = fuzz::tracker_run(
        &ops(&[
            (0, ollama, None),
            (2, nd_head, None),
            (2, b"xxxxxxxxxxxxxxxx", Some(fuzz::repeat_byte(17))),
            (2, b"\n{\"done\":true}\n", None),
        ]),
        usize::MAX,
    );
    assert_eq!(nd.ndjson_errors, 1);
    // The decoder targets at their bounds: a 2 MiB SSE line, an event of 5 MiB of lines,
    // a 2 MiB NDJSON line.
    fuzz::fuzz_entry_sse(&encode(0x0d, 17, 6, 16, b"data: xxxxxxxxxxxxxxxx\n\n"));
    fuzz::fuzz_entry_sse(&encode(0x0e, 18, 0, 21, b"data: xxxxxxxxxxxxxx\n\n"));
    fuzz::fuzz_entry_ndjson(&encode(0x0d, 17, 0, 16, b"xxxxxxxxxxxxxxxx\n{}\n"));
    fuzz::fuzz_entry_bounded_json(&encode(0x0d, 17, 2, 16, br#"["xxxxxxxxxxxxxx",""]"#));
}

#[test]
fn fuzz_regressions_replay() {
    // Every input `cargo xtask fuzz` minimised from a crash or hang, through its target:
    // a panic fails this test. The folder names are the targets.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let target = dir.file_name().unwrap().to_string_lossy().into_owned();
        let entry: fn(&[u8]) = match target.as_str() {
            "request_decoder" => fuzz::fuzz_entry_request,
            "response_decoder" => fuzz::fuzz_entry_response,
            "sse" => fuzz::fuzz_entry_sse,
            "ndjson" => fuzz::fuzz_entry_ndjson,
            "openai_event" => fuzz::fuzz_entry_openai_event,
            "bounded_json" => fuzz::fuzz_entry_bounded_json,
            "content_decoding" => fuzz::fuzz_entry_content_decoding,
            "tracker" => fuzz::fuzz_entry_tracker,
            other => panic!("{}: no fuzz target {other:?}", dir.display()),
        };
        for input in std::fs::read_dir(&dir).unwrap() {
            let path = input.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let started = std::time::Instant::now();
            entry(&bytes);
            // A hang the fuzzer found must be fixed too (debug build: generous).
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "{} took {:?}",
                path.display(),
                started.elapsed()
            );
        }
    }
}
