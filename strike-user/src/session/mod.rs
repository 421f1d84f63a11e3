//! The live session: capture → stream → protocol/llm → records, as actors joined by
//! bounded channels. [`Processor`] is the synchronous heart, shared by live tracing and
//! replay; [`run_live`] wires it to the kernel:
//!
//! ```text
//! ring buffer ──reader task──▶ [events queue, bounded] ──processor task──▶ [records queue, bounded] ──▶ output thread
//!   (reader.rs)                    (drop + count)          │  targets, /proc (targets.rs)  (drop + count)
//! NVML ──sampler thread──▶ [samples queue, 64] ────────────┘
//!   (gpu_sampler.rs)               (drop + count)
//! ```
//! Nothing on the data path blocks or panics: a full queue drops and counts, and the stream
//! stage turns any lost byte into a gap that the records report as `partial`.

mod gpu_sampler;
mod incident;
mod processor;
mod reader;
mod scanner;
mod targets;

use std::{
    collections::BTreeSet,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

pub use incident::Incidents;
pub use processor::{ProcessChange, Processor, ProcessorConfig};
pub use targets::TargetSelector;

use self::{
    gpu_sampler::spawn_gpu_sampler,
    incident::{Incident as _, RecordDropped, TaskFailed},
    reader::{read_ring, ReaderShared, RingBatch},
    scanner::{Scan, ScanSchedule, Scanner},
    targets::{apply_change, Targets},
};
use crate::{
    capture::{
        capture_file::{CaptureFileHeader, CAPTURE_FILE_VERSION},
        Capture,
    },
    clock::{clock_offset_ns, monotonic_ns},
    conn::ConnKey,
    cost::CostConfig,
    event::CaptureEvent,
    gpu::{DeviceSample, GpuSource},
    llm::TrackerConfig,
    record::RequestRecord,
    stream::StreamConfig,
    telemetry::{Liveness, Summary},
};

/// Settings of a live session.
pub struct LiveConfig {
    pub selector: TargetSelector,
    pub processor: ProcessorConfig,
    /// Capacity of the events queue, in batches.
    pub event_queue: usize,
    /// Byte budget of the events queue: past it, data events are dropped (counted) and
    /// control events kept.
    pub event_queue_bytes: usize,
    /// Capacity of the records queue.
    pub record_queue: usize,
    pub duration: Option<Duration>,
    pub record_file: Option<std::fs::File>,
    /// Size cap of the recording, in bytes.
    pub record_max_bytes: u64,
    /// Published every second while running: the session's counters so far.
    pub live_stats: Option<Arc<Mutex<Summary>>>,
    /// GPU sampling, when a source is configured (`processor.expects_gpu` should be set).
    pub gpu: Option<GpuSampling>,
    /// Stamped at each turn of the processor's loop (for `/healthz`).
    pub liveness: Arc<Liveness>,
}

/// A GPU source and how often to read it.
pub struct GpuSampling {
    pub source: Box<dyn GpuSource>,
    pub period: Duration,
}

impl LiveConfig {
    /// A live session with the default stage settings and queue bounds, its kernel
    /// timestamps dated with the clocks' offset now.
    pub fn new(selector: TargetSelector, max_capture_bytes: u32) -> Self {
        Self {
            selector,
            processor: ProcessorConfig {
                stream: StreamConfig::default(),
                tracker: TrackerConfig {
                    clock_offset_ns: clock_offset_ns(),
                    ..TrackerConfig::default()
                },
                max_capture_bytes,
                cost: CostConfig::default(),
                expects_gpu: false,
            },
            event_queue: 4096,
            event_queue_bytes: 64 << 20,
            record_queue: 65_536,
            duration: None,
            record_file: None,
            record_max_bytes: 1 << 30,
            live_stats: None,
            gpu: None,
            liveness: Arc::default(),
        }
    }
}

/// Runs a live session until `stop` is set or the duration ends. Records go to `sink`
/// (called on a dedicated thread, so a slow consumer never stalls capture).
pub async fn run_live(
    mut capture: Capture,
    config: LiveConfig,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(&BTreeSet<u32>),
    sink: impl FnMut(RequestRecord) + Send + 'static,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let processor = live_processor(
        config.processor,
        config.record_file,
        config.record_max_bytes,
    )?;
    let ring = capture
        .take_ring()
        .ok_or_else(|| anyhow::anyhow!("ring buffer already taken"))?;

    // Queues between the stages.
    let (event_tx, mut event_rx) = mpsc::channel::<RingBatch>(config.event_queue.max(1));
    let (record_tx, record_rx) = mpsc::channel::<RequestRecord>(config.record_queue.max(1));
    let (gpu_tx, mut gpu_rx) = mpsc::channel::<Vec<DeviceSample>>(GPU_QUEUE);
    let output = spawn_output(record_rx, sink)?;
    let incidents = Arc::clone(processor.incidents());
    let reader = Arc::new(ReaderShared {
        events_read: AtomicU64::new(0),
        incidents: Arc::clone(&incidents),
        liveness: Arc::clone(&config.liveness),
        queue_bytes: config.event_queue_bytes,
    });
    let maps = capture.map_view()?;
    let mut session = Session {
        processor,
        targets: Targets::new(config.selector),
        capture,
        records: Vec::new(),
        record_tx: Some(record_tx),
        incidents,
        reader: Arc::clone(&reader),
        started,
        given_up: Vec::new(),
    };

    // Register the initial targets and their open sockets before any event is read.
    let initial = session.add_initial_targets()?;
    ready(&initial);

    let gpu_stop = Arc::new(AtomicBool::new(false));
    let gpu_thread = match config.gpu {
        Some(sampling) => Some(spawn_gpu_sampler(
            sampling,
            gpu_tx,
            Arc::clone(&gpu_stop),
            Arc::clone(&session.incidents),
        )?),
        None => None,
    };
    let selector = session.targets.selector.clone();
    let mut scanner = Scanner::start(
        ScanSchedule {
            selector: selector.is_dynamic().then_some(selector),
            rescan: Duration::from_secs(1),
            reconcile: RECONCILE_INTERVAL,
        },
        maps,
        session.targets.snapshot(),
    )?;
    let reader_stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn(read_ring(
        ring,
        event_tx,
        Arc::clone(&reader_stop),
        Arc::clone(&session.reader),
    ));

    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut publish_tick = tokio::time::interval(Duration::from_secs(1));
    let deadline = config.duration.map(|d| started + d);
    let live_stats = config.live_stats.as_ref();
    loop {
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        tokio::select! {
            batch = event_rx.recv() => {
                let Some(batch) = batch else { break };
                session.batch(batch);
            }
            _ = tick.tick() => session.tick(),
            Some(scan) = scanner.results.recv() => session.scan(scan),
            _ = publish_tick.tick() => {
                publish(live_stats, || session.summary());
                scanner.publish(session.targets.snapshot());
            }
            Some(samples) = gpu_rx.recv() => session.gpu_samples(samples),
        }
        session.flush_records();
        config.liveness.progressed(monotonic_ns());
    }

    // Stop reading, process what was already read (the same handling as while running: a
    // fork read only now still makes its child a target), then close out in-flight requests.
    reader_stop.store(true, Ordering::Relaxed);
    gpu_stop.store(true, Ordering::Relaxed);
    let scanner = scanner.stop();
    session.join(reader, gpu_thread, scanner).await;
    session.finish(&mut gpu_rx, &mut event_rx);
    if output.join().is_err() {
        // A panicking consumer (an exporter, a writer): the records it had not taken are lost.
        session.task_failed("the record output", &"it panicked");
    }
    let summary = session.summary();
    publish(live_stats, || summary.clone());
    Ok(summary)
}

