//! `Content-Encoding`: gzip, deflate, br and zstd bodies decoded as they arrive, through the
//! kept crates (flate2, brotli-decompressor, zstd), in bounded memory.
//!
//! Captured bytes are hostile: a few kilobytes of gzip can inflate to gigabytes. Every
//! decoder writes into a [`Sink`] that refuses output past the decoder's allowance (an
//! absolute cap, and a ratio to the compressed bytes seen so far), so no call produces more
//! than that, whatever the input. A refusal ends the decoding for good; the caller counts it
//! and marks its record.

use std::{
    borrow::Cow,
    io::{self, Write},
};

use flate2::write::{DeflateDecoder as Raw, MultiGzDecoder as MultiGz, ZlibDecoder as Zlib};

/// A content coding Strike decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// `deflate`: zlib-wrapped as the RFC says, or raw deflate as some servers send it.
    Deflate,
    Br,
    Zstd,
}

/// Why a body's content coding cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A coding Strike does not decode (`compress`, an unknown name), or more than one.
    #[error("unsupported content coding")]
    Unsupported,
    /// The compressed bytes are not valid.
    #[error("corrupt compressed body")]
    Corrupt,
    /// The decoded body would pass the output cap or the ratio bound (a decompression
    /// bomb, or simply a body too large to keep).
    #[error("decoded body over the limit")]
    OverLimit,
}

impl DecodeError {
    /// The record's `partial_reason` and the counter's label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unsupported => "content_encoding_unsupported",
            Self::Corrupt => "content_encoding_corrupt",
            Self::OverLimit => "content_encoding_over_limit",
        }
    }
}

impl Coding {
    /// The coding of a `Content-Encoding` value: `None` for identity (or no value);
    /// [`DecodeError::Unsupported`] for an unknown coding or a stack of several.
    pub fn from_header(value: &str) -> Result<Option<Self>, DecodeError> {
        let mut codings = value
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"));
        let Some(first) = codings.next() else {
            return Ok(None);
        };
        if codings.next().is_some() {
            return Err(DecodeError::Unsupported);
        }
        let coding = match first.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Self::Gzip,
            "deflate" => Self::Deflate,
            "br" => Self::Br,
            "zstd" => Self::Zstd,
            _ => return Err(DecodeError::Unsupported),
        };
        Ok(Some(coding))
    }
}

/// How much a decoder may produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Decoded bytes of one body at most.
    pub max_output: u64,
    /// Decoded bytes per compressed byte at most (beyond a first 64 KiB, which any small
    /// body may reach).
    pub max_ratio: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            // Streams are consumed as they decode; this bounds one body's whole output.
            max_output: 256 << 20,
            // Text compresses 5-20x; JSON of repeated tokens can reach a few hundred.
            max_ratio: 1024,
        }
    }
}

/// Decoded bytes any body may reach before the ratio bound applies.
const RATIO_FLOOR: u64 = 64 << 10;

