//! Incremental HTTP/1.1 message decoders (RFC 9112), without I/O.
//!
//! [`RequestDecoder`] and [`ResponseDecoder`] take bytes from a [`BytesMut`] and yield one
//! [`RequestFrame`]/[`ResponseFrame`] per call: the head (parsed by `httparse`), body pieces
//! as they arrive (chunked transfer coding already removed), then `End`. Heads larger than
//! the configured limit are an error ([`HttpError::HeadTooLarge`]): the caller drops the
//! message and resynchronises. Bodies are never buffered here: each `Body` frame is the
//! bytes available now.
//!
//! A head that arrives in many pieces (trickled a byte at a time, by a slow or hostile
//! client) is not parsed again from its start for every piece: [`HeadScan`] runs `httparse`
//! on a head's first bytes (so bytes that are not HTTP are an error at once), when a blank
//! line may have ended it, past the bound, and otherwise each time the bytes held have
//! doubled. A head of `n` bytes costs O(n) in searching and parsing together, not O(n²).

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};

/// Default bound on the size of a request or response head.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 64 * 1024;
/// Header fields parsed on the stack; a head with more is parsed again with room for as
/// many as its bytes can hold ([`header_room`]): servers (uvicorn, Go, hyper) accept more than
/// 128, so a head that they accept is never an error here.
const MAX_HEADERS: usize = 128;

/// Header fields that `len` bytes of head can hold at most (`a:\r\n` is 4 bytes).
fn header_room(len: usize, max_head: usize) -> usize {
    len.min(max_head) / 4 + 1
}
/// Bound on a chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 4096;

/// Why bytes could not be decoded as HTTP/1.x.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("invalid HTTP head")]
    Head {
        #[source]
        source: httparse::Error,
    },
    #[error("HTTP head larger than {limit} bytes")]
    HeadTooLarge { limit: usize },
    #[error("invalid Content-Length header")]
    BadContentLength,
    #[error("request Transfer-Encoding does not end with chunked")]
    BadTransferEncoding,
    #[error("invalid chunk-size line")]
    BadChunkSize,
    #[error("chunk-size line longer than {limit} bytes")]
    ChunkLineTooLong { limit: usize },
    #[error("chunk data not followed by CRLF")]
    BadChunkEnd,
    #[error("trailer section larger than {limit} bytes")]
    TrailersTooLarge { limit: usize },
}

impl HttpError {
    /// A short stable name, for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            HttpError::Head { .. } => "head",
            HttpError::HeadTooLarge { .. } => "head_too_large",
            HttpError::BadContentLength => "content_length",
            HttpError::BadTransferEncoding => "transfer_encoding",
            HttpError::BadChunkSize | HttpError::ChunkLineTooLong { .. } => "chunk_size",
            HttpError::BadChunkEnd => "chunk_end",
            HttpError::TrailersTooLarge { .. } => "trailers_too_large",
        }
    }
}

/// How the length of a message body is determined (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// The parts of a request head that later stages use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: String,
    /// The request target without its query string or fragment ([`path_only`]): a query
    /// can carry credentials (`?api_key=…`), so it is never kept.
    pub path: String,
    /// HTTP/1.`minor`.
    pub version_minor: u8,
    pub content_type: Option<String>,
    /// `Content-Encoding` as sent (at most 64 bytes; a longer value reads `unsupported`).
    pub content_encoding: Option<String>,
    pub expect_continue: bool,
    pub connection_close: bool,
    /// The `Host` header (at most 255 bytes).
    pub host: Option<String>,
    /// The W3C `traceparent` header (at most 128 bytes; validated by the exporter).
    pub traceparent: Option<String>,
    /// The configured tenant header's value (at most 128 bytes).
    pub tenant: Option<String>,
    /// A hash of the API key ([`KeyHasher`]); the key itself is never kept.
    pub api_key_hash: Option<String>,
    pub body: BodyKind,
    /// Bytes of the head, request line and final CRLF included.
    pub head_len: usize,
}

/// The parts of a response head that later stages use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub version_minor: u8,
    pub content_type: Option<String>,
    /// `Content-Encoding` as sent (at most 64 bytes; a longer value reads `unsupported`).
    pub content_encoding: Option<String>,
    pub connection_close: bool,
    pub body: BodyKind,
    pub head_len: usize,
    /// The token counts TGI's `/generate` sends as headers (`x-prompt-tokens`,
    /// `x-generated-tokens`).
    pub header_tokens: HeaderTokens,
}

/// Token counts a response's headers carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderTokens {
    pub prompt: Option<u64>,
    pub generated: Option<u64>,
}

impl ResponseHead {
    /// A 1xx response other than 101: the final response is still to come.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// One decoded piece of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestFrame {
    Head(RequestHead),
    Body(Bytes),
    End,
}

/// One decoded piece of a response. Interim (1xx) heads are returned as `Head` too, without
/// `Body`/`End`; check [`ResponseHead::is_interim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseFrame {
    Head(ResponseHead),
    Body(Bytes),
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Data { remaining: u64 },
    DataEnd,
    Trailers { seen: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Length { remaining: u64 },
    Chunked(ChunkState),
    UntilClose,
}

enum BodyStep {
    Data(Bytes),
    Done,
    NeedMore,
}

impl BodyState {
    fn new(kind: BodyKind) -> Option<BodyState> {
        match kind {
            BodyKind::None | BodyKind::Length(0) => None,
            BodyKind::Length(n) => Some(BodyState::Length { remaining: n }),
            BodyKind::Chunked => Some(BodyState::Chunked(ChunkState::Size)),
            BodyKind::UntilClose => Some(BodyState::UntilClose),
        }
    }

