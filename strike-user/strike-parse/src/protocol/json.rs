//! A JSON body of any size, read as it arrives in bounded memory.
//!
//! [`BoundedJson`] takes a body's bytes chunk by chunk and keeps a compact copy of it (no
//! whitespace) for the parsers above to read with `serde_json`. While the copy is under its
//! budget it is the body. Past the budget, what would make it grow without bound is elided:
//! the rest of each string after a short prefix, every further array item, and the members
//! of objects more than four levels down. The members of the objects above are still kept,
//! so the fields a body ends with (a response's `usage`, a choice's `finish_reason`) are
//! read after megabytes of prompt or text. The caller names the paths whose text it measures
//! ([`TextPaths`]); the bytes and numbers elided on them are counted ([`Elided`]), so what is
//! measured on the copy plus what was elided is what the body held.
//!
//! A copy that reaches its hard cap anyway (members without end, a giant key) or nests
//! deeper than [`MAX_DEPTH`] gives up: [`JsonError::OverLimit`]. Input that is not JSON
//! stops the reading at the first byte that shows it: [`JsonError::Malformed`].
//!
//! No crate does this: push parsers (actson) buffer each string whole, and `serde_json`'s
//! reader needs the whole value. The scanner here is a lexer only; every value it keeps is
//! parsed by `serde_json`.

/// Deepest nesting read (`serde_json`'s own recursion limit is 128).
pub const MAX_DEPTH: usize = 64;
/// Bytes of each string kept past the budget, so a text still shows it is not empty.
const MIN_KEEP: usize = 16;
/// Longest number or literal (`true`, `-1.5e-7`, …).
const MAX_TOKEN: usize = 64;
/// Objects past the budget whose members are still kept: those this many levels down at
/// most (the document's is 1).
const KEEP_DEPTH: usize = 4;
/// Longest key kept for [`TextPaths`] (longer keys match nothing).
const MAX_KEY: usize = 32;
/// The length of a key that matches nothing.
const LONG_KEY: u8 = u8::MAX;

/// Which elided text and numbers count: those at a path the caller measures.
pub trait TextPaths {
    /// Whether a string (or a number, as a token id) at `path` is text the caller measures.
    fn is_text(&self, path: &[Frame]) -> bool;
}

/// One level of the path to a value: the member of an object or the item of an array
/// being read.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    array: bool,
    key: [u8; MAX_KEY],
    /// [`LONG_KEY`]: longer, or escaped (matches nothing).
    key_len: u8,
    /// Members or items written to the copy.
    written: u32,
    /// Items seen (the current one's index + 1).
    seen: u32,
}

/// A [`Frame`] as a step of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    /// The member with this (raw, unescaped) name.
    Key(&'a [u8]),
    /// A member whose name is too long or escaped.
    OtherKey,
    /// An array's item, by index.
    Index(u32),
}

impl Frame {
    fn new(array: bool) -> Self {
        Self {
            array,
            key: [0; MAX_KEY],
            key_len: 0,
            written: 0,
            seen: 0,
        }
    }

    /// This level as a step of the path.
    #[must_use]
    pub fn seg(&self) -> Seg<'_> {
        if self.array {
            Seg::Index(self.seen.saturating_sub(1))
        } else if self.key_len == LONG_KEY {
            Seg::OtherKey
        } else {
            Seg::Key(&self.key[..usize::from(self.key_len)])
        }
    }

    fn push_key(&mut self, bytes: &[u8]) {
        if self.key_len == LONG_KEY {
            return;
        }
        let len = usize::from(self.key_len);
        match u8::try_from(len + bytes.len()) {
            Ok(end) if usize::from(end) <= MAX_KEY => {
                self.key[len..usize::from(end)].copy_from_slice(bytes);
                self.key_len = end;
            }
            _ => self.key_len = LONG_KEY,
        }
    }
}

/// What was left out of the copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Elided {
    /// Decoded bytes of strings at a measured path ([`TextPaths`]).
    pub text_bytes: u64,
    /// Numbers at a measured path (token ids).
    pub numbers: u64,
    /// Decoded bytes of strings anywhere.
    pub string_bytes: u64,
    /// Array items and (deep) object members left out whole.
    pub items: u64,
}

