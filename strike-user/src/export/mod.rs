//! Export stage: `RequestRecord`s → OpenTelemetry spans and metrics over OTLP.
//!
//! One [`Exporter`] owns a tracer provider (batch span processor with a bounded queue) and a
//! meter provider (periodic reader), both built on one [`Resource`]. [`Exporter::export`]
//! never blocks: the span goes into the batch processor's bounded queue (dropped when it is
//! full) and the metric points into in-memory aggregation. [`Exporter::shutdown`] flushes
//! traces, then metrics, then stops the transport.
//!
//! The OTLP transport is gRPC (tonic, on a small runtime the exporter owns, so it works from
//! synchronous code and from any tokio runtime alike) or HTTP/protobuf (a blocking HTTP
//! client on the SDK's own threads). `shutdown` blocks: from async code call it through
//! `tokio::task::spawn_blocking`.
//!
//! Privacy: prompts and completions are never exported (records hold none); the server's
//! `error_message` only with [`ExportConfig::include_error_messages`]. See `docs/EXPORT.md`.

pub mod labels;
pub mod metrics;
pub mod semconv;
pub mod spans;

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use opentelemetry::{
    metrics::MeterProvider as _, trace::TracerProvider as _, InstrumentationScope, KeyValue,
};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    error::{OTelSdkError, OTelSdkResult},
    metrics::{
        data::ResourceMetrics, exporter::PushMetricExporter, PeriodicReader, SdkMeterProvider,
        Temporality,
    },
    resource::TelemetryResourceDetector,
    trace::{
        BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData,
        SpanExporter,
    },
    Resource,
};

use crate::{
    record::RequestRecord,
    telemetry::{ExportStats, Summary},
};
pub use spans::{parse_traceparent, span_times, SpanTimes};
use spans::{SpanOptions, SpanOutcome};

/// OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// OTLP/gRPC (default port 4317).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (default port 4318).
    HttpProtobuf,
}

impl Protocol {
    /// The transport of an OTLP protocol name: `grpc`, `http/protobuf` (or `http`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name.trim() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" | "http" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }
}

/// Default bound of the span queue (the SDK's `OTEL_BSP_MAX_QUEUE_SIZE` default).
pub const DEFAULT_QUEUE_SIZE: usize = 2048;

/// Validated export settings (made by `config`, which also reads the standard `OTEL_*`
/// variables that the SDK does not read itself when the exporter is configured in code).
#[derive(Debug, Clone, PartialEq)]
#[expect(clippy::struct_excessive_bools, reason = "independent switches")]
pub struct ExportConfig {
    /// Collector base URL (`http://host:4317` for gRPC, `http://host:4318` for HTTP, which
    /// gets `/v1/traces` and `/v1/metrics` appended). `None`: the SDK reads
    /// `OTEL_EXPORTER_OTLP_{TRACES_,METRICS_,}ENDPOINT`, else localhost.
    pub endpoint: Option<String>,
    /// Transport.
    pub protocol: Protocol,
    /// Extra request headers (gRPC metadata); the SDK adds `OTEL_EXPORTER_OTLP_HEADERS`.
    pub headers: Vec<(String, String)>,
    /// Per-export timeout; `None`: `OTEL_EXPORTER_OTLP_TIMEOUT`, else 10 s.
    pub timeout: Option<Duration>,
    /// Spans queued for export at most; more are dropped and counted.
    pub queue_size: usize,
    /// Metric export interval; `None`: `OTEL_METRIC_EXPORT_INTERVAL`, else 60 s.
    pub metric_interval: Option<Duration>,
    /// `service.name` of the resource.
    pub service_name: String,
    /// More resource attributes (after Strike's own, before `service.name`).
    pub resource_attributes: Vec<(String, String)>,
    /// `gen_ai.provider.name` of every span and metric point.
    pub provider_name: String,
    /// Also emit the deprecated `gen_ai.system` on spans (same value).
    pub legacy_gen_ai_system: bool,
    /// Export the server's error messages (`strike.error_message`, span status). Off by
    /// default: servers echo request content in them.
    pub include_error_messages: bool,
    /// Ship spans and metrics over OTLP. Off: metrics are only kept for Prometheus.
    pub otlp: bool,
    /// Keep the metrics for a Prometheus scrape ([`Exporter::prometheus_text`]).
    pub prometheus: bool,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: Protocol::Grpc,
            headers: Vec::new(),
            timeout: None,
            queue_size: DEFAULT_QUEUE_SIZE,
            metric_interval: None,
            service_name: "strike".to_owned(),
            resource_attributes: Vec::new(),
            provider_name: semconv::DEFAULT_PROVIDER_NAME.to_owned(),
            legacy_gen_ai_system: true,
            include_error_messages: false,
            otlp: true,
            prometheus: false,
        }
    }
}

