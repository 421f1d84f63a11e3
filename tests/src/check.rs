//! Compares strike's JSON records with the requests the load generator sent.
//!
//! The truth for each request is what the server itself reported: `usage` when the response
//! carried it, else llama.cpp's `timings`, else the test app's own request log. A record is
//! matched by the server's response id; records whose `api` is `"other"` (health checks,
//! `/metrics`) are ignored.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::Value;

use crate::load::{Sent, Usage};

/// strike's `input_token_source` for a prompt it estimated from its size.
pub const ESTIMATED_INPUT: &str = "prompt_bytes";

/// Token counts the server reported for one request, and where they came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub input: u64,
    pub output: u64,
    pub source: &'static str,
}

/// Reads the JSONL request log of `tests/servers/openai_app.py`: id -> its own counts.
pub fn read_app_log(path: &Path) -> Result<HashMap<String, Usage>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value =
            serde_json::from_str(line).with_context(|| format!("bad app log line {line:?}"))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_u64)
                .with_context(|| format!("no {k} in {line:?}"))
        };
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .with_context(|| format!("no id in {line:?}"))?;
        out.insert(
            id.to_owned(),
            Usage {
                prompt_tokens: field("prompt_tokens")?,
                completion_tokens: field("completion_tokens")?,
            },
        );
    }
    Ok(out)
}

/// The server's own token counts for `sent`: usage, else timings, else the app log.
#[expect(clippy::implicit_hasher, reason = "the maps come from read_app_log")]
pub fn server_counts(sent: &Sent, app_log: Option<&HashMap<String, Usage>>) -> Option<Expected> {
    if let Some(u) = sent.usage {
        return Some(Expected {
            input: u.prompt_tokens,
            output: u.completion_tokens,
            source: "usage",
        });
    }
    if let Some(t) = sent.timings {
        return Some(Expected {
            input: t.prompt_n + t.cache_n.unwrap_or(0),
            output: t.predicted_n,
            source: "timings",
        });
    }
    let u = app_log?.get(sent.response_id.as_deref()?)?;
    Some(Expected {
        input: u.prompt_tokens,
        output: u.completion_tokens,
        source: "app log",
    })
}

/// One request and the single record strike emitted for it.
#[derive(Debug)]
pub struct Match<'a> {
    pub sent: &'a Sent,
    pub record: &'a Value,
    pub expected: Option<Expected>,
}

/// The outcome of [`compare`].
#[derive(Debug, Default)]
pub struct Report<'a> {
    pub sent: usize,
    /// Records whose api is not "other".
    pub records: usize,
    pub other_records: usize,
    pub matched: usize,
    pub exact_tokens: usize,
    /// Records of requests the server read but never answered (no status, no response bytes,
    /// an error): at most one per resend of the load generator.
    pub unanswered: usize,
    /// Exact output, and an input that strike declares estimated because the response
    /// carried no counts (the app's streams without usage).
    pub estimated_input: usize,
    pub problems: Vec<String>,
    pub matches: Vec<Match<'a>>,
}

impl Report<'_> {
    /// `sent=200 records=200 matched=200 exact_tokens=200`.
    pub fn counts(&self) -> String {
        format!(
            "sent={} records={} matched={} exact_tokens={} estimated_input={} unanswered={} (ignored api=other: {})",
            self.sent,
            self.records,
            self.matched,
            self.exact_tokens,
            self.estimated_input,
            self.unanswered,
            self.other_records
        )
    }

    /// Up to `max` problems, one per line, with the total.
    pub fn problems_text(&self, max: usize) -> String {
        let mut s = format!("{} problem(s):", self.problems.len());
        for p in self.problems.iter().take(max) {
            let _ = write!(s, "\n  - {p}");
        }
        if self.problems.len() > max {
            let _ = write!(s, "\n  ... and {} more", self.problems.len() - max);
        }
        s
    }
}

fn str_field<'a>(r: &'a Value, k: &str) -> Option<&'a str> {
    r.get(k).and_then(Value::as_str)
}

