//! Decoding (and, for recordings and tests, encoding) of the ring-buffer records defined in
//! `strike-common`. Every record starts with an `EventHeader`; its `kind` says which struct
//! follows. Bad records are reported as errors, never trusted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::Bytes;
use strike_common::{
    direction, flag, kind, role, CloseEvent, CloseRangeEvent, EventHeader, OpenEvent, ProcEvent,
    DATA_EVENT_HEADER_LEN, OPEN_PREEXISTING,
};

use crate::conn::{ConnKey, Direction, Role};

/// A decoded kernel record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaptureEvent {
    Data(SocketData),
    Open(SocketOpen),
    Close(SocketClose),
    Fork {
        parent: u32,
        child: u32,
        ts_ns: u64,
    },
    Exit {
        pid: u32,
        ts_ns: u64,
    },
    /// A target process called `execve`: its close-on-exec sockets are closed.
    Exec {
        pid: u32,
        ts_ns: u64,
    },
    /// A target process closed the fds `first..=last` at once (`close_range`).
    CloseRange {
        pid: u32,
        first: u32,
        last: u32,
        ts_ns: u64,
    },
    /// What the session read from `/proc` about a process (userspace only).
    Process(ProcessFact),
}

/// What the live session learnt from `/proc` about a process when it became a target (or
/// appeared on a GPU). Not a kernel record: userspace makes it and hands it to the processor
/// like any other event, so recordings carry it and a replay enriches records exactly as
/// the live session did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcessFact {
    pub pid: u32,
    pub ts_ns: u64,
    /// Its parent, when the parent is a target too.
    pub ppid: Option<u32>,
    /// Its container (64 hex digits), from its cgroup.
    pub container_id: Option<String>,
    /// Its Kubernetes pod UID, from its cgroup.
    pub pod_uid: Option<String>,
    /// Its only listening TCP port (none when it listens on none or several).
    pub listen_port: Option<u16>,
}

/// Bytes moved by one syscall (or one chunk of a large one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketData {
    pub key: ConnKey,
    pub fd: u32,
    pub tid: u32,
    pub ts_ns: u64,
    pub dir: Direction,
    /// Stream offset of `bytes[0]`.
    pub seq: u64,
    /// Bytes the whole syscall moved; 0 with empty `bytes` is end-of-stream.
    pub call_len: u32,
    /// The syscall moved more than the capture cap and this is its last captured chunk.
    pub truncated: bool,
    pub bytes: Bytes,
}

/// A socket that started being tracked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketOpen {
    pub key: ConnKey,
    pub fd: u32,
    pub ts_ns: u64,
    pub role: Role,
    pub peer: Option<SocketAddr>,
    pub comm: String,
    /// Found already open at start (synthesised by userspace, not seen at accept/connect).
    pub preexisting: bool,
}

/// A tracked socket that was closed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketClose {
    pub key: ConnKey,
    pub fd: u32,
    pub ts_ns: u64,
    /// Final stream offsets (ingress, egress); `None` when unknown (eviction, process exit).
    pub final_seq: Option<[u64; 2]>,
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its {need}-byte header")]
    Short { len: usize, need: usize },
    #[error("unknown event kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("data record says {claimed} payload bytes but carries {carried}")]
    BadLength { claimed: usize, carried: usize },
    #[error("process fact has a bad {field}")]
    BadFact { field: &'static str },
}

impl CaptureEvent {
    /// Kernel timestamp of the event.
    pub fn ts_ns(&self) -> u64 {
        match self {
            CaptureEvent::Data(d) => d.ts_ns,
            CaptureEvent::Open(o) => o.ts_ns,
            CaptureEvent::Close(c) => c.ts_ns,
            CaptureEvent::Fork { ts_ns, .. }
            | CaptureEvent::Exit { ts_ns, .. }
            | CaptureEvent::Exec { ts_ns, .. }
            | CaptureEvent::CloseRange { ts_ns, .. } => *ts_ns,
            CaptureEvent::Process(f) => f.ts_ns,
        }
    }