/// The live session's processor: it reports the connections it gives up on, and records
/// to `record_file` when given one.
fn live_processor(
    config: ProcessorConfig,
    record_file: Option<std::fs::File>,
    record_max_bytes: u64,
) -> std::io::Result<Processor> {
    // The records' dates and the recording's come from one reading of the clocks.
    let header = CaptureFileHeader {
        version: CAPTURE_FILE_VERSION,
        clock_offset_ns: config.tracker.clock_offset_ns,
        max_capture_bytes: config.max_capture_bytes,
    };
    let mut processor = Processor::new(config);
    processor.report_given_up();
    if let Some(file) = record_file {
        processor.write_capture_file(file, &header, record_max_bytes)?;
    }
    Ok(processor)
}

/// The output thread: hands every record to `sink`, so a slow consumer never stalls capture.
fn spawn_output(
    mut records: mpsc::Receiver<RequestRecord>,
    mut sink: impl FnMut(RequestRecord) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("strike-output".into())
        .spawn(move || {
            while let Some(record) = records.blocking_recv() {
                sink(record);
            }
        })
}

/// Sample batches waiting for the processor at most.
const GPU_QUEUE: usize = 64;

/// How often the kernel maps are reconciled with `/proc`.
const RECONCILE_INTERVAL: Duration = Duration::from_secs(15);