/// A record of a request that got no response at all (strike says `no_response`).
fn is_unanswered(r: &Value) -> bool {
    r.get("status").is_none_or(Value::is_null)
        && r.get("response_bytes").and_then(Value::as_u64) == Some(0)
        && str_field(r, "error") == Some("no_response")
}

/// Counters in strike's summary that must stay 0 under the tests' modest load.
const SUMMARY_ZERO: [&str; 14] = [
    "ringbuf_full",
    "events_dropped",
    "records_dropped",
    "decode_errors",
    "gaps",
    "gap_bytes",
    "truncated_calls",
    "read_faults",
    "partial_records",
    "json_errors",
    "sse_errors",
    "request_parse_errors",
    "response_parse_errors",
    "unmatched_responses",
];

/// Checks strike's `--summary-file`: every counter named in [`SUMMARY_ZERO`], wherever it
/// is, is 0, and `pipeline.records` (when present) equals the records printed.
pub fn summary_problems(summary: &Value, printed: usize) -> Vec<String> {
    fn walk(path: &str, v: &Value, out: &mut Vec<String>) {
        if let Value::Object(map) = v {
            for (k, v) in map {
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                if SUMMARY_ZERO.contains(&k.as_str()) && v.as_u64() != Some(0) {
                    out.push(format!("strike summary: {here} = {v} (expected 0)"));
                }
                walk(&here, v, out);
            }
        }
    }
    let mut out = Vec::new();
    if !summary.is_object() {
        out.push(format!("strike summary is not a JSON object: {summary}"));
    }
    walk("", summary, &mut out);
    if let Some(n) = summary.pointer("/pipeline/records").and_then(Value::as_u64) {
        if usize::try_from(n).ok() != Some(printed) {
            out.push(format!(
                "strike summary: pipeline.records = {n}, but {printed} records were printed"
            ));
        }
    }
    out
}

fn short(r: &Value) -> String {
    let mut s = r.to_string();
    if s.len() > 400 {
        s.truncate(400);
        s.push_str("...");
    }
    s
}

/// Matches every request to strike's records and lists each disagreement.
#[expect(clippy::implicit_hasher, reason = "the maps come from read_app_log")]
pub fn compare<'a>(
    sent: &'a [Sent],
    records: &'a [Value],
    app_log: Option<&HashMap<String, Usage>>,
) -> Report<'a> {
    let mut report = Report {
        sent: sent.len(),
        ..Report::default()
    };
    let mut by_id: HashMap<&str, Vec<&Value>> = HashMap::new();
    for r in records {
        if str_field(r, "api") == Some("other") {
            report.other_records += 1;
            continue;
        }
        report.records += 1;
        match str_field(r, "response_id") {
            Some(id) => by_id.entry(id).or_default().push(r),
            None if is_unanswered(r) => report.unanswered += 1,
            None => report
                .problems
                .push(format!("record without response_id: {}", short(r))),
        }
    }
    // llama-server closes a kept-alive connection after each streamed response, sometimes
    // after it has read the next request: that request gets no answer, the client resends
    // it, and strike rightly reports the unanswered one.
    let resent = crate::load::retries(sent);
    if report.unanswered > usize::try_from(resent).unwrap_or(usize::MAX) {
        report.problems.push(format!(
            "{} records of unanswered requests, but the client resent only {resent}",
            report.unanswered
        ));
    }
    let mut sent_ids = HashMap::new();
    for s in sent {
        let what = format!(
            "request #{} ({}, max_tokens={})",
            s.seq,
            s.kind.label(),
            s.max_tokens
        );
        if let Some(e) = &s.error {
            report
                .problems
                .push(format!("{what} failed on the client side: {e}"));
        }
        let Some(id) = s.response_id.as_deref() else {
            report
                .problems
                .push(format!("{what}: the response carried no id"));
            continue;
        };
        if sent_ids.insert(id, s.seq).is_some() {
            report
                .problems
                .push(format!("{what}: the server reused response id {id}"));
            continue;
        }
        let found = by_id.get(id).map_or(&[][..], Vec::as_slice);
        let [record] = found else {
            report.problems.push(format!(
                "{what} id={id}: {} records (expected exactly 1)",
                found.len()
            ));
            continue;
        };
        report.matched += 1;
        check_fields(&what, s, record, &mut report.problems);
        let expected = server_counts(s, app_log);
        match expected {
            None => report.problems.push(format!(
                "{what} id={id}: the server reported no token counts"
            )),
            Some(e) => check_tokens(&format!("{what} id={id}"), s, record, e, &mut report),
        }
        report.matches.push(Match {
            sent: s,
            record,
            expected,
        });
    }
    for (id, rs) in &by_id {
        if !sent_ids.contains_key(id) {
            report.problems.push(format!(
                "{} record(s) for a response id never sent: {}",
                rs.len(),
                short(rs[0])
            ));
        }
    }
    report
}

