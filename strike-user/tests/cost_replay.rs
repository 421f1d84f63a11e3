//! Golden cost replay: a real capture of concurrent requests (4 overlapping, an idle gap,
//! one more; two tenants, two API keys) against the uvicorn `OpenAI` app, replayed with GPU
//! samples of a two-GPU (tensor-parallel) server on the capture's own clock and the prices of
//! `cost.yaml`. Every request's cost must equal `expected.jsonl`, and attributed + idle must
//! equal the cost measured from the samples. `STRIKE_BLESS=1` regenerates `gpu.jsonl` and
//! `expected.jsonl`; `--nocapture` prints the worked example of `docs/COST.md`.
//!
//! The GPU samples are synthetic (this project's CI has no GPU): 100 ms apart, each device
//! draws 350/330 W in a window where the server moved bytes and 80/75 W otherwise, and lists
//! the server's pid as its compute process.

use std::{fs, io, path::Path};

use serde_json::{json, Value};
use strike::{
    capture::capture_file::CaptureFileReader,
    cli::replay::{replay_with, ReplayOptions},
    config::RunConfig,
    event::CaptureEvent,
    gpu::replay::{parse, ReplayLine},
};

const STEP_NS: u64 = 100_000_000;

fn gpu_samples(capture: &Path) -> String {
    let reader =
        CaptureFileReader::new(io::BufReader::new(fs::File::open(capture).unwrap())).unwrap();
    let mut data_ts = Vec::new();
    let mut pid = 0;
    for event in reader {
        let event = event.unwrap();
        if let CaptureEvent::Data(d) = &event {
            pid = d.key.tgid;
            data_ts.push(event.ts_ns());
        }
    }
    let first = data_ts.iter().min().unwrap() / STEP_NS * STEP_NS - 5 * STEP_NS;
    let last = data_ts.iter().max().unwrap() + 5 * STEP_NS;
    let mut energy_mj = [1_000_000_u64, 2_000_000];
    let mut lines = Vec::new();
    let mut t = first;
    while t <= last {
        let busy = data_ts
            .iter()
            .any(|&d| d >= t.saturating_sub(STEP_NS) && d < t);
        for (index, e) in energy_mj.iter_mut().enumerate() {
            let watts: u64 = match (index, busy) {
                (0, true) => 350,
                (0, false) => 80,
                (_, true) => 330,
                (_, false) => 75,
            };
            if t > first {
                *e += watts * STEP_NS / 1_000_000; // W × 0.1 s in mJ
            }
            lines.push(
                json!({
                    "ts_ns": t, "index": index, "uuid": format!("GPU-synthetic-{index}"),
                    "name": "NVIDIA H100 80GB HBM3", "power_mw": watts * 1000, "energy_mj": *e,
                    "util_gpu_pct": if busy { 90 } else { 0 },
                    "processes": [{"pid": pid}],
                })
                .to_string(),
            );
        }
        t += STEP_NS;
    }
    lines.join("\n") + "\n"
}

