//! Stream stage: turns capture events into each connection's ordered byte streams.
//!
//! Every data event carries its offset in the connection's stream (`seq`), so this stage
//! knows exactly which bytes it has: in-order bytes pass straight through, a short reorder
//! window absorbs events that arrive out of order (concurrent writers on one socket), and
//! anything never delivered (ring buffer full, capture cap, lost reorder) becomes an explicit
//! [`StreamEvent::Gap`] with its size. Connections are bounded in number, in the bytes their
//! reorder windows hold all together ([`StreamConfig::max_buffered_bytes`]) and in idle
//! time; past any bound the least recently active connection is evicted
//! ([`StreamEvent::Evicted`]), found in O(log N), and every eviction and gap is counted.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use bytes::Bytes;
use serde::Serialize;

use crate::{
    conn::{ConnInfo, ConnKey, Direction, Eviction, Role, StreamEvent},
    event::{CaptureEvent, SocketClose, SocketData, SocketOpen},
    lru::LruTable,
};

/// Limits of the stream stage.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Connections tracked at once; the least recently active one is evicted beyond it.
    pub max_connections: usize,
    /// Out-of-order segments held per direction before the missing bytes are declared lost.
    pub max_pending_segments: usize,
    /// Kernel-time window for an out-of-order segment to be filled in.
    pub reorder_window_ns: u64,
    /// A connection with no event for this long is evicted.
    pub idle_timeout_ns: u64,
    /// Bytes all connections together may hold (out-of-order segments and each
    /// connection's own state); past it the least recently active connections are evicted
    /// until the stage is under it again (`budget_evictions`). Bytes out of order are
    /// rare and short-lived: 64 MiB is far above what reordering needs, and bounds what
    /// 16 384 connections × 2 directions × 64 segments of up to 256 KiB could otherwise hold.
    pub max_buffered_bytes: usize,
}

/// Default [`StreamConfig::max_buffered_bytes`]: 64 MiB.
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 64 << 20;

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            max_connections: 16_384,
            max_pending_segments: 64,
            reorder_window_ns: 50_000_000,
            idle_timeout_ns: 600_000_000_000,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

/// Counters of the stream stage.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct StreamStats {
    pub connections_opened: u64,
    pub connections_closed: u64,
    /// Connections whose data arrived without an open event (opened before capture, or the
    /// open event was lost).
    pub connections_without_open: u64,
    /// Connections evicted, for any reason (idle, over `max_connections`, over the budget).
    pub connections_evicted: u64,
    /// Of `connections_evicted`, those evicted to get back under `max_buffered_bytes`.
    pub budget_evictions: u64,
    /// Bytes the stage's connections hold now (a gauge, not a counter).
    pub buffered_bytes: u64,
    pub data_events: u64,
    pub bytes: u64,
    pub gaps: u64,
    pub gap_bytes: u64,
    /// Syscalls whose payload exceeded the capture cap.
    pub truncated_calls: u64,
    pub reordered_segments: u64,
    pub duplicate_bytes: u64,
    /// Bytes of connections given up on (not HTTP, upgraded) that still arrived: the
    /// kernel stops copying them once it is told, so these are the ones already on their way.
    pub ignored_bytes: u64,
    /// Bytes of connections the session ended itself (`close_range`, `execve`, a process
    /// released) that the kernel copied before it was told: dropped, so a file that took
    /// the socket's fd number is never read as the connection.
    pub bytes_after_close: u64,
}

#[derive(Default)]
struct DirState {
    /// Next expected stream offset; `None` until the first byte (a preexisting or unknown
    /// connection starts wherever capture found it).
    next: Option<u64>,
    pending: BTreeMap<u64, (u64, Bytes)>,
}

/// What one held segment costs beside its bytes: its node in the map, its `Bytes` handle.
const SEGMENT_OVERHEAD: usize = 64;

impl DirState {
    /// Bytes the reorder window holds.
    fn buffered_bytes(&self) -> usize {
        self.pending
            .values()
            .map(|(_, b)| b.len() + SEGMENT_OVERHEAD)
            .sum()
    }
}

struct Conn {
    dirs: [DirState; 2],
    /// Given up on ([`Reassembler::ignore`]): its bytes are dropped, and what the kernel
    /// no longer sends is not a gap.
    ignored: bool,
}

