//! One request in flight: accumulates what the exchange events say and builds the
//! [`RequestRecord`] when both sides are over.

use bytes::{Bytes, BytesMut};

use super::body::{JsonBody, OutputText, PromptText};
use super::generate;
use super::openai::{self, Dialect, ErrorInfo, RequestInfo, ResponseInfo, ServerTimes};
use super::TrackerStats;
use crate::clock::wall_clock;
use crate::conn::ConnInfo;
use crate::num::u64_to_f64;
use crate::protocol::encoding::{BodyCoding, DecodeError};
use crate::protocol::exchange::EndReason;
use crate::protocol::http::{split_host, HeaderTokens, RequestHead, ResponseHead};
use crate::protocol::ndjson::NdjsonDecoder;
use crate::protocol::sse::{SseDecoder, SseEvent};
use crate::record::{Api, RequestRecord};
use crate::tokens::{self, TokenInputs};
use crate::tokens::{Timings, Usage};

#[derive(Debug)]
enum BodyMode {
    /// Not parsed (api "other", or no response yet).
    Ignore,
    /// Read into a bounded copy (`res_json`), parsed at the end.
    Json,
    Sse(SseDecoder),
    Ndjson(NdjsonDecoder),
}

/// A request in flight.
#[derive(Debug)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent facts about one exchange"
)]
pub(crate) struct InFlight {
    pub seq: u64,
    method: String,
    path: String,
    host: Option<String>,
    traceparent: Option<String>,
    tenant: Option<String>,
    api_key_hash: Option<String>,
    api: Api,
    dialect: Dialect,
    start_ns: Option<u64>,
    request_done: bool,
    request_bytes: u64,
    req_json: JsonBody<PromptText>,
    req_coding: BodyCoding,
    req_info: Option<RequestInfo>,
    status: Option<u16>,
    response_head_ns: Option<u64>,
    response_done: bool,
    response_bytes: u64,
    mode: BodyMode,
    /// A streamed body's bytes not yet framed.
    res_buf: BytesMut,
    res_json: JsonBody<OutputText>,
    res_coding: BodyCoding,
    first_body_ns: Option<u64>,
    end_ns: Option<u64>,
    streamed: bool,
    stream_events: u32,
    content_events: u32,
    content_count: u64,
    content_bytes: u64,
    first_content_ns: Option<u64>,
    /// The first stream event with answer content (not reasoning).
    first_answer_ns: Option<u64>,
    last_content_ns: Option<u64>,
    itl_max_ns: u64,
    response_id: Option<String>,
    model: Option<String>,
    finish_reasons: Vec<Option<String>>,
    usage: Option<Usage>,
    timings: Option<Timings>,
    server_times: Option<ServerTimes>,
    error: Option<ErrorInfo>,
    response_parsed: bool,
    /// The request was read whole but no response to it began before the connection ended.
    no_response: bool,
    client_disconnected: bool,
    partial: Vec<&'static str>,
}

/// Most choices tracked for `finish_reasons`.
const MAX_CHOICES: u32 = 128;

impl InFlight {
    pub fn new(seq: u64) -> Self {
        Self {
            seq,
            method: String::new(),
            path: String::new(),
            host: None,
            traceparent: None,
            tenant: None,
            api_key_hash: None,
            api: Api::Other,
            dialect: Dialect::OpenAi,
            start_ns: None,
            request_done: false,
            request_bytes: 0,
            req_json: JsonBody::default(),
            req_coding: BodyCoding::default(),
            req_info: None,
            status: None,
            response_head_ns: None,
            response_done: false,
            response_bytes: 0,
            mode: BodyMode::Ignore,
            res_buf: BytesMut::new(),
            res_json: JsonBody::default(),
            res_coding: BodyCoding::default(),
            first_body_ns: None,
            end_ns: None,
            streamed: false,
            stream_events: 0,
            content_events: 0,
            content_count: 0,
            content_bytes: 0,
            first_content_ns: None,
            first_answer_ns: None,
            last_content_ns: None,
            itl_max_ns: 0,
            response_id: None,
            model: None,
            finish_reasons: Vec::new(),
            usage: None,
            timings: None,
            server_times: None,
            error: None,
            response_parsed: false,
            client_disconnected: false,
            no_response: false,
            partial: Vec::new(),
        }
    }

