//! One `RequestRecord` → one SERVER span: name, attributes, timestamps, first-token event,
//! status, and the W3C trace the client's `traceparent` names.

use std::time::{Duration, SystemTime};

use opentelemetry::{
    trace::{Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, TraceState, Tracer},
    Array, Context, KeyValue, SpanId, StringValue, TraceFlags, TraceId, Value,
};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use super::semconv as sc;
use crate::record::{Api, CountSource, RequestRecord, TokenSource};

/// Choices that shape every span and metric point.
#[derive(Debug, Clone)]
pub(crate) struct SpanOptions {
    pub provider_name: String,
    pub legacy_gen_ai_system: bool,
    pub include_error_messages: bool,
}

/// The `GenAI` operation of an API, `None` for requests that are not `GenAI` operations.
pub fn operation_name(api: Api) -> Option<&'static str> {
    match api {
        Api::ChatCompletions | Api::Messages | Api::Responses | Api::OllamaChat => {
            Some(sc::operation::CHAT)
        }
        Api::Completions | Api::OllamaGenerate | Api::TgiGenerate | Api::TritonGenerate => {
            Some(sc::operation::TEXT_COMPLETION)
        }
        Api::Embeddings | Api::OllamaEmbed => Some(sc::operation::EMBEDDINGS),
        Api::Rerank => Some(sc::operation::RERANK),
        Api::Score => Some(sc::operation::SCORE),
        Api::CountTokens => Some(sc::operation::COUNT_TOKENS),
        Api::Other => None,
    }
}

/// `{gen_ai.operation.name} {gen_ai.request.model}`, or the operation alone without a model.
pub fn span_name(operation: &str, record: &RequestRecord) -> String {
    match record.request_model.as_deref().or(record.model.as_deref()) {
        Some(model) if !model.is_empty() => format!("{operation} {model}"),
        _ => operation.to_owned(),
    }
}

/// Parses a W3C Trace Context `traceparent` header value into the remote parent it names.
///
/// Follows the W3C rules: lowercase hex; version `ff` is invalid; version `00` has exactly
/// four fields; a higher version may append fields after a `-`, which are ignored; all-zero
/// trace or parent ids are invalid. Only the `sampled` flag is kept.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let value = value.trim_matches([' ', '\t']);
    let mut parts = value.splitn(5, '-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent_id = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    if !is_lower_hex(version, 2) || version == "ff" {
        return None;
    }
    if version == "00" && rest.is_some() {
        return None;
    }
    if !is_lower_hex(trace_id, 32) || !is_lower_hex(parent_id, 16) || !is_lower_hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(parent_id).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        TraceState::NONE,
    ))
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Wall-clock times of a record's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanTimes {
    /// The request's first byte (the record's `start`).
    pub start: SystemTime,
    /// `start` + the time to the first token, when one was seen.
    pub first_token: Option<SystemTime>,
    /// `start` + end to end (or `start` when the end is unknown).
    pub end: SystemTime,
}

/// Computes a span's times from the record's wall-clock `start` and its kernel monotonic
/// offsets (exact, in ns); falls back to the ms fields when a monotonic stamp is missing.
/// `None` when `start` is not RFC 3339.
pub fn span_times(record: &RequestRecord) -> Option<SpanTimes> {
    let start = OffsetDateTime::parse(&record.start, &Rfc3339).ok()?;
    let start = SystemTime::from(start);
    let offset = |mono: Option<u64>, ms: Option<f64>| -> Option<Duration> {
        match mono.and_then(|t| t.checked_sub(record.start_ns)) {
            Some(ns) => Some(Duration::from_nanos(ns)),
            None => ms
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
                .map(|ms| Duration::from_secs_f64(ms / 1000.0)),
        }
    };
    let first_token = offset(record.first_token_ns, record.ttft_ms).map(|d| start + d);
    let end = offset(record.end_ns, record.e2e_ms).map_or(start, |d| start + d);
    Some(SpanTimes {
        start,
        first_token,
        end,
    })
}

