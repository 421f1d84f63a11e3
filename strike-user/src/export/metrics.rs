//! One `RequestRecord` → points on the `GenAI` server histograms and Strike's own instruments.

use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::{
    metrics::{Counter, Histogram, Meter, ObservableCounter, ObservableGauge},
    KeyValue,
};

use super::{
    bump,
    labels::{LabelLimiter, Origin},
    semconv as sc,
    spans::{count_source_name, operation_name, SpanOptions},
    Counters,
};
use crate::telemetry::ExportStats;
use crate::{cost::ledger::CostTotals, record::RequestRecord, telemetry::Summary};

/// The instruments Strike records into, built once per meter.
#[derive(Debug, Clone)]
pub(crate) struct Instruments {
    request_duration: Histogram<f64>,
    time_to_first_token: Histogram<f64>,
    time_per_output_token: Histogram<f64>,
    token_usage: Histogram<u64>,
    requests: Counter<u64>,
    cost: Counter<f64>,
    gpu_time: Counter<f64>,
    gpu_energy: Counter<f64>,
    tokens_per_joule: Histogram<f64>,
    labels: Arc<LabelLimiter>,
    /// The exporter's counters (`label_overflows`).
    counters: Arc<Counters>,
}

impl Instruments {
    pub(super) fn new(meter: &Meter, counters: Arc<Counters>) -> Self {
        Self {
            labels: Arc::default(),
            counters,
            request_duration: meter
                .f64_histogram(sc::METRIC_SERVER_REQUEST_DURATION)
                .with_unit("s")
                .with_description(
                    "Generative AI server request duration such as time-to-last byte or last output token.",
                )
                .with_boundaries(sc::REQUEST_DURATION_BUCKETS.to_vec())
                .build(),
            time_to_first_token: meter
                .f64_histogram(sc::METRIC_SERVER_TIME_TO_FIRST_TOKEN)
                .with_unit("s")
                .with_description("Time to generate first token for successful responses.")
                .with_boundaries(sc::TIME_TO_FIRST_TOKEN_BUCKETS.to_vec())
                .build(),
            time_per_output_token: meter
                .f64_histogram(sc::METRIC_SERVER_TIME_PER_OUTPUT_TOKEN)
                .with_unit("s")
                .with_description(
                    "Time per output token generated after the first token for successful responses.",
                )
                .with_boundaries(sc::TIME_PER_OUTPUT_TOKEN_BUCKETS.to_vec())
                .build(),
            token_usage: meter
                .u64_histogram(sc::METRIC_STRIKE_TOKEN_USAGE)
                .with_unit("{token}")
                .with_description("Input and output tokens per request, as Strike saw them.")
                .with_boundaries(sc::TOKEN_USAGE_BUCKETS.to_vec())
                .build(),
            requests: meter
                .u64_counter(sc::METRIC_STRIKE_REQUESTS)
                .with_unit("{request}")
                .with_description("`GenAI` requests seen by Strike.")
                .build(),
            cost: meter
                .f64_counter(sc::METRIC_STRIKE_COST)
                .with_unit("USD")
                .with_description("Cost of requests: their shares of GPU time and energy at the configured prices.")
                .build(),
            gpu_time: meter
                .f64_counter(sc::METRIC_STRIKE_GPU_TIME)
                .with_unit("s")
                .with_description("GPU time attributed to requests.")
                .build(),
            gpu_energy: meter
                .f64_counter(sc::METRIC_STRIKE_GPU_ENERGY)
                .with_unit("J")
                .with_description("GPU energy attributed to requests.")
                .build(),
            tokens_per_joule: meter
                .f64_histogram(sc::METRIC_STRIKE_TOKENS_PER_JOULE)
                .with_unit("{token}/J")
                .with_description("Input plus output tokens per joule of attributed GPU energy, per request.")
                .with_boundaries(sc::TOKENS_PER_JOULE_BUCKETS.to_vec())
                .build(),
        }
    }

    /// A bounded label ([`LabelLimiter`]), its overflow counted.
    fn label(&self, key: &'static str, value: &str, origin: Origin) -> KeyValue {
        let (value, overflowed) = self.labels.admit(key, value, origin);
        if overflowed {
            bump(&self.counters.label_overflows, 1);
        }
        KeyValue::new(key, value)
    }