/// Errors of the export stage.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A configured header is not a valid HTTP header.
    #[error("invalid OTLP header {name:?}")]
    InvalidHeader {
        /// The header's name.
        name: String,
    },
    /// The OTLP exporter could not be built (bad endpoint, …).
    #[error("building the OTLP {signal} exporter")]
    Build {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The SDK's error.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// The runtime of the gRPC transport could not be started.
    #[error("starting the OTLP gRPC runtime")]
    Runtime {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Flushing a signal failed.
    #[error("flushing {signal}")]
    Flush {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The SDK's error.
        #[source]
        source: OTelSdkError,
    },
    /// The Prometheus reader could not be built.
    #[error("building the Prometheus exporter")]
    Prometheus {
        /// The SDK's error.
        #[source]
        source: OTelSdkError,
    },
    /// Shutting a signal down failed (its last data may be lost).
    #[error("shutting down {signal}")]
    Shutdown {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The SDK's error.
        #[source]
        source: OTelSdkError,
    },
}

#[derive(Debug, Default)]
struct Counters {
    records: AtomicU64,
    not_genai: AtomicU64,
    bad_start: AtomicU64,
    after_shutdown: AtomicU64,
    spans_sampled_out: AtomicU64,
    spans_submitted: AtomicU64,
    spans_exported: AtomicU64,
    spans_failed: AtomicU64,
    spans_dropped: AtomicU64,
    metric_exports_failed: AtomicU64,
    label_overflows: AtomicU64,
}

impl Counters {
    /// Spans submitted whose export has not finished yet (queued or being sent).
    fn spans_pending(&self) -> u64 {
        let get = |a: &AtomicU64| a.load(Ordering::Acquire);
        get(&self.spans_submitted)
            .saturating_sub(get(&self.spans_exported) + get(&self.spans_failed))
    }
}

fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Counts what the batch processor hands to the real exporter, and how that went.
#[derive(Debug)]
struct CountingSpanExporter<E> {
    inner: E,
    counters: Arc<Counters>,
}

impl<E: SpanExporter> SpanExporter for CountingSpanExporter<E> {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let n = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        // Counted as failed unless the export completes: a future dropped half-way (a
        // timeout) still settles its spans, so the pending count never leaks.
        let outcome = BatchOutcome {
            counters: Arc::clone(&self.counters),
            spans: n,
            ok: false,
        };
        let export = self.inner.export(batch);
        async move {
            // Moved whole into the future (not just its field), so it drops with it.
            let mut outcome = outcome;
            let result = export.await;
            outcome.ok = result.is_ok();
            result
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Settles one batch's spans as exported or failed when dropped.
struct BatchOutcome {
    counters: Arc<Counters>,
    spans: u64,
    ok: bool,
}

impl Drop for BatchOutcome {
    fn drop(&mut self) {
        let counter = if self.ok {
            &self.counters.spans_exported
        } else {
            &self.counters.spans_failed
        };
        counter.fetch_add(self.spans, Ordering::Release);
    }
}

/// Counts failed metric exports.
struct CountingMetricExporter<M> {
    inner: M,
    counters: Arc<Counters>,
}

impl<M> fmt::Debug for CountingMetricExporter<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CountingMetricExporter")
            .finish_non_exhaustive()
    }
}

impl<M: PushMetricExporter> PushMetricExporter for CountingMetricExporter<M> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        if result.is_err() {
            bump(&self.counters.metric_exports_failed, 1);
        }
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// The tokio runtime the tonic transport runs on; shut down without blocking when dropped,
/// so that dropping an [`Exporter`] inside async code does not panic.
struct TransportRuntime(Option<tokio::runtime::Runtime>);

impl Drop for TransportRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The export stage: turns records into spans and metric points and ships them over OTLP.
pub struct Exporter {
    /// `None` without OTLP: no spans at all.
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: SdkMeterProvider,
    tracer: Option<SdkTracer>,
    instruments: metrics::Instruments,
    options: SpanOptions,
    counters: Arc<Counters>,
    queue_size: u64,
    /// The Prometheus registry the meter provider's pull reader fills.
    registry: Option<prometheus::Registry>,
    /// Observable instruments of the pipeline's own counters (kept alive here).
    observers: Mutex<Vec<metrics::Observers>>,
    shut_down: AtomicBool,
    /// Last: dropped after the providers, whose exporters use it.
    runtime: Mutex<TransportRuntime>,
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exporter")
            .field("options", &self.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Exporter {
    /// Builds the OTLP exporters the config names and the pipeline around them.
    pub fn new(config: &ExportConfig) -> Result<Self, ExportError> {
        if !config.otlp {
            return Self::assemble::<
                opentelemetry_otlp::SpanExporter,
                opentelemetry_otlp::MetricExporter,
            >(config, None, TransportRuntime(None));
        }
        match config.protocol {
            Protocol::Grpc => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("strike-otlp")
                    .enable_all()
                    .build()
                    .map_err(|source| ExportError::Runtime { source })?;
                let (spans, metrics) = {
                    // tonic's lazy channel spawns its connection task on the current runtime.
                    let _guard = runtime.enter();
                    grpc_exporters(config)?
                };
                Self::assemble(
                    config,
                    Some((spans, metrics)),
                    TransportRuntime(Some(runtime)),
                )
            }
            Protocol::HttpProtobuf => {
                let (spans, metrics) = http_exporters(config)?;
                Self::assemble(config, Some((spans, metrics)), TransportRuntime(None))
            }
        }
    }

    /// Builds the pipeline around the given exporters (an in-memory exporter in tests,
    /// stdout, …). The config's transport settings are not used.
    pub fn with_exporters<S, M>(
        config: &ExportConfig,
        span_exporter: S,
        metric_exporter: M,
    ) -> Result<Self, ExportError>
    where
        S: SpanExporter + 'static,
        M: PushMetricExporter,
    {
        Self::assemble(
            config,
            Some((span_exporter, metric_exporter)),
            TransportRuntime(None),
        )
    }

    fn assemble<S, M>(
        config: &ExportConfig,
        push: Option<(S, M)>,
        runtime: TransportRuntime,
    ) -> Result<Self, ExportError>
    where
        S: SpanExporter + 'static,
        M: PushMetricExporter,
    {
        let counters = Arc::new(Counters::default());
        let resource = build_resource(config);
        let scope = InstrumentationScope::builder(semconv::SCOPE_NAME)
            .with_version(env!("CARGO_PKG_VERSION"))
            .with_schema_url(semconv::SCHEMA_URL)
            .build();
        let mut meters = SdkMeterProvider::builder().with_resource(resource.clone());
        let mut tracer_provider = None;
        if let Some((span_exporter, metric_exporter)) = push {
            let batch = BatchConfigBuilder::default()
                .with_max_queue_size(config.queue_size.max(1))
                .build();
            let processor = BatchSpanProcessor::builder(CountingSpanExporter {
                inner: span_exporter,
                counters: Arc::clone(&counters),
            })
            .with_batch_config(batch)
            .build();
            tracer_provider = Some(
                SdkTracerProvider::builder()
                    .with_resource(resource)
                    .with_span_processor(processor)
                    .build(),
            );
            let mut reader = PeriodicReader::builder(CountingMetricExporter {
                inner: metric_exporter,
                counters: Arc::clone(&counters),
            });
            if let Some(interval) = config.metric_interval {
                reader = reader.with_interval(interval);
            }
            meters = meters.with_reader(reader.build());
        }
        let registry = if config.prometheus {
            let registry = prometheus::Registry::new();
            let reader = opentelemetry_prometheus::exporter()
                .with_registry(registry.clone())
                .build()
                .map_err(|source| ExportError::Prometheus { source })?;
            meters = meters.with_reader(reader);
            Some(registry)
        } else {
            None
        };
        let meter_provider = meters.build();
        let tracer = tracer_provider
            .as_ref()
            .map(|p| p.tracer_with_scope(scope.clone()));
        let instruments = metrics::Instruments::new(
            &meter_provider.meter_with_scope(scope),
            Arc::clone(&counters),
        );
        Ok(Self {
            tracer_provider,
            meter_provider,
            tracer,
            instruments,
            options: SpanOptions {
                provider_name: config.provider_name.clone(),
                legacy_gen_ai_system: config.legacy_gen_ai_system,
                include_error_messages: config.include_error_messages,
            },
            counters,
            queue_size: u64::try_from(config.queue_size.max(1)).unwrap_or(u64::MAX),
            registry,
            observers: Mutex::new(Vec::new()),
            shut_down: AtomicBool::new(false),
            runtime: Mutex::new(runtime),
        })
    }

    /// The metrics in Prometheus text format, when built with `prometheus`.
    pub fn prometheus_text(&self) -> Option<String> {
        use prometheus::Encoder as _;
        let registry = self.registry.as_ref()?;
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&registry.gather(), &mut out) {
            tracing::warn!("encoding the Prometheus metrics failed: {e}");
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }

    /// Also reports the pipeline's own counters (`strike.capture.*`, `strike.stream.*`, …)
    /// and the exporter's, read from `stats` at each collection.
    pub fn observe_pipeline(&self, stats: Arc<Mutex<Summary>>) {
        let meter = self.meter_provider.meter_with_scope(
            InstrumentationScope::builder(semconv::SCOPE_NAME)
                .with_version(env!("CARGO_PKG_VERSION"))
                .with_schema_url(semconv::SCHEMA_URL)
                .build(),
        );
        let counters = Arc::clone(&self.counters);
        let observers = metrics::Observers::new(&meter, stats, move || stats_of(&counters));
        self.observers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(observers);
    }

    /// Exports one record: a span (joining the trace of its `traceparent`, when it has a
    /// valid one) and metric points. Never blocks: a full span queue drops the span
    /// (counted in [`ExportStats::spans_dropped`]).
    pub fn export(&self, record: &RequestRecord) {
        let c = &self.counters;
        bump(&c.records, 1);
        if self.shut_down.load(Ordering::Acquire) {
            bump(&c.after_shutdown, 1);
            return;
        }
        if spans::operation_name(record.api).is_none() {
            bump(&c.not_genai, 1);
            return;
        }
        if let Some(tracer) = &self.tracer {
            // Strike bounds the queue itself, so that a drop is counted when it happens.
            if c.spans_pending() >= self.queue_size {
                bump(&c.spans_dropped, 1);
            } else {
                match spans::emit_span(tracer, record, &self.options) {
                    SpanOutcome::Emitted => bump(&c.spans_submitted, 1),
                    SpanOutcome::SampledOut => bump(&c.spans_sampled_out, 1),
                    SpanOutcome::BadStart => bump(&c.bad_start, 1),
                    SpanOutcome::NotGenAi => bump(&c.not_genai, 1),
                }
            }
        }
        self.instruments.record(record, &self.options);
    }

    /// Exports what is queued now: spans, then metrics. Blocks until done.
    pub fn flush(&self) -> Result<(), ExportError> {
        if let Some(tracer_provider) = &self.tracer_provider {
            tracer_provider
                .force_flush()
                .map_err(|source| ExportError::Flush {
                    signal: "traces",
                    source,
                })?;
        }
        self.meter_provider
            .force_flush()
            .map_err(|source| ExportError::Flush {
                signal: "metrics",
                source,
            })
    }

    /// Flushes and shuts down traces, then metrics (both are attempted), then the transport.
    /// Blocks until done. Later records are ignored; the first failure is returned.
    pub fn shutdown(&self) -> Result<(), ExportError> {
        self.shut_down.store(true, Ordering::Release);
        let traces = self.tracer_provider.as_ref().map_or(Ok(()), |p| {
            p.shutdown().map_err(|source| ExportError::Shutdown {
                signal: "traces",
                source,
            })
        });
        let metrics = self
            .meter_provider
            .shutdown()
            .map_err(|source| ExportError::Shutdown {
                signal: "metrics",
                source,
            });
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .take();
        if let Some(rt) = runtime {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
        traces.and(metrics)
    }

    /// The counters so far.
    pub fn stats(&self) -> ExportStats {
        stats_of(&self.counters)
    }
}

fn stats_of(c: &Counters) -> ExportStats {
    let get = |a: &AtomicU64| a.load(Ordering::Acquire);
    ExportStats {
        records: get(&c.records),
        not_genai: get(&c.not_genai),
        bad_start: get(&c.bad_start),
        after_shutdown: get(&c.after_shutdown),
        spans_sampled_out: get(&c.spans_sampled_out),
        spans_submitted: get(&c.spans_submitted),
        spans_exported: get(&c.spans_exported),
        spans_failed: get(&c.spans_failed),
        spans_dropped: get(&c.spans_dropped),
        metric_exports_failed: get(&c.metric_exports_failed),
        label_overflows: get(&c.label_overflows),
    }
}

type Exporters = (
    opentelemetry_otlp::SpanExporter,
    opentelemetry_otlp::MetricExporter,
);

fn grpc_exporters(config: &ExportConfig) -> Result<Exporters, ExportError> {
    let metadata = opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(
        header_map(&config.headers)?,
    );
    let mut spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_metadata(metadata.clone());
    let mut metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_metadata(metadata);
    if let Some(endpoint) = &config.endpoint {
        spans = spans.with_endpoint(endpoint.clone());
        metrics = metrics.with_endpoint(endpoint.clone());
    }
    if let Some(timeout) = config.timeout {
        spans = spans.with_timeout(timeout);
        metrics = metrics.with_timeout(timeout);
    }
    built(spans.build(), metrics.build())
}

/// The two built exporters, or which one failed.
fn built(
    spans: Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError>,
    metrics: Result<opentelemetry_otlp::MetricExporter, opentelemetry_otlp::ExporterBuildError>,
) -> Result<Exporters, ExportError> {
    Ok((
        spans.map_err(|source| ExportError::Build {
            signal: "traces",
            source,
        })?,
        metrics.map_err(|source| ExportError::Build {
            signal: "metrics",
            source,
        })?,
    ))
}

fn http_exporters(config: &ExportConfig) -> Result<Exporters, ExportError> {
    header_map(&config.headers)?;
    let headers: HashMap<String, String> = config.headers.iter().cloned().collect();
    let mut spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_headers(headers.clone());
    let mut metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_headers(headers);
    if let Some(endpoint) = &config.endpoint {
        // A configured endpoint is used as is; like OTEL_EXPORTER_OTLP_ENDPOINT, Strike's is
        // the base URL.
        let base = endpoint.trim_end_matches('/');
        spans = spans.with_endpoint(format!("{base}/v1/traces"));
        metrics = metrics.with_endpoint(format!("{base}/v1/metrics"));
    }
    if let Some(timeout) = config.timeout {
        spans = spans.with_timeout(timeout);
        metrics = metrics.with_timeout(timeout);
    }
    built(spans.build(), metrics.build())
}

fn header_map(headers: &[(String, String)]) -> Result<http::HeaderMap, ExportError> {
    let mut map = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let invalid = || ExportError::InvalidHeader { name: name.clone() };
        let key = http::HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| invalid())?;
        let value = http::HeaderValue::from_str(value.trim()).map_err(|_| invalid())?;
        map.append(key, value);
    }
    Ok(map)
}

/// The one Resource of traces and metrics: SDK identity, host, Strike's own process, the
/// configured attributes, then `service.name`.
pub fn build_resource(config: &ExportConfig) -> Resource {
    let mut attrs = vec![
        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
        KeyValue::new("process.pid", i64::from(std::process::id())),
        KeyValue::new("process.runtime.name", "rust"),
    ];
    if let Some(host) = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
    {
        attrs.push(KeyValue::new("host.name", host));
    }
    if let Some(exe) = std::env::current_exe().ok().and_then(|p| {
        p.file_name()
            .map(|name| name.to_string_lossy().into_owned())
    }) {
        attrs.push(KeyValue::new("process.executable.name", exe));
    }
    Resource::builder_empty()
        .with_schema_url(Vec::new(), semconv::SCHEMA_URL)
        .with_detector(Box::new(TelemetryResourceDetector))
        .with_attributes(attrs)
        .with_attributes(
            config
                .resource_attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
        )
        .with_service_name(config.service_name.clone())
        .build()
}

#[cfg(test)]
mod tests;
