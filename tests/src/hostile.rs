//! Hostile clients for the hostile-traffic end-to-end test: header floods, giant and many
//! distinct model names, slow trickles, random bytes, pipelined garbage, resets in the middle
//! of a stream and many idle half-open connections, each bounded in count and time, on
//! loopback. The ordinary requests some of them send among the garbage are returned with
//! the usage the server answered, for the test to find their records.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, ensure, Context as _, Result};
use serde_json::Value;

/// An ordinary request a hostile client sent, and what the server answered.
#[derive(Debug, Clone)]
pub struct Answered {
    pub what: &'static str,
    pub response_id: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

fn connect(port: u16) -> Result<TcpStream> {
    let s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A non-streamed chat completion with `model`, its extra header lines, kept alive.
fn chat_request(model: &str, extra_headers: &str, words: usize) -> Vec<u8> {
    let content = vec!["word"; words].join(" ");
    let body = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 3,
    })
    .to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{extra_headers}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one response with a `content-length` body; returns its status and body.
fn read_response(r: &mut BufReader<TcpStream>) -> Result<(u16, Vec<u8>)> {
    let mut status_line = String::new();
    r.read_line(&mut status_line)?;
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line: {status_line:?}"))?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse()?;
            }
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body)?;
    Ok((status, body))
}

fn answered(what: &'static str, body: &[u8]) -> Result<Answered> {
    let v: Value = serde_json::from_slice(body)?;
    let usage = |k: &str| v.pointer(&format!("/usage/{k}")).and_then(Value::as_u64);
    Ok(Answered {
        what,
        response_id: v["id"].as_str().context("no id")?.to_owned(),
        prompt_tokens: usage("prompt_tokens").context("no usage")?,
        completion_tokens: usage("completion_tokens").context("no usage")?,
    })
}

/// One request with 130 header fields (more than httparse's 128 slots), then five ordinary
/// ones on the same kept-alive connection: all six must be recorded.
pub fn header_flood(port: u16) -> Result<Vec<Answered>> {
    let s = connect(port)?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let flood = (0..130).fold(String::new(), |mut h, i| {
        let _ = write!(h, "x-flood-{i}: {i}\r\n");
        h
    });
    let mut out = Vec::new();
    for i in 0..6 {
        let extra = if i == 0 { flood.as_str() } else { "" };
        w.write_all(&chat_request("flood-model", extra, 5 + i))?;
        let (status, body) = read_response(&mut r)?;
        ensure!(status == 200, "header flood request {i}: status {status}");
        out.push(answered("after a header flood", &body)?);
    }
    Ok(out)
}

/// `n` requests, each on its own connection, whose `model` is a distinct string of `len`
/// bytes (the server echoes it back).
pub fn distinct_models(port: u16, n: usize, len: usize) -> Result<usize> {
    let mut ok = 0;
    for i in 0..n {
        let model = format!("{i:06}-{}", "m".repeat(len.saturating_sub(7)));
        let s = connect(port)?;
        let mut w = s.try_clone()?;
        let mut r = BufReader::new(s);
        w.write_all(&chat_request(&model, "connection: close\r\n", 2))?;
        if read_response(&mut r).is_ok_and(|(status, _)| status == 200) {
            ok += 1;
        }
    }
    Ok(ok)
}

/// An ordinary request sent one byte every millisecond or so (its head and body, some
/// 250 bytes).
pub fn trickle(port: u16) -> Result<Answered> {
    let s = connect(port)?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    for b in chat_request("trickle-model", "", 4) {
        w.write_all(&[b])?;
        std::thread::sleep(Duration::from_millis(1));
    }
    let (status, body) = read_response(&mut r)?;
    ensure!(status == 200, "trickle: status {status}");
    answered("trickled one byte at a time", &body)
}