    fn step(&mut self, buf: &mut BytesMut, max_trailers: usize) -> Result<BodyStep, HttpError> {
        match self {
            BodyState::Length { remaining } => {
                if buf.is_empty() {
                    return Ok(BodyStep::NeedMore);
                }
                let n = take_len(*remaining, buf.len());
                let data = buf.split_to(n).freeze();
                *remaining = remaining.saturating_sub(data.len() as u64);
                if *remaining == 0 {
                    // The next call reports Done; returning data first keeps one frame per call.
                    *self = BodyState::Length { remaining: 0 };
                }
                Ok(BodyStep::Data(data))
            }
            BodyState::UntilClose => {
                if buf.is_empty() {
                    return Ok(BodyStep::NeedMore);
                }
                Ok(BodyStep::Data(buf.split().freeze()))
            }
            BodyState::Chunked(state) => step_chunked(state, buf, max_trailers),
        }
    }

    fn is_done(&self) -> bool {
        matches!(self, BodyState::Length { remaining: 0 })
    }
}

fn take_len(remaining: u64, available: usize) -> usize {
    usize::try_from(remaining).map_or(available, |r| r.min(available))
}

/// Finds the end of a line: returns (line length without CR/LF, bytes to consume).
fn find_line(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = memchr::memchr(b'\n', buf)?;
    let line_len = if lf > 0 && buf.get(lf - 1) == Some(&b'\r') {
        lf - 1
    } else {
        lf
    };
    Some((line_len, lf + 1))
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let size_part = line.split(|b| *b == b';').next().unwrap_or_default();
    let trimmed = size_part.trim_ascii();
    if trimmed.is_empty() || trimmed.len() > 16 {
        return Err(HttpError::BadChunkSize);
    }
    let text = std::str::from_utf8(trimmed).map_err(|_| HttpError::BadChunkSize)?;
    u64::from_str_radix(text, 16).map_err(|_| HttpError::BadChunkSize)
}

fn step_chunked(
    state: &mut ChunkState,
    buf: &mut BytesMut,
    max_trailers: usize,
) -> Result<BodyStep, HttpError> {
    loop {
        match *state {
            ChunkState::Size => {
                let window = buf
                    .get(..buf.len().min(MAX_CHUNK_LINE + 2))
                    .unwrap_or_default();
                let Some((line_len, consume)) = find_line(window) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(HttpError::ChunkLineTooLong {
                            limit: MAX_CHUNK_LINE,
                        });
                    }
                    return Ok(BodyStep::NeedMore);
                };
                let size = parse_chunk_size(window.get(..line_len).unwrap_or_default())?;
                buf.advance(consume);
                *state = if size == 0 {
                    ChunkState::Trailers { seen: 0 }
                } else {
                    ChunkState::Data { remaining: size }
                };
            }
            ChunkState::Data { remaining } => {
                if buf.is_empty() {
                    return Ok(BodyStep::NeedMore);
                }
                let n = take_len(remaining, buf.len());
                let data = buf.split_to(n).freeze();
                let left = remaining.saturating_sub(data.len() as u64);
                *state = if left == 0 {
                    ChunkState::DataEnd
                } else {
                    ChunkState::Data { remaining: left }
                };
                return Ok(BodyStep::Data(data));
            }
            ChunkState::DataEnd => match buf.first() {
                None => return Ok(BodyStep::NeedMore),
                Some(b'\n') => {
                    buf.advance(1);
                    *state = ChunkState::Size;
                }
                Some(b'\r') => match buf.get(1) {
                    None => return Ok(BodyStep::NeedMore),
                    Some(b'\n') => {
                        buf.advance(2);
                        *state = ChunkState::Size;
                    }
                    Some(_) => return Err(HttpError::BadChunkEnd),
                },
                Some(_) => return Err(HttpError::BadChunkEnd),
            },
            ChunkState::Trailers { seen } => {
                let Some((line_len, consume)) = find_line(buf) else {
                    if seen.saturating_add(buf.len()) > max_trailers {
                        return Err(HttpError::TrailersTooLarge {
                            limit: max_trailers,
                        });
                    }
                    return Ok(BodyStep::NeedMore);
                };
                buf.advance(consume);
                if line_len == 0 {
                    return Ok(BodyStep::Done);
                }
                let seen = seen.saturating_add(consume);
                if seen > max_trailers {
                    return Err(HttpError::TrailersTooLarge {
                        limit: max_trailers,
                    });
                }
                *state = ChunkState::Trailers { seen };
            }
        }
    }
}

/// Header values the decoders act on.
#[derive(Default)]
#[expect(clippy::struct_excessive_bools, reason = "one flag per header")]
struct Framing {
    content_length: Option<u64>,
    /// Transfer-Encoding present; `chunked` when its last coding is chunked.
    transfer_encoding: bool,
    chunked: bool,
    content_type: Option<String>,
    content_encoding: Option<String>,
    expect_continue: bool,
    connection_close: bool,
    host: Option<String>,
    traceparent: Option<String>,
    tenant: Option<String>,
    api_key_hash: Option<String>,
    header_tokens: HeaderTokens,
}