    /// Heap bytes the request holds: its bodies' bounded JSON copies and decoders, a
    /// streamed body's bytes not framed yet and its event in progress, and its strings.
    /// The struct itself is its connection's to count.
    pub fn buffered_bytes(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        let stream = match &self.mode {
            BodyMode::Sse(dec) => dec.buffered_bytes(),
            BodyMode::Ignore | BodyMode::Json | BodyMode::Ndjson(_) => 0,
        };
        self.method.capacity()
            + self.path.capacity()
            + text(&self.host)
            + text(&self.traceparent)
            + text(&self.tenant)
            + text(&self.api_key_hash)
            + text(&self.response_id)
            + text(&self.model)
            + self.req_json.buffered_bytes()
            + self.req_coding.buffered_bytes()
            + self.res_buf.capacity()
            + stream
            + self.res_json.buffered_bytes()
            + self.res_coding.buffered_bytes()
            + self.finish_reasons.capacity() * size_of::<Option<String>>()
            + self.partial.capacity() * size_of::<&str>()
    }

    /// Kernel ns of the request's first byte, once seen.
    pub fn start_ns(&self) -> Option<u64> {
        self.start_ns
    }

    pub fn is_done(&self) -> bool {
        self.request_done && self.response_done
    }

    fn mark_partial(&mut self, reason: &'static str) {
        if !self.partial.contains(&reason) {
            self.partial.push(reason);
        }
    }

    pub fn request_head(&mut self, start_ns: u64, head: &RequestHead) {
        self.start_ns = Some(start_ns);
        self.method.clone_from(&head.method);
        self.path = head.path.chars().take(2048).collect();
        self.host.clone_from(&head.host);
        self.traceparent.clone_from(&head.traceparent);
        self.tenant.clone_from(&head.tenant);
        self.api_key_hash.clone_from(&head.api_key_hash);
        (self.api, self.dialect) = openai::classify(&head.method, &head.path);
        self.req_coding = BodyCoding::from_header(head.content_encoding.as_deref());
    }

    /// Counts and marks a body whose coding cannot be decoded (once per body).
    fn coding_failure(&mut self, request: bool, stats: &mut TrackerStats) {
        let coding = if request {
            &mut self.req_coding
        } else {
            &mut self.res_coding
        };
        let Some(e) = coding.take_failure() else {
            return;
        };
        self.mark_partial(e.as_str());
        let counter = match e {
            DecodeError::Unsupported => &mut stats.content_encoding_unsupported,
            DecodeError::Corrupt => &mut stats.content_encoding_corrupt,
            DecodeError::OverLimit => &mut stats.content_encoding_over_limit,
        };
        *counter = counter.saturating_add(1);
    }

    pub fn request_body(&mut self, data: &Bytes, max: usize, stats: &mut TrackerStats) {
        if self.api == Api::Other || !self.req_json.reading() {
            return;
        }
        let Some(data) = self.req_coding.decode(data, false) else {
            self.coding_failure(true, stats);
            return;
        };
        self.keep_request_body(&data, max, stats);
    }

    fn keep_request_body(&mut self, data: &[u8], max: usize, stats: &mut TrackerStats) {
        if self
            .req_json
            .feed(data, JsonBody::paths(self.api, self.dialect), max, stats)
        {
            self.mark_partial("request_body_over_limit");
        }
    }