/// `conns` connections that send `bytes` random bytes each (no HTTP at all) and close.
pub fn random_bytes(port: u16, conns: usize, bytes: usize) -> Result<()> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..conns {
        let mut junk = Vec::with_capacity(bytes);
        while junk.len() < bytes {
            // xorshift: deterministic, and never a request line.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            junk.extend_from_slice(&x.to_le_bytes());
        }
        junk[0] = 0;
        let mut s = connect(port)?;
        // The server may close as soon as it sees the first bytes: a failed write is fine.
        let _ = s.write_all(&junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    Ok(())
}

/// An ordinary request, then on the same kept-alive connection garbage with a request
/// pipelined behind it in one write: the first is answered and recorded; the server
/// answers the garbage with a 400 and ends the connection (uvicorn refuses the pipelined
/// request with it).
pub fn pipelined_garbage(port: u16) -> Result<Answered> {
    let s = connect(port)?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    w.write_all(&chat_request("pipelined-model", "", 6))?;
    let (status, body) = read_response(&mut r)?;
    ensure!(status == 200, "pipelined: status {status}");
    let first = answered("before garbage on its connection", &body)?;
    let mut bytes = b"\x00\x01\x02 NOT HTTP \xff\xfe\r\n\r\n".to_vec();
    bytes.extend_from_slice(&chat_request("pipelined-model", "", 7));
    let _ = w.write_all(&bytes);
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    Ok(first)
}

/// `n` streamed chat completions reset (RST) by the client after their first bytes.
pub fn resets_mid_stream(port: u16, n: usize) -> Result<()> {
    for _ in 0..n {
        let s = connect(port)?;
        let body = r#"{"model":"reset-model","stream":true,"max_tokens":200,"messages":[{"role":"user","content":"reset me"}]}"#;
        let mut w = s.try_clone()?;
        write!(
            w,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut first = [0u8; 256];
        let got = (&s).read(&mut first)?;
        if got == 0 {
            bail!("reset: the stream ended before its first bytes");
        }
        // SO_LINGER 0: close sends a RST instead of a FIN.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
        // SAFETY: a valid socket fd and a properly sized option value.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                std::ptr::from_ref(&linger).cast(),
                libc::socklen_t::try_from(size_of::<libc::linger>())?,
            )
        };
        ensure!(rc == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A secret that must never leave Strike: in a query string and as a bearer key.
pub const SECRET: &str = "sk-HOSTILE-SECRET-0f1e2d3c";

/// An ordinary request to `/v1/chat/completions?api_key=SECRET` with `Authorization:
/// Bearer SECRET`.
pub fn secret_in_query_and_key(port: u16) -> Result<Answered> {
    let s = connect(port)?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut req = chat_request(
        "secret-model",
        &format!("authorization: Bearer {SECRET}\r\n"),
        3,
    );
    let at = req.iter().position(|&b| b == b' ').context("no method")? + 1;
    let path_end = at + "/v1/chat/completions".len();
    req.splice(
        path_end..path_end,
        format!("?api_key={SECRET}").into_bytes(),
    );
    w.write_all(&req)?;
    let (status, body) = read_response(&mut r)?;
    ensure!(status == 200, "secret request: status {status}");
    answered("with a secret in its query string and key", &body)
}

/// `n` connections that each send the start of a head and then nothing, held open until
/// the returned guard is dropped.
pub fn half_open(port: u16, n: usize) -> Result<Vec<TcpStream>> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = connect(port)?;
        write!(
            s,
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-half-open: {i}\r\nx-pad: {}",
            "p".repeat(1024)
        )?;
        held.push(s);
    }
    Ok(held)
}

/// What the hostile clients sent that the server answered.
#[derive(Debug)]
pub struct HostileOutcome {
    /// Ordinary requests sent among the garbage.
    pub answered: Vec<Answered>,
    /// Giant-model requests answered (of 300).
    pub giant_models: usize,
}

/// Every hostile client but the half-open connections, one after the other on a thread of
/// their own (so an ordinary load can run meanwhile).
pub fn spawn_hostiles(port: u16) -> JoinHandle<Result<HostileOutcome>> {
    std::thread::spawn(move || {
        let mut answered = header_flood(port)?;
        answered.push(secret_in_query_and_key(port)?);
        let giant_models = distinct_models(port, 300, 64 * 1024)?;
        answered.push(trickle(port)?);
        random_bytes(port, 20, 64 * 1024)?;
        answered.push(pipelined_garbage(port)?);
        resets_mid_stream(port, 10)?;
        Ok(HostileOutcome {
            answered,
            giant_models,
        })
    })
}

/// Polls `GET /healthz` on `port` every 100 ms until stopped.
pub struct HealthPoller {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u32, Vec<String>)>,
}

