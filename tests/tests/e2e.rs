//! Privileged end-to-end tests: a real inference server, real concurrent load, `strike trace`
//! attached to the server's port, and an exact comparison of every request.
//!
//! Run through `cargo xtask test` (root, kernel BTF, binaries built and located by env vars;
//! see `strike_tests::env`). Without those they skip with a printed reason, except under
//! `CI=true`, where that is a failure.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use strike_tests::check;
use strike_tests::env::{self, e2e_env, Need};
use strike_tests::load::{run_load, Usage};
use strike_tests::native;
use strike_tests::process::{Launch, Strike};
use strike_tests::scenario::trace_and_check;
use strike_tests::servers;

/// Requests per load worker (8 workers).
const PER_WORKER: usize = 25;

#[test]
#[ignore = "privileged (root, BTF): run through `cargo xtask test`"]
fn llama_server() -> Result<()> {
    let Some(env) = e2e_env("e2e llama-server", &[Need::LlamaServer]) else {
        return Ok(());
    };
    let dir = servers::work_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "e2e-llama-server")?;
    let service = servers::start_llama_server(&env, &dir)?;
    let plan = servers::llama_plan(&service, PER_WORKER);
    let strike_bin = env.strike_bin.clone().context("no strike path")?;
    trace_and_check(
        "llama-server",
        &Launch::Host(strike_bin),
        &dir,
        service,
        &plan,
        None,
        0.0,
    )
}

#[test]
#[ignore = "privileged (root, BTF): run through `cargo xtask test`"]
fn uvicorn_openai_app() -> Result<()> {
    let Some(env) = e2e_env("e2e uvicorn-app", &[Need::PythonApp]) else {
        return Ok(());
    };
    let dir = servers::work_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "e2e-uvicorn-app")?;
    let token_delay_ms = 2.0;
    let (service, app_log) = servers::start_openai_app(&env, &dir, token_delay_ms)?;
    // uvloop's timers have millisecond resolution and may fire up to ~1 ms early.
    let min_ms_per_token = token_delay_ms - 1.0;
    let plan = servers::app_plan(&service, PER_WORKER);
    let strike_bin = env.strike_bin.clone().context("no strike path")?;
    trace_and_check(
        "uvicorn-app",
        &Launch::Host(strike_bin),
        &dir,
        service,
        &plan,
        Some(&app_log),
        min_ms_per_token,
    )
}

/// One large exchange sent with curl (which says `Expect: 100-continue` before a large
/// body, and may ask for compression).
struct Large {
    what: &'static str,
    path: &'static str,
    body: serde_json::Value,
    stream: bool,
    compressed: bool,
}

/// The response id curl got back (the first stream event's, or the body's).
fn curl(url: &str, dir: &Path, large: &Large) -> Result<String> {
    let req = dir.join("large-request.json");
    std::fs::write(&req, serde_json::to_vec(&large.body)?)?;
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--fail", "--max-time", "120"])
        .args(["-H", "content-type: application/json"])
        .args(["-H", "expect: 100-continue"])
        .arg("--data-binary")
        .arg(format!("@{}", req.display()))
        .arg(url);
    if large.compressed {
        cmd.arg("--compressed");
    }
    let out = cmd.output().context("running curl")?;
    ensure!(
        out.status.success(),
        "{}: curl {}: {}",
        large.what,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let first = if large.stream {
        text.lines()
            .find_map(|l| l.strip_prefix("data: "))
            .context("no stream event")?
            .to_owned()
    } else {
        text
    };
    let v: serde_json::Value = serde_json::from_str(&first)?;
    Ok(v["id"].as_str().context("no id")?.to_owned())
}

/// The exchanges of [`uvicorn_large_bodies`].
fn large_cases() -> Vec<Large> {
    // 8 MB of prompt: 1.6 M words the app counts one token each.
    let words = "alpha beta gamma delta ".repeat(400_000);
    let chat = |content: &str, max_tokens: u32, stream: bool| {
        serde_json::json!({
            "model": servers::APP_MODEL, "max_tokens": max_tokens, "stream": stream,
            "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": content}],
        })
    };
    vec![
        Large {
            what: "8 MB prompt, whole response",
            path: "/v1/chat/completions",
            body: chat(&words, 16, false),
            stream: false,
            compressed: false,
        },
        Large {
            what: "8 MB prompt, streamed",
            path: "/v1/chat/completions",
            body: chat(&words, 16, true),
            stream: true,
            compressed: false,
        },
        Large {
            what: "30,000-token stream without usage",
            path: "/v1/completions",
            body: serde_json::json!({"model": servers::APP_MODEL, "prompt": "count on", "max_tokens": 30_000, "stream": true}),
            stream: true,
            compressed: false,
        },
        Large {
            what: "30,000-token whole response, gzip",
            path: "/v1/chat/completions",
            body: chat("count on", 30_000, false),
            stream: false,
            compressed: true,
        },
        Large {
            what: "30,000-token whole response",
            path: "/v1/chat/completions",
            body: chat("count on", 30_000, false),
            stream: false,
            compressed: false,
        },
        Large {
            what: "300,000-token whole response (2.9 MB), gzip",
            path: "/v1/chat/completions",
            body: chat("count on", 300_000, false),
            stream: false,
            compressed: true,
        },
    ]
}