/// A table by request kind and response encoding: sent, records matched, exact input, exact
/// output, TTFT present; one line a row, each starting with `prefix`.
pub fn table(prefix: &str, sent: &[Sent], report: &Report<'_>) -> String {
    #[derive(Default)]
    struct Row {
        sent: usize,
        records: usize,
        input: usize,
        output: usize,
        ttft: usize,
    }
    let key = |s: &Sent| {
        (
            s.kind.label(),
            if s.compressed { "gzip" } else { "identity" },
        )
    };
    let mut rows: Vec<((String, &str), Row)> = Vec::new();
    let mut row = |k: (String, &'static str)| -> usize {
        rows.iter().position(|(r, _)| *r == k).unwrap_or_else(|| {
            rows.push((k, Row::default()));
            rows.len() - 1
        })
    };
    let mut at = HashMap::new();
    for s in sent {
        let i = row(key(s));
        at.insert(s.seq, i);
    }
    for s in sent {
        rows[at[&s.seq]].1.sent += 1;
    }
    for m in &report.matches {
        let r = &mut rows[at[&m.sent.seq]].1;
        r.records += 1;
        let rec = m.record;
        if let Some(e) = m.expected {
            r.input += usize::from(rec["input_tokens"].as_u64() == Some(e.input));
            let out = rec["output_tokens"]
                .as_u64()
                .or((e.output == 0).then_some(0));
            r.output += usize::from(out == Some(e.output));
        }
        r.ttft += usize::from(rec["ttft_ms"].is_number());
    }
    let mut out =
        format!("{prefix} kind | encoding | sent | records | exact input | exact output | ttft");
    for ((kind, coding), r) in &rows {
        let _ = write!(
            out,
            "\n{prefix} {kind} | {coding} | {} | {} | {} | {} | {}",
            r.sent, r.records, r.input, r.output, r.ttft
        );
    }
    out
}

/// Counts `record` as exact or as a declared input estimate, or reports it.
fn check_tokens(what: &str, s: &Sent, record: &Value, e: Expected, report: &mut Report<'_>) {
    let input = record.get("input_tokens").and_then(Value::as_u64);
    // Embeddings generate nothing: null and 0 both say so.
    let output = record
        .get("output_tokens")
        .and_then(Value::as_u64)
        .or(if e.output == 0 { Some(0) } else { None });
    // When the response carried no counts (a stream without usage from a server that has no
    // timings), strike can only estimate the prompt: accepted when it says so; the output
    // still has to be exact.
    let response_had_counts = s.usage.is_some() || s.timings.is_some();
    let declared_estimate = str_field(record, "input_token_source") == Some(ESTIMATED_INPUT)
        && str_field(record, "token_source") == Some("estimated");
    if input == Some(e.input) && output == Some(e.output) {
        report.exact_tokens += 1;
    } else if !response_had_counts
        && declared_estimate
        && input.is_some_and(|n| n > 0)
        && output == Some(e.output)
    {
        report.estimated_input += 1;
    } else {
        report.problems.push(format!(
            "{what}: strike input/output tokens {input:?}/{output:?} (token_source {:?}), server's {} says {}/{}",
            str_field(record, "token_source"),
            e.source,
            e.input,
            e.output
        ));
    }
}

