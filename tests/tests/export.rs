//! Privileged end-to-end test of `strike run`: a real inference server (llama-server), real
//! load, and a real OpenTelemetry collector (rotel) receiving Strike's spans and metrics over
//! OTLP/gRPC, killed in the middle of the traffic and started again.
//!
//! What it shows (the `export e2e` lines of the CI log): every request's span arrives once,
//! with the server's numbers and the client's trace; spans of the outage are counted as
//! failed, never silently lost; the collector hears about the failures once it is back;
//! Prometheus `/metrics` and the record-by-id endpoint agree with what was sent.
//!
//! Run through `cargo xtask test`; see `strike_tests::env` for the variables.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;
use strike_tests::check::server_counts;
use strike_tests::collector::{read_sink, wait_for, Rotel};
use strike_tests::env::{e2e_env, Need};
use strike_tests::load::{retries, run_load, Kind, LoadPlan, Sent};
use strike_tests::process::{free_port, http_get, Strike};
use strike_tests::servers::{self, LLAMA_MODEL_ALIAS};

/// Spans of one sink, by `gen_ai.response.id`.
fn spans_by_response_id(lines: &[Value]) -> HashMap<String, Vec<Value>> {
    let mut out: HashMap<String, Vec<Value>> = HashMap::new();
    for l in lines.iter().filter(|l| l["type"] == "span") {
        if let Some(id) = l["attributes"]["gen_ai.response.id"].as_str() {
            out.entry(id.to_owned()).or_default().push(l.clone());
        }
    }
    out
}

fn answered(sent: &[Sent]) -> impl Iterator<Item = (&Sent, &str)> {
    sent.iter()
        .filter(|s| s.status == 200 && s.error.is_none())
        .filter_map(|s| Some((s, s.response_id.as_deref()?)))
}

fn want(p: &mut Vec<String>, what: &str, got: &Value, expected: &Value) {
    if got != expected {
        p.push(format!("{what}: {got} != {expected}"));
    }
}

/// What is wrong with the span of `sent`, if anything.
#[expect(clippy::too_many_lines, reason = "one check per attribute")]
fn span_problems(sent: &Sent, span: &Value, server_port: u16) -> Vec<String> {
    let mut p = Vec::new();
    let a = &span["attributes"];
    let op = match sent.kind {
        Kind::Chat { .. } | Kind::Messages { .. } => "chat",
        Kind::Completion { .. } => "text_completion",
        Kind::Embeddings => "embeddings",
    };
    want(
        &mut p,
        "name",
        &span["name"],
        &format!("{op} {LLAMA_MODEL_ALIAS}").into(),
    );
    want(&mut p, "kind", &span["kind"], &2.into());
    want(
        &mut p,
        "gen_ai.operation.name",
        &a["gen_ai.operation.name"],
        &op.into(),
    );
    want(
        &mut p,
        "gen_ai.provider.name",
        &a["gen_ai.provider.name"],
        &"openai".into(),
    );
    want(
        &mut p,
        "gen_ai.system",
        &a["gen_ai.system"],
        &"openai".into(),
    );
    want(
        &mut p,
        "gen_ai.request.model",
        &a["gen_ai.request.model"],
        &LLAMA_MODEL_ALIAS.into(),
    );
    want(
        &mut p,
        "gen_ai.request.stream",
        &a["gen_ai.request.stream"],
        &sent.kind.stream().into(),
    );
    want(
        &mut p,
        "gen_ai.request.max_tokens",
        &a["gen_ai.request.max_tokens"],
        &sent.max_tokens.into(),
    );
    want(
        &mut p,
        "server.port",
        &a["server.port"],
        &server_port.into(),
    );
    want(
        &mut p,
        "server.address",
        &a["server.address"],
        &"127.0.0.1".into(),
    );
    want(
        &mut p,
        "strike.partial",
        &a["strike.partial"],
        &false.into(),
    );
    if let Some(expected) = server_counts(sent, None) {
        want(
            &mut p,
            "gen_ai.usage.input_tokens",
            &a["gen_ai.usage.input_tokens"],
            &expected.input.into(),
        );
        want(
            &mut p,
            "gen_ai.usage.output_tokens",
            &a["gen_ai.usage.output_tokens"],
            &expected.output.into(),
        );
    } else {
        p.push("the server reported no token counts".to_owned());
    }
    if !a["gen_ai.response.finish_reasons"].is_array() {
        p.push(format!(
            "finish_reasons {}",
            a["gen_ai.response.finish_reasons"]
        ));
    }
    want(
        &mut p,
        "trace_id",
        &span["trace_id"],
        &sent.trace_id().unwrap_or_default().into(),
    );
    want(
        &mut p,
        "parent_span_id",
        &span["parent_span_id"],
        &sent.parent_span_id().unwrap_or_default().into(),
    );
    let first_token = span["events"]
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e["name"] == "gen_ai.first_token"));
    if sent.kind.stream() && !first_token {
        p.push("no gen_ai.first_token event".to_owned());
    }
    if span["end"].as_u64() < span["start"].as_u64() {
        p.push("ends before it starts".to_owned());
    }
    p
}

