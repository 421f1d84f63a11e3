//! The reader task: drains the kernel's ring buffer into bounded batches for the processor,
//! marking how far the capture has been read.

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

use super::incident::{EventsDropped, Incident as _, Incidents, UndecodableEvent};
use crate::{clock::monotonic_ns, event::CaptureEvent};

/// What the reader task shares with the session while it runs: its count of records read,
/// and the session's incidents (undecodable records, dropped batches).
#[derive(Default)]
pub(super) struct ReaderShared {
    pub(super) events_read: AtomicU64,
    pub(super) incidents: Arc<Incidents>,
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
pub(super) struct RingBatch {
    pub(super) events: Vec<CaptureEvent>,
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
    loop {
        if stop.load(Ordering::Relaxed) {
            // Last drain: whatever the kernel wrote before the stop.
            drain_ring(fd.get_mut(), &tx, &stats);
            return Ok(());
        }
        // The kernel wakes us only when a lot is waiting (see `wakeup_flags` in strike-ebpf);
        // otherwise the timer drains what accumulated. Timings are kernel timestamps, so the
        // drain interval adds latency to records, not error to their numbers.
        match tokio::time::timeout(DRAIN_INTERVAL, fd.readable_mut()).await {
            Ok(Ok(mut guard)) => {
                drain_ring(guard.get_inner_mut(), &tx, &stats);
                guard.clear_ready();
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => drain_ring(fd.get_mut(), &tx, &stats),
        }
    }
}

/// Reads the ring until it is empty; the last batch carries the drain mark (see
/// [`super::Processor::captured_until`]), so it is sent even when empty.
fn drain_ring(ring: &mut RingBuf<MapData>, tx: &mpsc::Sender<RingBatch>, stats: &ReaderShared) {
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
        EventsDropped { count: n }.emit(&stats.incidents);
    }
}