fn check_fields(what: &str, s: &Sent, r: &Value, problems: &mut Vec<String>) {
    let mut bad = Vec::new();
    if str_field(r, "api") != Some(s.kind.api()) {
        bad.push(format!("api {:?} != {:?}", r.get("api"), s.kind.api()));
    }
    if str_field(r, "path") != Some(s.kind.path()) {
        bad.push(format!("path {:?} != {:?}", r.get("path"), s.kind.path()));
    }
    if str_field(r, "method") != Some("POST") {
        bad.push(format!("method {:?}", r.get("method")));
    }
    if r.get("stream").and_then(Value::as_bool) != Some(s.kind.stream()) {
        bad.push(format!(
            "stream {:?} != {}",
            r.get("stream"),
            s.kind.stream()
        ));
    }
    if r.get("status").and_then(Value::as_u64) != Some(u64::from(s.status)) {
        bad.push(format!("status {:?} != {}", r.get("status"), s.status));
    }
    if r.get("partial").and_then(Value::as_bool) != Some(false) {
        bad.push(format!("partial {:?}", r.get("partial")));
    }
    if !r.get("error").is_none_or(Value::is_null) {
        bad.push(format!("error {:?}", r.get("error")));
    }
    if !bad.is_empty() {
        problems.push(format!("{what}: {}: {}", bad.join(", "), short(r)));
    }
}

/// Checks what the servers reported against what the harness relies on, without strike: every
/// request succeeded with an id; it generated exactly `max_tokens` tokens (embeddings: none); a
/// stream carried one content delta per token and ended with `[DONE]`; and wherever two sources
/// exist (usage, timings, the app's log) they agree.
#[expect(clippy::implicit_hasher, reason = "the maps come from read_app_log")]
pub fn server_problems(sent: &[Sent], app_log: Option<&HashMap<String, Usage>>) -> Vec<String> {
    let mut problems = Vec::new();
    for s in sent {
        let what = format!(
            "request #{} ({}, max_tokens={})",
            s.seq,
            s.kind.label(),
            s.max_tokens
        );
        if let Some(e) = &s.error {
            problems.push(format!("{what} failed: {e}"));
            continue;
        }
        let Some(e) = server_counts(s, app_log) else {
            problems.push(format!(
                "{what}: no token counts from the server (id {:?})",
                s.response_id
            ));
            continue;
        };
        let want = if s.kind.api() == "embeddings" {
            0
        } else {
            u64::from(s.max_tokens)
        };
        if e.output != want {
            problems.push(format!(
                "{what}: the server's {} says {} output tokens",
                e.source, e.output
            ));
        }
        if s.kind.stream() && (u64::from(s.content_deltas) != e.output || !s.done) {
            problems.push(format!(
                "{what}: {} content deltas (done marker: {}), the server's {} says {} tokens",
                s.content_deltas, s.done, e.source, e.output
            ));
        }
        let by_timings = s
            .timings
            .map(|t| (t.prompt_n + t.cache_n.unwrap_or(0), t.predicted_n));
        let by_log = app_log
            .and_then(|l| l.get(s.response_id.as_deref()?))
            .map(|u| (u.prompt_tokens, u.completion_tokens));
        for (source, other) in [("timings", by_timings), ("app log", by_log)] {
            if let Some(other) = other {
                if other != (e.input, e.output) {
                    problems.push(format!(
                        "{what}: {source} says {other:?}, {} says {:?}",
                        e.source,
                        (e.input, e.output)
                    ));
                }
            }
        }
    }
    problems
}

fn ms_field(r: &Value, k: &str) -> Option<f64> {
    r.get(k).and_then(Value::as_f64)
}