impl Elided {
    /// Whether anything was left out.
    #[must_use]
    pub fn any(&self) -> bool {
        self.string_bytes > 0 || self.items > 0
    }
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// The copy reached its hard cap, the body nests deeper than [`MAX_DEPTH`], or a
    /// number is longer than 64 bytes.
    #[error("JSON body over its bounds")]
    OverLimit,
    /// Not JSON (or a body cut short).
    #[error("not a JSON document")]
    Malformed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value is expected: at the top, after `:`, after `,` in an array.
    Value,
    /// After `[`: an item or `]`.
    FirstItem,
    /// After `{`: a key or `}`.
    FirstKey,
    /// After `,` in an object.
    Key,
    Colon,
    /// After a value: `,` or the end of its container.
    After,
    Str {
        key: bool,
    },
    Escape {
        key: bool,
    },
    Token,
    Done,
}

/// A JSON document read chunk by chunk into a bounded compact copy.
#[derive(Debug)]
pub struct BoundedJson<P> {
    paths: P,
    budget: usize,
    hard: usize,
    out: Vec<u8>,
    stack: Vec<Frame>,
    state: State,
    /// The depth of the array item being left out, while one is.
    skip: Option<usize>,
    token: [u8; MAX_TOKEN],
    token_len: usize,
    escape: [u8; 6],
    escape_len: usize,
    /// The string being read is still written to the copy.
    str_keep: bool,
    /// Bytes of it written.
    str_kept: usize,
    /// Whether its elided bytes count (asked once per string).
    str_text: Option<bool>,
    /// Continuation bytes the last character written still needs.
    utf8_need: usize,
    elided: Elided,
    failed: Option<JsonError>,
}

impl<P> BoundedJson<P> {
    /// Bytes allocated for the copy and the nesting stack (capacity, not length).
    pub fn buffered_bytes(&self) -> usize {
        self.out.capacity() + self.stack.capacity() * size_of::<Frame>()
    }
}

impl<P: TextPaths> BoundedJson<P> {
    /// A reader whose copy is kept whole up to `budget` bytes and never grows past
    /// `budget` and a quarter of it (64 KiB at least).
    pub fn new(paths: P, budget: usize) -> Self {
        Self {
            paths,
            budget,
            hard: budget.saturating_add((budget / 4).max(64 * 1024)),
            out: Vec::new(),
            stack: Vec::new(),
            state: State::Value,
            skip: None,
            token: [0; MAX_TOKEN],
            token_len: 0,
            escape: [0; 6],
            escape_len: 0,
            str_keep: true,
            str_kept: 0,
            str_text: None,
            utf8_need: 0,
            elided: Elided::default(),
            failed: None,
        }
    }

    /// The error that stopped the reading, if one did.
    #[must_use]
    pub fn failed(&self) -> Option<JsonError> {
        self.failed
    }

    /// Reads the next bytes of the body. After an error it does nothing.
    pub fn feed(&mut self, data: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if let Err(e) = self.lex(data) {
            self.fail(e);
        } else if self.out.len() > self.hard {
            self.fail(JsonError::OverLimit);
        }
    }