/// `Host` header value → host and port: `example.com:8080`, `[::1]:8080`, `example.com`.
pub fn split_host(host: &str) -> (&str, Option<u16>) {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((addr, tail)) = rest.split_once(']') {
            return (addr, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
        return (host, None);
    }
    match host.rsplit_once(':') {
        // One colon: host:port. More: a bare IPv6 address (not valid in Host, but seen).
        Some((name, port)) if !name.contains(':') => (name, port.parse().ok()),
        _ => (host, None),
    }
}

/// A header value kept for later stages, when it is short enough to be what it claims.
fn short_value(value: &str, max: usize) -> Option<String> {
    (!value.is_empty() && value.len() <= max).then(|| value.to_owned())
}

/// What an `Authorization` value identifies: a bearer token (or any scheme's credentials)
/// whole, but of Basic credentials the user name alone, never its password.
fn credential(value: &str) -> Option<String> {
    use base64::Engine as _;
    let (scheme, rest) = value.split_once(' ').unwrap_or(("", value));
    let rest = rest.trim();
    let id = if scheme.eq_ignore_ascii_case("bearer") {
        rest.to_owned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let user = decoded.split(|b| *b == b':').next().unwrap_or_default();
        format!("basic-user:{}", String::from_utf8_lossy(user))
    } else {
        value.to_owned()
    };
    (!id.is_empty() && id != "basic-user:").then_some(id)
}

fn framing(
    headers: &[httparse::Header<'_>],
    tenant_header: Option<&str>,
    hasher: Option<&KeyHasher>,
) -> Result<Framing, HttpError> {
    let mut f = Framing::default();
    for h in headers {
        let value = std::str::from_utf8(h.value).unwrap_or_default().trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            for part in value.split(',') {
                let n: u64 = part
                    .trim()
                    .parse()
                    .map_err(|_| HttpError::BadContentLength)?;
                if f.content_length.is_some_and(|prev| prev != n) {
                    return Err(HttpError::BadContentLength);
                }
                f.content_length = Some(n);
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            f.transfer_encoding = true;
            // Only the last coding of the last header counts.
            f.chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if h.name.eq_ignore_ascii_case("content-type") {
            f.content_type = Some(value.to_ascii_lowercase());
        } else if h.name.eq_ignore_ascii_case("content-encoding") {
            // Longer than any list of codings Strike could decode: kept as unsupported.
            f.content_encoding =
                Some(short_value(value, 64).unwrap_or_else(|| "unsupported".to_owned()));
        } else if h.name.eq_ignore_ascii_case("expect") {
            f.expect_continue = value.eq_ignore_ascii_case("100-continue");
        } else if h.name.eq_ignore_ascii_case("connection") {
            f.connection_close = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        } else if h.name.eq_ignore_ascii_case("x-prompt-tokens") {
            f.header_tokens.prompt = value.trim().parse().ok();
        } else if h.name.eq_ignore_ascii_case("x-generated-tokens") {
            f.header_tokens.generated = value.trim().parse().ok();
        } else if h.name.eq_ignore_ascii_case("host") {
            f.host = short_value(value, 255);
        } else if h.name.eq_ignore_ascii_case("traceparent") {
            f.traceparent = short_value(value, 128);
        } else if h.name.eq_ignore_ascii_case("authorization") {
            if let (Some(hasher), Some(id)) = (hasher, credential(value)) {
                f.api_key_hash = Some(hasher.hash(&id));
            }
        } else if (h.name.eq_ignore_ascii_case("x-api-key")
            || h.name.eq_ignore_ascii_case("api-key"))
            && f.api_key_hash.is_none()
            && !value.is_empty()
        {
            f.api_key_hash = hasher.map(|k| k.hash(value));
        }
        if tenant_header.is_some_and(|t| h.name.eq_ignore_ascii_case(t)) {
            f.tenant = short_value(value, 128);
        }
    }
    Ok(f)
}

/// Where the search for the end of the head in progress stands (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct HeadScan {
    /// Bytes already searched for a blank line.
    searched: usize,
    /// Bytes held at the last parse; 0 before the first.
    parsed: usize,
}

impl HeadScan {
    /// Whether `httparse` should look at `buf` now; searches the bytes added since the last
    /// call for a blank line (LF LF or LF CR LF).
    fn should_parse(&mut self, buf: &[u8], max_head: usize) -> bool {
        if buf.len() < self.searched || buf.len() < self.parsed {
            // Not the bytes this scan saw (the caller replaced them): start again.
            *self = Self::default();
        }
        let blank_line = self.search(buf);
        self.parsed == 0
            || blank_line
            || buf.len() > max_head
            || buf.len() >= self.parsed.saturating_mul(2)
    }

    fn search(&mut self, buf: &[u8]) -> bool {
        let mut from = self.searched;
        while let Some(i) = buf
            .get(from..)
            .and_then(|rest| memchr::memchr(b'\n', rest))
            .map(|i| from + i)
        {
            match (buf.get(i + 1), buf.get(i + 2)) {
                // A LF at the end, or LF CR: the next bytes decide; look here again.
                (None, _) | (Some(b'\r'), None) => {
                    self.searched = i;
                    return false;
                }
                (Some(b'\n'), _) | (Some(b'\r'), Some(b'\n')) => {
                    // Past this LF: a blank line that did not end the head (empty lines
                    // before a request line) is not found again.
                    self.searched = i + 1;
                    return true;
                }
                _ => from = i + 1,
            }
        }
        self.searched = buf.len();
        false
    }

    /// `httparse` found the head incomplete with `len` bytes held.
    fn partial(&mut self, len: usize) {
        self.parsed = len.max(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MsgState {
    Head,
    Body(BodyState),
    EndPending,
}

fn next_state(kind: BodyKind) -> MsgState {
    BodyState::new(kind).map_or(MsgState::EndPending, MsgState::Body)
}

/// Decodes a body state machine into frames; shared by both decoders.
fn decode_body_frame(
    state: &mut MsgState,
    buf: &mut BytesMut,
    max_trailers: usize,
) -> Result<Option<Bytes>, HttpError> {
    match state {
        MsgState::Body(body) => {
            if body.is_done() {
                *state = MsgState::EndPending;
                return Ok(None);
            }
            match body.step(buf, max_trailers)? {
                BodyStep::Data(d) => Ok(Some(d)),
                BodyStep::Done => {
                    *state = MsgState::EndPending;
                    Ok(None)
                }
                BodyStep::NeedMore => Ok(None),
            }
        }
        MsgState::Head | MsgState::EndPending => Ok(None),
    }
}

/// Incremental decoder of HTTP/1.x requests.
#[derive(Debug, Clone)]
pub struct RequestDecoder {
    max_head: usize,
    /// The request header naming the tenant, when configured.
    tenant_header: Option<Arc<str>>,
    /// Hashes API keys; without one they are not recorded at all.
    key_hasher: Option<Arc<KeyHasher>>,
    state: MsgState,
    scan: HeadScan,
    /// Times `httparse` ran, over the decoder's life.
    head_parses: u64,
}

impl Default for RequestDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_HEAD_BYTES)
    }
}

impl RequestDecoder {
    pub fn new(max_head: usize) -> Self {
        Self {
            max_head,
            tenant_header: None,
            key_hasher: None,
            state: MsgState::Head,
            scan: HeadScan::default(),
            head_parses: 0,
        }
    }

    /// Times a head was parsed, over the decoder's life (a bound tests check: a head
    /// trickled in byte by byte is parsed a few times, not once per byte).
    pub fn head_parses(&self) -> u64 {
        self.head_parses
    }

    /// Also keeps the value of this header (the tenant) in each request head.
    #[must_use]
    pub fn with_tenant_header(mut self, name: Option<Arc<str>>) -> Self {
        self.tenant_header = name;
        self
    }

    /// Also keeps the hash of each request's API key ([`RequestHead::api_key_hash`]).
    #[must_use]
    pub fn with_key_hasher(mut self, hasher: Option<Arc<KeyHasher>>) -> Self {
        self.key_hasher = hasher;
        self
    }

    /// True between messages (no head has been decoded for the next message yet).
    pub fn is_idle(&self) -> bool {
        self.state == MsgState::Head
    }

    /// Forgets the message in progress.
    pub fn reset(&mut self) {
        self.state = MsgState::Head;
        self.scan = HeadScan::default();
    }

    /// Decodes the next frame from `buf`, consuming its bytes; `Ok(None)` when more bytes
    /// are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<RequestFrame>, HttpError> {
        match self.state {
            MsgState::Head => self.decode_head(buf),
            MsgState::EndPending => {
                self.state = MsgState::Head;
                Ok(Some(RequestFrame::End))
            }
            MsgState::Body(_) => {
                if let Some(d) = decode_body_frame(&mut self.state, buf, self.max_head)? {
                    return Ok(Some(RequestFrame::Body(d)));
                }
                if self.state == MsgState::EndPending {
                    self.state = MsgState::Head;
                    return Ok(Some(RequestFrame::End));
                }
                Ok(None)
            }
        }
    }

    fn decode_head(&mut self, buf: &mut BytesMut) -> Result<Option<RequestFrame>, HttpError> {
        if buf.is_empty() || !self.scan.should_parse(buf, self.max_head) {
            return Ok(None);
        }
        self.head_parses = self.head_parses.saturating_add(1);
        let parsed = self.parse_head(buf);
        if matches!(parsed, Ok(None)) {
            self.scan.partial(buf.len());
        } else {
            self.scan = HeadScan::default();
        }
        parsed
    }

    fn parse_head(&mut self, buf: &mut BytesMut) -> Result<Option<RequestFrame>, HttpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut more;
        let mut req = httparse::Request::new(&mut headers);
        let mut parsed = req.parse(buf);
        if parsed == Err(httparse::Error::TooManyHeaders) {
            more = vec![httparse::EMPTY_HEADER; header_room(buf.len(), self.max_head)];
            req = httparse::Request::new(&mut more);
            parsed = req.parse(buf);
        }
        match parsed {
            // The bound holds however the head arrived: in pieces (below) or all at once.
            Ok(httparse::Status::Complete(head_len)) if head_len > self.max_head => {
                Err(HttpError::HeadTooLarge {
                    limit: self.max_head,
                })
            }
            Ok(httparse::Status::Complete(head_len)) => {
                let f = framing(
                    req.headers,
                    self.tenant_header.as_deref(),
                    self.key_hasher.as_deref(),
                )?;
                let body = if f.transfer_encoding {
                    if !f.chunked {
                        return Err(HttpError::BadTransferEncoding);
                    }
                    BodyKind::Chunked
                } else {
                    f.content_length.map_or(BodyKind::None, BodyKind::Length)
                };
                let head = RequestHead {
                    method: req.method.unwrap_or_default().to_owned(),
                    path: path_only(req.path.unwrap_or_default()).to_owned(),
                    version_minor: req.version.unwrap_or(1),
                    content_type: f.content_type,
                    content_encoding: f.content_encoding,
                    expect_continue: f.expect_continue,
                    connection_close: f.connection_close,
                    host: f.host,
                    traceparent: f.traceparent,
                    tenant: f.tenant,
                    api_key_hash: f.api_key_hash,
                    body,
                    head_len,
                };
                buf.advance(head_len);
                self.state = next_state(body);
                Ok(Some(RequestFrame::Head(head)))
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > self.max_head {
                    Err(HttpError::HeadTooLarge {
                        limit: self.max_head,
                    })
                } else {
                    Ok(None)
                }
            }
            Err(source) => Err(HttpError::Head { source }),
        }
    }
}

