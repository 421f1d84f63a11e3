//! LLM stage: OpenAI-compatible API semantics on top of the protocol stage, and the
//! [`RequestTracker`] that turns a connection's [`StreamEvent`]s into one
//! [`RequestRecord`] per request.
//!
//! Memory is bounded by design: each connection reports the bytes it buffers (heads in
//! progress, bodies' bounded JSON copies and decoders, streamed events in progress,
//! requests waiting for their responses) after every event that touched it, the tracker
//! keeps their sum, and past [`TrackerConfig::max_buffered_bytes`] it evicts the least
//! recently active connections (their requests in flight end as partial records,
//! `memory_budget`) until it is under it again. The least recently active connection is
//! found through an ordered index, never by a scan of every connection.

pub mod anthropic;
mod body;
pub mod generate;
mod inflight;
pub mod openai;
pub mod responses;

use std::{collections::VecDeque, sync::Arc};

use crate::conn::{ConnInfo, ConnKey, Eviction, Role, StreamEvent};
use crate::lru::LruTable;
use crate::protocol::exchange::{
    EndReason, ExchangeConfig, ExchangeEvent, ExchangeMachine, ProtocolCounters,
};
use crate::protocol::http::KeyHasher;
use crate::record::RequestRecord;
use inflight::InFlight;

/// Default [`TrackerConfig::max_buffered_bytes`]: 192 MiB. With the stream stage's 64 MiB
/// that is 256 MiB for every per-connection buffer of the agent, half of its memory limit
/// in `deploy/kubernetes/base/daemonset.yaml` (512 MiB): the rest is for the ring buffer
/// (16 MiB), the queues between the stages, the span queue, the recent-requests store and
/// the allocator. Ordinary connections hold a few KiB; one with a 64 KiB head in progress
/// about 62 KiB (3 000 of them fit); the most one can hold is bounded by its buffers' own
/// bounds (64 KiB heads, JSON copies of 1.25 MiB, an SSE event of 4 MiB, a brotli window
/// of 16 MiB), far below the budget.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 192 << 20;

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
    /// Bytes all connections together may buffer ([`DEFAULT_MAX_BUFFERED_BYTES`]); past it
    /// the least recently active connections are evicted until the tracker is under it
    /// again (`budget_evictions`).
    pub max_buffered_bytes: usize,
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
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
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
    /// Connections evicted here, for any reason (idle, over `max_connections`, over the
    /// budget); the stream stage counts its own.
    pub connections_evicted: u64,
    /// Of `connections_evicted`, those evicted to get back under `max_buffered_bytes`.
    pub budget_evictions: u64,
    /// Bytes the tracker's connections buffer now (a gauge, not a counter).
    pub buffered_bytes: u64,
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
    /// Its machine gave up on it and the caller was told ([`RequestTracker::take_given_up`]).
    given_up: bool,
}

impl Conn {
    /// Bytes the connection holds: its state, what its machine buffers, its requests in
    /// flight (a short sum: at most the machine's `max_pending` and one more).
    fn buffered_bytes(&self) -> usize {
        size_of::<Self>()
            + self.info.comm.capacity()
            + self.machine.buffered_bytes()
            + self.inflight.capacity() * size_of::<InFlight>()
            + self
                .inflight
                .iter()
                .map(InFlight::buffered_bytes)
                .sum::<usize>()
    }
}

/// Turns stream events into request records.
pub struct RequestTracker {
    config: TrackerConfig,
    conns: LruTable<Conn>,
    stats: TrackerStats,
    scratch: Vec<ExchangeEvent>,
    /// Connections given up on since the caller last asked (each once).
    given_up: Vec<ConnKey>,
}

