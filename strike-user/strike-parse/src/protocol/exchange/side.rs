//! One direction of a connection, requests or responses: its buffered bytes, its decoder,
//! whether it is in sync, and the message in progress with its bytes on the wire.
//!
//! What both directions do alike lives here: decoding frame by frame, counting every byte
//! the decoder takes into the message's `wire_bytes`, the body/end/abort events, and
//! dropping bytes while out of sync. What differs (heads, pairing, resynchronising) is the
//! machine's, in `exchange.rs`.

use bytes::{Bytes, BytesMut};

use super::{EndReason, ExchangeEvent, ProtocolCounters};
use crate::protocol::http::{
    HttpError, RequestDecoder, RequestFrame, RequestHead, ResponseDecoder, ResponseFrame,
    ResponseHead,
};

/// Whether a side is in sync with the message boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Normal,
    /// Looking for the next message boundary; `reason` says why, for a lost exchange.
    Resync(EndReason),
}

/// The message in progress on a side.
#[derive(Debug, Clone, Copy)]
struct Current {
    /// `None` for a response to no known request: decoded, but without events.
    seq: Option<u64>,
    /// Its bytes on the wire so far.
    wire: u64,
}

/// One decoded piece of a message, either side's.
pub(super) enum Frame<H> {
    Head(H),
    Body(Bytes),
    End,
}

/// What differs between the two sides for the part they share: the decoder, and the
/// events named after the side.
pub(super) trait Decode {
    /// The head this side decodes.
    type Head;
    /// Decodes the next frame from `buf`, consuming its bytes; `Ok(None)` when more bytes
    /// are needed.
    fn decode_frame(&mut self, buf: &mut BytesMut) -> Result<Option<Frame<Self::Head>>, HttpError>;
    /// Forgets the message in progress.
    fn forget_message(&mut self);
    /// A piece of the body of message `seq`.
    fn body_event(seq: u64, ts_ns: u64, data: Bytes) -> ExchangeEvent;
    /// Message `seq` completed.
    fn end_event(seq: u64, ts_ns: u64, wire_bytes: u64) -> ExchangeEvent;
    /// Message `seq` will not complete.
    fn abort_event(seq: u64, ts_ns: u64, wire_bytes: u64, reason: EndReason) -> ExchangeEvent;
}

impl Decode for RequestDecoder {
    type Head = RequestHead;

    fn decode_frame(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Frame<RequestHead>>, HttpError> {
        Ok(self.decode(buf)?.map(|frame| match frame {
            RequestFrame::Head(head) => Frame::Head(head),
            RequestFrame::Body(data) => Frame::Body(data),
            RequestFrame::End => Frame::End,
        }))
    }

    fn forget_message(&mut self) {
        self.reset();
    }

    fn body_event(seq: u64, ts_ns: u64, data: Bytes) -> ExchangeEvent {
        ExchangeEvent::RequestBody { seq, ts_ns, data }
    }

    fn end_event(seq: u64, ts_ns: u64, wire_bytes: u64) -> ExchangeEvent {
        ExchangeEvent::RequestEnd {
            seq,
            ts_ns,
            wire_bytes,
        }
    }

    fn abort_event(seq: u64, ts_ns: u64, wire_bytes: u64, reason: EndReason) -> ExchangeEvent {
        ExchangeEvent::RequestAbort {
            seq,
            ts_ns,
            wire_bytes,
            reason,
        }
    }
}

impl Decode for ResponseDecoder {
    type Head = ResponseHead;

    fn decode_frame(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Frame<ResponseHead>>, HttpError> {
        Ok(self.decode(buf)?.map(|frame| match frame {
            ResponseFrame::Head(head) => Frame::Head(head),
            ResponseFrame::Body(data) => Frame::Body(data),
            ResponseFrame::End => Frame::End,
        }))
    }

    fn forget_message(&mut self) {
        self.reset();
    }

    fn body_event(seq: u64, ts_ns: u64, data: Bytes) -> ExchangeEvent {
        ExchangeEvent::ResponseBody { seq, ts_ns, data }
    }

    fn end_event(seq: u64, ts_ns: u64, wire_bytes: u64) -> ExchangeEvent {
        ExchangeEvent::ResponseEnd {
            seq,
            ts_ns,
            wire_bytes,
        }
    }

    fn abort_event(seq: u64, ts_ns: u64, wire_bytes: u64, reason: EndReason) -> ExchangeEvent {
        ExchangeEvent::ResponseAbort {
            seq,
            ts_ns,
            wire_bytes,
            reason,
        }
    }
}

/// What [`Side::step`] left to the machine.
pub(super) enum Step<H> {
    /// The decoder needs more bytes.
    NeedMore,
    /// A body piece or the end of the message, already turned into its event.
    Framed,
    /// A head, and the bytes it took on the wire.
    Head(H, u64),
    /// The bytes are not HTTP; the side is as it was before the step.
    Error(HttpError),
}

/// One direction of a connection.
#[derive(Debug)]
pub(super) struct Side<D> {
    pub(super) dec: D,
    /// Bytes received and not decoded yet.
    pub(super) buf: BytesMut,
    pub(super) mode: Mode,
    cur: Option<Current>,
    /// Bytes were taken from `buf` since the last [`Side::compact`].
    consumed: bool,
}

impl<D: Decode> Side<D> {
    pub(super) fn new(dec: D, mode: Mode) -> Self {
        Self {
            dec,
            buf: BytesMut::new(),
            mode,
            cur: None,
            consumed: false,
        }
    }

