//! `cargo xtask test`: every check CI runs, in order, stopping at the first failure.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, Result};

use crate::ctx::{self, describe, Ctx};

struct Stages {
    done: Vec<String>,
}

impl Stages {
    /// Runs one stage with a banner; on failure prints which stage failed and returns the error.
    fn run(&mut self, name: &str, what: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        println!("\n==== xtask test: {name}: {what} ====");
        let t = Instant::now();
        match f() {
            Ok(()) => {
                println!("==== xtask test: {name} ok ({}) ====", ctx::secs(t));
                self.done.push(format!("{name} ok"));
                Ok(())
            }
            Err(e) => {
                println!("==== xtask test: {name} FAILED ({}) ====", ctx::secs(t));
                self.done.push(format!("{name} FAILED"));
                println!("xtask test: {}", self.done.join(", "));
                Err(e.context(format!("stage {name} failed")))
            }
        }
    }

    fn cmd(&mut self, name: &str, cmd: &mut Command) -> Result<()> {
        let what = describe(cmd);
        self.run(name, &what, || ctx::run(cmd))
    }
}

/// Debian's clippy for its `rustc-web`, the compiler that builds the kernel programs.
const DEBIAN_CLIPPY: &str = "/usr/bin/cargo-clippy";

/// Clippy over `strike-ebpf` for the BPF target, with the compiler that builds it (its own
/// workspace: the main workspace's clippy would build it for the host), when available.
fn ebpf_clippy(ctx: &Ctx) -> Option<Command> {
    if !Path::new(DEBIAN_CLIPPY).exists() || !Path::new("/usr/bin/rustc").exists() {
        return None;
    }
    let mut cmd = ctx.cmd(DEBIAN_CLIPPY);
    // The outer cargo's per-package settings must not leak into the inner build.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_") && k != "CARGO_HOME" {
            cmd.env_remove(&key);
        }
    }
    cmd.current_dir(ctx.root.join("strike-ebpf"))
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "CARGO",
            std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
        )
        .args(["clippy", "--release", "--target", "bpfel-unknown-none"])
        .args(["-Z", "build-std=core", "--target-dir"])
        .arg(ctx.target.join("ebpf-clippy"))
        .args(["--", "-D", "warnings"]);
    Some(cmd)
}

/// Why the privileged tests cannot run here, if they cannot.
pub(crate) fn e2e_blockers() -> Vec<&'static str> {
    let mut why = Vec::new();
    if !ctx::is_root() {
        why.push("not root (the tests start root servers, and strike as root or, through setpriv, with its capabilities)");
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        why.push("no kernel BTF at /sys/kernel/btf/vmlinux");
    }
    why
}

/// Adds the paths of the test servers that setup prepared (see `strike_tests::env`).
pub(crate) fn with_peers<'c>(ctx: &Ctx, cmd: &'c mut Command) -> &'c mut Command {
    cmd.env("STRIKE_LLAMA_SERVER", ctx.llama_server())
        .env("STRIKE_TINY_MODEL", ctx.model())
        .env("STRIKE_PYTHON", ctx.python())
        .env("STRIKE_KUBECTL", ctx.venv().join("bin/kubectl"));
    if let Some(agent) = ctx.rotel_agent() {
        cmd.env("STRIKE_ROTEL_AGENT", agent);
    }
    cmd
}

/// The end-to-end suites (`tests/tests/e2e.rs`, `export.rs`) against the release binary.
fn e2e_suites(ctx: &Ctx) -> Command {
    let mut e2e = ctx.cargo();
    e2e.args([
        "test",
        "-p",
        "strike-tests",
        "--release",
        "--test",
        "e2e",
        "--test",
        "export",
        "--",
        "--ignored",
        "--test-threads=1",
        "--nocapture",
    ])
    .env("STRIKE_BIN", ctx.strike_bin());
    e2e
}

pub fn run(ctx: &Ctx) -> Result<()> {
    let total = Instant::now();
    let mut s = Stages { done: Vec::new() };
    s.run("setup", "cargo xtask setup", || crate::setup::run(ctx))?;
    s.cmd("fmt", ctx.cargo().args(["fmt", "--all", "--", "--check"]))?;
    s.cmd(
        "fmt-ebpf",
        ctx.cargo()
            .args(["fmt", "--manifest-path", "strike-ebpf/Cargo.toml"])
            .args(["--", "--check"]),
    )?;
    s.cmd(
        "clippy",
        ctx.cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    match ebpf_clippy(ctx) {
        Some(mut cmd) => s.cmd("clippy-ebpf", &mut cmd)?,
        None if ctx::in_ci() => {
            anyhow::bail!("no clippy for the BPF toolchain ({DEBIAN_CLIPPY}): setup installs it")
        }
        None => {
            println!("\n==== xtask test: clippy-ebpf SKIPPED: no {DEBIAN_CLIPPY} ====");
            s.done.push("clippy-ebpf skipped".to_owned());
        }
    }
    // The harness tests run the load generator against the real servers (no privileges).
    s.cmd(
        "test",
        with_peers(ctx, ctx.cargo().args(["test", "--workspace"])),
    )?;

    // The GPU proof's checks over synthetic inputs (its run half: the e2e `gpu_proof_fake`).
    s.cmd(
        "gpu-proof-unit",
        ctx.cmd(ctx.python()).args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "tests/gpu",
            "-p",
            "test_*.py",
        ]),
    )?;

    let blockers = e2e_blockers();
    if !blockers.is_empty() && !ctx::in_ci() {
        println!(
            "\n==== xtask test: e2e SKIPPED: {} ====",
            blockers.join("; ")
        );
        s.done.push("e2e skipped".to_owned());
    } else {
        // Under CI a missing capability is not skipped here: the tests themselves fail on it.
        s.cmd(
            "build-release",
            ctx.cargo()
                .args(["build", "--release", "-p", "strike-user"]),
        )?;
        s.cmd(
            "e2e",
            with_peers(ctx, e2e_suites(ctx).env_remove("STRIKE_UNPRIVILEGED")),
        )?;
        // Again with strike as a non-root uid holding only the capabilities it asks for (the
        // DaemonSet's list): least privilege, proven on the same scenarios.
        s.cmd(
            "e2e-unprivileged",
            with_peers(ctx, e2e_suites(ctx).env("STRIKE_UNPRIVILEGED", "1")),
        )?;
        // The image the DaemonSet runs: built, then `strike check` and `strike trace` in it
        // (host PID namespace, only the four capabilities) against a server on the host.
        let mut built = None;
        s.run("image", "cargo xtask image", || {
            built = Some(crate::image::run_image(ctx, false)?);
            Ok(())
        })?;
        let built = built.context("no image")?;
        s.cmd(
            "image-e2e",
            with_peers(
                ctx,
                ctx.cargo()
                    .args(["test", "-p", "strike-tests", "--release", "--test", "image"])
                    .args(["--", "--ignored", "--test-threads=1", "--nocapture"])
                    .env("STRIKE_IMAGE", &built.image)
                    .env("STRIKE_SECCOMP_PROFILE", &built.seccomp)
                    .env(
                        "STRIKE_PODMAN_FLAGS",
                        crate::image::runtime_flags().join(" "),
                    )
                    .env_remove("STRIKE_UNPRIVILEGED"),
            ),
        )?;
    }
    println!(
        "\nxtask test: {} (total {})",
        s.done.join(", "),
        ctx::secs(total)
    );
    Ok(())
}
