//! Paths and process helpers shared by the xtask commands.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

/// The llama-cpp-python sdist whose vendored llama.cpp provides `llama-server`.
pub const LLAMA_CPP_PYTHON_VERSION: &str = "0.3.36";

/// Where things are.
#[derive(Debug)]
pub struct Ctx {
    /// The workspace root.
    pub root: PathBuf,
    /// `$STRIKE_CACHE`, default `~/.cache/strike`.
    pub cache: PathBuf,
    /// `$CARGO_TARGET_DIR`, default `<root>/target`.
    pub target: PathBuf,
    /// `$CARGO_HOME/bin` (default `~/.cargo/bin`), where `cargo install` puts bpf-linker.
    pub cargo_bin: PathBuf,
    /// PATH for every child: `cargo_bin` first, then the inherited PATH.
    path: OsString,
}

impl Ctx {
    pub fn new() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent dir")?
            .to_owned();
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let cache = match std::env::var_os("STRIKE_CACHE") {
            Some(c) => PathBuf::from(c),
            None => home
                .as_ref()
                .context("HOME is not set (or set STRIKE_CACHE)")?
                .join(".cache/strike"),
        };
        let target =
            std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
        let cargo_home = match std::env::var_os("CARGO_HOME") {
            Some(c) => PathBuf::from(c),
            None => home
                .context("HOME is not set (or set CARGO_HOME)")?
                .join(".cargo"),
        };
        let cargo_bin = cargo_home.join("bin");
        let inherited = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![cargo_bin.clone()];
        dirs.extend(std::env::split_paths(&inherited).filter(|d| d != &cargo_bin));
        let path = std::env::join_paths(dirs).context("PATH")?;
        Ok(Ctx {
            root,
            cache,
            target,
            cargo_bin,
            path,
        })
    }

    pub fn venv(&self) -> PathBuf {
        self.cache.join("venv")
    }

    pub fn python(&self) -> PathBuf {
        self.venv().join("bin/python")
    }

    /// rotel's collector binary inside the venv's `rotel` package.
    pub fn rotel_agent(&self) -> Option<PathBuf> {
        let lib = std::fs::read_dir(self.venv().join("lib")).ok()?;
        lib.filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/rotel/rotel-agent"))
            .find(|p| is_executable(p))
    }

    pub fn model(&self) -> PathBuf {
        self.cache.join("models/tiny.gguf")
    }

    pub fn llama_server(&self) -> PathBuf {
        self.cache.join(format!(
            "llama-server-{LLAMA_CPP_PYTHON_VERSION}/bin/llama-server"
        ))
    }

    pub fn strike_bin(&self) -> PathBuf {
        self.target.join("release/strike")
    }

    /// A command run in the workspace root with `cargo_bin` first on PATH.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root).env("PATH", &self.path);
        cmd
    }

    /// The children's PATH with `dir` in front.
    pub fn path_with(&self, dir: &Path) -> OsString {
        let dirs = std::iter::once(dir.to_owned()).chain(std::env::split_paths(&self.path));
        std::env::join_paths(dirs).unwrap_or_else(|_| self.path.clone())
    }

    /// The cargo that runs xtask.
    pub fn cargo(&self) -> Command {
        self.cmd(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
    }

    /// Finds `name` on the children's PATH.
    pub fn which(&self, name: &str) -> Option<PathBuf> {
        std::env::split_paths(&self.path)
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    }
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `cmd` with inherited stdio and fails on a non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{} failed: {status}", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout; stderr is inherited.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{} failed: {}", describe(cmd), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `program arg arg ...`, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Seconds since `t`, for messages.
pub fn secs(t: Instant) -> String {
    format!("{:.1} s", t.elapsed().as_secs_f64())
}