impl Conn {
    /// Bytes this connection holds: its state and its reorder windows (at most
    /// `max_pending_segments` each, so this is a short sum).
    fn buffered_bytes(&self) -> usize {
        size_of::<Self>()
            + self
                .dirs
                .iter()
                .map(DirState::buffered_bytes)
                .sum::<usize>()
    }
}

/// How a connection ends in this stage.
#[derive(Clone, Copy)]
enum End {
    Closed,
    Evicted(Eviction),
}

/// Connections ended by the session remembered at most (their late bytes are dropped).
const MAX_ENDED: usize = 16_384;

/// Reassembles capture events into ordered per-connection stream events.
pub struct Reassembler {
    config: StreamConfig,
    conns: LruTable<Conn>,
    /// Connections that may hold out-of-order segments (a superset): what `tick` visits.
    reordering: BTreeSet<ConnKey>,
    /// Connections the session ended with a close of its own (no final offsets): connection
    /// ids are never reused, so any byte of theirs that still comes is late. Oldest first,
    /// at most [`MAX_ENDED`].
    ended: HashSet<ConnKey>,
    ended_order: VecDeque<ConnKey>,
    stats: StreamStats,
    /// Largest kernel timestamp seen: the stage's clock.
    now_ns: u64,
    /// Bytes past the capture cap in one syscall are lost; the kernel sets `truncated` on
    /// the last chunk it sent, and the rest of the call is a gap of `call_len - cap`.
    max_capture: u64,
}