/// Physical bounds on strike's timings: 0 <= ttft <= e2e <= the client's e2e (+ `slack_ms`);
/// and, for a server that takes at least `min_ms_per_token` before each token, e2e >= tokens x
/// that and a stream's ttft >= that (a ttft taken at a chunk without text, such as vLLM's
/// role-only first chunk, is sent before any token and fails this).
pub fn timing_problems(report: &Report<'_>, min_ms_per_token: f64, slack_ms: f64) -> Vec<String> {
    let mut problems = Vec::new();
    for m in &report.matches {
        let s = m.sent;
        let what = format!("request #{} ({})", s.seq, s.kind.label());
        let Some(e2e) = ms_field(m.record, "e2e_ms") else {
            problems.push(format!("{what}: no e2e_ms in {}", short(m.record)));
            continue;
        };
        if !(0.0..=s.client_e2e_ms + slack_ms).contains(&e2e) {
            problems.push(format!(
                "{what}: strike e2e_ms {e2e:.3} outside [0, client e2e {:.3} + {slack_ms}]",
                s.client_e2e_ms
            ));
        }
        let ttft = ms_field(m.record, "ttft_ms");
        if let Some(ttft) = ttft {
            if !(0.0..=e2e + 0.001).contains(&ttft) {
                problems.push(format!(
                    "{what}: strike ttft_ms {ttft:.3} outside [0, e2e_ms {e2e:.3}]"
                ));
            }
            if s.kind.stream() && s.content_deltas > 0 && ttft < min_ms_per_token {
                problems.push(format!(
                    "{what}: strike ttft_ms {ttft:.3} < {min_ms_per_token}, before the server could send its first token"
                ));
            }
        } else if s.kind.stream() && s.content_deltas > 0 {
            problems.push(format!("{what}: a stream with tokens but no ttft_ms"));
        }
        if let Some(e) = m.expected {
            #[expect(
                clippy::cast_precision_loss,
                reason = "token counts are far below 2^52"
            )]
            let floor = e.output as f64 * min_ms_per_token;
            if e2e < floor {
                problems.push(format!("{what}: strike e2e_ms {e2e:.3} < {floor:.1}, the server's minimum for {} tokens", e.output));
            }
        }
    }
    problems
}

