use super::*;
use crate::{
    cost::CostConfig,
    record::{testing::sample as sample_record, RequestRecord},
};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

fn config() -> CostConfig {
    CostConfig {
        gpu_price_per_hour: [("H100".to_owned(), 3.6)].into(), // $0.001 per GPU-second
        energy_price_per_kwh: 0.36,                            // $1e-7 per J at the board
        pue: 1.25,
        prefill_weight: 1.0,
        decode_weight: 2.0,
        ..CostConfig::default()
    }
}

fn gpu(index: u32, ts_ns: u64, energy_j: u64, pids: &[u32]) -> DeviceSample {
    crate::gpu::tests::sample(index, ts_ns, Some(energy_j * 1000), None, pids)
}

/// A request of `pid` from `start` to `end` (ns), first token at `first` (a stream).
fn request(
    id: &str,
    pid: u32,
    start: u64,
    first: u64,
    end: u64,
    input: u64,
    output: u64,
) -> RequestRecord {
    RequestRecord {
        request_id: id.to_owned(),
        pid,
        stream: true,
        start_ns: start,
        first_token_ns: Some(first),
        end_ns: Some(end),
        input_tokens: Some(input),
        cached_input_tokens: None,
        output_tokens: Some(output),
        ..sample_record()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
}

/// The measured cost straight from the samples: every consecutive pair of each device.
fn measured(config: &CostConfig, samples: &[DeviceSample]) -> f64 {
    let mut by_device: HashMap<u32, Vec<&DeviceSample>> = HashMap::new();
    for s in samples {
        by_device.entry(s.index).or_default().push(s);
    }
    by_device
        .values()
        .flat_map(|v| v.windows(2))
        .map(|w| {
            let secs = u64_to_f64(w[1].ts_ns - w[0].ts_ns) / 1e9;
            let joules = u64_to_f64(w[1].energy_mj.unwrap() - w[0].energy_mj.unwrap()) / 1000.0;
            config.interval_cost(&w[1].name, secs, joules)
        })
        .sum()
}

fn run(
    ledger: &mut Ledger,
    samples: &[DeviceSample],
    records: Vec<RequestRecord>,
) -> Vec<RequestRecord> {
    let mut out = Vec::new();
    for s in samples {
        ledger.sample(s.clone());
    }
    for r in records {
        ledger.admit(r, 0, &mut out);
    }
    ledger.settle(u64::MAX, 0, &mut out);
    ledger.finish(&mut out);
    out
}

fn by_id<'a>(records: &'a [RequestRecord], id: &str) -> &'a RequestRecord {
    records.iter().find(|r| r.request_id == id).unwrap()
}

#[test]
#[expect(
    clippy::many_single_char_names,
    reason = "requests a and b, config c, as in the comments"
)]
fn one_gpu_two_concurrent_requests_and_idle_time() {
    // 1 s samples from t=10 s to t=14 s, 300 W: 300 J and $0.001 + 300 × 1.25 × 1e-7 per s.
    let samples: Vec<_> = (0..5)
        .map(|i| gpu(0, (10 + i) * S, 300 * i, &[100]))
        .collect();
    // A: prefill 10 tokens in [11.0, 11.5), decodes 20 tokens in [11.5, 12.5).
    // B: prefill 30 tokens in [11.5, 12.0), decodes 10 tokens in [12.0, 13.0).
    let a = request(
        "a",
        100,
        11 * S,
        11 * S + 500 * MS,
        12 * S + 500 * MS,
        10,
        20,
    );
    let b = request("b", 100, 11 * S + 500 * MS, 12 * S, 13 * S, 30, 10);
    let c = config();
    let mut ledger = Ledger::new(c.clone(), true);
    let out = run(&mut ledger, &samples, vec![a, b]);
    let per_second = c.interval_cost("H100", 1.0, 300.0);

    // [10, 11): idle. [11, 12): A 10 + 2×10 = 30, B 30 + 0 = 30 → half each.
    // [12, 13): A 2×10 = 20, B 2×10 = 20 → half each. [13, 14): idle.
    let (ra, rb) = (by_id(&out, "a"), by_id(&out, "b"));
    assert!(close(ra.cost_usd.unwrap(), per_second), "{:?}", ra.cost_usd);
    assert!(close(rb.cost_usd.unwrap(), per_second), "{:?}", rb.cost_usd);
    assert!(close(ra.gpu_seconds.unwrap(), 1.0));
    assert!(close(rb.gpu_energy_j.unwrap(), 300.0));
    let t = ledger.totals();
    assert_eq!((t.intervals, t.idle_intervals), (4, 2));
    assert!(close(t.idle_usd, 2.0 * per_second));
    assert!(close(t.idle_gpu_s, 2.0) && close(t.idle_energy_j, 600.0));
    // The invariant, against the cost computed from the raw samples.
    let m = measured(&c, &samples);
    assert!(close(t.measured_usd, m));
    assert!(close(
        ra.cost_usd.unwrap() + rb.cost_usd.unwrap() + t.idle_usd,
        m
    ));
}

