//! Strike's self-telemetry: every drop, truncation, gap and eviction, from every stage, in
//! one summary that `strike trace` prints at the end and writes as JSON (`--summary-file`).

use std::{fmt::Write as _, sync::atomic::Ordering};

use serde::Serialize;

use crate::{
    capture::KernelCounters, cost::ledger::CostTotals, llm::TrackerStats, stream::StreamStats,
};

/// Counters of the live pipeline itself (between the stages).
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PipelineStats {
    /// Ring-buffer records read by userspace.
    pub events_read: u64,
    /// Records that did not decode (a bug or a version mismatch; never expected).
    pub decode_errors: u64,
    /// Data events dropped because the processing stage was behind (its queue was over its
    /// byte budget, or full).
    pub events_dropped: u64,
    /// Control events (open, close, fork, exit) dropped: the reader keeps them when it
    /// drops data, up to a bound; past it they are lost, and reconciliation repairs.
    pub control_events_dropped: u64,
    /// Records produced.
    pub records: u64,
    /// Records dropped because the output was behind.
    pub records_dropped: u64,
    /// Processes added as targets (selected, children, picked up while running).
    pub targets_added: u64,
    /// Processes that should have been traced but could not be added (the kernel's target
    /// map full, a process gone before it was added).
    pub targets_not_added: u64,
    /// Processes released (exited).
    pub targets_released: u64,
    /// Processes a `/proc` scan found after their exit event had released them (still
    /// being torn down by the kernel), not taken again.
    pub exited_targets_not_readded: u64,
    /// Sockets found already open at start or on fork and tracked.
    pub preexisting_sockets: u64,
    /// Tracked sockets ended without a close event of their own: by `close_range`, by
    /// `execve` (close-on-exec), or found gone by reconciliation.
    pub sockets_closed_implicitly: u64,
    /// Targets released or added by reconciling the kernel's target map with `/proc` (an
    /// exit or fork event lost, a pid reused).
    pub reconciled_targets: u64,
    /// Socket map entries removed by reconciliation (their process or fd gone unseen).
    pub reconciled_sockets: u64,
    /// Connections given up on (not HTTP, upgraded) whose capture the kernel stopped.
    pub connections_ignored: u64,
    /// Writes to the recording file that failed.
    pub recording_errors: u64,
    /// Bytes of events left out of the recording: its writer was behind or failed, or the
    /// recording reached its size cap (`--record-max-mib`).
    pub recording_bytes_dropped: u64,
    /// GPU sample batches dropped because the processor was behind.
    pub gpu_samples_dropped: u64,
    /// GPU sampling calls that failed.
    pub gpu_sample_errors: u64,
    /// Facts about processes not kept because too many processes were known.
    pub process_facts_dropped: u64,
    /// Tasks or threads of the session that failed (the ring reader, the GPU sampler, the
    /// record output: a panicking exporter loses the records it had not taken).
    pub task_failures: u64,
}

/// Whether the processor makes progress: the session stamps each turn of its loop, and
/// the reader adds what it queues for it. `/healthz` fails when events wait and no turn
/// came for a while: a processor stuck on something is a dead agent, and the kubelet
/// restarts it.
#[derive(Debug, Default)]
pub struct Liveness {
    /// Monotonic ns of the processor's last turn.
    progress_ns: std::sync::atomic::AtomicU64,
    /// Bytes of capture events queued for the processor and not handled yet.
    pub waiting_bytes: std::sync::atomic::AtomicUsize,
}

impl Liveness {
    /// The processor made progress at `now_ns`.
    pub fn progressed(&self, now_ns: u64) {
        self.progress_ns.store(now_ns, Ordering::Relaxed);
    }

    /// How long the processor has made no progress while events wait, if it has not for
    /// longer than `patience_ns`.
    pub fn stalled_for(&self, now_ns: u64, patience_ns: u64) -> Option<u64> {
        let since = now_ns.saturating_sub(self.progress_ns.load(Ordering::Relaxed));
        (self.waiting_bytes.load(Ordering::Relaxed) > 0 && since > patience_ns).then_some(since)
    }
}

/// Counters of the export stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct ExportStats {
    /// Records handed to the exporter (`export::Exporter::export`).
    pub records: u64,
    /// Records that are not `GenAI` operations (`Api::Other`): neither span nor metrics.
    pub not_genai: u64,
    /// Records whose `start` is not RFC 3339: metrics only, no span.
    pub bad_start: u64,
    /// Records given after shutdown: ignored.
    pub after_shutdown: u64,
    /// Spans the sampler dropped (the client's `traceparent` says not sampled, or
    /// `OTEL_TRACES_SAMPLER`).
    pub spans_sampled_out: u64,
    /// Spans ended into the batch processor.
    pub spans_submitted: u64,
    /// Spans in batches the OTLP exporter delivered.
    pub spans_exported: u64,
    /// Spans in batches the OTLP exporter failed to deliver (collector down, timeout).
    pub spans_failed: u64,
    /// Spans dropped because `queue_size` spans were already waiting for export.
    pub spans_dropped: u64,
    /// Metric exports that failed.
    pub metric_exports_failed: u64,
    /// Label values past their bound (distinct models or tenants), exported as `_other`.
    pub label_overflows: u64,
}

