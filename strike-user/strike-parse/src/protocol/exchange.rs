//! Per-connection HTTP exchange state machine, without I/O.
//!
//! [`ExchangeMachine`] takes the ordered byte segments of both directions of one connection
//! (with their kernel timestamps), decodes requests and responses, pairs them first in,
//! first out (keep-alive and pipelining), and yields [`ExchangeEvent`]s. Every event is
//! stamped with the timestamp of the segment that completed it; a request's `start_ns` is
//! the timestamp of the segment holding its first byte.
//!
//! Broken streams: after a `Gap` (or a decode error, or the start of capture on a
//! connection that was already open) a side drops its parser state and resynchronises:
//! the request side at the next bytes that look like `METHOD SP target SP HTTP/1.`, the
//! response side at a segment starting with `HTTP/1.`. Skipped bytes are counted.
//!
//! Layout: `side.rs` is what both directions share (buffer, decoder, sync, the message in
//! progress and its wire bytes); `requests.rs` and `responses.rs` are what each direction
//! does of its own; this file holds the types, the routing and the connection's end.

use std::{collections::VecDeque, sync::Arc};

use bytes::{Bytes, BytesMut};

use self::side::{Mode, Side};
use super::http::{
    sniff_request_line, sniff_status_line, KeyHasher, RequestDecoder, RequestHead, ResponseDecoder,
    ResponseHead, Sniff, DEFAULT_MAX_HEAD_BYTES,
};
use crate::conn::{Direction, Role};

mod requests;
mod responses;
mod side;

/// Bounds of one connection's machine.
#[derive(Debug, Clone)]
pub struct ExchangeConfig {
    pub max_head_bytes: usize,
    /// Requests waiting for their response; beyond it the oldest is given up.
    pub max_pending: usize,
    /// The request header naming the tenant, when configured.
    pub tenant_header: Option<Arc<str>>,
    /// Hashes API keys; without one they are not recorded.
    pub key_hasher: Option<Arc<KeyHasher>>,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_pending: 64,
            tenant_header: None,
            key_hasher: None,
        }
    }
}

/// Why one side of an exchange ended without completing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Bytes of this side were not captured.
    Gap,
    /// Capture started on an open connection in the middle of this message.
    CaptureStart,
    /// The bytes could not be decoded as HTTP.
    ParseError,
    /// The connection closed before this side completed.
    ConnectionClosed,
    /// The client shut down its side (Eof) before the response completed.
    ClientDisconnected,
    /// The request was read whole, but the connection ended before any response to it began.
    /// Who closed first is not known (llama-server closes kept-alive connections after a
    /// stream, sometimes after reading the next request).
    NoResponse,
    /// Too many requests were waiting for a response.
    PipelineOverflow,
    /// The connection was evicted (idle or over the connection limit).
    Evicted,
    /// The connection was evicted to keep the buffers of all connections under their
    /// byte budget.
    MemoryBudget,
    /// Strike is shutting down.
    Shutdown,
}

impl EndReason {
    /// Stable name, used as `partial_reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Gap => "gap",
            EndReason::CaptureStart => "capture_started_mid_message",
            EndReason::ParseError => "parse_error",
            EndReason::ConnectionClosed => "connection_closed",
            EndReason::ClientDisconnected => "client_disconnected",
            EndReason::NoResponse => "no_response",
            EndReason::PipelineOverflow => "pipeline_overflow",
            EndReason::Evicted => "evicted",
            EndReason::MemoryBudget => "memory_budget",
            EndReason::Shutdown => "shutdown",
        }
    }
}

/// What happened on the connection, per exchange (`seq` numbers the requests of one
/// connection from 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExchangeEvent {
    RequestHead {
        seq: u64,
        /// Timestamp of the segment holding the request's first byte.
        start_ns: u64,
        ts_ns: u64,
        head: RequestHead,
    },
    RequestBody {
        seq: u64,
        ts_ns: u64,
        data: Bytes,
    },
    RequestEnd {
        seq: u64,
        ts_ns: u64,
        /// The whole request on the wire, head and framing included.
        wire_bytes: u64,
    },
    /// The request will not complete. May come without a `RequestHead` for a request known
    /// to exist but not seen (a gap or the start of capture at a request boundary).
    RequestAbort {
        seq: u64,
        ts_ns: u64,
        wire_bytes: u64,
        reason: EndReason,
    },
    /// A 1xx response (e.g. 100 Continue) before the final one.
    ResponseInterim {
        seq: u64,
        ts_ns: u64,
        status: u16,
    },
    ResponseHead {
        seq: u64,
        ts_ns: u64,
        head: ResponseHead,
    },
    ResponseBody {
        seq: u64,
        ts_ns: u64,
        data: Bytes,
    },
    ResponseEnd {
        seq: u64,
        /// Timestamp of the segment holding the response's last byte.
        ts_ns: u64,
        wire_bytes: u64,
    },
    ResponseAbort {
        seq: u64,
        ts_ns: u64,
        wire_bytes: u64,
        reason: EndReason,
    },
}