#[test]
fn multi_gpu_trees_share_only_their_devices() {
    // Tree 10 (API server) → 11, 12 (tensor-parallel workers on GPUs 0 and 1).
    // Tree 20 runs on GPU 1 too. GPU 2 has no known process: shared by all.
    let c = config();
    let mut ledger = Ledger::new(c.clone(), true);
    ledger.process(11, 10);
    ledger.process(12, 10);
    let samples = vec![
        gpu(0, 0, 0, &[11]),
        gpu(1, 0, 0, &[12, 20]),
        gpu(2, 0, 0, &[]),
        gpu(0, S, 100, &[11]),
        gpu(1, S, 200, &[12, 20]),
        gpu(2, S, 400, &[]),
    ];
    let a = request("a", 10, 0, 100 * MS, S, 100, 0);
    let b = request("b", 20, 0, 100 * MS, S, 100, 0);
    let out = run(&mut ledger, &samples, vec![a, b]);
    let cost = |j: f64| c.interval_cost("H100", 1.0, j);
    let (ra, rb) = (by_id(&out, "a"), by_id(&out, "b"));
    // A: all of GPU 0, half of GPU 1, half of GPU 2. B: half of GPU 1, half of GPU 2.
    assert!(close(
        ra.cost_usd.unwrap(),
        cost(100.0) + cost(200.0) / 2.0 + cost(400.0) / 2.0
    ));
    assert!(close(
        rb.cost_usd.unwrap(),
        cost(200.0) / 2.0 + cost(400.0) / 2.0
    ));
    assert!(close(ra.gpu_seconds.unwrap(), 2.0) && close(rb.gpu_seconds.unwrap(), 1.0));
    let t = ledger.totals();
    assert_eq!(t.idle_intervals, 0);
    assert!(close(
        ra.cost_usd.unwrap() + rb.cost_usd.unwrap(),
        measured(&c, &samples)
    ));
}

#[test]
fn a_container_is_one_serving_group() {
    // The engine (pid 60) runs in the API server's container (pid 50) but is not its child.
    let c = config();
    let mut ledger = Ledger::new(c.clone(), true);
    ledger.container(50, "abc".to_owned());
    ledger.container(60, "abc".to_owned());
    let samples = vec![gpu(0, 0, 0, &[60]), gpu(0, S, 100, &[60])];
    let a = request("a", 50, 0, 100 * MS, S, 100, 10);
    let b = request("b", 70, 0, 100 * MS, S, 100, 10);
    let out = run(&mut ledger, &samples, vec![a, b]);
    assert!(close(
        by_id(&out, "a").cost_usd.unwrap(),
        measured(&c, &samples)
    ));
    assert_eq!(
        by_id(&out, "b").cost_usd,
        Some(0.0),
        "another group's device"
    );
}

