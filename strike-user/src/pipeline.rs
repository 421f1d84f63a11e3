//! The pipeline: capture → stream → protocol/llm → records.
//!
//! [`Processor`] is the synchronous heart, shared by live tracing and replay: capture events
//! in, request records out. [`run_live`] wires it to the kernel as actors joined by bounded
//! channels:
//!
//! ```text
//! ring buffer ──reader task──▶ [events queue, bounded] ──processor task──▶ [records queue, bounded] ──▶ output thread
//!                                   (drop + count)          │  targets, /proc            (drop + count)
//! ```
//! Nothing on the data path blocks or panics: a full queue drops and counts, and the stream
//! stage turns any lost byte into a gap that the records report as `partial`.

use std::{
    collections::{BTreeSet, HashMap},
    io,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::mpsc,
};

use crate::{
    capture::{
        event::{CaptureEvent, CloseRecord, OpenRecord, ProcessFact},
        procfs::{container_id, pod_uid, Proc, TCP_LISTEN},
        recording::{RecordingHeader, RecordingWriter, RECORDING_VERSION},
        Capture, CaptureError,
    },
    conn::{ConnKey, Role, StreamEvent},
    cost::{ledger::Ledger, CostConfig},
    gpu::{DeviceSample, GpuSource},
    llm::{RequestTracker, TrackerConfig},
    record::RequestRecord,
    stream::{Reassembler, StreamConfig},
    telemetry::{PipelineStats, Summary},
};

/// Which processes to trace: a process is traced when any selector matches it. Also the
/// `targets` section of `strike run`'s configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TargetSelector {
    /// Process ids.
    pub pids: Vec<u32>,
    /// Processes listening on these TCP ports.
    pub ports: Vec<u16>,
    /// Process names, as in `/proc/PID/comm`.
    pub comms: Vec<String>,
    /// Substrings of a cgroup path (any hierarchy), e.g. a pod UID or `kubepods`.
    pub cgroups: Vec<String>,
    /// Container ids, or prefixes of at least 12 hex digits.
    pub containers: Vec<String>,
    /// Also trace the selected processes' descendants (workers).
    pub follow_children: bool,
}

impl Default for TargetSelector {
    fn default() -> Self {
        Self {
            pids: Vec::new(),
            ports: Vec::new(),
            comms: Vec::new(),
            cgroups: Vec::new(),
            containers: Vec::new(),
            follow_children: true,
        }
    }
}

impl TargetSelector {
    /// Checks that the selection can match something, and only what it means to.
    pub fn validate(&self) -> Result<(), String> {
        if self.pids.is_empty()
            && self.ports.is_empty()
            && self.comms.is_empty()
            && self.cgroups.is_empty()
            && self.containers.is_empty()
        {
            return Err(
                "say what to trace: --pid, --port, --comm, --cgroup or --container \
                 (targets.pids, ports, comms, cgroups or containers in a config file)"
                    .into(),
            );
        }
        if let Some(c) = self.comms.iter().find(|c| c.is_empty() || c.len() > 15) {
            return Err(format!("comm {c:?} cannot match: a comm is 1 to 15 bytes"));
        }
        if let Some(c) = self.cgroups.iter().find(|c| c.trim().is_empty()) {
            return Err(format!("cgroup {c:?} would match every process"));
        }
        if let Some(c) = self
            .containers
            .iter()
            .find(|c| c.len() < 12 || c.len() > 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(format!(
                "container {c:?} is not a container id (12 to 64 hex digits)"
            ));
        }
        Ok(())
    }

    /// The processes matching now (with descendants when following children).
    pub fn resolve(&self, proc: &Proc) -> BTreeSet<u32> {
        let mut pids: BTreeSet<u32> = self
            .pids
            .iter()
            .copied()
            .filter(|&p| proc.exists(p))
            .collect();
        for &port in &self.ports {
            pids.extend(proc.pids_listening_on(port));
        }
        for comm in &self.comms {
            pids.extend(proc.pids_by_comm(comm));
        }
        for cgroup in &self.cgroups {
            pids.extend(proc.pids_by_cgroup(cgroup));
        }
        for container in &self.containers {
            pids.extend(proc.pids_by_container(&container.to_ascii_lowercase()));
        }
        let mut pids = if self.follow_children {
            proc.with_descendants(&pids)
        } else {
            pids
        };
        // A zombie still shows in /proc with its cgroup and comm; taking it again after its
        // exit event would keep it a target forever.
        pids.retain(|&p| proc.is_live(p));
        pids
    }

