//! The response side of the machine: each final response head is paired with the oldest
//! request waiting for one; interim (1xx) heads count into the final response; a 101 ends
//! parsing; after a loss the side resynchronises at a segment starting a status line.

use super::side::{Decode, Mode, Step};
use super::{Dead, EndReason, ExchangeEvent, ExchangeMachine, ProtocolCounters};
use crate::protocol::http::{sniff_status_line, HttpError, ResponseDecoder, ResponseFrame, Sniff};

impl ExchangeMachine {
    pub(super) fn feed_response(
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
        self.res.buf.extend_from_slice(bytes);
        if let Mode::Resync(reason) = self.res.mode {
            // Only a segment that starts a status line (or continues one held back) resyncs.
            match sniff_status_line(&self.res.buf) {
                Sniff::Yes => self.res.mode = Mode::Normal,
                Sniff::NeedMore => return,
                Sniff::No => {
                    self.res.skip_all(counters);
                    // Bytes of a response to a request that was not seen either.
                    if reason == EndReason::CaptureStart
                        && self.pending.front().is_some_and(|p| p.lost)
                    {
                        self.give_up_oldest(ts_ns, 0, reason, out);
                    }
                    return;
                }
            }
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
            if self.res.dec.is_idle() {
                let head_req = self.pending.front().is_some_and(|p| p.head_request);
                self.res.dec.set_head_request(head_req);
            }
            match self.res.step(ts_ns, out) {
                Step::NeedMore => return,
                Step::Framed => {}
                Step::Head(head, consumed) if head.is_interim() => {
                    self.res_interim_wire = self.res_interim_wire.saturating_add(consumed);
                    if let Some(front) = self.pending.front() {
                        out.push(ExchangeEvent::ResponseInterim {
                            seq: front.seq,
                            ts_ns,
                            status: head.status,
                        });
                    }
                }
                Step::Head(head, consumed) => {
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
                    self.res.begin(seq, wire);
                    if upgraded {
                        // Whatever follows is not HTTP/1.1; stop parsing this connection.
                        if let Ok(Some(ResponseFrame::End)) = self.res.dec.decode(&mut self.res.buf)
                        {
                            self.res.end(ts_ns, 0, out);
                        }
                        counters.upgraded_connections =
                            counters.upgraded_connections.saturating_add(1);
                        // What followed the 101 in the same segment is the new protocol's.
                        counters.ignored_bytes = counters
                            .ignored_bytes
                            .saturating_add(self.res.buf.len() as u64);
                        self.res.buf.clear();
                        self.dead = Some(Dead::Upgraded);
                        self.abort_all(ts_ns, EndReason::ConnectionClosed, out);
                        return;
                    }
                }
                Step::Error(err) => {
                    tracing::debug!(error = %err, "response decode error");
                    counters.response_parse_errors =
                        counters.response_parse_errors.saturating_add(1);
                    if matches!(err, HttpError::HeadTooLarge { .. }) {
                        counters.heads_too_large = counters.heads_too_large.saturating_add(1);
                    }
                    self.res.abort(ts_ns, EndReason::ParseError, out);
                    self.res.lose_sync(EndReason::ParseError, counters);
                    self.res_interim_wire = 0;
                    return;
                }
            }
        }
    }

    /// Response bytes were lost.
    pub(super) fn response_gap(
        &mut self,
        ts_ns: u64,
        out: &mut Vec<ExchangeEvent>,
        counters: &mut ProtocolCounters,
    ) {
        // Before the first status line of a connection joined mid-request, the lost bytes
        // were (part of) the response to that request, as at a boundary.
        let joined = self.res.mode == Mode::Resync(EndReason::CaptureStart)
            && self.pending.front().is_some_and(|p| p.lost);
        if !self.res.abort(ts_ns, EndReason::Gap, out) && (self.res.mode == Mode::Normal || joined)
        {
            // The lost bytes began the response to the oldest waiting request.
            self.give_up_oldest(ts_ns, self.res_interim_wire, EndReason::Gap, out);
        }
        self.res.lose_sync(EndReason::Gap, counters);
        self.res_interim_wire = 0;
    }

    /// The response side ended (`reason`): a response delimited by close is complete, the
    /// one in progress is not, and the requests still waiting get none.
    pub(super) fn finish_responses(
        &mut self,
        ts_ns: u64,
        reason: EndReason,
        out: &mut Vec<ExchangeEvent>,
    ) {
        if self.res.in_message() && self.res.mode == Mode::Normal {
            if let Some(ResponseFrame::End) = self.res.dec.finish() {
                self.res.end(self.res_last_ns, 0, out);
            }
        }
        self.res.clear();
        self.res.abort(ts_ns, reason, out);
        // Requests waiting for a response that never began: on a closed connection that is a
        // fact about the exchange, not about the capture; on eviction or shutdown it is not,
        // nor when response bytes were lost since (theirs may have been among them).
        let unanswered = match (reason, self.res.mode) {
            (_, Mode::Resync(EndReason::Gap)) => EndReason::Gap,
            (EndReason::ConnectionClosed | EndReason::ClientDisconnected, _) => {
                EndReason::NoResponse
            }
            (other, _) => other,
        };
        self.abort_pending(ts_ns, unanswered, out);
    }

    /// Gives up the oldest request waiting for a response, if any.
    pub(super) fn give_up_oldest(
        &mut self,
        ts_ns: u64,
        wire_bytes: u64,
        reason: EndReason,
        out: &mut Vec<ExchangeEvent>,
    ) {
        if let Some(p) = self.pending.pop_front() {
            out.push(ResponseDecoder::abort_event(
                p.seq, ts_ns, wire_bytes, reason,
            ));
        }
    }

    /// Gives up every request waiting for a response.
    pub(super) fn abort_pending(
        &mut self,
        ts_ns: u64,
        reason: EndReason,
        out: &mut Vec<ExchangeEvent>,
    ) {
        for p in self.pending.drain(..) {
            out.push(ResponseDecoder::abort_event(p.seq, ts_ns, 0, reason));
        }
    }
}