    /// Decodes one ring-buffer record.
    pub fn decode(raw: &[u8]) -> Result<CaptureEvent, DecodeError> {
        let header: EventHeader = read_struct(raw)?;
        let key = ConnKey {
            tgid: header.tgid,
            conn_id: header.conn_id,
        };
        match header.kind {
            kind::DATA => {
                let fixed = raw.get(..DATA_EVENT_HEADER_LEN).ok_or(DecodeError::Short {
                    len: raw.len(),
                    need: DATA_EVENT_HEADER_LEN,
                })?;
                let seq = u64_at(fixed, 32);
                let call_len = u32_at(fixed, 40);
                let len = u32_at(fixed, 44) as usize;
                let dir = if fixed[48] == direction::EGRESS {
                    Direction::Egress
                } else {
                    Direction::Ingress
                };
                let payload = &raw[DATA_EVENT_HEADER_LEN..];
                let bytes = payload.get(..len).ok_or(DecodeError::BadLength {
                    claimed: len,
                    carried: payload.len(),
                })?;
                Ok(CaptureEvent::Data(SocketData {
                    key,
                    fd: header.fd,
                    tid: header.tid,
                    ts_ns: header.ts_ns,
                    dir,
                    seq,
                    call_len,
                    truncated: header.flags & flag::TRUNCATED != 0,
                    bytes: Bytes::copy_from_slice(bytes),
                }))
            }
            kind::OPEN => {
                let open: OpenEvent = read_struct(raw)?;
                Ok(CaptureEvent::Open(SocketOpen {
                    key,
                    fd: header.fd,
                    ts_ns: header.ts_ns,
                    role: match open.role {
                        role::SERVER => Role::Server,
                        role::CLIENT => Role::Client,
                        _ => Role::Unknown,
                    },
                    peer: peer_addr(&open),
                    comm: comm_string(&open.comm),
                    preexisting: open.origin == OPEN_PREEXISTING,
                }))
            }
            kind::CLOSE => {
                let close: CloseEvent = read_struct(raw)?;
                Ok(CaptureEvent::Close(SocketClose {
                    key,
                    fd: header.fd,
                    ts_ns: header.ts_ns,
                    final_seq: (header.flags & FLAG_NO_FINAL_SEQ == 0).then_some(close.seq),
                }))
            }
            kind::FORK => {
                let proc: ProcEvent = read_struct(raw)?;
                Ok(CaptureEvent::Fork {
                    parent: header.tgid,
                    child: proc.pid,
                    ts_ns: header.ts_ns,
                })
            }
            kind::EXIT => {
                let proc: ProcEvent = read_struct(raw)?;
                Ok(CaptureEvent::Exit {
                    pid: proc.pid,
                    ts_ns: header.ts_ns,
                })
            }
            kind::EXEC => {
                let proc: ProcEvent = read_struct(raw)?;
                Ok(CaptureEvent::Exec {
                    pid: proc.pid,
                    ts_ns: header.ts_ns,
                })
            }
            kind::CLOSE_RANGE => {
                let range: CloseRangeEvent = read_struct(raw)?;
                Ok(CaptureEvent::CloseRange {
                    pid: header.tgid,
                    first: header.fd,
                    last: range.last,
                    ts_ns: header.ts_ns,
                })
            }
            KIND_PROCESS_FACT => decode_fact(raw, &header),
            other => Err(DecodeError::UnknownKind { kind: other }),
        }
    }

