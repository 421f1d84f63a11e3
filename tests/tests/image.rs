//! The container image (`cargo xtask image`, `$STRIKE_IMAGE`) as the `DaemonSet` runs it,
//! minus the kubelet: podman, the host's PID namespace, uid 0 holding only the four
//! capabilities with `no_new_privs`, podman's default seccomp profile, a read-only root,
//! tracefs and the cgroup hierarchy mounted read-only.
//!
//! - what the image is: labels, entrypoint, health check, size, no shell;
//! - `strike check` in it passes (and loads the programs), and fails with its fix without
//!   tracefs or without the capabilities;
//! - `strike trace` in it, against llama-server on the host, records every request exactly.
//!
//! Run through `cargo xtask test` (its `image-e2e` stage); skips without `$STRIKE_IMAGE`,
//! except under `CI=true`.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{ensure, Context as _, Result};
use serde_json::Value;
use strike_tests::env::{e2e_env, Need, STRIKE_CAPS};
use strike_tests::process::{container_args, remove_container, runtime_flags, Launch, PODMAN};
use strike_tests::scenario::trace_and_check;
use strike_tests::servers;

/// The image shipped: the binary stripped (9.5 MB) on libc6 and libgcc-s1. Well above what
/// it is, well below a Debian base with a shell and apt (about 120 MB).
const MAX_IMAGE_BYTES: u64 = 48_000_000;

fn image_env(test: &str, needs: &[Need]) -> Option<(String, strike_tests::env::TestEnv)> {
    let env = e2e_env(test, needs)?;
    Some((env.image.clone()?, env))
}

/// `podman run` of `image` with the container flags of the harness, then `edit` of them
/// (dropping a mount or the capabilities), then `args`.
fn podman_run(image: &str, name: &str, edit: impl Fn(&str) -> bool, args: &[&str]) -> Output {
    let dir = std::env::temp_dir();
    remove_container(name);
    let out = Command::new(PODMAN)
        .args(container_args(name, &dir).iter().filter(|a| edit(a)))
        .arg(image)
        .args(args)
        .output()
        .expect("run podman");
    remove_container(name);
    out
}