/// Incremental decoder of HTTP/1.x responses. The body length depends on the request, so
/// call [`ResponseDecoder::set_head_request`] before each response head is decoded.
#[derive(Debug, Clone)]
pub struct ResponseDecoder {
    max_head: usize,
    state: MsgState,
    head_request: bool,
    scan: HeadScan,
    /// Times `httparse` ran, over the decoder's life.
    head_parses: u64,
}

impl Default for ResponseDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_HEAD_BYTES)
    }
}

impl ResponseDecoder {
    pub fn new(max_head: usize) -> Self {
        Self {
            max_head,
            state: MsgState::Head,
            head_request: false,
            scan: HeadScan::default(),
            head_parses: 0,
        }
    }

    /// Times a head was parsed, over the decoder's life.
    pub fn head_parses(&self) -> u64 {
        self.head_parses
    }

    /// The response being waited for answers a HEAD request (so it has no body).
    pub fn set_head_request(&mut self, head: bool) {
        self.head_request = head;
    }

    /// True between messages.
    pub fn is_idle(&self) -> bool {
        self.state == MsgState::Head
    }

    /// Forgets the message in progress.
    pub fn reset(&mut self) {
        self.state = MsgState::Head;
        self.scan = HeadScan::default();
    }

    /// The connection's incoming side ended: a body delimited by close is complete
    /// (returns `End`); any other message in progress is truncated (returns `None`).
    pub fn finish(&mut self) -> Option<ResponseFrame> {
        let done = matches!(
            self.state,
            MsgState::Body(BodyState::UntilClose) | MsgState::EndPending
        );
        self.state = MsgState::Head;
        self.scan = HeadScan::default();
        done.then_some(ResponseFrame::End)
    }

