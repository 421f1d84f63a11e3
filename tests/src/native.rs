//! Load in the shapes of the servers' native APIs (TGI, Triton, rerank, score, `count_tokens`)
//! and bodiless responses (HEAD, 204, 304) on the same kept-alive connections, against the
//! uvicorn app. None of these shapes carries a response id, so every request has its own
//! `traceparent` and the app logs its counts under its trace id; strike's records are matched
//! by the `traceparent` they carry.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use crate::load::Usage;

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NativeKind {
    /// TGI `/generate`; `details` asks for details and the prompt's tokens.
    TgiGenerate {
        details: bool,
    },
    TgiStream,
    /// Triton generate; `counts` asks the backend for its token counts.
    TritonGenerate {
        counts: bool,
    },
    TritonStream,
    Rerank,
    Score,
    CountTokens,
    /// `HEAD /health`.
    Head,
    /// `DELETE /v1/cache`: 204.
    NoContent,
    /// `GET /v1/models/m` with a matching `If-None-Match`: 304.
    NotModified,
}

/// Every kind, in the order each worker cycles through them.
pub const NATIVE_MIX: [NativeKind; 10] = [
    NativeKind::TgiGenerate { details: true },
    NativeKind::Head,
    NativeKind::TgiGenerate { details: false },
    NativeKind::TgiStream,
    NativeKind::NoContent,
    NativeKind::TritonGenerate { counts: true },
    NativeKind::TritonStream,
    NativeKind::Rerank,
    NativeKind::NotModified,
    NativeKind::Score,
];

impl NativeKind {
    /// The `api` strike reports.
    pub fn api(self) -> &'static str {
        match self {
            Self::TgiGenerate { .. } | Self::TgiStream => "tgi_generate",
            Self::TritonGenerate { .. } | Self::TritonStream => "triton_generate",
            Self::Rerank => "rerank",
            Self::Score => "score",
            Self::CountTokens => "count_tokens",
            Self::Head | Self::NoContent | Self::NotModified => "other",
        }
    }

    /// The status the app answers with.
    pub fn status(self) -> u16 {
        match self {
            Self::NoContent => 204,
            Self::NotModified => 304,
            _ => 200,
        }
    }

    /// Whether the server reports the prompt's tokens (else strike estimates them).
    pub fn reports_input(self) -> bool {
        !matches!(self, Self::TgiStream | Self::TritonStream)
    }

    pub fn streams(self) -> bool {
        matches!(self, Self::TgiStream | Self::TritonStream)
    }

    /// Whether something is generated (a first token is timed).
    pub fn generates(self) -> bool {
        matches!(
            self,
            Self::TgiGenerate { .. }
                | Self::TgiStream
                | Self::TritonGenerate { .. }
                | Self::TritonStream
        )
    }

    fn request(
        self,
        client: &reqwest::Client,
        base: &str,
        n: u32,
        text: &str,
    ) -> reqwest::RequestBuilder {
        let post = |path: &str, body: Value| {
            client
                .post(format!("{base}{path}"))
                .header("content-type", "application/json")
                .body(body.to_string())
        };
        match self {
            Self::TgiGenerate { details } => post(
                "/generate",
                json!({"inputs": text, "parameters": {"max_new_tokens": n, "details": details, "decoder_input_details": details}}),
            ),
            Self::TgiStream => post(
                "/generate_stream",
                json!({"inputs": text, "parameters": {"max_new_tokens": n}}),
            ),
            Self::TritonGenerate { counts } => post(
                "/v2/models/ensemble/generate",
                json!({"text_input": text, "max_tokens": n, "return_num_input_tokens": counts, "return_num_output_tokens": counts}),
            ),
            Self::TritonStream => post(
                "/v2/models/ensemble/generate_stream",
                json!({"text_input": text, "parameters": {"max_tokens": n, "stream": true}}),
            ),
            Self::Rerank => post(
                "/v1/rerank",
                json!({"model": "bge", "query": text, "documents": [text, {"text": "a fox"}]}),
            ),
            Self::Score => post(
                "/score",
                json!({"model": "bge", "text_1": text, "text_2": ["a fox", text]}),
            ),
            Self::CountTokens => post(
                "/v1/messages/count_tokens",
                json!({"model": "m", "messages": [{"role": "user", "content": text}]}),
            ),
            Self::Head => client.head(format!("{base}/health")),
            Self::NoContent => client.delete(format!("{base}/v1/cache")),
            Self::NotModified => client
                .get(format!("{base}/v1/models/m"))
                .header("if-none-match", "\"strike-models-1\""),
        }
    }
}