fn idx(dir: Direction) -> usize {
    match dir {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

const DIRS: [Direction; 2] = [Direction::Ingress, Direction::Egress];

impl Reassembler {
    pub fn new(config: StreamConfig, max_capture_bytes: u32) -> Self {
        Reassembler {
            config,
            conns: LruTable::default(),
            reordering: BTreeSet::new(),
            ended: HashSet::new(),
            ended_order: VecDeque::new(),
            stats: StreamStats::default(),
            now_ns: 0,
            max_capture: u64::from(max_capture_bytes),
        }
    }

    pub fn stats(&self) -> StreamStats {
        StreamStats {
            buffered_bytes: self.conns.buffered_bytes() as u64,
            ..self.stats
        }
    }

    /// Connections tracked now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Bytes all connections hold now.
    pub fn buffered_bytes(&self) -> usize {
        self.conns.buffered_bytes()
    }

    /// Feeds one capture event. Process events (fork, exit, facts) are not stream events and
    /// are ignored here; the pipeline handles them.
    pub fn handle(&mut self, event: CaptureEvent, out: &mut Vec<StreamEvent>) {
        self.now_ns = self.now_ns.max(event.ts_ns());
        match event {
            CaptureEvent::Open(open) => self.open(open, true, out),
            CaptureEvent::Data(data) => {
                let key = data.key;
                self.data(data, out);
                self.account(key, out);
            }
            CaptureEvent::Close(close) => self.close(&close, out),
            CaptureEvent::Fork { .. }
            | CaptureEvent::Exit { .. }
            | CaptureEvent::Exec { .. }
            | CaptureEvent::CloseRange { .. }
            | CaptureEvent::Process(_) => {}
        }
    }

    /// `anchored`: the stream offsets start at 0 (false for a connection first seen mid-stream).
    fn open(&mut self, open: SocketOpen, anchored: bool, out: &mut Vec<StreamEvent>) {
        if self.conns.remove(&open.key).is_some() {
            // Ids are unique per session, so this is a re-announcement; close the old one.
            out.push(StreamEvent::Close {
                key: open.key,
                ts_ns: open.ts_ns,
            });
        }
        self.make_room(out);
        self.stats.connections_opened += 1;
        // Every socket the kernel or userspace tracks starts at offset 0 in both directions; a
        // connection seen without its open event anchors at its first byte instead.
        let start = if anchored { Some(0) } else { None };
        let conn = Conn {
            dirs: [
                DirState {
                    next: start,
                    ..DirState::default()
                },
                DirState {
                    next: start,
                    ..DirState::default()
                },
            ],
            ignored: false,
        };
        let bytes = conn.buffered_bytes();
        self.conns.insert(open.key, conn, open.ts_ns, bytes);
        out.push(StreamEvent::Open(ConnInfo {
            key: open.key,
            comm: open.comm,
            role: open.role,
            peer: open.peer,
            opened_ns: open.ts_ns,
            preexisting: open.preexisting,
        }));
    }

    fn make_room(&mut self, out: &mut Vec<StreamEvent>) {
        while self.conns.len() >= self.config.max_connections.max(1) {
            let Some((oldest, _)) = self.conns.oldest() else {
                return;
            };
            self.evict(oldest, Eviction::Full, out);
        }
    }

    fn evict(&mut self, key: ConnKey, reason: Eviction, out: &mut Vec<StreamEvent>) {
        self.stats.connections_evicted += 1;
        if reason == Eviction::MemoryBudget {
            self.stats.budget_evictions += 1;
        }
        self.finish_conn(key, self.now_ns, None, End::Evicted(reason), out);
    }

    /// After an event for `key`: its bytes as they are now, and the budget kept by evicting
    /// the least recently active other connections.
    fn account(&mut self, key: ConnKey, out: &mut Vec<StreamEvent>) {
        let Some(bytes) = self.conns.get(&key).map(Conn::buffered_bytes) else {
            return;
        };
        self.conns.set_bytes(&key, bytes);
        while self.conns.buffered_bytes() > self.config.max_buffered_bytes {
            // One connection alone is held by its own bounds (`max_pending_segments`).
            let Some(victim) = self.conns.oldest_except(key) else {
                return;
            };
            self.evict(victim, Eviction::MemoryBudget, out);
        }
    }

    /// A connection whose bytes come without an open event (opened before capture, or its
    /// open lost): tracked from its first byte, role unknown.
    fn open_unannounced(&mut self, data: &SocketData, out: &mut Vec<StreamEvent>) {
        self.stats.connections_without_open += 1;
        self.open(
            SocketOpen {
                key: data.key,
                fd: data.fd,
                ts_ns: data.ts_ns,
                role: Role::Unknown,
                peer: None,
                comm: String::new(),
                preexisting: true,
            },
            false,
            out,
        );
    }

    fn data(&mut self, data: SocketData, out: &mut Vec<StreamEvent>) {
        let key = data.key;
        if self.ended.contains(&key) {
            self.stats.bytes_after_close += data.bytes.len() as u64;
            return;
        }
        if !self.conns.contains_key(&key) {
            self.open_unannounced(&data, out);
        }
        let window = self.config.reorder_window_ns;
        let max_pending = self.config.max_pending_segments;
        self.conns.touch(&key, data.ts_ns);
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        if conn.ignored {
            self.stats.ignored_bytes += data.bytes.len() as u64;
            return;
        }
        // Bytes of one direction answer (or are answered by) the other's: once this one
        // moves on, a hole still open in the other is lost. Flushing it now keeps the two
        // in the order they happened, so a lost request is known before its response.
        let other = 1 - idx(data.dir);
        flush_pending(
            &mut self.stats,
            key,
            DIRS[other],
            &mut conn.dirs[other],
            out,
        );
        let d = &mut conn.dirs[idx(data.dir)];

        if data.bytes.is_empty() {
            if data.call_len == 0 && data.dir == Direction::Ingress {
                // End of stream: everything before it must be out first.
                flush_pending(&mut self.stats, key, data.dir, d, out);
                // Its offset is the stream's length: bytes before it that never came are
                // lost (a lost tail would otherwise be found only at the close, after the
                // end of stream was acted on).
                lost_before(&mut self.stats, key, data.dir, data.ts_ns, data.seq, d, out);
                out.push(StreamEvent::Eof {
                    key,
                    ts_ns: data.ts_ns,
                });
            }
            return;
        }
        self.stats.data_events += 1;
        let next = *d.next.get_or_insert(data.seq);
        let end = data.seq + data.bytes.len() as u64;
        let truncated_tail = if data.truncated {
            self.stats.truncated_calls += 1;
            u64::from(data.call_len).saturating_sub(self.max_capture)
        } else {
            0
        };
        if end <= next {
            self.stats.duplicate_bytes += data.bytes.len() as u64;
            return;
        }
        let (seq, bytes) = if data.seq < next {
            let skip = usize::try_from(next - data.seq).unwrap_or(usize::MAX);
            self.stats.duplicate_bytes += skip as u64;
            (next, data.bytes.slice(skip.min(data.bytes.len())..))
        } else {
            (data.seq, data.bytes)
        };
        if seq > next {
            self.stats.reordered_segments += 1;
            d.pending.insert(seq, (data.ts_ns, bytes));
            self.reordering.insert(key);
            if truncated_tail > 0 {
                // The tail never comes: hold an empty marker right after it.
                d.pending
                    .entry(end + truncated_tail)
                    .or_insert((data.ts_ns, Bytes::new()));
            }
            // Give up on the hole when the window is exceeded in size or time.
            let oldest_ts = d
                .pending
                .values()
                .map(|(ts, _)| *ts)
                .min()
                .unwrap_or(data.ts_ns);
            if d.pending.len() > max_pending || self.now_ns.saturating_sub(oldest_ts) > window {
                flush_pending(&mut self.stats, key, data.dir, d, out);
            }
            return;
        }
        emit_data(&mut self.stats, key, data.dir, data.ts_ns, bytes, d, out);
        if truncated_tail > 0 {
            self.stats.gaps += 1;
            self.stats.gap_bytes += truncated_tail;
            out.push(StreamEvent::Gap {
                key,
                dir: data.dir,
                ts_ns: data.ts_ns,
                missing: truncated_tail,
            });
            d.next = Some(end + truncated_tail);
        }
        drain_contiguous(&mut self.stats, key, data.dir, d, out);
    }

    fn close(&mut self, close: &SocketClose, out: &mut Vec<StreamEvent>) {
        if close.final_seq.is_none() && self.ended.insert(close.key) {
            self.ended_order.push_back(close.key);
            if self.ended_order.len() > MAX_ENDED {
                if let Some(old) = self.ended_order.pop_front() {
                    self.ended.remove(&old);
                }
            }
        }
        if !self.conns.contains_key(&close.key) {
            return;
        }
        self.stats.connections_closed += 1;
        self.finish_conn(close.key, close.ts_ns, close.final_seq, End::Closed, out);
    }

    /// Flushes a connection's pending bytes (declaring gaps), reports lost tails, and ends it.
    fn finish_conn(
        &mut self,
        key: ConnKey,
        ts_ns: u64,
        final_seq: Option<[u64; 2]>,
        end: End,
        out: &mut Vec<StreamEvent>,
    ) {
        let Some(mut conn) = self.conns.remove(&key) else {
            return;
        };
        self.reordering.remove(&key);
        let final_seq = final_seq.filter(|_| !conn.ignored);
        for dir in DIRS {
            let d = &mut conn.dirs[idx(dir)];
            flush_pending(&mut self.stats, key, dir, d, out);
            if let (Some(fin), Some(next)) = (final_seq, d.next) {
                let missing = fin[idx(dir)].saturating_sub(next);
                if missing > 0 {
                    self.stats.gaps += 1;
                    self.stats.gap_bytes += missing;
                    out.push(StreamEvent::Gap {
                        key,
                        dir,
                        ts_ns,
                        missing,
                    });
                }
            }
        }
        out.push(match end {
            End::Closed => StreamEvent::Close { key, ts_ns },
            End::Evicted(reason) => StreamEvent::Evicted { key, ts_ns, reason },
        });
    }

    /// Gives up on a connection that the protocol stage found is not HTTP: its held bytes
    /// are dropped and the bytes still to come are counted, not reassembled. Its close
    /// still ends it downstream.
    pub fn ignore(&mut self, key: ConnKey) {
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.ignored = true;
        for d in &mut conn.dirs {
            let held: usize = d.pending.values().map(|(_, b)| b.len()).sum();
            self.stats.ignored_bytes += held as u64;
            d.pending.clear();
        }
        let bytes = conn.buffered_bytes();
        self.conns.set_bytes(&key, bytes);
        self.reordering.remove(&key);
    }

    /// Closes connections of a process that exited (their close events never come).
    pub fn process_exited(&mut self, tgid: u32, ts_ns: u64, out: &mut Vec<StreamEvent>) {
        let keys: Vec<ConnKey> = self
            .conns
            .keys()
            .filter(|k| k.tgid == tgid)
            .copied()
            .collect();
        for key in keys {
            self.stats.connections_closed += 1;
            self.finish_conn(key, ts_ns, None, End::Closed, out);
        }
    }

    /// Periodic upkeep: flushes reorder windows that expired and evicts idle connections.
    /// `now_ns` is kernel monotonic time. Visits only the connections holding segments out
    /// of order and the idle ones, not every connection.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<StreamEvent>) {
        self.now_ns = self.now_ns.max(now_ns);
        let window = self.config.reorder_window_ns;
        let idle = self.config.idle_timeout_ns;
        for key in std::mem::take(&mut self.reordering) {
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            for dir in DIRS {
                let d = &mut conn.dirs[idx(dir)];
                let expired = d
                    .pending
                    .values()
                    .any(|(ts, _)| now_ns.saturating_sub(*ts) > window);
                if expired {
                    flush_pending(&mut self.stats, key, dir, d, out);
                }
            }
            if conn.dirs.iter().any(|d| !d.pending.is_empty()) {
                self.reordering.insert(key);
            }
            let bytes = conn.buffered_bytes();
            self.conns.set_bytes(&key, bytes);
        }
        while let Some((key, last_ts)) = self.conns.oldest() {
            if now_ns.saturating_sub(last_ts) <= idle {
                break;
            }
            self.stats.connections_evicted += 1;
            self.finish_conn(key, now_ns, None, End::Evicted(Eviction::Idle), out);
        }
    }

    /// Closes every connection (end of session).
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.finish_conn(key, self.now_ns, None, End::Closed, out);
        }
    }
}

