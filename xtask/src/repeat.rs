//! `cargo xtask test --repeat N`: runs every privileged suite N times in a row and prints
//! how often each passed, so a flaky test shows itself in one command. `--cpu-hog` keeps
//! every core busy meanwhile (a spinning thread per core, stopped when the runs end), the
//! way a loaded CI machine would.

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

use crate::{
    ctx::{self, Ctx},
    test::{e2e_blockers, with_peers},
};

/// What `--repeat` runs.
#[derive(Debug, Clone)]
pub struct Repeat {
    pub times: u32,
    /// Only the suites whose name contains this.
    pub only: Option<String>,
    pub cpu_hog: bool,
}

/// One privileged suite: a test target of a package.
struct Suite {
    name: String,
    package: &'static str,
    /// The end-to-end suites: release build, ignored tests, one at a time.
    e2e: bool,
}

impl Suite {
    /// `cargo test` of this suite, or with `build_only` its `--no-run` build.
    fn command(&self, ctx: &Ctx, build_only: bool) -> Command {
        let mut cmd = ctx.cargo();
        // As in CI: a privileged test that cannot run fails instead of skipping.
        cmd.args(["test", "-p", self.package, "--test", &self.name])
            .env("CI", "true");
        if self.e2e {
            cmd.arg("--release").env("STRIKE_BIN", ctx.strike_bin());
            with_peers(ctx, &mut cmd);
        }
        if build_only {
            cmd.arg("--no-run");
        } else if self.e2e {
            cmd.args(["--", "--ignored", "--test-threads=1", "--nocapture"]);
        }
        cmd
    }
}

/// The privileged tests of `strike-user` (one suite per `tests/*privileged*.rs`), then the
/// end-to-end suites against the real servers.
fn suites(ctx: &Ctx) -> Result<Vec<Suite>> {
    let dir = ctx.root.join("strike-user/tests");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".rs").map(str::to_owned))
        .filter(|n| n.contains("privileged"))
        .collect();
    names.sort();
    let mut suites: Vec<Suite> = names
        .into_iter()
        .map(|name| Suite {
            name,
            package: "strike-user",
            e2e: false,
        })
        .collect();
    suites.extend(["e2e", "export"].map(|name| Suite {
        name: name.to_owned(),
        package: "strike-tests",
        e2e: true,
    }));
    Ok(suites)
}

/// Spins one thread per core until dropped.
struct CpuHog {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuHog {
    /// Bounded in time as well: the threads stop by themselves after `limit`.
    fn start(limit: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let started = Instant::now();
        let threads = (0..cores)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
                        for _ in 0..100_000 {
                            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005) + 1);
                        }
                    }
                })
            })
            .collect();
        println!("xtask test --repeat: CPU hog on {cores} core(s), for at most {limit:?}");
        CpuHog { stop, threads }
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

pub fn run(ctx: &Ctx, repeat: &Repeat) -> Result<()> {
    let blockers = e2e_blockers();
    if !blockers.is_empty() {
        bail!("privileged suites cannot run here: {}", blockers.join("; "));
    }
    crate::setup::run(ctx)?;
    // Build once, quietly, so the runs time the tests and not the compiler.
    ctx::run(
        ctx.cargo()
            .args(["build", "--release", "-p", "strike-user"]),
    )?;
    let mut suites = suites(ctx)?;
    if let Some(only) = &repeat.only {
        suites.retain(|s| s.name.contains(only.as_str()));
    }
    if suites.is_empty() {
        bail!("no privileged suite matches {:?}", repeat.only);
    }
    for s in &suites {
        ctx::run(&mut s.command(ctx, true))?;
    }
    let _hog = repeat
        .cpu_hog
        .then(|| CpuHog::start(Duration::from_hours(2)));
    let mut passed: BTreeMap<&str, u32> = BTreeMap::new();
    let mut failures = Vec::new();
    let total = Instant::now();
    for round in 1..=repeat.times {
        for s in &suites {
            let t = Instant::now();
            let mut cmd = s.command(ctx, false);
            let out = cmd
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("running {}", ctx::describe(&cmd)))?;
            let ok = out.status.success();
            println!(
                "repeat {round}/{}: {} {} ({})",
                repeat.times,
                s.name,
                if ok { "passed" } else { "FAILED" },
                ctx::secs(t)
            );
            let count = passed.entry(s.name.as_str()).or_default();
            if ok {
                *count += 1;
            } else {
                let log = ctx.target.join(format!("repeat-{}-{round}.log", s.name));
                let mut text = out.stdout;
                text.extend_from_slice(&out.stderr);
                std::fs::write(&log, &text)?;
                println!("  its output: {}", log.display());
                failures.push(format!("{} (round {round})", s.name));
            }
        }
    }
    println!(
        "\nxtask test --repeat {}{} ({}):",
        repeat.times,
        if repeat.cpu_hog { " --cpu-hog" } else { "" },
        ctx::secs(total)
    );
    for (name, n) in &passed {
        println!("  {name:<20} {n}/{} passed", repeat.times);
    }
    let runs = u32::try_from(suites.len()).unwrap_or(u32::MAX) * repeat.times;
    let failed = u32::try_from(failures.len()).unwrap_or(u32::MAX);
    println!("repeat: {} passed, {failed} failed", runs - failed);
    if !failures.is_empty() {
        bail!("failed: {}", failures.join(", "));
    }
    Ok(())
}