/// What is wrong with the records of [`large_cases`] (`ids`: the response ids curl got).
fn large_problems(
    cases: &[Large],
    ids: &[String],
    records: &[serde_json::Value],
    app: &HashMap<String, Usage>,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for (case, id) in cases.iter().zip(ids) {
        let Some(r) = records.iter().find(|r| r["response_id"] == id.as_str()) else {
            problems.push(format!("{}: no record with id {id}", case.what));
            continue;
        };
        let want = app.get(id).context("the app did not log the request")?;
        let got = (r["input_tokens"].as_u64(), r["output_tokens"].as_u64());
        println!(
            "e2e uvicorn-large: {}: request {} B, response {} B, tokens {:?} (app: {}/{}), sources {}/{}, partial {}, ttft {} ms",
            case.what,
            r["request_bytes"],
            r["response_bytes"],
            got,
            want.prompt_tokens,
            want.completion_tokens,
            r["input_token_source"],
            r["output_token_source"],
            r["partial"],
            r["ttft_ms"]
        );
        if r["partial"] != false {
            problems.push(format!("{}: partial ({})", case.what, r["partial_reason"]));
        }
        // The stream without usage: its prompt is estimated (exact prompt counts are the
        // tokenizer's work), its output counted event by event.
        let exact_input = case.path != "/v1/completions";
        if got.1 != Some(want.completion_tokens)
            || (exact_input && got.0 != Some(want.prompt_tokens))
        {
            problems.push(format!(
                "{}: tokens {got:?}, the app counted {}/{}",
                case.what, want.prompt_tokens, want.completion_tokens
            ));
        }
        if case.stream && r["ttft_ms"].as_f64().is_none() {
            problems.push(format!("{}: no ttft", case.what));
        }
    }
    Ok(problems)
}

/// An 8 MB prompt, streamed and not; a 30,000-token stream with no usage in it; whole
/// responses of 30,000 tokens, compressed and not, and of 300,000 tokens (2.9 MB, gzip). Every record is
/// exact (the app's own counts) and not partial, and Strike's peak memory is printed.
#[test]
#[ignore = "privileged (root, BTF): run through `cargo xtask test`"]
fn uvicorn_large_bodies() -> Result<()> {
    let Some(env) = e2e_env("e2e uvicorn-large", &[Need::PythonApp]) else {
        return Ok(());
    };
    let dir = servers::work_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "e2e-uvicorn-large")?;
    let (mut service, app_log) = servers::start_openai_app(&env, &dir, 0.0)?;
    let strike_bin = env.strike_bin.as_deref().context("no strike path")?;
    // A whole response is one write(2) of the server's: capture up to 1 MiB of each (the
    // largest cap), so that the 300,000-token one (670 KB compressed) is seen whole.
    let strike = Strike::start_with(
        strike_bin,
        service.port,
        &["--max-capture-bytes", "1048576"],
        &dir,
        Duration::from_secs(90),
    )?;
    let before = strike.memory_kib();
    let cases = large_cases();
    let mut ids = Vec::new();
    for case in &cases {
        let url = format!("{}{}", service.base_url(), case.path);
        ids.push(curl(&url, &dir, case)?);
    }
    let written = strike.wait_for_records(cases.len(), Duration::from_mins(1));
    let after = strike.memory_kib();
    let out = strike.finish(Duration::from_secs(30))?;
    service.stop()?;
    ensure!(out.status.success(), "strike exited with {}", out.status);
    println!("strike summary: {}", out.summary);
    if let (Some((rss0, _)), Some((rss, peak))) = (before, after) {
        println!(
            "e2e uvicorn-large: strike memory: {} MiB resident after attaching, {} MiB at the end, {} MiB peak",
            rss0 / 1024,
            rss / 1024,
            peak / 1024
        );
    }
    let app = check::read_app_log(&app_log)?;
    let mut problems = check::summary_problems(&out.summary, out.records.len());
    if written < cases.len() {
        problems.push(format!("{written} of {} records", cases.len()));
    }
    problems.extend(large_problems(&cases, &ids, &out.records, &app)?);
    let elided = out
        .summary
        .pointer("/tracker/bodies_elided")
        .and_then(serde_json::Value::as_u64);
    if elided < Some(3) {
        problems.push(format!(
            "bodies_elided = {elided:?}: the 8 MB prompts and the 2.9 MB response were not read past the bound"
        ));
    }
    ensure!(problems.is_empty(), "e2e uvicorn-large: {problems:#?}");
    Ok(())
}

