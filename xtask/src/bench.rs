//! `cargo xtask bench`: what tracing costs the traced server, measured end to end.
//!
//! The uvicorn app `tests/servers/openai_app.py` (the stack vLLM runs on) serves `wrk`'s load; each round runs wrk once
//! without Strike (baseline) and once with `strike trace --port` attached, alternating, so
//! both see the same machine state. The result is the ratio traced / baseline of requests/s,
//! per round and as the median. Strike's own records and summary are checked too: a run that
//! dropped or lost anything is reported, never hidden.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    ctx::{self, Ctx},
    demo::{free_port, signal, start_strike, wait_for, wait_healthy, Guard},
};

const WORKLOADS: [(&str, &str); 2] = [
    (
        "chat, not streamed, 16 tokens",
        r#"{"model":"m","messages":[{"role":"user","content":"hello there, how are you today?"}],"max_tokens":16}"#,
    ),
    (
        "chat, streamed, 16 tokens",
        r#"{"model":"m","messages":[{"role":"user","content":"hello there, how are you today?"}],"max_tokens":16,"stream":true}"#,
    ),
];

pub fn run(ctx: &Ctx, rounds: u32, seconds: u32) -> Result<()> {
    crate::setup::run(ctx)?;
    if !ctx::is_root() {
        bail!("the bench runs `strike trace`, which loads eBPF programs: run it as root");
    }
    ensure_wrk(ctx)?;
    ctx::run(
        ctx.cargo()
            .args(["build", "--release", "-p", "strike-user"]),
    )?;
    let work = ctx.cache.join("bench");
    fs::create_dir_all(&work)?;
    let port = free_port()?;
    let _app = start_app(ctx, port, &work)?;

    println!("bench: uvicorn OpenAI app on 127.0.0.1:{port}, wrk -t1 -c8 -d{seconds}s, {rounds} round(s) per workload");
    println!(
        "{:<32} {:>5} {:>12} {:>12} {:>7} {:>8} {:>8}",
        "workload", "round", "baseline/s", "traced/s", "ratio", "records", "partial"
    );
    for (name, body) in WORKLOADS {
        let script = work.join("post.lua");
        fs::write(&script, lua(body))?;
        let mut ratios = Vec::new();
        for round in 1..=rounds {
            let base = wrk(port, seconds, &script)?;
            let (traced, records, partial, lost) = traced_run(ctx, port, seconds, &script, &work)?;
            let ratio = traced / base;
            ratios.push(ratio);
            println!("{name:<32} {round:>5} {base:>12.1} {traced:>12.1} {ratio:>7.3} {records:>8} {partial:>8}");
            if lost > 0 {
                println!("  (strike reported {lost} lost/dropped events or records in this run)");
            }
        }
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        println!(
            "{name:<32} median traced/baseline = {median:.3} ({:.1}% fewer requests/s)",
            (1.0 - median) * 100.0
        );
    }
    Ok(())
}

fn lua(body: &str) -> String {
    format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{body}]]\n"
    )
}

fn ensure_wrk(ctx: &Ctx) -> Result<()> {
    if ctx.which("wrk").is_some() {
        return Ok(());
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!("wrk is not installed (it is packaged by most distributions as `wrk`)");
    }
    ctx::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn start_app(ctx: &Ctx, port: u16, work: &Path) -> Result<Guard> {
    let log = fs::File::create(work.join("app.log"))?;
    let mut app = Guard(
        Command::new(ctx.python())
            .arg(ctx.root.join("tests/servers/openai_app.py"))
            .args(["--port", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the uvicorn app")?,
    );
    wait_healthy(
        &mut app,
        port,
        "/v1/models",
        "the uvicorn app",
        &work.join("app.log"),
    )?;
    Ok(app)
}

/// Requests/s reported by wrk.
fn wrk(port: u16, seconds: u32, script: &Path) -> Result<f64> {
    let out = ctx::output(
        Command::new("wrk")
            .args(["-t1", "-c8", &format!("-d{seconds}s"), "-s"])
            .arg(script)
            .arg(format!("http://127.0.0.1:{port}/v1/chat/completions")),
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:")?.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{out}"))
}

/// One wrk run with `strike trace` attached: (requests/s, records, partial records, losses).
fn traced_run(
    ctx: &Ctx,
    port: u16,
    seconds: u32,
    script: &Path,
    work: &Path,
) -> Result<(f64, u64, u64, u64)> {
    let records_path = work.join("records.jsonl");
    let summary_path = work.join("summary.json");
    let summary_arg = summary_path.as_os_str();
    let extra = [
        "--format".as_ref(),
        "json".as_ref(),
        "--summary-file".as_ref(),
        summary_arg,
    ];
    let (mut strike, reader) = start_strike(
        ctx,
        port,
        &extra,
        fs::File::create(&records_path)?.into(),
        false,
    )?;
    let rps = wrk(port, seconds, script)?;
    signal(&strike.0, libc::SIGINT);
    if wait_for(&mut strike.0, Duration::from_secs(30))?.is_none() {
        bail!("strike trace did not stop within 30 s of SIGINT");
    }
    let _ = reader.join();
    let records = fs::read_to_string(&records_path)?;
    let partial = records
        .lines()
        .filter(|l| l.contains("\"partial\":true"))
        .count() as u64;
    let summary: serde_json::Value = serde_json::from_slice(&fs::read(&summary_path)?)?;
    let get = |a: &str, b: &str| summary[a][b].as_u64().unwrap_or(0);
    let lost = get("kernel", "ringbuf_full")
        + get("pipeline", "events_dropped")
        + get("pipeline", "records_dropped")
        + get("stream", "gaps");
    Ok((rps, records.lines().count() as u64, partial, lost))
}