    /// Records one request. Requests that are not `GenAI` operations are not recorded.
    /// Returns whether the record was recorded.
    pub(crate) fn record(&self, record: &RequestRecord, options: &SpanOptions) -> bool {
        let Some(operation) = operation_name(record.api) else {
            return false;
        };
        let mut attrs = Vec::with_capacity(8);
        attrs.push(KeyValue::new(sc::GEN_AI_OPERATION_NAME, operation));
        attrs.push(KeyValue::new(
            sc::GEN_AI_PROVIDER_NAME,
            options.provider_name.clone(),
        ));
        // The server's model name first: a client asking for it is then that value.
        if let Some(model) = &record.model {
            attrs.push(self.label(sc::GEN_AI_RESPONSE_MODEL, model, Origin::Server));
            self.labels
                .admit(sc::GEN_AI_REQUEST_MODEL, model, Origin::Server);
        }
        if let Some(model) = &record.request_model {
            attrs.push(self.label(sc::GEN_AI_REQUEST_MODEL, model, Origin::Client));
        }
        if let Some(address) = &record.server_address {
            attrs.push(KeyValue::new(sc::SERVER_ADDRESS, address.clone()));
        }
        if let Some(port) = record.server_port {
            attrs.push(KeyValue::new(sc::SERVER_PORT, i64::from(port)));
        }
        let ok = record.error.is_none();

        // Successful-request attributes: the latency histograms are "for successful
        // responses" and carry no error.type.
        if ok {
            if let Some(ttft) = record.ttft_ms {
                self.time_to_first_token.record(ttft / 1000.0, &attrs);
            }
            if let Some(tpot) = record.tpot_ms {
                self.time_per_output_token.record(tpot / 1000.0, &attrs);
            }
        }
        let base_len = attrs.len();
        let token_attrs = |token_type: &'static str, source| {
            let mut a = attrs[..base_len].to_vec();
            a.push(KeyValue::new(sc::GEN_AI_TOKEN_TYPE, token_type));
            if let Some(source) = source {
                a.push(KeyValue::new(
                    sc::STRIKE_TOKEN_COUNT_SOURCE,
                    count_source_name(source),
                ));
            }
            a
        };
        if let Some(input) = record.input_tokens {
            self.token_usage.record(
                input,
                &token_attrs(sc::token_type::INPUT, record.input_token_source),
            );
        }
        if !record.api.generates_nothing() {
            if let Some(output) = record.output_tokens {
                self.token_usage.record(
                    output,
                    &token_attrs(sc::token_type::OUTPUT, record.output_token_source),
                );
            }
        }

        if let Some(error) = &record.error {
            attrs.push(KeyValue::new(sc::ERROR_TYPE, error.clone()));
        }
        if let Some(e2e) = record.e2e_ms {
            self.request_duration.record(e2e / 1000.0, &attrs);
        }
        if let Some(status) = record.status {
            attrs.push(KeyValue::new(
                sc::HTTP_RESPONSE_STATUS_CODE,
                i64::from(status),
            ));
        }
        self.requests.add(1, &attrs);
        self.record_cost(record, &attrs[..base_len]);
        true
    }

    /// Cost, GPU time, energy and tokens per joule, by the model attributes and the tenant.
    fn record_cost(&self, record: &RequestRecord, base: &[KeyValue]) {
        let Some(cost) = record.cost_usd else {
            return;
        };
        let mut attrs = base.to_vec();
        if let Some(tenant) = &record.tenant {
            attrs.push(self.label(sc::STRIKE_TENANT, tenant, Origin::Client));
        }
        self.cost.add(cost, &attrs);
        if let Some(s) = record.gpu_seconds {
            self.gpu_time.add(s, &attrs);
        }
        if let Some(j) = record.gpu_energy_j.filter(|j| *j > 0.0) {
            self.gpu_energy.add(j, &attrs);
            let tokens = record.input_tokens.unwrap_or(0) + record.output_tokens.unwrap_or(0);
            if tokens > 0 {
                self.tokens_per_joule
                    .record(crate::num::u64_to_f64(tokens) / j, &attrs);
            }
        }
    }
}

