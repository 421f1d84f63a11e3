//! Newline-delimited JSON framing (as Ollama streams `application/x-ndjson`), without I/O.
//!
//! Each frame is one line without its `\n` (a trailing `\r` is removed too); blank lines are
//! skipped. The JSON itself is not parsed here. Lines over the limit are dropped whole and
//! reported once ([`NdjsonError::LineTooLong`]).

use bytes::{Buf, Bytes, BytesMut};

/// Default bound on one line.
pub const DEFAULT_MAX_LINE: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NdjsonError {
    #[error("NDJSON line longer than {limit} bytes (dropped)")]
    LineTooLong { limit: usize },
}

/// Incremental NDJSON framer.
#[derive(Debug, Clone)]
pub struct NdjsonDecoder {
    max_line: usize,
    discarding: bool,
    /// Bytes at the start of the caller's buffer already searched for a `\n` (there is
    /// none in them): a long line arriving in many pieces is searched once.
    scanned: usize,
}

impl Default for NdjsonDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_LINE)
    }
}

impl NdjsonDecoder {
    pub fn new(max_line: usize) -> Self {
        Self {
            max_line,
            discarding: false,
            scanned: 0,
        }
    }

    /// Decodes the next non-blank line from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, NdjsonError> {
        loop {
            let from = self.scanned.min(buf.len());
            let Some(lf) = memchr::memchr(b'\n', &buf[from..]).map(|i| from + i) else {
                self.scanned = 0;
                if self.discarding {
                    buf.clear();
                } else if buf.len() > self.max_line {
                    buf.clear();
                    self.discarding = true;
                    return Err(NdjsonError::LineTooLong {
                        limit: self.max_line,
                    });
                } else {
                    self.scanned = buf.len();
                }
                return Ok(None);
            };
            self.scanned = 0;
            let mut line = buf.split_to(lf).freeze();
            buf.advance(1);
            if self.discarding {
                self.discarding = false;
                continue;
            }
            if line.len() > self.max_line {
                return Err(NdjsonError::LineTooLong {
                    limit: self.max_line,
                });
            }
            if line.last() == Some(&b'\r') {
                line.truncate(line.len().saturating_sub(1));
            }
            if line.trim_ascii().is_empty() {
                continue;
            }
            return Ok(Some(line));
        }
    }

    /// End of the stream: the last line, if it had no `\n`.
    pub fn finish(&mut self, buf: &mut BytesMut) -> Option<Bytes> {
        let discarding = std::mem::replace(&mut self.discarding, false);
        self.scanned = 0;
        let rest = buf.split().freeze();
        (!discarding && !rest.trim_ascii().is_empty() && rest.len() <= self.max_line)
            .then_some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(pieces: &[&[u8]]) -> Vec<Result<Bytes, NdjsonError>> {
        let mut dec = NdjsonDecoder::new(32);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for p in pieces {
            buf.extend_from_slice(p);
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(l)) => out.push(Ok(l)),
                    Ok(None) => break,
                    Err(e) => out.push(Err(e)),
                }
            }
        }
        if let Some(l) = dec.finish(&mut buf) {
            out.push(Ok(l));
        }
        out
    }

    const STREAM: &[u8] = b"{\"done\":false}\n\r\n\n{\"a\":\"x\"}\r\n{\"done\":true}";

    #[test]
    fn frames_lines() {
        assert_eq!(
            lines(&[STREAM]),
            vec![
                Ok(Bytes::from_static(b"{\"done\":false}")),
                Ok(Bytes::from_static(b"{\"a\":\"x\"}")),
                Ok(Bytes::from_static(b"{\"done\":true}")),
            ]
        );
    }

    #[test]
    fn every_split_is_identical() {
        let whole = lines(&[STREAM]);
        for i in 0..=STREAM.len() {
            let (a, b) = STREAM.split_at(i);
            assert_eq!(lines(&[a, b]), whole, "split at {i}");
        }
    }

    #[test]
    fn long_line_dropped() {
        let mut v = vec![b'x'; 40];
        v.extend_from_slice(b"\n{}\n");
        assert_eq!(
            lines(&[&v[..20], &v[20..]]),
            vec![
                Err(NdjsonError::LineTooLong { limit: 32 }),
                Ok(Bytes::from_static(b"{}"))
            ]
        );
    }
}