fn json(out: &Output) -> Result<Value> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).with_context(|| {
        format!(
            "not a JSON report: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn item<'a>(report: &'a Value, name: &str) -> Result<&'a Value> {
    report["checks"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .with_context(|| format!("no item {name} in {report:#}"))
}

/// Whether podman's default profile has a rule allowing `bpf` to a holder of `CAP_BPF`.
fn podman_default_allows_bpf() -> Result<bool> {
    let text = std::fs::read_to_string("/usr/share/containers/seccomp.json")?;
    let profile: Value = serde_json::from_str(&text)?;
    Ok(profile["syscalls"].as_array().is_some_and(|rules| {
        rules.iter().any(|r| {
            r["action"] == "SCMP_ACT_ALLOW"
                && r["names"]
                    .as_array()
                    .is_some_and(|n| n.iter().any(|n| n == "bpf"))
                && r["includes"]["caps"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c == "CAP_BPF"))
        })
    }))
}

fn inspect(image: &str, format: &str) -> Result<String> {
    let out = Command::new(PODMAN)
        .args(["image", "inspect", "--format", format, image])
        .output()?;
    ensure!(out.status.success(), "podman image inspect {image} failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
#[ignore = "privileged (root, podman, the image): run through `cargo xtask test`"]
fn image_is_what_ships() -> Result<()> {
    let Some((image, _)) = image_env("image what-ships", &[Need::Image]) else {
        return Ok(());
    };
    let size: u64 = inspect(&image, "{{.Size}}")?.parse()?;
    let layers = inspect(&image, "{{len .RootFS.Layers}}")?;
    let labels = inspect(&image, "{{json .Labels}}")?;
    let config = inspect(&image, "{{json .Config}}")?;
    let health = inspect(&image, "{{json .HealthCheck}}")?;
    println!(
        "image {image}: {size} bytes, {layers} layers\nlabels {labels}\nconfig {config}\nhealth check {health}"
    );
    let labels: Value = serde_json::from_str(&labels)?;
    let config: Value = serde_json::from_str(&config)?;
    let health: Value = serde_json::from_str(&health)?;
    let (version, rev) = image
        .rsplit_once(':')
        .and_then(|(_, tag)| tag.split_once('-'))
        .context("the image tag is VERSION-REVISION")?;
    ensure!(
        labels["org.opencontainers.image.version"] == version,
        "version label {labels}"
    );
    ensure!(
        labels["org.opencontainers.image.revision"] == rev,
        "revision label {labels} (tag revision {rev})"
    );
    for key in ["title", "description", "created", "licenses", "base.name"] {
        let v = &labels[format!("org.opencontainers.image.{key}")];
        ensure!(v.as_str().is_some_and(|s| !s.is_empty()), "no {key} label");
    }
    ensure!(
        config["Entrypoint"] == serde_json::json!(["/usr/local/bin/strike"]),
        "entrypoint {}",
        config["Entrypoint"]
    );
    ensure!(
        health["Test"]
            == serde_json::json!([
                "CMD",
                "/usr/local/bin/strike",
                "check",
                "--no-load",
                "--no-otlp"
            ]),
        "health check {health}"
    );
    // The health check's command, run as the runtime would in the DaemonSet's container.
    let probe = podman_run(
        &image,
        "strike-test-health",
        |_| true,
        &["check", "--no-load", "--no-otlp"],
    );
    ensure!(
        probe.status.success(),
        "the health check fails in the container: {}{}",
        String::from_utf8_lossy(&probe.stdout),
        String::from_utf8_lossy(&probe.stderr)
    );
    ensure!(
        size <= MAX_IMAGE_BYTES,
        "image is {size} bytes, more than {MAX_IMAGE_BYTES}"
    );
    // Nothing to run but strike: no shell for an intruder or a wrong probe.
    let shell = Command::new(PODMAN)
        .args(["run", "--rm", "--pull=never", "--network=host"])
        .args(runtime_flags())
        .args(["--entrypoint=/bin/sh", &image])
        .args(["-c", "true"])
        .output()?;
    ensure!(!shell.status.success(), "the image has a /bin/sh");
    let version_out = podman_run(&image, "strike-test-version", |_| true, &["--version"]);
    let printed = String::from_utf8_lossy(&version_out.stdout);
    ensure!(
        version_out.status.success() && printed.contains(version),
        "strike --version in the image: {printed}"
    );
    Ok(())
}

#[test]
#[ignore = "privileged (root, podman, the image): run through `cargo xtask test`"]
fn check_in_the_container() -> Result<()> {
    let Some((image, _)) = image_env("image check", &[Need::Image]) else {
        return Ok(());
    };
    let human = podman_run(
        &image,
        "strike-test-check",
        |_| true,
        &["check", "--no-otlp"],
    );
    println!(
        "strike check in {image} (exit {}):\n{}{}",
        human.status,
        String::from_utf8_lossy(&human.stdout),
        String::from_utf8_lossy(&human.stderr)
    );
    ensure!(
        human.status.success(),
        "strike check failed in the container"
    );

    let out = podman_run(
        &image,
        "strike-test-check",
        |_| true,
        &["check", "--no-otlp", "--format", "json"],
    );
    let report = json(&out)?;
    ensure!(
        out.status.success() && report["ok"] == true,
        "strike check --format json: {report:#}"
    );
    // The DaemonSet's situation, item by item: everything the capture needs held, loaded,
    // attached; the host's processes visible.
    for name in [
        "kernel",
        "btf",
        "privileges",
        "bpf_features",
        "tracefs",
        "tracepoints",
        "ebpf_load",
        "pid_namespace",
    ] {
        let it = item(&report, name)?;
        ensure!(it["status"] == "ok", "{name}: {it}");
    }
    let privileges = item(&report, "privileges")?["detail"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    for cap in STRIKE_CAPS {
        ensure!(
            privileges.contains(cap),
            "privileges names no {cap}: {privileges}"
        );
    }

    Ok(())
}

#[test]
#[ignore = "privileged (root, podman, the image): run through `cargo xtask test`"]
fn check_fails_in_the_container_with_its_fix() -> Result<()> {
    let Some((image, _)) = image_env("image check failing", &[Need::Image]) else {
        return Ok(());
    };
    // Without tracefs mounted into the container: the tracefs item fails, says how to fix it,
    // and the exit status is 1.
    let out = podman_run(
        &image,
        "strike-test-check",
        |a| !a.contains("/sys/kernel/tracing"),
        &["check", "--no-otlp", "--format", "json"],
    );
    let report = json(&out)?;
    let tracefs = item(&report, "tracefs")?;
    println!("without tracefs: exit {}, {tracefs}", out.status);
    ensure!(
        out.status.code() == Some(1) && tracefs["status"] == "fail",
        "without tracefs: exit {}, {tracefs}",
        out.status
    );
    ensure!(
        tracefs["fix"]
            .as_str()
            .is_some_and(|f| f.contains("tracing")),
        "no fix for tracefs: {tracefs}"
    );

    // Under podman's own seccomp profile: where it allows bpf(2) only with CAP_SYS_ADMIN
    // (containers-common before 0.57, Debian 12's), loading fails and the fix names the
    // runtime's profile; where it allows it with CAP_BPF, check passes.
    let out = podman_run(
        &image,
        "strike-test-check",
        |a| !a.starts_with("--security-opt=seccomp="),
        &["check", "--no-otlp", "--format", "json"],
    );
    let report = json(&out)?;
    let load = item(&report, "ebpf_load")?;
    let allows = podman_default_allows_bpf()?;
    println!(
        "under podman's default seccomp profile (allows bpf with CAP_BPF: {allows}): exit {}, {load}",
        out.status
    );
    if allows {
        ensure!(out.status.success(), "ebpf_load: {load}");
    } else {
        ensure!(
            out.status.code() == Some(1)
                && load["status"] == "fail"
                && load["fix"]
                    .as_str()
                    .is_some_and(|f| f.contains("seccomp profile blocks bpf(2)")),
            "under podman's default profile: exit {}, {load}",
            out.status
        );
    }

    // Without the capabilities (the runtime's defaults dropped, none added).
    let out = podman_run(
        &image,
        "strike-test-check",
        |a| !a.starts_with("--cap-add"),
        &["check", "--no-otlp", "--format", "json"],
    );
    let report = json(&out)?;
    let privileges = item(&report, "privileges")?;
    println!("without capabilities: exit {}, {privileges}", out.status);
    ensure!(
        out.status.code() == Some(1) && privileges["status"] == "fail",
        "without capabilities: exit {}, {privileges}",
        out.status
    );
    Ok(())
}

#[test]
#[ignore = "privileged (root, podman, the image, llama-server): run through `cargo xtask test`"]
fn trace_llama_server_from_the_container() -> Result<()> {
    let Some((image, env)) = image_env("image trace", &[Need::Image, Need::LlamaServer]) else {
        return Ok(());
    };
    let dir = servers::work_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), "image-llama-server")?;
    let service = servers::start_llama_server(&env, &dir)?;
    let plan = servers::llama_plan(&service, 15);
    let launch = Launch::Container {
        image,
        name: "strike-test-trace".to_owned(),
    };
    trace_and_check(
        "image llama-server",
        &launch,
        &dir,
        service,
        &plan,
        None,
        0.0,
    )
}
