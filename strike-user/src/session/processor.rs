//! The processor: capture events (and GPU samples) in, finished records out. Synchronous,
//! free of I/O but for the optional recording, and shared by the live session and
//! `strike replay`: the one place a record is built and completed.

use std::{collections::HashMap, io, sync::Arc};

use crate::{
    capture::capture_file::{BackgroundRecorder, CaptureFileHeader, Handover},
    conn::{ConnKey, StreamEvent},
    cost::{ledger::Ledger, CostConfig},
    event::{CaptureEvent, ProcessFact},
    gpu::DeviceSample,
    llm::{RequestTracker, TrackerConfig},
    record::RequestRecord,
    stream::{Reassembler, StreamConfig},
    telemetry::{PipelineStats, Summary},
};

use super::incident::{
    Incident as _, Incidents, ProcessFactDropped, RecordingIncomplete, RecordingWriteFailed,
};

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
    recorder: Option<BackgroundRecorder>,
    /// The session's counters that are not incidents (targets, sockets).
    pub stats: PipelineStats,
    /// The session's incidents, shared with its other actors.
    incidents: Arc<Incidents>,
    /// Connections the tracker gave up on (not HTTP), for the live session to stop their
    /// capture in the kernel; `None` unless asked for (a replay has no kernel to tell).
    given_up: Option<Vec<ConnKey>>,
    given_up_scratch: Vec<ConnKey>,
}

/// What the live session must do about a process event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessChange {
    Forked {
        child: u32,
    },
    Exited {
        pid: u32,
    },
    /// Its close-on-exec sockets are gone: which, only `/proc` says.
    Execed {
        pid: u32,
    },
    /// Its fds `first..=last` are closed.
    ClosedRange {
        pid: u32,
        first: u32,
        last: u32,
    },
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
            incidents: Arc::default(),
            given_up: None,
            given_up_scratch: Vec::new(),
        }
    }

    /// From now on, keeps the connections the tracker gives up on for
    /// [`Processor::take_given_up`] (the live session marks them in the kernel).
    pub fn report_given_up(&mut self) {
        self.given_up.get_or_insert_with(Vec::new);
    }

    /// The connections given up on since the last call.
    pub fn take_given_up(&mut self, out: &mut Vec<ConnKey>) {
        if let Some(keys) = &mut self.given_up {
            out.append(keys);
        }
    }

    /// The incident counters, for the session's other actors to count in.
    pub fn incidents(&self) -> &Arc<Incidents> {
        &self.incidents
    }

    /// Records every capture event to `file` from now on, on a thread of its own, up to
    /// `max_bytes`.
    pub fn write_capture_file(
        &mut self,
        file: std::fs::File,
        header: &CaptureFileHeader,
        max_bytes: u64,
    ) -> io::Result<()> {
        let recorder =
            BackgroundRecorder::start(file, header, max_bytes).map_err(io::Error::other)?;
        self.recorder = Some(recorder);
        Ok(())
    }

    /// Feeds one capture event; completed records are pushed to `records`.
    pub fn handle(
        &mut self,
        event: CaptureEvent,
        records: &mut Vec<RequestRecord>,
    ) -> Option<ProcessChange> {
        if let Some(outcome) = self.recorder.as_mut().and_then(|r| r.record(&event)) {
            self.recording_outcome(outcome);
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
                self.ledger.process_exited(pid, ts_ns);
                Some(ProcessChange::Exited { pid })
            }
            CaptureEvent::Process(fact) => {
                self.learn(fact);
                None
            }
            // What ends the sockets is the session's business: it sends their closes.
            CaptureEvent::Exec { pid, .. } => Some(ProcessChange::Execed { pid }),
            CaptureEvent::CloseRange {
                pid, first, last, ..
            } => Some(ProcessChange::ClosedRange { pid, first, last }),
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
            ProcessFactDropped { pid: fact.pid }.emit(&self.incidents);
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
        self.tracker.take_given_up(&mut self.given_up_scratch);
        for key in self.given_up_scratch.drain(..) {
            // The same in a replay, so a recording gives the live counters.
            self.reassembler.ignore(key);
            if let Some(keys) = &mut self.given_up {
                keys.push(key);
            }
        }
        self.send_to_ledger(records);
    }

    /// Finished records go through the cost stage (at once when no GPU is configured).
    fn send_to_ledger(&mut self, records: &mut Vec<RequestRecord>) {
        // Taken out and put back, so its buffer is kept for the next records.
        let mut finished = std::mem::take(&mut self.finished);
        for mut record in finished.drain(..) {
            self.complete(&mut record);
            self.ledger.admit(record, self.now_ns, records);
        }
        self.finished = finished;
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

    /// `pid`'s parent is `ppid` (for the cost stage's serving trees), from outside the
    /// capture (a GPU replay file's process lines).
    pub fn process_parent(&mut self, pid: u32, ppid: u32) {
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
        self.close_recording();
    }

    fn flush_recording(&mut self) {
        if let Some(outcome) = self.recorder.as_mut().and_then(BackgroundRecorder::flush) {
            self.recording_outcome(outcome);
        }
    }

    /// Ends the recording: what is left is written, and the writer's error, if any, said.
    fn close_recording(&mut self) {
        let Some(mut recorder) = self.recorder.take() else {
            return;
        };
        let (last, result) = recorder.finish();
        if let Some(outcome) = last {
            self.recording_outcome(outcome);
        }
        if let Err(error) = result {
            RecordingWriteFailed { error: &error }.emit(&self.incidents);
        }
    }

    fn recording_outcome(&self, outcome: Handover) {
        let (bytes, why) = match outcome {
            Handover::Written => return,
            Handover::QueueFull(n) => (n, "the disk is behind"),
            Handover::Capped(n) => (n, "the recording reached its size cap"),
            Handover::WriterFailed(n) => (n, "writing it failed"),
        };
        RecordingIncomplete { bytes, why }.emit(&self.incidents);
    }

    /// The stages' counters (kernel counters and duration are the caller's).
    pub fn summary(&self) -> Summary {
        let tracker = self.tracker.stats();
        // Every record comes out of the tracker, which counts them.
        let mut pipeline = PipelineStats {
            records: tracker.records,
            ..self.stats
        };
        self.incidents.record_into(&mut pipeline);
        Summary {
            pipeline,
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

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{
        conn::{ConnKey, Direction, Role},
        event::{SocketClose, SocketData, SocketOpen},
        gpu::GpuProcess,
    };

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
        CaptureEvent::Data(SocketData {
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
            CaptureEvent::Open(SocketOpen {
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
            CaptureEvent::Close(SocketClose {
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