    /// After a segment: lets go of the bytes already decoded ([`crate::protocol::compact`]).
    pub(super) fn compact(&mut self) {
        crate::protocol::compact(&mut self.buf, self.consumed);
        self.consumed = false;
    }

    /// Bytes buffered and not decoded yet (capacity, not length: a head trickled in holds
    /// its allocation until it is decoded).
    pub(super) fn buffered_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// True while a message is in progress (its head decoded, its end not).
    pub(super) fn in_message(&self) -> bool {
        self.cur.is_some()
    }

    /// Decodes the next frame. Bytes the decoder takes count into the message in progress,
    /// including framing taken while waiting for more (a chunk-size line).
    pub(super) fn step(&mut self, ts_ns: u64, out: &mut Vec<ExchangeEvent>) -> Step<D::Head> {
        let before = self.buf.len();
        let frame = self.dec.decode_frame(&mut self.buf);
        let consumed = before.saturating_sub(self.buf.len()) as u64;
        self.consumed |= consumed > 0;
        match frame {
            Ok(None) => {
                self.add_wire(consumed);
                Step::NeedMore
            }
            Ok(Some(Frame::Head(head))) => Step::Head(head, consumed),
            Ok(Some(Frame::Body(data))) => {
                if let Some(cur) = self.cur.as_mut() {
                    cur.wire = cur.wire.saturating_add(consumed);
                    if let Some(seq) = cur.seq {
                        out.push(D::body_event(seq, ts_ns, data));
                    }
                }
                Step::Framed
            }
            Ok(Some(Frame::End)) => {
                self.end(ts_ns, consumed, out);
                Step::Framed
            }
            Err(err) => Step::Error(err),
        }
    }

    /// A message begins: its head (and what preceded it, for a response) took `wire` bytes.
    pub(super) fn begin(&mut self, seq: Option<u64>, wire: u64) {
        self.cur = Some(Current { seq, wire });
    }

    fn add_wire(&mut self, bytes: u64) {
        if let Some(cur) = self.cur.as_mut() {
            cur.wire = cur.wire.saturating_add(bytes);
        }
    }

    /// The message in progress completed with its last `consumed` bytes.
    pub(super) fn end(&mut self, ts_ns: u64, consumed: u64, out: &mut Vec<ExchangeEvent>) {
        if let Some(cur) = self.cur.take() {
            if let Some(seq) = cur.seq {
                out.push(D::end_event(seq, ts_ns, cur.wire.saturating_add(consumed)));
            }
        }
    }

    /// Gives up the message in progress; returns whether there was one.
    pub(super) fn abort(
        &mut self,
        ts_ns: u64,
        reason: EndReason,
        out: &mut Vec<ExchangeEvent>,
    ) -> bool {
        let Some(cur) = self.cur.take() else {
            return false;
        };
        if let Some(seq) = cur.seq {
            out.push(D::abort_event(seq, ts_ns, cur.wire, reason));
        }
        true
    }

    /// Forgets the decoder's message and the buffered bytes (without counting them).
    pub(super) fn clear(&mut self) {
        self.dec.forget_message();
        self.buf.clear();
    }

    /// Skips the first `n` buffered bytes, counted as skipped.
    pub(super) fn skip(&mut self, n: usize, counters: &mut ProtocolCounters) {
        let n = n.min(self.buf.len());
        counters.resync_skipped_bytes = counters.resync_skipped_bytes.saturating_add(n as u64);
        let _ = self.buf.split_to(n);
        self.consumed = true;
    }

    /// Skips every buffered byte.
    pub(super) fn skip_all(&mut self, counters: &mut ProtocolCounters) {
        counters.resync_skipped_bytes = counters
            .resync_skipped_bytes
            .saturating_add(self.buf.len() as u64);
        self.buf.clear();
    }

    /// The side lost track of the message boundaries: what it holds is skipped, and it
    /// looks for the next boundary.
    pub(super) fn lose_sync(&mut self, reason: EndReason, counters: &mut ProtocolCounters) {
        self.skip_all(counters);
        self.dec.forget_message();
        self.mode = Mode::Resync(reason);
    }
}
