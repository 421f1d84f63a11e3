//! `cargo xtask fuzz`: coverage-guided fuzzing of every parser and the whole tracker at the
//! live bounds, with cargo-afl (AFL++ built from the crate, stable toolchain). Not part of
//! `cargo xtask test` or CI: the smoke test (`strike-parse/tests/fuzz_smoke.rs`) runs the
//! same entry points, and every regression input, on every test run.
//!
//! Per target: seeds from the golden scenarios and recorded captures (the `seeds` binary of
//! the fuzz crate) plus what earlier runs found, the token dictionary, one `afl-fuzz` run
//! for `--minutes` or `--execs`, whichever comes first; then one table of every target's
//! `fuzzer_stats`. Crashes and hangs are minimised (`afl-tmin`) into
//! `strike-parse/tests/fuzz_regressions/<target>/`, where the smoke test replays them.
//! Work files live in `$STRIKE_CACHE/fuzz/<target>/`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use crate::ctx::{self, Ctx};

/// Every fuzz target (a `[[bin]]` of the fuzz crate).
pub const TARGETS: [&str; 8] = [
    "request_decoder",
    "response_decoder",
    "sse",
    "ndjson",
    "openai_event",
    "bounded_json",
    "content_decoding",
    "tracker",
];

/// The fuzz crate, outside the workspace.
const CRATE: &str = "strike-user/strike-parse/fuzz";
/// Where minimised crashes and hangs go, one folder per target.
const REGRESSIONS: &str = "strike-user/strike-parse/tests/fuzz_regressions";

/// What `cargo xtask fuzz` was asked for.
#[derive(Debug)]
pub struct Fuzz {
    /// Minutes per target.
    pub minutes: u64,
    /// Only these targets (all when empty).
    pub targets: Vec<String>,
    /// Stop a target after this many executions.
    pub execs: Option<u64>,
}

/// One run's `fuzzer_stats`.
#[derive(Debug, Default)]
struct Stats {
    execs_done: u64,
    execs_per_sec: f64,
    run_time: u64,
    bitmap_cvg: String,
    edges_found: u64,
    total_edges: u64,
    corpus_count: u64,
    saved_crashes: u64,
    saved_hangs: u64,
}

impl Stats {
    fn read(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let fields: BTreeMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let num = |k: &str| fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(Stats {
            execs_done: num("execs_done"),
            execs_per_sec: fields
                .get("execs_per_sec")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0),
            run_time: num("run_time"),
            bitmap_cvg: fields.get("bitmap_cvg").copied().unwrap_or("?").to_owned(),
            edges_found: num("edges_found"),
            total_edges: num("total_edges"),
            corpus_count: num("corpus_count"),
            saved_crashes: num("saved_crashes"),
            saved_hangs: num("saved_hangs"),
        })
    }
}

pub fn run(ctx: &Ctx, args: &Fuzz) -> Result<()> {
    let targets: Vec<&str> = if args.targets.is_empty() {
        TARGETS.to_vec()
    } else {
        args.targets
            .iter()
            .map(|t| {
                TARGETS.iter().copied().find(|k| k == t).with_context(|| {
                    format!("no fuzz target {t:?} (targets: {})", TARGETS.join(", "))
                })
            })
            .collect::<Result<_>>()?
    };
    if args.minutes == 0 {
        bail!("--minutes must be at least 1");
    }
    cargo_afl(ctx)?;
    let target_dir = ctx.target.join("afl");
    let t = Instant::now();
    println!("fuzz: cargo afl build --release ({CRATE}) ...");
    ctx::run(
        ctx.cargo()
            .args(["afl", "build", "--release", "--manifest-path"])
            .arg(ctx.root.join(CRATE).join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target_dir),
    )?;
    println!("fuzz: built in {}", ctx::secs(t));
    let bin = target_dir.join("release");
    let work = ctx.cache.join("fuzz");
    let seeds = work.join("seeds");
    if seeds.exists() {
        fs::remove_dir_all(&seeds).with_context(|| format!("removing {}", seeds.display()))?;
    }
    ctx::run(ctx.cmd(bin.join("seeds")).arg(&ctx.root).arg(&seeds))?;
    let dict = ctx.root.join(CRATE).join("dict/strike.dict");

    let mut results = Vec::new();
    for target in &targets {
        let (stats, found) = fuzz_target(
            ctx,
            args,
            target,
            &bin,
            &work.join(target),
            &seeds.join(target),
            &dict,
        )?;
        results.push((*target, stats, found));
    }
    print_table(&results);
    let new: Vec<&PathBuf> = results.iter().flat_map(|(_, _, f)| f).collect();
    if !new.is_empty() {
        println!();
        for p in &new {
            println!("fuzz: new regression input {}", p.display());
        }
        bail!(
            "{} crash or hang input(s) found: fix them; `cargo test -p strike-parse --test fuzz_smoke` replays them",
            new.len()
        );
    }
    Ok(())
}

