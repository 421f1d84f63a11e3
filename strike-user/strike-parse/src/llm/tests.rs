//! The tracker's table: its byte budget, and least-recently-active eviction (for the
//! budget, the connection limit and the idle sweep).

use bytes::Bytes;

use super::*;
use crate::conn::Direction;

const MS: u64 = 1_000_000;

fn key(id: u64) -> ConnKey {
    ConnKey {
        tgid: 4242,
        conn_id: id,
    }
}

fn open(id: u64, ts_ns: u64) -> StreamEvent {
    StreamEvent::Open(ConnInfo {
        key: key(id),
        comm: "vllm".to_owned(),
        role: Role::Server,
        peer: None,
        opened_ns: ts_ns,
        preexisting: false,
    })
}

fn data(id: u64, dir: Direction, ts_ns: u64, bytes: impl Into<Bytes>) -> StreamEvent {
    StreamEvent::Data {
        key: key(id),
        dir,
        ts_ns,
        bytes: bytes.into(),
    }
}

/// A request head that has not ended: `len` bytes, most of them one header's value.
fn partial_head(len: usize) -> Bytes {
    let mut head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: llm\r\nx-pad: ".to_vec();
    head.resize(len, b'a');
    Bytes::from(head)
}

/// What completes [`partial_head`]: the end of the head, a JSON body, and its response.
fn rest_of_exchange(model: &str) -> (Vec<u8>, Vec<u8>) {
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    let request = format!(
        "\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let res_body = format!(
        r#"{{"id":"r-{model}","model":"{model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"hello"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}}}"#
    );
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{res_body}",
        res_body.len()
    );
    (request.into_bytes(), response.into_bytes())
}

fn tracker(max_buffered_bytes: usize) -> RequestTracker {
    RequestTracker::new(TrackerConfig {
        max_buffered_bytes,
        ..TrackerConfig::default()
    })
}

#[test]
fn twenty_thousand_trickled_heads_stay_under_the_budget() {
    const CONNS: u64 = 20_000;
    const BUDGET: usize = 64 << 20;
    let mut t = tracker(BUDGET);
    let mut out = Vec::new();
    let head = partial_head(60 << 10);
    let mut peak = 0;
    for id in 0..CONNS {
        t.handle(open(id, id * MS), &mut out);
        t.handle(
            data(id, Direction::Ingress, id * MS, head.clone()),
            &mut out,
        );
        peak = peak.max(t.buffered_bytes());
        assert!(t.buffered_bytes() <= BUDGET, "over the budget at {id}");
    }
    let stats = t.stats();
    // A connection with a 60 KiB head in progress buffers a little more than that.
    let per_conn = t.buffered_bytes() / t.connections();
    assert!((60 << 10..70 << 10).contains(&per_conn), "{per_conn}");
    assert_eq!(
        stats.budget_evictions,
        CONNS - t.connections() as u64,
        "every connection let go was counted"
    );
    assert_eq!(stats.connections_evicted, stats.budget_evictions);
    assert!(peak > BUDGET - (per_conn * 2), "the budget is used, {peak}");
    // No request was announced on the evicted ones (their heads never ended): no record.
    assert!(out.is_empty());
    eprintln!(
        "20 000 heads of 60 KiB, budget 64 MiB: {} connections kept ({per_conn} B each), peak {peak} B, {} evicted",
        t.connections(),
        stats.budget_evictions
    );

    // The most recent connections complete their requests exactly (their heads' buffers
    // grow as the rest arrives: older connections make room).
    for id in CONNS - 100..CONNS {
        let (request, response) = rest_of_exchange(&format!("m{id}"));
        let ts = (CONNS + id) * MS;
        t.handle(data(id, Direction::Ingress, ts, request), &mut out);
        t.handle(data(id, Direction::Egress, ts + MS, response), &mut out);
        assert!(t.buffered_bytes() <= BUDGET);
    }
    assert_eq!(out.len(), 100);
    for (record, id) in out.iter().zip(CONNS - 100..) {
        assert_eq!(record.conn_id, id);
        assert!(!record.partial, "{:?}", record.partial_reason);
        assert_eq!(record.status, Some(200));
        assert_eq!(record.model.as_deref(), Some(format!("m{id}").as_str()));
        assert_eq!(record.output_tokens, Some(2));
    }
}