/// The span attributes of a record (never prompt or completion text: the record holds none).
pub(crate) fn span_attributes(
    operation: &'static str,
    record: &RequestRecord,
    options: &SpanOptions,
) -> Vec<KeyValue> {
    let mut attrs = Vec::with_capacity(40);
    attrs.push(KeyValue::new(sc::GEN_AI_OPERATION_NAME, operation));
    attrs.push(KeyValue::new(
        sc::GEN_AI_PROVIDER_NAME,
        options.provider_name.clone(),
    ));
    if options.legacy_gen_ai_system {
        attrs.push(KeyValue::new(
            sc::GEN_AI_SYSTEM,
            options.provider_name.clone(),
        ));
    }
    push_str(
        &mut attrs,
        sc::GEN_AI_REQUEST_MODEL,
        record.request_model.as_ref(),
    );
    push_str(&mut attrs, sc::GEN_AI_RESPONSE_MODEL, record.model.as_ref());
    push_str(
        &mut attrs,
        sc::GEN_AI_RESPONSE_ID,
        record.response_id.as_ref(),
    );
    push_u64(&mut attrs, sc::GEN_AI_REQUEST_MAX_TOKENS, record.max_tokens);
    if let Some(n) = record.n.filter(|n| *n != 1) {
        push_u64(&mut attrs, sc::GEN_AI_REQUEST_CHOICE_COUNT, Some(n));
    }
    attrs.push(KeyValue::new(sc::GEN_AI_REQUEST_STREAM, record.stream));
    if record.finish_reasons.iter().any(Option::is_some) {
        let reasons: Vec<StringValue> = record
            .finish_reasons
            .iter()
            .map(|r| StringValue::from(r.clone().unwrap_or_default()))
            .collect();
        attrs.push(KeyValue::new(
            sc::GEN_AI_RESPONSE_FINISH_REASONS,
            Value::Array(Array::String(reasons)),
        ));
    }
    push_u64(
        &mut attrs,
        sc::GEN_AI_USAGE_INPUT_TOKENS,
        record.input_tokens,
    );
    if !record.api.generates_nothing() {
        push_u64(
            &mut attrs,
            sc::GEN_AI_USAGE_OUTPUT_TOKENS,
            record.output_tokens,
        );
    }
    push_u64(
        &mut attrs,
        sc::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
        record.cached_input_tokens,
    );
    push_u64(
        &mut attrs,
        sc::GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
        record.cache_write_input_tokens,
    );
    push_u64(
        &mut attrs,
        sc::GEN_AI_USAGE_REASONING_OUTPUT_TOKENS,
        record.reasoning_output_tokens,
    );
    if record.stream {
        if let Some(ttft) = record.ttft_ms {
            attrs.push(KeyValue::new(
                sc::GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK,
                ttft / 1000.0,
            ));
        }
    }
    push_network_attributes(&mut attrs, record);
    push_str(&mut attrs, sc::ERROR_TYPE, record.error.as_ref());
    if options.include_error_messages {
        push_str(
            &mut attrs,
            sc::STRIKE_ERROR_MESSAGE,
            record.error_message.as_ref(),
        );
    }
    push_strike_attributes(&mut attrs, record);
    attrs
}

/// `server.*`, `client.*`, `http.*` and `url.path` (without the query, which can carry
/// credentials).
fn push_network_attributes(attrs: &mut Vec<KeyValue>, record: &RequestRecord) {
    push_str(attrs, sc::SERVER_ADDRESS, record.server_address.as_deref());
    if let Some(port) = record.server_port {
        attrs.push(KeyValue::new(sc::SERVER_PORT, i64::from(port)));
    }
    if let Some(peer) = record
        .peer
        .as_deref()
        .and_then(|p| p.parse::<std::net::SocketAddr>().ok())
    {
        attrs.push(KeyValue::new(sc::CLIENT_ADDRESS, peer.ip().to_string()));
        attrs.push(KeyValue::new(sc::CLIENT_PORT, i64::from(peer.port())));
    }
    if !record.method.is_empty() {
        attrs.push(KeyValue::new(
            sc::HTTP_REQUEST_METHOD,
            record.method.clone(),
        ));
    }
    if let Some(status) = record.status {
        attrs.push(KeyValue::new(
            sc::HTTP_RESPONSE_STATUS_CODE,
            i64::from(status),
        ));
    }
    if !record.path.is_empty() {
        let path = record.path.split(['?', '#']).next().unwrap_or_default();
        attrs.push(KeyValue::new(sc::URL_PATH, path.to_owned()));
    }
}