    /// The end of the body: the compact copy and what was left out of it.
    ///
    /// # Errors
    /// The error that stopped the reading, or [`JsonError::Malformed`] for a body that
    /// ends before its document does.
    pub fn finish(&mut self) -> Result<(&[u8], Elided), JsonError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.state == State::Token {
            if let Err(e) = self.end_token() {
                self.fail(e);
                return Err(e);
            }
        }
        if self.state != State::Done {
            self.fail(JsonError::Malformed);
            return Err(JsonError::Malformed);
        }
        Ok((&self.out, self.elided))
    }

    fn fail(&mut self, e: JsonError) {
        self.failed = Some(e);
        self.out = Vec::new();
        self.stack = Vec::new();
    }

    fn writing(&self) -> bool {
        self.skip.is_none()
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.writing() {
            self.out.extend_from_slice(bytes);
        }
    }

    fn lex(&mut self, data: &[u8]) -> Result<(), JsonError> {
        let mut i = 0;
        while i < data.len() {
            match self.state {
                State::Str { key } => {
                    i = self.string_run(data, i, key);
                    continue;
                }
                State::Escape { key } => {
                    self.escape_byte(data[i], key)?;
                }
                State::Token => {
                    let b = data[i];
                    if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.') {
                        if self.token_len == MAX_TOKEN {
                            // Valid JSON may hold longer numbers: over a bound, not malformed.
                            return Err(JsonError::OverLimit);
                        }
                        self.token[self.token_len] = b;
                        self.token_len += 1;
                    } else {
                        self.end_token()?;
                        continue; // the delimiter is read in the state after the value
                    }
                }
                _ => self.structural(data[i])?,
            }
            i += 1;
        }
        Ok(())
    }

    fn structural(&mut self, b: u8) -> Result<(), JsonError> {
        if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            return Ok(());
        }
        match (self.state, b) {
            (State::Value | State::FirstItem, b'{' | b'[') => {
                self.begin_value();
                if self.stack.len() == MAX_DEPTH {
                    return Err(JsonError::OverLimit);
                }
                self.write(&[b]);
                let array = b == b'[';
                self.stack.push(Frame::new(array));
                self.state = if array {
                    State::FirstItem
                } else {
                    State::FirstKey
                };
            }
            (State::Value | State::FirstItem, b'"') => {
                self.begin_value();
                self.write(b"\"");
                self.str_keep = true;
                self.str_kept = 0;
                self.str_text = None;
                self.utf8_need = 0;
                self.state = State::Str { key: false };
            }
            (State::Value | State::FirstItem, b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                self.begin_value();
                self.token[0] = b;
                self.token_len = 1;
                self.state = State::Token;
            }
            (State::FirstKey | State::Key, b'"') => {
                if self.out.len() > self.hard {
                    return Err(JsonError::OverLimit);
                }
                if self.writing() && self.out.len() >= self.budget && !self.shallow() {
                    self.skip = Some(self.stack.len());
                    self.elided.items = self.elided.items.saturating_add(1);
                }
                let writing = self.writing();
                let Some(frame) = self.stack.last_mut() else {
                    return Err(JsonError::Malformed);
                };
                frame.key_len = 0;
                if writing {
                    let comma = frame.written > 0;
                    frame.written = frame.written.saturating_add(1);
                    if comma {
                        self.out.push(b',');
                    }
                    self.out.push(b'"');
                }
                self.state = State::Str { key: true };
            }
            (State::Colon, b':') => {
                self.write(b":");
                self.state = State::Value;
            }
            (State::After, b',') => {
                self.state = match self.stack.last() {
                    Some(f) if f.array => State::Value,
                    Some(_) => State::Key,
                    None => return Err(JsonError::Malformed),
                };
            }
            (State::After | State::FirstKey, b'}') | (State::After | State::FirstItem, b']') => {
                let array = b == b']';
                match self.stack.last() {
                    Some(f) if f.array == array => {}
                    _ => return Err(JsonError::Malformed),
                }
                self.write(&[b]);
                self.stack.pop();
                self.value_end();
            }
            _ => return Err(JsonError::Malformed),
        }
        Ok(())
    }

    /// Whether the object being read is at most [`KEEP_DEPTH`] levels down: past the budget
    /// only their members are still kept (`usage.prompt_tokens_details.cached_tokens`,
    /// `choices[0].finish_reason`, `choices[0].message.content`).
    fn shallow(&self) -> bool {
        self.stack.len() <= KEEP_DEPTH
    }

    /// A value starts: an array's item past the budget is left out whole.
    fn begin_value(&mut self) {
        let over = self.out.len() >= self.budget;
        let writing = self.writing();
        let depth = self.stack.len();
        let Some(frame) = self.stack.last_mut() else {
            return;
        };
        if !frame.array {
            return;
        }
        frame.seen = frame.seen.saturating_add(1);
        if !writing {
            return;
        }
        if over {
            self.skip = Some(depth);
            self.elided.items = self.elided.items.saturating_add(1);
            return;
        }
        let comma = frame.written > 0;
        frame.written = frame.written.saturating_add(1);
        if comma {
            self.out.push(b',');
        }
    }

    /// A value ended (the stack is back at its parent).
    fn value_end(&mut self) {
        if self.skip == Some(self.stack.len()) {
            self.skip = None;
        }
        self.state = if self.stack.is_empty() {
            State::Done
        } else {
            State::After
        };
    }

    fn end_token(&mut self) -> Result<(), JsonError> {
        let token = &self.token[..self.token_len];
        let valid = match token[0] {
            b't' => token == b"true",
            b'f' => token == b"false",
            b'n' => token == b"null",
            _ => true, // a number: serde_json checks the ones kept
        };
        if !valid {
            return Err(JsonError::Malformed);
        }
        if self.writing() {
            self.out.extend_from_slice(&self.token[..self.token_len]);
        } else if matches!(self.token[0], b'-' | b'0'..=b'9') && self.paths.is_text(&self.stack) {
            self.elided.numbers = self.elided.numbers.saturating_add(1);
        }
        self.value_end();
        Ok(())
    }

    /// Reads string bytes up to the next quote or escape; returns where it stopped.
    fn string_run(&mut self, data: &[u8], i: usize, key: bool) -> usize {
        let rest = &data[i..];
        let end = memchr::memchr2(b'"', b'\\', rest).unwrap_or(rest.len());
        let run = &rest[..end];
        if key {
            self.write(run);
            if let Some(frame) = self.stack.last_mut() {
                frame.push_key(run);
            }
        } else if !run.is_empty() {
            self.text_run(run);
        }
        let Some(&stop) = rest.get(end) else {
            return data.len();
        };
        if stop == b'\\' {
            self.escape[0] = b'\\';
            self.escape_len = 1;
            self.state = State::Escape { key };
        } else if key {
            self.write(b"\"");
            self.state = State::Colon;
        } else {
            self.write(b"\"");
            self.value_end();
        }
        i + end + 1
    }

    /// Bytes of a string value with no quote or escape in them.
    fn text_run(&mut self, run: &[u8]) {
        if !self.writing() || !self.str_keep {
            self.elide_text(run.len());
            return;
        }
        let room = self
            .budget
            .saturating_sub(self.out.len())
            .max(MIN_KEEP.saturating_sub(self.str_kept));
        let keep = if run.len() <= room {
            run.len()
        } else {
            // Cut at a character's start, after what the last one written still needs.
            let mut cut = room;
            while cut > 0 && (run[cut] & 0xC0) == 0x80 {
                cut -= 1;
            }
            cut.max(self.utf8_need.min(run.len()))
        };
        self.out.extend_from_slice(&run[..keep]);
        self.str_kept += keep;
        self.utf8_need = if self.utf8_need >= keep {
            self.utf8_need - keep
        } else {
            utf8_tail_need(&run[..keep])
        };
        if keep < run.len() {
            self.str_keep = false;
            self.elide_text(run.len() - keep);
        }
    }

    fn elide_text(&mut self, decoded: usize) {
        let n = decoded as u64;
        self.elided.string_bytes = self.elided.string_bytes.saturating_add(n);
        let text = *self
            .str_text
            .get_or_insert_with(|| self.paths.is_text(&self.stack));
        if text {
            self.elided.text_bytes = self.elided.text_bytes.saturating_add(n);
        }
    }

    fn escape_byte(&mut self, b: u8, key: bool) -> Result<(), JsonError> {
        self.escape[self.escape_len] = b;
        self.escape_len += 1;
        let decoded = match (self.escape[1], self.escape_len) {
            (b'u', 6) => {
                let hex =
                    std::str::from_utf8(&self.escape[2..6]).map_err(|_| JsonError::Malformed)?;
                let cp = u32::from_str_radix(hex, 16).map_err(|_| JsonError::Malformed)?;
                match cp {
                    0..=0x7F => 1,
                    0x80..=0x7FF => 2,
                    0xD800..=0xDBFF => 4, // the pair's UTF-8 bytes; its low half counts 0
                    0xDC00..=0xDFFF => 0,
                    _ => 3,
                }
            }
            (b'u', _) => return Ok(()),
            (b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't', 2) => 1,
            _ => return Err(JsonError::Malformed),
        };
        let unit = self.escape;
        let unit = &unit[..self.escape_len];
        if key {
            self.write(unit);
            if let Some(frame) = self.stack.last_mut() {
                frame.key_len = LONG_KEY;
            }
        } else if self.writing()
            && self.str_keep
            && (self.out.len() < self.budget || self.str_kept < MIN_KEEP)
        {
            self.out.extend_from_slice(unit);
            self.str_kept += unit.len();
        } else {
            self.str_keep = false;
            self.elide_text(decoded);
        }
        self.state = State::Str { key };
        Ok(())
    }
}