/// A few matched requests side by side: strike's ttft/e2e, the client's, and llama.cpp's own.
pub fn samples(report: &Report<'_>, n: usize) -> String {
    let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    let mut out = String::from(
        "  sample: kind | tokens in/out strike (server) | ttft_ms strike / client | e2e_ms strike / client | server prompt_ms+predicted_ms",
    );
    let step = (report.matches.len() / n.max(1)).max(1);
    for m in report.matches.iter().step_by(step).take(n) {
        let r = m.record;
        let tok = |k: &str| {
            r.get(k)
                .and_then(Value::as_u64)
                .map_or_else(|| "-".to_owned(), |v| v.to_string())
        };
        let server = m.expected.map_or_else(
            || "-".to_owned(),
            |e| format!("{}/{} {}", e.input, e.output, e.source),
        );
        let timings = m.sent.timings.map_or_else(
            || "-".to_owned(),
            |t| format!("{:.2}+{:.2}", t.prompt_ms, t.predicted_ms),
        );
        let _ = write!(
            out,
            "\n  {:<24} | {}/{} ({server}) | {} / {} | {} / {:.2} | {timings}",
            m.sent.kind.label(),
            tok("input_tokens"),
            tok("output_tokens"),
            fmt(ms_field(r, "ttft_ms")),
            fmt(m.sent.client_ttft_ms),
            fmt(ms_field(r, "e2e_ms")),
            m.sent.client_e2e_ms,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::load::{Kind, Timings};

    fn sent(seq: usize, kind: Kind, id: &str) -> Sent {
        Sent {
            compressed: false,
            seq,
            worker: 0,
            kind,
            max_tokens: 3,
            prompt_words: 2,
            status: 200,
            response_id: Some(id.to_owned()),
            usage: None,
            timings: None,
            content_deltas: 3,
            done: true,
            client_ttft_ms: Some(1.0),
            client_e2e_ms: 10.0,
            response_bytes: 100,
            retries: 0,
            error: None,
            traceparent: None,
        }
    }

    fn record(id: &str, api: &str, path: &str, stream: bool, input: u64, output: u64) -> Value {
        json!({"response_id": id, "api": api, "path": path, "method": "POST", "stream": stream,
               "status": 200, "partial": false, "error": null, "input_tokens": input,
               "output_tokens": output, "token_source": "usage", "ttft_ms": 2.0, "e2e_ms": 5.0})
    }

    const CHAT: Kind = Kind::Chat {
        stream: true,
        include_usage: false,
    };

    #[test]
    fn exact_match_from_each_source() {
        let mut a = sent(0, CHAT, "a");
        a.usage = Some(Usage {
            prompt_tokens: 9,
            completion_tokens: 3,
        });
        let mut b = sent(1, CHAT, "b");
        b.timings = Some(Timings {
            prompt_n: 4,
            predicted_n: 3,
            cache_n: Some(5),
            prompt_ms: 1.0,
            predicted_ms: 2.0,
        });
        let c = sent(2, CHAT, "c");
        let log = HashMap::from([(
            "c".to_owned(),
            Usage {
                prompt_tokens: 9,
                completion_tokens: 3,
            },
        )]);
        let sent = [a, b, c];
        let records: Vec<Value> = ["a", "b", "c"]
            .iter()
            .map(|id| record(id, "chat_completions", "/v1/chat/completions", true, 9, 3))
            .chain([json!({"api": "other", "path": "/health"})])
            .collect();
        let report = compare(&sent, &records, Some(&log));
        assert!(report.problems.is_empty(), "{}", report.problems_text(10));
        assert_eq!(
            (
                report.sent,
                report.records,
                report.matched,
                report.exact_tokens
            ),
            (3, 3, 3, 3)
        );
        assert_eq!(report.other_records, 1);
        assert!(
            server_problems(&sent, Some(&log)).is_empty(),
            "{:?}",
            server_problems(&sent, Some(&log))
        );
        assert!(timing_problems(&report, 0.0, 50.0).is_empty());
    }

    #[test]
    fn every_disagreement_is_reported() {
        let mut ok = sent(0, CHAT, "dup");
        ok.usage = Some(Usage {
            prompt_tokens: 9,
            completion_tokens: 3,
        });
        let mut missing = sent(1, CHAT, "missing");
        missing.usage = ok.usage;
        let mut wrong = sent(2, CHAT, "wrong");
        wrong.usage = ok.usage;
        let records = vec![
            record(
                "dup",
                "chat_completions",
                "/v1/chat/completions",
                true,
                9,
                3,
            ),
            record(
                "dup",
                "chat_completions",
                "/v1/chat/completions",
                true,
                9,
                3,
            ),
            record(
                "wrong",
                "chat_completions",
                "/v1/chat/completions",
                false,
                9,
                4,
            ),
            record("stranger", "completions", "/v1/completions", false, 1, 1),
        ];
        let sent = [ok, missing, wrong];
        let report = compare(&sent, &records, None);
        assert_eq!(report.matched, 1);
        assert_eq!(report.exact_tokens, 0);
        let text = report.problems_text(10);
        for needle in [
            "dup: 2 records",
            "missing: 0 records",
            "stream Some(Bool(false)) != true",
            "server's usage says 9/3",
            "never sent",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
    }

    #[test]
    fn a_declared_input_estimate_is_accepted_only_without_counts_in_the_response() {
        let log = HashMap::from([
            (
                "a".to_owned(),
                Usage {
                    prompt_tokens: 9,
                    completion_tokens: 3,
                },
            ),
            (
                "b".to_owned(),
                Usage {
                    prompt_tokens: 9,
                    completion_tokens: 3,
                },
            ),
            (
                "c".to_owned(),
                Usage {
                    prompt_tokens: 9,
                    completion_tokens: 3,
                },
            ),
        ]);
        let a = sent(0, CHAT, "a");
        let b = sent(1, CHAT, "b");
        let mut c = sent(2, CHAT, "c");
        c.usage = Some(Usage {
            prompt_tokens: 9,
            completion_tokens: 3,
        });
        let estimate = |id: &str, output: u64| {
            let mut r = record(
                id,
                "chat_completions",
                "/v1/chat/completions",
                true,
                14,
                output,
            );
            r["token_source"] = json!("estimated");
            r["input_token_source"] = json!(ESTIMATED_INPUT);
            r
        };
        // a: estimate, exact output: accepted; b: wrong output; c: the response had usage.
        let records = [estimate("a", 3), estimate("b", 2), estimate("c", 3)];
        let sent = [a, b, c];
        let report = compare(&sent, &records, Some(&log));
        assert_eq!((report.exact_tokens, report.estimated_input), (0, 1));
        assert_eq!(report.problems.len(), 2, "{}", report.problems_text(10));
        assert!(
            report.problems[0].contains("#1"),
            "{}",
            report.problems_text(10)
        );
        assert!(
            report.problems[1].contains("#2"),
            "{}",
            report.problems_text(10)
        );
    }

    #[test]
    fn unanswered_requests_are_accepted_up_to_the_resends() {
        let mut a = sent(0, CHAT, "a");
        a.usage = Some(Usage {
            prompt_tokens: 9,
            completion_tokens: 3,
        });
        a.retries = 1;
        let unanswered = json!({"response_id": null, "api": "completions", "status": null,
                                "response_bytes": 0, "error": "no_response"});
        let records = [
            record("a", "chat_completions", "/v1/chat/completions", true, 9, 3),
            unanswered.clone(),
        ];
        let sent1 = [a.clone()];
        let report = compare(&sent1, &records, None);
        assert!(report.problems.is_empty(), "{}", report.problems_text(10));
        assert_eq!(report.unanswered, 1);
        a.retries = 0;
        let sent0 = [a];
        let report = compare(&sent0, &records, None);
        assert_eq!(report.problems.len(), 1, "{}", report.problems_text(10));
        let mut answered = unanswered;
        answered["status"] = json!(200);
        let records = [answered];
        assert_eq!(compare(&sent0, &records, None).problems.len(), 2);
    }

    #[test]
    fn summary_counters_that_must_be_zero() {
        let ok = json!({"kernel": {"ringbuf_full": 0}, "pipeline": {"records": 2}, "stream": {"gaps": 0}});
        assert!(summary_problems(&ok, 2).is_empty());
        let bad = json!({"kernel": {"ringbuf_full": 3}, "pipeline": {"records": 2}, "tracker": {"gaps": 1}});
        let p = summary_problems(&bad, 1);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("kernel.ringbuf_full = 3"), "{p:?}");
    }

    #[test]
    fn timings_outside_physical_bounds_are_reported() {
        let mut s = sent(0, CHAT, "a");
        s.usage = Some(Usage {
            prompt_tokens: 9,
            completion_tokens: 3,
        });
        let mut r = record("a", "chat_completions", "/v1/chat/completions", true, 9, 3);
        r["e2e_ms"] = json!(100.0);
        r["ttft_ms"] = json!(200.0);
        let sent = [s];
        let records = [r];
        let report = compare(&sent, &records, None);
        // e2e beyond the client's, ttft beyond e2e, e2e below 3 tokens x 50 ms.
        let problems = timing_problems(&report, 50.0, 50.0);
        assert_eq!(problems.len(), 3, "{problems:?}");
        // Only ttft > e2e remains.
        let problems = timing_problems(&report, 30.0, 100.0);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("ttft_ms 200.000"), "{problems:?}");
        // A ttft before the first token could have been sent.
        let mut r = records[0].clone();
        r["ttft_ms"] = json!(0.2);
        let records = [r];
        let report = compare(&sent, &records, None);
        let problems = timing_problems(&report, 1.0, 100.0);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("before the server could send"),
            "{problems:?}"
        );
    }

    #[test]
    fn server_inconsistency_is_reported() {
        let mut short = sent(0, CHAT, "a");
        short.usage = Some(Usage {
            prompt_tokens: 9,
            completion_tokens: 2,
        });
        let mut disagree = sent(1, CHAT, "b");
        disagree.usage = Some(Usage {
            prompt_tokens: 9,
            completion_tokens: 3,
        });
        disagree.timings = Some(Timings {
            prompt_n: 4,
            predicted_n: 3,
            cache_n: None,
            prompt_ms: 1.0,
            predicted_ms: 2.0,
        });
        let mut failed = sent(2, CHAT, "c");
        failed.error = Some("HTTP 500".into());
        let problems = server_problems(&[short, disagree, failed], None);
        let text = problems.join("\n");
        assert_eq!(problems.len(), 4, "{text}");
        for needle in [
            "says 2 output tokens",
            "3 content deltas",
            "timings says (4, 3)",
            "failed: HTTP 500",
        ] {
            assert!(text.contains(needle), "{needle:?} not in {text}");
        }
    }
}
