//! The export stage against the SDK's in-memory span and metric exporters.

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
        token_source: TokenSource::Usage,
        input_token_source: Some(CountSource::Usage),
        output_token_source: Some(CountSource::Usage),
        start: "2025-01-02T03:04:05.123456789Z".to_owned(),
        ttft_ms: Some(35.5),
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

#[test]
fn span_has_name_kind_times_and_event() {
    let h = harness(&ExportConfig::default());
    h.exporter.export(&record());
    let spans = h.finished_spans();
    assert_eq!(spans.len(), 1);
    let span = &spans[0];
    assert_eq!(span.name, "chat tiny");
    assert_eq!(span.span_kind, SpanKind::Server);
    assert_eq!(span.start_time, at(START_UNIX_NS));
    assert_eq!(span.end_time, at(START_UNIX_NS + 1_250_250_003));
    assert_eq!(span.status, Status::Unset);
    assert_eq!(span.events.len(), 1);
    assert_eq!(span.events[0].name, "gen_ai.first_token");
    assert_eq!(span.events[0].timestamp, at(START_UNIX_NS + 35_500_001));
    assert_eq!(span.parent_span_id, SpanId::INVALID);
    assert_eq!(span.instrumentation_scope.name(), "strike");
}

#[test]
fn span_has_exactly_the_mapped_attributes() {
    let h = harness(&ExportConfig::default());
    h.exporter.export(&RequestRecord {
        server_address: Some("127.0.0.1".to_owned()),
        server_port: Some(8080),
        ..record()
    });
    let span = h.finished_spans().remove(0);
    let expected = pairs(&[
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "openai"),
        ("gen_ai.system", "openai"),
        ("gen_ai.request.model", "tiny"),
        ("gen_ai.response.model", "tiny-q4"),
        ("gen_ai.response.id", "chatcmpl-42"),
        ("gen_ai.request.max_tokens", "64"),
        ("gen_ai.request.choice.count", "2"),
        ("gen_ai.request.stream", "true"),
        ("gen_ai.response.finish_reasons", "[\"stop\",\"\"]"),
        ("gen_ai.usage.input_tokens", "12"),
        ("gen_ai.usage.output_tokens", "40"),
        ("gen_ai.usage.cache_read.input_tokens", "8"),
        ("gen_ai.response.time_to_first_chunk", "0.0355"),
        ("server.address", "127.0.0.1"),
        ("server.port", "8080"),
        ("client.address", "10.0.0.9"),
        ("client.port", "51234"),
        ("http.request.method", "POST"),
        ("http.response.status_code", "200"),
        ("url.path", "/v1/chat/completions"),
        ("strike.request_id", "0194c3a0-0000-7000-8000-000000000001"),
        ("strike.pid", "4242"),
        ("strike.comm", "llama-server"),
        ("strike.conn_id", "7"),
        ("strike.token_source", "usage"),
        ("strike.input_token_source", "usage"),
        ("strike.output_token_source", "usage"),
        ("strike.partial", "false"),
        ("strike.request_bytes", "512"),
        ("strike.response_bytes", "9000"),
        ("strike.ttft_ms", "35.5"),
        ("strike.e2e_ms", "1250.25"),
        ("strike.tpot_ms", "30"),
        ("strike.itl_mean_ms", "29"),
        ("strike.itl_max_ms", "80"),
        ("strike.stream_events", "43"),
        ("strike.content_events", "40"),
    ]);
    assert_eq!(sorted(span.attributes.iter().cloned()), expected);
    // Types, not just renderings.
    assert_eq!(
        attr(&span, "gen_ai.usage.input_tokens"),
        Some(&Value::I64(12))
    );
    assert_eq!(
        attr(&span, "gen_ai.response.finish_reasons"),
        Some(&Value::Array(Array::String(vec![
            "stop".into(),
            String::new().into()
        ])))
    );
    assert_eq!(
        attr(&span, "gen_ai.request.stream"),
        Some(&Value::Bool(true))
    );
}

