//! LLM stage: OpenAI-compatible API semantics on top of the protocol stage, and the
//! [`RequestTracker`] that turns a connection's [`StreamEvent`]s into one
//! [`RequestRecord`] per request.

pub mod anthropic;
mod body;
pub mod generate;
mod inflight;
pub mod openai;
pub mod responses;

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use crate::conn::{ConnInfo, ConnKey, Role, StreamEvent};
use crate::protocol::exchange::{
    EndReason, ExchangeConfig, ExchangeEvent, ExchangeMachine, ProtocolCounters,
};
use crate::protocol::http::KeyHasher;
use crate::record::RequestRecord;
use inflight::InFlight;

/// Settings of the [`RequestTracker`].
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Wall-clock ns = monotonic ns + offset.
    pub clock_offset_ns: i64,
    /// Bytes of a request's or a whole response's JSON body kept for parsing. A larger
    /// body is still read whole, as it arrives: past this its long strings and further
    /// array items are left out of the copy kept, and counted, so the record is exact and
    /// not partial (`bodies_elided`). Streamed responses are parsed event by event and are
    /// not bound by it.
    pub max_body_bytes: usize,
    /// Connections tracked at once; opening one more evicts the least recently active.
    pub max_connections: usize,
    /// Connections idle longer than this are evicted by [`RequestTracker::evict_idle`].
    pub idle_timeout_ns: u64,
    /// The request header naming the tenant (`cost.tenant_header`), when configured.
    pub tenant_header: Option<Arc<str>>,
    /// Hashes API keys into `api_key_hash` (`cost.api_key_hash_key_file`); without one
    /// keys are not recorded.
    pub key_hasher: Option<Arc<KeyHasher>>,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            clock_offset_ns: 0,
            max_body_bytes: 1024 * 1024,
            max_connections: 65_536,
            idle_timeout_ns: 10 * 60 * 1_000_000_000,
            tenant_header: None,
            key_hasher: None,
        }
    }
}

/// Counters of the tracker's incidents.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrackerStats {
    /// Connections tracked now.
    pub connections_open: u64,
    /// Connections ever tracked.
    pub connections_opened: u64,
    /// Connections evicted (idle, or over `max_connections`).
    pub connections_evicted: u64,
    /// Events for a connection without a prior `Open` (tracked as preexisting, role unknown).
    pub connections_without_open: u64,
    /// Requests whose head was decoded.
    pub requests: u64,
    /// Records emitted.
    pub records: u64,
    /// Records emitted with `partial = true`.
    pub partial_records: u64,
    /// JSON bodies that outgrew their bounded copy anyway (`max_body_bytes` and a quarter:
    /// members without end) or nested too deep; the record is partial.
    pub bodies_over_limit: u64,
    /// JSON bodies over `max_body_bytes`, read whole with text left out of the copy kept
    /// (measured, not partial).
    pub bodies_elided: u64,
    /// JSON bodies/events that did not parse.
    pub json_errors: u64,
    /// SSE lines/events over their bounds.
    pub sse_errors: u64,
    /// NDJSON lines over their bound.
    pub ndjson_errors: u64,
    /// Bodies in a `Content-Encoding` Strike does not decode (or a stack of several).
    pub content_encoding_unsupported: u64,
    /// Compressed bodies that did not decode.
    pub content_encoding_corrupt: u64,
    /// Compressed bodies stopped at the decoder's bound (output cap or ratio: a
    /// decompression bomb).
    pub content_encoding_over_limit: u64,
    /// HTTP-level counters.
    #[serde(flatten)]
    pub protocol: ProtocolCounters,
}

struct Conn {
    info: ConnInfo,
    machine: ExchangeMachine,
    inflight: VecDeque<InFlight>,
    last_activity_ns: u64,
    /// Its machine gave up on it and the caller was told ([`RequestTracker::take_given_up`]).
    given_up: bool,
}

/// Turns stream events into request records.
pub struct RequestTracker {
    config: TrackerConfig,
    conns: HashMap<ConnKey, Conn>,
    stats: TrackerStats,
    scratch: Vec<ExchangeEvent>,
    /// Connections given up on since the caller last asked (each once).
    given_up: Vec<ConnKey>,
}