    pub fn request_end(&mut self, wire: u64, max: usize, stats: &mut TrackerStats) {
        self.request_done = true;
        self.request_bytes = wire;
        if self.api != Api::Other && self.req_json.reading() {
            match self.req_coding.decode(&[], true) {
                Some(rest) => self.keep_request_body(&rest, max, stats),
                None => self.coding_failure(true, stats),
            }
        }
        if self.api != Api::Other && !self.req_coding.has_failed() {
            self.req_info = self.req_json.request(self.api, self.dialect, stats);
            if self.api == Api::TritonGenerate {
                if let Some(info) = self.req_info.as_mut() {
                    info.model = info
                        .model
                        .take()
                        .or_else(|| generate::model_in_path(&self.path));
                }
            }
        }
        self.req_json = JsonBody::default();
    }

    pub fn request_abort(&mut self, ts_ns: u64, wire: u64, reason: EndReason) {
        if self.start_ns.is_none() {
            self.start_ns = Some(ts_ns);
        }
        self.request_done = true;
        self.request_bytes = wire;
        self.req_json = JsonBody::default();
        self.note_reason(reason, "request_");
    }

    fn note_reason(&mut self, reason: EndReason, side: &'static str) {
        match reason {
            EndReason::ClientDisconnected => self.client_disconnected = true,
            EndReason::NoResponse => self.no_response = true,
            EndReason::Gap => self.mark_partial(if side == "request_" {
                "request_gap"
            } else {
                "response_gap"
            }),
            EndReason::CaptureStart => self.mark_partial("capture_started_mid_request"),
            other => self.mark_partial(other.as_str()),
        }
    }

    pub fn response_head(&mut self, ts_ns: u64, head: &ResponseHead) {
        self.status = Some(head.status);
        self.response_head_ns = Some(ts_ns);
        let HeaderTokens { prompt, generated } = head.header_tokens;
        if self.api != Api::Other && (prompt.is_some() || generated.is_some()) {
            // The server's own counts, beneath any a body gives.
            self.usage = Some(Usage {
                prompt_tokens: prompt,
                completion_tokens: generated,
                ..Usage::default()
            });
        }
        // A request not seen (empty method) may still have an LLM response worth parsing.
        if self.api == Api::Other && !self.method.is_empty() {
            return;
        }
        let ct = head.content_type.as_deref().unwrap_or_default();
        self.mode = if ct.contains("text/event-stream") {
            self.streamed = true;
            BodyMode::Sse(SseDecoder::default())
        } else if ct.contains("ndjson") {
            self.streamed = true;
            BodyMode::Ndjson(NdjsonDecoder::default())
        } else {
            BodyMode::Json
        };
        self.res_coding = BodyCoding::from_header(head.content_encoding.as_deref());
    }

    pub fn response_body(
        &mut self,
        ts_ns: u64,
        data: &Bytes,
        max: usize,
        stats: &mut TrackerStats,
    ) {
        if self.first_body_ns.is_none() && !data.is_empty() {
            self.first_body_ns = Some(ts_ns);
        }
        self.end_ns = Some(ts_ns);
        if !self.keeps_response_body() {
            return;
        }
        let Some(data) = self.res_coding.decode(data, false) else {
            self.coding_failure(false, stats);
            return;
        };
        self.keep_response_body(ts_ns, &data, max, stats);
    }

    /// Whether response bytes are still used: not for a body that is ignored, or kept
    /// whole but already over the limit (so nothing is decoded for it either).
    fn keeps_response_body(&self) -> bool {
        match self.mode {
            BodyMode::Ignore => false,
            BodyMode::Json => self.res_json.reading(),
            BodyMode::Sse(_) | BodyMode::Ndjson(_) => true,
        }
    }

    /// Decoded response bytes: kept whole (JSON) or framed as they come (streams).
    fn keep_response_body(
        &mut self,
        ts_ns: u64,
        data: &[u8],
        max: usize,
        stats: &mut TrackerStats,
    ) {
        match self.mode {
            BodyMode::Ignore => {}
            BodyMode::Json => {
                if self.res_json.feed(data, || OutputText, max, stats) {
                    self.mark_partial("response_body_over_limit");
                }
            }
            BodyMode::Sse(_) | BodyMode::Ndjson(_) => {
                self.res_buf.extend_from_slice(data);
                let held = self.res_buf.len();
                self.drain_stream(ts_ns, false, stats);
                let consumed = self.res_buf.len() < held;
                crate::protocol::compact(&mut self.res_buf, consumed);
            }
        }
    }

