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
    line, post_chat, root_or_skip, skip, start_prefork, start_strike, stop_strike, wait_until,
    PREFORK,
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
    let listen = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    // Strike first: nothing matches yet, and `strike run` waits for it.
    let listen_arg = format!("127.0.0.1:{listen}");
    let (strike, err, first) = start_strike([
        "run",
        "--container",
        &id[..12],
        "--no-otlp",
        "--output",
        "json",
        "--listen",
        &listen_arg,
    ]);
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
    wait_until("the release of the exited processes", || {
        let status = http_get(listen, "/v1/status");
        targets(&status).is_empty() && status["session"]["pipeline"]["targets_released"] == 2
    });

    let (records, rest) = stop_strike(strike, err, libc::SIGTERM);
    assert_eq!(records.len(), 1, "{records:?}\n{rest}");
    assert_eq!(records[0]["container_id"], id.as_str());
    assert!(rest.contains("1 records (0 partial)"), "{rest}");
}
