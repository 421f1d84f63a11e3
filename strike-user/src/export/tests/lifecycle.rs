//! The exporter's life: building it, its bounded queue, flush and shutdown, the resource.

use super::*;

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
