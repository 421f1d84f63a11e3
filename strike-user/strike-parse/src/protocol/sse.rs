//! Server-Sent Events decoder (WHATWG HTML, "Parsing an event stream"), without I/O.
//!
//! Lines end with CRLF, LF or CR; `data:` with or without the space after the colon;
//! several `data:` lines join with `\n`; `event:` and `id:` are kept; `:` comment lines
//! and unknown fields are ignored; an empty line dispatches the event (none when it has
//! no data). Lines longer than the limit are dropped whole and reported once
//! ([`SseError::LineTooLong`]); so are events whose data grows over the limit.

use bytes::{Buf, BytesMut};

/// Default bound on one SSE line.
pub const DEFAULT_MAX_LINE: usize = 1024 * 1024;
/// Default bound on the data of one event.
pub const DEFAULT_MAX_EVENT: usize = 4 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("SSE line longer than {limit} bytes (dropped)")]
    LineTooLong { limit: usize },
    #[error("SSE event data larger than {limit} bytes (dropped)")]
    EventTooLarge { limit: usize },
}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if any (the default type is "message").
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` seen on the stream so far.
    pub id: Option<String>,
}

/// Incremental SSE decoder.
#[derive(Debug, Clone)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "independent flags of the line/event state"
)]
pub struct SseDecoder {
    max_line: usize,
    max_event: usize,
    data: Vec<u8>,
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
    /// The last line ended with CR at the end of the input: a following LF belongs to it.
    skip_lf: bool,
    /// Dropping the rest of an overlong line.
    discarding_line: bool,
    /// Dropping the rest of an oversized event.
    discarding_event: bool,
    at_start: bool,
    /// Bytes at the start of the caller's buffer already searched for a line end (there
    /// is none in them): a long line arriving in many pieces is searched once, not once
    /// per piece.
    scanned: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE, DEFAULT_MAX_EVENT)
    }
}

impl SseDecoder {
    pub fn new(max_line: usize, max_event: usize) -> Self {
        Self {
            max_line,
            max_event,
            data: Vec::new(),
            has_data: false,
            event: None,
            last_id: None,
            skip_lf: false,
            discarding_line: false,
            discarding_event: false,
            at_start: true,
            scanned: 0,
        }
    }

    /// Decodes the next complete event from `buf`, consuming the bytes it used.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<SseEvent>, SseError> {
        loop {
            if buf.is_empty() {
                return Ok(None);
            }
            if self.skip_lf {
                self.skip_lf = false;
                if buf.first() == Some(&b'\n') {
                    buf.advance(1);
                    continue;
                }
            }
            if self.at_start {
                if buf.len() < 3 && b"\xEF\xBB\xBF".starts_with(buf) {
                    return Ok(None);
                }
                self.at_start = false;
                if buf.starts_with(b"\xEF\xBB\xBF") {
                    buf.advance(3);
                }
            }
            let from = self.scanned.min(buf.len());
            let Some(end) = memchr::memchr2(b'\n', b'\r', &buf[from..]).map(|i| from + i) else {
                self.scanned = 0;
                if self.discarding_line {
                    buf.clear();
                    return Ok(None);
                }
                if buf.len() > self.max_line {
                    buf.clear();
                    self.discarding_line = true;
                    return Err(SseError::LineTooLong {
                        limit: self.max_line,
                    });
                }
                self.scanned = buf.len();
                return Ok(None);
            };
            self.scanned = 0;
            let line = buf.split_to(end).freeze();
            match buf.first() {
                Some(b'\r') => {
                    if buf.get(1) == Some(&b'\n') {
                        buf.advance(2);
                    } else {
                        buf.advance(1);
                        self.skip_lf = buf.is_empty();
                    }
                }
                _ => buf.advance(1),
            }
            if self.discarding_line {
                self.discarding_line = false;
                continue;
            }
            if line.len() > self.max_line {
                return Err(SseError::LineTooLong {
                    limit: self.max_line,
                });
            }
            if let Some(ev) = self.line(&line)? {
                return Ok(Some(ev));
            }
        }
    }

    /// End of the stream: per the standard an event not ended by an empty line is
    /// discarded; this returns it anyway (servers that close right after the last `data:`
    /// line still meant it).
    pub fn finish(&mut self) -> Option<SseEvent> {
        let ev = self.dispatch();
        *self = Self::new(self.max_line, self.max_event);
        ev
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        let discarding = std::mem::replace(&mut self.discarding_event, false);
        if !self.has_data || discarding {
            self.data.clear();
            self.has_data = false;
            return None;
        }
        self.has_data = false;
        if self.data.last() == Some(&b'\n') {
            self.data.pop();
        }
        let data = String::from_utf8_lossy(&self.data).into_owned();
        self.data.clear();
        Some(SseEvent {
            event,
            data,
            id: self.last_id.clone(),
        })
    }

    fn line(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line.first() == Some(&b':') {
            return Ok(None);
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = line.get(i + 1..).unwrap_or_default();
                (
                    line.get(..i).unwrap_or_default(),
                    v.strip_prefix(b" ").unwrap_or(v),
                )
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.discarding_event {
                    return Ok(None);
                }
                if self.data.len().saturating_add(value.len()) >= self.max_event {
                    self.data.clear();
                    self.has_data = false;
                    self.discarding_event = true;
                    return Err(SseError::EventTooLarge {
                        limit: self.max_event,
                    });
                }
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            b"id" if !value.contains(&0) => {
                self.last_id = Some(String::from_utf8_lossy(value).into_owned());
            }
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(pieces: &[&[u8]]) -> Vec<Result<SseEvent, SseError>> {
        let mut dec = SseDecoder::new(64, 128);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for p in pieces {
            buf.extend_from_slice(p);
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(ev)) => out.push(Ok(ev)),
                    Ok(None) => break,
                    Err(e) => out.push(Err(e)),
                }
            }
        }
        out
    }

    #[expect(
        clippy::unnecessary_wraps,
        reason = "compared with decoder results, which are Results"
    )]
    fn ev(event: Option<&str>, data: &str, id: Option<&str>) -> Result<SseEvent, SseError> {
        Ok(SseEvent {
            event: event.map(str::to_owned),
            data: data.to_owned(),
            id: id.map(str::to_owned),
        })
    }

    const STREAM: &[u8] = b"\xEF\xBB\xBF: keep-alive\r\n\r\ndata: {\"a\":1}\n\ndata:{\"b\":2}\r\rdata: one\r\ndata:  two\nevent: error\nid: 7\nretry: 10\nunknown: x\nnocolon\n\ndata: [DONE]\r\n\r\n";

    #[test]
    fn parses_fields_and_line_endings() {
        assert_eq!(
            events(&[STREAM]),
            vec![
                ev(None, "{\"a\":1}", None),
                ev(None, "{\"b\":2}", None),
                ev(Some("error"), "one\n two", Some("7")),
                ev(None, "[DONE]", Some("7")),
            ]
        );
    }

    #[test]
    fn every_split_is_identical() {
        let whole = events(&[STREAM]);
        for i in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(i);
            assert_eq!(events(&[a, b]), whole, "split at {i}");
        }
        // One byte at a time.
        let bytes: Vec<&[u8]> = STREAM.chunks(1).collect();
        assert_eq!(events(&bytes), whole);
    }

    #[test]
    fn cr_at_end_of_read_then_lf() {
        assert_eq!(
            events(&[b"data: x\r", b"\n\r", b"\ndata: y\n\n"]),
            vec![ev(None, "x", None), ev(None, "y", None)]
        );
    }

    #[test]
    fn empty_event_is_not_dispatched() {
        assert_eq!(
            events(&[b"event: x\n\n\n\ndata\n\n"]),
            vec![ev(None, "", None)]
        );
    }

    #[test]
    fn long_lines_and_events_are_dropped() {
        let mut long = b"data: ".to_vec();
        long.extend_from_slice(&[b'x'; 100]);
        long.extend_from_slice(b"\n\ndata: ok\n\n");
        let out = events(&[&long]);
        assert_eq!(
            out,
            vec![
                Err(SseError::LineTooLong { limit: 64 }),
                ev(None, "ok", None)
            ]
        );
        let mut big = Vec::new();
        for _ in 0..5 {
            big.extend_from_slice(b"data: 0123456789012345678901234567890123456789\n");
        }
        big.extend_from_slice(b"\ndata: ok\n\n");
        assert_eq!(
            events(&[&big]),
            vec![
                Err(SseError::EventTooLarge { limit: 128 }),
                ev(None, "ok", None)
            ]
        );
    }

    #[test]
    fn finish_returns_unterminated_event() {
        let mut dec = SseDecoder::default();
        let mut buf = BytesMut::from(&b"data: last\n"[..]);
        assert_eq!(dec.decode(&mut buf), Ok(None));
        assert_eq!(dec.finish(), Some(ev(None, "last", None).unwrap()));
        assert_eq!(dec.finish(), None);
    }
}