    /// Whether the selection can gain processes while running (by port, name, cgroup or
    /// container).
    pub fn is_dynamic(&self) -> bool {
        !(self.ports.is_empty()
            && self.comms.is_empty()
            && self.cgroups.is_empty()
            && self.containers.is_empty())
    }

    /// The selection as command-line flags, for messages.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        parts.extend(self.pids.iter().map(|p| format!("--pid {p}")));
        parts.extend(self.ports.iter().map(|p| format!("--port {p}")));
        parts.extend(self.comms.iter().map(|c| format!("--comm {c}")));
        parts.extend(self.cgroups.iter().map(|c| format!("--cgroup {c}")));
        parts.extend(self.containers.iter().map(|c| format!("--container {c}")));
        parts.join(" ")
    }
}

/// Settings of the processing stages.
#[derive(Clone, Debug)]
pub struct ProcessorConfig {
    pub stream: StreamConfig,
    pub tracker: TrackerConfig,
    pub max_capture_bytes: u32,
    /// Prices and weights of the cost stage.
    pub cost: CostConfig,
    /// GPU samples will come: records wait for their cost.
    pub expects_gpu: bool,
}

/// Capture events (and GPU samples) in, records out. Synchronous and free of I/O but for
/// the optional recording.
pub struct Processor {
    reassembler: Reassembler,
    tracker: RequestTracker,
    ledger: Ledger,
    stream_events: Vec<StreamEvent>,
    /// Records out of the tracker, on their way to the ledger.
    finished: Vec<RequestRecord>,
    /// The latest kernel time seen (events, ticks).
    now_ns: u64,
    /// Every capture event stamped before this kernel time has been handled (the live
    /// reader's drain mark; each event's own time in a replay).
    captured_until_ns: u64,
    /// What the session learnt about each process (from [`CaptureEvent::Process`]), until
    /// its exit: what records are completed with.
    facts: HashMap<u32, ProcessFact>,
    recorder: Option<RecordingWriter<io::BufWriter<std::fs::File>>>,
    pub stats: PipelineStats,
}

/// What the live session must do about a process event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessChange {
    Forked { child: u32 },
    Exited { pid: u32 },
}

impl Processor {
    pub fn new(config: ProcessorConfig) -> Self {
        Processor {
            reassembler: Reassembler::new(config.stream, config.max_capture_bytes),
            tracker: RequestTracker::new(config.tracker),
            ledger: Ledger::new(config.cost, config.expects_gpu),
            stream_events: Vec::new(),
            finished: Vec::new(),
            now_ns: 0,
            captured_until_ns: 0,
            facts: HashMap::new(),
            recorder: None,
            stats: PipelineStats::default(),
        }
    }

    /// Records every capture event to `file` from now on.
    pub fn record_to(&mut self, file: std::fs::File, header: &RecordingHeader) -> io::Result<()> {
        let writer =
            RecordingWriter::new(io::BufWriter::new(file), header).map_err(io::Error::other)?;
        self.recorder = Some(writer);
        Ok(())
    }

    /// Feeds one capture event; completed records are pushed to `records`.
    pub fn handle(
        &mut self,
        event: CaptureEvent,
        records: &mut Vec<RequestRecord>,
    ) -> Option<ProcessChange> {
        if let Some(rec) = &mut self.recorder {
            if rec.write(&event).is_err() {
                self.stats.recording_errors += 1;
            }
        }
        self.now_ns = self.now_ns.max(event.ts_ns());
        let change = match event {
            CaptureEvent::Fork { parent, child, .. } => {
                self.ledger.process(child, parent);
                Some(ProcessChange::Forked { child })
            }
            CaptureEvent::Exit { pid, ts_ns } => {
                self.reassembler
                    .process_exited(pid, ts_ns, &mut self.stream_events);
                Some(ProcessChange::Exited { pid })
            }
            CaptureEvent::Process(fact) => {
                self.learn(fact);
                None
            }
            other => {
                self.reassembler.handle(other, &mut self.stream_events);
                None
            }
        };
        self.drain(records);
        if let Some(ProcessChange::Exited { pid }) = change {
            // After its connections' records (just drained) were completed with them.
            self.facts.remove(&pid);
        }
        change
    }

    /// Keeps what the session learnt about a process (the latest fact wins), and tells the
    /// cost stage its place in the serving groups.
    fn learn(&mut self, fact: ProcessFact) {
        if let Some(ppid) = fact.ppid {
            self.ledger.process(fact.pid, ppid);
        }
        if let Some(id) = &fact.container_id {
            self.ledger.container(fact.pid, id.clone());
        }
        if self.facts.len() >= MAX_PROCESS_FACTS && !self.facts.contains_key(&fact.pid) {
            self.stats.process_facts_dropped += 1;
            return;
        }
        self.facts.insert(fact.pid, fact);
    }