#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scenario, and the worked example it prints"
)]
#[expect(
    clippy::cast_precision_loss,
    reason = "interval ns and mJ are far below 2^52"
)]
fn concurrent_requests_on_two_gpus_cost_what_the_ledger_says() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/cost");
    let capture = dir.join("capture.strikecap");
    let bless = std::env::var_os("STRIKE_BLESS").is_some();
    let generated = gpu_samples(&capture);
    let gpu_path = dir.join("gpu.jsonl");
    if bless {
        fs::write(&gpu_path, &generated).unwrap();
    }
    let gpu_text = fs::read_to_string(&gpu_path).unwrap();
    assert_eq!(
        gpu_text, generated,
        "gpu.jsonl is what the generator writes"
    );
    let config: RunConfig =
        serde_yaml_ng::from_str(&fs::read_to_string(dir.join("cost.yaml")).unwrap()).unwrap();
    let mut cost = config.cost;
    // A fixed secret, so the keyed api_key_hash is the same on every run.
    cost.api_key_hash_key_file = Some(dir.join("api-key-hash.key"));
    let gpu = parse("gpu.jsonl", &gpu_text).unwrap();
    let (records, summary) = replay_with(
        &capture,
        ReplayOptions {
            gpu: Some(gpu.clone()),
            cost: cost.clone(),
        },
    )
    .unwrap();

    // The invariant, against the cost computed from the samples alone.
    let samples: Vec<_> = gpu
        .iter()
        .filter_map(|l| match l {
            ReplayLine::Sample(s) => Some(s),
            ReplayLine::Process { .. } => None,
        })
        .collect();
    let mut measured = 0.0;
    for index in 0..2 {
        let dev: Vec<_> = samples.iter().filter(|s| s.index == index).collect();
        for w in dev.windows(2) {
            let secs = (w[1].ts_ns - w[0].ts_ns) as f64 / 1e9;
            let joules = (w[1].energy_mj.unwrap() - w[0].energy_mj.unwrap()) as f64 / 1000.0;
            measured += cost.interval_cost(&w[1].name, secs, joules);
        }
    }
    let totals = summary.cost.expect("cost totals with a GPU source");
    let attributed: f64 = records.iter().filter_map(|r| r.cost_usd).sum();
    println!(
        "worked example: measured ${measured:.9} = attributed ${attributed:.9} + idle ${:.9}",
        totals.idle_usd
    );
    println!("| request | tenant | key hash | stream | in | out | TTFT ms | e2e ms | GPU-s | energy J | cost $ | chargeback $ |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &records {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.4} | {:.2} | {:.8} | {:.8} |",
            r.response_id.as_deref().unwrap_or("-"),
            r.tenant.as_deref().unwrap_or("-"),
            r.api_key_hash.as_deref().unwrap_or("-"),
            r.stream,
            r.input_tokens.unwrap_or(0),
            r.output_tokens.unwrap_or(0),
            r.ttft_ms.map_or("-".to_owned(), |t| format!("{t:.1}")),
            r.e2e_ms.unwrap_or(0.0),
            r.gpu_seconds.unwrap_or(0.0),
            r.gpu_energy_j.unwrap_or(0.0),
            r.cost_usd.unwrap_or(0.0),
            r.chargeback_usd.unwrap_or(0.0),
        );
    }
    println!(
        "idle: {:.3} GPU-s, {:.1} J, ${:.9} ({} of {} device intervals)",
        totals.idle_gpu_s,
        totals.idle_energy_j,
        totals.idle_usd,
        totals.idle_intervals,
        totals.intervals
    );
    assert!(
        (totals.measured_usd - measured).abs() < 1e-12,
        "{totals:?} vs {measured}"
    );
    assert!((attributed + totals.idle_usd - measured).abs() < 1e-12);
    assert!(
        totals.idle_intervals > 0 && totals.records_forced == 0,
        "{totals:?}"
    );
    assert_eq!(records.len(), 5);
    for r in &records {
        assert!(r.cost_usd.is_some_and(|c| c > 0.0), "{r:?}");
        assert!(r.tenant.is_some() && r.api_key_hash.is_some());
    }

    let mut lines: Vec<String> = records
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).unwrap();
            v["request_id"] = Value::String("<uuid-v7>".into());
            v.to_string()
        })
        .collect();
    lines.push(json!({ "cost": totals }).to_string());
    let actual = lines.join("\n") + "\n";
    let expected_path = dir.join("expected.jsonl");
    if bless {
        fs::write(&expected_path, &actual).unwrap();
    }
    let expected = fs::read_to_string(&expected_path).unwrap();
    for (i, (a, e)) in actual.lines().zip(expected.lines()).enumerate() {
        assert_eq!(a, e, "line {} differs", i + 1);
    }
    assert_eq!(actual.lines().count(), expected.lines().count());
}
