//! Scenario files for tracker tests: a readable list of stream events.
//!
//! ```text
//! # comment
//! config max_body_bytes=100
//! open server conn=1 pid=100 comm=vllm ts=1000 peer=127.0.0.1:5000 [preexisting]
//! in 1000000 "POST /v1/chat/completions HTTP/1.1\r\n"
//!    "Host: x\r\n\r\n"            <- continuation of the previous data line
//! out 2000000 "HTTP/1.1 200 OK\r\n..."
//! gap in 3000000 missing=10
//! eof 4000000
//! close 5000000
//! use 2                          <- later events go to conn 2
//! evict 9000000                  <- RequestTracker::evict_idle(now)
//! ```
//! `in`/`out` are the traced process's ingress (read) and egress (written) bytes. Strings
//! take the escapes `\r \n \t \\ \" \xHH`. Timestamps are monotonic ns.

#![allow(dead_code, reason = "each test binary uses part of this module")]

use bytes::Bytes;
use strike_parse::conn::{ConnInfo, ConnKey, Direction, Role, StreamEvent};
use strike_parse::llm::TrackerConfig;

pub enum Step {
    Event(StreamEvent),
    Evict(u64),
}

pub struct Scenario {
    pub config: TrackerConfig,
    pub steps: Vec<Step>,
}

/// Fixed clock offset of the golden tests: monotonic 0 = 2025-01-01T00:00:00Z.
pub const CLOCK_OFFSET_NS: i64 = 1_735_689_600_000_000_000;

fn unescape(s: &str, line_no: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let e = *bytes
            .get(i + 1)
            .ok_or(format!("line {line_no}: dangling \\"))?;
        i += 2;
        match e {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'\\' => out.push(b'\\'),
            b'"' => out.push(b'"'),
            b'x' => {
                let hex = s.get(i..i + 2).ok_or(format!("line {line_no}: bad \\x"))?;
                out.push(u8::from_str_radix(hex, 16).map_err(|e| format!("line {line_no}: {e}"))?);
                i += 2;
            }
            other => {
                return Err(format!(
                    "line {line_no}: unknown escape \\{}",
                    other as char
                ))
            }
        }
    }
    Ok(out)
}

/// Parses the quoted strings of a data line (concatenated).
fn quoted(rest: &str, line_no: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut chars = rest.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c != '"' {
            return Err(format!(
                "line {line_no}: expected a quoted string at {rest:?}"
            ));
        }
        let start = i + 1;
        let mut end = None;
        let mut escaped = false;
        for (j, c) in chars.by_ref() {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(j);
                break;
            }
        }
        let end = end.ok_or(format!("line {line_no}: unterminated string"))?;
        out.extend(unescape(&rest[start..end], line_no)?);
    }
    Ok(out)
}

fn kv<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    words
        .iter()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

fn num(words: &[&str], key: &str, line_no: usize) -> Result<u64, String> {
    kv(words, key)
        .ok_or(format!("line {line_no}: missing {key}="))?
        .parse()
        .map_err(|e| format!("line {line_no}: {key}: {e}"))
}