    /// Completes a record with what is known of its process: the one place, after the
    /// tracker built it and before its cost, where a record gains facts from outside its
    /// connection.
    fn complete(&self, record: &mut RequestRecord) {
        let Some(fact) = self.facts.get(&record.pid) else {
            return;
        };
        if record.container_id.is_none() {
            record.container_id.clone_from(&fact.container_id);
        }
        if record.k8s_pod_uid.is_none() {
            record.k8s_pod_uid.clone_from(&fact.pod_uid);
        }
        if record.server_port.is_none() {
            record.server_port = fact.listen_port;
        }
    }

    fn drain(&mut self, records: &mut Vec<RequestRecord>) {
        for ev in self.stream_events.drain(..) {
            self.tracker.handle(ev, &mut self.finished);
        }
        self.send_to_ledger(records);
    }

    /// Finished records go through the cost stage (at once when no GPU is configured).
    fn send_to_ledger(&mut self, records: &mut Vec<RequestRecord>) {
        for mut record in std::mem::take(&mut self.finished) {
            self.complete(&mut record);
            self.ledger.record(record, self.now_ns, records);
        }
    }

    /// Every capture event stamped before `ts_ns` has been handed to [`Processor::handle`]:
    /// the cost stage may settle GPU intervals up to there. Until this is said, a request
    /// whose bytes still wait in the ring buffer is invisible, and an interval it overlaps
    /// would be settled as idle without it.
    pub fn captured_until(&mut self, ts_ns: u64) {
        self.captured_until_ns = self.captured_until_ns.max(ts_ns);
    }

    /// GPU samples, in time order per device.
    pub fn gpu_samples(&mut self, samples: Vec<DeviceSample>) {
        for sample in samples {
            self.ledger.sample(sample);
        }
    }

    /// `pid`'s parent is `ppid` (for the cost stage's serving trees).
    pub fn process_fact(&mut self, pid: u32, ppid: u32) {
        self.ledger.process(pid, ppid);
    }

    /// Periodic upkeep at kernel monotonic time `now_ns`.
    pub fn tick(&mut self, now_ns: u64, records: &mut Vec<RequestRecord>) {
        self.now_ns = self.now_ns.max(now_ns);
        self.reassembler.tick(now_ns, &mut self.stream_events);
        self.drain(records);
        self.tracker.evict_idle(now_ns, &mut self.finished);
        self.send_to_ledger(records);
        let known_before = self
            .tracker
            .oldest_inflight_start_ns()
            .unwrap_or(u64::MAX)
            .min(self.captured_until_ns);
        self.ledger.settle(known_before, self.now_ns, records);
        self.flush_recording();
    }

    /// End of session: in-flight requests become partial records, and every cost is
    /// settled with what is known.
    pub fn finish(&mut self, records: &mut Vec<RequestRecord>) {
        self.tracker.finish(&mut self.finished);
        self.send_to_ledger(records);
        self.ledger.finish(records);
        self.flush_recording();
    }

    fn flush_recording(&mut self) {
        if let Some(rec) = &mut self.recorder {
            if rec.flush().is_err() {
                self.stats.recording_errors += 1;
            }
        }
    }

    /// The stages' counters (kernel counters and duration are the caller's).
    pub fn summary(&self) -> Summary {
        let tracker = self.tracker.stats();
        Summary {
            // Every record comes out of the tracker, which counts them.
            pipeline: PipelineStats {
                records: tracker.records,
                ..self.stats
            },
            stream: self.reassembler.stats(),
            tracker,
            cost: self.ledger.expects_gpu().then(|| self.ledger.totals()),
            ..Summary::default()
        }
    }
}

/// Processes whose facts are kept at most (targets and GPU processes; an entry leaves at
/// the process's exit).
const MAX_PROCESS_FACTS: usize = 65_536;