fn emit_data(
    stats: &mut StreamStats,
    key: ConnKey,
    dir: Direction,
    ts_ns: u64,
    bytes: Bytes,
    d: &mut DirState,
    out: &mut Vec<StreamEvent>,
) {
    let len = bytes.len() as u64;
    d.next = Some(d.next.unwrap_or(0) + len);
    if len > 0 {
        stats.bytes += len;
        out.push(StreamEvent::Data {
            key,
            dir,
            ts_ns,
            bytes,
        });
    }
}

/// Declares the bytes from the next expected offset up to `seq` lost, if any.
fn lost_before(
    stats: &mut StreamStats,
    key: ConnKey,
    dir: Direction,
    ts_ns: u64,
    seq: u64,
    d: &mut DirState,
    out: &mut Vec<StreamEvent>,
) {
    if let Some(next) = d.next.filter(|&n| seq > n) {
        stats.gaps += 1;
        stats.gap_bytes += seq - next;
        out.push(StreamEvent::Gap {
            key,
            dir,
            ts_ns,
            missing: seq - next,
        });
        d.next = Some(seq);
    }
}

/// Emits pending segments that became contiguous.
fn drain_contiguous(
    stats: &mut StreamStats,
    key: ConnKey,
    dir: Direction,
    d: &mut DirState,
    out: &mut Vec<StreamEvent>,
) {
    while let Some(entry) = d.pending.first_entry() {
        let next = d.next.unwrap_or(0);
        let seq = *entry.key();
        if seq > next {
            return;
        }
        let (ts, bytes) = entry.remove();
        let end = seq + bytes.len() as u64;
        if end <= next {
            stats.duplicate_bytes += bytes.len() as u64;
            continue;
        }
        let skip = usize::try_from(next - seq)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        emit_data(stats, key, dir, ts, bytes.slice(skip..), d, out);
    }
}