    /// Decodes the next frame from `buf`, consuming its bytes.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseFrame>, HttpError> {
        match self.state {
            MsgState::Head => self.decode_head(buf),
            MsgState::EndPending => {
                self.state = MsgState::Head;
                Ok(Some(ResponseFrame::End))
            }
            MsgState::Body(_) => {
                if let Some(d) = decode_body_frame(&mut self.state, buf, self.max_head)? {
                    return Ok(Some(ResponseFrame::Body(d)));
                }
                if self.state == MsgState::EndPending {
                    self.state = MsgState::Head;
                    return Ok(Some(ResponseFrame::End));
                }
                Ok(None)
            }
        }
    }

    fn decode_head(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseFrame>, HttpError> {
        if buf.is_empty() || !self.scan.should_parse(buf, self.max_head) {
            return Ok(None);
        }
        self.head_parses = self.head_parses.saturating_add(1);
        let parsed = self.parse_head(buf);
        if matches!(parsed, Ok(None)) {
            self.scan.partial(buf.len());
        } else {
            self.scan = HeadScan::default();
        }
        parsed
    }

    fn parse_head(&mut self, buf: &mut BytesMut) -> Result<Option<ResponseFrame>, HttpError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut more;
        let mut res = httparse::Response::new(&mut headers);
        let mut parsed = res.parse(buf);
        if parsed == Err(httparse::Error::TooManyHeaders) {
            more = vec![httparse::EMPTY_HEADER; header_room(buf.len(), self.max_head)];
            res = httparse::Response::new(&mut more);
            parsed = res.parse(buf);
        }
        match parsed {
            Ok(httparse::Status::Complete(head_len)) if head_len > self.max_head => {
                Err(HttpError::HeadTooLarge {
                    limit: self.max_head,
                })
            }
            Ok(httparse::Status::Complete(head_len)) => {
                let f = framing(res.headers, None, None)?;
                let status = res.code.unwrap_or_default();
                let body = if self.head_request
                    || (100..200).contains(&status)
                    || status == 204
                    || status == 304
                {
                    BodyKind::None
                } else if f.transfer_encoding {
                    if f.chunked {
                        BodyKind::Chunked
                    } else {
                        BodyKind::UntilClose
                    }
                } else {
                    f.content_length
                        .map_or(BodyKind::UntilClose, BodyKind::Length)
                };
                let head = ResponseHead {
                    status,
                    version_minor: res.version.unwrap_or(1),
                    content_type: f.content_type,
                    content_encoding: f.content_encoding,
                    connection_close: f.connection_close,
                    body,
                    head_len,
                    header_tokens: f.header_tokens,
                };
                buf.advance(head_len);
                if !head.is_interim() {
                    self.state = next_state(body);
                }
                Ok(Some(ResponseFrame::Head(head)))
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > self.max_head {
                    Err(HttpError::HeadTooLarge {
                        limit: self.max_head,
                    })
                } else {
                    Ok(None)
                }
            }
            Err(source) => Err(HttpError::Head { source }),
        }
    }
}

/// Whether bytes could be the start of an HTTP request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    Yes,
    No,
    /// A prefix of a plausible request line: more bytes decide.
    NeedMore,
}

const METHODS: &[&[u8]] = &[
    b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
];

/// A request target up to its query string or fragment.
pub fn path_only(target: &str) -> &str {
    target.split(['?', '#']).next().unwrap_or_default()
}

impl RequestHead {
    /// What a request line says, for a request whose head did not parse: its method and
    /// target (each bounded), nothing else.
    pub fn from_request_line(buf: &[u8]) -> Option<Self> {
        let line = buf.get(..buf.len().min(8192))?;
        let line = &line[..memchr::memchr(b'\n', line).unwrap_or(line.len())];
        let mut parts = line.split(|b| *b == b' ');
        let method = std::str::from_utf8(parts.next()?).ok()?;
        let target = String::from_utf8_lossy(parts.next()?);
        Some(Self {
            method: method.to_owned(),
            path: path_only(&target).chars().take(2048).collect(),
            version_minor: 1,
            content_type: None,
            content_encoding: None,
            expect_continue: false,
            connection_close: false,
            host: None,
            traceparent: None,
            tenant: None,
            api_key_hash: None,
            body: BodyKind::None,
            head_len: 0,
        })
    }
}

/// Checks for `METHOD SP target SP HTTP/1.` at the start of `buf`.
pub fn sniff_request_line(buf: &[u8]) -> Sniff {
    const LIMIT: usize = 8192;
    let Some(sp) = memchr::memchr(b' ', buf.get(..buf.len().min(8)).unwrap_or_default()) else {
        return if buf.len() < 8 && METHODS.iter().any(|m| m.starts_with(buf)) {
            Sniff::NeedMore
        } else {
            Sniff::No
        };
    };
    let method = buf.get(..sp).unwrap_or_default();
    if !METHODS.contains(&method) {
        return Sniff::No;
    }
    let rest = buf.get(sp + 1..).unwrap_or_default();
    let window = rest.get(..rest.len().min(LIMIT)).unwrap_or_default();
    for (i, b) in window.iter().enumerate() {
        match b {
            b' ' if i > 0 => {
                let tail = window.get(i + 1..).unwrap_or_default();
                let want: &[u8] = b"HTTP/1.";
                let n = tail.len().min(want.len());
                if tail.get(..n) != want.get(..n) {
                    return Sniff::No;
                }
                return if n == want.len() {
                    Sniff::Yes
                } else {
                    Sniff::NeedMore
                };
            }
            b' ' | b'\r' | b'\n' | 0..=0x1f | 0x7f => return Sniff::No,
            _ => {}
        }
    }
    if rest.len() >= LIMIT {
        Sniff::No
    } else {
        Sniff::NeedMore
    }
}