/// Continuation bytes still missing from the last character of `bytes`.
fn utf8_tail_need(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(4) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let len: usize = match b {
            0xF0.. => 4,
            0xE0.. => 3,
            0xC0.. => 2,
            _ => 1,
        };
        return len.saturating_sub(back);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Measures every string and number under a top-level `text` (at any depth).
    struct UnderText;
    impl TextPaths for UnderText {
        fn is_text(&self, path: &[Frame]) -> bool {
            path.first().map(Frame::seg) == Some(Seg::Key(b"text"))
        }
    }

    fn read(body: &[u8], budget: usize, chunk: usize) -> Result<(Value, Elided), JsonError> {
        let mut j = BoundedJson::new(UnderText, budget);
        for c in body.chunks(chunk.max(1)) {
            j.feed(c);
        }
        let (out, elided) = j.finish()?;
        let v = serde_json::from_slice(out).expect("the copy is JSON");
        Ok((v, elided))
    }

    /// Decoded bytes of the strings and count of numbers under `text`.
    fn measure(v: &Value) -> (u64, u64) {
        fn walk(v: &Value, acc: &mut (u64, u64)) {
            match v {
                Value::String(s) => acc.0 += s.len() as u64,
                Value::Number(_) => acc.1 += 1,
                Value::Array(a) => a.iter().for_each(|x| walk(x, acc)),
                Value::Object(m) => m.values().for_each(|x| walk(x, acc)),
                _ => {}
            }
        }
        let mut acc = (0, 0);
        if let Some(t) = v.get("text") {
            walk(t, &mut acc);
        }
        acc
    }

    #[test]
    fn under_budget_the_copy_is_the_body() {
        let body = br#" { "a" : [1, 2.5e-3, true, false, null, "x\"\u00e9\ud83d\ude00y"], "b": {}, "c": [] } "#;
        for chunk in [1, 2, 3, 7, 1000] {
            let (v, elided) = read(body, 1 << 20, chunk).unwrap();
            assert_eq!(
                v,
                serde_json::from_slice::<Value>(body).unwrap(),
                "chunk {chunk}"
            );
            assert_eq!(elided, Elided::default());
        }
    }

    #[test]
    fn a_huge_string_is_elided_and_counted_and_the_tail_kept() {
        let big = "héllo wörld ".repeat(100_000); // multi-byte characters across every cut
        let body = serde_json::json!({"model": "m", "text": [big, {"more": "é\n".repeat(5000)}], "usage": {"prompt_tokens": 7}});
        let body = serde_json::to_vec(&body).unwrap();
        let full = measure(&serde_json::from_slice(&body).unwrap());
        for chunk in [1, 3, 4096, body.len()] {
            let (v, elided) = read(&body, 4096, chunk).unwrap();
            assert_eq!(v["model"], "m");
            assert_eq!(v["usage"]["prompt_tokens"], 7, "chunk {chunk}");
            let kept = measure(&v);
            assert_eq!(kept.0 + elided.text_bytes, full.0, "chunk {chunk}");
            assert!(elided.any());
        }
    }

    #[test]
    fn array_items_past_the_budget_are_counted_whole() {
        let ids: Vec<u32> = (0..200_000).collect();
        let body = serde_json::to_vec(&serde_json::json!({
            "text": ids, "other": ["x".repeat(50_000), [1, 2, 3]], "n": 2
        }))
        .unwrap();
        let (v, elided) = read(&body, 8192, 777).unwrap();
        let kept = measure(&v);
        assert_eq!(kept.1 + elided.numbers, 200_000);
        assert_eq!(v["n"], 2);
        assert!(elided.items > 0);
    }

    #[test]
    fn bounds_hold_for_members_without_end_and_deep_nesting() {
        let mut body = b"{".to_vec();
        for i in 0..100_000 {
            body.extend_from_slice(format!("\"k{i}\":1,").as_bytes());
        }
        body.extend_from_slice(b"\"z\":1}");
        assert_eq!(read(&body, 4096, 1000).unwrap_err(), JsonError::OverLimit);
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            read(deep.as_bytes(), 4096, 10).unwrap_err(),
            JsonError::OverLimit
        );
    }

    #[test]
    fn malformed_bodies_are_malformed() {
        for body in [
            &b""[..],
            b"<html>",
            b"{\"a\":1",
            b"{\"a\" 1}",
            b"[1,]",
            b"{\"a\":1}}",
            b"{\"a\":tru}",
            b"\"\\x\"",
            b"\"\\u12g4\"",
            b"{1:2}",
            b"[}",
        ] {
            assert_eq!(
                read(body, 4096, 1).unwrap_err(),
                JsonError::Malformed,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // Top-level scalars are documents.
        assert_eq!(read(b" 42 ", 4096, 1).unwrap().0, serde_json::json!(42));
        assert_eq!(read(b"\"s\"", 4096, 1).unwrap().0, serde_json::json!("s"));
    }

    #[test]
    fn elided_escapes_count_their_decoded_bytes() {
        let s = "a\u{e9}\u{1F600}\n\"".repeat(3000);
        let body = serde_json::to_vec(&serde_json::json!({ "text": s })).unwrap();
        let (v, elided) = read(&body, 64, 5).unwrap();
        assert_eq!(measure(&v).0 + elided.text_bytes, s.len() as u64);
    }

    /// A seeded random document: nested objects and arrays, long strings with escapes and
    /// multi-byte characters, numbers.
    fn random_doc(seed: &mut u64, depth: u32) -> Value {
        fn next(seed: &mut u64) -> u64 {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        }
        let pick = next(seed) % if depth > 3 { 3 } else { 6 };
        match pick {
            0 => Value::from(next(seed) % 100_000),
            1 => {
                let unit = ["a", "é", "\u{1F600}", "\n", "\"", "\\", "\u{1}", "xyz "]
                    [(next(seed) % 8) as usize];
                Value::from(unit.repeat((next(seed) % 1000) as usize))
            }
            2 => Value::from(next(seed).is_multiple_of(2)),
            3 | 4 => {
                let n = next(seed) % if depth == 0 { 40 } else { 6 };
                let mut m = serde_json::Map::new();
                for i in 0..n {
                    let key = ["text", "content", "k", "usage"][(next(seed) % 4) as usize];
                    m.insert(format!("{key}{i}"), random_doc(seed, depth + 1));
                }
                if next(seed).is_multiple_of(3) {
                    m.insert("text".into(), random_doc(seed, depth + 1));
                }
                Value::Object(m)
            }
            _ => {
                let n = next(seed) % if depth == 0 { 60 } else { 8 };
                Value::Array((0..n).map(|_| random_doc(seed, depth + 1)).collect())
            }
        }
    }

    #[test]
    fn random_documents_keep_every_top_level_member_and_add_up() {
        let mut seed = 0x5eed_u64;
        for round in 0..300 {
            let mut doc = random_doc(&mut seed, 0);
            if !doc.is_object() {
                doc = serde_json::json!({ "text": doc, "tail": 1 });
            }
            let body = serde_json::to_vec_pretty(&doc).unwrap();
            let full = measure(&doc);
            let budget = [64, 1000, 5000, 1 << 30][round % 4];
            let chunk = [1, 5, 64, 4096][(round / 4) % 4];
            let (v, elided) = read(&body, budget, chunk).unwrap();
            let kept = measure(&v);
            assert_eq!(kept.0 + elided.text_bytes, full.0, "round {round}");
            assert_eq!(kept.1 + elided.numbers, full.1, "round {round}");
            let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
            assert_eq!(keys(&v), keys(&doc), "round {round}");
            if budget == 1 << 30 {
                assert_eq!(v, doc, "round {round}");
                assert!(!elided.any());
            }
        }
    }
}