/// The newest cumulative value of each series of `name` in `lines`, summed (`count` for
/// histograms, `value` for sums), over the series whose attributes include `filter`.
fn latest_total(lines: &[Value], name: &str, filter: Option<(&str, &str)>) -> Option<f64> {
    let mut newest: HashMap<String, (u64, f64)> = HashMap::new();
    for l in lines
        .iter()
        .filter(|l| l["type"] == "metric" && l["name"] == name)
    {
        if let Some((k, v)) = filter {
            if l["attributes"][k] != v {
                continue;
            }
        }
        let t = l["time"].as_u64().unwrap_or(0);
        let v = l["count"]
            .as_f64()
            .or_else(|| l["value"].as_f64())
            .unwrap_or(0.0);
        let key = l["attributes"].to_string();
        if newest.get(&key).is_none_or(|(old, _)| t >= *old) {
            newest.insert(key, (t, v));
        }
    }
    (!newest.is_empty()).then(|| newest.values().map(|(_, v)| v).sum())
}

/// Sum of the Prometheus samples of `metric` (exact name, any labels).
fn prometheus_sum(text: &str, metric: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(metric))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
#[ignore = "privileged (root, BTF): run through `cargo xtask test`"]
#[expect(clippy::too_many_lines, reason = "one scenario, read top to bottom")]
#[expect(
    clippy::cast_precision_loss,
    clippy::float_cmp,
    reason = "request counts are small integers, exact in f64"
)]
fn spans_and_metrics_reach_a_real_collector_through_an_outage() -> Result<()> {
    let Some(env) = e2e_env("export e2e", &[Need::LlamaServer, Need::Rotel]) else {
        return Ok(());
    };
    let dir = servers::work_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "export-rotel")?;
    let agent = env.rotel_agent.as_deref().context("no rotel path")?;
    let strike_bin = env.strike_bin.as_deref().context("no strike path")?;
    let (grpc, http) = (free_port()?, free_port()?);
    let sink1 = dir.join("sink-1.jsonl");
    let sink2 = dir.join("sink-2.jsonl");
    let mut rotel = Rotel::start(agent, grpc, http, &sink1)?;
    let mut service = servers::start_llama_server(&env, &dir)?;
    let listen = free_port()?;
    // All three configuration layers: the file names the targets and the collector, the
    // environment the queue, a flag the endpoint's address.
    let config = dir.join("strike.yaml");
    std::fs::write(
        &config,
        format!(
            "targets:\n  ports: [{}]\notlp:\n  endpoint: http://127.0.0.1:{grpc}\n  protocol: grpc\n",
            service.port
        ),
    )?;
    let config_arg = config.to_string_lossy().into_owned();
    let listen_arg = format!("127.0.0.1:{listen}");
    let strike = Strike::start_run(
        strike_bin,
        &["--config", &config_arg, "--listen", &listen_arg],
        &[
            ("STRIKE_OTLP_QUEUE_SIZE", "512"),
            // Faster than the defaults, so the test sees exports within seconds.
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ("OTEL_SERVICE_NAME", "strike-e2e"),
        ],
        &dir,
        Duration::from_secs(90),
    )?;
    let plan = |salt: u64, per_worker: usize| LoadPlan {
        trace_salt: Some(salt),
        ..servers::llama_plan(&service, per_worker)
    };

    // 1. Collector up.
    let before = run_load(&plan(1, 10))?;
    let want: Vec<&str> = answered(&before).map(|(_, id)| id).collect();
    let seen = wait_for(&sink1, Duration::from_mins(1), |lines| {
        let spans = spans_by_response_id(lines);
        want.iter().all(|id| spans.contains_key(*id))
    });
    let spans_before = spans_by_response_id(&seen).len();
    println!(
        "export e2e: phase 1 (collector up): {} requests, {spans_before} spans at the collector",
        before.len()
    );

    // Prometheus and the record-by-id endpoint, while running.
    let (status, metrics) = http_get(listen, "/metrics")?;
    ensure!(status == 200, "/metrics answered {status}");
    let prom_requests = prometheus_sum(&metrics, "strike_requests_total");
    let (first, first_id) = answered(&before).next().context("no answered request")?;
    let (status, body) = http_get(listen, &format!("/v1/requests/{first_id}"))?;
    ensure!(
        status == 200,
        "/v1/requests/{first_id} answered {status}: {body}"
    );
    let record: Value = serde_json::from_str(&body).context("record is not JSON")?;
    ensure!(
        record["response_id"] == first_id
            && record["traceparent"] == first.traceparent.as_deref().unwrap_or_default(),
        "record by id: {record}"
    );

    // 2. Collector killed: traffic goes on.
    rotel.kill()?;
    let outage_started = Instant::now();
    let during = run_load(&plan(2, 5))?;
    // The batch processor tries, retries with backoff and gives up on the outage's spans:
    // wait until /v1/status counts them failed.
    let failed_live = {
        let started = Instant::now();
        loop {
            let (_, status_body) = http_get(listen, "/v1/status")?;
            let live: Value =
                serde_json::from_str(&status_body).context("/v1/status is not JSON")?;
            let failed = live["export"]["spans_failed"].as_u64().unwrap_or(0);
            if failed > 0 || started.elapsed() > Duration::from_mins(1) {
                break failed;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // 3. Collector back, on the same port, with a fresh sink.
    let mut rotel = Rotel::start(agent, grpc, http, &sink2)?;
    let outage = outage_started.elapsed();
    let after = run_load(&plan(3, 5))?;
    let expected: usize = [&before, &during, &after]
        .iter()
        .map(|s| s.len() + retries(s) as usize)
        .sum();
    let _ = strike.wait_for_records(expected, Duration::from_mins(1));
    let out = strike.finish_with(libc::SIGTERM, Duration::from_mins(1))?;
    service.stop()?;
    // rotel batches for ~200 ms before its processor writes: wait for the last phase's spans
    // and for Strike's final metrics (flushed at shutdown), which count every record.
    let want_after: Vec<&str> = answered(&after).map(|(_, id)| id).collect();
    let records = out.summary["pipeline"]["records"].as_f64();
    let _ = wait_for(&sink2, Duration::from_mins(1), |lines| {
        let spans = spans_by_response_id(lines);
        want_after.iter().all(|id| spans.contains_key(*id))
            && latest_total(lines, "strike.requests", None) == records
            && latest_total(
                lines,
                "strike.export.spans",
                Some(("strike.outcome", "failed")),
            )
            .is_some_and(|f| f >= 1.0)
    });
    rotel.stop()?;
    ensure!(
        out.status.success(),
        "strike run exited with {}",
        out.status
    );
    println!("strike summary: {}", out.summary);

    // Every span either collector received.
    let lines1 = read_sink(&sink1);
    let lines2 = read_sink(&sink2);
    let mut spans = spans_by_response_id(&lines1);
    for (id, s) in spans_by_response_id(&lines2) {
        spans.entry(id).or_default().extend(s);
    }
    // Spans with no response id: requests the server read but never answered (llama-server
    // closes kept-alive connections after a stream; the client resends), `no_response`.
    let received = [&lines1, &lines2]
        .iter()
        .map(|l| l.iter().filter(|l| l["type"] == "span").count())
        .sum::<usize>();
    let mut problems = Vec::new();
    let mut matching = 0;
    let mut outage_received = 0;
    let mut sent_total = 0;
    for (phase, sent) in [("before", &before), ("during", &during), ("after", &after)] {
        sent_total += sent.len();
        if let Some(bad) = sent.iter().find(|s| s.status != 200) {
            problems.push(format!(
                "{phase}: request {} got {} {:?}",
                bad.seq, bad.status, bad.error
            ));
        }
        for (s, id) in answered(sent) {
            let got = spans.get(id).map_or(&[][..], Vec::as_slice);
            match (phase, got.len()) {
                ("during", 0) => continue,
                (_, 1) => {}
                (_, n) => {
                    problems.push(format!("{phase}: {id} has {n} spans"));
                    continue;
                }
            }
            if phase == "during" {
                outage_received += 1;
            }
            let p = span_problems(s, &got[0], service.port);
            if p.is_empty() {
                matching += 1;
            } else {
                problems.push(format!("{phase}: {id}: {}", p.join("; ")));
            }
        }
    }
    let sent_ids: std::collections::HashSet<&str> = [&before, &during, &after]
        .iter()
        .flat_map(|s| answered(s).map(|(_, id)| id))
        .collect();
    let strangers = spans
        .keys()
        .filter(|id| !sent_ids.contains(id.as_str()))
        .count();
    if strangers > 0 {
        problems.push(format!("{strangers} spans for requests that were not sent"));
    }

    let e = &out.summary["export"];
    let get = |k: &str| e[k].as_u64().unwrap_or(u64::MAX);
    let (submitted, exported, failed, dropped) = (
        get("spans_submitted"),
        get("spans_exported"),
        get("spans_failed"),
        get("spans_dropped"),
    );
    let records = out.summary["pipeline"]["records"].as_u64().unwrap_or(0);
    println!(
        "export e2e: requests sent={sent_total} (before {}, during the outage {}, after {}); records={records}; \
         spans submitted={submitted} exported={exported} received={received} matching={matching}; failed={failed} dropped={dropped}",
        before.len(),
        during.len(),
        after.len()
    );
    let reported_failed = latest_total(
        &lines2,
        "strike.export.spans",
        Some(("strike.outcome", "failed")),
    );
    let collector_requests = latest_total(&lines2, "strike.requests", None);
    println!(
        "export e2e outage: collector down {:.1} s during {} requests; their spans: {outage_received} received, \
         {failed} counted failed ({failed_live} already while it was down); Strike's own strike.export.spans{{failed}} at the \
         collector after recovery: {reported_failed:?}; strike.requests at the collector: {collector_requests:?}; \
         Prometheus strike_requests_total after phase 1: {prom_requests}",
        outage.as_secs_f64(),
        during.len(),
    );

    let resent = u64::from(retries(&before) + retries(&during) + retries(&after));
    if records != sent_total as u64 + resent {
        problems.push(format!(
            "{records} records for {sent_total} requests and {resent} resends of requests the server never answered"
        ));
    }
    if submitted != records {
        problems.push(format!("{submitted} spans submitted for {records} records"));
    }
    if exported + failed + dropped != submitted {
        problems.push(format!(
            "exported {exported} + failed {failed} + dropped {dropped} != submitted {submitted}"
        ));
    }
    if received as u64 != exported {
        problems.push(format!(
            "the collectors received {received} spans, Strike exported {exported}"
        ));
    }
    if failed == 0 || failed_live == 0 {
        problems.push(format!(
            "the outage was not reported: failed={failed}, while down={failed_live}"
        ));
    }
    let outage_answered = answered(&during).count();
    if (outage_answered - outage_received) as u64 > failed + dropped {
        problems.push(format!(
            "outage: {} answered requests' spans missing, only {failed} failed + {dropped} dropped counted",
            outage_answered - outage_received
        ));
    }
    if reported_failed.is_none_or(|f| f < 1.0) {
        problems.push(format!(
            "the collector never heard of the failures: {reported_failed:?}"
        ));
    }
    if collector_requests != Some(records as f64) {
        problems.push(format!(
            "strike.requests at the collector {collector_requests:?} != {records} records"
        ));
    }
    // Resent requests were read by the server too (and never answered): records of their own.
    let records_before = before.len() as u64 + u64::from(retries(&before));
    if prom_requests != records_before as f64 {
        problems.push(format!(
            "Prometheus strike_requests_total {prom_requests} != {records_before}"
        ));
    }
    ensure!(problems.is_empty(), "export e2e:\n{}", problems.join("\n"));
    Ok(())
}
