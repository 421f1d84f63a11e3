//! Privileged test of the live cost path: the real eBPF capture of a prefork server whose
//! worker is forked after attach, and a GPU source on the sampler thread reporting that
//! worker as its compute process (a stand-in for NVML, which CI machines lack). Every request
//! gets a cost through the live pipeline (sampler thread → processor → ledger), and
//! attributed + idle = measured.
//!
//! Skips (with the reason printed) when not root, except under `CI=true`.

use std::{
    io::Write,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use strike::{
    capture::{preflight, Capture, CaptureConfig},
    cost::CostConfig,
    gpu::{DeviceSample, GpuError, GpuProcess, GpuSource},
    session::{GpuSampling, LiveConfig, TargetSelector},
};

mod privileged;
use privileged::{line, post_chat, prefork_command, skip, start_prefork, wait_until, PATIENCE};

/// One H100 drawing 300 W, running whatever process `worker` names.
struct FakeGpu {
    started: Option<u64>,
    worker: Arc<AtomicU32>,
}

impl GpuSource for FakeGpu {
    fn sample(&mut self, now_ns: u64) -> Result<Vec<DeviceSample>, GpuError> {
        let started = *self.started.get_or_insert(now_ns);
        let worker = self.worker.load(Ordering::Relaxed);
        Ok(vec![DeviceSample {
            ts_ns: now_ns,
            index: 0,
            uuid: "GPU-fake".to_owned(),
            name: "NVIDIA H100 80GB HBM3".to_owned(),
            util_gpu_pct: Some(50),
            mem_used_bytes: None,
            mem_total_bytes: None,
            power_mw: Some(300_000),
            energy_mj: Some((now_ns - started) * 300 / 1_000_000),
            sm_clock_mhz: None,
            processes: (worker != 0)
                .then_some(GpuProcess {
                    pid: worker,
                    used_mem_bytes: None,
                    sm_util_pct: None,
                })
                .into_iter()
                .collect(),
        }])
    }
}

#[test]
fn live_requests_get_their_gpu_share() {
    if let Err(e) = preflight() {
        return skip(&e.to_string());
    }
    let (mut server, mut server_out, port) = start_prefork(prefork_command());
    let parent = server.0.id();

    let capture_config = CaptureConfig::default();
    let capture = Capture::load(&capture_config).expect("eBPF programs load and attach");
    let worker = Arc::new(AtomicU32::new(0));
    let mut live = LiveConfig::new(
        TargetSelector {
            pids: vec![parent],
            ..TargetSelector::default()
        },
        capture_config.max_capture_bytes,
    );
    live.processor.expects_gpu = true;
    live.processor.cost = CostConfig {
        gpu_price_per_hour: [("H100".to_owned(), 3.6)].into(),
        energy_price_per_kwh: 0.36,
        ..CostConfig::default()
    };
    live.gpu = Some(GpuSampling {
        source: Box::new(FakeGpu {
            started: None,
            worker: Arc::clone(&worker),
        }),
        period: Duration::from_millis(50),
    });
    let records = Arc::new(Mutex::new(Vec::new()));
    let sink_records = Arc::clone(&records);
    let stop = Arc::new(AtomicBool::new(false));
    let session_stop = Arc::clone(&stop);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let session = std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(strike::session::run_live(
                capture,
                live,
                session_stop,
                move |_| ready_tx.send(()).unwrap(),
                move |r| sink_records.lock().unwrap().push(r),
            ))
    });
    ready_rx
        .recv_timeout(PATIENCE)
        .expect("the session registered its targets");

    // The worker forks now (after attach) and serves three requests. The GPU idles before,
    // between and after them: they are at least four sample periods apart.
    server.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let worker_pid: u32 = line(&mut server_out).parse().unwrap();
    worker.store(worker_pid, Ordering::Relaxed);
    for n in 1..=3 {
        std::thread::sleep(Duration::from_millis(200));
        wait_until(&format!("an answer to request {n}"), || {
            post_chat(port).is_some()
        });
    }
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(i32::try_from(worker_pid).unwrap(), libc::SIGKILL) };
    // Stopping drains what the kernel captured and settles every cost.
    stop.store(true, Ordering::Relaxed);

    let summary = session.join().unwrap().unwrap();
    let records = records.lock().unwrap();
    let costs: Vec<f64> = records.iter().filter_map(|r| r.cost_usd).collect();
    let totals = summary.cost.expect("cost totals");
    println!(
        "live cost: {} records, costs {costs:?}; measured ${:.9} = attributed ${:.9} + idle ${:.9} over {} intervals",
        records.len(),
        totals.measured_usd,
        totals.attributed_usd,
        totals.idle_usd,
        totals.intervals
    );
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(
        costs.len() == 3 && costs.iter().all(|c| *c > 0.0),
        "{costs:?}"
    );
    assert!(records
        .iter()
        .all(|r| r.gpu_seconds.is_some_and(|s| s > 0.0)));
    let attributed: f64 = costs.iter().sum();
    assert!((attributed - totals.attributed_usd).abs() < 1e-12);
    assert!((totals.attributed_usd + totals.idle_usd - totals.measured_usd).abs() < 1e-12);
    assert!(
        totals.idle_usd > 0.0,
        "the GPU idled between requests: {totals:?}"
    );
    assert_eq!(summary.pipeline.gpu_samples_dropped, 0);
}