/// One AFL++ run of `target`; returns its stats and the regression inputs it left.
fn fuzz_target(
    ctx: &Ctx,
    args: &Fuzz,
    target: &str,
    bin: &Path,
    dir: &Path,
    input: &Path,
    dict: &Path,
) -> Result<(Stats, Vec<PathBuf>)> {
    let out = dir.join("out");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::create_dir_all(input)?;
    // What the last run found seeds this one.
    keep_queue(&out.join("default/queue"), input)?;
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("removing {}", out.display()))?;
    }
    let log = dir.join("fuzz.log");
    println!(
        "fuzz: {target}: {} min{} (log {}) ...",
        args.minutes,
        args.execs
            .map(|n| format!(" or {n} executions"))
            .unwrap_or_default(),
        log.display()
    );
    let mut cmd = ctx.cargo();
    cmd.args(["afl", "fuzz", "-i"])
        .arg(input)
        .arg("-o")
        .arg(&out)
        .arg("-x")
        .arg(dict)
        // A run slower than this is a hang: no input of the targets needs 2 s.
        .args(["-t", "2000", "-V"])
        .arg((args.minutes * 60).to_string());
    if let Some(n) = args.execs {
        cmd.arg("-E").arg(n.to_string());
    }
    cmd.arg(bin.join(target))
        .env("AFL_NO_UI", "1")
        .env("AFL_SKIP_CPUFREQ", "1")
        // Core dumps and CPU binding are the machine's business, not this run's.
        .env("AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES", "1")
        .env("AFL_NO_AFFINITY", "1")
        .stdout(fs::File::create(&log)?)
        .stderr(Stdio::inherit());
    ctx::run(&mut cmd).with_context(|| format!("fuzzing {target}, see {}", log.display()))?;
    let stats = Stats::read(&out.join("default/fuzzer_stats"))?;
    let found = minimise(ctx, &bin.join(target), target, &out.join("default"))?;
    Ok((stats, found))
}

fn print_table(results: &[(&str, Stats, Vec<PathBuf>)]) {
    println!();
    println!(
        "{:<17} {:>12} {:>9} {:>8} {:>13} {:>7} {:>7} {:>7} {:>6}",
        "target", "execs", "execs/s", "bitmap", "edges", "corpus", "crashes", "hangs", "secs"
    );
    for (target, s, _) in results {
        println!(
            "{:<17} {:>12} {:>9.0} {:>8} {:>13} {:>7} {:>7} {:>7} {:>6}",
            target,
            s.execs_done,
            s.execs_per_sec,
            s.bitmap_cvg,
            format!("{}/{}", s.edges_found, s.total_edges),
            s.corpus_count,
            s.saved_crashes,
            s.saved_hangs,
            s.run_time
        );
    }
}

/// cargo-afl, installed from crates.io when missing; installing builds AFL++ for this
/// toolchain (it needs a C compiler and make), and `cargo afl config --build` does when
/// the toolchain changed since.
fn cargo_afl(ctx: &Ctx) -> Result<()> {
    let present = ctx
        .cargo()
        .args(["afl", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        println!("fuzz: cargo install cargo-afl (builds AFL++, a few minutes) ...");
        ctx::run(ctx.cargo().args(["install", "cargo-afl", "--locked"]))?;
    }
    let out = ctx
        .cargo()
        .args(["afl", "config", "--build"])
        .output()
        .context("running cargo afl config --build")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && !stderr.contains("already built") {
        bail!("cargo afl config --build failed: {stderr}");
    }
    Ok(())
}

/// Copies a finished run's queue into the next run's seeds.
fn keep_queue(queue: &Path, seeds: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(queue) else {
        return Ok(());
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_file() {
            let name = entry.file_name().to_string_lossy().replace([':', ','], "_");
            fs::copy(&path, seeds.join(format!("queue-{name}")))?;
        }
    }
    Ok(())
}

/// Minimises each crash and hang of a run into the regression folder; returns the files
/// written.
fn minimise(ctx: &Ctx, bin: &Path, target: &str, out: &Path) -> Result<Vec<PathBuf>> {
    let dest = ctx.root.join(REGRESSIONS).join(target);
    let mut written = Vec::new();
    for (kind, hang) in [("crashes", false), ("hangs", true)] {
        let Ok(entries) = fs::read_dir(out.join(kind)) else {
            continue;
        };
        let mut inputs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("id:"))
            })
            .collect();
        inputs.sort();
        for (i, input) in inputs.iter().enumerate() {
            fs::create_dir_all(&dest)?;
            let name = format!("{}-{}-{i:02}", if hang { "hang" } else { "crash" }, stamp());
            let min = dest.join(&name);
            let mut cmd = ctx.cargo();
            cmd.args(["afl", "tmin"]);
            if hang {
                cmd.arg("-H");
            }
            cmd.args(["-t", "2000", "-i"])
                .arg(input)
                .arg("-o")
                .arg(&min)
                .arg("--")
                .arg(bin)
                .env("AFL_NO_AFFINITY", "1")
                .stdout(Stdio::null());
            if ctx::run(&mut cmd).is_err() || !min.exists() {
                // Keep it unminimised rather than lose it.
                fs::copy(input, &min)?;
            }
            written.push(min);
        }
    }
    Ok(written)
}

/// Seconds since the epoch, to name regression inputs apart across runs.
fn stamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fuzzer_stats() {
        let dir = std::env::temp_dir().join(format!("xtask-fuzz-stats-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fuzzer_stats");
        fs::write(
            &path,
            "run_time          : 61\nexecs_done        : 123456\nexecs_per_sec     : 2023.50\n\
             corpus_count      : 77\nsaved_crashes     : 2\nsaved_hangs       : 1\n\
             bitmap_cvg        : 12.34%\nedges_found       : 600\ntotal_edges       : 4862\n",
        )
        .unwrap();
        let s = Stats::read(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(s.execs_done, 123_456);
        assert!((s.execs_per_sec - 2023.5).abs() < 1e-9);
        assert_eq!((s.edges_found, s.total_edges), (600, 4862));
        assert_eq!((s.saved_crashes, s.saved_hangs), (2, 1));
        assert_eq!(
            (s.bitmap_cvg.as_str(), s.corpus_count, s.run_time),
            ("12.34%", 77, 61)
        );
    }
}