/// Gives up on every hole: emits each pending segment in order with a gap before it.
fn flush_pending(
    stats: &mut StreamStats,
    key: ConnKey,
    dir: Direction,
    d: &mut DirState,
    out: &mut Vec<StreamEvent>,
) {
    drain_contiguous(stats, key, dir, d, out);
    while let Some((seq, (ts, _))) = d.pending.first_key_value().map(|(s, v)| (*s, v.clone())) {
        let next = d.next.unwrap_or(seq);
        if seq > next {
            stats.gaps += 1;
            stats.gap_bytes += seq - next;
            out.push(StreamEvent::Gap {
                key,
                dir,
                ts_ns: ts,
                missing: seq - next,
            });
            d.next = Some(seq);
        }
        drain_contiguous(stats, key, dir, d, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: ConnKey = ConnKey {
        tgid: 10,
        conn_id: 1,
    };

    fn open() -> CaptureEvent {
        CaptureEvent::Open(SocketOpen {
            key: KEY,
            fd: 5,
            ts_ns: 1,
            role: Role::Server,
            peer: None,
            comm: "srv".into(),
            preexisting: false,
        })
    }

    fn data(dir: Direction, seq: u64, ts: u64, b: &'static [u8]) -> CaptureEvent {
        CaptureEvent::Data(SocketData {
            key: KEY,
            fd: 5,
            tid: 10,
            ts_ns: ts,
            dir,
            seq,
            call_len: u32::try_from(b.len()).unwrap(),
            truncated: false,
            bytes: Bytes::from_static(b),
        })
    }

    fn run(events: Vec<CaptureEvent>) -> (Vec<StreamEvent>, StreamStats) {
        let mut r = Reassembler::new(StreamConfig::default(), 1024);
        let mut out = Vec::new();
        for e in events {
            r.handle(e, &mut out);
        }
        r.finish(&mut out);
        (out, r.stats())
    }

    fn text(events: &[StreamEvent]) -> String {
        events
            .iter()
            .map(|e| match e {
                StreamEvent::Open(_) => "O".to_string(),
                StreamEvent::Data { dir, bytes, .. } => {
                    format!(
                        "{}{}",
                        if *dir == Direction::Ingress { '>' } else { '<' },
                        String::from_utf8_lossy(bytes)
                    )
                }
                StreamEvent::Gap { missing, .. } => format!("G{missing}"),
                StreamEvent::Eof { .. } => "E".into(),
                StreamEvent::Close { .. } => "C".into(),
                StreamEvent::Evicted { reason, .. } => format!("X{reason:?}"),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn in_order_bytes_pass_through() {
        let (out, stats) = run(vec![
            open(),
            data(Direction::Ingress, 0, 2, b"GET "),
            data(Direction::Ingress, 4, 3, b"/ HTTP/1.1"),
            data(Direction::Egress, 0, 4, b"HTTP/1.1 200"),
        ]);
        assert_eq!(text(&out), "O >GET  >/ HTTP/1.1 <HTTP/1.1 200 C");
        assert_eq!(stats.gaps, 0);
        assert_eq!(stats.bytes, 26);
    }

    #[test]
    fn reorders_within_the_window() {
        let (out, stats) = run(vec![
            open(),
            data(Direction::Ingress, 3, 2, b"def"),
            data(Direction::Ingress, 0, 3, b"abc"),
        ]);
        assert_eq!(text(&out), "O >abc >def C");
        assert_eq!(stats.reordered_segments, 1);
        assert_eq!(stats.gaps, 0);
    }

    #[test]
    fn lost_bytes_become_a_sized_gap() {
        let (out, stats) = run(vec![
            open(),
            data(Direction::Ingress, 0, 2, b"abc"),
            data(Direction::Ingress, 10, 3, b"xyz"),
        ]);
        assert_eq!(text(&out), "O >abc G7 >xyz C");
        assert_eq!((stats.gaps, stats.gap_bytes), (1, 7));
    }

    #[test]
    fn gap_declared_when_window_expires() {
        let mut r = Reassembler::new(StreamConfig::default(), 1024);
        let mut out = Vec::new();
        for e in [
            open(),
            data(Direction::Egress, 0, 2, b"ab"),
            data(Direction::Egress, 5, 3, b"fg"),
        ] {
            r.handle(e, &mut out);
        }
        assert_eq!(text(&out), "O <ab");
        r.tick(3 + 60_000_000, &mut out);
        assert_eq!(text(&out), "O <ab G3 <fg");
    }

    #[test]
    fn overlaps_are_trimmed() {
        let (out, stats) = run(vec![
            open(),
            data(Direction::Ingress, 0, 2, b"abcd"),
            data(Direction::Ingress, 2, 3, b"cdef"),
            data(Direction::Ingress, 0, 4, b"ab"),
        ]);
        assert_eq!(text(&out), "O >abcd >ef C");
        assert_eq!(stats.duplicate_bytes, 4);
    }

    #[test]
    fn truncated_call_reports_its_tail_as_a_gap() {
        let mut ev = data(Direction::Ingress, 0, 2, b"abcd");
        if let CaptureEvent::Data(d) = &mut ev {
            d.truncated = true;
            d.call_len = 4096;
        }
        let mut r = Reassembler::new(StreamConfig::default(), 4);
        let mut out = Vec::new();
        r.handle(open(), &mut out);
        r.handle(ev, &mut out);
        r.handle(data(Direction::Ingress, 4096, 3, b"next"), &mut out);
        assert_eq!(text(&out), "O >abcd G4092 >next");
        assert_eq!(r.stats().truncated_calls, 1);
    }

    #[test]
    fn lost_tail_is_found_at_close() {
        let mut r = Reassembler::new(StreamConfig::default(), 1024);
        let mut out = Vec::new();
        r.handle(open(), &mut out);
        r.handle(data(Direction::Egress, 0, 2, b"abc"), &mut out);
        r.handle(
            CaptureEvent::Close(SocketClose {
                key: KEY,
                fd: 5,
                ts_ns: 9,
                final_seq: Some([0, 10]),
            }),
            &mut out,
        );
        assert_eq!(text(&out), "O <abc G7 C");
    }

    #[test]
    fn bytes_after_a_close_of_the_session_are_dropped_and_counted() {
        let mut r = Reassembler::new(StreamConfig::default(), 1024);
        let mut out = Vec::new();
        r.handle(open(), &mut out);
        r.handle(
            data(Direction::Ingress, 0, 2, b"GET / HTTP/1.1\r\n"),
            &mut out,
        );
        // close_range: the session closes it; the kernel copied a file's bytes at the fd
        // before it was told.
        r.handle(
            CaptureEvent::Close(SocketClose {
                key: KEY,
                fd: 5,
                ts_ns: 3,
                final_seq: None,
            }),
            &mut out,
        );
        r.handle(data(Direction::Ingress, 16, 4, b"POST /leak"), &mut out);
        assert_eq!(text(&out), "O >GET / HTTP/1.1\r\n C");
        assert_eq!(r.stats().bytes_after_close, 10);
        assert_eq!(r.connections(), 0);
        assert_eq!(r.stats().connections_without_open, 0);
    }

    #[test]
    fn given_up_connections_drop_their_bytes_and_have_no_tail_gap() {
        let mut r = Reassembler::new(StreamConfig::default(), 1024);
        let mut out = Vec::new();
        r.handle(open(), &mut out);
        r.handle(data(Direction::Ingress, 0, 2, b"\x00\x01zmq"), &mut out);
        r.handle(data(Direction::Ingress, 9, 3, b"held"), &mut out);
        r.ignore(KEY);
        r.handle(data(Direction::Ingress, 5, 4, b"late"), &mut out);
        // The kernel stopped copying: the close's offsets are past what came, no gap.
        r.handle(
            CaptureEvent::Close(SocketClose {
                key: KEY,
                fd: 5,
                ts_ns: 9,
                final_seq: Some([4096, 0]),
            }),
            &mut out,
        );
        assert_eq!(text(&out), "O >\0\u{1}zmq C");
        assert_eq!(r.stats().ignored_bytes, 8);
        assert_eq!(r.stats().gaps, 0);
    }

    #[test]
    fn data_without_open_synthesises_one_and_eof_flushes() {
        let mut r = Reassembler::new(StreamConfig::default(), 1024);
        let mut out = Vec::new();
        r.handle(data(Direction::Ingress, 100, 2, b"abc"), &mut out);
        let mut eof = data(Direction::Ingress, 103, 3, b"");
        if let CaptureEvent::Data(d) = &mut eof {
            d.call_len = 0;
        }
        r.handle(eof, &mut out);
        assert_eq!(text(&out), "O >abc E");
        assert!(
            matches!(&out[0], StreamEvent::Open(i) if i.preexisting && i.role == Role::Unknown)
        );
        assert_eq!(r.stats().connections_without_open, 1);
    }

    #[test]
    fn lost_tail_is_found_at_end_of_stream() {
        let mut r = Reassembler::new(StreamConfig::default(), 1024);
        let mut out = Vec::new();
        r.handle(open(), &mut out);
        r.handle(data(Direction::Ingress, 0, 1, b"abc"), &mut out);
        // Bytes 3..7 never came; the end of stream says the stream was 7 bytes long.
        let mut eof = data(Direction::Ingress, 7, 2, b"");
        if let CaptureEvent::Data(d) = &mut eof {
            d.call_len = 0;
        }
        r.handle(eof, &mut out);
        assert_eq!(text(&out), "O >abc G4 E");
        assert_eq!((r.stats().gaps, r.stats().gap_bytes), (1, 4));
    }

    #[test]
    fn evicts_least_recent_when_full_and_when_idle() {
        let config = StreamConfig {
            max_connections: 1,
            idle_timeout_ns: 100,
            ..StreamConfig::default()
        };
        let mut r = Reassembler::new(config, 1024);
        let mut out = Vec::new();
        r.handle(open(), &mut out);
        let mut second = open();
        if let CaptureEvent::Open(o) = &mut second {
            o.key.conn_id = 2;
            o.ts_ns = 5;
        }
        r.handle(second, &mut out);
        assert_eq!(text(&out), "O XFull O");
        assert_eq!(r.stats().connections_evicted, 1);
        r.tick(1_000, &mut out);
        assert_eq!(r.connections(), 0);
        assert_eq!(r.stats().connections_evicted, 2);
    }

    #[test]
    fn reorder_windows_stay_under_the_budget_least_recent_first() {
        const CONNS: u64 = 20_000;
        const BUDGET: usize = 64 << 20;
        let config = StreamConfig {
            max_connections: 32_768,
            max_buffered_bytes: BUDGET,
            ..StreamConfig::default()
        };
        let mut r = Reassembler::new(config, 256 * 1024);
        let mut out = Vec::new();
        let segment = Bytes::from(vec![b'x'; 60 << 10]);
        let conn = |id: u64| ConnKey {
            tgid: 10,
            conn_id: id,
        };
        let mut peak = 0;
        for id in 0..CONNS {
            let key = conn(id);
            let ts = 1 + id * 1000;
            r.handle(
                CaptureEvent::Open(SocketOpen {
                    key,
                    fd: 5,
                    ts_ns: ts,
                    role: Role::Server,
                    peer: None,
                    comm: "srv".into(),
                    preexisting: false,
                }),
                &mut out,
            );
            // Bytes 4.. arrive before bytes 0..4: held until the hole is filled.
            r.handle(
                CaptureEvent::Data(SocketData {
                    key,
                    fd: 5,
                    tid: 10,
                    ts_ns: ts,
                    dir: Direction::Ingress,
                    seq: 4,
                    call_len: 60 << 10,
                    truncated: false,
                    bytes: segment.clone(),
                }),
                &mut out,
            );
            peak = peak.max(r.buffered_bytes());
            assert!(r.buffered_bytes() <= BUDGET, "over the budget at {id}");
        }
        let stats = r.stats();
        let evicted = out
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    StreamEvent::Evicted {
                        reason: Eviction::MemoryBudget,
                        ..
                    }
                )
            })
            .count() as u64;
        assert_eq!(stats.budget_evictions, evicted);
        assert_eq!(stats.connections_evicted, evicted);
        assert_eq!(r.connections() as u64, CONNS - evicted);
        assert_eq!(stats.buffered_bytes, r.buffered_bytes() as u64);
        eprintln!(
            "20 000 reorder windows of 60 KiB, budget 64 MiB: {} connections kept, peak {peak} B, {evicted} evicted",
            r.connections()
        );
        // The least recently active went first: every evicted one is older than every kept one.
        let first_kept = CONNS - r.connections() as u64;
        let mut evicted_ids = out.iter().filter_map(|e| match e {
            StreamEvent::Evicted { key, .. } => Some(key.conn_id),
            _ => None,
        });
        assert!(evicted_ids.all(|id| id < first_kept));
        // Each evicted connection gave up its hole: one gap each, before its end.
        assert_eq!(stats.gaps, evicted);
        // The most recent one still gets its bytes, in order, once its hole is filled.
        out.clear();
        r.handle(
            CaptureEvent::Data(SocketData {
                key: conn(CONNS - 1),
                fd: 5,
                tid: 10,
                ts_ns: CONNS * 1000,
                dir: Direction::Ingress,
                seq: 0,
                call_len: 4,
                truncated: false,
                bytes: Bytes::from_static(b"abcd"),
            }),
            &mut out,
        );
        let delivered: usize = out
            .iter()
            .map(|e| match e {
                StreamEvent::Data { bytes, .. } => bytes.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(delivered, 4 + (60 << 10));
        assert_eq!(r.stats().gaps, evicted, "nothing kept was given up");
    }

    #[test]
    fn an_active_old_connection_outlives_an_idle_newer_one() {
        let config = StreamConfig {
            idle_timeout_ns: 100,
            ..StreamConfig::default()
        };
        let mut r = Reassembler::new(config, 1024);
        let mut out = Vec::new();
        r.handle(open(), &mut out);
        let mut second = open();
        if let CaptureEvent::Open(o) = &mut second {
            o.key.conn_id = 2;
            o.ts_ns = 5;
        }
        r.handle(second, &mut out);
        // The first, older, is active again at 90; the second was last active at 5.
        r.handle(data(Direction::Ingress, 0, 90, b"GET"), &mut out);
        r.tick(150, &mut out);
        assert_eq!(text(&out), "O O >GET XIdle");
        assert!(matches!(out.last(), Some(StreamEvent::Evicted { key, .. }) if key.conn_id == 2));
        assert_eq!(r.connections(), 1);
        r.tick(191, &mut out);
        assert_eq!(r.connections(), 0);
        assert_eq!(r.stats().connections_evicted, 2);
    }
}
