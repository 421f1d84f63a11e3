//! The exchange machine on its own: pairing on kept-alive and pipelined connections,
//! interim responses, framing, bounds and losses, and that where a segment boundary falls
//! never changes what is seen.

use std::fmt::Write as _;

use super::*;

const REQ_A: &[u8] =
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\ncontent-length: 2\r\n\r\n{}";
const RES_A: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
const REQ_B: &[u8] = b"GET /v1/models HTTP/1.1\r\nhost: a\r\n\r\n";
const RES_B: &[u8] =
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";

fn server() -> ExchangeMachine {
    ExchangeMachine::new(ExchangeConfig::default(), Role::Server, false)
}

fn server_with_max_pending(max_pending: usize) -> ExchangeMachine {
    let cfg = ExchangeConfig {
        max_pending,
        ..ExchangeConfig::default()
    };
    ExchangeMachine::new(cfg, Role::Server, false)
}

/// Feeds `(direction, bytes)` segments, each split into pieces of `piece` bytes, with
/// increasing timestamps.
fn run(
    m: &mut ExchangeMachine,
    segments: &[(Direction, &[u8])],
    piece: usize,
) -> (Vec<ExchangeEvent>, ProtocolCounters) {
    let mut out = Vec::new();
    let mut counters = ProtocolCounters::default();
    let mut ts = 0;
    for (dir, bytes) in segments {
        for chunk in bytes.chunks(piece.max(1)) {
            ts += 1;
            m.on_data(*dir, ts, chunk, &mut out, &mut counters);
        }
    }
    (out, counters)
}

