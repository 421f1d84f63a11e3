//! `cargo xtask <command>`: Strike's setup, demo and test automation.
//!
//! - `setup`: installs everything a build and the end-to-end tests need, idempotently;
//! - `demo`: runs `strike trace` against a real llama-server with a few requests;
//! - `test`: setup, then fmt, clippy, the unit tests, and the privileged end-to-end tests
//!   (twice: strike as root, then as a non-root uid with only its capabilities);
//!   `test --repeat N` runs the privileged suites N times and counts passes;
//! - `image`: the container image (podman, base images from mmdebstrap), then its tests;
//! - `gpu-proof --prepare`: stages a stripped `strike` for the GPU proof (`tests/gpu/run.sh`);
//! - `fuzz`: coverage-guided fuzzing of the parsers and the tracker (cargo-afl; not in CI).

mod bench;
mod ctx;
mod demo;
mod fuzz;
mod gpu_proof;
mod http;
mod image;
mod repeat;
mod setup;
mod test;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Strike's build, setup, demo and test automation.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install the eBPF toolchain, mount tracefs, and prepare the test peers (Python venv, tiny
    /// GGUF model, llama-server) in the cache dir (`$STRIKE_CACHE`, default `~/.cache/strike`).
    /// Skips whatever is already present.
    Setup,
    /// Setup, build, then trace a real llama-server with `strike trace` while sending a few
    /// requests; SIGINT makes strike print its summary. Needs root.
    Demo,
    /// Whole-process cost of tracing: requests/s of the uvicorn app (`openai_app.py`) under `wrk`, without
    /// and with `strike trace` attached, in alternating rounds of one session; prints ratios.
    /// Needs root. (The parsers' own throughput: `cargo bench -p strike-user`.)
    Bench {
        /// Rounds per workload (each: one baseline and one traced run).
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Seconds per wrk run.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// Setup, then fmt, clippy, `cargo test --workspace`, a release build and the privileged
    /// end-to-end tests; stops at the first failing stage.
    Test {
        /// Instead: run every privileged suite (strike-user's `*privileged*` tests, the e2e
        /// and export suites) N times in a row and print how often each passed. Needs root.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        repeat: Option<u32>,
        /// With --repeat: only the suites whose name contains this (`cost`, `e2e`).
        #[arg(long, requires = "repeat")]
        only: Option<String>,
        /// With --repeat: keep every core busy meanwhile (bounded; stopped when the runs end).
        #[arg(long, requires = "repeat")]
        cpu_hog: bool,
    },
    /// Build the container image from `deploy/container/Containerfile` with podman, on base
    /// images that mmdebstrap makes from Debian packages (no registry needed): tagged
    /// `localhost/strike:VERSION` and `:VERSION-REVISION`, the debug info apart in
    /// `target/image/`. Needs root; installs podman and mmdebstrap if missing.
    Image {
        /// Also write the image as an OCI archive in `target/image/` (for `ctr images
        /// import`, `kind load image-archive`, `podman load`).
        #[arg(long)]
        save: bool,
    },
    /// Stage the GPU proof for a machine with an NVIDIA GPU where nothing can be built: a
    /// release `strike`, stripped, in DIR (default `target/gpu-proof`, an ignored path that
    /// can be carried there). The run half is `bash tests/gpu/run.sh`; see docs/GPU-PROOF.md.
    GpuProof {
        /// Build and stage into this folder (relative to the workspace root).
        #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "target/gpu-proof")]
        prepare: Option<PathBuf>,
    },
    /// Coverage-guided fuzzing (cargo-afl, installed if missing) of every parser and the
    /// whole tracker at the live bounds: seeds from the golden captures, one AFL++ run per
    /// target, then a table of executions, coverage, crashes and hangs. Crashes and hangs
    /// are minimised into `strike-user/strike-parse/tests/fuzz_regressions/`. Not run by
    /// `test` or CI.
    Fuzz {
        /// Minutes per target.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Only this target (repeatable): `request_decoder`, `response_decoder`, `sse`,
        /// `ndjson`, `openai_event`, `bounded_json`, `content_decoding`, `tracker`.
        #[arg(long = "target", value_name = "T")]
        targets: Vec<String>,
        /// Stop each target after this many executions (if before --minutes).
        #[arg(long, value_name = "M")]
        execs: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = ctx::Ctx::new().and_then(|ctx| match cli.command {
        Cmd::Setup => setup::run(&ctx),
        Cmd::Demo => demo::run(&ctx),
        Cmd::Test { repeat: None, .. } => test::run(&ctx),
        Cmd::Test {
            repeat: Some(times),
            only,
            cpu_hog,
        } => repeat::run(
            &ctx,
            &repeat::Repeat {
                times,
                only,
                cpu_hog,
            },
        ),
        Cmd::Bench { rounds, seconds } => bench::run(&ctx, rounds, seconds),
        Cmd::Image { save } => image::run_image(&ctx, save).map(|_| ()),
        Cmd::GpuProof { prepare } => {
            let dir = prepare.map_or_else(|| gpu_proof::default_dir(&ctx), |d| ctx.root.join(d));
            gpu_proof::prepare(&ctx, &dir)
        }
        Cmd::Fuzz {
            minutes,
            targets,
            execs,
        } => fuzz::run(
            &ctx,
            &fuzz::Fuzz {
                minutes,
                targets,
                execs,
            },
        ),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
