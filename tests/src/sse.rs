//! Splits a `text/event-stream` body, arriving in arbitrary pieces, into `data:` payloads.

/// One server-sent line the load generator cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseLine {
    /// The payload of a `data:` line (without the prefix and the single optional space).
    Data(String),
    /// llama.cpp reports mid-stream failures as `error: {json}` lines.
    Error(String),
}

/// Incremental line splitter: feed it body chunks as they come, get complete lines back.
#[derive(Debug, Default)]
pub struct SseSplitter {
    buf: Vec<u8>,
}

impl SseSplitter {
    /// Adds `bytes` and returns every line completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseLine> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if let Some(rest) = line.strip_prefix("data:") {
                out.push(SseLine::Data(
                    rest.strip_prefix(' ').unwrap_or(rest).to_owned(),
                ));
            } else if let Some(rest) = line.strip_prefix("error:") {
                out.push(SseLine::Error(rest.trim().to_owned()));
            }
        }
        out
    }

    /// Bytes received after the last newline (a complete stream leaves none).
    pub fn leftover(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_arbitrary_chunk_boundaries() {
        let body = b"data: {\"a\":1}\n\ndata: {\"b\":2}\r\n\r\n: comment\nerror: {\"x\":1}\ndata: [DONE]\n\n";
        for cut in 1..body.len() {
            let mut s = SseSplitter::default();
            let mut lines = s.push(&body[..cut]);
            lines.extend(s.push(&body[cut..]));
            assert_eq!(
                lines,
                vec![
                    SseLine::Data("{\"a\":1}".into()),
                    SseLine::Data("{\"b\":2}".into()),
                    SseLine::Error("{\"x\":1}".into()),
                    SseLine::Data("[DONE]".into()),
                ],
                "cut at {cut}"
            );
            assert_eq!(s.leftover(), 0);
        }
    }

    #[test]
    fn keeps_an_incomplete_line() {
        let mut s = SseSplitter::default();
        assert!(s.push(b"data: {\"a\"").is_empty());
        assert_eq!(s.leftover(), 10);
        assert_eq!(s.push(b":1}\n"), vec![SseLine::Data("{\"a\":1}".into())]);
    }
}
