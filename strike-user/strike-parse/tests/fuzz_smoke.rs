//! Runs every fuzz target body (`strike_parse::fuzz`) over deterministic pseudo-random
//! inputs and mutations of the golden scenarios, so CI exercises them without nightly.

#![expect(
    clippy::cast_possible_truncation,
    reason = "test input generators truncate random words to bytes on purpose"
)]

mod common;

use std::path::Path;

use strike_parse::conn::StreamEvent;
use strike_parse::fuzz;

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
    assert!(out.len() >= 20, "golden corpus missing");
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

fn inputs(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    let corpus = corpus();
    let mut out = Vec::new();
    for c in &corpus {
        for split in [1u8, 3, 16, 200] {
            let mut v = vec![split];
            v.extend_from_slice(c);
            out.push(v);
        }
    }
    for _ in 0..1500 {
        let base = &corpus[rng.below(corpus.len())];
        let mut v = vec![rng.next() as u8];
        v.extend(mutate(&mut rng, base));
        out.push(v);
    }
    for _ in 0..1500 {
        let len = rng.below(512);
        out.push((0..len).map(|_| rng.next() as u8).collect());
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
            let mut json = vec![input[0]];
            json.extend_from_slice(&input[pos + 6..]);
            fuzz::fuzz_entry_bounded_json(&json);
        }
        // And HTTP bodies.
        if let Some(pos) = input.windows(4).position(|w| w == b"\r\n\r\n") {
            let mut json = vec![input[0]];
            json.extend_from_slice(&input[pos + 4..]);
            fuzz::fuzz_entry_bounded_json(&json);
        }
    }
}

#[test]
fn tracker_survives() {
    let mut rng = Rng(0x5eed_0002);
    let corpus = corpus();
    for input in inputs(0x5eed_0003) {
        fuzz::fuzz_entry_tracker(&input);
    }
    // Well-formed op streams carrying golden bytes: open, data in/out with length bytes.
    for _ in 0..2000 {
        let base = &corpus[rng.below(corpus.len())];
        let mut ops = vec![0x00u8]; // open conn 0 as server
        let mut pos = 0;
        while pos < base.len() {
            let len = (rng.below(255) + 1).min(base.len() - pos);
            let dir = if rng.below(2) == 0 { 0u8 } else { 2u8 };
            let op = match rng.below(20) {
                0 => 5 << 2 | dir, // gap
                1 => 6 << 2,       // eof
                _ => 1 << 2 | dir, // data
            };
            ops.push(op | (((rng.below(4) as u8) << 5) & 0x60));
            if (op >> 2) % 8 == 1 {
                ops.push(len as u8);
                ops.extend_from_slice(&base[pos..pos + len]);
                pos += len;
            }
        }
        fuzz::fuzz_entry_tracker(&ops);
    }
    // Behaviour, not input counts: each golden scenario's requests then its responses, in
    // random pieces without loss, give a record for every request line and a status for each
    // request its response answered.
    let mut checked = 0;
    for pair in corpus.chunks(2) {
        let [ingress, egress] = pair else { continue };
        let requests = count_lines(ingress, |l| {
            strike_parse::protocol::http::sniff_request_line(l)
                == strike_parse::protocol::http::Sniff::Yes
        });
        if requests == 0 || !egress.starts_with(b"HTTP/1.") {
            continue;
        }
        let mut ops = vec![0x00u8];
        for (dir, bytes) in [(0u8, ingress), (2u8, egress)] {
            for piece in bytes.chunks(rng.below(200) + 1) {
                ops.push(1 << 2 | dir);
                ops.push(u8::try_from(piece.len()).unwrap());
                ops.extend_from_slice(piece);
            }
        }
        let records = fuzz::tracker_records(&ops);
        assert!(
            records.len() >= requests && records.iter().any(|r| r.status.is_some()),
            "{requests} request lines gave {} records",
            records.len()
        );
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} golden scenarios have both sides to check"
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
            // The intact stream, then damaged copies: the coding byte, a piece-size byte.
            let mut v = vec![pick, rng.next() as u8];
            v.extend_from_slice(body);
            fuzz::fuzz_entry_content_decoding(&v);
            let mut damaged = vec![pick, rng.next() as u8];
            damaged.extend(mutate(&mut rng, body));
            fuzz::fuzz_entry_content_decoding(&damaged);
        }
        // A bomb now and then: many zeros, compressed.
        if i % 100 == 0 {
            let zeros = vec![0u8; 8 << 20];
            let mut v = vec![3u8, 200];
            v.extend(zstd::encode_all(zeros.as_slice(), 3).unwrap());
            fuzz::fuzz_entry_content_decoding(&v);
        }
    }
}
