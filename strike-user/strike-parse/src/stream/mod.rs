//! Stream stage: turns capture events into each connection's ordered byte streams.
//!
//! Every data event carries its offset in the connection's stream (`seq`), so this stage
//! knows exactly which bytes it has: in-order bytes pass straight through, a short reorder
//! window absorbs events that arrive out of order (concurrent writers on one socket), and
//! anything never delivered (ring buffer full, capture cap, lost reorder) becomes an explicit
//! [`StreamEvent::Gap`] with its size. Connections are bounded in number and evicted when
//! idle; every eviction and gap is counted.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::Serialize;

use crate::{
    conn::{ConnInfo, ConnKey, Direction, Role, StreamEvent},
    event::{CaptureEvent, SocketClose, SocketData, SocketOpen},
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
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            max_connections: 16_384,
            max_pending_segments: 64,
            reorder_window_ns: 50_000_000,
            idle_timeout_ns: 600_000_000_000,
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
    pub connections_evicted: u64,
    pub data_events: u64,
    pub bytes: u64,
    pub gaps: u64,
    pub gap_bytes: u64,
    /// Syscalls whose payload exceeded the capture cap.
    pub truncated_calls: u64,
    pub reordered_segments: u64,
    pub duplicate_bytes: u64,
}

#[derive(Default)]
struct DirState {
    /// Next expected stream offset; `None` until the first byte (a preexisting or unknown
    /// connection starts wherever capture found it).
    next: Option<u64>,
    pending: BTreeMap<u64, (u64, Bytes)>,
}

struct Conn {
    dirs: [DirState; 2],
    last_ts: u64,
}

/// Reassembles capture events into ordered per-connection stream events.
pub struct Reassembler {
    config: StreamConfig,
    conns: HashMap<ConnKey, Conn>,
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
            conns: HashMap::new(),
            stats: StreamStats::default(),
            now_ns: 0,
            max_capture: u64::from(max_capture_bytes),
        }
    }

    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Connections tracked now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Feeds one capture event. Process events (fork, exit, facts) are not stream events and
    /// are ignored here; the pipeline handles them.
    pub fn handle(&mut self, event: CaptureEvent, out: &mut Vec<StreamEvent>) {
        self.now_ns = self.now_ns.max(event.ts_ns());
        match event {
            CaptureEvent::Open(open) => self.open(open, true, out),
            CaptureEvent::Data(data) => self.data(data, out),
            CaptureEvent::Close(close) => self.close(&close, out),
            CaptureEvent::Fork { .. } | CaptureEvent::Exit { .. } | CaptureEvent::Process(_) => {}
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
        self.conns.insert(
            open.key,
            Conn {
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
                last_ts: open.ts_ns,
            },
        );
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
            let Some((&oldest, _)) = self.conns.iter().min_by_key(|(_, c)| c.last_ts) else {
                return;
            };
            self.stats.connections_evicted += 1;
            self.finish_conn(oldest, self.now_ns, None, out);
        }
    }

    fn data(&mut self, data: SocketData, out: &mut Vec<StreamEvent>) {
        let key = data.key;
        if !self.conns.contains_key(&key) {
            self.stats.connections_without_open += 1;
            self.open(
                SocketOpen {
                    key,
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
        let window = self.config.reorder_window_ns;
        let max_pending = self.config.max_pending_segments;
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        conn.last_ts = conn.last_ts.max(data.ts_ns);
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
        if !self.conns.contains_key(&close.key) {
            return;
        }
        self.stats.connections_closed += 1;
        self.finish_conn(close.key, close.ts_ns, close.final_seq, out);
    }

    /// Flushes a connection's pending bytes (declaring gaps), reports lost tails, and closes it.
    fn finish_conn(
        &mut self,
        key: ConnKey,
        ts_ns: u64,
        final_seq: Option<[u64; 2]>,
        out: &mut Vec<StreamEvent>,
    ) {
        let Some(mut conn) = self.conns.remove(&key) else {
            return;
        };
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
        out.push(StreamEvent::Close { key, ts_ns });
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
            self.finish_conn(key, ts_ns, None, out);
        }
    }

    /// Periodic upkeep: flushes reorder windows that expired and evicts idle connections.
    /// `now_ns` is kernel monotonic time.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<StreamEvent>) {
        self.now_ns = self.now_ns.max(now_ns);
        let window = self.config.reorder_window_ns;
        let idle = self.config.idle_timeout_ns;
        let mut evict = Vec::new();
        for (&key, conn) in &mut self.conns {
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
            if now_ns.saturating_sub(conn.last_ts) > idle {
                evict.push(key);
            }
        }
        for key in evict {
            self.stats.connections_evicted += 1;
            self.finish_conn(key, now_ns, None, out);
        }
    }

    /// Closes every connection (end of session).
    pub fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        let keys: Vec<ConnKey> = self.conns.keys().copied().collect();
        for key in keys {
            self.finish_conn(key, self.now_ns, None, out);
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
        assert_eq!(text(&out), "O C O");
        assert_eq!(r.stats().connections_evicted, 1);
        r.tick(1_000, &mut out);
        assert_eq!(r.connections(), 0);
        assert_eq!(r.stats().connections_evicted, 2);
    }
}