/// One event but a body: its kind, its exchange, and a number (wire bytes, status).
type Step = (&'static str, u64, u64);

/// The events with bodies folded: one [`Step`] per event but bodies, and each side's body
/// bytes in order.
fn shape(events: &[ExchangeEvent]) -> (Vec<Step>, Vec<u8>, Vec<u8>) {
    let (mut kinds, mut req_body, mut res_body) = (Vec::new(), Vec::new(), Vec::new());
    for e in events {
        match e {
            ExchangeEvent::RequestHead { seq, .. } => kinds.push(("req_head", *seq, 0)),
            ExchangeEvent::RequestBody { data, .. } => req_body.extend_from_slice(data),
            ExchangeEvent::RequestEnd {
                seq, wire_bytes, ..
            } => kinds.push(("req_end", *seq, *wire_bytes)),
            ExchangeEvent::RequestAbort { seq, .. } => kinds.push(("req_abort", *seq, 0)),
            ExchangeEvent::ResponseInterim { seq, status, .. } => {
                kinds.push(("res_interim", *seq, u64::from(*status)));
            }
            ExchangeEvent::ResponseHead { seq, head, .. } => {
                kinds.push(("res_head", *seq, u64::from(head.status)));
            }
            ExchangeEvent::ResponseBody { data, .. } => res_body.extend_from_slice(data),
            ExchangeEvent::ResponseEnd {
                seq, wire_bytes, ..
            } => kinds.push(("res_end", *seq, *wire_bytes)),
            ExchangeEvent::ResponseAbort { seq, .. } => kinds.push(("res_abort", *seq, 0)),
        }
    }
    (kinds, req_body, res_body)
}

fn len(b: &[u8]) -> u64 {
    b.len() as u64
}

#[test]
fn kept_alive_exchanges_pair_in_order_whatever_the_segment_size() {
    use Direction::{Egress, Ingress};
    let segments = [
        (Ingress, REQ_A),
        (Egress, RES_A),
        (Ingress, REQ_B),
        (Egress, RES_B),
    ];
    let expected = vec![
        ("req_head", 0, 0),
        ("req_end", 0, len(REQ_A)),
        ("res_head", 0, 200),
        ("res_end", 0, len(RES_A)),
        ("req_head", 1, 0),
        ("req_end", 1, len(REQ_B)),
        ("res_head", 1, 200),
        ("res_end", 1, len(RES_B)),
    ];
    for piece in [1, 2, 3, 7, 16, 1024] {
        let (events, counters) = run(&mut server(), &segments, piece);
        let (kinds, req_body, res_body) = shape(&events);
        assert_eq!(kinds, expected, "pieces of {piece}");
        assert_eq!(req_body, b"{}", "pieces of {piece}");
        assert_eq!(
            res_body, b"helloabcde",
            "chunked framing removed, pieces of {piece}"
        );
        assert_eq!(counters, ProtocolCounters::default(), "pieces of {piece}");
    }
}

#[test]
fn pipelined_requests_get_their_responses_in_order() {
    use Direction::{Egress, Ingress};
    let both: Vec<u8> = [REQ_A, REQ_B].concat();
    let (events, _) = run(
        &mut server(),
        &[(Ingress, &both), (Egress, RES_A), (Egress, RES_B)],
        9,
    );
    let (kinds, ..) = shape(&events);
    let responses: Vec<_> = kinds.iter().filter(|k| k.0.starts_with("res_")).collect();
    assert_eq!(
        responses,
        [
            &("res_head", 0, 200),
            &("res_end", 0, len(RES_A)),
            &("res_head", 1, 200),
            &("res_end", 1, len(RES_B))
        ]
    );
}

#[test]
fn an_interim_response_precedes_the_final_one() {
    use Direction::{Egress, Ingress};
    let req = b"POST /v1/completions HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n";
    let res = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
    let (events, _) = run(
        &mut server(),
        &[
            (Ingress, req),
            (Egress, b"HTTP/1.1 100 Continue\r\n\r\n"),
            (Ingress, b"{}"),
            (Egress, res),
        ],
        1024,
    );
    let (kinds, ..) = shape(&events);
    let responses: Vec<_> = kinds.iter().filter(|k| k.0.starts_with("res_")).collect();
    assert_eq!(
        responses,
        [
            &("res_interim", 0, 100),
            &("res_head", 0, 200),
            &("res_end", 0, len(res) + 25)
        ]
    );
}

#[test]
fn too_many_waiting_requests_give_up_the_oldest_response_counted() {
    use Direction::Ingress;
    let mut m = server_with_max_pending(2);
    let three: Vec<u8> = [REQ_B, REQ_B, REQ_B].concat();
    let (events, counters) = run(&mut m, &[(Ingress, &three)], 1024);
    assert_eq!(counters.pipeline_overflows, 1, "{counters:?}");
    assert!(
        events.iter().any(|e| matches!(
            e,
            ExchangeEvent::ResponseAbort {
                seq: 0,
                reason: EndReason::PipelineOverflow,
                ..
            }
        )),
        "{events:?}"
    );
}

#[test]
fn a_response_with_no_request_is_counted() {
    let (_, counters) = run(&mut server(), &[(Direction::Egress, RES_A)], 1024);
    assert_eq!(counters.unmatched_responses, 1, "{counters:?}");
}

#[test]
fn a_lost_response_tail_aborts_that_response_and_the_next_exchange_is_read() {
    use Direction::{Egress, Ingress};
    let mut m = server();
    let (mut events, mut counters) = run(&mut m, &[(Ingress, REQ_A), (Egress, &RES_A[..30])], 1024);
    m.on_gap(Egress, 10, &mut events, &mut counters);
    let (more, _) = run(&mut m, &[(Ingress, REQ_B), (Egress, RES_B)], 1024);
    events.extend(more);
    let (kinds, ..) = shape(&events);
    assert!(kinds.contains(&("res_abort", 0, 0)), "{kinds:?}");
    assert!(
        kinds.contains(&("res_end", 1, len(RES_B))),
        "the next exchange after the gap: {kinds:?}"
    );
    assert_eq!(counters.gaps, 1);
}

#[test]
fn close_before_any_response_says_no_response() {
    use Direction::Ingress;
    let mut m = server();
    let (mut events, _) = run(&mut m, &[(Ingress, REQ_A)], 1024);
    m.on_close(5, &mut events);
    assert!(
        events.iter().any(|e| matches!(
            e,
            ExchangeEvent::ResponseAbort {
                seq: 0,
                reason: EndReason::NoResponse,
                ..
            }
        )),
        "{events:?}"
    );
}

#[test]
fn capture_started_mid_exchange_keeps_the_unseen_request_in_the_queue() {
    use Direction::{Egress, Ingress};
    let mut m = ExchangeMachine::new(ExchangeConfig::default(), Role::Server, true);
    let req: Vec<u8> = [&b"tail of a body\r\n"[..], REQ_A].concat();
    let segments = [
        (Ingress, &req[..]),
        (Egress, &b"tail of a response"[..]),
        (Egress, RES_A),
    ];
    let (events, counters) = run(&mut m, &segments, usize::MAX);
    let (kinds, ..) = shape(&events);
    assert_eq!(
        kinds,
        [
            ("req_abort", 0, 0),
            ("req_head", 1, 0),
            ("req_end", 1, len(REQ_A)),
            ("res_abort", 0, 0),
            ("res_head", 1, 200),
            ("res_end", 1, len(RES_A)),
        ]
    );
    assert_eq!(counters.resync_skipped_bytes, 16 + 18, "{counters:?}");
}

#[test]
fn a_request_that_is_not_http_is_skipped_up_to_the_next_request_line() {
    use Direction::Ingress;
    let bytes: Vec<u8> = [REQ_A, b"XX\r\n\r\n", REQ_B].concat();
    for piece in [1, 5, 1024] {
        let (events, counters) = run(&mut server(), &[(Ingress, &bytes)], piece);
        let (kinds, ..) = shape(&events);
        assert_eq!(
            kinds,
            [
                ("req_head", 0, 0),
                ("req_end", 0, len(REQ_A)),
                ("req_head", 1, 0),
                ("req_end", 1, len(REQ_B)),
            ],
            "pieces of {piece}"
        );
        assert_eq!(counters.request_parse_errors, 1, "pieces of {piece}");
        assert_eq!(counters.resync_skipped_bytes, 6, "pieces of {piece}");
    }
}

#[test]
fn an_overflow_made_by_lost_requests_is_counted_too() {
    use Direction::Ingress;
    let mut m = server_with_max_pending(2);
    // One request seen, then three lost at request boundaries (gaps between requests):
    // the queue holds two, so two are given up, each counted.
    let (mut events, mut counters) = run(&mut m, &[(Ingress, REQ_B)], 1024);
    for ts in 10..13 {
        m.on_gap(Ingress, ts, &mut events, &mut counters);
        m.on_data(Ingress, ts, REQ_B, &mut events, &mut counters);
    }
    let overflows = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                ExchangeEvent::ResponseAbort {
                    reason: EndReason::PipelineOverflow,
                    ..
                }
            )
        })
        .count() as u64;
    assert!(overflows > 0, "{events:?}");
    assert_eq!(counters.pipeline_overflows, overflows, "{counters:?}");
}