/// Checks for `HTTP/1.` at the start of `buf`.
pub fn sniff_status_line(buf: &[u8]) -> Sniff {
    let want: &[u8] = b"HTTP/1.";
    let n = buf.len().min(want.len());
    if buf.get(..n) != want.get(..n) {
        Sniff::No
    } else if n == want.len() {
        Sniff::Yes
    } else {
        Sniff::NeedMore
    }
}

/// Hashes API keys into attribution keys: the first 16 hex digits of HMAC-SHA256 under a
/// secret of the deployment's (`cost.api_key_hash_key_file`), so a hash is stable where
/// that secret is shared, unlinkable across deployments, and no dictionary of likely keys
/// can be tried against it without the secret. Never the key itself.
#[derive(Clone)]
pub struct KeyHasher {
    mac: hmac::Hmac<sha2::Sha256>,
    random: bool,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyHasher")
            .field("random", &self.random)
            .finish_non_exhaustive()
    }
}

impl KeyHasher {
    /// Shortest secret accepted, in bytes.
    pub const MIN_SECRET: usize = 16;

    /// A hasher keyed with `secret`; `None` when it is shorter than [`Self::MIN_SECRET`].
    pub fn new(secret: &[u8]) -> Option<Self> {
        use hmac::KeyInit as _;
        if secret.len() < Self::MIN_SECRET {
            return None;
        }
        let mac = hmac::Hmac::new_from_slice(secret).ok()?;
        Some(Self { mac, random: false })
    }