/// Reads the pipeline's and the exporter's counters, as of now.
type Reader = Arc<dyn Fn() -> (Summary, ExportStats) + Send + Sync>;

/// One observed value and its attributes.
type Points = Vec<(u64, Vec<KeyValue>)>;

/// Strike's self-telemetry: the pipeline's and the exporter's counters as observable
/// instruments, read at each collection (OTLP export or Prometheus scrape). Dropping this
/// stops nothing (the SDK keeps the callbacks); it is kept for clarity of ownership.
pub(crate) struct Observers {
    _counters: Vec<ObservableCounter<u64>>,
    _gauges: Vec<ObservableGauge<u64>>,
    _idle: Vec<ObservableCounter<f64>>,
}

/// GPU cost no request took (idle devices), from the cost stage's totals.
type ObserveIdle = fn(&CostTotals) -> f64;

const IDLE_COUNTERS: &[(&str, &str, &str, ObserveIdle)] = &[
    (
        sc::METRIC_STRIKE_GPU_IDLE_COST,
        "USD",
        "GPU cost of intervals with no request in flight on the device.",
        |c| c.idle_usd,
    ),
    (
        sc::METRIC_STRIKE_GPU_IDLE_TIME,
        "s",
        "GPU time with no request in flight on the device.",
        |c| c.idle_gpu_s,
    ),
    (
        sc::METRIC_STRIKE_GPU_IDLE_ENERGY,
        "J",
        "GPU energy with no request in flight on the device.",
        |c| c.idle_energy_j,
    ),
];

/// What one self-telemetry counter observes.
type Observe = fn(&Summary, &ExportStats) -> Points;

fn one(v: u64) -> Points {
    vec![(v, Vec::new())]
}

fn by(key: &'static str, values: &[(&'static str, u64)]) -> Points {
    values
        .iter()
        .map(|&(name, v)| (v, vec![KeyValue::new(key, name)]))
        .collect()
}