#[test]
fn error_span_has_error_status_and_no_message_by_default() {
    let h = harness(&ExportConfig::default());
    h.exporter.export(&error_record());
    let span = h.finished_spans().remove(0);
    assert_eq!(span.status, Status::error("http_503"));
    assert_eq!(attr(&span, "error.type"), Some(&Value::from("http_503")));
    assert!(attr(&span, "strike.error_message").is_none());
    assert!(span.events.is_empty(), "no first token, no event");
    let rendered = format!("{span:?}");
    assert!(!rendered.contains("my secret"), "{rendered}");
}

#[test]
fn error_message_only_when_enabled() {
    let h = harness(&ExportConfig {
        include_error_messages: true,
        ..ExportConfig::default()
    });
    h.exporter.export(&error_record());
    let span = h.finished_spans().remove(0);
    assert_eq!(
        attr(&span, "strike.error_message"),
        Some(&Value::from("prompt 'my secret' too long"))
    );
    assert_eq!(span.status, Status::error("prompt 'my secret' too long"));
}

#[test]
fn times_fall_back_to_ms_fields_without_monotonic_stamps() {
    let r = RequestRecord {
        first_token_ns: None,
        end_ns: None,
        ..record()
    };
    let t = span_times(&r).unwrap();
    assert_eq!(t.start, at(START_UNIX_NS));
    assert_eq!(t.first_token, Some(at(START_UNIX_NS + 35_500_000)));
    assert_eq!(t.end, at(START_UNIX_NS + 1_250_250_000));
    let r = RequestRecord {
        end_ns: None,
        e2e_ms: None,
        ..record()
    };
    assert_eq!(span_times(&r).unwrap().end, at(START_UNIX_NS));
    let r = RequestRecord {
        start: String::new(),
        ..record()
    };
    assert_eq!(span_times(&r), None);
}

#[test]
fn span_names_follow_operation_and_model() {
    let h = harness(&ExportConfig::default());
    h.exporter.export(&RequestRecord {
        api: Api::Completions,
        ..record()
    });
    h.exporter.export(&RequestRecord {
        api: Api::Embeddings,
        request_model: None,
        model: Some("bge".to_owned()),
        ..record()
    });
    h.exporter.export(&RequestRecord {
        request_model: None,
        model: None,
        ..record()
    });
    let names: Vec<String> = h
        .finished_spans()
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    assert_eq!(names, ["text_completion tiny", "embeddings bge", "chat"]);
}

#[test]
fn embeddings_carry_no_output_tokens() {
    let h = harness(&ExportConfig::default());
    h.exporter.export(&RequestRecord {
        api: Api::Embeddings,
        output_tokens: Some(0),
        ..record()
    });
    let span = h.finished_spans().remove(0);
    assert!(attr(&span, "gen_ai.usage.output_tokens").is_none());
    let points = h.metric("strike.token.usage", u64_histogram);
    assert_eq!(points.len(), 1);
    assert!(points[0]
        .attributes()
        .any(|kv| kv == &KeyValue::new("gen_ai.token.type", "input")));
}

#[test]
fn other_requests_are_neither_spans_nor_metrics() {
    let h = harness(&ExportConfig::default());
    h.exporter.export(&RequestRecord {
        api: Api::Other,
        ..record()
    });
    assert!(h.finished_spans().is_empty());
    let stats = h.exporter.stats();
    assert_eq!(stats.records, 1);
    assert_eq!(stats.not_genai, 1);
    assert_eq!(stats.spans_submitted, 0);
    h.exporter.flush().unwrap();
    let exported = h.metrics.get_finished_metrics().unwrap();
    assert!(exported
        .iter()
        .flat_map(ResourceMetrics::scope_metrics)
        .all(|s| s.metrics().next().is_none()));
}

