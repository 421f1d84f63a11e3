//! Builds the kernel programs (`strike-ebpf`) for `bpfel-unknown-none` and puts the object in
//! `OUT_DIR/strike-ebpf.o`, which `capture::loader` embeds.
//!
//! The eBPF crate needs a compiler that can build `core` for the BPF target and `bpf-linker`.
//! In order of preference:
//! 1. `STRIKE_EBPF_OBJECT=/path/to/obj`: use a prebuilt object as is;
//! 2. Debian's `rustc-web` + `rust-web-src` (`/usr/bin/rustc` with its library source), as
//!    `cargo xtask setup` installs on Debian machines;
//! 3. a rustup `nightly` toolchain with the `rust-src` component (a developer laptop).
//!
//! Without any of them the build still succeeds, with a warning, and `strike` says at run
//! time what is missing; nothing else in the workspace needs the BPF toolchain.

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_LIBSRC: &str = "/usr/lib/rustlib/src/rust/library";

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().context("workspace root")?.to_path_buf();
    let out = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?).join("strike-ebpf.o");
    for dir in [
        "strike-ebpf/src",
        "strike-ebpf/Cargo.toml",
        "strike-common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=STRIKE_EBPF_OBJECT");
    println!("cargo:rustc-check-cfg=cfg(strike_no_ebpf)");

    if let Some(obj) = env::var_os("STRIKE_EBPF_OBJECT") {
        fs::copy(&obj, &out).with_context(|| format!("copying {}", Path::new(&obj).display()))?;
        return Ok(());
    }
    match build_ebpf(&root) {
        Ok(Some(obj)) => {
            fs::copy(&obj, &out).with_context(|| format!("copying {}", obj.display()))?;
        }
        // A toolchain that is there but fails to compile the programs is a real error.
        Ok(None) => bail!("building strike-ebpf failed; see the compiler output above"),
        Err(err) => {
            println!("cargo:warning=strike: eBPF programs not built: {err:#}");
            println!("cargo:warning=strike: run `cargo xtask setup` (or see README, Building)");
            println!("cargo:rustc-cfg=strike_no_ebpf");
            fs::write(&out, b"")?;
        }
    }
    Ok(())
}

/// `Err` when no BPF toolchain is available, `Ok(None)` when the build itself failed.
fn build_ebpf(root: &Path) -> anyhow::Result<Option<PathBuf>> {
    let ebpf_dir = root.join("strike-ebpf");
    let target_dir = root.join("target").join("ebpf");
    let mut path = env::var_os("PATH").unwrap_or_default();
    if let Some(home) = env::var_os("CARGO_HOME")
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo").into_os_string()))
    {
        let mut p = OsString::from(PathBuf::from(home).join("bin"));
        p.push(":");
        p.push(&path);
        path = p;
    }
    if Command::new("bpf-linker")
        .arg("--version")
        .env("PATH", &path)
        .output()
        .is_err()
    {
        bail!("bpf-linker is not installed (cargo install bpf-linker)");
    }

    let mut cmd = if Path::new(DEBIAN_RUSTC).exists() && Path::new(DEBIAN_LIBSRC).exists() {
        let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        c.env("RUSTC", DEBIAN_RUSTC).env("RUSTC_BOOTSTRAP", "1");
        c
    } else if nightly_has_rust_src() {
        let mut c = Command::new("rustup");
        c.args(["run", "nightly", "cargo"]);
        c
    } else {
        bail!(
            "no compiler for the BPF target: install Debian's rustc-web and rust-web-src, \
             or `rustup toolchain install nightly --component rust-src`"
        );
    };
    // The outer cargo's settings (clippy's wrapper, host rustflags, target dir) must not leak.
    for (key, _) in env::vars_os() {
        let k = key.to_string_lossy();
        let keep = k == "CARGO_HOME" || k == "RUSTUP_HOME" || k == "RUSTUP_TOOLCHAIN";
        if !keep
            && (k.starts_with("CARGO_")
                || k.starts_with("RUSTC_WRAPPER")
                || k.starts_with("RUSTC_WORKSPACE_WRAPPER")
                || k.starts_with("RUSTFLAGS")
                || k.starts_with("RUSTDOC"))
        {
            cmd.env_remove(&key);
        }
    }
    if env::var_os("RUSTUP_TOOLCHAIN").is_some() && cmd.get_program() == "rustup" {
        cmd.env_remove("RUSTUP_TOOLCHAIN");
    }
    cmd.current_dir(&ebpf_dir)
        .env("PATH", &path)
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir);
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        return Ok(None);
    }
    Ok(Some(target_dir.join("bpfel-unknown-none/release/strike")))
}

fn nightly_has_rust_src() -> bool {
    let Ok(out) = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
    else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    out.status.success()
        && Path::new(&sysroot)
            .join("lib/rustlib/src/rust/library")
            .exists()
}