    /// A hasher keyed with 32 random bytes: hashes hold for this process only.
    pub fn random() -> Self {
        let mut secret = [0u8; 32];
        if getrandom::fill(&mut secret).is_err() {
            // No entropy source: still a per-process secret, from the clock and pid.
            let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
            let digest = <sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes());
            secret.copy_from_slice(&digest);
        }
        let mut h = Self::new(&secret).unwrap_or_else(|| unreachable!("32 bytes"));
        h.random = true;
        h
    }

    /// Whether the secret is this process's own (none was configured).
    pub fn is_random(&self) -> bool {
        self.random
    }

    /// The hash of `key`.
    pub fn hash(&self, key: &str) -> String {
        use hmac::Mac as _;
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        let digest = mac.finalize().into_bytes();
        digest[..8]
            .iter()
            .fold(String::with_capacity(16), |mut out, b| {
                use std::fmt::Write as _;
                let _ = write!(out, "{b:02x}");
                out
            })
    }
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self::random()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_hash_is_keyed_stable_short_and_not_the_key() {
        let k = KeyHasher::new(b"a deployment's own secret").unwrap();
        let h = k.hash("sk-secret-123");
        assert_eq!(h.len(), 16);
        assert_eq!(h, k.hash("sk-secret-123"));
        assert_ne!(h, k.hash("sk-secret-124"));
        assert!(!h.contains("secret"));
        // HMAC-SHA256, as RFC 4231 test case 2 gives it ("Jefe", "what do ya want for
        // nothing?"), with a key of the minimum length padded the same way HMAC does.
        let rfc = KeyHasher::new(b"Jefe\0\0\0\0\0\0\0\0\0\0\0\0").unwrap();
        assert_eq!(rfc.hash("what do ya want for nothing?"), "5bdcc146bf60754e");
        // Another deployment's secret, or none (a random one), gives other hashes.
        assert_ne!(
            KeyHasher::new(b"another deployment secret")
                .unwrap()
                .hash("sk-secret-123"),
            h
        );
        let random = KeyHasher::random();
        assert!(random.is_random() && !k.is_random());
        assert_ne!(random.hash("sk-secret-123"), h);
        assert!(KeyHasher::new(b"too short").is_none());
    }

    #[test]
    fn api_keys_are_hashed_with_the_secret_and_basic_auth_by_user_only() {
        let hasher = Arc::new(KeyHasher::new(b"the deployment secret").unwrap());
        let head = |auth: &str| {
            let mut dec = RequestDecoder::default().with_key_hasher(Some(Arc::clone(&hasher)));
            let mut buf = BytesMut::from(format!("GET / HTTP/1.1\r\n{auth}\r\n\r\n").as_str());
            match dec.decode(&mut buf).unwrap() {
                Some(RequestFrame::Head(h)) => h.api_key_hash,
                other => panic!("{other:?}"),
            }
        };
        let bearer = head("authorization: Bearer sk-123");
        assert_eq!(bearer, Some(hasher.hash("sk-123")));
        assert_eq!(
            head("x-api-key: sk-123"),
            bearer,
            "the same key, the same hash"
        );
        // Basic alice:pw1 and alice:pw2: the user alone, so one hash, and no password in it.
        let b1 = head("authorization: Basic YWxpY2U6cHcx");
        let b2 = head("authorization: Basic YWxpY2U6cHcy");
        assert_eq!(b1, b2);
        assert_eq!(b1, Some(hasher.hash("basic-user:alice")));
        assert_eq!(head("authorization: Basic !!notbase64"), None);
        // Without a hasher no key is recorded at all.
        let mut dec = RequestDecoder::default();
        let mut buf = BytesMut::from("GET / HTTP/1.1\r\nauthorization: Bearer sk-1\r\n\r\n");
        let Some(RequestFrame::Head(h)) = dec.decode(&mut buf).unwrap() else {
            panic!("no head");
        };
        assert_eq!(h.api_key_hash, None);
    }

    #[test]
    fn query_strings_are_never_kept() {
        let frames = req_frames(&[
            b"POST /v1/chat/completions?api_key=SECRET&x=1#frag HTTP/1.1\r\nhost: a\r\n\r\n",
        ])
        .unwrap();
        let RequestFrame::Head(head) = &frames[0] else {
            panic!("{frames:?}");
        };
        assert_eq!(head.path, "/v1/chat/completions");
        let line =
            RequestHead::from_request_line(b"GET /v1/models?token=SECRET HTTP/1.1\r\n").unwrap();
        assert_eq!(
            (line.method.as_str(), line.path.as_str()),
            ("GET", "/v1/models")
        );
    }

    fn req_frames(input: &[&[u8]]) -> Result<Vec<RequestFrame>, HttpError> {
        let mut dec = RequestDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input {
            buf.extend_from_slice(piece);
            while let Some(f) = dec.decode(&mut buf)? {
                out.push(f);
            }
        }
        Ok(merge_req(out))
    }

    /// Merges adjacent body frames so outputs from different splits compare equal.
    fn merge_req(frames: Vec<RequestFrame>) -> Vec<RequestFrame> {
        let mut out: Vec<RequestFrame> = Vec::new();
        for f in frames {
            if let (Some(RequestFrame::Body(prev)), RequestFrame::Body(b)) = (out.last_mut(), &f) {
                let mut v = prev.to_vec();
                v.extend_from_slice(b);
                *prev = Bytes::from(v);
                continue;
            }
            out.push(f);
        }
        out
    }

    fn resp_frames(input: &[&[u8]], head_req: bool) -> Result<Vec<ResponseFrame>, HttpError> {
        let mut dec = ResponseDecoder::default();
        dec.set_head_request(head_req);
        let mut buf = BytesMut::new();
        let mut out: Vec<ResponseFrame> = Vec::new();
        for piece in input {
            buf.extend_from_slice(piece);
            while let Some(f) = dec.decode(&mut buf)? {
                if let (Some(ResponseFrame::Body(prev)), ResponseFrame::Body(b)) =
                    (out.last_mut(), &f)
                {
                    let mut v = prev.to_vec();
                    v.extend_from_slice(b);
                    *prev = Bytes::from(v);
                    continue;
                }
                out.push(f);
            }
        }
        if let Some(f) = dec.finish() {
            out.push(f);
        }
        Ok(out)
    }

    const CHAT_REQ: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:8000\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"model\":\"m\",\"stream\":true}GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

    const CHUNKED_RESP: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n6;name=value\r\ndata: \r\n19\r\n{\"x\":1}\n\n{\"y\":22222222}\n\n\r\n0\r\nX-Trailer: 1\r\n\r\n";

    #[test]
    fn request_with_body_then_get() {
        let frames = req_frames(&[CHAT_REQ]).unwrap();
        assert_eq!(frames.len(), 5, "{frames:?}");
        let RequestFrame::Head(h) = &frames[0] else {
            panic!("{frames:?}")
        };
        assert_eq!(h.method, "POST");
        assert_eq!(h.path, "/v1/chat/completions");
        assert_eq!(h.body, BodyKind::Length(27));
        assert_eq!(
            frames[1],
            RequestFrame::Body(Bytes::from_static(b"{\"model\":\"m\",\"stream\":true}"))
        );
        assert_eq!(frames[2], RequestFrame::End);
        assert!(
            matches!(&frames[3], RequestFrame::Head(h) if h.method == "GET" && h.body == BodyKind::None)
        );
        assert_eq!(frames[4], RequestFrame::End);
    }

    #[test]
    fn request_every_split_is_identical() {
        let whole = req_frames(&[CHAT_REQ]).unwrap();
        for i in 0..=CHAT_REQ.len() {
            let (a, b) = CHAT_REQ.split_at(i);
            assert_eq!(req_frames(&[a, b]).unwrap(), whole, "split at {i}");
        }
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let frames = resp_frames(&[CHUNKED_RESP], false).unwrap();
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert!(
            matches!(&frames[0], ResponseFrame::Head(h) if h.status == 200 && h.body == BodyKind::Chunked && h.content_type.as_deref() == Some("text/event-stream; charset=utf-8"))
        );
        assert_eq!(
            frames[1],
            ResponseFrame::Body(Bytes::from_static(
                b"data: {\"x\":1}\n\n{\"y\":22222222}\n\n"
            ))
        );
        assert_eq!(frames[2], ResponseFrame::End);
    }

    #[test]
    fn response_every_split_is_identical() {
        let whole = resp_frames(&[CHUNKED_RESP], false).unwrap();
        for i in 0..=CHUNKED_RESP.len() {
            let (a, b) = CHUNKED_RESP.split_at(i);
            assert_eq!(resp_frames(&[a, b], false).unwrap(), whole, "split at {i}");
        }
    }

    #[test]
    fn interim_then_final() {
        let input: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let frames = resp_frames(&[input], false).unwrap();
        assert!(matches!(&frames[0], ResponseFrame::Head(h) if h.is_interim()));
        assert!(matches!(&frames[1], ResponseFrame::Head(h) if h.status == 200));
        assert_eq!(frames[2], ResponseFrame::Body(Bytes::from_static(b"ok")));
        assert_eq!(frames[3], ResponseFrame::End);
        assert_eq!(frames.len(), 4);
    }

    #[test]
    fn no_body_cases() {
        for (input, head) in [
            (&b"HTTP/1.1 204 No Content\r\n\r\n"[..], false),
            (
                &b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"[..],
                false,
            ),
            (&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"[..], true),
        ] {
            let frames = resp_frames(&[input], head).unwrap();
            assert_eq!(frames.len(), 2, "{frames:?}");
            assert_eq!(frames[1], ResponseFrame::End);
        }
    }

    #[test]
    fn until_close_ends_at_finish() {
        let frames = resp_frames(&[b"HTTP/1.0 200 OK\r\n\r\nabc", b"def"], false).unwrap();
        assert_eq!(
            frames[1],
            ResponseFrame::Body(Bytes::from_static(b"abcdef"))
        );
        assert_eq!(frames[2], ResponseFrame::End);
        // A Content-Length body cut short is not complete.
        let frames =
            resp_frames(&[b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"], false).unwrap();
        assert_eq!(frames.len(), 2);
    }

    /// A head of about 60 KiB: a request line, then header lines of 64 bytes.
    fn long_head(first_line: &str) -> Vec<u8> {
        let mut head = format!("{first_line}\r\nhost: x\r\n").into_bytes();
        let mut i = 0;
        while head.len() < 60 << 10 {
            head.extend_from_slice(format!("x-h{i:05}: {}\r\n", "v".repeat(52)).as_bytes());
            i += 1;
        }
        head.extend_from_slice(b"content-length: 2\r\n\r\nok");
        head
    }

    #[test]
    fn a_head_trickled_byte_by_byte_is_parsed_a_few_times_not_once_per_byte() {
        let head = long_head("POST /v1/completions HTTP/1.1");
        let mut dec = RequestDecoder::default();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in &head {
            buf.extend_from_slice(&[*byte]);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        // The first byte, each doubling up to 60 KiB (16), the blank line: before, once
        // per byte (61 000 times).
        assert!(dec.head_parses() <= 20, "{} parses", dec.head_parses());
        let whole: Vec<&[u8]> = vec![&head];
        assert_eq!(merge_req(frames), req_frames(&whole).unwrap());

        let head = long_head("HTTP/1.1 200 OK");
        let mut dec = ResponseDecoder::default();
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for byte in &head {
            buf.extend_from_slice(&[*byte]);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                frames.push(f);
            }
        }
        assert!(dec.head_parses() <= 20, "{} parses", dec.head_parses());
        assert!(matches!(frames.first(), Some(ResponseFrame::Head(h)) if h.status == 200));
    }

    #[test]
    fn a_trickled_head_that_is_not_http_fails_at_once_and_one_too_large_at_its_bound() {
        let mut dec = RequestDecoder::default();
        let mut buf = BytesMut::from(&b"\x16\x03\x01"[..]);
        assert!(dec.decode(&mut buf).is_err(), "the first bytes are parsed");
        // Trickled without an end: an error once past the bound, as before.
        let mut dec = RequestDecoder::default();
        let mut buf = BytesMut::new();
        let mut result = Ok(None);
        let mut fed = 0;
        let line = b"GET / HTTP/1.1\r\n";
        for byte in line.iter().chain(std::iter::repeat(&b'a')) {
            buf.extend_from_slice(&[*byte]);
            fed += 1;
            result = dec.decode(&mut buf);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(
            result,
            Err(HttpError::HeadTooLarge {
                limit: DEFAULT_MAX_HEAD_BYTES
            })
        );
        assert_eq!(fed, DEFAULT_MAX_HEAD_BYTES + 1);
        assert!(dec.head_parses() <= 20, "{} parses", dec.head_parses());
    }

    #[test]
    fn oversized_head_is_an_error() {
        let mut dec = RequestDecoder::new(64);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nX-Long: "[..]);
        buf.extend_from_slice(&[b'a'; 100]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(HttpError::HeadTooLarge { limit: 64 })
        );
    }

    #[test]
    fn oversized_head_in_one_piece_is_an_error_too() {
        // At the live bound: a head one byte over it, complete in one piece, and a head of
        // exactly the bound.
        let head = |len: usize| {
            let mut h = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
            h.resize(len - 4, b'a');
            h.extend_from_slice(b"\r\n\r\n");
            h
        };
        let mut dec = RequestDecoder::default();
        let mut buf = BytesMut::from(&head(DEFAULT_MAX_HEAD_BYTES + 1)[..]);
        assert_eq!(
            dec.decode(&mut buf),
            Err(HttpError::HeadTooLarge {
                limit: DEFAULT_MAX_HEAD_BYTES
            })
        );
        let mut buf = BytesMut::from(&head(DEFAULT_MAX_HEAD_BYTES)[..]);
        assert!(
            matches!(dec.decode(&mut buf), Ok(Some(RequestFrame::Head(h))) if h.head_len == DEFAULT_MAX_HEAD_BYTES)
        );
        let mut res = ResponseDecoder::default();
        let mut big = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
        big.resize(DEFAULT_MAX_HEAD_BYTES, b'a');
        big.extend_from_slice(b"\r\n\r\n");
        let mut buf = BytesMut::from(&big[..]);
        assert_eq!(
            res.decode(&mut buf),
            Err(HttpError::HeadTooLarge {
                limit: DEFAULT_MAX_HEAD_BYTES
            })
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(req_frames(&[b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"]).is_err());
        assert!(req_frames(&[
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        ])
        .is_err());
        assert!(req_frames(&[b"\x16\x03\x01\x02\x00"]).is_err());
        assert!(resp_frames(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
            false
        )
        .is_err());
        assert!(resp_frames(
            &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXX"],
            false
        )
        .is_err());
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff_request_line(b"POST /v1/x HTTP/1.1\r\n"), Sniff::Yes);
        assert_eq!(sniff_request_line(b"POS"), Sniff::NeedMore);
        assert_eq!(sniff_request_line(b"POST /v1/x HT"), Sniff::NeedMore);
        assert_eq!(sniff_request_line(b"POST /v1/x HX"), Sniff::No);
        assert_eq!(sniff_request_line(b"{\"a\":1}"), Sniff::No);
        assert_eq!(sniff_request_line(b""), Sniff::NeedMore);
        assert_eq!(sniff_status_line(b"HTTP/1.1 200"), Sniff::Yes);
        assert_eq!(sniff_status_line(b"HTT"), Sniff::NeedMore);
        assert_eq!(sniff_status_line(b"data: x"), Sniff::No);
    }
}
