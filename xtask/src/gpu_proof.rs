//! `cargo xtask gpu-proof --prepare [DIR]`: stages what the GPU proof needs on a machine with
//! an NVIDIA GPU where nothing can be built: a stripped release `strike` and a manifest.
//! The scripts (`tests/gpu/`) travel with the working tree; `tests/gpu/run.sh` is the run
//! half (bash and python3 only). See `docs/GPU-PROOF.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _, Result};

use crate::ctx::{self, Ctx};

/// What may travel to the GPU machine beside the working tree, all carried paths together.
const CARRY_LIMIT_BYTES: u64 = 64 << 20;

/// The staging folder inside the ignored `target/`, so that it can be carried.
pub fn default_dir(ctx: &Ctx) -> PathBuf {
    ctx.target.join("gpu-proof")
}

pub fn prepare(ctx: &Ctx, dir: &Path) -> Result<()> {
    ctx::run(
        ctx.cargo()
            .args(["build", "--release", "-p", "strike-user"]),
    )?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let staged = dir.join("strike");
    // `--strip-all`: the debug info (most of the 90 MB) is not needed there.
    let _ = std::fs::remove_file(&staged);
    ctx::run(
        ctx.cmd("objcopy")
            .arg("--strip-all")
            .arg(ctx.strike_bin())
            .arg(&staged),
    )
    .context("stripping the release binary (objcopy, binutils)")?;
    let size = std::fs::metadata(&staged)
        .with_context(|| format!("reading {}", staged.display()))?
        .len();
    let total = dir_size(dir)?;
    ensure!(
        total < CARRY_LIMIT_BYTES,
        "{} holds {total} bytes, over the {CARRY_LIMIT_BYTES} bytes that may be carried",
        dir.display()
    );
    let version = ctx::output(ctx.cmd(&staged).arg("--version"))?;
    let glibc = ctx::output(ctx.cmd("objdump").arg("-T").arg(&staged))
        .map_or_else(|e| format!("? ({e})"), |t| newest_glibc(&t));
    let commit = ctx::output(ctx.cmd("git").args(["rev-parse", "HEAD"]))
        .map_or_else(|_| "?".to_owned(), |c| c.trim().to_owned());
    let dirty = ctx::output(ctx.cmd("git").args(["status", "--porcelain"]))
        .is_ok_and(|s| !s.trim().is_empty());
    let rel = dir.strip_prefix(&ctx.root).unwrap_or(dir);
    let mut manifest = String::new();
    let _ = writeln!(manifest, "strike: {}", version.trim());
    let _ = writeln!(
        manifest,
        "commit: {commit}{}",
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
    );
    let _ = writeln!(manifest, "binary: {size} bytes, stripped; needs {glibc}");
    let _ = writeln!(manifest, "staged: {total} bytes in {}", rel.display());
    let _ = writeln!(
        manifest,
        "run: bash tests/gpu/run.sh  (carry [\"{}\"]; results in $OUT)",
        rel.display()
    );
    std::fs::write(dir.join("MANIFEST.txt"), &manifest)
        .with_context(|| format!("writing {}", dir.join("MANIFEST.txt").display()))?;
    print!("{manifest}");
    if !dir.starts_with(&ctx.target) {
        bail!(
            "{} is not under {}: only ignored paths can be carried; staged anyway",
            dir.display(),
            ctx.target.display()
        );
    }
    Ok(())
}

/// The highest `GLIBC_x.y` symbol version in `objdump -T` output.
fn newest_glibc(dynsyms: &str) -> String {
    let mut versions: Vec<(u32, u32)> = dynsyms
        .split_whitespace()
        .filter_map(|w| {
            w.trim_matches(|c| c == '(' || c == ')')
                .strip_prefix("GLIBC_")
        })
        .filter_map(|v| {
            let (a, b) = v.split_once('.')?;
            Some((a.parse().ok()?, b.split('.').next()?.parse().ok()?))
        })
        .collect();
    versions.sort_unstable();
    versions
        .last()
        .map_or_else(|| "no glibc".to_owned(), |(a, b)| format!("glibc {a}.{b}"))
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let meta = entry?.metadata()?;
        total += if meta.is_dir() { 0 } else { meta.len() };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::newest_glibc;

    #[test]
    fn newest_glibc_version_is_found() {
        let t = "0000 DF *UND* 0000 (GLIBC_2.2.5) memcpy\n0000 DF *UND* 0000 (GLIBC_2.34) __libc_start_main\n0000 DF *UND* GLIBC_2.17 clock_gettime";
        assert_eq!(newest_glibc(t), "glibc 2.34");
        assert_eq!(newest_glibc(""), "no glibc");
    }
}
