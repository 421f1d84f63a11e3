//! Helpers of the privileged tests that run the real `strike` binary.

// Each test binary includes this module and uses part of it.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read as _, Write as _},
    net::TcpStream,
    process::{Child, ChildStderr, ChildStdout, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

/// A child process killed when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prints why the test skips; under `CI=true` a skip is a failure instead.
pub fn skip(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "privileged test cannot run in CI: {reason}"
    );
    eprintln!("SKIP: {reason}");
}

/// Whether this process is root; skips (see [`skip`]) when not.
pub fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip("not root");
    false
}

/// How long a privileged test waits for something that happens within milliseconds on an
/// idle machine: long enough for a slow or busy one, since every wait ends on its condition.
pub const PATIENCE: Duration = Duration::from_mins(1);

/// Polls `done` until it holds; fails naming `what` did not happen within [`PATIENCE`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `done` until it holds or [`PATIENCE`] has passed; returns whether it held (for a
/// caller that says more about what did not happen than [`wait_until`] can).
pub fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// One line, trimmed.
pub fn line(r: &mut impl BufRead) -> String {
    let mut s = String::new();
    r.read_line(&mut s).unwrap();
    s.trim().to_string()
}

/// The first line of `strike`'s stderr that is not about GPU telemetry (whose presence
/// depends on the machine).
pub fn status_line(r: &mut impl BufRead) -> String {
    loop {
        let l = line(r);
        if !(l.starts_with("strike: no GPU telemetry") || l.starts_with("strike: GPU telemetry")) {
            return l;
        }
    }
}

/// One chat completion to the prefork server on `port` (`Connection: close`); the whole
/// response, or `None` when the connection failed or no completion came back.
pub fn post_chat(port: u16) -> Option<String> {
    post_chat_to(port, Some(&format!("127.0.0.1:{port}")))
}

/// [`post_chat`] with this `Host` header, or none.
pub fn post_chat_to(port: u16, host: Option<&str>) -> Option<String> {
    let body = r#"{"model":"prefork-model","messages":[{"role":"user","content":"hello"}]}"#;
    let host = host.map(|h| format!("host: {h}\r\n")).unwrap_or_default();
    let mut conn = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        conn,
        "POST /v1/chat/completions HTTP/1.1\r\n{host}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    conn.read_to_string(&mut response).ok()?;
    response.contains("chatcmpl-").then_some(response)
}

/// Starts the `strike` binary with `args` (stdout and stderr piped); returns it, its stderr,
/// and its first status line.
pub fn start_strike<S: AsRef<std::ffi::OsStr>>(
    args: impl IntoIterator<Item = S>,
) -> (Kill, BufReader<ChildStderr>, String) {
    let mut strike = Kill(
        Command::new(env!("CARGO_BIN_EXE_strike"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start strike"),
    );
    let mut err = BufReader::new(strike.0.stderr.take().expect("piped stderr"));
    let first = status_line(&mut err);
    (strike, err, first)
}

/// Sends `signal` to a running `strike`, waits for it, asserts a clean exit, and returns its
/// stdout's JSON records and the rest of its stderr.
pub fn stop_strike(
    mut strike: Kill,
    mut err: BufReader<ChildStderr>,
    signal: i32,
) -> (Vec<Value>, String) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(i32::try_from(strike.0.id()).unwrap(), signal) };
    let mut out = String::new();
    strike
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = strike.0.wait().unwrap();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "strike exited with {status}: {rest}");
    let records = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (records, rest)
}

/// `tests/servers/prefork.py`: binds, prints its port, forks a worker on a line of stdin.
pub const PREFORK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers/prefork.py");

/// Starts the prefork server through `cmd` (`python3 PREFORK`, or a wrapper that execs it)
/// with piped stdin and stdout; returns it, its stdout and the port it printed.
pub fn start_prefork(mut cmd: Command) -> (Kill, BufReader<ChildStdout>, u16) {
    let mut server = Kill(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the prefork server"),
    );
    let mut out = BufReader::new(server.0.stdout.take().unwrap());
    let port = line(&mut out).parse().unwrap();
    (server, out, port)
}

/// `python3 PREFORK`.
pub fn prefork_command() -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(PREFORK);
    cmd
}
