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

use std::{collections::VecDeque, sync::Arc};

use bytes::{Bytes, BytesMut};

use super::http::{
    sniff_request_line, sniff_status_line, HttpError, RequestDecoder, RequestFrame, RequestHead,
    ResponseDecoder, ResponseFrame, ResponseHead, Sniff, DEFAULT_MAX_HEAD_BYTES,
};
use crate::conn::{Direction, Role};

/// Bounds of one connection's machine.
#[derive(Debug, Clone)]
pub struct ExchangeConfig {
    pub max_head_bytes: usize,
    /// Requests waiting for their response; beyond it the oldest is given up.
    pub max_pending: usize,
    /// The request header naming the tenant, when configured.
    pub tenant_header: Option<Arc<str>>,
}

impl Default for ExchangeConfig {
    fn default() -> Self {
        Self {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_pending: 64,
            tenant_header: None,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    /// Looking for the next message boundary; `reason` says why, for a lost exchange.
    Resync(EndReason),
}

#[derive(Debug, Clone, Copy)]
struct Current {
    seq: Option<u64>,
    wire: u64,
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
    req_dec: RequestDecoder,
    req_buf: BytesMut,
    req_mode: Mode,
    req_cur: Option<Current>,
    req_start_ns: Option<u64>,
    res_dec: ResponseDecoder,
    res_buf: BytesMut,
    res_mode: Mode,
    res_cur: Option<Current>,
    res_interim_wire: u64,
    res_last_ns: u64,
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
            req_dec: RequestDecoder::new(cfg.max_head_bytes)
                .with_tenant_header(cfg.tenant_header.clone()),
            req_buf: BytesMut::new(),
            req_mode: start_mode,
            req_cur: None,
            req_start_ns: None,
            res_dec: ResponseDecoder::new(cfg.max_head_bytes),
            cfg,
            res_buf: BytesMut::new(),
            res_mode: start_mode,
            res_cur: None,
            res_interim_wire: 0,
            res_last_ns: 0,
            pending: VecDeque::new(),
            next_seq: 0,
            requests_seen: 0,
            client_eof: false,
            dead: None,
        }
    }

    /// The direction carrying requests, once known.
    pub fn request_direction(&self) -> Option<Direction> {
        self.req_dir
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
            return;
        }
        if dir == req_dir {
            self.feed_request(ts_ns, bytes, out, counters);
        } else {
            self.feed_response(ts_ns, bytes, out, counters);
        }
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

    fn feed_request(
        &mut self,
        ts_ns: u64,
        bytes: &[u8],
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) {
        self.req_buf.extend_from_slice(bytes);
        if let Mode::Resync(reason) = self.req_mode {
            if !self.resync_request(ts_ns, reason, 0, out, counters) {
                return;
            }
        }
        self.decode_requests(ts_ns, out, counters);
    }

    /// Skips request-side bytes up to the next plausible request line (searched at the
    /// start and after each LF, from `from`). Returns true once in sync.
    fn resync_request(
        &mut self,
        ts_ns: u64,
        reason: EndReason,
        from: usize,
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) -> bool {
        let buf = &self.req_buf[..];
        let mut pos = from.min(buf.len());
        let mut keep_from = None;
        loop {
            let cand = buf.get(pos..).unwrap_or_default();
            if cand.is_empty() {
                break;
            }
            match sniff_request_line(cand) {
                Sniff::Yes => {
                    keep_from = Some((pos, true));
                    break;
                }
                Sniff::NeedMore => {
                    keep_from = Some((pos, false));
                    break;
                }
                Sniff::No => {}
            }
            match memchr::memchr(b'\n', cand) {
                Some(i) => pos = pos.saturating_add(i + 1),
                None => break,
            }
        }
        let (skip, synced) = match keep_from {
            Some((p, synced)) => (p, synced),
            None => (buf.len(), false),
        };
        if skip > 0 {
            counters.resync_skipped_bytes =
                counters.resync_skipped_bytes.saturating_add(skip as u64);
            let _ = self.req_buf.split_to(skip);
            if reason == EndReason::CaptureStart {
                // The first captured bytes were in the middle of a request: it exists, and its
                // response will come; keep its place in the queue.
                self.lost_request(ts_ns, reason, out);
                self.req_mode = Mode::Resync(EndReason::Gap);
            }
        }
        if !synced && self.req_buf.len() > self.cfg.max_head_bytes {
            counters.resync_skipped_bytes = counters
                .resync_skipped_bytes
                .saturating_add(self.req_buf.len() as u64);
            self.req_buf.clear();
        }
        if synced {
            self.req_mode = Mode::Normal;
        }
        synced
    }