/// Strike's own `strike.*` attributes.
fn push_strike_attributes(attrs: &mut Vec<KeyValue>, record: &RequestRecord) {
    attrs.push(KeyValue::new(
        sc::STRIKE_REQUEST_ID,
        record.request_id.clone(),
    ));
    attrs.push(KeyValue::new(sc::STRIKE_PID, i64::from(record.pid)));
    attrs.push(KeyValue::new(sc::STRIKE_COMM, record.comm.clone()));
    push_u64(attrs, sc::STRIKE_CONN_ID, Some(record.conn_id));
    push_str(attrs, sc::CONTAINER_ID, record.container_id.as_deref());
    push_str(attrs, sc::K8S_POD_UID, record.k8s_pod_uid.as_deref());
    attrs.push(KeyValue::new(
        sc::STRIKE_TOKEN_SOURCE,
        token_source_name(record.token_source),
    ));
    if let Some(source) = record.input_token_source {
        attrs.push(KeyValue::new(
            sc::STRIKE_INPUT_TOKEN_SOURCE,
            count_source_name(source),
        ));
    }
    if let Some(source) = record.output_token_source {
        attrs.push(KeyValue::new(
            sc::STRIKE_OUTPUT_TOKEN_SOURCE,
            count_source_name(source),
        ));
    }
    attrs.push(KeyValue::new(sc::STRIKE_PARTIAL, record.partial));
    push_str(
        attrs,
        sc::STRIKE_PARTIAL_REASON,
        record.partial_reason.as_ref(),
    );
    push_u64(attrs, sc::STRIKE_REQUEST_BYTES, Some(record.request_bytes));
    push_u64(
        attrs,
        sc::STRIKE_RESPONSE_BYTES,
        Some(record.response_bytes),
    );
    push_f64(attrs, sc::STRIKE_TTFT_MS, record.ttft_ms);
    push_f64(attrs, sc::STRIKE_ANSWER_TTFT_MS, record.answer_ttft_ms);
    push_f64(attrs, sc::STRIKE_SERVER_LOAD_MS, record.server_load_ms);
    push_f64(attrs, sc::STRIKE_SERVER_PROMPT_MS, record.server_prompt_ms);
    push_f64(attrs, sc::STRIKE_SERVER_DECODE_MS, record.server_decode_ms);
    push_f64(attrs, sc::STRIKE_E2E_MS, record.e2e_ms);
    push_f64(attrs, sc::STRIKE_TPOT_MS, record.tpot_ms);
    push_f64(attrs, sc::STRIKE_ITL_MEAN_MS, record.itl_mean_ms);
    push_f64(attrs, sc::STRIKE_ITL_MAX_MS, record.itl_max_ms);
    push_f64(attrs, sc::STRIKE_COST_USD, record.cost_usd);
    push_f64(attrs, sc::STRIKE_GPU_SECONDS, record.gpu_seconds);
    push_f64(attrs, sc::STRIKE_GPU_ENERGY_J, record.gpu_energy_j);
    push_f64(attrs, sc::STRIKE_CHARGEBACK_USD, record.chargeback_usd);
    push_str(attrs, sc::STRIKE_TENANT, record.tenant.as_deref());
    push_str(
        attrs,
        sc::STRIKE_API_KEY_HASH,
        record.api_key_hash.as_deref(),
    );
    if record.stream {
        attrs.push(KeyValue::new(
            sc::STRIKE_STREAM_EVENTS,
            i64::from(record.stream_events),
        ));
        attrs.push(KeyValue::new(
            sc::STRIKE_CONTENT_EVENTS,
            i64::from(record.content_events),
        ));
    }
}

/// What became of a record handed to [`emit_span`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpanOutcome {
    /// A span was ended and handed to the span processor.
    Emitted,
    /// The sampler dropped it (for instance, the client's trace is not sampled).
    SampledOut,
    /// Not a `GenAI` operation (`Api::Other`).
    NotGenAi,
    /// The record's `start` is not RFC 3339.
    BadStart,
}

/// Creates and ends the span of one record with its own timestamps.
pub(crate) fn emit_span<T: Tracer>(
    tracer: &T,
    record: &RequestRecord,
    options: &SpanOptions,
) -> SpanOutcome {
    let Some(operation) = operation_name(record.api) else {
        return SpanOutcome::NotGenAi;
    };
    let Some(times) = span_times(record) else {
        return SpanOutcome::BadStart;
    };
    let parent = match record.traceparent.as_deref().and_then(parse_traceparent) {
        Some(remote) => Context::new().with_remote_span_context(remote),
        None => Context::new(),
    };
    let builder = tracer
        .span_builder(span_name(operation, record))
        .with_kind(SpanKind::Server)
        .with_start_time(times.start)
        .with_attributes(span_attributes(operation, record, options));
    let mut span = tracer.build_with_context(builder, &parent);
    if !span.is_recording() {
        return SpanOutcome::SampledOut;
    }
    if let Some(first_token) = times.first_token {
        span.add_event_with_timestamp(sc::EVENT_FIRST_TOKEN, first_token, Vec::new());
    }
    if let Some(error) = &record.error {
        let description = if options.include_error_messages {
            record
                .error_message
                .clone()
                .unwrap_or_else(|| error.clone())
        } else {
            error.clone()
        };
        span.set_status(Status::error(description));
    }
    span.end_with_timestamp(times.end);
    SpanOutcome::Emitted
}

pub(crate) fn token_source_name(source: TokenSource) -> &'static str {
    match source {
        TokenSource::Usage => "usage",
        TokenSource::Timings => "timings",
        TokenSource::Estimated => "estimated",
        TokenSource::None => "none",
    }
}

pub(crate) fn count_source_name(source: CountSource) -> &'static str {
    match source {
        CountSource::Usage => "usage",
        CountSource::Timings => "timings",
        CountSource::StreamCount => "stream_count",
        CountSource::PromptBytes => "prompt_bytes",
        CountSource::TextBytes => "text_bytes",
        CountSource::Api => "api",
    }
}

fn push_str(attrs: &mut Vec<KeyValue>, key: &'static str, value: Option<impl AsRef<str>>) {
    if let Some(v) = value {
        attrs.push(KeyValue::new(key, v.as_ref().to_owned()));
    }
}

/// OTLP integers are i64; a count above `i64::MAX` (never seen) saturates.
fn push_u64(attrs: &mut Vec<KeyValue>, key: &'static str, value: Option<u64>) {
    if let Some(v) = value {
        attrs.push(KeyValue::new(key, i64::try_from(v).unwrap_or(i64::MAX)));
    }
}

fn push_f64(attrs: &mut Vec<KeyValue>, key: &'static str, value: Option<f64>) {
    if let Some(v) = value {
        attrs.push(KeyValue::new(key, v));
    }
}
