//! The request side of the machine: requests are numbered as their heads are decoded and
//! queued for their responses; after a loss the side resynchronises at the next bytes that
//! look like a request line.

use super::side::{Decode, Mode, Step};
use super::{Dead, EndReason, ExchangeEvent, ExchangeMachine, Pending, ProtocolCounters};
use crate::protocol::http::{sniff_request_line, HttpError, RequestDecoder, RequestHead, Sniff};

/// Where the next plausible request line starts in `buf` (at `from` or just after a LF), and
/// whether it is whole; `buf.len()` when none can start there.
fn find_request_line(buf: &[u8], from: usize) -> (usize, bool) {
    let mut pos = from.min(buf.len());
    while let Some(cand) = buf.get(pos..).filter(|c| !c.is_empty()) {
        match sniff_request_line(cand) {
            Sniff::Yes => return (pos, true),
            Sniff::NeedMore => return (pos, false),
            Sniff::No => {}
        }
        match memchr::memchr(b'\n', cand) {
            Some(i) => pos = pos.saturating_add(i + 1),
            None => break,
        }
    }
    (buf.len(), false)
}

impl ExchangeMachine {
    pub(super) fn feed_request(
        &mut self,
        ts_ns: u64,
        bytes: &[u8],
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) {
        self.req.buf.extend_from_slice(bytes);
        if let Mode::Resync(reason) = self.req.mode {
            if !self.resync_request(ts_ns, reason, 0, out, counters) {
                return;
            }
        }
        self.decode_requests(ts_ns, out, counters);
    }

    fn decode_requests(
        &mut self,
        ts_ns: u64,
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) {
        loop {
            if self.req.dec.is_idle() && !self.req.buf.is_empty() && self.req_start_ns.is_none() {
                self.req_start_ns = Some(ts_ns);
            }
            match self.req.step(ts_ns, out) {
                Step::NeedMore => return,
                Step::Framed => {}
                Step::Head(head, consumed) => {
                    let seq = self.announce_request(ts_ns, head, out, counters);
                    self.req.begin(Some(seq), consumed);
                }
                Step::Error(err) => {
                    self.request_error(ts_ns, &err, out, counters);
                    if self.dead.is_some()
                        || !self.resync_request(ts_ns, EndReason::ParseError, 1, out, counters)
                    {
                        return;
                    }
                }
            }
        }
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
        let (skip, synced) = find_request_line(&self.req.buf, from);
        if skip > 0 {
            self.req.skip(skip, counters);
            if reason == EndReason::CaptureStart {
                // The first captured bytes were in the middle of a request: it exists, and its
                // response will come; keep its place in the queue.
                self.lost_request(ts_ns, reason, out, counters);
                self.req.mode = Mode::Resync(EndReason::Gap);
            }
        }
        if !synced && self.req.buf.len() > self.cfg.max_head_bytes {
            self.req.skip_all(counters);
        }
        if synced {
            self.req.mode = Mode::Normal;
        }
        synced
    }

    /// A request whose head was read (or, for a head that did not parse, its request line):
    /// numbered, queued for its response and announced. Returns its number.
    fn announce_request(
        &mut self,
        ts_ns: u64,
        head: RequestHead,
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        self.requests_seen = self.requests_seen.saturating_add(1);
        let head_request = head.method.eq_ignore_ascii_case("HEAD");
        self.push_pending(seq, head_request, false, ts_ns, out, counters);
        let start_ns = self.req_start_ns.take().unwrap_or(ts_ns);
        out.push(ExchangeEvent::RequestHead {
            seq,
            start_ns,
            ts_ns,
            head,
        });
        seq
    }

    /// A request that certainly happened but was not seen.
    fn lost_request(
        &mut self,
        ts_ns: u64,
        reason: EndReason,
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        self.push_pending(seq, false, true, ts_ns, out, counters);
        out.push(RequestDecoder::abort_event(seq, ts_ns, 0, reason));
    }

    /// Queues a request for its response; beyond `max_pending` the oldest is given up,
    /// counted (whether the new one was seen or lost).
    fn push_pending(
        &mut self,
        seq: u64,
        head_request: bool,
        lost: bool,
        ts_ns: u64,
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) {
        if self.pending.len() >= self.cfg.max_pending {
            counters.pipeline_overflows = counters.pipeline_overflows.saturating_add(1);
            self.give_up_oldest(ts_ns, 0, EndReason::PipelineOverflow, out);
        }
        self.pending.push_back(Pending {
            seq,
            head_request,
            lost,
        });
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
        let request_line = sniff_request_line(&self.req.buf) == Sniff::Yes;
        if self.requests_seen == 0 && self.req.mode == Mode::Normal && !request_line {
            // The very first bytes of a connection seen from its start are not HTTP.
            counters.not_http_connections = counters.not_http_connections.saturating_add(1);
            counters.ignored_bytes = counters
                .ignored_bytes
                .saturating_add((self.req.buf.len() + self.res.buf.len()) as u64);
            self.req.buf.clear();
            self.res.buf.clear();
            self.dead = Some(Dead::NotHttp);
            return;
        }
        self.req.abort(ts_ns, EndReason::ParseError, out);
        if let Some(head) = RequestHead::from_request_line(&self.req.buf).filter(|_| request_line) {
            // A request whose head the server may well accept (a lenient one, or more header
            // fields than Strike parses): a record with what its request line says, paired
            // with the response that comes, and marked.
            let seq = self.announce_request(ts_ns, head, out, counters);
            out.push(RequestDecoder::abort_event(
                seq,
                ts_ns,
                0,
                EndReason::ParseError,
            ));
        }
        // The bytes stay: the resync looks for a request line after the one that failed.
        self.req.dec.reset();
        self.req_start_ns = None;
        self.req.mode = Mode::Resync(EndReason::ParseError);
    }

    /// Request bytes were lost.
    pub(super) fn request_gap(
        &mut self,
        ts_ns: u64,
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) {
        // At a request boundary, or first thing on a connection joined mid-stream: the lost
        // bytes began (or finished) a request we will never see, and its response will come.
        let boundary = matches!(
            self.req.mode,
            Mode::Normal | Mode::Resync(EndReason::CaptureStart)
        );
        if !self.req.abort(ts_ns, EndReason::Gap, out) && boundary {
            self.lost_request(ts_ns, EndReason::Gap, out, counters);
        }
        self.req.lose_sync(EndReason::Gap, counters);
        self.req_start_ns = None;
    }
}