/// One request sent.
#[derive(Debug, Clone)]
pub struct NativeSent {
    pub seq: usize,
    pub kind: NativeKind,
    /// The 32 hex digits of its `traceparent`'s trace id.
    pub trace_id: String,
    pub status: u16,
    pub compressed: bool,
    pub error: Option<String>,
}

/// `workers` tasks on one client (kept-alive connections), `per_worker` requests each through
/// [`NATIVE_MIX`] (and `count_tokens` every 7th); the first half of the workers accept gzip.
pub fn run_native(base: &str, workers: usize, per_worker: usize) -> Result<Vec<NativeSent>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(workers)
            .timeout(Duration::from_mins(1))
            .build()
            .context("building the HTTP client")?;
        let tasks: Vec<_> = (0..workers)
            .map(|w| {
                let (client, base) = (client.clone(), base.to_owned());
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for i in 0..per_worker {
                        let seq = w * per_worker + i;
                        let kind = if i % 7 == 6 {
                            NativeKind::CountTokens
                        } else {
                            NATIVE_MIX[(i + w) % NATIVE_MIX.len()]
                        };
                        out.push(one(&client, &base, seq, kind, w < workers / 2).await);
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.context("native load worker panicked")?);
        }
        all.sort_by_key(|s| s.seq);
        Ok(all)
    })
}

async fn one(
    client: &reqwest::Client,
    base: &str,
    seq: usize,
    kind: NativeKind,
    gzip: bool,
) -> NativeSent {
    let trace_id = format!("{:032x}", 0x5712_0000_0000_u64 + seq as u64);
    let words = [
        "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog",
    ];
    let text = (0..3 + seq % 9)
        .map(|i| words[(seq + i) % 8])
        .collect::<Vec<_>>()
        .join(" ");
    let n = u32::try_from(1 + seq % 12).unwrap_or(1);
    let mut req = kind
        .request(client, base, n, &text)
        .header("traceparent", format!("00-{trace_id}-{:016x}-01", seq + 1));
    // Starlette's GZipMiddleware gives a 204 or a 304 a gzip body (20 bytes, invalid
    // HTTP: hyper then fails on the next response of the connection), so those ask for none.
    if gzip && !matches!(kind, NativeKind::NoContent | NativeKind::NotModified) {
        req = req.header("accept-encoding", "gzip");
    }
    let mut sent = NativeSent {
        seq,
        kind,
        trace_id,
        status: 0,
        compressed: false,
        error: None,
    };
    match req.send().await {
        Ok(mut resp) => {
            sent.status = resp.status().as_u16();
            sent.compressed = resp
                .headers()
                .get("content-encoding")
                .is_some_and(|v| v == "gzip");
            loop {
                match resp.chunk().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        sent.error = Some(format!("reading: {e}"));
                        break;
                    }
                }
            }
        }
        Err(e) => sent.error = Some(format!("sending: {e:?}")),
    }
    sent
}

/// Per kind: sent, records, exact input, exact output, TTFT present.
#[derive(Debug, Default, Clone, Copy)]
pub struct Row {
    pub sent: usize,
    pub records: usize,
    pub exact_input: usize,
    pub exact_output: usize,
    pub ttft: usize,
    pub compressed: usize,
}