    /// Encodes the event in the kernel's record layout (for recordings, synthetic events of
    /// userspace, and tests). `decode(encode(e)) == e`.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            CaptureEvent::Data(d) => {
                let mut header = header(kind::DATA, d.key, d.fd, d.ts_ns);
                header.tid = d.tid;
                if d.truncated {
                    header.flags |= flag::TRUNCATED;
                }
                let mut out = Vec::with_capacity(DATA_EVENT_HEADER_LEN + d.bytes.len());
                out.extend_from_slice(as_bytes(&header));
                out.extend_from_slice(&d.seq.to_ne_bytes());
                out.extend_from_slice(&d.call_len.to_ne_bytes());
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "payloads are at most DATA_CHUNK"
                )]
                out.extend_from_slice(&(d.bytes.len() as u32).to_ne_bytes());
                out.push(match d.dir {
                    Direction::Ingress => direction::INGRESS,
                    Direction::Egress => direction::EGRESS,
                });
                out.extend_from_slice(&[0; 7]);
                out.extend_from_slice(&d.bytes);
                out
            }
            CaptureEvent::Open(o) => {
                let mut open = OpenEvent {
                    header: header(kind::OPEN, o.key, o.fd, o.ts_ns),
                    role: match o.role {
                        Role::Server => role::SERVER,
                        Role::Client => role::CLIENT,
                        Role::Unknown => role::UNKNOWN,
                    },
                    ..OpenEvent::default()
                };
                if o.preexisting {
                    open.origin = OPEN_PREEXISTING;
                }
                if let Some(peer) = o.peer {
                    open.port = peer.port();
                    match peer.ip() {
                        IpAddr::V4(ip) => {
                            open.family = AF_INET;
                            open.addr[..4].copy_from_slice(&ip.octets());
                        }
                        IpAddr::V6(ip) => {
                            open.family = AF_INET6;
                            open.addr = ip.octets();
                        }
                    }
                }
                let comm = o.comm.as_bytes();
                let n = comm.len().min(15);
                open.comm[..n].copy_from_slice(&comm[..n]);
                as_bytes(&open).to_vec()
            }
            CaptureEvent::Close(c) => {
                let mut close = CloseEvent {
                    header: header(kind::CLOSE, c.key, c.fd, c.ts_ns),
                    seq: c.final_seq.unwrap_or_default(),
                };
                if c.final_seq.is_none() {
                    close.header.flags |= FLAG_NO_FINAL_SEQ;
                }
                as_bytes(&close).to_vec()
            }
            CaptureEvent::Fork {
                parent,
                child,
                ts_ns,
            } => proc_event(kind::FORK, *parent, *child, *ts_ns),
            CaptureEvent::Exit { pid, ts_ns } => proc_event(kind::EXIT, *pid, *pid, *ts_ns),
            CaptureEvent::Exec { pid, ts_ns } => proc_event(kind::EXEC, *pid, *pid, *ts_ns),
            CaptureEvent::CloseRange {
                pid,
                first,
                last,
                ts_ns,
            } => {
                let key = ConnKey {
                    tgid: *pid,
                    conn_id: 0,
                };
                let range = CloseRangeEvent {
                    header: header(kind::CLOSE_RANGE, key, *first, *ts_ns),
                    last: *last,
                    pad: [0; 4],
                };
                as_bytes(&range).to_vec()
            }
            CaptureEvent::Process(f) => encode_fact(f),
        }
    }
}

/// The kind of a [`ProcessFact`], which the kernel never emits (its kinds are small).
const KIND_PROCESS_FACT: u8 = 0x80;
const _: () = assert!(KIND_PROCESS_FACT > kind::CLOSE_RANGE);

/// A [`ProcessFact`] after its header: ppid (u32, 0 = none), listen port (u16, 0 = none),
/// the lengths of the container id and the pod UID (u8 each), then their bytes.
const FACT_FIXED_LEN: usize = size_of::<EventHeader>() + 8;
/// Longest container id or pod UID a fact carries (both are shorter in practice).
const FACT_MAX_ID: usize = 64;

/// An id's bytes, at most [`FACT_MAX_ID`].
fn fact_id(s: Option<&str>) -> &[u8] {
    s.map_or(&[], |s| &s.as_bytes()[..s.len().min(FACT_MAX_ID)])
}

fn encode_fact(f: &ProcessFact) -> Vec<u8> {
    let key = ConnKey {
        tgid: f.pid,
        conn_id: 0,
    };
    let h = header(KIND_PROCESS_FACT, key, 0, f.ts_ns);
    let (container, pod) = (
        fact_id(f.container_id.as_deref()),
        fact_id(f.pod_uid.as_deref()),
    );
    let mut out = Vec::with_capacity(FACT_FIXED_LEN + container.len() + pod.len());
    out.extend_from_slice(as_bytes(&h));
    out.extend_from_slice(&f.ppid.unwrap_or(0).to_ne_bytes());
    out.extend_from_slice(&f.listen_port.unwrap_or(0).to_ne_bytes());
    #[expect(clippy::cast_possible_truncation, reason = "at most FACT_MAX_ID")]
    out.extend_from_slice(&[container.len() as u8, pod.len() as u8]);
    out.extend_from_slice(container);
    out.extend_from_slice(pod);
    out
}

