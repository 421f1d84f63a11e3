//! `cargo xtask <command>`: Strike's setup, demo and test automation.
//!
//! - `setup`: installs everything a build and the end-to-end tests need, idempotently;
//! - `demo`: runs `strike trace` against a real llama-server with a few requests;
//! - `test`: setup, then fmt, clippy, the unit tests, and the privileged end-to-end tests.

mod ctx;
mod demo;
mod http;
mod setup;
mod test;

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
    /// Setup, then fmt, clippy, `cargo test --workspace`, a release build and the privileged
    /// end-to-end tests; stops at the first failing stage.
    Test,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = ctx::Ctx::new().and_then(|ctx| match cli.command {
        Cmd::Setup => setup::run(&ctx),
        Cmd::Demo => demo::run(&ctx),
        Cmd::Test => test::run(&ctx),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