/// Kernel `CLOCK_MONOTONIC` now, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Wall-clock minus monotonic, to turn kernel timestamps into dates.
pub fn clock_offset_ns() -> i64 {
    let real = i128::from(clock_ns(libc::CLOCK_REALTIME));
    let mono = i128::from(clock_ns(libc::CLOCK_MONOTONIC));
    i64::try_from(real - mono).unwrap_or(0)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and pointer.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Settings of a live session.
pub struct LiveConfig {
    pub selector: TargetSelector,
    pub processor: ProcessorConfig,
    /// Capacity of the events queue, in batches.
    pub event_queue: usize,
    /// Capacity of the records queue.
    pub record_queue: usize,
    pub duration: Option<Duration>,
    pub record_file: Option<std::fs::File>,
    /// Published every second while running: the session's counters so far.
    pub live_stats: Option<Arc<Mutex<Summary>>>,
    /// GPU sampling, when a source is configured (`processor.expects_gpu` should be set).
    pub gpu: Option<GpuSampling>,
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
            record_queue: 65_536,
            duration: None,
            record_file: None,
            live_stats: None,
            gpu: None,
        }
    }
}

/// Tracks the live target set: adds selected and forked processes, prunes threads, releases
/// exited processes, and registers the sockets they already had open. What it reads from
/// `/proc` reaches the processor as events ([`ProcessFact`], synthetic opens and closes), so
/// recordings hold it too.
struct Targets {
    proc: Proc,
    selector: TargetSelector,
    known: BTreeSet<u32>,
    /// GPU compute processes already described to the processor.
    gpu_pids: BTreeSet<u32>,
}

impl Targets {
    /// Adds `pid` as a target and tracks its open TCP connections; returns the fact of the
    /// process and synthetic open events for its connections, in that order.
    fn add(
        &mut self,
        capture: &mut Capture,
        pid: u32,
        stats: &mut PipelineStats,
    ) -> Result<Vec<CaptureEvent>, CaptureError> {
        capture.add_target(pid)?;
        if !self.known.insert(pid) {
            return Ok(Vec::new());
        }
        stats.targets_added += 1;
        let now = monotonic_ns();
        let cgroups = self.proc.cgroups(pid);
        let sockets = self.proc.open_sockets(pid);
        let listening: BTreeSet<u16> = sockets
            .iter()
            .filter_map(|s| {
                s.tcp
                    .filter(|t| t.state == TCP_LISTEN)
                    .map(|t| t.local.port())
            })
            .collect();
        let mut events = vec![CaptureEvent::Process(ProcessFact {
            pid,
            ts_ns: now,
            ppid: self.proc.ppid(pid).filter(|p| self.known.contains(p)),
            container_id: container_id(&cgroups),
            pod_uid: pod_uid(&cgroups),
            listen_port: match listening.iter().collect::<Vec<_>>()[..] {
                [&port] => Some(port),
                _ => None,
            },
        })];
        let comm = self.proc.comm(pid).unwrap_or_default();
        for s in sockets {
            // Only established TCP connections: listening sockets carry no bytes, and unix
            // sockets found open are usually IPC; new ones are still tracked at accept.
            let Some(tcp) = s.tcp.filter(|t| t.state != TCP_LISTEN) else {
                continue;
            };
            let role = if listening.contains(&tcp.local.port()) {
                Role::Server
            } else {
                Role::Client
            };
            match capture.track_socket(pid, s.fd, role) {
                Ok(conn_id) => {
                    stats.preexisting_sockets += 1;
                    events.push(CaptureEvent::Open(OpenRecord {
                        key: ConnKey { tgid: pid, conn_id },
                        fd: s.fd,
                        ts_ns: now,
                        role,
                        peer: Some(tcp.remote),
                        comm: comm.clone(),
                        preexisting: true,
                    }));
                }
                Err(e) => tracing::debug!("not tracking fd {} of {pid}: {e}", s.fd),
            }
        }
        Ok(events)
    }

    /// Facts (their containers) about GPU compute processes not seen before that are not
    /// targets, whose own facts say as much.
    fn describe_gpu_processes(&mut self, samples: &[DeviceSample]) -> Vec<CaptureEvent> {
        let mut facts = Vec::new();
        for p in samples.iter().flat_map(|s| &s.processes) {
            if self.known.contains(&p.pid) || self.gpu_pids.len() >= 4096 {
                continue;
            }
            if self.gpu_pids.insert(p.pid) {
                if let Some(id) = container_id(&self.proc.cgroups(p.pid)) {
                    facts.push(CaptureEvent::Process(ProcessFact {
                        pid: p.pid,
                        ts_ns: monotonic_ns(),
                        container_id: Some(id),
                        ..ProcessFact::default()
                    }));
                }
            }
        }
        facts
    }

    /// Picks up processes that newly match a port or name selection.
    fn rescan(
        &mut self,
        capture: &mut Capture,
        processor: &mut Processor,
        records: &mut Vec<RequestRecord>,
    ) {
        for pid in self.selector.resolve(&self.proc) {
            if self.known.contains(&pid) {
                continue;
            }
            match self.add(capture, pid, &mut processor.stats) {
                Ok(events) => {
                    for ev in events {
                        processor.handle(ev, records);
                    }
                }
                Err(e) => tracing::warn!("cannot trace new process {pid}: {e}"),
            }
        }
    }

