//! The live session's incidents, one type per kind (vector's internal events): emitting one
//! counts it in [`Incidents`], which every actor of the session shares (the processor, the
//! ring reader, the GPU sampler, the session loop), and logs it: the first time, then each
//! time its count reaches a power of two, so a storm of drops shows in the log without
//! flooding it. The counts reach the summary, `/v1/status` and the `strike.session.*`
//! metrics through [`Incidents::record_into`].

use std::{
    fmt::Display,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::telemetry::PipelineStats;

/// The session's incident counters.
#[derive(Debug, Default)]
pub struct Incidents {
    events_dropped: AtomicU64,
    control_events_dropped: AtomicU64,
    decode_errors: AtomicU64,
    records_dropped: AtomicU64,
    recording_errors: AtomicU64,
    recording_bytes_dropped: AtomicU64,
    gpu_samples_dropped: AtomicU64,
    gpu_sample_errors: AtomicU64,
    process_facts_dropped: AtomicU64,
    targets_not_added: AtomicU64,
    task_failures: AtomicU64,
}

impl Incidents {
    /// Copies the counts into `stats`.
    pub fn record_into(&self, stats: &mut PipelineStats) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        stats.events_dropped = get(&self.events_dropped);
        stats.control_events_dropped = get(&self.control_events_dropped);
        stats.decode_errors = get(&self.decode_errors);
        stats.records_dropped = get(&self.records_dropped);
        stats.recording_errors = get(&self.recording_errors);
        stats.recording_bytes_dropped = get(&self.recording_bytes_dropped);
        stats.gpu_samples_dropped = get(&self.gpu_samples_dropped);
        stats.gpu_sample_errors = get(&self.gpu_sample_errors);
        stats.process_facts_dropped = get(&self.process_facts_dropped);
        stats.targets_not_added = get(&self.targets_not_added);
        stats.task_failures = get(&self.task_failures);
    }
}

/// One kind of incident: emitting it counts and logs it.
pub trait Incident {
    fn emit(self, incidents: &Incidents);
}

/// Adds `n` to `counter`; returns the new total when it is worth a log line (the first,
/// then each power of two crossed).
fn count(counter: &AtomicU64, n: u64) -> Option<u64> {
    let before = counter.fetch_add(n, Ordering::Relaxed);
    let after = before.saturating_add(n);
    (n > 0 && (before == 0 || before.ilog2() != after.ilog2())).then_some(after)
}

/// The processor's queue was full: a batch of capture events was dropped. The streams they
/// belonged to see a gap, and their records are partial.
pub struct EventsDropped {
    pub count: u64,
}

impl Incident for EventsDropped {
    fn emit(self, incidents: &Incidents) {
        if let Some(total) = count(&incidents.events_dropped, self.count) {
            tracing::warn!(
                "the processor is behind: capture events dropped ({total} so far); their \
                 requests are reported partial"
            );
        }
    }
}

/// The processor was so far behind that even the control events (opens, closes, forks,
/// exits) the reader holds back for it overflowed: reconciliation repairs the target and
/// socket sets within a pass, and the streams involved see gaps.
pub struct ControlEventsDropped {
    pub count: u64,
}

impl Incident for ControlEventsDropped {
    fn emit(self, incidents: &Incidents) {
        if let Some(total) = count(&incidents.control_events_dropped, self.count) {
            tracing::warn!(
                "the processor is far behind: control events dropped ({total} so far);                  reconciliation with /proc repairs the target and socket sets"
            );
        }
    }
}

/// A ring record that does not decode: a bug or a version mismatch, never expected.
pub struct UndecodableEvent<'a> {
    pub error: &'a dyn Display,
}

impl Incident for UndecodableEvent<'_> {
    fn emit(self, incidents: &Incidents) {
        if let Some(total) = count(&incidents.decode_errors, 1) {
            tracing::error!("undecodable ring record ({total} so far): {}", self.error);
        }
    }
}

/// The output was behind: a finished record was dropped.
pub struct RecordDropped;

impl Incident for RecordDropped {
    fn emit(self, incidents: &Incidents) {
        if let Some(total) = count(&incidents.records_dropped, 1) {
            tracing::warn!("the record output is behind: records dropped ({total} so far)");
        }
    }
}

/// A write to the recording file (`--record`) failed: the recording is incomplete.
pub struct RecordingWriteFailed<'a> {
    pub error: &'a dyn Display,
}

impl Incident for RecordingWriteFailed<'_> {
    fn emit(self, incidents: &Incidents) {
        if let Some(total) = count(&incidents.recording_errors, 1) {
            tracing::error!(
                "writing the recording failed ({total} so far): {}",
                self.error
            );
        }
    }
}

