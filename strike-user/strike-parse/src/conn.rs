//! Connection identity and the ordered stream events that the `stream` stage hands to the
//! `protocol`/`llm` stages: the contract between reassembly and parsing.
//!
//! Guarantees for one [`ConnKey`]: [`StreamEvent::Open`] comes first, then `Data` and `Gap`
//! events in stream order for each direction (the two directions interleave in kernel time
//! order), then at most one [`StreamEvent::Close`] or [`StreamEvent::Evicted`]. Timestamps are kernel `CLOCK_MONOTONIC`
//! nanoseconds taken at the exit of the syscall that moved the bytes.

use std::net::SocketAddr;

use bytes::Bytes;

/// Identifies one connection for the whole session, even when its fd number is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    /// Process (thread group) that owns the socket.
    pub tgid: u32,
    /// Session-unique connection id (assigned in the kernel at accept/connect, or by
    /// userspace for sockets already open at start).
    pub conn_id: u64,
}

/// Which end of the connection the traced process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It accepted the connection: requests are ingress bytes, responses egress.
    Server,
    /// It connected out: requests are egress bytes, responses ingress.
    Client,
    /// Not known (a socket already open at start that could not be classified): the
    /// parser decides from the first bytes.
    Unknown,
}

/// Direction of bytes, seen from the traced process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Read by the traced process.
    Ingress,
    /// Written by the traced process.
    Egress,
}

/// What is known about a connection when it starts being tracked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    pub key: ConnKey,
    /// `comm` of the owning process.
    pub comm: String,
    pub role: Role,
    /// The other end, when known.
    pub peer: Option<SocketAddr>,
    /// Kernel monotonic time the connection was accepted/connected (or found, if it was
    /// already open).
    pub opened_ns: u64,
    /// The socket was already open when capture started: its first captured bytes may be
    /// in the middle of a request or response.
    pub preexisting: bool,
}

/// One step of a connection's life, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    Open(ConnInfo),
    /// Contiguous bytes, following the previous `Data`/`Gap` of the same direction.
    Data {
        key: ConnKey,
        dir: Direction,
        ts_ns: u64,
        bytes: Bytes,
    },
    /// Bytes that were moved on the wire but not captured (ring buffer full, truncated by
    /// the capture cap, lost in reordering). `missing` is their count when known, else 0.
    Gap {
        key: ConnKey,
        dir: Direction,
        ts_ns: u64,
        missing: u64,
    },
    /// A read returned end-of-stream: the peer shut down its sending side (for a server,
    /// usually a client that disconnected). Always `Direction::Ingress`.
    Eof {
        key: ConnKey,
        ts_ns: u64,
    },
    /// The socket was closed (or its process exited).
    Close {
        key: ConnKey,
        ts_ns: u64,
    },
    /// The stream stage gave up on the connection before it closed: what was in flight on
    /// it ends here, for `reason`.
    Evicted {
        key: ConnKey,
        ts_ns: u64,
        reason: Eviction,
    },
}

/// Why a stage gave up on a connection that had not closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    /// No event for longer than the idle timeout.
    Idle,
    /// The table was full: the least recently active connection made room.
    Full,
    /// The stage's buffers were over their byte budget: the least recently active
    /// connections were let go until they were under it.
    MemoryBudget,
}

impl StreamEvent {
    /// The connection this event belongs to.
    pub fn key(&self) -> ConnKey {
        match self {
            StreamEvent::Open(info) => info.key,
            StreamEvent::Data { key, .. }
            | StreamEvent::Gap { key, .. }
            | StreamEvent::Eof { key, .. }
            | StreamEvent::Close { key, .. }
            | StreamEvent::Evicted { key, .. } => *key,
        }
    }
}