#[test]
fn records_wait_for_overlapping_requests_and_samples() {
    let c = config();
    let mut ledger = Ledger::new(c, true);
    let mut out = Vec::new();
    ledger.sample(gpu(0, 0, 0, &[]));
    ledger.sample(gpu(0, S, 100, &[]));
    ledger.admit(
        request("a", 1, 100 * MS, 200 * MS, 900 * MS, 10, 10),
        S,
        &mut out,
    );
    // B is still in flight since 0.5 s: [0, 1) cannot be settled, A waits.
    ledger.settle(500 * MS, S, &mut out);
    assert!(out.is_empty());
    assert_eq!(ledger.pending(), 1);
    // B ends; the GPU time line has not reached its end (1.5 s) yet: A leaves, B waits.
    ledger.admit(
        request("b", 1, 500 * MS, 600 * MS, 1500 * MS, 10, 10),
        S,
        &mut out,
    );
    ledger.settle(u64::MAX, S, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request_id, "a");
    ledger.sample(gpu(0, 2 * S, 200, &[]));
    ledger.settle(u64::MAX, 2 * S, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(ledger.totals().records_forced, 0);
}

#[test]
fn max_hold_forces_settlement() {
    let c = CostConfig {
        max_hold_s: 1.0,
        ..config()
    };
    let mut ledger = Ledger::new(c, true);
    let mut out = Vec::new();
    ledger.sample(gpu(0, 0, 0, &[]));
    ledger.sample(gpu(0, S, 100, &[]));
    ledger.admit(
        request("a", 1, 100 * MS, 200 * MS, 900 * MS, 10, 10),
        S,
        &mut out,
    );
    // A request in flight since 0.5 s never ends; 3 s later A is settled anyway.
    ledger.settle(500 * MS, 3 * S, &mut out);
    assert_eq!(out.len(), 1);
    assert!(out[0].cost_usd.is_some_and(|c| c > 0.0));
    let t = ledger.totals();
    assert_eq!((t.intervals_forced, t.records_forced), (1, 0));
}

#[test]
fn waiting_records_are_bounded() {
    let mut ledger = Ledger::new(config(), true);
    let mut out = Vec::new();
    ledger.sample(gpu(0, 0, 0, &[]));
    ledger.sample(gpu(0, S, 100, &[]));
    for i in 0..=MAX_PENDING {
        ledger.admit(request(&format!("r{i}"), 1, 0, 1, 2 * S, 1, 1), 0, &mut out);
    }
    assert_eq!(ledger.pending(), MAX_PENDING);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].request_id, "r0", "the oldest leaves first");
    assert_eq!(ledger.totals().records_forced, 1);
}

#[test]
fn a_gpu_source_without_samples_does_not_hold_records() {
    let mut ledger = Ledger::new(config(), true);
    let mut out = Vec::new();
    ledger.admit(request("a", 1, 0, 1, 2, 10, 10), S, &mut out);
    ledger.settle(u64::MAX, 2 * S, &mut out);
    assert!(out.is_empty(), "waits a little for the first sample");
    ledger.settle(u64::MAX, 7 * S, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].cost_usd, None, "no sample, no cost");
}

#[test]
fn without_gpu_records_pass_with_chargeback_only() {
    let c = CostConfig {
        token_prices: Some(crate::cost::TokenPrices {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
            ..Default::default()
        }),
        ..config()
    };
    let mut ledger = Ledger::new(c, false);
    let mut out = Vec::new();
    ledger.admit(request("a", 1, 0, 1, 2, 1_000_000, 500_000), 0, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].cost_usd, None);
    assert!(close(out[0].chargeback_usd.unwrap(), 2.0));
}