    fn drain_stream(&mut self, ts_ns: u64, end: bool, stats: &mut TrackerStats) {
        let mut mode = std::mem::replace(&mut self.mode, BodyMode::Ignore);
        match &mut mode {
            BodyMode::Sse(dec) => {
                loop {
                    match dec.decode(&mut self.res_buf) {
                        Ok(Some(ev)) => self.sse_event(ts_ns, &ev, stats),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "sse");
                            stats.sse_errors = stats.sse_errors.saturating_add(1);
                        }
                    }
                }
                if end {
                    if let Some(ev) = dec.finish() {
                        self.sse_event(ts_ns, &ev, stats);
                    }
                }
            }
            BodyMode::Ndjson(dec) => {
                loop {
                    match dec.decode(&mut self.res_buf) {
                        Ok(Some(line)) => self.stream_json(ts_ns, &line, stats),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "ndjson");
                            stats.ndjson_errors = stats.ndjson_errors.saturating_add(1);
                        }
                    }
                }
                if end {
                    if let Some(line) = dec.finish(&mut self.res_buf) {
                        self.stream_json(ts_ns, &line, stats);
                    }
                }
            }
            BodyMode::Ignore | BodyMode::Json => {}
        }
        self.mode = mode;
    }

    fn sse_event(&mut self, ts_ns: u64, ev: &SseEvent, stats: &mut TrackerStats) {
        if ev.data.trim() == "[DONE]" {
            self.stream_events = self.stream_events.saturating_add(1);
            return;
        }
        let before = self.stream_events;
        self.stream_json(ts_ns, ev.data.as_bytes(), stats);
        if ev.event.as_deref() == Some("error") && self.error.is_none() {
            self.error = Some(ErrorInfo {
                kind: "stream_error".to_owned(),
                message: None,
            });
        }
        if self.stream_events == before {
            self.stream_events = self.stream_events.saturating_add(1);
        }
    }

    fn stream_json(&mut self, ts_ns: u64, data: &[u8], stats: &mut TrackerStats) {
        self.stream_events = self.stream_events.saturating_add(1);
        match openai::parse_response_in(self.dialect, data) {
            Ok(info) => self.merge(ts_ns, info, true),
            Err(e) => {
                tracing::debug!(error = %e, "stream event");
                stats.json_errors = stats.json_errors.saturating_add(1);
            }
        }
    }

    fn merge(&mut self, ts_ns: u64, info: ResponseInfo, streaming: bool) {
        self.response_parsed = true;
        if self.response_id.is_none() {
            self.response_id = info.id.filter(|id| !id.is_empty());
        }
        if self.model.is_none() {
            self.model = info.model;
        }
        if info.content_choices > 0 {
            self.content_count = self
                .content_count
                .saturating_add(u64::from(info.content_choices));
            self.content_bytes = self.content_bytes.saturating_add(info.content_bytes);
            if streaming {
                self.content_events = self.content_events.saturating_add(1);
                if let Some(last) = self.last_content_ns {
                    self.itl_max_ns = self.itl_max_ns.max(ts_ns.saturating_sub(last));
                }
                if info.answer_choices > 0 && self.first_answer_ns.is_none() {
                    self.first_answer_ns = Some(ts_ns);
                }
                if self.first_content_ns.is_none() {
                    self.first_content_ns = Some(ts_ns);
                }
                self.last_content_ns = Some(ts_ns);
            }
        }
        for (index, reason) in info.finish_reasons {
            if index >= MAX_CHOICES {
                continue;
            }
            let i = index as usize;
            if self.finish_reasons.len() <= i {
                self.finish_reasons.resize(i + 1, None);
            }
            if let Some(slot) = self.finish_reasons.get_mut(i) {
                *slot = Some(reason);
            }
        }
        if let Some(new) = info.usage {
            // Field by field: a later event's partial usage (Anthropic's `message_delta`
            // has only the output) keeps what an earlier one said.
            self.usage = Some(self.usage.unwrap_or_default().merged(new));
        }
        if let Some(new) = info.server_times {
            self.server_times = Some(self.server_times.unwrap_or_default().merged(new));
        }
        if info.timings.is_some() {
            self.timings = info.timings;
        }
        if self.error.is_none() {
            self.error = info.error;
        }
    }

    pub fn response_end(&mut self, ts_ns: u64, wire: u64, max: usize, stats: &mut TrackerStats) {
        self.response_done = true;
        self.response_bytes = wire;
        self.end_ns = Some(ts_ns);
        if self.keeps_response_body() {
            match self.res_coding.decode(&[], true) {
                Some(rest) => self.keep_response_body(ts_ns, &rest, max, stats),
                None => self.coding_failure(false, stats),
            }
        }
        self.finish_body(ts_ns, stats);
    }

    fn finish_body(&mut self, ts_ns: u64, stats: &mut TrackerStats) {
        match self.mode {
            BodyMode::Json => {
                if !self.res_coding.has_failed() {
                    if let Some(info) = self.res_json.response(self.api, self.dialect, stats) {
                        self.merge(ts_ns, info, false);
                    }
                }
            }
            BodyMode::Sse(_) | BodyMode::Ndjson(_) => self.drain_stream(ts_ns, true, stats),
            BodyMode::Ignore => {}
        }
        self.mode = BodyMode::Ignore;
        self.res_buf = BytesMut::new();
        self.res_json = JsonBody::default();
    }

    pub fn response_abort(
        &mut self,
        ts_ns: u64,
        wire: u64,
        reason: EndReason,
        stats: &mut TrackerStats,
    ) {
        self.response_done = true;
        if wire > self.response_bytes {
            self.response_bytes = wire;
        }
        // Streamed events seen so far still count; a truncated JSON body will not parse.
        // An event left unterminated arrived with the last body bytes, not at the abort
        // (which may come much later: eviction, shutdown).
        if matches!(self.mode, BodyMode::Sse(_) | BodyMode::Ndjson(_)) {
            self.finish_body(self.end_ns.unwrap_or(ts_ns), stats);
        }
        self.mode = BodyMode::Ignore;
        self.res_buf = BytesMut::new();
        self.res_json = JsonBody::default();
        self.note_reason(reason, "response_");
    }

    /// When the first token left: the first content-bearing stream event, or the first body
    /// byte of a non-streaming LLM response. An error response (4xx/5xx) carries no token: its
    /// latency is e2e, not a TTFT; nor does an API that generates nothing (embeddings,
    /// rerank, score, prompt counts).
    fn first_token_ns(&self) -> Option<u64> {
        if self.status.is_some_and(|s| s >= 400)
            || (!self.streamed && self.api == Api::Other)
            || self.api.generates_nothing()
        {
            None
        } else if self.streamed {
            self.first_content_ns
        } else {
            self.first_body_ns
        }
    }

    /// Builds the record.
    #[expect(
        clippy::too_many_lines,
        reason = "one field per line of the record it builds"
    )]
    pub fn into_record(self, conn: &ConnInfo, clock_offset_ns: i64) -> RequestRecord {
        let req = self.req_info.clone().unwrap_or_default();
        let counts = tokens::decide(&TokenInputs {
            api: Some(self.api),
            usage: self.usage,
            timings: self.timings,
            streamed: self.streamed,
            stream_content_count: self.content_count,
            text_bytes: self.content_bytes,
            response_seen: self.response_parsed && self.status.is_some_and(|s| s < 400),
            // A rejected request processed no prompt: no estimate.
            request_seen: self.req_info.is_some() && self.status.is_none_or(|s| s < 400),
            prompt_bytes: req.prompt_bytes,
            prompt_token_ids: req.prompt_token_ids,
        });
        let start_ns = self.start_ns.unwrap_or_default();
        let first_token_ns = self.first_token_ns();
        let tpot_ms = match (
            self.streamed,
            self.first_content_ns,
            self.last_content_ns,
            counts.output,
        ) {
            (true, Some(first), Some(last), Some(n)) if n >= 2 => {
                Some(ns_to_ms(last.saturating_sub(first)) / u64_to_f64(n - 1))
            }
            _ => None,
        };
        let itl_mean_ms = match (self.first_content_ns, self.last_content_ns) {
            (Some(first), Some(last)) if self.content_events >= 2 => {
                Some(ns_to_ms(last.saturating_sub(first)) / f64::from(self.content_events - 1))
            }
            _ => None,
        };
        let error = if let Some(e) = &self.error {
            Some(e.kind.clone())
        } else if self.no_response {
            Some("no_response".to_owned())
        } else if self.client_disconnected {
            Some("client_disconnected".to_owned())
        } else {
            self.status
                .filter(|s| *s >= 400)
                .map(|s| format!("http_{s}"))
        };
        let partial_reason = (!self.partial.is_empty()).then(|| self.partial.join(","));
        let (server_address, server_port) = self.host.as_deref().map(split_host).unzip();
        RequestRecord {
            request_id: uuid::Uuid::now_v7().to_string(),
            response_id: self.response_id,
            pid: conn.key.tgid,
            comm: conn.comm.clone(),
            container_id: None,
            k8s_pod_uid: None,
            conn_id: conn.key.conn_id,
            peer: conn.peer.map(|p| p.to_string()),
            method: self.method,
            path: self.path,
            server_address: server_address.map(str::to_owned),
            server_port: server_port.flatten(),
            traceparent: self.traceparent,
            status: self.status,
            api: self.api,
            model: self.model.or_else(|| req.model.clone()),
            request_model: req.model,
            stream: self.streamed || (self.status.is_none() && req.stream == Some(true)),
            include_usage: req.include_usage,
            n: req.n,
            max_tokens: req.max_tokens,
            input_tokens: counts.input,
            output_tokens: counts.output,
            cached_input_tokens: counts.cached,
            cache_write_input_tokens: counts.cache_write,
            reasoning_output_tokens: counts.reasoning,
            token_source: counts.source,
            input_token_source: counts.input_source,
            output_token_source: counts.output_source,
            start: wall_clock(start_ns, clock_offset_ns),
            ttft_ms: first_token_ns
                .and_then(|t| t.checked_sub(start_ns))
                .map(ns_to_ms),
            server_load_ms: self.server_times.and_then(|t| t.load_ns).map(ns_to_ms),
            server_prompt_ms: self.server_times.and_then(|t| t.prompt_ns).map(ns_to_ms),
            server_decode_ms: self.server_times.and_then(|t| t.decode_ns).map(ns_to_ms),
            answer_ttft_ms: first_token_ns
                .and(self.first_answer_ns)
                .filter(|_| self.streamed)
                .and_then(|t| t.checked_sub(start_ns))
                .map(ns_to_ms),
            e2e_ms: self
                .end_ns
                .and_then(|t| t.checked_sub(start_ns))
                .map(ns_to_ms),
            tpot_ms,
            itl_mean_ms,
            itl_max_ms: (self.content_events >= 2).then(|| ns_to_ms(self.itl_max_ns)),
            stream_events: self.stream_events,
            content_events: self.content_events,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
            finish_reason: self.finish_reasons.first().cloned().flatten(),
            finish_reasons: self.finish_reasons,
            error,
            error_message: self.error.and_then(|e| e.message),
            gpu_seconds: None,
            gpu_energy_j: None,
            cost_usd: None,
            chargeback_usd: None,
            tenant: self.tenant,
            api_key_hash: self.api_key_hash,
            partial: !self.partial.is_empty(),
            partial_reason,
            start_ns,
            response_head_ns: self.response_head_ns,
            first_token_ns,
            last_token_ns: self.last_content_ns,
            end_ns: self.end_ns,
        }
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "durations in ns fit f64's 53 bits for 104 days"
)]
fn ns_to_ms(ns: u64) -> f64 {
    ns as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests;