    fn release(
        &mut self,
        capture: &mut Capture,
        pid: u32,
        stats: &mut PipelineStats,
    ) -> Vec<CaptureEvent> {
        capture.remove_target(pid);
        if self.known.remove(&pid) {
            stats.targets_released += 1;
        }
        let now = monotonic_ns();
        capture
            .untrack_process(pid)
            .into_iter()
            .map(|(fd, conn_id)| {
                CaptureEvent::Close(CloseRecord {
                    key: ConnKey { tgid: pid, conn_id },
                    fd,
                    ts_ns: now,
                    final_seq: None,
                })
            })
            .collect()
    }
}

/// Runs a live session until `stop` is set or the duration ends. Records go to `sink`
/// (called on a dedicated thread, so a slow consumer never stalls capture).
#[expect(
    clippy::too_many_lines,
    reason = "the session's actor loop and its ordered shutdown, read top to bottom"
)]
pub async fn run_live(
    mut capture: Capture,
    config: LiveConfig,
    stop: Arc<AtomicBool>,
    ready: impl FnOnce(&BTreeSet<u32>),
    mut sink: impl FnMut(RequestRecord) + Send + 'static,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let max_capture = config.processor.max_capture_bytes;
    // The records' dates and the recording's come from one reading of the clocks.
    let clock_offset = config.processor.tracker.clock_offset_ns;
    let mut processor = Processor::new(config.processor);
    if let Some(file) = config.record_file {
        let header = RecordingHeader {
            version: RECORDING_VERSION,
            clock_offset_ns: clock_offset,
            max_capture_bytes: max_capture,
        };
        processor.record_to(file, &header)?;
    }
    let mut targets = Targets {
        proc: Proc::default(),
        selector: config.selector,
        known: BTreeSet::new(),
        gpu_pids: BTreeSet::new(),
    };
    let ring = capture
        .take_ring()
        .ok_or_else(|| anyhow::anyhow!("ring buffer already taken"))?;

    // Queues between the stages.
    let (event_tx, mut event_rx) = mpsc::channel::<RingBatch>(config.event_queue.max(1));
    let (record_tx, mut record_rx) = mpsc::channel::<RequestRecord>(config.record_queue.max(1));
    let output = std::thread::Builder::new()
        .name("strike-output".into())
        .spawn(move || {
            while let Some(record) = record_rx.blocking_recv() {
                sink(record);
            }
        })?;

    // Register the initial targets and their open sockets before any event is read.
    let initial = targets.selector.resolve(&targets.proc);
    let mut records = Vec::new();
    for pid in &initial {
        for ev in targets.add(&mut capture, *pid, &mut processor.stats)? {
            processor.handle(ev, &mut records);
        }
    }
    ready(&initial);

    // GPU samples come from a thread of their own (NVML calls block for milliseconds).
    let (gpu_tx, mut gpu_rx) = mpsc::channel::<Vec<DeviceSample>>(64);
    let gpu_stop = Arc::new(AtomicBool::new(false));
    let gpu_counters = Arc::new(GpuCounters::default());
    let gpu_thread = match config.gpu {
        Some(sampling) => Some(spawn_gpu_sampler(
            sampling,
            gpu_tx.clone(),
            Arc::clone(&gpu_stop),
            Arc::clone(&gpu_counters),
        )?),
        None => None,
    };

    let reader_stop = Arc::new(AtomicBool::new(false));
    let reader_shared = Arc::new(ReaderShared::default());
    let reader = tokio::spawn(read_ring(
        ring,
        event_tx,
        reader_stop.clone(),
        Arc::clone(&reader_shared),
    ));
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut rescan = tokio::time::interval(Duration::from_secs(1));
    let deadline = config.duration.map(|d| started + d);
    let mut dropped_records = 0u64;
    let send_records = |records: &mut Vec<RequestRecord>, dropped: &mut u64| {
        for r in records.drain(..) {
            if record_tx.try_send(r).is_err() {
                *dropped += 1;
            }
        }
    };
    send_records(&mut records, &mut dropped_records);
    let mut publish_tick = tokio::time::interval(Duration::from_secs(1));
    let publish_stats = |processor: &Processor, capture: &Capture, targets: &Targets, dropped| {
        publish(config.live_stats.as_ref(), || {
            let reader = reader_shared.snapshot();
            session_summary(processor, capture, targets, &reader, dropped, started)
        });
    };

    loop {
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        tokio::select! {
            batch = event_rx.recv() => {
                let Some(batch) = batch else { break };
                process_batch(batch, &mut processor, &mut targets, &mut capture, &mut records);
            }
            _ = tick.tick() => processor.tick(monotonic_ns(), &mut records),
            _ = rescan.tick(), if targets.selector.is_dynamic() => {
                targets.rescan(&mut capture, &mut processor, &mut records);
            }
            _ = publish_tick.tick() => publish_stats(&processor, &capture, &targets, dropped_records),
            Some(samples) = gpu_rx.recv() => {
                for fact in targets.describe_gpu_processes(&samples) {
                    processor.handle(fact, &mut records);
                }
                processor.gpu_samples(samples);
            }
        }
        send_records(&mut records, &mut dropped_records);
    }

    // Stop reading, process what was already read, then close out in-flight requests.
    reader_stop.store(true, Ordering::Relaxed);
    gpu_stop.store(true, Ordering::Relaxed);
    let _ = reader.await;
    if let Some(thread) = gpu_thread {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
    drop(gpu_tx);
    while let Ok(samples) = gpu_rx.try_recv() {
        processor.gpu_samples(samples);
    }
    // The same handling as while running: a fork read only now still makes its child a
    // target, with the facts its records need.
    while let Ok(batch) = event_rx.try_recv() {
        process_batch(
            batch,
            &mut processor,
            &mut targets,
            &mut capture,
            &mut records,
        );
    }
    processor.finish(&mut records);
    send_records(&mut records, &mut dropped_records);
    drop(record_tx);
    let _ = output.join();

    let reader = reader_shared.snapshot();
    processor.stats.gpu_samples_dropped = gpu_counters.dropped.load(Ordering::Relaxed);
    processor.stats.gpu_sample_errors = gpu_counters.errors.load(Ordering::Relaxed);
    let summary = session_summary(
        &processor,
        &capture,
        &targets,
        &reader,
        dropped_records,
        started,
    );
    publish(config.live_stats.as_ref(), || summary.clone());
    Ok(summary)
}

/// Counters of the GPU sampler thread.
#[derive(Default)]
struct GpuCounters {
    /// Sample batches dropped because the processor was behind.
    dropped: AtomicU64,
    /// Sampling calls that failed.
    errors: AtomicU64,
}

/// Samples every `period` until `stop`; a full queue drops the batch (counted).
fn spawn_gpu_sampler(
    mut sampling: GpuSampling,
    tx: mpsc::Sender<Vec<DeviceSample>>,
    stop: Arc<AtomicBool>,
    counters: Arc<GpuCounters>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("strike-gpu".into())
        .spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                match sampling.source.sample(monotonic_ns()) {
                    Ok(samples) => {
                        if tx.try_send(samples).is_err() {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        if counters.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!("GPU sampling failed: {e}");
                        }
                    }
                }
                next += sampling.period;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        })
}

