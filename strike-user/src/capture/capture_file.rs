//! Capture files ("recordings"): `strike trace --record FILE` writes every capture event in
//! the kernel's own ring layout, so a replay (`strike replay FILE`, the golden tests) runs the
//! exact same bytes through reassembly and parsing as the live session did.
//!
//! Layout: the magic `STRIKECAP1\n`, a little-endian u32 length and a JSON [`CaptureFileHeader`],
//! then frames of a little-endian u32 length followed by one event.

use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::event::{CaptureEvent, DecodeError};

const MAGIC: &[u8; 11] = b"STRIKECAP1\n";
/// The header version written: 2 added process facts ([`super::event::ProcessFact`]) to
/// the frames. Readers take every version up to it.
pub const CAPTURE_FILE_VERSION: u32 = 2;
/// Largest frame a reader accepts: a data event's header plus one chunk, with room to spare.
const MAX_FRAME: usize = 1 << 20;

/// What a replay needs to know about the session that recorded.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CaptureFileHeader {
    pub version: u32,
    /// Wall-clock ns minus monotonic ns at the start of the session.
    pub clock_offset_ns: i64,
    pub max_capture_bytes: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureFileError {
    #[error("not a Strike capture recording (bad magic)")]
    BadMagic,
    #[error("recording header is not valid")]
    BadHeader(#[source] serde_json::Error),
    #[error("recording version {0} is newer than this strike reads ({CAPTURE_FILE_VERSION})")]
    Version(u32),
    #[error("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit")]
    FrameTooLarge { len: usize },
    #[error("frame {index} does not decode")]
    BadFrame {
        index: u64,
        #[source]
        source: DecodeError,
    },
    #[error("reading or writing the recording")]
    Io(#[from] io::Error),
}

/// Writes a recording.
pub struct CaptureFileWriter<W: Write> {
    out: W,
}

impl<W: Write> CaptureFileWriter<W> {
    pub fn new(mut out: W, header: &CaptureFileHeader) -> Result<Self, CaptureFileError> {
        let json = serde_json::to_vec(header).map_err(CaptureFileError::BadHeader)?;
        out.write_all(MAGIC)?;
        write_frame(&mut out, &json)?;
        Ok(CaptureFileWriter { out })
    }

    pub fn write(&mut self, event: &CaptureEvent) -> Result<(), CaptureFileError> {
        write_frame(&mut self.out, &event.encode())
    }

    pub fn flush(&mut self) -> Result<(), CaptureFileError> {
        Ok(self.out.flush()?)
    }
}

fn write_frame(out: &mut impl Write, bytes: &[u8]) -> Result<(), CaptureFileError> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| CaptureFileError::FrameTooLarge { len: bytes.len() })?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)?;
    Ok(())
}

/// Reads a recording, event by event.
pub struct CaptureFileReader<R: BufRead> {
    input: R,
    header: CaptureFileHeader,
    index: u64,
}

impl<R: BufRead> CaptureFileReader<R> {
    pub fn new(mut input: R) -> Result<Self, CaptureFileError> {
        let mut magic = [0u8; MAGIC.len()];
        input
            .read_exact(&mut magic)
            .map_err(|_| CaptureFileError::BadMagic)?;
        if &magic != MAGIC {
            return Err(CaptureFileError::BadMagic);
        }
        let json = read_frame(&mut input)?.ok_or(CaptureFileError::BadMagic)?;
        let header: CaptureFileHeader =
            serde_json::from_slice(&json).map_err(CaptureFileError::BadHeader)?;
        if header.version > CAPTURE_FILE_VERSION {
            return Err(CaptureFileError::Version(header.version));
        }
        Ok(CaptureFileReader {
            input,
            header,
            index: 0,
        })
    }

    pub fn header(&self) -> &CaptureFileHeader {
        &self.header
    }
}

impl<R: BufRead> Iterator for CaptureFileReader<R> {
    type Item = Result<CaptureEvent, CaptureFileError>;

    fn next(&mut self) -> Option<Self::Item> {
        let frame = match read_frame(&mut self.input) {
            Ok(Some(f)) => f,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        let index = self.index;
        self.index += 1;
        Some(
            CaptureEvent::decode(&frame)
                .map_err(|source| CaptureFileError::BadFrame { index, source }),
        )
    }
}

fn read_frame(input: &mut impl BufRead) -> Result<Option<Vec<u8>>, CaptureFileError> {
    if input.fill_buf()?.is_empty() {
        return Ok(None);
    }
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(CaptureFileError::FrameTooLarge { len });
    }
    let mut buf = vec![0; len];
    input.read_exact(&mut buf)?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let header = CaptureFileHeader {
            version: 1,
            clock_offset_ns: -5,
            max_capture_bytes: 4096,
        };
        let events = vec![
            CaptureEvent::Fork {
                parent: 1,
                child: 2,
                ts_ns: 3,
            },
            CaptureEvent::Exit { pid: 2, ts_ns: 4 },
        ];
        let mut buf = Vec::new();
        let mut w = CaptureFileWriter::new(&mut buf, &header).unwrap();
        for e in &events {
            w.write(e).unwrap();
        }
        w.flush().unwrap();
        let r = CaptureFileReader::new(&buf[..]).unwrap();
        assert_eq!(r.header(), &header);
        let back: Vec<_> = r.map(Result::unwrap).collect();
        assert_eq!(back, events);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            CaptureFileReader::new(&b"nope"[..]),
            Err(CaptureFileError::BadMagic)
        ));
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            CaptureFileReader::new(&bad[..]),
            Err(CaptureFileError::FrameTooLarge { .. })
        ));
    }
}
