//! The harness against the real servers, without strike and without privileges: the load
//! generator's parsing and the servers' own reports (usage, llama.cpp timings, the app's log)
//! must agree with each other and with what the e2e assertions rely on. Runs in
//! `cargo xtask test`'s unit stage (which sets the server paths); skips with a printed reason
//! elsewhere, except under `CI=true`.

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Result};
use strike_tests::check;
use strike_tests::env::{peers_env, Need};
use strike_tests::load::{self, run_load};
use strike_tests::servers;

#[test]
fn load_against_llama_server() -> Result<()> {
    let Some(env) = peers_env("harness llama-server", &[Need::LlamaServer]) else {
        return Ok(());
    };
    let dir = servers::work_dir(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "harness-llama-server",
    )?;
    let mut service = servers::start_llama_server(&env, &dir)?;
    let t = Instant::now();
    let sent = run_load(&servers::llama_plan(&service, 6))?;
    println!(
        "harness llama-server: {} requests in {:.2} s ({} resent: the server had closed the kept-alive connection)",
        sent.len(),
        t.elapsed().as_secs_f64(),
        load::retries(&sent)
    );
    service.stop()?;
    let problems = check::server_problems(&sent, None);
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    ensure!(
        sent.iter()
            .any(|s| s.usage.is_none() && s.timings.is_some()),
        "no request relied on timings alone"
    );
    Ok(())
}

#[test]
fn load_against_uvicorn_app() -> Result<()> {
    let Some(env) = peers_env("harness uvicorn-app", &[Need::PythonApp]) else {
        return Ok(());
    };
    let dir = servers::work_dir(
        Path::new(env!("CARGO_TARGET_TMPDIR")),
        "harness-uvicorn-app",
    )?;
    let (mut service, log) = servers::start_openai_app(&env, &dir, 0.0)?;
    let t = Instant::now();
    let sent = run_load(&servers::app_plan(&service, 6))?;
    println!(
        "harness uvicorn-app: {} requests in {:.2} s ({} resent: the server had closed the kept-alive connection)",
        sent.len(),
        t.elapsed().as_secs_f64(),
        load::retries(&sent)
    );
    service.stop()?;
    let app_log = check::read_app_log(&log)?;
    ensure!(
        app_log.len() == sent.len(),
        "the app logged {} requests, {} were sent",
        app_log.len(),
        sent.len()
    );
    let problems = check::server_problems(&sent, Some(&app_log));
    ensure!(problems.is_empty(), "{}", problems.join("\n"));
    ensure!(
        sent.iter().any(|s| s.kind.stream() && s.usage.is_none()),
        "no stream without usage: the app log was never needed"
    );
    Ok(())
}
