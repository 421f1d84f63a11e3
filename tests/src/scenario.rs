//! One scenario the end-to-end suites share: trace a server under load, then compare every
//! request with its record (`tests/tests/e2e.rs` with `strike` on the host, `image.rs` with
//! `strike` in its container).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};

use crate::check;
use crate::load::{self, run_load, LoadPlan, Usage};
use crate::process::{Launch, Service, Strike};

/// Records may not end later than the client saw the last byte, give or take this much.
pub const TIMING_SLACK_MS: f64 = 50.0;
/// Traces `service` with strike (started by `launch`) while `plan` runs, then checks every
/// request: each has its record with the server's own token counts and ids, the summary
/// agrees, and the timings are those the client saw.
///
/// # Errors
/// Every disagreement, listed.
pub fn trace_and_check(
    name: &str,
    launch: &Launch,
    dir: &Path,
    mut service: Service,
    plan: &LoadPlan,
    app_log: Option<&Path>,
    min_ms_per_token: f64,
) -> Result<()> {
    let strike = Strike::trace(launch, service.port, &[], dir, Duration::from_secs(90))?;
    let t0 = Instant::now();
    let sent = run_load(plan)?;
    println!(
        "{name}: sent {} requests ({} workers) in {:.2} s ({} resent: the server had closed the kept-alive connection)",
        sent.len(),
        plan.workers,
        t0.elapsed().as_secs_f64(),
        load::retries(&sent)
    );
    // Every request the server read gets a record (a resent one too: the server read it and
    // never answered); wait for them rather than for a fixed time.
    let expected = sent.len() + load::retries(&sent) as usize;
    let written = strike.wait_for_records(expected, Duration::from_mins(1));
    if written < expected {
        println!("{name}: only {written} of {expected} records before SIGINT");
    }
    let out = strike.finish(Duration::from_secs(30))?;
    service.stop()?;
    println!(
        "strike: exited {} {:.2} s after SIGINT",
        out.status,
        out.stopped_in.as_secs_f64()
    );
    println!("strike summary: {}", out.summary);
    ensure!(
        out.status.success(),
        "strike trace exited with {} after SIGINT",
        out.status
    );
    ensure!(
        out.bad_lines.is_empty(),
        "stdout lines that are not JSON objects: {:?}",
        out.bad_lines
    );

    let app_log: Option<HashMap<String, Usage>> = app_log.map(check::read_app_log).transpose()?;
    let report = check::compare(&sent, &out.records, app_log.as_ref());
    println!("e2e {name}: {}", report.counts());
    println!("{}", check::table(&format!("e2e {name}:"), &sent, &report));
    println!("{}", check::samples(&report, 8));
    let mut problems = report.problems.clone();
    problems.extend(check::server_problems(&sent, app_log.as_ref()));
    problems.extend(check::summary_problems(&out.summary, out.records.len()));
    problems.extend(check::timing_problems(
        &report,
        min_ms_per_token,
        TIMING_SLACK_MS,
    ));
    problems.extend(compression_problems(name, plan, &sent, &out.records));
    let failed = check::Report {
        problems,
        ..check::Report::default()
    };
    ensure!(
        failed.problems.is_empty(),
        "e2e {name}: {}",
        failed.problems_text(25)
    );
    Ok(())
}

/// When the plan asks for gzip: some responses came compressed, and each of those has its
/// record with the response's id and the server's own token counts (Strike decoded it).
fn compression_problems(
    name: &str,
    plan: &LoadPlan,
    sent: &[load::Sent],
    records: &[serde_json::Value],
) -> Vec<String> {
    if plan.gzip_workers == 0 {
        return Vec::new();
    }
    let by_id: HashMap<&str, &serde_json::Value> = records
        .iter()
        .filter_map(|r| Some((r.get("response_id")?.as_str()?, r)))
        .collect();
    let compressed: Vec<&load::Sent> = sent.iter().filter(|s| s.compressed).collect();
    let exact = compressed
        .iter()
        .filter(|s| {
            let (Some(id), Some(usage)) = (s.response_id.as_deref(), s.usage) else {
                return false;
            };
            by_id.get(id).is_some_and(|r| {
                r["input_tokens"].as_u64() == Some(usage.prompt_tokens)
                    && r["output_tokens"].as_u64() == Some(usage.completion_tokens)
                    && r["partial"] == false
            })
        })
        .count();
    println!(
        "e2e {name}: gzip: {} responses compressed, {exact} of them recorded with their id and exact tokens",
        compressed.len()
    );
    let mut problems = Vec::new();
    if compressed.is_empty() {
        problems.push(format!(
            "{} workers asked for gzip but no response came compressed",
            plan.gzip_workers
        ));
    }
    if exact < compressed.len() {
        problems.push(format!(
            "{} compressed responses without their exact record",
            compressed.len() - exact
        ));
    }
    problems
}