/// The processor task's state: the processor, the target set and the capture it drives, and
/// the records on their way to the output thread.
struct Session {
    processor: Processor,
    targets: Targets,
    capture: Capture,
    /// Out of the processor, not yet handed to the output thread.
    records: Vec<RequestRecord>,
    /// `None` once closed at the end of the session.
    record_tx: Option<mpsc::Sender<RequestRecord>>,
    /// The processor's incident counters, shared by every actor of the session.
    incidents: Arc<Incidents>,
    reader: Arc<ReaderShared>,
    started: Instant,
    /// Connections the processor gave up on, to mark in the kernel.
    given_up: Vec<ConnKey>,
}

impl Session {
    fn add_initial_targets(&mut self) -> anyhow::Result<BTreeSet<u32>> {
        let initial = self.targets.selector.resolve(&self.targets.proc);
        for &pid in &initial {
            let events = self
                .targets
                .add(&mut self.capture, pid, &mut self.processor.stats)?;
            self.handle_all(events);
        }
        self.flush_records();
        Ok(initial)
    }

    /// The one way an event reaches the processor: the socket index follows it, and what
    /// it changes in the target set is applied (its synthetic events handled in turn).
    fn handle(&mut self, ev: CaptureEvent) {
        self.targets.sockets.observe(&ev);
        if let Some(change) = self.processor.handle(ev, &mut self.records) {
            let synthetic = apply_change(
                &mut self.targets,
                &mut self.capture,
                change,
                &mut self.processor.stats,
                &self.incidents,
            );
            for synthetic in synthetic {
                self.targets.sockets.observe(&synthetic);
                self.processor.handle(synthetic, &mut self.records);
            }
        }
    }

    fn handle_all(&mut self, events: Vec<CaptureEvent>) {
        for ev in events {
            self.handle(ev);
        }
        self.ignore_given_up();
    }

    /// A batch of the ring, with what its process events change in the target set.
    fn batch(&mut self, batch: RingBatch) {
        for ev in batch.events {
            self.handle(ev);
        }
        self.reader
            .liveness
            .waiting_bytes
            .fetch_sub(batch.bytes, Ordering::Relaxed);
        self.ignore_given_up();
        if let Some(ts) = batch.drained_before_ns {
            self.processor.captured_until(ts);
        }
    }

    /// Tells the kernel to stop copying the connections the processor gave up on.
    fn ignore_given_up(&mut self) {
        self.processor.take_given_up(&mut self.given_up);
        for key in self.given_up.drain(..) {
            if let Some(fd) = self.targets.sockets.fd(key) {
                if self.capture.ignore_socket(key.tgid, fd, key.conn_id) {
                    self.processor.stats.connections_ignored += 1;
                }
            }
        }
    }