/// The native APIs' shapes (TGI, Triton, rerank, score, `count_tokens`) and bodiless responses
/// (HEAD, 204, 304), concurrent on kept-alive connections, half of them asking for gzip: every
/// request has exactly one record with its api and status, exact counts where the server
/// gives them, and a TTFT exactly when something is generated. Then a WebSocket upgrade
/// (101): one record, and the connection counted as upgraded.
#[test]
#[ignore = "privileged (root, BTF): run through `cargo xtask test`"]
fn uvicorn_native_apis() -> Result<()> {
    let Some(env) = e2e_env("e2e uvicorn-native", &[Need::PythonApp]) else {
        return Ok(());
    };
    let dir = servers::work_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "e2e-uvicorn-native")?;
    let (mut service, app_log) = servers::start_openai_app(&env, &dir, 1.0)?;
    let strike_bin = env.strike_bin.as_deref().context("no strike path")?;
    let strike = Strike::start(strike_bin, service.port, &dir, Duration::from_secs(90))?;
    let sent = native::run_native(&service.base_url(), 6, 30)?;
    let (ws_trace, echo) = native::websocket_exchange(service.port)?;
    println!("e2e uvicorn-native: websocket echo {echo}");
    let written = strike.wait_for_records(sent.len() + 1, Duration::from_mins(1));
    let out = strike.finish(Duration::from_secs(30))?;
    service.stop()?;
    ensure!(out.status.success(), "strike exited with {}", out.status);
    println!("strike summary: {}", out.summary);
    let app = check::read_app_log(&app_log)?;
    let (rows, mut problems) = native::native_problems(&sent, &out.records, &app);
    println!(
        "e2e uvicorn-native: kind | sent | records | exact input | exact output | ttft | gzip"
    );
    for (kind, r) in &rows {
        println!(
            "e2e uvicorn-native: {kind:?} | {} | {} | {} | {} | {} | {}",
            r.sent, r.records, r.exact_input, r.exact_output, r.ttft, r.compressed
        );
    }
    problems.extend(check::summary_problems(&out.summary, out.records.len()));
    if written != sent.len() + 1 || out.records.len() != sent.len() + 1 {
        problems.push(format!(
            "{} requests and a websocket, {} records",
            sent.len(),
            out.records.len()
        ));
    }
    // The upgrade: one record (101, api=other), the connection counted as upgraded, the
    // frames after it not read as HTTP.
    let ws: Vec<_> = out
        .records
        .iter()
        .filter(|r| r["traceparent"].as_str().and_then(|t| t.get(3..35)) == Some(&ws_trace))
        .collect();
    match ws.as_slice() {
        [r] if r["status"] == 101 && r["api"] == "other" && r["partial"] == false => {}
        other => problems.push(format!("the websocket's records: {other:?}")),
    }
    let upgraded = out.summary.pointer("/tracker/upgraded_connections");
    if upgraded.and_then(serde_json::Value::as_u64) != Some(1) {
        problems.push(format!(
            "tracker.upgraded_connections = {upgraded:?}, expected 1"
        ));
    }
    if !rows.iter().any(|(_, r)| r.compressed > 0) {
        problems.push("no response came compressed".to_owned());
    }
    ensure!(
        problems.is_empty(),
        "e2e uvicorn-native: {} problems: {:#?}",
        problems.len(),
        &problems[..problems.len().min(25)]
    );
    Ok(())
}

