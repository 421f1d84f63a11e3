//! The export stage against the SDK's in-memory span and metric exporters, and once against
//! a real collector: the fixtures here, the tests by concern beside them.

mod collector;
mod lifecycle;
mod metrics;
mod spans;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::{
    trace::{SpanKind, Status, TraceFlags},
    Array, KeyValue, SpanId, TraceId, Value,
};
use opentelemetry_sdk::{
    metrics::{
        data::{
            AggregatedMetrics, HistogramDataPoint, Metric, MetricData, ResourceMetrics,
            ScopeMetrics, SumDataPoint,
        },
        InMemoryMetricExporter,
    },
    trace::{InMemorySpanExporter, SpanData},
};

use super::*;
use crate::record::{Api, CountSource, TokenSource};

/// 2025-01-02T03:04:05.123456789Z
const START_UNIX_NS: u64 = 1_735_787_045_123_456_789;
const START_MONO: u64 = 5_000_000_000;

fn record() -> RequestRecord {
    RequestRecord {
        request_id: "0194c3a0-0000-7000-8000-000000000001".to_owned(),
        response_id: Some("chatcmpl-42".to_owned()),
        pid: 4242,
        comm: "llama-server".to_owned(),
        container_id: None,
        k8s_pod_uid: None,
        conn_id: 7,
        peer: Some("10.0.0.9:51234".to_owned()),
        method: "POST".to_owned(),
        path: "/v1/chat/completions?api_key=secret".to_owned(),
        server_address: None,
        server_port: None,
        traceparent: None,
        status: Some(200),
        api: Api::ChatCompletions,
        model: Some("tiny-q4".to_owned()),
        request_model: Some("tiny".to_owned()),
        stream: true,
        include_usage: Some(true),
        n: Some(2),
        max_tokens: Some(64),
        input_tokens: Some(12),
        output_tokens: Some(40),
        cached_input_tokens: Some(8),
        cache_write_input_tokens: Some(2),
        reasoning_output_tokens: Some(10),
        token_source: TokenSource::Usage,
        input_token_source: Some(CountSource::Usage),
        output_token_source: Some(CountSource::Usage),
        start: "2025-01-02T03:04:05.123456789Z".to_owned(),
        ttft_ms: Some(35.5),
        answer_ttft_ms: Some(61.0),
        server_load_ms: None,
        server_prompt_ms: Some(20.5),
        server_decode_ms: Some(1100.0),
        e2e_ms: Some(1250.25),
        tpot_ms: Some(30.0),
        itl_mean_ms: Some(29.0),
        itl_max_ms: Some(80.0),
        stream_events: 43,
        content_events: 40,
        request_bytes: 512,
        response_bytes: 9000,
        finish_reason: Some("stop".to_owned()),
        finish_reasons: vec![Some("stop".to_owned()), None],
        error: None,
        error_message: None,
        gpu_seconds: None,
        gpu_energy_j: None,
        cost_usd: None,
        chargeback_usd: None,
        tenant: None,
        api_key_hash: None,
        partial: false,
        partial_reason: None,
        start_ns: START_MONO,
        response_head_ns: Some(START_MONO + 1_000_000),
        // Monotonic stamps (exact ns) win over the rounded ms fields.
        first_token_ns: Some(START_MONO + 35_500_001),
        last_token_ns: Some(START_MONO + 1_200_000_000),
        end_ns: Some(START_MONO + 1_250_250_003),
    }
}

fn error_record() -> RequestRecord {
    RequestRecord {
        status: Some(503),
        error: Some("http_503".to_owned()),
        error_message: Some("prompt 'my secret' too long".to_owned()),
        ttft_ms: None,
        tpot_ms: None,
        first_token_ns: None,
        output_tokens: None,
        finish_reasons: Vec::new(),
        stream: false,
        ..record()
    }
}

fn at(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns)
}

struct Harness {
    exporter: Exporter,
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
}

fn harness(config: &ExportConfig) -> Harness {
    let spans = InMemorySpanExporter::default();
    let metrics = InMemoryMetricExporter::default();
    let exporter = Exporter::with_exporters(config, spans.clone(), metrics.clone()).unwrap();
    Harness {
        exporter,
        spans,
        metrics,
    }
}

impl Harness {
    fn finished_spans(&self) -> Vec<SpanData> {
        self.exporter.flush().unwrap();
        self.spans.get_finished_spans().unwrap()
    }

    /// Flushes, then hands the named metric of the last export to `f`.
    fn metric<R>(&self, name: &str, f: impl FnOnce(&Metric) -> R) -> R {
        self.exporter.flush().unwrap();
        let all = self.metrics.get_finished_metrics().unwrap();
        let last = all.last().expect("a metrics export");
        let metric = last
            .scope_metrics()
            .flat_map(ScopeMetrics::metrics)
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("metric {name} exported"));
        f(metric)
    }
}

fn attr<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn f64_histogram(metric: &Metric) -> Vec<HistogramDataPoint<f64>> {
    match metric.data() {
        AggregatedMetrics::F64(MetricData::Histogram(h)) => h.data_points().cloned().collect(),
        other => panic!("{} is not an f64 histogram: {other:?}", metric.name()),
    }
}

fn u64_histogram(metric: &Metric) -> Vec<HistogramDataPoint<u64>> {
    match metric.data() {
        AggregatedMetrics::U64(MetricData::Histogram(h)) => h.data_points().cloned().collect(),
        other => panic!("{} is not a u64 histogram: {other:?}", metric.name()),
    }
}

fn u64_sum(metric: &Metric) -> Vec<SumDataPoint<u64>> {
    match metric.data() {
        AggregatedMetrics::U64(MetricData::Sum(s)) => s.data_points().cloned().collect(),
        other => panic!("{} is not a u64 sum: {other:?}", metric.name()),
    }
}

fn sorted(attrs: impl Iterator<Item = KeyValue>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = attrs
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect();
    v.sort();
    v
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    v.sort();
    v
}

fn f64_sum(metric: &Metric) -> Vec<SumDataPoint<f64>> {
    match metric.data() {
        AggregatedMetrics::F64(MetricData::Sum(s)) => s.data_points().cloned().collect(),
        other => panic!("{} is not an f64 sum: {other:?}", metric.name()),
    }
}