#[expect(clippy::too_many_lines, reason = "one match arm per scenario command")]
pub fn parse(text: &str) -> Result<Scenario, String> {
    let mut config = TrackerConfig {
        clock_offset_ns: CLOCK_OFFSET_NS,
        ..TrackerConfig::default()
    };
    let mut steps = Vec::new();
    let mut current = ConnKey {
        tgid: 0,
        conn_id: 0,
    };
    let mut pids = std::collections::HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with(char::is_whitespace) && trimmed.starts_with('"') {
            let more = quoted(trimmed, line_no)?;
            match steps.last_mut() {
                Some(Step::Event(StreamEvent::Data { bytes, .. })) => {
                    let mut v = bytes.to_vec();
                    v.extend(more);
                    *bytes = Bytes::from(v);
                }
                _ => return Err(format!("line {line_no}: continuation without data line")),
            }
            continue;
        }
        let (cmd, rest) = trimmed.split_once(' ').unwrap_or((trimmed, ""));
        let words: Vec<&str> = rest.split_whitespace().collect();
        match cmd {
            "config" => {
                if let Some(v) = kv(&words, "max_body_bytes") {
                    config.max_body_bytes =
                        v.parse().map_err(|e| format!("line {line_no}: {e}"))?;
                }
                if let Some(v) = kv(&words, "max_connections") {
                    config.max_connections =
                        v.parse().map_err(|e| format!("line {line_no}: {e}"))?;
                }
                if let Some(v) = kv(&words, "idle_timeout_ns") {
                    config.idle_timeout_ns =
                        v.parse().map_err(|e| format!("line {line_no}: {e}"))?;
                }
            }
            "open" => {
                let role = match words.first().copied() {
                    Some("server") => Role::Server,
                    Some("client") => Role::Client,
                    Some("unknown") => Role::Unknown,
                    other => return Err(format!("line {line_no}: bad role {other:?}")),
                };
                let conn_id = num(&words, "conn", line_no)?;
                let tgid =
                    u32::try_from(num(&words, "pid", line_no)?).map_err(|e| e.to_string())?;
                current = ConnKey { tgid, conn_id };
                pids.insert(conn_id, tgid);
                steps.push(Step::Event(StreamEvent::Open(ConnInfo {
                    key: current,
                    comm: kv(&words, "comm").unwrap_or("").to_owned(),
                    role,
                    peer: kv(&words, "peer")
                        .map(|p| p.parse().map_err(|e| format!("line {line_no}: {e}")))
                        .transpose()?,
                    opened_ns: num(&words, "ts", line_no)?,
                    preexisting: words.contains(&"preexisting"),
                })));
            }
            "use" => {
                let conn_id: u64 = rest
                    .trim()
                    .parse()
                    .map_err(|e| format!("line {line_no}: {e}"))?;
                current = ConnKey {
                    tgid: pids.get(&conn_id).copied().unwrap_or(0),
                    conn_id,
                };
            }
            "in" | "out" => {
                let (ts, data) = rest
                    .trim()
                    .split_once(' ')
                    .ok_or(format!("line {line_no}: data line needs ts and bytes"))?;
                steps.push(Step::Event(StreamEvent::Data {
                    key: current,
                    dir: if cmd == "in" {
                        Direction::Ingress
                    } else {
                        Direction::Egress
                    },
                    ts_ns: ts.parse().map_err(|e| format!("line {line_no}: {e}"))?,
                    bytes: Bytes::from(quoted(data, line_no)?),
                }));
            }
            "gap" => {
                let dir = match words.first().copied() {
                    Some("in") => Direction::Ingress,
                    Some("out") => Direction::Egress,
                    other => return Err(format!("line {line_no}: bad direction {other:?}")),
                };
                let ts = words
                    .get(1)
                    .ok_or(format!("line {line_no}: gap needs ts"))?;
                steps.push(Step::Event(StreamEvent::Gap {
                    key: current,
                    dir,
                    ts_ns: ts.parse().map_err(|e| format!("line {line_no}: {e}"))?,
                    missing: kv(&words, "missing")
                        .map_or(Ok(0), str::parse)
                        .map_err(|e| format!("line {line_no}: {e}"))?,
                }));
            }
            "eof" | "close" | "evict" => {
                let ts: u64 = rest
                    .trim()
                    .parse()
                    .map_err(|e| format!("line {line_no}: {e}"))?;
                steps.push(match cmd {
                    "eof" => Step::Event(StreamEvent::Eof {
                        key: current,
                        ts_ns: ts,
                    }),
                    "close" => Step::Event(StreamEvent::Close {
                        key: current,
                        ts_ns: ts,
                    }),
                    _ => Step::Evict(ts),
                });
            }
            other => return Err(format!("line {line_no}: unknown command {other:?}")),
        }
    }
    Ok(Scenario { config, steps })
}