/// Largest zstd window accepted (8 MiB, what zstd's own streaming limit recommends); a
/// frame that asks for more is refused instead of allocated.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// Where decoders write: the decoded bytes of the current call, refused past `room`.
#[derive(Debug, Default)]
struct Sink {
    buf: Vec<u8>,
    room: u64,
    refused: bool,
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.len() as u64 > self.room {
            self.refused = true;
            return Err(io::Error::other("decoded body over the limit"));
        }
        self.room -= data.len() as u64;
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum Inner {
    /// `deflate` before its first two bytes tell zlib from raw.
    DeflateSniff(Vec<u8>),
    Gzip(MultiGz<Sink>),
    Zlib(Zlib<Sink>),
    Raw(Raw<Sink>),
    Br(Box<brotli_decompressor::DecompressorWriter<Sink>>),
    Zstd(zstd::stream::write::Decoder<'static, Sink>),
    Failed(DecodeError),
}

/// Decodes one body's content coding, piece by piece.
pub struct ContentDecoder {
    inner: Inner,
    limits: DecodeLimits,
    input: u64,
    output: u64,
}

impl std::fmt::Debug for ContentDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentDecoder")
            .field("input", &self.input)
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl ContentDecoder {
    pub fn new(coding: Coding, limits: DecodeLimits) -> Self {
        let inner = match coding {
            Coding::Gzip => Inner::Gzip(MultiGz::new(Sink::default())),
            Coding::Deflate => Inner::DeflateSniff(Vec::new()),
            Coding::Br => Inner::Br(Box::new(brotli_decompressor::DecompressorWriter::new(
                Sink::default(),
                4096,
            ))),
            Coding::Zstd => match zstd::stream::write::Decoder::new(Sink::default()) {
                Ok(mut d) => match d.window_log_max(ZSTD_WINDOW_LOG_MAX) {
                    Ok(()) => Inner::Zstd(d),
                    Err(_) => Inner::Failed(DecodeError::Corrupt),
                },
                Err(_) => Inner::Failed(DecodeError::Corrupt),
            },
        };
        Self {
            inner,
            limits,
            input: 0,
            output: 0,
        }
    }

    /// Bytes the decoder holds, estimated: its state (inflate's is about 43 KiB) and
    /// window (brotli's and zstd's grow with what they decode, up to the 16 MiB and 8 MiB
    /// their formats and [`ZSTD_WINDOW_LOG_MAX`] allow), and its output buffer.
    pub fn buffered_bytes(&self) -> usize {
        const INFLATE_STATE: usize = 43 << 10;
        const BROTLI_STATE: usize = 64 << 10;
        const ZSTD_STATE: usize = 160 << 10;
        let window = |max: usize| usize::try_from(self.output).unwrap_or(usize::MAX).min(max);
        match &self.inner {
            Inner::DeflateSniff(head) => head.capacity(),
            Inner::Gzip(d) => INFLATE_STATE + d.get_ref().buf.capacity(),
            Inner::Zlib(d) => INFLATE_STATE + d.get_ref().buf.capacity(),
            Inner::Raw(d) => INFLATE_STATE + d.get_ref().buf.capacity(),
            Inner::Br(d) => BROTLI_STATE + window(16 << 20) + d.get_ref().buf.capacity(),
            Inner::Zstd(d) => {
                ZSTD_STATE + window(1 << ZSTD_WINDOW_LOG_MAX) + d.get_ref().buf.capacity()
            }
            Inner::Failed(_) => 0,
        }
    }

    /// Compressed bytes seen.
    pub fn bytes_in(&self) -> u64 {
        self.input
    }

    /// Decoded bytes produced.
    pub fn bytes_out(&self) -> u64 {
        self.output
    }

    /// Decodes `input`, appending what it yields to `out`. After an error every later call
    /// returns it again and yields nothing.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        self.input = self.input.saturating_add(input.len() as u64);
        self.run(Some(input), out)
    }

    /// The end of the body: flushes what the decoder still holds. A stream that stops
    /// before its end is no error here (the capture may have ended mid-body).
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        self.run(None, out)
    }

    fn room(&self) -> u64 {
        let by_ratio = self
            .input
            .saturating_mul(self.limits.max_ratio)
            .max(RATIO_FLOOR);
        by_ratio
            .min(self.limits.max_output)
            .saturating_sub(self.output)
    }

    fn run(&mut self, input: Option<&[u8]>, out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if let Inner::DeflateSniff(head) = &mut self.inner {
            head.extend_from_slice(input.unwrap_or_default());
            if head.len() < 2 && input.is_some() {
                return Ok(());
            }
            let head = std::mem::take(head);
            self.inner = if is_zlib_header(&head) {
                Inner::Zlib(Zlib::new(Sink::default()))
            } else {
                Inner::Raw(Raw::new(Sink::default()))
            };
            return self.run_inner(Some(&head), input.is_none(), out);
        }
        self.run_inner(input, input.is_none(), out)
    }

    fn run_inner(
        &mut self,
        input: Option<&[u8]>,
        end: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        let room = self.room();
        let data = input.unwrap_or_default();
        let s = (data, end, room, out);
        let result = match &mut self.inner {
            Inner::Failed(e) => return Err(*e),
            Inner::DeflateSniff(_) => return Ok(()),
            Inner::Gzip(d) => step(d, s, |d| d.get_mut(), MultiGz::try_finish),
            Inner::Zlib(d) => step(d, s, |d| d.get_mut(), Zlib::try_finish),
            Inner::Raw(d) => step(d, s, |d| d.get_mut(), Raw::try_finish),
            Inner::Br(d) => step(d.as_mut(), s, |d| d.get_mut(), Write::flush),
            Inner::Zstd(d) => step(d, s, |d| d.get_mut(), Write::flush),
        };
        match result {
            Ok(decoded) => {
                self.output = self.output.saturating_add(decoded);
                Ok(())
            }
            Err(e) => {
                self.inner = Inner::Failed(e);
                Err(e)
            }
        }
    }
}