/// Incidents counted by the machine (added to by every call).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProtocolCounters {
    pub request_parse_errors: u64,
    pub response_parse_errors: u64,
    pub heads_too_large: u64,
    pub unmatched_responses: u64,
    pub gaps: u64,
    pub resync_skipped_bytes: u64,
    pub pipeline_overflows: u64,
    pub not_http_connections: u64,
    pub upgraded_connections: u64,
    /// Bytes seen on connections no longer parsed (not HTTP, upgraded).
    pub ignored_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    seq: u64,
    head_request: bool,
    /// Known to exist but not seen.
    lost: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dead {
    NotHttp,
    Upgraded,
}

/// The exchange state machine of one connection.
#[derive(Debug)]
pub struct ExchangeMachine {
    cfg: ExchangeConfig,
    /// Which direction carries requests; `None` until sniffed.
    req_dir: Option<Direction>,
    sniff: [BytesMut; 2],
    req: Side<RequestDecoder>,
    /// Timestamp of the segment holding the first byte of the request being decoded.
    req_start_ns: Option<u64>,
    res: Side<ResponseDecoder>,
    /// Wire bytes of the interim (1xx) responses before the final one, counted into it.
    res_interim_wire: u64,
    /// Timestamp of the last response segment.
    res_last_ns: u64,
    /// Requests waiting for their response, oldest first.
    pending: VecDeque<Pending>,
    next_seq: u64,
    requests_seen: u64,
    client_eof: bool,
    dead: Option<Dead>,
}

