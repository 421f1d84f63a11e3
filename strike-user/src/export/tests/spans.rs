//! Spans: names, kinds, times, attributes, status and trace context.

use super::*;

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
        ("gen_ai.usage.cache_creation.input_tokens", "2"),
        ("gen_ai.usage.reasoning.output_tokens", "10"),
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
        ("strike.answer_ttft_ms", "61"),
        ("strike.server.prompt_ms", "20.5"),
        ("strike.server.decode_ms", "1100"),
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