#[test]
fn requests_in_flight_end_as_memory_budget_records() {
    const BUDGET: usize = 8 << 20;
    let mut t = tracker(BUDGET);
    let mut out = Vec::new();
    // Each request announces a 1 MiB JSON body and sends 256 KiB of it.
    let mut first = b"POST /v1/chat/completions HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\n\r\n{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"".to_vec();
    first.resize(256 << 10, b'x');
    let first = Bytes::from(first);
    for id in 0..100 {
        t.handle(open(id, id * MS), &mut out);
        t.handle(
            data(id, Direction::Ingress, id * MS, first.clone()),
            &mut out,
        );
        assert!(t.buffered_bytes() <= BUDGET);
    }
    let stats = t.stats();
    assert!(stats.budget_evictions > 0);
    assert_eq!(out.len() as u64, stats.budget_evictions);
    for (record, id) in out.iter().zip(0..) {
        assert_eq!(record.conn_id, id, "the least recently active first");
        assert!(record.partial);
        assert_eq!(record.partial_reason.as_deref(), Some("memory_budget"));
    }
    assert_eq!(stats.partial_records, stats.budget_evictions);
}

#[test]
fn an_active_old_connection_outlives_an_idle_newer_one() {
    let head = partial_head(60 << 10);
    // Room for two connections with a head in progress (one of them grown to twice its
    // size by the byte that makes it active), not three.
    let mut t = tracker(200 << 10);
    let mut out = Vec::new();
    t.handle(open(1, MS), &mut out);
    t.handle(data(1, Direction::Ingress, MS, head.clone()), &mut out);
    t.handle(open(2, 2 * MS), &mut out);
    t.handle(data(2, Direction::Ingress, 2 * MS, head.clone()), &mut out);
    // 1 is older but active again.
    t.handle(data(1, Direction::Ingress, 3 * MS, &b"a"[..]), &mut out);
    t.handle(open(3, 4 * MS), &mut out);
    t.handle(data(3, Direction::Ingress, 4 * MS, head.clone()), &mut out);
    assert_eq!(t.stats().budget_evictions, 1);
    assert!(t.conns.contains_key(&key(1)), "the active one stays");
    assert!(!t.conns.contains_key(&key(2)), "the idle one goes");

    // The same order for the connection limit and the idle sweep.
    let mut t = RequestTracker::new(TrackerConfig {
        max_connections: 2,
        idle_timeout_ns: 10 * MS,
        ..TrackerConfig::default()
    });
    t.handle(open(1, MS), &mut out);
    t.handle(open(2, 2 * MS), &mut out);
    t.handle(data(1, Direction::Ingress, 3 * MS, &b"GET"[..]), &mut out);
    t.handle(open(3, 4 * MS), &mut out);
    assert!(t.conns.contains_key(&key(1)) && !t.conns.contains_key(&key(2)));
    t.handle(data(3, Direction::Ingress, 12 * MS, &b"GET"[..]), &mut out);
    t.evict_idle(14 * MS, &mut out);
    assert!(!t.conns.contains_key(&key(1)), "idle for 11 ms");
    assert!(t.conns.contains_key(&key(3)), "idle for 2 ms");
    assert_eq!(t.stats().connections_evicted, 2);
    assert_eq!(t.stats().budget_evictions, 0);
}

#[test]
fn stream_stage_evictions_end_requests_with_their_reason() {
    let mut t = tracker(DEFAULT_MAX_BUFFERED_BYTES);
    let mut out = Vec::new();
    let head = b"POST /v1/completions HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":";
    for (id, reason) in [(1, Eviction::MemoryBudget), (2, Eviction::Idle)] {
        t.handle(open(id, MS), &mut out);
        t.handle(data(id, Direction::Ingress, MS, &head[..]), &mut out);
        t.handle(
            StreamEvent::Evicted {
                key: key(id),
                ts_ns: 2 * MS,
                reason,
            },
            &mut out,
        );
    }
    let reasons: Vec<_> = out.iter().map(|r| r.partial_reason.as_deref()).collect();
    assert_eq!(reasons, [Some("memory_budget"), Some("evicted")]);
    assert_eq!(t.connections(), 0);
    assert_eq!(t.buffered_bytes(), 0);
    // The stream stage counted those; the tracker evicted nothing itself.
    assert_eq!(t.stats().connections_evicted, 0);
}