/// Recordings are input like any other: ids must be short and of the characters cgroup
/// ids use.
fn decode_fact(raw: &[u8], header: &EventHeader) -> Result<CaptureEvent, DecodeError> {
    let fixed = raw.get(..FACT_FIXED_LEN).ok_or(DecodeError::Short {
        len: raw.len(),
        need: FACT_FIXED_LEN,
    })?;
    let at = size_of::<EventHeader>();
    let ppid = u32_at(fixed, at);
    let port = u16::from_ne_bytes([fixed[at + 4], fixed[at + 5]]);
    let (container_len, pod_len) = (usize::from(fixed[at + 6]), usize::from(fixed[at + 7]));
    let rest = &raw[FACT_FIXED_LEN..];
    if rest.len() != container_len + pod_len {
        return Err(DecodeError::BadLength {
            claimed: container_len + pod_len,
            carried: rest.len(),
        });
    }
    let id = |bytes: &[u8], field| -> Result<Option<String>, DecodeError> {
        if bytes.is_empty() {
            return Ok(None);
        }
        if bytes.len() > FACT_MAX_ID
            || !bytes
                .iter()
                .all(|b| b.is_ascii_hexdigit() || *b == b'-' || *b == b'_')
        {
            return Err(DecodeError::BadFact { field });
        }
        Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
    };
    Ok(CaptureEvent::Process(ProcessFact {
        pid: header.tgid,
        ts_ns: header.ts_ns,
        ppid: (ppid != 0).then_some(ppid),
        container_id: id(&rest[..container_len], "container id")?,
        pod_uid: id(&rest[container_len..], "pod UID")?,
        listen_port: (port != 0).then_some(port),
    }))
}

/// Marks a `CloseEvent` synthesised by userspace, whose final offsets are unknown.
const FLAG_NO_FINAL_SEQ: u8 = 1 << 7;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

fn proc_event(kind: u8, tgid: u32, pid: u32, ts_ns: u64) -> Vec<u8> {
    let ev = ProcEvent {
        header: header(kind, ConnKey { tgid, conn_id: 0 }, 0, ts_ns),
        pid,
        pad: [0; 4],
    };
    as_bytes(&ev).to_vec()
}

fn header(kind: u8, key: ConnKey, fd: u32, ts_ns: u64) -> EventHeader {
    EventHeader {
        kind,
        flags: 0,
        pad: [0; 2],
        tgid: key.tgid,
        tid: key.tgid,
        fd,
        ts_ns,
        conn_id: key.conn_id,
    }
}

fn peer_addr(open: &OpenEvent) -> Option<SocketAddr> {
    match open.family {
        AF_INET => {
            let [a, b, c, d, ..] = open.addr;
            Some(SocketAddr::new(Ipv4Addr::new(a, b, c, d).into(), open.port))
        }
        AF_INET6 => Some(SocketAddr::new(Ipv6Addr::from(open.addr).into(), open.port)),
        _ => None,
    }
}

fn comm_string(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn read_struct<T: Copy>(raw: &[u8]) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if raw.len() < need {
        return Err(DecodeError::Short {
            len: raw.len(),
            need,
        });
    }
    // SAFETY: T is one of strike-common's repr(C) plain-old-data types (no invalid bit
    // patterns), and `raw` holds at least size_of::<T>() bytes; read_unaligned has no
    // alignment requirement.
    Ok(unsafe { raw.as_ptr().cast::<T>().read_unaligned() })
}