impl RequestTracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            conns: HashMap::new(),
            stats: TrackerStats::default(),
            scratch: Vec::new(),
            given_up: Vec::new(),
        }
    }

    /// Connections found not to be HTTP (or upgraded to another protocol) since the last
    /// call, each once: their bytes need not be captured any more.
    pub fn take_given_up(&mut self, out: &mut Vec<ConnKey>) {
        out.append(&mut self.given_up);
    }

    /// Feed one stream event; completed records are pushed to `out`.
    pub fn handle(&mut self, event: StreamEvent, out: &mut Vec<RequestRecord>) {
        let key = event.key();
        if let StreamEvent::Open(info) = event {
            if self.conns.contains_key(&key) {
                // Same key opened twice: the old one is over.
                self.close_conn(key, info.opened_ns, EndReason::ConnectionClosed, out);
            }
            self.open(info, out);
            return;
        }
        if !self.conns.contains_key(&key) {
            if matches!(event, StreamEvent::Close { .. }) {
                return;
            }
            self.stats.connections_without_open =
                self.stats.connections_without_open.saturating_add(1);
            let ts = match &event {
                StreamEvent::Data { ts_ns, .. }
                | StreamEvent::Gap { ts_ns, .. }
                | StreamEvent::Eof { ts_ns, .. }
                | StreamEvent::Close { ts_ns, .. } => *ts_ns,
                StreamEvent::Open(i) => i.opened_ns,
            };
            self.open(
                ConnInfo {
                    key,
                    comm: String::new(),
                    role: Role::Unknown,
                    peer: None,
                    opened_ns: ts,
                    preexisting: true,
                },
                out,
            );
        }
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        let mut close_at = None;
        if let Some(conn) = self.conns.get_mut(&key) {
            let counters = &mut self.stats.protocol;
            match event {
                StreamEvent::Data {
                    dir, ts_ns, bytes, ..
                } => {
                    conn.last_activity_ns = conn.last_activity_ns.max(ts_ns);
                    conn.machine
                        .on_data(dir, ts_ns, &bytes, &mut events, counters);
                    if !conn.given_up && conn.machine.given_up() {
                        conn.given_up = true;
                        self.given_up.push(key);
                    }
                }
                StreamEvent::Gap { dir, ts_ns, .. } => {
                    conn.last_activity_ns = conn.last_activity_ns.max(ts_ns);
                    conn.machine.on_gap(dir, ts_ns, &mut events, counters);
                }
                StreamEvent::Eof { ts_ns, .. } => {
                    conn.last_activity_ns = conn.last_activity_ns.max(ts_ns);
                    conn.machine.on_eof(ts_ns, &mut events);
                }
                StreamEvent::Close { ts_ns, .. } => {
                    conn.machine.on_close(ts_ns, &mut events);
                    close_at = Some(ts_ns);
                }
                StreamEvent::Open(_) => {}
            }
        }
        self.apply(key, &mut events, out);
        self.scratch = events;
        if let Some(ts) = close_at {
            self.close_conn(key, ts, EndReason::ConnectionClosed, out);
        }
    }

    fn open(&mut self, info: ConnInfo, out: &mut Vec<RequestRecord>) {
        while self.conns.len() >= self.config.max_connections.max(1) {
            let Some(victim) = self
                .conns
                .iter()
                .min_by_key(|(_, c)| c.last_activity_ns)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.stats.connections_evicted = self.stats.connections_evicted.saturating_add(1);
            self.close_conn(victim, info.opened_ns, EndReason::Evicted, out);
        }
        let machine = ExchangeMachine::new(
            ExchangeConfig {
                tenant_header: self.config.tenant_header.clone(),
                key_hasher: self.config.key_hasher.clone(),
                ..ExchangeConfig::default()
            },
            info.role,
            info.preexisting,
        );
        self.stats.connections_opened = self.stats.connections_opened.saturating_add(1);
        self.conns.insert(
            info.key,
            Conn {
                last_activity_ns: info.opened_ns,
                info,
                machine,
                inflight: VecDeque::new(),
                given_up: false,
            },
        );
        self.stats.connections_open = self.conns.len() as u64;
    }

    /// Ends a connection: everything still in flight becomes a record.
    fn close_conn(
        &mut self,
        key: ConnKey,
        ts_ns: u64,
        reason: EndReason,
        out: &mut Vec<RequestRecord>,
    ) {
        let mut events = std::mem::take(&mut self.scratch);
        events.clear();
        if let Some(conn) = self.conns.get_mut(&key) {
            conn.machine.abort_all(ts_ns, reason, &mut events);
        }
        self.apply(key, &mut events, out);
        self.scratch = events;
        if let Some(mut conn) = self.conns.remove(&key) {
            // Anything the machine did not account for (should be nothing).
            while let Some(mut inflight) = conn.inflight.pop_front() {
                if !inflight.is_done() {
                    inflight.request_abort(ts_ns, 0, reason);
                    inflight.response_abort(ts_ns, 0, reason, &mut self.stats);
                }
                self.emit(&conn.info, inflight, out);
            }
        }
        self.stats.connections_open = self.conns.len() as u64;
    }

    fn apply(
        &mut self,
        key: ConnKey,
        events: &mut Vec<ExchangeEvent>,
        out: &mut Vec<RequestRecord>,
    ) {
        let Some(conn) = self.conns.get_mut(&key) else {
            events.clear();
            return;
        };
        let max_body = self.config.max_body_bytes;
        let stats = &mut self.stats;
        for ev in events.drain(..) {
            let seq = match &ev {
                ExchangeEvent::RequestHead { seq, .. }
                | ExchangeEvent::RequestBody { seq, .. }
                | ExchangeEvent::RequestEnd { seq, .. }
                | ExchangeEvent::RequestAbort { seq, .. }
                | ExchangeEvent::ResponseInterim { seq, .. }
                | ExchangeEvent::ResponseHead { seq, .. }
                | ExchangeEvent::ResponseBody { seq, .. }
                | ExchangeEvent::ResponseEnd { seq, .. }
                | ExchangeEvent::ResponseAbort { seq, .. } => *seq,
            };
            let idx = if let Some(i) = conn.inflight.iter().position(|f| f.seq == seq) {
                i
            } else {
                conn.inflight.push_back(InFlight::new(seq));
                conn.inflight.len().saturating_sub(1)
            };
            let Some(f) = conn.inflight.get_mut(idx) else {
                continue;
            };
            match ev {
                ExchangeEvent::RequestHead { start_ns, head, .. } => {
                    stats.requests = stats.requests.saturating_add(1);
                    f.request_head(start_ns, &head);
                }
                ExchangeEvent::RequestBody { data, .. } => f.request_body(&data, max_body, stats),
                ExchangeEvent::RequestEnd { wire_bytes, .. } => {
                    f.request_end(wire_bytes, max_body, stats);
                }
                ExchangeEvent::RequestAbort {
                    ts_ns,
                    wire_bytes,
                    reason,
                    ..
                } => f.request_abort(ts_ns, wire_bytes, reason),
                ExchangeEvent::ResponseInterim { .. } => {}
                ExchangeEvent::ResponseHead { ts_ns, head, .. } => f.response_head(ts_ns, &head),
                ExchangeEvent::ResponseBody { ts_ns, data, .. } => {
                    f.response_body(ts_ns, &data, max_body, stats);
                }
                ExchangeEvent::ResponseEnd {
                    ts_ns, wire_bytes, ..
                } => f.response_end(ts_ns, wire_bytes, max_body, stats),
                ExchangeEvent::ResponseAbort {
                    ts_ns,
                    wire_bytes,
                    reason,
                    ..
                } => f.response_abort(ts_ns, wire_bytes, reason, stats),
            }
            if f.is_done() {
                if let Some(done) = conn.inflight.remove(idx) {
                    let record = done.into_record(&conn.info, self.config.clock_offset_ns);
                    stats.records = stats.records.saturating_add(1);
                    if record.partial {
                        stats.partial_records = stats.partial_records.saturating_add(1);
                    }
                    out.push(record);
                }
            }
        }
    }

    fn emit(&mut self, info: &ConnInfo, f: InFlight, out: &mut Vec<RequestRecord>) {
        let record = f.into_record(info, self.config.clock_offset_ns);
        self.stats.records = self.stats.records.saturating_add(1);
        if record.partial {
            self.stats.partial_records = self.stats.partial_records.saturating_add(1);
        }
        out.push(record);
    }

    /// Evict connections idle longer than the timeout (their in-flight requests become
    /// partial records); counts evictions.
    pub fn evict_idle(&mut self, now_mono_ns: u64, out: &mut Vec<RequestRecord>) {
        let timeout = self.config.idle_timeout_ns;
        let idle: Vec<ConnKey> = self
            .conns
            .iter()
            .filter(|(_, c)| now_mono_ns.saturating_sub(c.last_activity_ns) > timeout)
            .map(|(k, _)| *k)
            .collect();
        for key in idle {
            self.stats.connections_evicted = self.stats.connections_evicted.saturating_add(1);
            self.close_conn(key, now_mono_ns, EndReason::Evicted, out);
        }
    }

    /// At shutdown: every in-flight request becomes a partial record.
    pub fn finish(&mut self, out: &mut Vec<RequestRecord>) {
        let mut keys: Vec<(ConnKey, u64)> = self
            .conns
            .iter()
            .map(|(k, c)| (*k, c.last_activity_ns))
            .collect();
        keys.sort_unstable();
        for (key, ts) in keys {
            self.close_conn(key, ts, EndReason::Shutdown, out);
        }
    }

    /// A copy of the counters.
    /// The first byte of the oldest request still in flight, if any: no request that is not
    /// finished yet started before it.
    pub fn oldest_inflight_start_ns(&self) -> Option<u64> {
        self.conns
            .values()
            .flat_map(|c| c.inflight.iter())
            .filter_map(InFlight::start_ns)
            .min()
    }

    pub fn stats(&self) -> TrackerStats {
        self.stats.clone()
    }
}