/// Events were left out of the recording (`--record`): its writer is behind, failed, or
/// the recording reached its size cap. A replay sees them as gaps.
pub struct RecordingIncomplete {
    pub bytes: u64,
    pub why: &'static str,
}

impl Incident for RecordingIncomplete {
    fn emit(self, incidents: &Incidents) {
        if let Some(total) = count(&incidents.recording_bytes_dropped, self.bytes) {
            tracing::warn!(
                "events left out of the recording: {} ({total} bytes so far)",
                self.why
            );
        }
    }
}

/// The processor was behind: a batch of GPU samples was dropped.
pub struct GpuSamplesDropped;

impl Incident for GpuSamplesDropped {
    fn emit(self, incidents: &Incidents) {
        if let Some(total) = count(&incidents.gpu_samples_dropped, 1) {
            tracing::warn!("the processor is behind: GPU sample batches dropped ({total} so far)");
        }
    }
}

/// A GPU sampling call failed.
pub struct GpuSampleFailed<'a> {
    pub error: &'a dyn Display,
}

impl Incident for GpuSampleFailed<'_> {
    fn emit(self, incidents: &Incidents) {
        if let Some(total) = count(&incidents.gpu_sample_errors, 1) {
            tracing::warn!("GPU sampling failed ({total} so far): {}", self.error);
        }
    }
}

/// What the session learnt about a process was not kept: too many processes are known.
pub struct ProcessFactDropped {
    pub pid: u32,
}

impl Incident for ProcessFactDropped {
    fn emit(self, incidents: &Incidents) {
        if let Some(total) = count(&incidents.process_facts_dropped, 1) {
            tracing::warn!(
                "too many processes known: the container and pod of {} are not kept ({total} \
                 so far)",
                self.pid
            );
        }
    }
}

/// A process that should be traced (selected, or a forked worker) could not be added.
pub struct TargetNotAdded<'a> {
    pub pid: u32,
    pub error: &'a dyn Display,
}

impl Incident for TargetNotAdded<'_> {
    fn emit(self, incidents: &Incidents) {
        if let Some(total) = count(&incidents.targets_not_added, 1) {
            tracing::warn!(
                "cannot trace process {} ({total} so far): {}",
                self.pid,
                self.error
            );
        }
    }
}

/// A task or thread of the session failed (the ring reader, the GPU sampler, the record
/// output): what it held is lost. Always logged.
pub struct TaskFailed<'a> {
    pub task: &'static str,
    pub error: &'a dyn Display,
}

impl Incident for TaskFailed<'_> {
    fn emit(self, incidents: &Incidents) {
        incidents.task_failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!("{} failed: {}", self.task, self.error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_at_the_first_and_each_power_of_two() {
        let c = AtomicU64::new(0);
        let logged: Vec<u64> = (0..20).filter_map(|_| count(&c, 1)).collect();
        assert_eq!(logged, [1, 2, 4, 8, 16]);
        // A batch that crosses a power of two logs once; one that does not, never.
        assert_eq!(count(&c, 100), Some(120));
        assert_eq!(count(&c, 1), None);
        assert_eq!(count(&c, 0), None);
        assert_eq!(c.load(Ordering::Relaxed), 121);
    }

    #[test]
    fn every_incident_counts_in_its_own_place() {
        let i = Incidents::default();
        let error: &dyn Display = &"boom";
        EventsDropped { count: 3 }.emit(&i);
        ControlEventsDropped { count: 4 }.emit(&i);
        UndecodableEvent { error }.emit(&i);
        RecordDropped.emit(&i);
        RecordDropped.emit(&i);
        RecordingWriteFailed { error }.emit(&i);
        RecordingIncomplete {
            bytes: 5,
            why: "test",
        }
        .emit(&i);
        GpuSamplesDropped.emit(&i);
        GpuSampleFailed { error }.emit(&i);
        ProcessFactDropped { pid: 7 }.emit(&i);
        TargetNotAdded { pid: 8, error }.emit(&i);
        TaskFailed {
            task: "the ring reader",
            error,
        }
        .emit(&i);
        let mut s = PipelineStats::default();
        i.record_into(&mut s);
        assert_eq!(
            s,
            PipelineStats {
                events_dropped: 3,
                control_events_dropped: 4,
                decode_errors: 1,
                records_dropped: 2,
                recording_errors: 1,
                recording_bytes_dropped: 5,
                gpu_samples_dropped: 1,
                gpu_sample_errors: 1,
                process_facts_dropped: 1,
                targets_not_added: 1,
                task_failures: 1,
                ..PipelineStats::default()
            }
        );
    }
}