fn as_bytes<T: Copy>(value: &T) -> &[u8] {
    // SAFETY: strike-common's repr(C) types have explicit padding fields, so every byte is
    // initialised.
    unsafe { std::slice::from_raw_parts(std::ptr::from_ref(value).cast::<u8>(), size_of::<T>()) }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ConnKey {
        ConnKey {
            tgid: 42,
            conn_id: 7,
        }
    }

    #[test]
    fn round_trips_every_kind() {
        let events = [
            CaptureEvent::Data(SocketData {
                key: key(),
                fd: 9,
                tid: 43,
                ts_ns: 1_000,
                dir: Direction::Egress,
                seq: 123,
                call_len: 5,
                truncated: true,
                bytes: Bytes::from_static(b"hello"),
            }),
            CaptureEvent::Open(SocketOpen {
                key: key(),
                fd: 9,
                ts_ns: 5,
                role: Role::Server,
                peer: Some("127.0.0.1:5555".parse().unwrap()),
                comm: "llama-server".into(),
                preexisting: true,
            }),
            CaptureEvent::Open(SocketOpen {
                key: key(),
                fd: 9,
                ts_ns: 5,
                role: Role::Client,
                peer: Some("[::1]:80".parse().unwrap()),
                comm: String::new(),
                preexisting: false,
            }),
            CaptureEvent::Close(SocketClose {
                key: key(),
                fd: 9,
                ts_ns: 6,
                final_seq: Some([1, 2]),
            }),
            CaptureEvent::Close(SocketClose {
                key: key(),
                fd: 9,
                ts_ns: 6,
                final_seq: None,
            }),
            CaptureEvent::Fork {
                parent: 42,
                child: 44,
                ts_ns: 7,
            },
            CaptureEvent::Exit { pid: 44, ts_ns: 8 },
            CaptureEvent::Exec { pid: 45, ts_ns: 9 },
            CaptureEvent::CloseRange {
                pid: 46,
                first: 3,
                last: u32::MAX,
                ts_ns: 10,
            },
            CaptureEvent::Process(ProcessFact {
                pid: 44,
                ts_ns: 9,
                ppid: Some(42),
                container_id: Some("ab".repeat(32)),
                pod_uid: Some("0f3c1a2b-5d6e-4f70-8a9b-0c1d2e3f4a5b".into()),
                listen_port: Some(8000),
            }),
            CaptureEvent::Process(ProcessFact {
                pid: 45,
                ts_ns: 10,
                ..ProcessFact::default()
            }),
        ];
        for ev in events {
            assert_eq!(CaptureEvent::decode(&ev.encode()).unwrap(), ev);
        }
    }

    #[test]
    fn rejects_short_and_inconsistent_records() {
        assert!(matches!(
            CaptureEvent::decode(&[1, 2, 3]),
            Err(DecodeError::Short { .. })
        ));
        let mut raw = CaptureEvent::Exit { pid: 1, ts_ns: 1 }.encode();
        raw[0] = 99;
        assert_eq!(
            CaptureEvent::decode(&raw),
            Err(DecodeError::UnknownKind { kind: 99 })
        );
        let data = CaptureEvent::Data(SocketData {
            key: key(),
            fd: 1,
            tid: 1,
            ts_ns: 1,
            dir: Direction::Ingress,
            seq: 0,
            call_len: 4,
            truncated: false,
            bytes: Bytes::from_static(b"abcd"),
        })
        .encode();
        assert!(matches!(
            CaptureEvent::decode(&data[..data.len() - 1]),
            Err(DecodeError::BadLength {
                claimed: 4,
                carried: 3
            })
        ));
    }

    #[test]
    fn rejects_facts_that_no_cgroup_holds() {
        let fact = |container: &str| {
            CaptureEvent::Process(ProcessFact {
                pid: 1,
                container_id: Some(container.into()),
                ..ProcessFact::default()
            })
            .encode()
        };
        assert_eq!(
            CaptureEvent::decode(&fact("ab\u{1b}[2J")),
            Err(DecodeError::BadFact {
                field: "container id"
            })
        );
        let mut long = fact("abc");
        long.push(b'd');
        assert!(matches!(
            CaptureEvent::decode(&long),
            Err(DecodeError::BadLength { .. })
        ));
        for n in 0..long.len() - 1 {
            assert!(CaptureEvent::decode(&long[..n]).is_err());
        }
    }

    #[test]
    fn decodes_every_prefix_without_panicking() {
        let raw = CaptureEvent::Open(SocketOpen {
            key: key(),
            fd: 3,
            ts_ns: 1,
            role: Role::Server,
            peer: None,
            comm: "x".into(),
            preexisting: false,
        })
        .encode();
        for n in 0..raw.len() {
            assert!(CaptureEvent::decode(&raw[..n]).is_err());
        }
    }
}
