//! Privileged test of `strike run` (the real binary) selecting by container: Strike starts
//! first, a server then starts inside a cgroup named as container runtimes name them
//! (`docker-<64 hex>.scope`), is picked up while Strike runs, serves a request whose record
//! carries the container id, and is released when it exits. `/v1/status` and
//! `/v1/requests/{id}` are read along the way.
//!
//! Skips (with the reason printed) when not root or when no cgroup hierarchy is writable,
//! except under `CI=true`.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;

mod privileged;
use privileged::{
    line, post_chat, root_or_skip, skip, start_prefork, start_strike, stop_strike, wait_for,
    wait_until, PREFORK,
};

/// A cgroup created for the test, removed (after its processes are gone) when dropped.
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A hierarchy where the test may create a cgroup: cgroup v2 (pure or the hybrid's
/// `unified`), else v1 `pids`.
fn cgroup_root() -> Option<&'static Path> {
    [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/pids",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.join("cgroup.procs").exists())
}

fn http_get(port: u16, path: &str) -> Value {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// `strike run ARGS --no-otlp --output json --listen 127.0.0.1:FREE`; returns it, its
/// stderr, its first status line and the endpoint's port.
fn start_run(
    args: &[&str],
) -> (
    privileged::Kill,
    std::io::BufReader<std::process::ChildStderr>,
    String,
    u16,
) {
    let listen = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen_arg = format!("127.0.0.1:{listen}");
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--no-otlp", "--output", "json", "--listen", &listen_arg]);
    let (strike, err, first) = start_strike(all);
    (strike, err, first, listen)
}

fn targets(status: &Value) -> Vec<u64> {
    status["session"]["targets"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

#[test]
fn picks_up_a_container_started_later_and_releases_it() {
    if !root_or_skip() {
        return;
    }
    let Some(root) = cgroup_root() else {
        return skip("no writable cgroup hierarchy");
    };
    let id = format!("{:016x}", u64::from(std::process::id()) << 20 | 0xabcde).repeat(4);
    let cgroup = Cgroup(root.join(format!("docker-{id}.scope")));
    if let Err(e) = std::fs::create_dir(&cgroup.0) {
        return skip(&format!("cannot create {}: {e}", cgroup.0.display()));
    }
    // Strike first: nothing matches yet, and `strike run` waits for it.
    let (strike, err, first, listen) = start_run(&["--container", &id[..12]]);
    assert!(
        first.starts_with("strike: running: 0 process(es)"),
        "{first}"
    );

    // The server starts in the container's cgroup, then forks its worker there.
    let procs = cgroup.0.join("cgroup.procs");
    let mut in_cgroup = Command::new("sh");
    in_cgroup.arg("-c").arg(format!(
        "echo $$ > {} && exec python3 {PREFORK}",
        procs.display()
    ));
    let (mut server, mut server_out, port) = start_prefork(in_cgroup);
    let parent = u64::from(server.0.id());
    wait_until("the new process to be picked up", || {
        targets(&http_get(listen, "/v1/status")).contains(&parent)
    });

    server.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let worker: u64 = line(&mut server_out).parse().unwrap();
    let response = post_chat(port).unwrap_or_default();
    assert!(
        response.contains(&format!("chatcmpl-{worker}")),
        "{response}"
    );

    // The record, by the server's response id.
    let response_id = format!("chatcmpl-{worker}");
    let mut record = Value::Null;
    wait_until("the record", || {
        record = http_get(listen, &format!("/v1/requests/{response_id}"));
        record.is_object() && record["response_id"] == response_id.as_str()
    });
    assert_eq!(record["container_id"], id.as_str(), "{record}");
    assert_eq!(record["pid"], worker);
    assert_eq!(record["server_port"], port);

    // The server exits: both processes are released.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(i32::try_from(worker).unwrap(), libc::SIGKILL) };
    drop(server);
    let mut last = Value::Null;
    let released = wait_for(|| {
        last = http_get(listen, "/v1/status");
        targets(&last).is_empty()
            && last["session"]["pipeline"]["targets_released"].as_u64() >= Some(2)
    });
    // Seen about once in fifteen runs on a loaded machine before `exited_targets_not_readded`:
    // a scan that read the worker while the kernel tore it down took it again after its exit
    // event, and only reconciliation released it. Said, not failed, should it recur.
    let pipeline = &last["session"]["pipeline"];
    eprintln!(
        "targets added {}, released {}, exited not re-added {}, reconciled {}",
        pipeline["targets_added"],
        pipeline["targets_released"],
        pipeline["exited_targets_not_readded"],
        pipeline["reconciled_targets"]
    );
    let twice = (pipeline["targets_added"] != 2).then(|| pipeline.to_string());
    if !released {
        let (_, log) = stop_strike(strike, err, libc::SIGTERM);
        panic!(
            "the exited processes were not released within {:?}: {}\n{log}",
            privileged::PATIENCE,
            last["session"]["pipeline"]
        );
    }

    let (records, rest) = stop_strike(strike, err, libc::SIGTERM);
    if let Some(counts) = twice {
        eprintln!("NOTE: a target was added twice: {counts}\n{rest}");
    }
    assert_eq!(records.len(), 1, "{records:?}\n{rest}");
    assert_eq!(records[0]["container_id"], id.as_str());
    assert!(rest.contains("1 records (0 partial)"), "{rest}");
}

/// `tests/servers/fdplay.py`: ends sockets with `close_range` and `dup2`, then reuses their
/// fd numbers for a file holding a request and a response that no network carried.
const FDPLAY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers/fdplay.py");

/// One request to the fdplay server with `x-then: then`; the response.
fn fdplay_request(port: u16, then: &str) -> String {
    let body = r#"{"model":"fdplay-model","messages":[{"role":"user","content":"hi"}]}"#;
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        conn,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-then: {then}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    response
}

/// Sockets ended without `close(2)` are no longer taken for the connection: after
/// `close_range` or a `dup2` over the socket, the file at that fd (holding a request and a
/// response no network carried) gets no record. A connection that is not HTTP is marked in
/// the kernel, which stops copying its bytes. Each is counted in `/v1/status`.
#[test]
fn sockets_ended_without_close_and_not_http_connections_are_not_captured() {
    if !root_or_skip() {
        return;
    }
    let mut cmd = Command::new("python3");
    cmd.arg(FDPLAY);
    let (server, mut server_out, port) = start_prefork(cmd);
    let pid = server.0.id().to_string();
    let (strike, err, first, listen) = start_run(&["--pid", &pid]);
    assert!(first.starts_with("strike: running: 1 process"), "{first}");
    let status = || http_get(listen, "/v1/status")["session"].clone();

    for then in ["close_range", "dup2", "close"] {
        let response = fdplay_request(port, then);
        assert!(response.contains("chatcmpl-fdplay-"), "{response}");
        let done = line(&mut server_out);
        let words: Vec<&str> = done.split(' ').collect();
        assert_eq!(words[3], then, "{done}");
        if then != "close" {
            // The file really took the socket's fd number.
            assert_eq!(words[1], words[5], "{done}");
        }
    }
    wait_until("the three records", || {
        status()["pipeline"]["records"].as_u64() == Some(3)
    });

    // Not HTTP: binary bytes, echoed; once the session has given up on the connection, more.
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut echo = [0u8; 8];
    conn.write_all(b"\x00\x01\x02\x03zmq!").unwrap();
    conn.read_exact(&mut echo).unwrap();
    wait_until("the connection given up on in the kernel", || {
        status()["pipeline"]["connections_ignored"].as_u64() == Some(1)
    });
    for _ in 0..20 {
        conn.write_all(b"\x00\x01\x02\x03more").unwrap();
        conn.read_exact(&mut echo).unwrap();
    }
    drop(conn);
    assert_eq!(line(&mut server_out).split(' ').nth(3), Some("echo"));
    let mut s = Value::Null;
    wait_until(
        "the kernel to skip the ignored connection's syscalls",
        || {
            s = status();
            s["kernel"]["ignored_calls"].as_u64() >= Some(40)
        },
    );
    let (p, k) = (&s["pipeline"], &s["kernel"]);
    // close_range ends one socket in userspace; dup2 ends one in the kernel, like close.
    assert_eq!(p["sockets_closed_implicitly"], 1, "{s}");
    assert_eq!(s["tracker"]["not_http_connections"], 1, "{s}");
    assert_eq!(k["control_events_lost"], 0, "{s}");
    eprintln!(
        "late bytes of the close_range socket dropped: {}",
        s["stream"]["bytes_after_close"]
    );

    let (records, rest) = stop_strike(strike, err, libc::SIGTERM);
    let ids: Vec<&str> = records
        .iter()
        .filter_map(|r| r["response_id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "chatcmpl-fdplay-1",
            "chatcmpl-fdplay-2",
            "chatcmpl-fdplay-3"
        ],
        "{records:?}\n{rest}"
    );
    assert!(
        records.iter().all(|r| r["model"] != "leaked-model"),
        "a file at a reused fd was taken for the socket: {records:?}"
    );
    for r in &records {
        assert_eq!(r["partial"], false, "{r}");
    }
}
