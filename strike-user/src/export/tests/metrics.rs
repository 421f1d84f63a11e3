//! Metric points: semconv histograms, token usage, cost and energy.

use super::*;

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

#[test]
fn distinct_client_models_past_their_bound_are_other_and_counted() {
    let h = harness(&ExportConfig::default());
    for i in 0..50 {
        let mut r = record();
        r.request_model = Some(format!("client-model-{i}"));
        r.model = None;
        h.exporter.export(&r);
    }
    let other = labels::OVERFLOW;
    let client_limit = labels::MAX_CLIENT_VALUES;
    let expected = u64::try_from(50 - client_limit).unwrap();
    assert_eq!(h.exporter.stats().label_overflows, expected);
    let models: std::collections::BTreeSet<String> = h.metric("strike.requests", |m| {
        u64_sum(m)
            .iter()
            .flat_map(|p| p.attributes().cloned().collect::<Vec<_>>())
            .filter(|kv| kv.key.as_str() == "gen_ai.request.model")
            .map(|kv| kv.value.to_string())
            .collect()
    });
    assert_eq!(
        models.len(),
        client_limit + 1,
        "the admitted values and {other}"
    );
    assert!(models.contains(other));
}