impl RequestTracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            conns: LruTable::default(),
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
        if let StreamEvent::Evicted { ts_ns, reason, .. } = event {
            // The stream stage gave up on it (and counted it).
            let reason = match reason {
                Eviction::Idle | Eviction::Full => EndReason::Evicted,
                Eviction::MemoryBudget => EndReason::MemoryBudget,
            };
            self.close_conn(key, ts_ns, reason, out);
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
                | StreamEvent::Close { ts_ns, .. }
                | StreamEvent::Evicted { ts_ns, .. } => *ts_ns,
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
        match &event {
            StreamEvent::Data { ts_ns, .. }
            | StreamEvent::Gap { ts_ns, .. }
            | StreamEvent::Eof { ts_ns, .. } => self.conns.touch(&key, *ts_ns),
            StreamEvent::Close { .. } | StreamEvent::Evicted { .. } | StreamEvent::Open(_) => {}
        }
        if let Some(conn) = self.conns.get_mut(&key) {
            let counters = &mut self.stats.protocol;
            match event {
                StreamEvent::Data {
                    dir, ts_ns, bytes, ..
                } => {
                    conn.machine
                        .on_data(dir, ts_ns, &bytes, &mut events, counters);
                    if !conn.given_up && conn.machine.given_up() {
                        conn.given_up = true;
                        self.given_up.push(key);
                    }
                }
                StreamEvent::Gap { dir, ts_ns, .. } => {
                    conn.machine.on_gap(dir, ts_ns, &mut events, counters);
                }
                StreamEvent::Eof { ts_ns, .. } => {
                    conn.machine.on_eof(ts_ns, &mut events);
                }
                StreamEvent::Close { ts_ns, .. } => {
                    conn.machine.on_close(ts_ns, &mut events);
                    close_at = Some(ts_ns);
                }
                StreamEvent::Open(_) | StreamEvent::Evicted { .. } => {}
            }
        }
        self.apply(key, &mut events, out);
        self.scratch = events;
        if let Some(ts) = close_at {
            self.close_conn(key, ts, EndReason::ConnectionClosed, out);
        } else {
            self.account(key, out);
        }
    }

    /// After an event for `key`: its bytes as they are now, and the budget kept by evicting
    /// the least recently active other connections (at `key`'s time: the eviction happens
    /// now, whatever the victim's last activity was).
    fn account(&mut self, key: ConnKey, out: &mut Vec<RequestRecord>) {
        let Some(bytes) = self.conns.get(&key).map(Conn::buffered_bytes) else {
            return;
        };
        self.conns.set_bytes(&key, bytes);
        let now = self.conns.last_ts(&key).unwrap_or(0);
        while self.conns.buffered_bytes() > self.config.max_buffered_bytes {
            // One connection alone is held by its own bounds (heads, JSON copies).
            let Some(victim) = self.conns.oldest_except(key) else {
                break;
            };
            self.stats.connections_evicted = self.stats.connections_evicted.saturating_add(1);
            self.stats.budget_evictions = self.stats.budget_evictions.saturating_add(1);
            self.close_conn(victim, now, EndReason::MemoryBudget, out);
        }
        self.stats.buffered_bytes = self.conns.buffered_bytes() as u64;
    }

    fn open(&mut self, info: ConnInfo, out: &mut Vec<RequestRecord>) {
        while self.conns.len() >= self.config.max_connections.max(1) {
            let Some((victim, _)) = self.conns.oldest() else {
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
        let (key, ts) = (info.key, info.opened_ns);
        let conn = Conn {
            info,
            machine,
            inflight: VecDeque::new(),
            given_up: false,
        };
        let bytes = conn.buffered_bytes();
        self.conns.insert(key, conn, ts, bytes);
        self.stats.connections_open = self.conns.len() as u64;
        self.account(key, out);
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
        self.stats.buffered_bytes = self.conns.buffered_bytes() as u64;
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
    /// partial records); counts evictions. Visits only the idle connections, oldest first.
    pub fn evict_idle(&mut self, now_mono_ns: u64, out: &mut Vec<RequestRecord>) {
        let timeout = self.config.idle_timeout_ns;
        while let Some((key, last_ts)) = self.conns.oldest() {
            if now_mono_ns.saturating_sub(last_ts) <= timeout {
                break;
            }
            self.stats.connections_evicted = self.stats.connections_evicted.saturating_add(1);
            self.close_conn(key, now_mono_ns, EndReason::Evicted, out);
        }
    }

    /// At shutdown: every in-flight request becomes a partial record.
    pub fn finish(&mut self, out: &mut Vec<RequestRecord>) {
        let mut keys: Vec<(ConnKey, u64)> = self
            .conns
            .keys()
            .map(|k| (*k, self.conns.last_ts(k).unwrap_or(0)))
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

    /// Bytes all connections buffer now.
    pub fn buffered_bytes(&self) -> usize {
        self.conns.buffered_bytes()
    }

    /// Connections tracked now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }
}

#[cfg(test)]
mod tests;