    fn tick(&mut self) {
        self.processor.tick(monotonic_ns(), &mut self.records);
    }

    /// What the scanner thread found: new processes to trace, or a reconciliation.
    fn scan(&mut self, scan: Scan) {
        let stats = &mut self.processor.stats;
        let events = match scan {
            Scan::Selected(pids) => {
                self.targets
                    .add_selected(&mut self.capture, &pids, stats, &self.incidents)
            }
            Scan::Reconciled(found) => {
                self.targets
                    .reconcile(&mut self.capture, &found, stats, &self.incidents)
            }
        };
        self.handle_all(events);
    }

    fn gpu_samples(&mut self, samples: Vec<DeviceSample>) {
        let facts = self.targets.describe_gpu_processes(&samples);
        self.handle_all(facts);
        self.processor.gpu_samples(samples);
    }

    /// Hands finished records to the output thread; a full queue drops them, counted.
    fn flush_records(&mut self) {
        for r in self.records.drain(..) {
            let sent = match &self.record_tx {
                Some(tx) => tx.try_send(r).is_ok(),
                None => false,
            };
            if !sent {
                RecordDropped.emit(&self.incidents);
            }
        }
    }

    /// Handles what was queued when the session stopped, closes out in-flight requests,
    /// and closes the records queue, so the output thread ends once it has written them.
    fn finish(
        &mut self,
        gpu_rx: &mut mpsc::Receiver<Vec<DeviceSample>>,
        event_rx: &mut mpsc::Receiver<RingBatch>,
    ) {
        while let Ok(samples) = gpu_rx.try_recv() {
            self.gpu_samples(samples);
        }
        while let Ok(batch) = event_rx.try_recv() {
            self.batch(batch);
        }
        self.processor.finish(&mut self.records);
        self.flush_records();
        self.record_tx = None;
    }

    /// Waits for the reader task and the GPU sampler thread to end; a failure is counted.
    async fn join(
        &mut self,
        reader: tokio::task::JoinHandle<std::io::Result<()>>,
        gpu_thread: Option<std::thread::JoinHandle<()>>,
        scanner: std::thread::JoinHandle<()>,
    ) {
        match tokio::task::spawn_blocking(move || scanner.join()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.task_failed("the scanner", &"it panicked"),
            Err(e) => self.task_failed("the scanner", &e),
        }
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.task_failed("the ring reader", &e),
            Err(e) => self.task_failed("the ring reader", &e),
        }
        if let Some(thread) = gpu_thread {
            match tokio::task::spawn_blocking(move || thread.join()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => self.task_failed("the GPU sampler", &"it panicked"),
                Err(e) => self.task_failed("the GPU sampler", &e),
            }
        }
    }

    /// A task or thread of the session failed: logged and counted, never silent.
    fn task_failed(&mut self, task: &'static str, error: &dyn std::fmt::Display) {
        TaskFailed { task, error }.emit(&self.incidents);
    }

    /// Every stage's counters, as of now.
    fn summary(&self) -> Summary {
        // The processor's summary holds the incidents of every actor.
        let mut summary = self.processor.summary();
        summary.pipeline.events_read = self.reader.events_read.load(Ordering::Relaxed);
        summary.kernel = self.capture.counters();
        summary.targets = self.targets.known.keys().copied().collect();
        summary.duration_s = self.started.elapsed().as_secs_f64();
        summary
    }
}

/// Replaces the published counters, when someone reads them.
fn publish(live: Option<&Arc<Mutex<Summary>>>, summary: impl FnOnce() -> Summary) {
    if let Some(live) = live {
        *live.lock().unwrap_or_else(PoisonError::into_inner) = summary();
    }
}