/// Feeds `data` (and, at the end, flushes) one decoder, allowed `room` bytes of output;
/// moves what it wrote to its sink onto `out` (the sink keeps its buffer for the next
/// call) and returns how many bytes that was.
fn step<D: Write>(
    decoder: &mut D,
    (data, end, room, out): (&[u8], bool, u64, &mut Vec<u8>),
    sink: impl Fn(&mut D) -> &mut Sink,
    finish: impl FnOnce(&mut D) -> io::Result<()>,
) -> Result<u64, DecodeError> {
    {
        let s = sink(decoder);
        s.room = room;
        s.refused = false;
    }
    // The flush makes the decoder hand over all it can decode now, so a streamed body's
    // events come out as their bytes arrive.
    let mut result = if data.is_empty() {
        Ok(())
    } else {
        decoder.write_all(data).and_then(|()| decoder.flush())
    };
    if result.is_ok() && end {
        result = finish(decoder);
    }
    let s = sink(decoder);
    let decoded = s.buf.len() as u64;
    out.append(&mut s.buf);
    match result {
        Ok(()) => Ok(decoded),
        Err(_) if s.refused => Err(DecodeError::OverLimit),
        Err(_) => Err(DecodeError::Corrupt),
    }
}

/// RFC 1950: compression method 8, a window of at most 32 KiB, and a header checksum.
fn is_zlib_header(head: &[u8]) -> bool {
    match head {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8 && cmf >> 4 <= 7 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

/// A body's content coding (`Content-Encoding`), decoded as the body arrives.
#[derive(Debug, Default)]
pub struct BodyCoding {
    decoder: Option<Box<ContentDecoder>>,
    /// Why the body cannot be decoded; reported once.
    failed: Option<DecodeError>,
    reported: bool,
}

impl BodyCoding {
    /// The coding a `Content-Encoding` value (or its absence) declares.
    pub fn from_header(value: Option<&str>) -> Self {
        match value.map(Coding::from_header) {
            None | Some(Ok(None)) => Self::default(),
            Some(Ok(Some(coding))) => Self {
                decoder: Some(Box::new(ContentDecoder::new(
                    coding,
                    DecodeLimits::default(),
                ))),
                ..Self::default()
            },
            Some(Err(e)) => Self {
                failed: Some(e),
                ..Self::default()
            },
        }
    }

    /// The decoded bytes of `data` (with, at `end`, what the decoder still holds); `None`
    /// once the body cannot be decoded.
    pub fn decode<'a>(&mut self, data: &'a [u8], end: bool) -> Option<Cow<'a, [u8]>> {
        if self.failed.is_some() {
            return None;
        }
        let Some(decoder) = &mut self.decoder else {
            return Some(Cow::Borrowed(data));
        };
        let mut out = Vec::new();
        let mut result = decoder.decode(data, &mut out);
        if result.is_ok() && end {
            result = decoder.finish(&mut out);
        }
        match result {
            Ok(()) => Some(Cow::Owned(out)),
            Err(e) => {
                self.failed = Some(e);
                self.decoder = None;
                None
            }
        }
    }

    /// Bytes its decoder holds (an estimate; 0 for a body sent as is).
    pub fn buffered_bytes(&self) -> usize {
        self.decoder
            .as_ref()
            .map_or(0, |d| size_of::<ContentDecoder>() + d.buffered_bytes())
    }

    /// Whether the body cannot be decoded.
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// The failure, the first time it is asked for.
    pub fn take_failure(&mut self) -> Option<DecodeError> {
        if self.reported {
            return None;
        }
        self.reported = self.failed.is_some();
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SSE-like text that compresses as real bodies do (not as one repeated line would).
    fn text(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i: u64 = 0;
        while out.len() < n {
            let token = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 44;
            out.extend_from_slice(
                format!("data: {{\"id\":{i},\"delta\":{{\"content\":\"t{token:x}\"}}}}\n\n")
                    .as_bytes(),
            );
            i += 1;
        }
        out.truncate(n);
        out
    }

    fn compress(coding: Coding, data: &[u8]) -> Vec<u8> {
        use flate2::write::{GzEncoder, ZlibEncoder};
        let level = flate2::Compression::default();
        match coding {
            Coding::Gzip => {
                let mut e = GzEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Coding::Deflate => {
                let mut e = ZlibEncoder::new(Vec::new(), level);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Coding::Br => {
                let mut out = Vec::new();
                {
                    let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                    w.write_all(data).unwrap();
                }
                out
            }
            Coding::Zstd => zstd::encode_all(data, 3).unwrap(),
        }
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// Decodes `body` fed in pieces of `piece` bytes.
    fn decode_in(
        coding: Coding,
        body: &[u8],
        piece: usize,
        limits: DecodeLimits,
    ) -> (Vec<u8>, Result<(), DecodeError>) {
        let mut d = ContentDecoder::new(coding, limits);
        let mut out = Vec::new();
        for chunk in body.chunks(piece.max(1)) {
            if let Err(e) = d.decode(chunk, &mut out) {
                return (out, Err(e));
            }
        }
        let end = d.finish(&mut out);
        (out, end)
    }

    #[test]
    fn every_coding_round_trips_whatever_the_pieces() {
        let plain = text(200_000);
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Br, Coding::Zstd] {
            let body = compress(coding, &plain);
            for piece in [1, 7, 1000, body.len()] {
                let (out, end) = decode_in(coding, &body, piece, DecodeLimits::default());
                assert_eq!(end, Ok(()), "{coding:?} in {piece}-byte pieces");
                assert!(
                    out == plain,
                    "{coding:?} in {piece}-byte pieces: {} bytes",
                    out.len()
                );
            }
        }
        // Raw deflate under the `deflate` name, as some servers send it.
        let (out, end) = decode_in(
            Coding::Deflate,
            &raw_deflate(&plain),
            3,
            DecodeLimits::default(),
        );
        assert_eq!((end, out.len()), (Ok(()), plain.len()));
        assert!(out == plain);
    }

    #[test]
    fn a_stream_decodes_as_its_pieces_arrive() {
        // An SSE response compressed with a sync flush after each event: each event is
        // readable as soon as its bytes are in, not only at the end.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut d = ContentDecoder::new(Coding::Gzip, DecodeLimits::default());
        let mut out = Vec::new();
        for i in 0..5 {
            let event = format!("data: {i}\n\n");
            e.write_all(event.as_bytes()).unwrap();
            e.flush().unwrap();
            let piece = std::mem::take(e.get_mut());
            d.decode(&piece, &mut out).unwrap();
            assert!(out.ends_with(event.as_bytes()), "event {i}: {out:?}");
        }
    }

    #[test]
    fn a_bomb_is_refused_in_bounded_memory() {
        // 1 GiB of zeros compresses to about a megabyte of gzip; the decoder stops at the
        // ratio bound having produced no more than its allowance.
        let zeros = vec![0u8; 64 << 20];
        for coding in [Coding::Gzip, Coding::Br, Coding::Zstd] {
            let body = compress(coding, &zeros);
            let (out, end) = decode_in(coding, &body, 4096, DecodeLimits::default());
            assert_eq!(end, Err(DecodeError::OverLimit), "{coding:?}");
            let allowance = (body.len() as u64 * 1024).max(RATIO_FLOOR);
            assert!(
                out.len() as u64 <= allowance,
                "{coding:?}: {} > {allowance}",
                out.len()
            );
        }
        // The absolute cap holds for an ordinary body too.
        let limits = DecodeLimits {
            max_output: 10_000,
            max_ratio: 1 << 20,
        };
        let (out, end) = decode_in(
            Coding::Gzip,
            &compress(Coding::Gzip, &text(50_000)),
            100,
            limits,
        );
        assert_eq!(end, Err(DecodeError::OverLimit));
        assert!(out.len() <= 10_000, "{}", out.len());
    }

    #[test]
    fn corrupt_input_fails_once_and_for_good() {
        for coding in [Coding::Gzip, Coding::Deflate, Coding::Br, Coding::Zstd] {
            let mut d = ContentDecoder::new(coding, DecodeLimits::default());
            let mut out = Vec::new();
            let first = d.decode(b"\xff\xfe this is not compressed at all \x00\x01", &mut out);
            let end = d.finish(&mut out);
            assert!(first.is_err() || end.is_err(), "{coding:?}");
            assert_eq!(
                d.decode(b"more", &mut out),
                Err(first.err().or(end.err()).unwrap())
            );
        }
    }

    #[test]
    fn header_values() {
        assert_eq!(Coding::from_header(""), Ok(None));
        assert_eq!(Coding::from_header("identity"), Ok(None));
        assert_eq!(Coding::from_header("GZIP"), Ok(Some(Coding::Gzip)));
        assert_eq!(Coding::from_header(" x-gzip "), Ok(Some(Coding::Gzip)));
        assert_eq!(Coding::from_header("br"), Ok(Some(Coding::Br)));
        assert_eq!(
            Coding::from_header("zstd, identity"),
            Ok(Some(Coding::Zstd))
        );
        assert_eq!(Coding::from_header("deflate"), Ok(Some(Coding::Deflate)));
        assert_eq!(
            Coding::from_header("gzip, br"),
            Err(DecodeError::Unsupported)
        );
        assert_eq!(
            Coding::from_header("compress"),
            Err(DecodeError::Unsupported)
        );
    }
}