/// Replaces the published counters, when someone reads them.
fn publish(live: Option<&Arc<Mutex<Summary>>>, summary: impl FnOnce() -> Summary) {
    if let Some(live) = live {
        *live.lock().unwrap_or_else(PoisonError::into_inner) = summary();
    }
}

/// Every stage's counters, as of now.
fn session_summary(
    processor: &Processor,
    capture: &Capture,
    targets: &Targets,
    reader: &ReaderStats,
    dropped_records: u64,
    started: Instant,
) -> Summary {
    let mut summary = processor.summary();
    summary.pipeline.events_read = reader.events_read;
    summary.pipeline.decode_errors = reader.decode_errors;
    summary.pipeline.events_dropped = reader.events_dropped;
    summary.pipeline.records_dropped = dropped_records;
    summary.kernel = capture.counters();
    summary.targets = targets.known.iter().copied().collect();
    summary.duration_s = started.elapsed().as_secs_f64();
    summary
}

/// Hands a batch to the processor, applying what its process events change in the target set.
fn process_batch(
    batch: RingBatch,
    processor: &mut Processor,
    targets: &mut Targets,
    capture: &mut Capture,
    records: &mut Vec<RequestRecord>,
) {
    for ev in batch.events {
        if let Some(change) = processor.handle(ev, records) {
            for synthetic in apply_change(targets, capture, change, &mut processor.stats) {
                processor.handle(synthetic, records);
            }
        }
    }
    if let Some(ts) = batch.drained_before_ns {
        processor.captured_until(ts);
    }
}