impl HealthPoller {
    pub fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut ok, mut bad) = (0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match crate::process::http_get_status(port, "/healthz") {
                        Ok(200) => ok += 1,
                        other => bad.push(format!("{other:?}")),
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                (ok, bad)
            })
        };
        HealthPoller { stop, thread }
    }

    /// Stops polling; returns the 200s and every other answer.
    pub fn stop(self) -> (u32, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .unwrap_or_else(|_| (0, vec!["the poller panicked".to_owned()]))
    }
}

/// What is wrong with the records of the hostile clients' requests: each ordinary one has
/// exactly one exact record; each giant model name a record with its name cut to at most
/// 256 bytes; random bytes counted as not HTTP; distinct model names past the label bound
/// counted (`status` is `/v1/status`).
pub fn problems(
    outcome: &HostileOutcome,
    records: &[Value],
    summary: &Value,
    status: &Value,
) -> Vec<String> {
    let mut problems = Vec::new();
    for a in &outcome.answered {
        let found: Vec<_> = records
            .iter()
            .filter(|r| r["response_id"] == a.response_id.as_str())
            .collect();
        match found.as_slice() {
            [r] if r["partial"] == false
                && r["input_tokens"] == a.prompt_tokens
                && r["output_tokens"] == a.completion_tokens => {}
            other => problems.push(format!("{} ({}): {other:?}", a.what, a.response_id)),
        }
    }
    let giant: Vec<_> = records
        .iter()
        .filter_map(|r| r["model"].as_str().filter(|m| m.contains("-mmmm")))
        .collect();
    if giant.len() != outcome.giant_models || outcome.giant_models != 300 {
        problems.push(format!(
            "{} of 300 giant-model requests answered, {} records",
            outcome.giant_models,
            giant.len()
        ));
    }
    if let Some(m) = giant.iter().find(|m| m.len() > 256) {
        problems.push(format!("a record keeps a model name of {} bytes", m.len()));
    }
    let not_http = summary
        .pointer("/tracker/not_http_connections")
        .and_then(Value::as_u64);
    if not_http < Some(20) {
        problems.push(format!(
            "not_http_connections = {not_http:?}, 20 connections sent random bytes"
        ));
    }
    let overflows = status
        .pointer("/export/label_overflows")
        .and_then(Value::as_u64);
    if overflows.is_none_or(|n| n == 0) {
        problems.push(format!(
            "label_overflows = {overflows:?} after 300 distinct models"
        ));
    }
    problems
}

/// The counters the hostile clients should have moved, in one line.
pub fn counted(summary: &Value, status: &Value) -> String {
    let count = |p: &str| summary.pointer(p).and_then(Value::as_u64);
    format!(
        "counted: {:?} not-HTTP connections ({:?} of them no longer copied), {:?} label overflows, {:?} request / {:?} response parse errors, {:?} partial records, {:?} kernel ring drops, {:?} queue drops",
        count("/tracker/not_http_connections"),
        count("/pipeline/connections_ignored"),
        status.pointer("/export/label_overflows"),
        count("/tracker/request_parse_errors"),
        count("/tracker/response_parse_errors"),
        count("/tracker/partial_records"),
        count("/kernel/ringbuf_full"),
        count("/pipeline/events_dropped"),
    )
}

/// Where [`SECRET`] shows: in what `/v1/requests` serves, in `/metrics`, in the records
/// printed. The secret request's record must be served (without it).
pub fn secret_problems(served: &str, metrics: &str, records: &str) -> Vec<String> {
    let mut problems: Vec<String> = [
        ("/v1/requests", served),
        ("/metrics", metrics),
        ("the records", records),
    ]
    .into_iter()
    .filter(|(_, text)| text.contains(SECRET))
    .map(|(place, _)| format!("the secret is in {place}"))
    .collect();
    if !served.contains("secret-model") {
        problems.push("/v1/requests does not serve the secret request's record".to_owned());
    }
    problems
}
