//! Properties of the stream and tracker stages together (`Reassembler` into `RequestTracker`,
//! as the processor runs them) over the golden scenarios (`tests/golden/tracker`), each
//! turned into the capture events the kernel would have sent:
//! - the same byte stream split at any points gives identical records and tracker stats;
//! - its segments reordered within the reassembly window give identical records;
//! - a lost segment gives its exact size as a gap, and records that are identical to the
//!   intact run's or partial: never a different set of whole records.
//!
//! Seeded and deterministic.

#![expect(
    clippy::cast_possible_truncation,
    reason = "lengths of test segments fit u32"
)]

mod common;

use std::path::Path;

use bytes::Bytes;
use strike_parse::conn::{Direction, StreamEvent};
use strike_parse::event::{CaptureEvent, SocketClose, SocketData, SocketOpen};
use strike_parse::llm::{RequestTracker, TrackerConfig, TrackerStats};
use strike_parse::stream::{Reassembler, StreamConfig, StreamStats};

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap()
    }
}

struct Case {
    name: String,
    config: TrackerConfig,
    events: Vec<CaptureEvent>,
}

/// The golden scenarios as capture events: data with its stream offsets, an end of stream
/// as the kernel reports it, and a close carrying the final offsets (added at the end for
/// a connection the scenario leaves open, so a lost tail is known too). Scenarios with a
/// gap of their own are left out: what was lost there is not in the bytes.
fn cases() -> Vec<Case> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tracker");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("scenario.txt").is_file())
        .collect();
    dirs.sort();
    let mut cases = Vec::new();
    for dir in dirs {
        let text = std::fs::read_to_string(dir.join("scenario.txt")).unwrap();
        let scenario = common::parse(&text).unwrap();
        let mut events = Vec::new();
        let mut offsets = std::collections::BTreeMap::new();
        let mut open = std::collections::BTreeSet::new();
        let mut last_ts = 0;
        let mut has_gap = false;
        for step in scenario.steps {
            let common::Step::Event(ev) = step else {
                panic!("{}: evict is not a capture event", dir.display());
            };
            let key = ev.key();
            let off: &mut [u64; 2] = offsets.entry((key.tgid, key.conn_id)).or_default();
            match ev {
                StreamEvent::Open(info) => {
                    open.insert((key.tgid, key.conn_id));
                    last_ts = last_ts.max(info.opened_ns);
                    events.push(CaptureEvent::Open(SocketOpen {
                        key,
                        fd: 3,
                        ts_ns: info.opened_ns,
                        role: info.role,
                        peer: info.peer,
                        comm: info.comm,
                        preexisting: info.preexisting,
                    }));
                }
                StreamEvent::Data {
                    dir, ts_ns, bytes, ..
                } => {
                    let i = usize::from(dir == Direction::Egress);
                    last_ts = last_ts.max(ts_ns);
                    events.push(CaptureEvent::Data(SocketData {
                        key,
                        fd: 3,
                        tid: 1,
                        ts_ns,
                        dir,
                        seq: off[i],
                        call_len: bytes.len() as u32,
                        truncated: false,
                        bytes: bytes.clone(),
                    }));
                    off[i] += bytes.len() as u64;
                }
                // Not capture events: such scenarios are left out.
                StreamEvent::Gap { .. } | StreamEvent::Evicted { .. } => has_gap = true,
                StreamEvent::Eof { ts_ns, .. } => {
                    last_ts = last_ts.max(ts_ns);
                    events.push(CaptureEvent::Data(SocketData {
                        key,
                        fd: 3,
                        tid: 1,
                        ts_ns,
                        dir: Direction::Ingress,
                        seq: off[0],
                        call_len: 0,
                        truncated: false,
                        bytes: Bytes::new(),
                    }));
                }
                StreamEvent::Close { ts_ns, .. } => {
                    open.remove(&(key.tgid, key.conn_id));
                    last_ts = last_ts.max(ts_ns);
                    events.push(CaptureEvent::Close(SocketClose {
                        key,
                        fd: 3,
                        ts_ns,
                        final_seq: Some(*off),
                    }));
                }
            }
        }
        if has_gap {
            continue;
        }
        for (tgid, conn_id) in open {
            events.push(CaptureEvent::Close(SocketClose {
                key: strike_parse::conn::ConnKey { tgid, conn_id },
                fd: 3,
                ts_ns: last_ts + 1,
                final_seq: Some(offsets[&(tgid, conn_id)]),
            }));
        }
        cases.push(Case {
            name: dir.file_name().unwrap().to_string_lossy().into_owned(),
            config: scenario.config,
            events,
        });
    }
    cases
}