fn apply_change(
    targets: &mut Targets,
    capture: &mut Capture,
    change: ProcessChange,
    stats: &mut PipelineStats,
) -> Vec<CaptureEvent> {
    match change {
        ProcessChange::Forked { child } => {
            // The kernel added the child; a thread shares its parent's tgid and is removed.
            if targets.proc.tgid(child) == Some(child) {
                targets.add(capture, child, stats).unwrap_or_default()
            } else {
                capture.remove_target(child);
                Vec::new()
            }
        }
        ProcessChange::Exited { pid } => targets.release(capture, pid, stats),
    }
}

#[derive(Default)]
struct ReaderStats {
    events_read: u64,
    decode_errors: u64,
    events_dropped: u64,
}

/// The reader task's counters, readable while it runs.
#[derive(Default)]
struct ReaderShared {
    events_read: AtomicU64,
    decode_errors: AtomicU64,
    events_dropped: AtomicU64,
}

impl ReaderShared {
    fn snapshot(&self) -> ReaderStats {
        ReaderStats {
            events_read: self.events_read.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
        }
    }
}

/// How often the reader drains the ring buffer when the kernel did not wake it.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);

/// Most events handed over in one batch.
const BATCH: usize = 1024;

/// How long before its commit to the ring an event may be stamped. The eBPF programs stamp
/// an event and commit it in one run of a few microseconds; this margin also covers a vCPU
/// descheduled in the middle of one.
const COMMIT_MARGIN_NS: u64 = 20_000_000;

/// Events read from the ring buffer, in ring order.
struct RingBatch {
    events: Vec<CaptureEvent>,
    /// On the last batch of a drain that emptied the ring: every event stamped before this
    /// kernel time is in this batch or an earlier one (or was counted as dropped).
    drained_before_ns: Option<u64>,
}

/// Reader task: drains the ring buffer whenever it is readable and hands batches to the
/// processor. A full queue drops the batch (counted); the stream stage sees the gap.
async fn read_ring(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<RingBatch>,
    stop: Arc<AtomicBool>,
    stats: Arc<ReaderShared>,
) {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the AsyncFd holds it.
    let Ok(mut fd) = (unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }) else {
        tracing::error!("cannot poll the ring buffer");
        return;
    };
    loop {
        if stop.load(Ordering::Relaxed) {
            // Last drain: whatever the kernel wrote before the stop.
            drain_ring(fd.get_mut(), &tx, &stats);
            return;
        }
        // The kernel wakes us only when a lot is waiting (see `wakeup_flags` in strike-ebpf);
        // otherwise the timer drains what accumulated. Timings are kernel timestamps, so the
        // drain interval adds latency to records, not error to their numbers.
        match tokio::time::timeout(DRAIN_INTERVAL, fd.readable_mut()).await {
            Ok(Ok(mut guard)) => {
                drain_ring(guard.get_inner_mut(), &tx, &stats);
                guard.clear_ready();
            }
            Ok(Err(e)) => {
                tracing::error!("polling the ring buffer failed: {e}");
                return;
            }
            Err(_) => drain_ring(fd.get_mut(), &tx, &stats),
        }
    }
}

/// Reads the ring until it is empty; the last batch carries the drain mark (see
/// [`Processor::captured_until`]), so it is sent even when empty.
fn drain_ring(ring: &mut RingBuf<MapData>, tx: &mpsc::Sender<RingBatch>, stats: &ReaderShared) {
    let drained_before = monotonic_ns().saturating_sub(COMMIT_MARGIN_NS);
    let mut batch = Vec::new();
    while let Some(item) = ring.next() {
        stats.events_read.fetch_add(1, Ordering::Relaxed);
        match CaptureEvent::decode(&item) {
            Ok(ev) => batch.push(ev),
            Err(e) => {
                stats.decode_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("undecodable ring record: {e}");
            }
        }
        if batch.len() >= BATCH {
            send_batch(tx, std::mem::take(&mut batch), None, stats);
        }
    }
    send_batch(tx, batch, Some(drained_before), stats);
}