/// As a non-root uid holding every capability it needs but `CAP_BPF`, and then none, `strike
/// trace` and `strike run` stop in their preflight with exit status 1 and a message that
/// names each missing capability and how to grant it; nothing panics, nothing is loaded.
#[test]
#[ignore = "privileged (root, BTF): run through `cargo xtask test`"]
fn preflight_names_missing_capabilities() -> Result<()> {
    let Some(env) = e2e_env("e2e preflight", &[]) else {
        return Ok(());
    };
    let strike_bin = env.strike_bin.as_deref().context("no strike path")?;
    let without_bpf: Vec<&str> = env::STRIKE_CAPS
        .iter()
        .copied()
        .filter(|&c| c != "bpf")
        .collect();
    let everything = [
        "CAP_BPF (",
        "CAP_PERFMON (",
        "CAP_DAC_READ_SEARCH (",
        "CAP_SYS_PTRACE (",
    ];
    let cases: [(&[&str], &[&str]); 2] = [(&without_bpf, &everything[..1]), (&[], &everything)];
    let mut problems = Vec::new();
    for (caps, named) in cases {
        for sub in ["trace", "run"] {
            let out = std::process::Command::new(env::SETPRIV)
                .args(env::setpriv_args(env::UNPRIVILEGED_UID, caps))
                .arg(strike_bin)
                .args([sub, "--port", "1", "--gpu", "off"])
                .output()
                .context("running strike through setpriv")?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            println!(
                "e2e preflight: `strike {sub}` with {caps:?}: {}: {stderr}",
                out.status
            );
            let case = format!("strike {sub} with {caps:?}");
            if out.status.code() != Some(1) {
                problems.push(format!("{case}: exit {}, not 1", out.status));
            }
            if !stderr.starts_with("strike: missing capabilities: ") {
                problems.push(format!("{case}: not the preflight message: {stderr}"));
            }
            for cap in everything {
                if stderr.contains(cap) != named.contains(&cap) {
                    problems.push(format!("{case}: {cap}.. named wrongly: {stderr}"));
                }
            }
            for fix in ["sudo strike", "setcap cap_bpf,", "capabilities.add: [BPF,"] {
                if !stderr.contains(fix) {
                    problems.push(format!("{case}: no `{fix}` in {stderr}"));
                }
            }
            if stderr.contains("panicked") || stderr.contains("attached") {
                problems.push(format!("{case}: {stderr}"));
            }
        }
    }
    ensure!(problems.is_empty(), "e2e preflight: {problems:#?}");
    Ok(())
}