struct Run {
    /// Each record as JSON, its random `request_id` left out.
    records: Vec<serde_json::Value>,
    partial: Vec<bool>,
    tracker: TrackerStats,
    stream: StreamStats,
}

fn run(config: &TrackerConfig, events: &[CaptureEvent]) -> Run {
    let mut reassembler = Reassembler::new(StreamConfig::default(), u32::MAX);
    let mut tracker = RequestTracker::new(config.clone());
    let mut stream = Vec::new();
    let mut out = Vec::new();
    for ev in events {
        reassembler.handle(ev.clone(), &mut stream);
        for s in stream.drain(..) {
            tracker.handle(s, &mut out);
        }
    }
    reassembler.finish(&mut stream);
    for s in stream.drain(..) {
        tracker.handle(s, &mut out);
    }
    tracker.finish(&mut out);
    Run {
        partial: out.iter().map(|r| r.partial).collect(),
        records: out
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap();
                v["request_id"] = serde_json::Value::Null;
                v
            })
            .collect(),
        tracker: tracker.stats(),
        stream: reassembler.stats(),
    }
}

/// Every data segment cut at random points into pieces that keep its timestamp.
fn split(rng: &mut Rng, events: &[CaptureEvent]) -> Vec<CaptureEvent> {
    let mut out = Vec::new();
    for ev in events {
        let CaptureEvent::Data(d) = ev else {
            out.push(ev.clone());
            continue;
        };
        if d.bytes.len() < 2 {
            out.push(ev.clone());
            continue;
        }
        let mut at = 0;
        while at < d.bytes.len() {
            // Mostly short pieces, now and then a long one.
            let len = if rng.below(4) == 0 {
                rng.below(d.bytes.len()) + 1
            } else {
                rng.below(16) + 1
            }
            .min(d.bytes.len() - at);
            let bytes = d.bytes.slice(at..at + len);
            out.push(CaptureEvent::Data(SocketData {
                seq: d.seq + at as u64,
                call_len: len as u32,
                bytes,
                ..d.clone()
            }));
            at += len;
        }
    }
    out
}

fn data_dir(ev: &CaptureEvent) -> Option<(u64, Direction)> {
    match ev {
        CaptureEvent::Data(d) if !d.bytes.is_empty() => Some((d.key.conn_id, d.dir)),
        _ => None,
    }
}

/// Shuffles runs of consecutive data segments of one connection and direction, a few at a
/// time: within the reorder window (fewer than its segments, no time past its span).
fn reorder(rng: &mut Rng, events: &mut [CaptureEvent]) -> usize {
    let mut moved = 0;
    let mut i = 0;
    while i < events.len() {
        let Some(dir) = data_dir(&events[i]) else {
            i += 1;
            continue;
        };
        let mut end = i + 1;
        while end < events.len()
            && end - i < 8
            && data_dir(&events[end]) == Some(dir)
            && events[end].ts_ns() - events[i].ts_ns() < StreamConfig::default().reorder_window_ns
        {
            end += 1;
        }
        for k in (i + 1..end).rev() {
            let j = i + rng.below(k - i + 1);
            if j != k {
                events.swap(j, k);
                moved += 1;
            }
        }
        i = end;
    }
    moved
}