/// Matches each request to the one record with its trace id and lists what disagrees: the
/// api, the status, not partial, the app's counts (input where the server reports it, an
/// estimate otherwise), a TTFT exactly for what generates. Returns the table too.
#[expect(clippy::implicit_hasher, reason = "the map comes from read_app_log")]
pub fn native_problems(
    sent: &[NativeSent],
    records: &[Value],
    app: &HashMap<String, Usage>,
) -> (Vec<(NativeKind, Row)>, Vec<String>) {
    let mut by_trace: HashMap<&str, Vec<&Value>> = HashMap::new();
    for r in records {
        if let Some(id) = r["traceparent"].as_str().and_then(|t| t.get(3..35)) {
            by_trace.entry(id).or_default().push(r);
        }
    }
    let mut rows: Vec<(NativeKind, Row)> = Vec::new();
    let mut problems = Vec::new();
    for s in sent {
        let what = format!("request #{} ({:?})", s.seq, s.kind);
        let i = rows
            .iter()
            .position(|(k, _)| *k == s.kind)
            .unwrap_or_else(|| {
                rows.push((s.kind, Row::default()));
                rows.len() - 1
            });
        let row = &mut rows[i].1;
        row.sent += 1;
        row.compressed += usize::from(s.compressed);
        if let Some(e) = &s.error {
            problems.push(format!("{what}: {e}"));
        }
        if s.status != s.kind.status() {
            problems.push(format!(
                "{what}: status {} (expected {})",
                s.status,
                s.kind.status()
            ));
        }
        let [r] = by_trace
            .get(s.trace_id.as_str())
            .map_or(&[][..], Vec::as_slice)
        else {
            problems.push(format!(
                "{what}: {} records (expected 1)",
                by_trace.get(s.trace_id.as_str()).map_or(0, Vec::len)
            ));
            continue;
        };
        row.records += 1;
        if r["api"] != s.kind.api() || r["status"] != s.kind.status() || r["partial"] != false {
            problems.push(format!(
                "{what}: api {} status {} partial {} ({})",
                r["api"], r["status"], r["partial"], r["partial_reason"]
            ));
        }
        row.ttft += usize::from(r["ttft_ms"].is_number());
        if r["ttft_ms"].is_number() != s.kind.generates() {
            problems.push(format!("{what}: ttft_ms {}", r["ttft_ms"]));
        }
        if s.kind.api() == "other" {
            continue;
        }
        let Some(want) = app.get(&s.trace_id) else {
            problems.push(format!("{what}: the app logged no counts"));
            continue;
        };
        let (input, output) = (r["input_tokens"].as_u64(), r["output_tokens"].as_u64());
        if output == Some(want.completion_tokens) {
            row.exact_output += 1;
        } else {
            problems.push(format!(
                "{what}: output {output:?}, the app {}",
                want.completion_tokens
            ));
        }
        if input == Some(want.prompt_tokens) && r["input_token_source"] == "usage" {
            row.exact_input += 1;
        } else if s.kind.reports_input() || r["input_token_source"] != "prompt_bytes" {
            problems.push(format!(
                "{what}: input {input:?} ({}), the app {}",
                r["input_token_source"], want.prompt_tokens
            ));
        }
    }
    (rows, problems)
}

/// Opens a WebSocket on the app's `/v1/realtime` over a plain TCP connection: the upgrade
/// request (with `traceparent`), its `101`, one masked text frame out and the echo back, a
/// close. Returns the trace id sent and the bytes of the echo frame's payload.
pub fn websocket_exchange(port: u16) -> Result<(String, String)> {
    use std::io::{Read as _, Write as _};
    let trace_id = format!("{:032x}", 0x5712_ffff_u64);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /v1/realtime HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\
         traceparent: 00-{trace_id}-00000000000000aa-01\r\n\r\n"
    )?;
    // The 101 head, byte by byte up to its blank line.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b)
            .context("reading the upgrade response")?;
        head.push(b[0]);
        anyhow::ensure!(head.len() < 4096, "no end to the upgrade response");
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "not upgraded: {head}");
    // A client's frames are masked (RFC 6455 5.3).
    let payload = b"hello over a websocket";
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81, 0x80 | u8::try_from(payload.len())?];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, p)| p ^ mask[i % 4]));
    s.write_all(&frame)?;
    let mut hdr = [0u8; 2];
    s.read_exact(&mut hdr)?;
    anyhow::ensure!(hdr[0] == 0x81 && hdr[1] < 126, "unexpected frame {hdr:?}");
    let mut echo = vec![0u8; usize::from(hdr[1])];
    s.read_exact(&mut echo)?;
    s.write_all(&[0x88, 0x80, 1, 2, 3, 4])?;
    Ok((trace_id, String::from_utf8_lossy(&echo).into_owned()))
}
