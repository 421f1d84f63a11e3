//! The reader task: drains the kernel's ring buffer into batches for the processor,
//! marking how far the capture has been read. The queue between them is bounded in bytes
//! (`queue_bytes`); when the processor falls behind, data events are dropped (counted: the
//! streams see gaps) and control events are held back for it, so the target and socket
//! sets stay right.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::mpsc,
};

use super::incident::{
    ControlEventsDropped, EventsDropped, Incident as _, Incidents, UndecodableEvent,
};
use crate::{clock::monotonic_ns, event::CaptureEvent, telemetry::Liveness};

/// What the reader task shares with the session while it runs: its count of records read,
/// the bytes queued for the processor, and the session's incidents (undecodable records,
/// dropped events).
#[derive(Default)]
pub(super) struct ReaderShared {
    pub(super) events_read: AtomicU64,
    pub(super) incidents: Arc<Incidents>,
    /// Its `waiting_bytes`: bytes of the batches sent and not yet processed; the session
    /// subtracts a batch's [`RingBatch::bytes`] once it has handled it.
    pub(super) liveness: Arc<Liveness>,
    /// The byte budget of the queue.
    pub(super) queue_bytes: usize,
}

/// How often the reader drains the ring buffer when the kernel did not wake it.
const DRAIN_INTERVAL: Duration = Duration::from_millis(10);

/// Most events handed over in one batch.
const BATCH: usize = 1024;

/// How long before its commit to the ring an event may be stamped. The eBPF programs stamp
/// an event and commit it in one run of a few microseconds; this margin also covers a vCPU
/// descheduled in the middle of one.
const COMMIT_MARGIN_NS: u64 = 20_000_000;

/// Control events held back for the processor at most, when its queue is full: some
/// 7 MB, far more than a node opens and closes in the time a queue takes to drain.
const MAX_HELD_CONTROL: usize = 65_536;

/// Bytes an event takes in the queue: its payload and its fixed part.
fn queued_size(ev: &CaptureEvent) -> usize {
    size_of::<CaptureEvent>()
        + match ev {
            CaptureEvent::Data(d) => d.bytes.len(),
            _ => 0,
        }
}

/// Events read from the ring buffer, in ring order.
pub(super) struct RingBatch {
    pub(super) events: Vec<CaptureEvent>,
    /// What the events count against the queue's byte budget.
    pub(super) bytes: usize,
    /// On the last batch of a drain that emptied the ring: every event stamped before this
    /// kernel time is in this batch or an earlier one (or was counted as dropped).
    pub(super) drained_before_ns: Option<u64>,
}

/// Reader task: drains the ring buffer whenever it is readable and hands batches to the
/// processor. A full queue drops the batch (counted); the stream stage sees the gap. An
/// error ends capture: the session counts it as a failed task.
pub(super) async fn read_ring(
    ring: RingBuf<MapData>,
    tx: mpsc::Sender<RingBatch>,
    stop: Arc<AtomicBool>,
    stats: Arc<ReaderShared>,
) -> std::io::Result<()> {
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long as
    // the AsyncFd holds it.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }?;
    let mut out = Outbox {
        tx,
        held: Vec::new(),
    };
    loop {
        if stop.load(Ordering::Relaxed) {
            // Last drain: whatever the kernel wrote before the stop.
            drain_ring(fd.get_mut(), &mut out, &stats);
            return Ok(());
        }
        // The kernel wakes us only when a lot is waiting (see `wakeup_flags` in strike-ebpf);
        // otherwise the timer drains what accumulated. Timings are kernel timestamps, so the
        // drain interval adds latency to records, not error to their numbers.
        match tokio::time::timeout(DRAIN_INTERVAL, fd.readable_mut()).await {
            Ok(Ok(mut guard)) => {
                drain_ring(guard.get_inner_mut(), &mut out, &stats);
                guard.clear_ready();
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => drain_ring(fd.get_mut(), &mut out, &stats),
        }
    }
}

/// The reader's end of the queue, with the control events it holds back while the queue
/// is full.
struct Outbox {
    tx: mpsc::Sender<RingBatch>,
    held: Vec<CaptureEvent>,
}

/// Reads the ring until it is empty; the last batch carries the drain mark (see
/// [`super::Processor::captured_until`]), so it is sent even when empty.
fn drain_ring(ring: &mut RingBuf<MapData>, out: &mut Outbox, stats: &ReaderShared) {
    let drained_before = monotonic_ns().saturating_sub(COMMIT_MARGIN_NS);
    // Allocated at the first event: a drain that finds the ring empty allocates nothing.
    let mut batch = Vec::new();
    while let Some(item) = ring.next() {
        if batch.capacity() == 0 {
            batch.reserve(BATCH);
        }
        stats.events_read.fetch_add(1, Ordering::Relaxed);
        match CaptureEvent::decode(&item) {
            Ok(ev) => batch.push(ev),
            Err(e) => UndecodableEvent { error: &e }.emit(&stats.incidents),
        }
        if batch.len() >= BATCH {
            out.send(std::mem::take(&mut batch), None, stats);
        }
    }
    out.send(batch, Some(drained_before), stats);
}

impl Outbox {
    /// Sends a batch, with the control events held back before it. Over the byte budget,
    /// its data events are dropped (counted); a full queue holds its control events back
    /// for the next batch. A later drain mark still covers what was dropped.
    fn send(
        &mut self,
        mut events: Vec<CaptureEvent>,
        drained_before_ns: Option<u64>,
        stats: &ReaderShared,
    ) {
        if !self.held.is_empty() {
            self.held.append(&mut events);
            events = std::mem::take(&mut self.held);
        }
        let mut bytes: usize = events.iter().map(queued_size).sum();
        let queued = stats.liveness.waiting_bytes.load(Ordering::Relaxed);
        if queued.saturating_add(bytes) > stats.queue_bytes {
            let dropped = keep_control(&mut events);
            EventsDropped { count: dropped }.emit(&stats.incidents);
            bytes = events.iter().map(queued_size).sum();
        }
        let batch = RingBatch {
            events,
            bytes,
            drained_before_ns,
        };
        // Counted before the send, so the session's subtraction never comes first.
        stats
            .liveness
            .waiting_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        match self.tx.try_send(batch) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(mut batch)) => {
                stats
                    .liveness
                    .waiting_bytes
                    .fetch_sub(bytes, Ordering::Relaxed);
                let dropped = keep_control(&mut batch.events);
                EventsDropped { count: dropped }.emit(&stats.incidents);
                let room = MAX_HELD_CONTROL.saturating_sub(self.held.len());
                if batch.events.len() > room {
                    let lost = batch.events.len() - room;
                    ControlEventsDropped { count: lost as u64 }.emit(&stats.incidents);
                    // The oldest go: reconciliation repairs what they said.
                    batch.events.drain(..lost);
                }
                self.held = batch.events;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                stats
                    .liveness
                    .waiting_bytes
                    .fetch_sub(bytes, Ordering::Relaxed);
            }
        }
    }
}