fn dir_index(dir: Direction) -> usize {
    match dir {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

fn other(dir: Direction) -> Direction {
    match dir {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

impl ExchangeMachine {
    /// A machine for a connection of this role; `preexisting` connections may start in
    /// the middle of a message, so both sides start by resynchronising.
    pub fn new(cfg: ExchangeConfig, role: Role, preexisting: bool) -> Self {
        let start_mode = if preexisting {
            Mode::Resync(EndReason::CaptureStart)
        } else {
            Mode::Normal
        };
        Self {
            req_dir: match role {
                Role::Server => Some(Direction::Ingress),
                Role::Client => Some(Direction::Egress),
                Role::Unknown => None,
            },
            sniff: [BytesMut::new(), BytesMut::new()],
            req: Side::new(
                RequestDecoder::new(cfg.max_head_bytes)
                    .with_tenant_header(cfg.tenant_header.clone())
                    .with_key_hasher(cfg.key_hasher.clone()),
                start_mode,
            ),
            req_start_ns: None,
            res: Side::new(ResponseDecoder::new(cfg.max_head_bytes), start_mode),
            cfg,
            res_interim_wire: 0,
            res_last_ns: 0,
            pending: VecDeque::new(),
            next_seq: 0,
            requests_seen: 0,
            client_eof: false,
            dead: None,
        }
    }

    /// Bytes the machine buffers: what each direction holds while the role is sniffed,
    /// each side's bytes not decoded yet (a head in progress), the requests waiting for
    /// their responses.
    pub fn buffered_bytes(&self) -> usize {
        self.sniff.iter().map(BytesMut::capacity).sum::<usize>()
            + self.req.buffered_bytes()
            + self.res.buffered_bytes()
            + self.pending.capacity() * size_of::<Pending>()
    }

    /// After each call: both sides let go of the bytes they decoded.
    fn compact(&mut self) {
        self.req.compact();
        self.res.compact();
    }

    /// The direction carrying requests, once known.
    pub fn request_direction(&self) -> Option<Direction> {
        self.req_dir
    }

    /// Whether the connection is no longer parsed (not HTTP, or upgraded to another
    /// protocol): its bytes need not be captured.
    pub fn given_up(&self) -> bool {
        self.dead.is_some()
    }

    /// Requests seen (heads decoded) so far.
    pub fn requests_seen(&self) -> u64 {
        self.requests_seen
    }

    /// Feeds one segment of bytes.
    pub fn on_data(
        &mut self,
        dir: Direction,
        ts_ns: u64,
        bytes: &[u8],
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) {
        if self.dead.is_some() {
            counters.ignored_bytes = counters.ignored_bytes.saturating_add(bytes.len() as u64);
            return;
        }
        let Some(req_dir) = self
            .req_dir
            .or_else(|| self.sniff_role(dir, bytes, counters))
        else {
            return;
        };
        if self.req_dir.is_none() {
            // Just decided: replay what each direction held while sniffing.
            self.req_dir = Some(req_dir);
            // Start both sides by resynchronising (the connection was not seen from its start).
            let held_req = std::mem::take(&mut self.sniff[dir_index(req_dir)]);
            let held_res = std::mem::take(&mut self.sniff[dir_index(other(req_dir))]);
            self.feed_request(ts_ns, &held_req, out, counters);
            self.feed_response(ts_ns, &held_res, out, counters);
            self.compact();
            return;
        }
        if dir == req_dir {
            self.feed_request(ts_ns, bytes, out, counters);
        } else {
            self.feed_response(ts_ns, bytes, out, counters);
        }
        self.compact();
    }

    /// Role unknown: the direction whose first bytes look like a request line carries
    /// requests (or the other one, if these look like a status line).
    fn sniff_role(
        &mut self,
        dir: Direction,
        bytes: &[u8],
        counters: &mut ProtocolCounters,
    ) -> Option<Direction> {
        let held = self.sniff.get_mut(dir_index(dir))?;
        held.extend_from_slice(bytes);
        match sniff_request_line(held) {
            Sniff::Yes => return Some(dir),
            Sniff::NeedMore if held.len() <= self.cfg.max_head_bytes => return None,
            Sniff::NeedMore | Sniff::No => {}
        }
        match sniff_status_line(held) {
            Sniff::Yes => Some(other(dir)),
            Sniff::NeedMore => None,
            Sniff::No => {
                counters.resync_skipped_bytes = counters
                    .resync_skipped_bytes
                    .saturating_add(held.len() as u64);
                held.clear();
                None
            }
        }
    }

    /// Bytes of one direction were lost.
    pub fn on_gap(
        &mut self,
        dir: Direction,
        ts_ns: u64,
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) {
        counters.gaps = counters.gaps.saturating_add(1);
        if self.dead.is_some() {
            return;
        }
        let Some(req_dir) = self.req_dir else {
            // Bytes held until the direction of requests was known: a gap makes them
            // unusable (the resync after it starts afresh), counted as skipped.
            if let Some(held) = self.sniff.get_mut(dir_index(dir)) {
                counters.resync_skipped_bytes = counters
                    .resync_skipped_bytes
                    .saturating_add(held.len() as u64);
                held.clear();
            }
            return;
        };
        if dir == req_dir {
            self.request_gap(ts_ns, out, counters);
        } else {
            self.response_gap(ts_ns, out, counters);
        }
        self.compact();
    }

    /// The traced process read end-of-stream (ingress).
    pub fn on_eof(&mut self, ts_ns: u64, out: &mut Vec<ExchangeEvent>) {
        match self.req_dir {
            Some(Direction::Ingress) => {
                // The client shut down its sending side.
                self.client_eof = true;
                self.req.abort(ts_ns, EndReason::ClientDisconnected, out);
                self.req.clear();
                self.req_start_ns = None;
            }
            Some(Direction::Egress) => {
                // The server closed: responses delimited by close are complete, the rest not.
                self.finish_responses(ts_ns, EndReason::ConnectionClosed, out);
            }
            None => {}
        }
        self.compact();
    }

    /// The socket closed.
    pub fn on_close(&mut self, ts_ns: u64, out: &mut Vec<ExchangeEvent>) {
        let reason = if self.client_eof {
            EndReason::ClientDisconnected
        } else {
            EndReason::ConnectionClosed
        };
        self.finish_responses(ts_ns, reason, out);
        self.abort_all(ts_ns, reason, out);
    }

    /// Gives up every exchange in flight (eviction, shutdown).
    pub fn abort_all(&mut self, ts_ns: u64, reason: EndReason, out: &mut Vec<ExchangeEvent>) {
        self.req.abort(ts_ns, reason, out);
        self.req.clear();
        self.res.abort(ts_ns, reason, out);
        self.abort_pending(ts_ns, reason, out);
        self.res.clear();
        self.compact();
    }
}

#[cfg(test)]
mod tests;