/// Strike's self-telemetry counters: name, unit, description, what they observe.
const SELF_COUNTERS: &[(&str, &str, &str, Observe)] = &[
    (
        sc::METRIC_STRIKE_CAPTURE_EVENTS,
        "{event}",
        "Events the kernel programs emitted.",
        |s, _| one(s.kernel.events),
    ),
    (
        sc::METRIC_STRIKE_CAPTURE_PAYLOAD,
        "By",
        "Payload bytes captured in the kernel.",
        |s, _| one(s.kernel.bytes),
    ),
    (
        sc::METRIC_STRIKE_CAPTURE_LOST,
        "{event}",
        "Capture events lost, by reason: the kernel ring buffer was full (data events), the ring's space kept for control events was full too (opens, closes, forks, exits), the processing queue was over its byte budget (data events) or full even for control events, or an event did not decode.",
        |s, _| {
            by(
                sc::STRIKE_REASON,
                &[
                    ("ringbuf_full", s.kernel.ringbuf_full),
                    ("control_ringbuf_full", s.kernel.control_events_lost),
                    ("queue_full", s.pipeline.events_dropped),
                    ("control_queue_full", s.pipeline.control_events_dropped),
                    ("decode_error", s.pipeline.decode_errors),
                ],
            )
        },
    ),
    (
        sc::METRIC_STRIKE_CAPTURE_TRUNCATED,
        "{call}",
        "Syscalls whose payload was cut at the per-call capture limit.",
        |s, _| one(s.kernel.truncated_calls),
    ),
    (
        sc::METRIC_STRIKE_CAPTURE_TRUNCATED_PAYLOAD,
        "By",
        "Payload bytes not captured because of the per-call capture limit.",
        |s, _| one(s.kernel.truncated_bytes),
    ),
    (
        sc::METRIC_STRIKE_CAPTURE_MAP_FULL,
        "{event}",
        "Kernel map inserts that failed because the map was full, by map.",
        |s, _| {
            by(
                sc::STRIKE_MAP,
                &[
                    ("socks", s.kernel.socks_map_full),
                    ("pending", s.kernel.pending_map_full),
                    ("targets", s.kernel.targets_map_full),
                ],
            )
        },
    ),
    (
        sc::METRIC_STRIKE_CAPTURE_READ_FAULTS,
        "{event}",
        "Payload copies from user memory that faulted.",
        |s, _| one(s.kernel.read_faults),
    ),
    (
        sc::METRIC_STRIKE_STREAM_GAPS,
        "{gap}",
        "Holes in reassembled connection streams.",
        |s, _| one(s.stream.gaps),
    ),
    (
        sc::METRIC_STRIKE_STREAM_GAP_PAYLOAD,
        "By",
        "Bytes missing from reassembled connection streams.",
        |s, _| one(s.stream.gap_bytes),
    ),
    (
        sc::METRIC_STRIKE_STREAM_EVICTIONS,
        "{connection}",
        "Connections evicted from reassembly (idle, or over the limit).",
        |s, _| one(s.stream.connections_evicted),
    ),
    (
        sc::METRIC_STRIKE_RECORDS,
        "{record}",
        "Request records produced, by whether they were built from incomplete capture.",
        |s, _| {
            let partial = s.tracker.partial_records;
            by(
                sc::STRIKE_PARTIAL,
                &[
                    ("true", partial),
                    ("false", s.pipeline.records.saturating_sub(partial)),
                ],
            )
        },
    ),
    (
        sc::METRIC_STRIKE_RECORDS_DROPPED,
        "{record}",
        "Records dropped because the output stage was behind.",
        |s, _| one(s.pipeline.records_dropped),
    ),
    (
        sc::METRIC_STRIKE_PARSE_ERRORS,
        "{error}",
        "Captured bytes that did not parse, by what failed: an HTTP request or response head, a JSON body, an SSE or NDJSON stream, a compressed body (corrupt, or in a coding Strike does not decode).",
        |s, _| {
            let t = &s.tracker;
            by(
                sc::STRIKE_REASON,
                &[
                    ("request", t.protocol.request_parse_errors),
                    ("response", t.protocol.response_parse_errors),
                    ("json", t.json_errors),
                    ("sse", t.sse_errors),
                    ("ndjson", t.ndjson_errors),
                    ("content_encoding_corrupt", t.content_encoding_corrupt),
                    ("content_encoding_unsupported", t.content_encoding_unsupported),
                ],
            )
        },
    ),
    (
        sc::METRIC_STRIKE_PARSE_LIMITS,
        "{event}",
        "Parser bounds reached, by bound: a message head over its limit, a JSON body over its hard bound (not parsed), a JSON body read past the bytes kept for parsing (text left out of the copy and measured: not partial), a compressed body stopped at the decoder's bound (output cap or ratio), too many pipelined requests, a response with no request.",
        |s, _| {
            let t = &s.tracker;
            by(
                sc::STRIKE_REASON,
                &[
                    ("head_too_large", t.protocol.heads_too_large),
                    ("body_over_limit", t.bodies_over_limit),
                    ("body_text_elided", t.bodies_elided),
                    ("content_encoding_over_limit", t.content_encoding_over_limit),
                    ("pipeline_overflow", t.protocol.pipeline_overflows),
                    ("unmatched_response", t.protocol.unmatched_responses),
                ],
            )
        },
    ),
    (
        sc::METRIC_STRIKE_TRACKER_EVICTIONS,
        "{connection}",
        "Connections evicted from request tracking (idle, or over the limit).",
        |s, _| one(s.tracker.connections_evicted),
    ),
    (
        sc::METRIC_STRIKE_MEMORY_BUDGET_EVICTIONS,
        "{connection}",
        "Connections evicted to keep a stage's per-connection buffers under its byte budget, by stage (also counted in that stage's evictions).",
        |s, _| {
            by(
                sc::STRIKE_STAGE,
                &[
                    ("stream", s.stream.budget_evictions),
                    ("tracker", s.tracker.budget_evictions),
                ],
            )
        },
    ),
    (
        sc::METRIC_STRIKE_GPU_SAMPLES_LOST,
        "{batch}",
        "GPU sample batches lost, by reason: the processor's queue was full, or the sampling call failed.",
        |s, _| {
            by(
                sc::STRIKE_REASON,
                &[
                    ("queue_full", s.pipeline.gpu_samples_dropped),
                    ("error", s.pipeline.gpu_sample_errors),
                ],
            )
        },
    ),
    (
        sc::METRIC_STRIKE_SESSION_FAILURES,
        "{event}",
        "Failures inside the session, by kind: recording writes, process facts not kept (too many processes), processes that could not be traced, tasks or threads that failed.",
        |s, _| {
            let p = &s.pipeline;
            by(
                sc::STRIKE_REASON,
                &[
                    ("recording_write", p.recording_errors),
                    ("process_facts_dropped", p.process_facts_dropped),
                    ("target_not_added", p.targets_not_added),
                    ("task", p.task_failures),
                ],
            )
        },
    ),
    (
        sc::METRIC_STRIKE_EXPORT_SPANS,
        "{span}",
        "Spans by outcome: submitted to the export queue, exported, failed (collector down or slow, after retries), dropped (queue full), sampled out.",
        |_, e| {
            by(
                sc::STRIKE_OUTCOME,
                &[
                    ("submitted", e.spans_submitted),
                    ("exported", e.spans_exported),
                    ("failed", e.spans_failed),
                    ("dropped", e.spans_dropped),
                    ("sampled_out", e.spans_sampled_out),
                ],
            )
        },
    ),
    (
        sc::METRIC_STRIKE_EXPORT_METRIC_FAILURES,
        "{export}",
        "Metric exports that failed.",
        |_, e| one(e.metric_exports_failed),
    ),
];