/// Hostile clients against the uvicorn app under `strike run`, all at once and alongside an
/// ordinary load: 500 half-open connections held throughout, a 130-field head followed by
/// five requests on its connection, 300 requests with distinct 64 KiB model names, a request
/// trickled a byte at a time, 20 connections of random bytes, garbage pipelined after a
/// request, 10 streams reset mid-way. Every ordinary request (the load's and those the
/// hostile clients send among their garbage) has exactly one exact record; Strike's memory
/// stays under [`HOSTILE_RSS_MIB`]; `/healthz` answers 200 throughout; what was refused or
/// bounded is counted (not-HTTP connections, label overflows).
#[test]
#[ignore = "privileged (root, BTF): run through `cargo xtask test`"]
fn uvicorn_hostile_clients() -> Result<()> {
    use strike_tests::hostile;
    use strike_tests::process::{free_port, http_get};

    let Some(env) = e2e_env("e2e uvicorn-hostile", &[Need::PythonApp]) else {
        return Ok(());
    };
    let dir = servers::work_dir(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "e2e-uvicorn-hostile",
    )?;
    let (mut service, app_log) = servers::start_openai_app(&env, &dir, 1.0)?;
    let strike_bin = env.strike_bin.as_deref().context("no strike path")?;
    let port = service.port;
    let listen = free_port()?;
    let (listen_arg, port_arg) = (format!("127.0.0.1:{listen}"), port.to_string());
    let strike = Strike::start_run(
        strike_bin,
        &["--port", &port_arg, "--no-otlp", "--listen", &listen_arg],
        &[],
        &dir,
        Duration::from_secs(90),
    )?;
    let before = strike.memory_kib();
    let health = hostile::HealthPoller::start(listen);
    let half_open = hostile::half_open(port, 500)?;
    let hostiles = hostile::spawn_hostiles(port);
    let mut plan = servers::app_plan(&service, 5);
    plan.trace_salt = Some(0x4057);
    let sent = run_load(&plan)?;
    let outcome = hostiles
        .join()
        .map_err(|_| anyhow::anyhow!("the hostile clients panicked"))??;
    drop(half_open);
    let want = sent.len() + outcome.answered.len() + outcome.giant_models;
    let written = strike.wait_for_records(want, Duration::from_mins(1));
    let t = Instant::now();
    let (metrics_status, metrics) = http_get(listen, "/metrics")?;
    let metrics_ms = t.elapsed().as_millis();
    let status: serde_json::Value = serde_json::from_str(&http_get(listen, "/v1/status")?.1)?;
    let (_, served) = http_get(listen, "/v1/requests?limit=10000")?;
    let (health_ok, health_bad) = health.stop();
    let after = strike.memory_kib();
    let out = strike.finish(Duration::from_secs(30))?;
    service.stop()?;
    ensure!(out.status.success(), "strike exited with {}", out.status);
    println!("strike summary: {}", out.summary);

    // The ordinary load: matched by response id, exact against the app's own counts.
    let app = check::read_app_log(&app_log)?;
    let ids: std::collections::HashSet<&str> = sent
        .iter()
        .filter_map(|s| s.response_id.as_deref())
        .collect();
    let ordinary: Vec<serde_json::Value> = out
        .records
        .iter()
        .filter(|r| r["response_id"].as_str().is_some_and(|id| ids.contains(id)))
        .cloned()
        .collect();
    let report = check::compare(&sent, &ordinary, Some(&app));
    let mut problems = report.problems.clone();
    problems.extend(hostile::problems(
        &outcome,
        &out.records,
        &out.summary,
        &status,
    ));
    if written < want {
        problems.push(format!(
            "{written} records written, {want} expected at least"
        ));
    }
    let records_text = std::fs::read_to_string(dir.join("records.jsonl"))?;
    problems.extend(hostile::secret_problems(&served, &metrics, &records_text));
    problems.extend(hostile_limits(
        before,
        after,
        (metrics_status, metrics.len(), metrics_ms),
        (health_ok, &health_bad),
    ));
    println!(
        "e2e uvicorn-hostile: {}",
        hostile::counted(&out.summary, &status)
    );
    println!(
        "e2e uvicorn-hostile: {} ordinary requests matched {} of them, {} sent among garbage, {} giant models; {}",
        sent.len(),
        report.matched,
        outcome.answered.len(),
        outcome.giant_models,
        report.counts()
    );
    ensure!(
        problems.is_empty(),
        "e2e uvicorn-hostile: {} problems: {:#?}",
        problems.len(),
        &problems[..problems.len().min(25)]
    );
    Ok(())
}

/// What is wrong with Strike's memory, `/metrics` and `/healthz` in the hostile test
/// (memory as [`Strike::memory_kib`] read it before and after; `/metrics` as status, bytes
/// and milliseconds; `/healthz` as 200s and other answers).
fn hostile_limits(
    before: Option<(u64, u64)>,
    after: Option<(u64, u64)>,
    (metrics_status, metrics_len, metrics_ms): (u16, usize, u128),
    (health_ok, health_bad): (u32, &[String]),
) -> Vec<String> {
    let mut problems = Vec::new();
    // Bounded by the labels' bounds: 128 values of at most 128 characters per label (the
    // server echoes each giant model name, so each is a server-reported one).
    if metrics_status != 200 || metrics_len > 8 << 20 {
        problems.push(format!(
            "/metrics: status {metrics_status}, {metrics_len} bytes"
        ));
    }
    if !health_bad.is_empty() {
        problems.push(format!(
            "/healthz failed {} times (ok {health_ok}): {:?}",
            health_bad.len(),
            &health_bad[..health_bad.len().min(5)]
        ));
    }
    if let (Some((rss0, _)), Some((rss, peak))) = (before, after) {
        println!(
            "e2e uvicorn-hostile: strike memory: {} MiB after attaching, {} MiB at the end, {} MiB peak; /metrics {} KiB in {metrics_ms} ms; /healthz ok {health_ok} times",
            rss0 / 1024,
            rss / 1024,
            peak / 1024,
            metrics_len / 1024
        );
        if peak / 1024 > HOSTILE_RSS_MIB {
            problems.push(format!(
                "strike's peak RSS {} MiB is over {HOSTILE_RSS_MIB} MiB",
                peak / 1024
            ));
        }
    }
    problems
}

