//! Privileged end-to-end test of `strike trace` itself (the real binary): process-tree
//! following. The target is a prefork server whose worker is forked only after Strike has
//! attached to the parent, so its request can only be seen if the fork was followed.
//!
//! Skips (with the reason printed) when not root, except under `CI=true`.

use std::{io::Write, process::Command};

mod privileged;
use privileged::{
    line, post_chat, post_chat_to, prefork_command, root_or_skip, start_prefork, start_strike,
    stop_strike, wait_until,
};

/// Kills a process that is not our child (the forked worker) when dropped.
struct KillPid(u32);

impl Drop for KillPid {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn follows_a_worker_forked_after_attach() {
    if !root_or_skip() {
        return;
    }
    let (mut server, mut server_out, port) = start_prefork(prefork_command());
    let parent = server.0.id();

    let (strike, err, attached) =
        start_strike(["trace", "--pid", &parent.to_string(), "--format", "json"]);
    assert!(
        attached.starts_with("strike: attached to 1 process(es)"),
        "{attached}"
    );

    // Fork the worker now, and talk to it.
    server.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let worker: u32 = line(&mut server_out).parse().unwrap();
    let _worker = KillPid(worker);
    let mut response = None;
    wait_until("an answer from the worker", || {
        response = post_chat(port);
        response.is_some()
    });
    let response = response.unwrap_or_default();
    assert!(response.contains(&format!("chatcmpl-{worker}")));

    // No wait here: the worker's writes were committed to the ring before the client read
    // them, and strike drains the ring before it stops.
    let (records, rest) = stop_strike(strike, err, libc::SIGINT);
    assert_eq!(
        records.len(),
        1,
        "one request, one record: {records:?}\n{rest}"
    );
    let r = &records[0];
    assert_eq!(r["pid"], worker, "{r}");
    assert_eq!(r["response_id"], format!("chatcmpl-{worker}"));
    assert_eq!(r["path"], "/v1/chat/completions");
    assert_eq!(
        (r["input_tokens"].as_u64(), r["output_tokens"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(r["token_source"], "usage");
    assert_eq!(r["partial"], false);
    assert!(
        rest.contains("2 target process(es)"),
        "the worker is counted as a target: {rest}"
    );
}

/// With `--no-follow` a worker forked after attach is not traced: the kernel does not make
/// it a target, so its request has no record.
#[test]
fn does_not_follow_a_worker_with_no_follow() {
    if !root_or_skip() {
        return;
    }
    let (mut server, mut server_out, port) = start_prefork(prefork_command());
    let parent = server.0.id();
    let (strike, err, attached) = start_strike([
        "trace",
        "--pid",
        &parent.to_string(),
        "--no-follow",
        "--format",
        "json",
    ]);
    assert!(
        attached.starts_with("strike: attached to 1 process(es)"),
        "{attached}"
    );
    server.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let worker: u32 = line(&mut server_out).parse().unwrap();
    let _worker = KillPid(worker);
    let mut response = None;
    wait_until("an answer from the worker", || {
        response = post_chat(port);
        response.is_some()
    });
    let (records, rest) = stop_strike(strike, err, libc::SIGINT);
    assert!(records.is_empty(), "the worker was traced: {records:?}");
    assert!(rest.contains("1 target process(es)"), "{rest}");
}

/// A recording replays to exactly the records of the live session that wrote it: every field
/// but Strike's own `request_id`, `start` to the nanosecond, and what the session read from
/// `/proc` (`server_port` from the worker's listening socket when the client sent no `Host`).
#[test]
fn replay_of_a_recording_gives_the_live_records() {
    if !root_or_skip() {
        return;
    }
    let (mut server, mut server_out, port) = start_prefork(prefork_command());
    let recording = std::env::temp_dir().join(format!(
        "strike-replay-equals-live-{}.strikecap",
        std::process::id()
    ));
    // Strike writes a recording only to a new file: a stale one of an earlier run goes.
    let _ = std::fs::remove_file(&recording);
    let pid = server.0.id().to_string();
    let recording_arg = recording.to_string_lossy().into_owned();
    let (strike, err, attached) = start_strike([
        "trace",
        "--pid",
        &pid,
        "--format",
        "json",
        "--record",
        &recording_arg,
    ]);
    assert!(attached.starts_with("strike: attached"), "{attached}");

    server.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let worker: u32 = line(&mut server_out).parse().unwrap();
    let _worker = KillPid(worker);
    for host in [None, Some("models.internal:8443"), None] {
        wait_until("an answer from the worker", || {
            post_chat_to(port, host).is_some()
        });
    }
    let (live, rest) = stop_strike(strike, err, libc::SIGINT);
    assert_eq!(live.len(), 3, "{live:?}\n{rest}");

    let replay = Command::new(env!("CARGO_BIN_EXE_strike"))
        .args(["replay", "--format", "json"])
        .arg(&recording)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&recording);
    assert!(replay.status.success(), "{replay:?}");
    let replayed: Vec<serde_json::Value> = String::from_utf8(replay.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    // The session's own facts are in the records, live and replayed.
    let ports: Vec<_> = live.iter().map(|r| r["server_port"].as_u64()).collect();
    assert_eq!(
        ports,
        [Some(u64::from(port)), Some(8443), Some(u64::from(port))]
    );
    let without_id = |records: &[serde_json::Value]| -> Vec<serde_json::Value> {
        records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.as_object_mut().unwrap().remove("request_id");
                r
            })
            .collect()
    };
    let (live, replayed) = (without_id(&live), without_id(&replayed));
    for (l, r) in live.iter().zip(&replayed) {
        println!("live:     {l}\nreplayed: {r}");
    }
    assert_eq!(live, replayed, "replay differs from the live session");
}