/// Many concurrent requests on three GPUs, two serving trees, idle gaps, errors (no work):
/// attributed + idle = measured, and the records hold exactly the attributed part.
#[test]
fn invariant_attributed_plus_idle_equals_measured() {
    let c = config();
    let mut ledger = Ledger::new(c.clone(), true);
    ledger.process(11, 10);
    ledger.process(21, 20);
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut samples = Vec::new();
    let mut energy = [0u64; 3];
    for step in 0..200u64 {
        for (d, e) in energy.iter_mut().enumerate() {
            *e += 50 + next(400);
            let pids: &[u32] = match d {
                0 => &[11],
                1 => &[21],
                _ => &[],
            };
            samples.push(gpu(
                u32::try_from(d).unwrap(),
                step * 250 * MS + next(10) * MS,
                *e,
                pids,
            ));
        }
    }
    let mut records = Vec::new();
    for i in 0..300 {
        let start = next(48) * S + next(1000) * MS;
        let first = start + next(800) * MS;
        let end = first + next(3000) * MS;
        let pid = [10, 11, 20, 21, 30][usize::try_from(next(5)).unwrap()];
        let (input, output) = if next(10) == 0 {
            (0, 0)
        } else {
            (1 + next(4000), next(500))
        };
        records.push(request(
            &format!("r{i}"),
            pid,
            start,
            first,
            end,
            input,
            output,
        ));
    }
    let out = run(&mut ledger, &samples, records);
    assert_eq!(out.len(), 300);
    let t = ledger.totals();
    let from_records: f64 = out.iter().filter_map(|r| r.cost_usd).sum();
    let gpu_s: f64 = out.iter().filter_map(|r| r.gpu_seconds).sum();
    let joules: f64 = out.iter().filter_map(|r| r.gpu_energy_j).sum();
    let m = measured(&c, &samples);
    println!(
        "cost invariant: measured ${m:.9} = attributed ${from_records:.9} ({} records) + idle ${:.9} ({} of {} intervals); \
         GPU-s {:.3} = {gpu_s:.3} + {:.3}; energy {:.1} J = {joules:.1} + {:.1}",
        out.len(),
        t.idle_usd,
        t.idle_intervals,
        t.intervals,
        t.measured_gpu_s,
        t.idle_gpu_s,
        t.measured_energy_j,
        t.idle_energy_j,
    );
    assert!(
        t.idle_intervals > 0 && t.idle_intervals < t.intervals,
        "{t:?}"
    );
    assert!(close(t.measured_usd, m), "{} != {m}", t.measured_usd);
    assert!(close(from_records, t.attributed_usd));
    assert!(
        close(from_records + t.idle_usd, m),
        "{from_records} + {} != {m}",
        t.idle_usd
    );
    assert!(close(gpu_s + t.idle_gpu_s, t.measured_gpu_s));
    assert!(close(joules + t.idle_energy_j, t.measured_energy_j));
    // Requests of the process 30 (no GPU of its own) only got shares of the shared GPU 2;
    // failed requests (no tokens) got nothing.
    for r in &out {
        if r.input_tokens == Some(0) && r.output_tokens == Some(0) {
            assert_eq!(r.cost_usd, Some(0.0), "{}", r.request_id);
        }
    }
}

#[test]
fn exited_processes_are_forgotten_after_max_hold_and_their_children_keep_their_group() {
    // 10 (API server) → 11 (engine) → 12 (worker on GPU 0); 11 runs in container "c".
    let c = CostConfig {
        max_hold_s: 1.0,
        ..config()
    };
    let mut ledger = Ledger::new(c.clone(), true);
    ledger.process(11, 10);
    ledger.process(12, 11);
    ledger.container(11, "c".to_owned());
    // Churn: 1 000 short-lived children of the API server, each exiting at once.
    for pid in 1000..2000 {
        ledger.process(pid, 10);
        ledger.process_exited(pid, 5 * S);
    }
    ledger.process_exited(11, 5 * S);
    assert_eq!(ledger.processes_known(), 1002);
    let mut out = Vec::new();
    ledger.settle(u64::MAX, 5 * S + S / 2, &mut out);
    assert_eq!(ledger.processes_known(), 1002, "kept for max_hold_s");
    ledger.settle(u64::MAX, 6 * S, &mut out);
    assert_eq!(ledger.processes_known(), 1, "only the worker is left");
    // The worker is still in the engine's serving group: the container it inherited.
    assert_eq!(ledger.group(12), Group::Container("c"));
    // A pid that exited and was reused is not forgotten with the old process.
    ledger.process(13, 10);
    ledger.process_exited(13, 7 * S);
    ledger.process(13, 12);
    ledger.settle(u64::MAX, 9 * S, &mut out);
    assert_eq!(ledger.group(13), Group::Container("c"));
    // Costs still add up after forgetting: a request of the worker's group.
    let samples = vec![gpu(0, 10 * S, 0, &[12]), gpu(0, 11 * S, 100, &[12])];
    let a = request("a", 13, 10 * S, 10 * S + 100 * MS, 11 * S, 100, 10);
    let out = run(&mut ledger, &samples, vec![a]);
    assert!(close(
        by_id(&out, "a").cost_usd.unwrap(),
        measured(&c, &samples)
    ));
}