#[test]
fn span_joins_the_traceparent_trace() {
    let h = harness(&ExportConfig::default());
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    h.exporter.export(&RequestRecord {
        traceparent: Some((tp).to_owned()),
        ..record()
    });
    let span = h.finished_spans().remove(0);
    assert_eq!(
        span.span_context.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(
        span.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
    assert!(span.parent_span_is_remote);
    assert_ne!(span.span_context.span_id(), span.parent_span_id);
    assert!(span.span_context.is_sampled());
}

#[test]
fn unsampled_traceparent_is_sampled_out_but_metrics_recorded() {
    let h = harness(&ExportConfig::default());
    h.exporter.export(&RequestRecord {
        traceparent: Some(("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").to_owned()),
        ..record()
    });
    assert!(h.finished_spans().is_empty());
    assert_eq!(h.exporter.stats().spans_sampled_out, 1);
    let points = h.metric("gen_ai.server.request.duration", f64_histogram);
    assert_eq!(points[0].count(), 1);
}

#[test]
fn invalid_traceparent_starts_a_new_trace() {
    let h = harness(&ExportConfig::default());
    h.exporter.export(&RequestRecord {
        traceparent: Some(("garbage").to_owned()),
        ..record()
    });
    let span = h.finished_spans().remove(0);
    assert_eq!(span.parent_span_id, SpanId::INVALID);
    assert!(!span.parent_span_is_remote);
}

#[test]
fn parse_traceparent_accepts_valid_values() {
    let sc = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    assert_eq!(
        sc.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(sc.span_id(), SpanId::from_hex("00f067aa0ba902b7").unwrap());
    assert!(sc.is_sampled());
    assert!(sc.is_remote());
    let sc =
        parse_traceparent(" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\t").unwrap();
    assert!(!sc.is_sampled());
    // Unknown flag bits are dropped.
    let sc = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff").unwrap();
    assert_eq!(sc.trace_flags(), TraceFlags::SAMPLED);
    // A future version may append fields.
    assert!(
        parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra")
            .is_some()
    );
    assert!(parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
}

#[test]
fn parse_traceparent_rejects_invalid_values() {
    for bad in [
        "",
        "00",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ] {
        assert!(parse_traceparent(bad).is_none(), "{bad:?}");
    }
}

#[test]
fn histograms_use_the_semconv_buckets_and_seconds() {
    let h = harness(&ExportConfig::default());
    h.exporter.export(&record());
    h.exporter.export(&error_record());

    let (unit, points) = h.metric("gen_ai.server.request.duration", |m| {
        (m.unit().to_owned(), f64_histogram(m))
    });
    assert_eq!(unit, "s");
    assert_eq!(points.len(), 2, "ok and error are separate series");
    for p in &points {
        assert_eq!(
            p.bounds().collect::<Vec<_>>(),
            [
                0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96,
                81.92
            ]
        );
        assert_eq!(p.count(), 1);
        assert!((p.sum() - 1.250_25).abs() < 1e-9, "{}", p.sum());
        // 1.25025 s falls in (0.64, 1.28]: bucket index 7.
        let counts: Vec<u64> = p.bucket_counts().collect();
        assert_eq!(counts.len(), 15);
        assert_eq!(counts[7], 1, "{counts:?}");
    }
    let error_point = points
        .iter()
        .find(|p| p.attributes().any(|kv| kv.key.as_str() == "error.type"))
        .expect("an error series");
    assert_eq!(
        sorted(error_point.attributes().cloned()),
        pairs(&[
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "tiny"),
            ("gen_ai.response.model", "tiny-q4"),
            ("error.type", "http_503"),
        ])
    );

    // TTFT and TPOT: successful requests only.
    let points = h.metric("gen_ai.server.time_to_first_token", f64_histogram);
    assert_eq!(points.len(), 1);
    assert_eq!(
        points[0].bounds().collect::<Vec<_>>(),
        [
            0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
            10.0
        ]
    );
    assert!((points[0].sum() - 0.0355).abs() < 1e-12);
    // 0.0355 s falls in (0.02, 0.04]: bucket index 4.
    assert_eq!(points[0].bucket_counts().nth(4), Some(1));
    assert!(!points[0]
        .attributes()
        .any(|kv| kv.key.as_str() == "error.type"));

    let points = h.metric("gen_ai.server.time_per_output_token", f64_histogram);
    assert_eq!(points.len(), 1);
    assert_eq!(
        points[0].bounds().collect::<Vec<_>>(),
        [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
    );
    assert!((points[0].sum() - 0.03).abs() < 1e-12);
    // 0.03 s falls in (0.025, 0.05]: bucket index 2.
    assert_eq!(points[0].bucket_counts().nth(2), Some(1));
}

#[test]
fn token_usage_and_request_counter() {
    let h = harness(&ExportConfig::default());
    h.exporter.export(&RequestRecord {
        server_port: Some(8080),
        ..record()
    });
    h.exporter.export(&error_record());

    let (unit, points) = h.metric("strike.token.usage", |m| {
        (m.unit().to_owned(), u64_histogram(m))
    });
    assert_eq!(unit, "{token}");
    let find = |ty: &str, port: bool| {
        points
            .iter()
            .find(|p| {
                p.attributes()
                    .any(|kv| kv == &KeyValue::new("gen_ai.token.type", ty.to_owned()))
                    && p.attributes().any(|kv| kv.key.as_str() == "server.port") == port
            })
            .unwrap_or_else(|| panic!("{ty} point (port {port})"))
    };
    let input = find("input", true);
    assert_eq!(input.sum(), 12);
    assert_eq!(
        input.bounds().collect::<Vec<_>>(),
        [
            1.0,
            4.0,
            16.0,
            64.0,
            256.0,
            1024.0,
            4096.0,
            16384.0,
            65536.0,
            262_144.0,
            1_048_576.0,
            4_194_304.0,
            16_777_216.0,
            67_108_864.0
        ]
    );
    assert_eq!(
        sorted(input.attributes().cloned()),
        pairs(&[
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "tiny"),
            ("gen_ai.response.model", "tiny-q4"),
            ("server.port", "8080"),
            ("gen_ai.token.type", "input"),
            ("strike.token.count_source", "usage"),
        ])
    );
    assert_eq!(find("output", true).sum(), 40);
    // The error record has input tokens but no output tokens.
    assert_eq!(find("input", false).sum(), 12);
    assert_eq!(points.len(), 3);

    let requests = h.metric("strike.requests", u64_sum);
    assert_eq!(requests.len(), 2);
    let total: u64 = requests.iter().map(SumDataPoint::value).sum();
    assert_eq!(total, 2);
    let failed = requests
        .iter()
        .find(|p| p.attributes().any(|kv| kv.key.as_str() == "error.type"))
        .unwrap();
    assert!(failed
        .attributes()
        .any(|kv| kv == &KeyValue::new("http.response.status_code", 503_i64)));
}

#[test]
fn shutdown_flushes_in_order_and_counts() {
    let h = harness(&ExportConfig::default());
    for _ in 0..5 {
        h.exporter.export(&record());
    }
    // The in-memory span exporter clears itself on shutdown: watch what it saw through a
    // second handle taken before (clones share storage, and reset happens after export).
    h.exporter.shutdown().unwrap();
    let stats = h.exporter.stats();
    assert_eq!(stats.records, 5);
    assert_eq!(stats.spans_submitted, 5);
    assert_eq!(
        stats.spans_exported, 5,
        "shutdown exported the queued spans"
    );
    assert_eq!(stats.spans_failed, 0);
    assert_eq!(stats.spans_dropped, 0);
    assert!(h.spans.is_shutdown_called());
    // Metrics were exported at shutdown (the reader collects one last time).
    let metrics = h.metrics.get_finished_metrics().unwrap();
    assert!(metrics
        .iter()
        .flat_map(ResourceMetrics::scope_metrics)
        .flat_map(ScopeMetrics::metrics)
        .any(|m| m.name() == "gen_ai.server.request.duration"));

    h.exporter.export(&record());
    assert_eq!(h.exporter.stats().after_shutdown, 1);
    assert_eq!(h.exporter.stats().spans_submitted, 5);
}

/// A span exporter that blocks until released, to fill the queue.
#[derive(Debug, Clone)]
struct GatedExporter {
    gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl SpanExporter for GatedExporter {
    async fn export(&self, _batch: Vec<SpanData>) -> OTelSdkResult {
        let (lock, cvar) = &*self.gate;
        let mut open = lock.lock().unwrap();
        while !*open {
            open = cvar.wait(open).unwrap();
        }
        Ok(())
    }
}

#[test]
fn full_queue_drops_and_counts_without_blocking() {
    let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let config = ExportConfig {
        queue_size: 4,
        ..ExportConfig::default()
    };
    let exporter = Exporter::with_exporters(
        &config,
        GatedExporter {
            gate: Arc::clone(&gate),
        },
        InMemoryMetricExporter::default(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    for _ in 0..200 {
        exporter.export(&record());
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "export() must not block on a stuck exporter"
    );
    // Strike holds at most `queue_size` spans waiting (queued or being sent); the rest are
    // dropped and counted as they happen, not only at shutdown.
    let stats = exporter.stats();
    assert_eq!(
        (stats.spans_submitted, stats.spans_dropped),
        (4, 196),
        "{stats:?}"
    );
    {
        let (lock, cvar) = &*gate;
        *lock.lock().unwrap() = true;
        cvar.notify_all();
    }
    // Once the exporter has caught up, spans are taken again.
    exporter.flush().unwrap();
    exporter.export(&record());
    exporter.shutdown().unwrap();
    let stats = exporter.stats();
    assert_eq!(
        (
            stats.spans_submitted,
            stats.spans_exported,
            stats.spans_failed,
            stats.spans_dropped
        ),
        (5, 5, 0, 196),
        "{stats:?}"
    );
}

#[test]
fn resource_is_built_once_with_service_and_strike_attributes() {
    let config = ExportConfig {
        service_name: "strike-test".to_owned(),
        resource_attributes: vec![("deployment.environment.name".to_owned(), "ci".to_owned())],
        ..ExportConfig::default()
    };
    let resource = build_resource(&config);
    let get = |k: &str| resource.get(&opentelemetry::Key::from(k.to_owned()));
    assert_eq!(get("service.name"), Some(Value::from("strike-test")));
    assert_eq!(get("deployment.environment.name"), Some(Value::from("ci")));
    assert_eq!(
        get("process.pid"),
        Some(Value::I64(i64::from(std::process::id())))
    );
    assert_eq!(get("telemetry.sdk.language"), Some(Value::from("rust")));
    assert_eq!(
        get("service.version"),
        Some(Value::from(env!("CARGO_PKG_VERSION")))
    );
    assert!(get("host.name").is_some());
    assert_eq!(resource.schema_url(), Some(semconv::SCHEMA_URL));

    // Spans and metrics carry that same resource.
    let h = harness(&config);
    h.exporter.export(&record());
    h.exporter.flush().unwrap();
    let rm = h.metrics.get_finished_metrics().unwrap().remove(0);
    assert_eq!(
        rm.resource()
            .get(&opentelemetry::Key::from_static_str("service.name")),
        Some(Value::from("strike-test"))
    );
}

#[test]
fn new_builds_both_transports_and_rejects_bad_settings() {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let config = ExportConfig {
            protocol,
            endpoint: Some("http://127.0.0.1:9".to_owned()),
            headers: vec![("x-api-key".to_owned(), "k".to_owned())],
            timeout: Some(Duration::from_millis(200)),
            ..ExportConfig::default()
        };
        let exporter = Exporter::new(&config).unwrap();
        exporter.export(&record());
        // Nothing listens on port 9: the export fails, is counted, and shutdown returns.
        let _ = exporter.shutdown();
        let stats = exporter.stats();
        assert_eq!(stats.spans_submitted, 1, "{protocol:?}");
        assert_eq!(stats.spans_failed, 1, "{protocol:?} {stats:?}");
        assert_eq!(stats.spans_dropped, 0);
    }
    let bad_header = ExportConfig {
        headers: vec![("bad header".to_owned(), "v".to_owned())],
        ..ExportConfig::default()
    };
    assert!(matches!(
        Exporter::new(&bad_header),
        Err(ExportError::InvalidHeader { .. })
    ));
    let bad_endpoint = ExportConfig {
        endpoint: Some("not a url".to_owned()),
        ..ExportConfig::default()
    };
    assert!(matches!(
        Exporter::new(&bad_endpoint),
        Err(ExportError::Build { .. })
    ));
}

#[tokio::test(flavor = "current_thread")]
async fn grpc_exporter_lives_and_dies_inside_async_code() {
    let config = ExportConfig {
        endpoint: Some("http://127.0.0.1:9".to_owned()),
        timeout: Some(Duration::from_millis(200)),
        ..ExportConfig::default()
    };
    let exporter = Exporter::new(&config).unwrap();
    exporter.export(&record());
    // Dropped without shutdown inside a runtime: must not panic.
    drop(exporter);
}

/// Against a real collector, over both transports: `rotel` (`PyPI` `rotel`, which
/// `cargo xtask setup` installs and `cargo xtask test` names in `STRIKE_ROTEL_AGENT`) with
/// the repository's `tests/tools/rotel_jsonl_processor.py` writing what it receives as JSON
/// lines. Without `STRIKE_ROTEL_AGENT` it skips, except under `CI=true`.
#[test]
fn rotel_receives_spans_and_metrics_over_grpc_and_http() {
    let Ok(agent) = std::env::var("STRIKE_ROTEL_AGENT") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "STRIKE_ROTEL_AGENT is not set (cargo xtask test sets it)"
        );
        eprintln!("SKIP: STRIKE_ROTEL_AGENT is not set");
        return;
    };
    let (_rotel, grpc, http, sink) = start_rotel(&agent);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    for (protocol, port, id) in [
        (Protocol::Grpc, grpc, "rotel-grpc"),
        (Protocol::HttpProtobuf, http, "rotel-http"),
    ] {
        let config = ExportConfig {
            protocol,
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            service_name: format!("strike-{id}"),
            ..ExportConfig::default()
        };
        let exporter = Exporter::new(&config).unwrap();
        exporter.export(&RequestRecord {
            traceparent: Some(traceparent.clone()),
            request_id: id.to_owned(),
            ..record()
        });
        exporter.shutdown().unwrap();
        let stats = exporter.stats();
        assert_eq!(
            (stats.spans_exported, stats.spans_failed),
            (1, 0),
            "{protocol:?} {stats:?}"
        );
        assert_eq!(stats.metric_exports_failed, 0, "{protocol:?}");
    }

    let seen = read_sink(&sink);
    for id in ["rotel-grpc", "rotel-http"] {
        assert_rotel_saw(&seen, id, trace_id);
    }
}

/// Starts `rotel-agent` on two free ports; returns it (killed on drop), the gRPC and HTTP
/// ports and the sink file.
fn start_rotel(agent: &str) -> (Kill, u16, u16, std::path::PathBuf) {
    use std::{net::TcpListener, process::Command};

    let processor = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/tools/rotel_jsonl_processor.py"
    );
    let free_port = || {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (grpc, http) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("strike-rotel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sink = dir.join("sink.jsonl");
    let _ = std::fs::remove_file(&sink);
    let child = Command::new(agent)
        .args(["start", "--exporter", "blackhole"])
        .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
        .args(["--otlp-with-trace-processor", processor])
        .args(["--otlp-with-metrics-processor", processor])
        .env("ROTEL_SINK", &sink)
        .current_dir(&dir)
        .spawn()
        .expect("start rotel-agent");
    // Generous: each wait ends as soon as its condition holds.
    let wait_port = |port: u16| {
        for _ in 0..600 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("rotel did not listen on {port}");
    };
    wait_port(grpc);
    wait_port(http);

    (Kill(child), grpc, http, sink)
}

/// A child process killed when dropped.
struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What rotel wrote to the sink, once both exports arrived (or after 60 s).
fn read_sink(sink: &std::path::Path) -> Vec<serde_json::Value> {
    let lines = |()| -> Vec<serde_json::Value> {
        std::fs::read_to_string(sink)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let mut seen = Vec::new();
    for _ in 0..600 {
        seen = lines(());
        let spans = seen.iter().filter(|v| v["type"] == "span").count();
        let durations = seen
            .iter()
            .filter(|v| v["name"] == "gen_ai.server.request.duration")
            .count();
        if spans >= 2 && durations >= 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

/// The span and duration metric of one export, as rotel received them.
fn assert_rotel_saw(seen: &[serde_json::Value], id: &str, trace_id: &str) {
    let span = seen
        .iter()
        .find(|v| v["type"] == "span" && v["attributes"]["strike.request_id"] == id)
        .unwrap_or_else(|| panic!("span {id} in {seen:#?}"));
    assert_eq!(span["name"], "chat tiny");
    assert_eq!(span["kind"], 2, "OTLP SPAN_KIND_SERVER");
    assert_eq!(span["trace_id"], trace_id);
    assert_eq!(span["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(span["start"].as_u64(), Some(START_UNIX_NS));
    assert_eq!(span["end"].as_u64(), Some(START_UNIX_NS + 1_250_250_003));
    assert_eq!(span["events"][0]["name"], "gen_ai.first_token");
    assert_eq!(
        span["events"][0]["t"].as_u64(),
        Some(START_UNIX_NS + 35_500_001)
    );
    assert_eq!(span["attributes"]["gen_ai.usage.input_tokens"], 12);
    assert_eq!(span["resource"]["service.name"], format!("strike-{id}"));
    let metric = seen
        .iter()
        .find(|v| {
            v["name"] == "gen_ai.server.request.duration"
                && v["resource"]["service.name"] == format!("strike-{id}")
        })
        .unwrap_or_else(|| panic!("duration metric of {id} in {seen:#?}"));
    assert_eq!(metric["unit"], "s");
    assert_eq!(metric["count"], 1);
    assert_eq!(
        metric["explicit_bounds"],
        serde_json::json!([
            0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92
        ])
    );
}

fn f64_sum(metric: &Metric) -> Vec<SumDataPoint<f64>> {
    match metric.data() {
        AggregatedMetrics::F64(MetricData::Sum(s)) => s.data_points().cloned().collect(),
        other => panic!("{} is not an f64 sum: {other:?}", metric.name()),
    }
}

#[test]
fn cost_energy_and_tenant_on_spans_and_metrics() {
    let h = harness(&ExportConfig::default());
    let costed = RequestRecord {
        cost_usd: Some(0.0025),
        gpu_seconds: Some(0.5),
        gpu_energy_j: Some(104.0),
        chargeback_usd: Some(0.001),
        tenant: Some("team-a".to_owned()),
        api_key_hash: Some("0123456789abcdef".to_owned()),
        ..record()
    };
    h.exporter.export(&costed);
    h.exporter.export(&costed);
    let span = h.finished_spans().remove(0);
    assert_eq!(attr(&span, "strike.cost_usd"), Some(&Value::F64(0.0025)));
    assert_eq!(attr(&span, "strike.gpu.seconds"), Some(&Value::F64(0.5)));
    assert_eq!(attr(&span, "strike.gpu.energy_j"), Some(&Value::F64(104.0)));
    assert_eq!(
        attr(&span, "strike.chargeback_usd"),
        Some(&Value::F64(0.001))
    );
    assert_eq!(attr(&span, "strike.tenant"), Some(&Value::from("team-a")));
    assert_eq!(
        attr(&span, "strike.api_key_hash"),
        Some(&Value::from("0123456789abcdef"))
    );
    let (unit, cost) = h.metric("strike.cost", |m| (m.unit().to_owned(), f64_sum(m)));
    assert_eq!(unit, "USD");
    assert_eq!(cost.len(), 1);
    assert!((cost[0].value() - 0.005).abs() < 1e-15);
    assert!(cost[0]
        .attributes()
        .any(|kv| kv.key.as_str() == "strike.tenant" && kv.value.as_str() == "team-a"));
    let energy = h.metric("strike.gpu.energy", f64_sum);
    assert!((energy[0].value() - 208.0).abs() < 1e-12);
    // (12 input + 40 output tokens) / 104 J per request.
    let tpj = h.metric("strike.gpu.tokens_per_joule", f64_histogram);
    assert_eq!(tpj[0].count(), 2);
    assert!((tpj[0].sum() - 1.0).abs() < 1e-12);
}