/// Everything a session counted.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub duration_s: f64,
    pub targets: Vec<u32>,
    pub kernel: KernelCounters,
    pub pipeline: PipelineStats,
    pub stream: StreamStats,
    pub tracker: TrackerStats,
    /// The export stage's counters (`strike run` with OTLP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<ExportStats>,
    /// The cost stage's totals (with a GPU source): measured = attributed + idle.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostTotals>,
}

impl Summary {
    /// Requests seen but built from incomplete capture.
    pub fn partial_records(&self) -> u64 {
        self.tracker.partial_records
    }

    /// The human summary printed at the end of `strike trace`.
    pub fn human(&self) -> String {
        let k = &self.kernel;
        let p = &self.pipeline;
        let s = &self.stream;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "strike: summary after {:.1}s, {} target process(es)",
            self.duration_s,
            self.targets.len()
        );
        let _ = writeln!(
            out,
            "  requests    {} records ({} partial), {} dropped at output",
            p.records,
            self.partial_records(),
            p.records_dropped
        );
        let _ = writeln!(
            out,
            "  capture     {} events, {} bytes; ring buffer full: {} events lost ({} control events); truncated: {} calls ({} bytes)",
            k.events, k.bytes, k.ringbuf_full, k.control_events_lost, k.truncated_calls, k.truncated_bytes
        );
        let _ = writeln!(
            out,
            "  streams     {} connections ({} evicted, {} of them over the memory budget, {} without open, {} not HTTP and no longer copied); gaps: {} ({} bytes); queue drops: {} events ({} control events)",
            s.connections_opened, s.connections_evicted, s.budget_evictions, s.connections_without_open, p.connections_ignored, s.gaps, s.gap_bytes, p.events_dropped, p.control_events_dropped
        );
        let _ = writeln!(
            out,
            "  sockets     {} closed without a close event (close_range, execve, reconciliation); {} dup copies not followed; reconciled: {} targets, {} socket entries",
            p.sockets_closed_implicitly, k.socket_dups, p.reconciled_targets, p.reconciled_sockets
        );
        let _ = writeln!(
            out,
            "  maps        socket map full: {}, pending map full: {}, target map full: {}, read faults: {}, decode errors: {}",
            k.socks_map_full, k.pending_map_full, k.targets_map_full, k.read_faults, p.decode_errors
        );
        let t = &self.tracker;
        let parse_errors = t.protocol.request_parse_errors
            + t.protocol.response_parse_errors
            + t.json_errors
            + t.sse_errors
            + t.ndjson_errors;
        let coding = t.content_encoding_corrupt
            + t.content_encoding_unsupported
            + t.content_encoding_over_limit;
        if parse_errors
            + coding
            + t.protocol.heads_too_large
            + t.bodies_over_limit
            + t.bodies_elided
            + t.protocol.pipeline_overflows
            + t.budget_evictions
            > 0
        {
            let _ = writeln!(
                out,
                "  parsing     {} request / {} response parse errors, {} JSON, {} SSE, {} NDJSON; {} heads too large, {} bodies over their bound, {} large bodies read with text left out, {} pipelining overflows; {} connections evicted ({} over the memory budget)",
                t.protocol.request_parse_errors, t.protocol.response_parse_errors, t.json_errors, t.sse_errors, t.ndjson_errors, t.protocol.heads_too_large, t.bodies_over_limit, t.bodies_elided, t.protocol.pipeline_overflows, t.connections_evicted, t.budget_evictions
            );
        }
        if coding > 0 {
            let _ = writeln!(
                out,
                "  encodings   compressed bodies not decoded: {} corrupt, {} in an unsupported coding, {} stopped at the decoder's bound",
                t.content_encoding_corrupt, t.content_encoding_unsupported, t.content_encoding_over_limit
            );
        }
        if p.gpu_samples_dropped
            + p.gpu_sample_errors
            + p.recording_errors
            + p.recording_bytes_dropped
            + p.process_facts_dropped
            + p.targets_not_added
            + p.task_failures
            > 0
        {
            let _ = writeln!(
                out,
                "  session     GPU samples: {} batches dropped, {} failed calls; recording write errors: {}, bytes left out: {}; process facts dropped: {}; processes not traced: {}; failed tasks: {}",
                p.gpu_samples_dropped, p.gpu_sample_errors, p.recording_errors, p.recording_bytes_dropped, p.process_facts_dropped, p.targets_not_added, p.task_failures
            );
        }
        if let Some(c) = &self.cost {
            let _ = writeln!(
                out,
                "  cost        measured ${:.6} over {} device intervals ({:.1} GPU-s, {:.0} J) = attributed ${:.6} + idle ${:.6} ({} idle intervals); {} records costed, {} forced by max_hold_s",
                c.measured_usd, c.intervals, c.measured_gpu_s, c.measured_energy_j, c.attributed_usd, c.idle_usd, c.idle_intervals, c.records_costed, c.records_forced
            );
        }
        if let Some(e) = &self.export {
            let _ = writeln!(
                out,
                "  export      {} spans submitted: {} exported, {} failed, {} dropped (queue full), {} sampled out; {} metric exports failed",
                e.spans_submitted, e.spans_exported, e.spans_failed, e.spans_dropped, e.spans_sampled_out, e.metric_exports_failed
            );
        }
        out
    }
}