    /// A request that certainly happened but was not seen.
    fn lost_request(&mut self, ts_ns: u64, reason: EndReason, out: &mut Vec<ExchangeEvent>) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        self.push_pending(
            Pending {
                seq,
                head_request: false,
                lost: true,
            },
            ts_ns,
            out,
        );
        out.push(ExchangeEvent::RequestAbort {
            seq,
            ts_ns,
            wire_bytes: 0,
            reason,
        });
    }

    fn push_pending(&mut self, p: Pending, ts_ns: u64, out: &mut Vec<ExchangeEvent>) {
        if self.pending.len() >= self.cfg.max_pending {
            if let Some(old) = self.pending.pop_front() {
                out.push(ExchangeEvent::ResponseAbort {
                    seq: old.seq,
                    ts_ns,
                    wire_bytes: 0,
                    reason: EndReason::PipelineOverflow,
                });
            }
        }
        self.pending.push_back(p);
    }

    fn decode_requests(
        &mut self,
        ts_ns: u64,
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) {
        loop {
            if self.req_dec.is_idle() && !self.req_buf.is_empty() && self.req_start_ns.is_none() {
                self.req_start_ns = Some(ts_ns);
            }
            let before = self.req_buf.len();
            let frame = self.req_dec.decode(&mut self.req_buf);
            let consumed = before.saturating_sub(self.req_buf.len()) as u64;
            match frame {
                Ok(None) => {
                    // Framing the decoder took while waiting for more (a chunk-size line)
                    // is part of the message on the wire.
                    if let Some(cur) = self.req_cur.as_mut() {
                        cur.wire = cur.wire.saturating_add(consumed);
                    }
                    return;
                }
                Ok(Some(RequestFrame::Head(head))) => {
                    let seq = self.next_seq;
                    self.next_seq = self.next_seq.saturating_add(1);
                    self.requests_seen = self.requests_seen.saturating_add(1);
                    self.req_cur = Some(Current {
                        seq: Some(seq),
                        wire: consumed,
                    });
                    if self.pending.len() >= self.cfg.max_pending {
                        counters.pipeline_overflows = counters.pipeline_overflows.saturating_add(1);
                    }
                    self.push_pending(
                        Pending {
                            seq,
                            head_request: head.method.eq_ignore_ascii_case("HEAD"),
                            lost: false,
                        },
                        ts_ns,
                        out,
                    );
                    let start_ns = self.req_start_ns.take().unwrap_or(ts_ns);
                    out.push(ExchangeEvent::RequestHead {
                        seq,
                        start_ns,
                        ts_ns,
                        head,
                    });
                }
                Ok(Some(RequestFrame::Body(data))) => {
                    if let Some(cur) = self.req_cur.as_mut() {
                        cur.wire = cur.wire.saturating_add(consumed);
                        if let Some(seq) = cur.seq {
                            out.push(ExchangeEvent::RequestBody { seq, ts_ns, data });
                        }
                    }
                }
                Ok(Some(RequestFrame::End)) => {
                    if let Some(cur) = self.req_cur.take() {
                        if let Some(seq) = cur.seq {
                            out.push(ExchangeEvent::RequestEnd {
                                seq,
                                ts_ns,
                                wire_bytes: cur.wire.saturating_add(consumed),
                            });
                        }
                    }
                }
                Err(err) => {
                    self.request_error(ts_ns, &err, out, counters);
                    if self.dead.is_some() {
                        return;
                    }
                    if !self.resync_request(ts_ns, EndReason::ParseError, 1, out, counters) {
                        return;
                    }
                }
            }
        }
    }

    fn request_error(
        &mut self,
        ts_ns: u64,
        err: &HttpError,
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) {
        tracing::debug!(error = %err, "request decode error");
        counters.request_parse_errors = counters.request_parse_errors.saturating_add(1);
        if matches!(err, HttpError::HeadTooLarge { .. }) {
            counters.heads_too_large = counters.heads_too_large.saturating_add(1);
        }
        if self.requests_seen == 0 && self.req_mode == Mode::Normal {
            // The very first bytes of a connection seen from its start are not HTTP.
            counters.not_http_connections = counters.not_http_connections.saturating_add(1);
            counters.ignored_bytes = counters
                .ignored_bytes
                .saturating_add(self.req_buf.len() as u64);
            self.req_buf.clear();
            self.res_buf.clear();
            self.dead = Some(Dead::NotHttp);
            return;
        }
        if let Some(cur) = self.req_cur.take() {
            if let Some(seq) = cur.seq {
                out.push(ExchangeEvent::RequestAbort {
                    seq,
                    ts_ns,
                    wire_bytes: cur.wire,
                    reason: EndReason::ParseError,
                });
            }
        }
        self.req_dec.reset();
        self.req_start_ns = None;
        self.req_mode = Mode::Resync(EndReason::ParseError);
    }

    fn feed_response(
        &mut self,
        ts_ns: u64,
        bytes: &[u8],
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) {
        if bytes.is_empty() {
            return;
        }
        self.res_last_ns = ts_ns;
        if let Mode::Resync(reason) = self.res_mode {
            // Only a segment that starts a status line (or continues one held back) resyncs.
            let mut candidate = std::mem::take(&mut self.res_buf);
            candidate.extend_from_slice(bytes);
            match sniff_status_line(&candidate) {
                Sniff::Yes => {
                    self.res_mode = Mode::Normal;
                    self.res_buf = candidate;
                }
                Sniff::NeedMore => {
                    self.res_buf = candidate;
                    return;
                }
                Sniff::No => {
                    counters.resync_skipped_bytes = counters
                        .resync_skipped_bytes
                        .saturating_add(candidate.len() as u64);
                    // Bytes of a response to a request that was not seen either.
                    if reason == EndReason::CaptureStart {
                        if let Some(front) = self.pending.front().copied() {
                            if front.lost {
                                self.pending.pop_front();
                                out.push(ExchangeEvent::ResponseAbort {
                                    seq: front.seq,
                                    ts_ns,
                                    wire_bytes: 0,
                                    reason,
                                });
                            }
                        }
                    }
                    return;
                }
            }
        } else {
            self.res_buf.extend_from_slice(bytes);
        }
        self.decode_responses(ts_ns, out, counters);
    }

    fn decode_responses(
        &mut self,
        ts_ns: u64,
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) {
        loop {
            if self.res_dec.is_idle() {
                let head_req = self.pending.front().is_some_and(|p| p.head_request);
                self.res_dec.set_head_request(head_req);
            }
            let before = self.res_buf.len();
            let frame = self.res_dec.decode(&mut self.res_buf);
            let consumed = before.saturating_sub(self.res_buf.len()) as u64;
            match frame {
                Ok(None) => {
                    // Framing the decoder took while waiting for more (a chunk-size line)
                    // is part of the message on the wire.
                    if let Some(cur) = self.res_cur.as_mut() {
                        cur.wire = cur.wire.saturating_add(consumed);
                    }
                    return;
                }
                Ok(Some(ResponseFrame::Head(head))) => {
                    if head.is_interim() {
                        self.res_interim_wire = self.res_interim_wire.saturating_add(consumed);
                        if let Some(front) = self.pending.front() {
                            out.push(ExchangeEvent::ResponseInterim {
                                seq: front.seq,
                                ts_ns,
                                status: head.status,
                            });
                        }
                        continue;
                    }
                    let wire = consumed.saturating_add(std::mem::take(&mut self.res_interim_wire));
                    let upgraded = head.status == 101;
                    let seq = if let Some(front) = self.pending.pop_front() {
                        out.push(ExchangeEvent::ResponseHead {
                            seq: front.seq,
                            ts_ns,
                            head,
                        });
                        Some(front.seq)
                    } else {
                        counters.unmatched_responses =
                            counters.unmatched_responses.saturating_add(1);
                        None
                    };
                    self.res_cur = Some(Current { seq, wire });
                    if upgraded {
                        // Whatever follows is not HTTP/1.1; stop parsing this connection.
                        if let Ok(Some(ResponseFrame::End)) = self.res_dec.decode(&mut self.res_buf)
                        {
                            self.end_response(ts_ns, 0, out);
                        }
                        counters.upgraded_connections =
                            counters.upgraded_connections.saturating_add(1);
                        self.dead = Some(Dead::Upgraded);
                        self.abort_all(ts_ns, EndReason::ConnectionClosed, out);
                        return;
                    }
                }
                Ok(Some(ResponseFrame::Body(data))) => {
                    if let Some(cur) = self.res_cur.as_mut() {
                        cur.wire = cur.wire.saturating_add(consumed);
                        if let Some(seq) = cur.seq {
                            out.push(ExchangeEvent::ResponseBody { seq, ts_ns, data });
                        }
                    }
                }
                Ok(Some(ResponseFrame::End)) => self.end_response(ts_ns, consumed, out),
                Err(err) => {
                    tracing::debug!(error = %err, "response decode error");
                    counters.response_parse_errors =
                        counters.response_parse_errors.saturating_add(1);
                    if matches!(err, HttpError::HeadTooLarge { .. }) {
                        counters.heads_too_large = counters.heads_too_large.saturating_add(1);
                    }
                    if let Some(cur) = self.res_cur.take() {
                        if let Some(seq) = cur.seq {
                            out.push(ExchangeEvent::ResponseAbort {
                                seq,
                                ts_ns,
                                wire_bytes: cur.wire,
                                reason: EndReason::ParseError,
                            });
                        }
                    }
                    counters.resync_skipped_bytes = counters
                        .resync_skipped_bytes
                        .saturating_add(self.res_buf.len() as u64);
                    self.res_buf.clear();
                    self.res_dec.reset();
                    self.res_interim_wire = 0;
                    self.res_mode = Mode::Resync(EndReason::ParseError);
                    return;
                }
            }
        }
    }

    fn end_response(&mut self, ts_ns: u64, consumed: u64, out: &mut Vec<ExchangeEvent>) {
        if let Some(cur) = self.res_cur.take() {
            if let Some(seq) = cur.seq {
                out.push(ExchangeEvent::ResponseEnd {
                    seq,
                    ts_ns,
                    wire_bytes: cur.wire.saturating_add(consumed),
                });
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
            if let Some(held) = self.sniff.get_mut(dir_index(dir)) {
                held.clear();
            }
            return;
        };
        if dir == req_dir {
            if let Some(cur) = self.req_cur.take() {
                if let Some(seq) = cur.seq {
                    out.push(ExchangeEvent::RequestAbort {
                        seq,
                        ts_ns,
                        wire_bytes: cur.wire,
                        reason: EndReason::Gap,
                    });
                }
            } else if self.req_mode == Mode::Normal {
                // At a request boundary: the lost bytes began a request we will never see.
                self.lost_request(ts_ns, EndReason::Gap, out);
            }
            counters.resync_skipped_bytes = counters
                .resync_skipped_bytes
                .saturating_add(self.req_buf.len() as u64);
            self.req_buf.clear();
            self.req_dec.reset();
            self.req_start_ns = None;
            self.req_mode = Mode::Resync(EndReason::Gap);
        } else {
            if let Some(cur) = self.res_cur.take() {
                if let Some(seq) = cur.seq {
                    out.push(ExchangeEvent::ResponseAbort {
                        seq,
                        ts_ns,
                        wire_bytes: cur.wire,
                        reason: EndReason::Gap,
                    });
                }
            } else if self.res_mode == Mode::Normal {
                // The lost bytes began the response to the oldest waiting request.
                if let Some(front) = self.pending.pop_front() {
                    out.push(ExchangeEvent::ResponseAbort {
                        seq: front.seq,
                        ts_ns,
                        wire_bytes: self.res_interim_wire,
                        reason: EndReason::Gap,
                    });
                }
            }
            counters.resync_skipped_bytes = counters
                .resync_skipped_bytes
                .saturating_add(self.res_buf.len() as u64);
            self.res_buf.clear();
            self.res_dec.reset();
            self.res_interim_wire = 0;
            self.res_mode = Mode::Resync(EndReason::Gap);
        }
    }

    /// The traced process read end-of-stream (ingress).
    pub fn on_eof(&mut self, ts_ns: u64, out: &mut Vec<ExchangeEvent>) {
        match self.req_dir {
            Some(Direction::Ingress) => {
                // The client shut down its sending side.
                self.client_eof = true;
                if let Some(cur) = self.req_cur.take() {
                    if let Some(seq) = cur.seq {
                        out.push(ExchangeEvent::RequestAbort {
                            seq,
                            ts_ns,
                            wire_bytes: cur.wire,
                            reason: EndReason::ClientDisconnected,
                        });
                    }
                }
                self.req_dec.reset();
                self.req_buf.clear();
            }
            Some(Direction::Egress) => {
                // The server closed: responses delimited by close are complete, the rest not.
                self.finish_responses(ts_ns, EndReason::ConnectionClosed, out);
            }
            None => {}
        }
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

    fn finish_responses(&mut self, ts_ns: u64, reason: EndReason, out: &mut Vec<ExchangeEvent>) {
        if self.res_cur.is_some() && self.res_mode == Mode::Normal {
            let last = self.res_last_ns;
            if let Some(ResponseFrame::End) = self.res_dec.finish() {
                self.end_response(last, 0, out);
            }
        }
        self.res_dec.reset();
        self.res_buf.clear();
        if let Some(cur) = self.res_cur.take() {
            if let Some(seq) = cur.seq {
                out.push(ExchangeEvent::ResponseAbort {
                    seq,
                    ts_ns,
                    wire_bytes: cur.wire,
                    reason,
                });
            }
        }
        // Requests waiting for a response that never began: on a closed connection that is a
        // fact about the exchange, not about the capture; on eviction or shutdown it is not.
        let unanswered = match reason {
            EndReason::ConnectionClosed | EndReason::ClientDisconnected => EndReason::NoResponse,
            other => other,
        };
        while let Some(p) = self.pending.pop_front() {
            out.push(ExchangeEvent::ResponseAbort {
                seq: p.seq,
                ts_ns,
                wire_bytes: 0,
                reason: unanswered,
            });
        }
    }

    /// Gives up every exchange in flight (eviction, shutdown).
    pub fn abort_all(&mut self, ts_ns: u64, reason: EndReason, out: &mut Vec<ExchangeEvent>) {
        if let Some(cur) = self.req_cur.take() {
            if let Some(seq) = cur.seq {
                out.push(ExchangeEvent::RequestAbort {
                    seq,
                    ts_ns,
                    wire_bytes: cur.wire,
                    reason,
                });
            }
        }
        self.req_dec.reset();
        self.req_buf.clear();
        if let Some(cur) = self.res_cur.take() {
            if let Some(seq) = cur.seq {
                out.push(ExchangeEvent::ResponseAbort {
                    seq,
                    ts_ns,
                    wire_bytes: cur.wire,
                    reason,
                });
            }
        }
        while let Some(p) = self.pending.pop_front() {
            out.push(ExchangeEvent::ResponseAbort {
                seq: p.seq,
                ts_ns,
                wire_bytes: 0,
                reason,
            });
        }
        self.res_dec.reset();
        self.res_buf.clear();
    }
}

#[cfg(test)]
mod tests;