impl Observers {
    pub(crate) fn new(
        meter: &Meter,
        stats: Arc<Mutex<Summary>>,
        export: impl Fn() -> ExportStats + Send + Sync + 'static,
    ) -> Self {
        let read: Reader = Arc::new(move || {
            let summary = stats.lock().unwrap_or_else(PoisonError::into_inner).clone();
            (summary, export())
        });
        let counters = SELF_COUNTERS
            .iter()
            .map(|&(name, unit, description, observe)| {
                let read = Arc::clone(&read);
                meter
                    .u64_observable_counter(name)
                    .with_unit(unit)
                    .with_description(description)
                    .with_callback(move |observer| {
                        let (summary, export) = read();
                        for (value, attrs) in observe(&summary, &export) {
                            observer.observe(value, &attrs);
                        }
                    })
                    .build()
            })
            .collect();
        let targets = {
            let read = Arc::clone(&read);
            meter
                .u64_observable_gauge(sc::METRIC_STRIKE_TARGETS)
                .with_unit("{process}")
                .with_description("Processes being traced.")
                .with_callback(move |observer| {
                    let (summary, _) = read();
                    observer.observe(summary.targets.len() as u64, &[]);
                })
                .build()
        };
        let buffered = {
            let read = Arc::clone(&read);
            meter
                .u64_observable_gauge(sc::METRIC_STRIKE_MEMORY_BUFFERED)
                .with_unit("By")
                .with_description(
                    "Bytes the per-connection buffers of a stage hold now, by stage (bounded by its budget).",
                )
                .with_callback(move |observer| {
                    let (summary, _) = read();
                    for (stage, bytes) in [
                        ("stream", summary.stream.buffered_bytes),
                        ("tracker", summary.tracker.buffered_bytes),
                    ] {
                        observer.observe(bytes, &[KeyValue::new(sc::STRIKE_STAGE, stage)]);
                    }
                })
                .build()
        };
        let idle = IDLE_COUNTERS
            .iter()
            .map(|&(name, unit, description, observe)| {
                let read = Arc::clone(&read);
                meter
                    .f64_observable_counter(name)
                    .with_unit(unit)
                    .with_description(description)
                    .with_callback(move |observer| {
                        let (summary, _) = read();
                        if let Some(cost) = &summary.cost {
                            observer.observe(observe(cost), &[]);
                        }
                    })
                    .build()
            })
            .collect();
        Self {
            _counters: counters,
            _gauges: vec![targets, buffered],
            _idle: idle,
        }
    }
}