/// Drops the data events of `events`, keeping the control events in order; returns how
/// many were dropped.
fn keep_control(events: &mut Vec<CaptureEvent>) -> u64 {
    let before = events.len();
    events.retain(|ev| !matches!(ev, CaptureEvent::Data(_)));
    (before - events.len()) as u64
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::conn::{ConnKey, Direction};
    use crate::event::{SocketClose, SocketData};

    fn data(n: usize) -> CaptureEvent {
        CaptureEvent::Data(SocketData {
            key: ConnKey {
                tgid: 1,
                conn_id: 1,
            },
            fd: 3,
            tid: 1,
            ts_ns: 1,
            dir: Direction::Ingress,
            seq: 0,
            call_len: u32::try_from(n).unwrap(),
            truncated: false,
            bytes: Bytes::from(vec![b'x'; n]),
        })
    }

    fn close(conn_id: u64) -> CaptureEvent {
        CaptureEvent::Close(SocketClose {
            key: ConnKey { tgid: 1, conn_id },
            fd: 3,
            ts_ns: 2,
            final_seq: None,
        })
    }

    fn shared(queue_bytes: usize) -> ReaderShared {
        ReaderShared {
            queue_bytes,
            ..ReaderShared::default()
        }
    }

    #[test]
    fn over_the_byte_budget_data_is_dropped_and_control_kept() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut out = Outbox {
            tx,
            held: Vec::new(),
        };
        let stats = shared(100_000);
        out.send(vec![data(60_000), close(1)], None, &stats);
        // The queue now holds 60 KB and change: the next 60 KB do not fit.
        out.send(vec![data(60_000), close(2), data(10)], Some(9), &stats);
        let first = rx.try_recv().unwrap();
        assert_eq!(first.events.len(), 2);
        let second = rx.try_recv().unwrap();
        assert_eq!(second.events, vec![close(2)]);
        assert_eq!(second.drained_before_ns, Some(9));
        assert_eq!(
            stats.liveness.waiting_bytes.load(Ordering::Relaxed),
            first.bytes + second.bytes
        );
        assert!(first.bytes >= 60_000 && second.bytes < 1_000);
        let mut s = crate::telemetry::PipelineStats::default();
        stats.incidents.record_into(&mut s);
        assert_eq!((s.events_dropped, s.control_events_dropped), (2, 0));
    }

    #[test]
    fn a_full_queue_holds_control_events_back_in_order() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut out = Outbox {
            tx,
            held: Vec::new(),
        };
        let stats = shared(usize::MAX);
        out.send(vec![close(1)], None, &stats);
        // Full: the data goes, the closes wait.
        out.send(vec![close(2), data(5)], None, &stats);
        out.send(vec![close(3)], None, &stats);
        assert_eq!(out.held, vec![close(2), close(3)]);
        assert_eq!(rx.try_recv().unwrap().events, vec![close(1)]);
        // Room again: the held ones go first, then the new batch.
        out.send(vec![data(5), close(4)], Some(1), &stats);
        assert_eq!(
            rx.try_recv().unwrap().events,
            vec![close(2), close(3), data(5), close(4)]
        );
        assert!(out.held.is_empty());
        let mut s = crate::telemetry::PipelineStats::default();
        stats.incidents.record_into(&mut s);
        assert_eq!((s.events_dropped, s.control_events_dropped), (1, 0));
    }

    #[test]
    fn held_control_events_are_bounded_and_the_excess_counted() {
        let (tx, _rx) = mpsc::channel(1);
        let mut out = Outbox {
            tx,
            held: Vec::new(),
        };
        let stats = shared(usize::MAX);
        out.send(vec![close(0)], None, &stats);
        let many: Vec<CaptureEvent> = (1..=MAX_HELD_CONTROL as u64 + 10).map(close).collect();
        out.send(many, None, &stats);
        assert_eq!(out.held.len(), MAX_HELD_CONTROL);
        // The newest are kept.
        assert_eq!(out.held.last(), Some(&close(MAX_HELD_CONTROL as u64 + 10)));
        let mut s = crate::telemetry::PipelineStats::default();
        stats.incidents.record_into(&mut s);
        assert_eq!(s.control_events_dropped, 10);
    }
}
