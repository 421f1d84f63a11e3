//! `cargo xtask demo`: watch `strike trace` follow a real llama-server.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::ctx::{self, Ctx};
use crate::http;

const ATTACHED: &str = "strike: attached";

pub(crate) fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

pub(crate) fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory-safety preconditions; pid is our own un-reaped child.
        unsafe { libc::kill(pid, sig) };
    }
}

pub(crate) fn wait_for(
    child: &mut Child,
    timeout: Duration,
) -> Result<Option<std::process::ExitStatus>> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(None)
}

/// Kills the child when dropped, so a failing demo leaves nothing running.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            signal(&self.0, libc::SIGTERM);
            if !matches!(wait_for(&mut self.0, Duration::from_secs(5)), Ok(Some(_))) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
    }
}

pub fn run(ctx: &Ctx) -> Result<()> {
    crate::setup::run(ctx)?;
    if !ctx::is_root() {
        bail!("the demo runs `strike trace`, which loads eBPF programs: run it as root");
    }
    let t = Instant::now();
    ctx::run(
        ctx.cargo()
            .args(["build", "--release", "-p", "strike-user"]),
    )?;
    println!(
        "demo: built {} ({})",
        ctx.strike_bin().display(),
        ctx::secs(t)
    );

    let port = free_port()?;
    let server = start_server(ctx, port)?;
    let (mut strike, echo) = start_strike(ctx, port, &[], Stdio::inherit(), true)?;
    send_requests(port)?;
    std::thread::sleep(Duration::from_secs(1));
    signal(&strike.0, libc::SIGINT);
    let status = wait_for(&mut strike.0, Duration::from_secs(30))?;
    let _ = echo.join();
    drop(server);
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => bail!("strike trace exited with {s} after SIGINT"),
        None => bail!("strike trace did not exit within 30 s of SIGINT"),
    }
}

/// Waits until `GET path` answers 200, failing if `child` exits or a minute passes.
pub(crate) fn wait_healthy(
    child: &mut Guard,
    port: u16,
    path: &str,
    what: &str,
    log: &std::path::Path,
) -> Result<()> {
    let t = Instant::now();
    while !http::request(port, "GET", path, None).is_ok_and(|r| r.status == 200) {
        if let Some(status) = child.0.try_wait()? {
            bail!("{what} exited with {status}; see {}", log.display());
        }
        if t.elapsed() > Duration::from_mins(1) {
            bail!("{what} not healthy after 60 s; see {}", log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// llama-server with the tiny model on 127.0.0.1:port, healthy.
fn start_server(ctx: &Ctx, port: u16) -> Result<Guard> {
    let log_path = ctx.cache.join("demo-llama-server.log");
    let log = std::fs::File::create(&log_path)?;
    let mut server = Guard(
        Command::new(ctx.llama_server())
            .arg("-m")
            .arg(ctx.model())
            .args([
                "-a",
                "tiny",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args([
                "--metrics",
                "--no-webui",
                "--offline",
                "-t",
                "1",
                "-np",
                "2",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting llama-server")?,
    );
    let t = Instant::now();
    wait_healthy(&mut server, port, "/health", "llama-server", &log_path)?;
    println!(
        "demo: llama-server (tiny model) healthy on 127.0.0.1:{port} ({}; log {})",
        ctx::secs(t),
        log_path.display()
    );
    Ok(server)
}

/// `strike trace --port PORT` plus `extra` arguments, stdout to `stdout`, started and
/// attached; its stderr is echoed to ours when `echo` is set (and read either way).
pub(crate) fn start_strike(
    ctx: &Ctx,
    port: u16,
    extra: &[&std::ffi::OsStr],
    stdout: Stdio,
    echo: bool,
) -> Result<(Guard, std::thread::JoinHandle<()>)> {
    let mut strike = Guard(
        Command::new(ctx.strike_bin())
            .args(["trace", "--port", &port.to_string()])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting strike trace")?,
    );
    let stderr = strike.0.stderr.take().context("strike stderr")?;
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if echo {
                eprintln!("{line}");
            }
            if line.starts_with(ATTACHED) {
                let _ = tx.send(());
            }
        }
    });
    let t = Instant::now();
    while rx.recv_timeout(Duration::from_millis(100)).is_err() {
        if let Some(status) = strike.0.try_wait()? {
            bail!("strike trace exited with {status} before attaching");
        }
        if t.elapsed() > Duration::from_secs(90) {
            bail!("strike trace did not print `{ATTACHED}` within 90 s");
        }
    }
    Ok((strike, reader))
}

const REQUESTS: [(&str, &str, &str); 6] = [
    (
        "chat, streamed, with include_usage",
        "/v1/chat/completions",
        r#"{"model":"tiny","messages":[{"role":"user","content":"Tell me about the quick brown fox."}],"max_tokens":24,"stream":true,"stream_options":{"include_usage":true}}"#,
    ),
    (
        "chat, streamed, no usage",
        "/v1/chat/completions",
        r#"{"model":"tiny","messages":[{"role":"user","content":"Hello there!"}],"max_tokens":12,"stream":true}"#,
    ),
    (
        "chat, not streamed",
        "/v1/chat/completions",
        r#"{"model":"tiny","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"What is a token?"}],"max_tokens":16}"#,
    ),
    (
        "completion, not streamed",
        "/v1/completions",
        r#"{"model":"tiny","prompt":"The sun is bright and the sky is","max_tokens":8}"#,
    ),
    (
        "completion, streamed",
        "/v1/completions",
        r#"{"model":"tiny","prompt":"Good morning, good evening and","max_tokens":10,"stream":true}"#,
    ),
    (
        "embeddings",
        "/v1/embeddings",
        r#"{"model":"tiny","input":"The cat sat on the mat."}"#,
    ),
];

fn send_requests(port: u16) -> Result<()> {
    for (what, path, body) in REQUESTS {
        let r = http::request(port, "POST", path, Some(body))?;
        if path == "/v1/embeddings" && r.status != 200 {
            eprintln!(
                "demo: {what}: HTTP {} (llama-server serves embeddings only when started with --embeddings)",
                r.status
            );
            continue;
        }
        eprintln!(
            "demo: sent {what} to {path}: HTTP {}, {} response bytes",
            r.status,
            r.body.len()
        );
    }
    Ok(())
}