#[test]
fn any_split_gives_the_same_records() {
    let mut rng = Rng(0x5eed_5011);
    for case in cases() {
        let whole = run(&case.config, &case.events);
        assert!(
            !whole.records.is_empty(),
            "{}: the intact stream gives no record",
            case.name
        );
        for round in 0..20 {
            let pieces = split(&mut rng, &case.events);
            let got = run(&case.config, &pieces);
            assert_eq!(
                got.records, whole.records,
                "{} (split round {round}): records differ",
                case.name
            );
            assert_eq!(
                got.tracker, whole.tracker,
                "{} (split round {round}): tracker stats differ",
                case.name
            );
            assert_eq!(got.stream.gaps, 0, "{}: a split is no loss", case.name);
        }
    }
}

#[test]
fn reordering_within_the_window_gives_the_same_records() {
    let mut rng = Rng(0x5eed_5012);
    for case in cases() {
        let whole = run(&case.config, &case.events);
        let mut moved_total = 0;
        for round in 0..20 {
            let mut pieces = split(&mut rng, &case.events);
            let moved = reorder(&mut rng, &mut pieces);
            moved_total += moved;
            let got = run(&case.config, &pieces);
            assert_eq!(
                got.records, whole.records,
                "{} (reorder round {round}, {moved} moved): records differ",
                case.name
            );
            assert_eq!(got.stream.gaps, 0, "{}: reordering is no loss", case.name);
            assert!(got.stream.reordered_segments > 0 || moved == 0);
        }
        assert!(moved_total > 0, "{}: nothing was reordered", case.name);
    }
}

#[test]
fn a_lost_segment_is_a_counted_gap_and_partial_records() {
    let mut rng = Rng(0x5eed_5013);
    let mut violations = Vec::new();
    for case in cases() {
        let whole = run(&case.config, &case.events);
        for round in 0..30 {
            let mut pieces = split(&mut rng, &case.events);
            let data: Vec<usize> = (0..pieces.len())
                .filter(|&i| data_dir(&pieces[i]).is_some())
                .collect();
            let lost = pieces.remove(data[rng.below(data.len())]);
            let CaptureEvent::Data(lost) = lost else {
                unreachable!()
            };
            let got = run(&case.config, &pieces);
            let what = format!(
                "{} (loss round {round}: {} {:?} bytes at {})",
                case.name,
                lost.bytes.len(),
                lost.dir,
                lost.seq
            );
            violations.extend(
                loss_violations(&whole, &got, lost.bytes.len() as u64)
                    .into_iter()
                    .map(|v| format!("{what}: {v}")),
            );
        }
    }
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// What a run with `lost` bytes missing does wrong against the intact run.
fn loss_violations(whole: &Run, got: &Run, lost: u64) -> Vec<String> {
    let mut v = Vec::new();
    if (got.stream.gaps, got.stream.gap_bytes) != (1, lost) {
        v.push(format!(
            "gaps {}/{} bytes, not one of {lost}",
            got.stream.gaps, got.stream.gap_bytes
        ));
    }
    if got.tracker.protocol.gaps == 0 {
        v.push("the tracker does not count the gap".to_owned());
    }
    if got.records == whole.records {
        return v;
    }
    // Whatever differs is marked: every record that is not one of the intact run's is
    // partial, and no whole record goes missing without one that is.
    let brief = |r: &serde_json::Value| {
        format!(
            "{} {} status {} error {} partial {} ({})",
            r["method"], r["path"], r["status"], r["error"], r["partial"], r["partial_reason"]
        )
    };
    for (r, partial) in got.records.iter().zip(&got.partial) {
        if !*partial && !whole.records.contains(r) {
            v.push(format!(
                "a record that is not partial differs: {}",
                brief(r)
            ));
        }
    }
    if got.records.len() < whole.records.len() && !got.partial.iter().any(|p| *p) {
        v.push(format!(
            "{} of {} records left, none partial",
            got.records.len(),
            whole.records.len()
        ));
    }
    v
}