/// A full queue drops the batch, counted; a later drain mark still covers its events.
fn send_batch(
    tx: &mpsc::Sender<RingBatch>,
    events: Vec<CaptureEvent>,
    drained_before_ns: Option<u64>,
    stats: &ReaderShared,
) {
    let n = events.len() as u64;
    let batch = RingBatch {
        events,
        drained_before_ns,
    };
    if tx.try_send(batch).is_err() {
        stats.events_dropped.fetch_add(n, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{capture::event::DataRecord, conn::Direction, gpu::GpuProcess};

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_000 * MS;
    const KEY: ConnKey = ConnKey {
        tgid: 42,
        conn_id: 1,
    };

    fn processor() -> Processor {
        Processor::new(ProcessorConfig {
            stream: StreamConfig::default(),
            tracker: TrackerConfig::default(),
            max_capture_bytes: 1 << 20,
            cost: CostConfig {
                gpu_price_per_hour: [("H100".to_owned(), 3.6)].into(),
                ..CostConfig::default()
            },
            expects_gpu: true,
        })
    }

    fn sample(ts_ns: u64) -> DeviceSample {
        DeviceSample {
            ts_ns,
            index: 0,
            uuid: "GPU-0".into(),
            name: "NVIDIA H100 80GB HBM3".into(),
            util_gpu_pct: None,
            mem_used_bytes: None,
            mem_total_bytes: None,
            power_mw: Some(300_000),
            energy_mj: None,
            sm_clock_mhz: None,
            processes: vec![GpuProcess {
                pid: KEY.tgid,
                used_mem_bytes: None,
                sm_util_pct: None,
            }],
        }
    }

    fn data(ts_ns: u64, dir: Direction, seq: u64, bytes: &'static [u8]) -> CaptureEvent {
        CaptureEvent::Data(DataRecord {
            key: KEY,
            fd: 7,
            tid: KEY.tgid,
            ts_ns,
            dir,
            seq,
            call_len: u32::try_from(bytes.len()).unwrap(),
            truncated: false,
            bytes: Bytes::from_static(bytes),
        })
    }

    /// One chat completion served on one connection between `T0 + 20 ms` and `T0 + 30 ms`.
    fn request_events() -> Vec<CaptureEvent> {
        const REQ: &[u8] =
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n{}";
        const RES: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 89\r\n\r\n{\"id\":\"c\",\"model\":\"m\",\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}";
        vec![
            CaptureEvent::Open(OpenRecord {
                key: KEY,
                fd: 7,
                ts_ns: T0 + 20 * MS,
                role: Role::Server,
                peer: None,
                comm: "srv".into(),
                preexisting: false,
            }),
            data(T0 + 20 * MS, Direction::Ingress, 0, REQ),
            data(T0 + 30 * MS, Direction::Egress, 0, RES),
            CaptureEvent::Close(CloseRecord {
                key: KEY,
                fd: 7,
                ts_ns: T0 + 31 * MS,
                final_seq: Some([REQ.len() as u64, RES.len() as u64]),
            }),
        ]
    }

    /// The ordering that under-charged the first request of a live session: the GPU interval
    /// that holds a request closes, and the session ticks, while the request's bytes are still
    /// in the ring buffer. The interval must wait for the capture to be read past its end.
    #[test]
    fn an_interval_waits_for_the_capture_that_overlaps_it() {
        let mut p = processor();
        let mut records = Vec::new();
        p.gpu_samples(vec![sample(T0), sample(T0 + 50 * MS)]);
        // The reader last emptied the ring at T0 + 10 ms; the request is not in flight yet.
        p.captured_until(T0 + 10 * MS);
        p.tick(T0 + 60 * MS, &mut records);
        assert_eq!(p.ledger.totals().intervals, 0, "settled before its capture");
        for ev in request_events() {
            p.handle(ev, &mut records);
        }
        p.captured_until(T0 + 70 * MS);
        p.tick(T0 + 80 * MS, &mut records);
        let [record] = &records[..] else {
            panic!("one record: {records:?}")
        };
        let totals = p.ledger.totals();
        assert_eq!((totals.intervals, totals.idle_intervals), (1, 0));
        let cost = record.cost_usd.expect("a cost");
        assert!(cost > 0.0, "{record:?}");
        assert!((cost - totals.measured_usd).abs() < 1e-15, "{totals:?}");
        assert!((record.gpu_seconds.unwrap() - 0.05).abs() < 1e-12);
    }

    /// With nothing in flight and the capture read past it, an interval is idle.
    #[test]
    fn an_interval_with_no_request_settles_idle_once_the_capture_is_read() {
        let mut p = processor();
        let mut records = Vec::new();
        p.gpu_samples(vec![sample(T0), sample(T0 + 50 * MS)]);
        p.tick(T0 + 60 * MS, &mut records);
        assert_eq!(p.ledger.totals().intervals, 0, "nothing read yet");
        p.captured_until(T0 + 55 * MS);
        p.tick(T0 + 60 * MS, &mut records);
        let totals = p.ledger.totals();
        assert_eq!((totals.intervals, totals.idle_intervals), (1, 1));
        assert!(records.is_empty());
    }
}