#[test]
fn bytes_after_a_101_in_the_same_segment_are_counted_as_ignored() {
    use Direction::{Egress, Ingress};
    let upgrade =
        b"GET /ws HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";
    let switch = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n\x81\x05hello";
    let mut m = server();
    let (_, counters) = run(&mut m, &[(Ingress, upgrade), (Egress, switch)], 1024);
    assert_eq!(counters.upgraded_connections, 1);
    assert_eq!(
        counters.ignored_bytes, 7,
        "the frame after the 101: {counters:?}"
    );
}

#[test]
fn a_gap_before_the_direction_is_known_counts_the_held_bytes() {
    use Direction::Ingress;
    let mut m = ExchangeMachine::new(ExchangeConfig::default(), Role::Unknown, true);
    let mut out = Vec::new();
    let mut counters = ProtocolCounters::default();
    // Too few bytes to tell a request line from a status line: held, then lost to a gap.
    m.on_data(Ingress, 1, b"PO", &mut out, &mut counters);
    m.on_gap(Ingress, 2, &mut out, &mut counters);
    assert_eq!(counters.resync_skipped_bytes, 2, "{counters:?}");
}

/// A head of `n` header fields after `line`.
fn many_headers(line: &str, n: usize) -> Vec<u8> {
    let mut head = format!("{line}\r\nhost: a\r\n");
    for i in 0..n {
        let _ = write!(head, "x-h{i}: {i}\r\n");
    }
    head.push_str("content-length: 2\r\n\r\n{}");
    head.into_bytes()
}

#[test]
fn heads_with_hundreds_of_header_fields_are_http() {
    use Direction::{Egress, Ingress};
    // 130 and 1000 fields (uvicorn and Go accept them): the request and the response both
    // parse, and the 5 ordinary requests after them on the connection are all seen.
    for n in [130, 1000] {
        let req = many_headers("POST /v1/chat/completions HTTP/1.1", n);
        let res = many_headers("HTTP/1.1 200 OK", n);
        let mut segments: Vec<(Direction, &[u8])> = vec![(Ingress, &req), (Egress, &res)];
        for _ in 0..5 {
            segments.extend([(Ingress, REQ_A), (Egress, RES_A)]);
        }
        let (events, counters) = run(&mut server(), &segments, 1024);
        let (kinds, ..) = shape(&events);
        let ends = kinds.iter().filter(|k| k.0 == "res_end").count();
        assert_eq!(ends, 6, "{n} fields: {kinds:?}");
        assert_eq!(counters, ProtocolCounters::default(), "{n} fields");
    }
}

#[test]
fn a_first_head_that_does_not_parse_is_recorded_and_the_connection_kept() {
    use Direction::{Egress, Ingress};
    // A request line, then a header line without a colon: an error the server may well
    // accept. The request still gets its record (a head with what the line says, aborted),
    // paired with the response, and the connection stays HTTP for the five after it.
    let bad: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nhost: a\r\nno colon here\r\n\r\n";
    let mut segments: Vec<(Direction, &[u8])> = vec![(Ingress, bad), (Egress, RES_A)];
    for _ in 0..5 {
        segments.extend([(Ingress, REQ_A), (Egress, RES_A)]);
    }
    for piece in [1, 7, 1024] {
        let (events, counters) = run(&mut server(), &segments, piece);
        let (kinds, ..) = shape(&events);
        assert_eq!(
            kinds[..2],
            [("req_head", 0, 0), ("req_abort", 0, 0)],
            "pieces of {piece}"
        );
        let heads = kinds.iter().filter(|k| k.0 == "req_head").count();
        let ends = kinds.iter().filter(|k| k.0 == "res_end").count();
        assert_eq!((heads, ends), (6, 6), "pieces of {piece}: {kinds:?}");
        assert_eq!(counters.request_parse_errors, 1, "pieces of {piece}");
        assert_eq!(counters.not_http_connections, 0, "pieces of {piece}");
        let ExchangeEvent::RequestHead { head, .. } = &events[0] else {
            panic!("{:?}", events[0]);
        };
        assert_eq!(
            (head.method.as_str(), head.path.as_str()),
            ("POST", "/v1/chat/completions")
        );
    }
}
