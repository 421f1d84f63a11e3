//! Capture files ("recordings"): `strike trace --record FILE` writes every capture event in
//! the kernel's own ring layout, so a replay (`strike replay FILE`, the golden tests) runs the
//! exact same bytes through reassembly and parsing as the live session did.
//!
//! Layout: the magic `STRIKECAP1\n`, a little-endian u32 length and a JSON [`CaptureFileHeader`],
//! then frames of a little-endian u32 length followed by one event.

use std::{
    io::{self, BufRead, Write},
    sync::mpsc::{sync_channel, SyncSender, TrySendError},
    thread::JoinHandle,
};

use serde::{Deserialize, Serialize};

use crate::event::{CaptureEvent, DecodeError};

const MAGIC: &[u8; 11] = b"STRIKECAP1\n";
/// The header version written: 2 added process facts ([`super::event::ProcessFact`]) to
/// the frames, 3 the `execve` and `close_range` events. Readers take every version up to it.
pub const CAPTURE_FILE_VERSION: u32 = 3;
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

/// Bytes of whole frames handed to the writer thread at once.
const CHUNK: usize = 256 * 1024;
/// Chunks waiting for the disk at most (16 MiB).
const CHUNKS_QUEUED: usize = 64;

/// A recording written by a thread of its own, so the processor never waits on the disk.
/// Events are encoded into chunks of whole frames and handed over a bounded queue; a full
/// queue, a failed disk or the size cap drops whole chunks, never part of a frame, and
/// says how many bytes it dropped: a replay of the file sees the missing events as gaps.
pub struct BackgroundRecorder {
    chunk: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// Bytes handed to the writer (the header included).
    accepted: u64,
    max_bytes: u64,
}

/// What became of the bytes of a chunk that was handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    Written,
    /// Not recorded: the writer thread is behind.
    QueueFull(u64),
    /// Not recorded: the recording reached its size cap.
    Capped(u64),
    /// Not recorded: the writer thread failed (its error comes from [`BackgroundRecorder::finish`]).
    WriterFailed(u64),
}

impl BackgroundRecorder {
    /// Writes the header at once (an unwritable file fails here), then starts the thread.
    pub fn start(
        file: std::fs::File,
        header: &CaptureFileHeader,
        max_bytes: u64,
    ) -> Result<Self, CaptureFileError> {
        let mut out = io::BufWriter::new(file);
        let mut first = CaptureFileWriter::new(&mut out, header)?;
        first.flush()?;
        let accepted = out.get_ref().metadata().map_or(0, |m| m.len());
        let (tx, rx) = sync_channel::<Vec<u8>>(CHUNKS_QUEUED);
        let thread = std::thread::Builder::new()
            .name("strike-recorder".into())
            .spawn(move || {
                for chunk in rx {
                    out.write_all(&chunk)?;
                }
                out.flush()
            })?;
        Ok(BackgroundRecorder {
            chunk: Vec::with_capacity(CHUNK),
            tx: Some(tx),
            thread: Some(thread),
            accepted,
            max_bytes,
        })
    }

    /// Adds one event; hands the chunk over once it is full.
    pub fn record(&mut self, event: &CaptureEvent) -> Option<Handover> {
        if write_frame(&mut self.chunk, &event.encode()).is_err() {
            return None;
        }
        (self.chunk.len() >= CHUNK).then(|| self.hand_over())
    }

    /// Hands over what the chunk holds.
    pub fn flush(&mut self) -> Option<Handover> {
        (!self.chunk.is_empty()).then(|| self.hand_over())
    }

    fn hand_over(&mut self) -> Handover {
        let len = self.chunk.len() as u64;
        if self.accepted.saturating_add(len) > self.max_bytes {
            self.chunk.clear();
            return Handover::Capped(len);
        }
        let Some(tx) = &self.tx else {
            self.chunk.clear();
            return Handover::WriterFailed(len);
        };
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK));
        match tx.try_send(chunk) {
            Ok(()) => {
                self.accepted += len;
                Handover::Written
            }
            Err(TrySendError::Full(_)) => Handover::QueueFull(len),
            Err(TrySendError::Disconnected(_)) => {
                self.tx = None;
                Handover::WriterFailed(len)
            }
        }
    }

    /// Hands over the rest and waits for the thread to write it.
    pub fn finish(&mut self) -> (Option<Handover>, io::Result<()>) {
        let last = self.flush();
        self.tx = None;
        let result = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the recording thread panicked")),
            None => Ok(()),
        };
        (last, result)
    }
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
    fn background_recorder_writes_whole_frames_and_stops_at_its_cap() {
        let dir = std::env::temp_dir().join(format!("strike-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cap.rec");
        let _ = std::fs::remove_file(&path);
        let header = CaptureFileHeader {
            version: CAPTURE_FILE_VERSION,
            clock_offset_ns: 0,
            max_capture_bytes: 4096,
        };
        let file = std::fs::File::create(&path).unwrap();
        // Room for the header and two chunks: the third is dropped, whole.
        let mut rec = BackgroundRecorder::start(file, &header, 2 * CHUNK as u64 + 4096).unwrap();
        let event = |i: u32| CaptureEvent::Exit {
            pid: i,
            ts_ns: u64::from(i),
        };
        let mut outcomes = Vec::new();
        let mut i = 0;
        while outcomes.len() < 3 {
            outcomes.extend(rec.record(&event(i)));
            i += 1;
        }
        assert_eq!(outcomes[..2], [Handover::Written, Handover::Written]);
        assert!(matches!(outcomes[2], Handover::Capped(n) if n >= CHUNK as u64));
        let (_, result) = rec.finish();
        result.unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let back: Vec<CaptureEvent> = CaptureFileReader::new(io::BufReader::new(file))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        // Every frame written is whole and in order; the capped chunk's are absent.
        assert!(!back.is_empty() && back.len() < i as usize);
        for (n, ev) in back.iter().enumerate() {
            assert_eq!(ev, &event(u32::try_from(n).unwrap()));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
