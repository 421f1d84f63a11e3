//! Privileged tests of `strike check` (the real binary): as root it loads and attaches the
//! programs and passes; as a uid without capabilities, and without tracefs, it fails with
//! exit status 1, naming each failing item and its fix; with a selection it lists the
//! server it would trace; at an address a running `strike run` serves, it reads `/healthz`
//! (the container image's health probe).
//!
//! Skips (with the reason printed) when not root, except under `CI=true`.

use std::{
    net::TcpListener,
    process::{Command, Output},
};

use serde_json::Value;

mod privileged;
use privileged::{prefork_command, root_or_skip, start_prefork, start_strike, wait_until};

const STRIKE: &str = env!("CARGO_BIN_EXE_strike");
/// Capabilities as `setpriv` names them: the `DaemonSet`'s list.
const CAPS: &str = "-all,+bpf,+perfmon,+dac_read_search,+sys_ptrace";

fn report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "not a JSON report ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn item<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no item {name} in {report:#}"))
}

fn status<'a>(report: &'a Value, name: &str) -> &'a str {
    item(report, name)["status"].as_str().unwrap_or("")
}

/// `strike check --format json --no-otlp ARGS`, as this process.
fn check(args: &[&str]) -> Output {
    Command::new(STRIKE)
        .args(["check", "--format", "json", "--no-otlp"])
        .args(args)
        .output()
        .expect("run strike check")
}

/// `strike check` as uid 65534 with `caps`, optionally in a mount namespace of its own with
/// tracefs unmounted.
fn check_as(caps: &str, unmount_tracefs: bool, args: &[&str]) -> Output {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"]);
    let unmount = if unmount_tracefs {
        "umount /sys/kernel/tracing && "
    } else {
        ""
    };
    let setpriv = if caps.is_empty() {
        String::new()
    } else {
        format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps={caps} --ambient-caps={caps} --bounding-set={caps} -- "
        )
    };
    cmd.arg(format!(
        "{unmount}exec {setpriv}\"$0\" check --format json --no-otlp \"$@\""
    ))
    .arg(STRIKE)
    .args(args);
    cmd.output().expect("run strike check in a namespace")
}

#[test]
fn root_passes_with_the_programs_loaded() {
    if !root_or_skip() {
        return;
    }
    let out = check(&["--listen", "none"]);
    let r = report(&out);
    assert!(out.status.success(), "{r:#}");
    assert_eq!(r["ok"], true);
    for name in [
        "kernel",
        "btf",
        "privileges",
        "bpf_features",
        "tracefs",
        "tracepoints",
        "ebpf_load",
        "pid_namespace",
        "cgroup",
        "gpu",
        "otlp",
        "endpoint",
    ] {
        assert_ne!(status(&r, name), "fail", "{name}: {r:#}");
    }
    for name in [
        "kernel",
        "privileges",
        "bpf_features",
        "tracefs",
        "tracepoints",
        "ebpf_load",
        "pid_namespace",
    ] {
        assert_eq!(status(&r, name), "ok", "{name}: {r:#}");
    }
    let load = item(&r, "ebpf_load")["detail"].as_str().unwrap();
    assert!(load.contains("programs loaded and attached to"), "{load}");
    assert!(load.ends_with("then detached"), "{load}");
}

