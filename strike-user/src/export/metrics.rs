//! One `RequestRecord` → points on the `GenAI` server histograms and Strike's own instruments.

use std::sync::{Arc, Mutex, PoisonError};

use opentelemetry::{
    metrics::{Counter, Histogram, Meter, ObservableCounter, ObservableGauge},
    KeyValue,
};

use super::ExportStats;
use super::{
    semconv as sc,
    spans::{count_source_name, operation_name, SpanOptions},
};
use crate::{
    record::{Api, RequestRecord},
    telemetry::Summary,
};

/// The instruments Strike records into, built once per meter.
#[derive(Debug, Clone)]
pub(crate) struct Instruments {
    request_duration: Histogram<f64>,
    time_to_first_token: Histogram<f64>,
    time_per_output_token: Histogram<f64>,
    token_usage: Histogram<u64>,
    requests: Counter<u64>,
}

impl Instruments {
    pub(crate) fn new(meter: &Meter) -> Self {
        Self {
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
        }
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
        if let Some(model) = &record.request_model {
            attrs.push(KeyValue::new(sc::GEN_AI_REQUEST_MODEL, model.clone()));
        }
        if let Some(model) = &record.model {
            attrs.push(KeyValue::new(sc::GEN_AI_RESPONSE_MODEL, model.clone()));
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
        if record.api != Api::Embeddings {
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
        true
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
}

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
        "Capture events lost, by reason: the kernel ring buffer was full, the processing queue was full, or an event did not decode.",
        |s, _| {
            by(
                sc::STRIKE_REASON,
                &[
                    ("ringbuf_full", s.kernel.ringbuf_full),
                    ("queue_full", s.pipeline.events_dropped),
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
        Self {
            _counters: counters,
            _gauges: vec![targets],
        }
    }
}