/// The peak resident memory Strike may reach under the hostile test: a quarter of the
/// `DaemonSet`'s 512 MiB limit.
const HOSTILE_RSS_MIB: u64 = 128;

/// Requests `tests/gpu/load.py` makes: 4 sequential, 4 pairs, a burst of 8, 2 at the tail.
const GPU_PROOF_REQUESTS: usize = 22;

/// The GPU proof's run half (`tests/gpu/run.sh`, docs/GPU-PROOF.md) in fake mode: its server
/// with the CPU model, `strike run --gpu off` against it, its load and `check.py`. Proves
/// everything but NVML here: every request has one record with the client's numbers exactly.
#[test]
#[ignore = "privileged (root, BTF): run through `cargo xtask test`"]
fn gpu_proof_fake() -> Result<()> {
    let Some(env) = e2e_env("e2e gpu-proof-fake", &[Need::PythonApp]) else {
        return Ok(());
    };
    let dir = servers::work_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "e2e-gpu-proof")?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("gpu/run.sh");
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&script)
        .env("OUT", &dir)
        .env("GPU_PROOF_MODE", "fake")
        .env(
            "STRIKE_BIN",
            env.strike_bin.as_deref().context("no strike")?,
        )
        .env("PYTHON", env.python.as_deref().context("no python")?)
        .env("GPU_PROOF_PORT", "18391")
        .env("GPU_PROOF_STRIKE_PORT", "19391");
    if env::unprivileged() {
        // strike writes its summary into OUT as the unprivileged uid.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
        let mut prefix = vec![env::SETPRIV.to_owned()];
        prefix.extend(env::setpriv_args(env::UNPRIVILEGED_UID, env::STRIKE_CAPS));
        cmd.env("STRIKE_PREFIX", prefix.join(" "));
    }
    let out = cmd.output().context("running tests/gpu/run.sh")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    ensure!(
        out.status.success(),
        "run.sh failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json"))?)?;
    ensure!(summary["ok"] == true, "summary not ok: {summary}");
    let status = |name: &str| {
        summary["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .map(|c| c["status"].clone())
    };
    ensure!(status("records_exact") == Some("pass".into()), "{summary}");
    ensure!(status("no_gpu_fields") == Some("pass".into()), "{summary}");
    // Beside check.py's own verdict: the record and client files, read here.
    let lines = |name: &str| -> Result<Vec<serde_json::Value>> {
        std::fs::read_to_string(dir.join(name))?
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).context("a JSON line"))
            .collect()
    };
    let client = lines("client.jsonl")?;
    let records = lines("records.jsonl")?;
    ensure!(
        client.len() == GPU_PROOF_REQUESTS,
        "{} requests",
        client.len()
    );
    ensure!(
        records.len() == GPU_PROOF_REQUESTS,
        "{} records",
        records.len()
    );
    let by_id: HashMap<&str, &serde_json::Value> = records
        .iter()
        .filter_map(|r| Some((r["response_id"].as_str()?, r)))
        .collect();
    let server_pid: u64 = std::fs::read_to_string(dir.join("server.pid"))?
        .trim()
        .parse()?;
    for c in &client {
        let id = c["response_id"].as_str().context("client without id")?;
        let r = by_id
            .get(id)
            .with_context(|| format!("no record of {id}"))?;
        ensure!(r["output_tokens"] == c["max_tokens"], "{id}: {r}");
        ensure!(
            r["input_tokens"] == c["usage"]["prompt_tokens"],
            "{id}: {r}"
        );
        ensure!(
            r["stream"] == c["stream"] && r["status"] == 200,
            "{id}: {r}"
        );
        ensure!(
            r["pid"] == server_pid,
            "{id}: pid {} != {server_pid}",
            r["pid"]
        );
        if c["stream"] == true {
            ensure!(
                r["content_events"] == c["content_events"],
                "{id}: content events {} != {}",
                r["content_events"],
                c["content_events"]
            );
        }
    }
    Ok(())
}