#[test]
fn without_capabilities_each_failure_has_its_fix() {
    if !root_or_skip() {
        return;
    }
    let out = check_as("-all", false, &[]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(r["ok"], false);
    let privileges = item(&r, "privileges");
    assert_eq!(privileges["status"], "fail");
    let detail = privileges["detail"].as_str().unwrap();
    assert!(detail.starts_with("uid 65534;"), "{detail}");
    for cap in [
        "CAP_BPF (",
        "CAP_PERFMON (",
        "CAP_DAC_READ_SEARCH (",
        "CAP_SYS_PTRACE (",
    ] {
        assert!(detail.contains(cap), "{cap} not named: {detail}");
    }
    let fix = privileges["fix"].as_str().unwrap();
    assert!(
        fix.contains("setcap cap_bpf,cap_perfmon,cap_dac_read_search,cap_sys_ptrace+ep"),
        "{fix}"
    );
    // tracefs is there but root-only: said so, not "not mounted".
    let tracefs = item(&r, "tracefs");
    assert_eq!(tracefs["status"], "fail");
    assert!(
        tracefs["detail"]
            .as_str()
            .unwrap()
            .contains("cannot read it"),
        "{tracefs}"
    );
    assert_eq!(status(&r, "ebpf_load"), "skip");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("strike: check failed: privileges, tracefs"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn without_tracefs_root_mounts_it_and_capabilities_alone_cannot() {
    if !root_or_skip() {
        return;
    }
    // Root (CAP_SYS_ADMIN): a warning, and the load mounts tracefs and attaches.
    let out = check_as("", true, &["--listen", "none"]);
    let r = report(&out);
    assert!(out.status.success(), "{r:#}");
    assert_eq!(status(&r, "tracefs"), "warn", "{r:#}");
    assert_eq!(status(&r, "ebpf_load"), "ok", "{r:#}");
    // The four capabilities: mounting is not theirs to do.
    let out = check_as(CAPS, true, &["--listen", "none"]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    let tracefs = item(&r, "tracefs");
    assert_eq!(tracefs["status"], "fail", "{r:#}");
    assert!(
        tracefs["detail"].as_str().unwrap().contains("not mounted"),
        "{tracefs}"
    );
    assert!(
        tracefs["fix"]
            .as_str()
            .unwrap()
            .contains("mount -t tracefs tracefs /sys/kernel/tracing"),
        "{tracefs}"
    );
    assert_eq!(status(&r, "privileges"), "ok", "{r:#}");
    // Not tried: tracefs is the one failure, reported once.
    assert_eq!(status(&r, "ebpf_load"), "skip", "{r:#}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("strike: check failed: tracefs\n"),
        "{stderr}"
    );
}

#[test]
fn a_selection_lists_what_would_be_traced() {
    if !root_or_skip() {
        return;
    }
    let (server, _out, port) = start_prefork(prefork_command());
    let pid = u64::from(server.0.id());
    let port_arg = port.to_string();
    let out = check(&["--no-load", "--listen", "none", "--port", &port_arg]);
    let r = report(&out);
    assert!(out.status.success(), "{r:#}");
    assert_eq!(status(&r, "targets"), "ok", "{r:#}");
    let targets = r["targets"].as_array().unwrap();
    let server = targets
        .iter()
        .find(|t| t["pid"] == pid)
        .unwrap_or_else(|| panic!("server {pid} not listed: {r:#}"));
    assert!(
        server["listening"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| *p == u64::from(port)),
        "{server}"
    );
    assert!(server["sockets"].as_u64().unwrap() >= 1, "{server}");
    // Nothing on a port: a warning (strike run waits for it), still exit 0.
    let out = check(&["--no-load", "--listen", "none", "--port", "1"]);
    let r = report(&out);
    assert!(out.status.success(), "{r:#}");
    assert_eq!(status(&r, "targets"), "warn", "{r:#}");
}

#[test]
fn the_endpoint_of_a_running_agent_is_probed_through_healthz() {
    if !root_or_skip() {
        return;
    }
    let (_server, _out, port) = start_prefork(prefork_command());
    let listen = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let listen_arg = listen.to_string();
    let (_strike, _err, first) = start_strike([
        "run",
        "--port",
        &port.to_string(),
        "--no-otlp",
        "--gpu",
        "off",
        "--listen",
        &listen_arg,
    ]);
    assert!(first.starts_with("strike: "), "{first}");
    wait_until("strike run's endpoint accepts connections", || {
        std::net::TcpStream::connect(listen).is_ok()
    });
    let out = check(&["--no-load", "--listen", &listen_arg]);
    let r = report(&out);
    assert!(out.status.success(), "{r:#}");
    let endpoint = item(&r, "endpoint");
    assert_eq!(endpoint["status"], "ok", "{r:#}");
    assert!(
        endpoint["detail"]
            .as_str()
            .unwrap()
            .contains("/healthz answers 200"),
        "{endpoint}"
    );
    // An address held by something that is not strike: a failure.
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_arg = other.local_addr().unwrap().to_string();
    let out = check(&["--no-load", "--listen", &other_arg]);
    let r = report(&out);
    assert_eq!(out.status.code(), Some(1), "{r:#}");
    assert_eq!(status(&r, "endpoint"), "fail", "{r:#}");
}
