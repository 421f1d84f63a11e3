//! The `strike` binary.

use std::process::ExitCode;

use clap::Parser as _;
use strike::cli::{Cli, Command, UsageError};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STRIKE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Trace(args) => strike::cli::trace::run(&args),
        Command::Run(args) => strike::cli::run::run(&args),
        Command::Replay(args) => strike::cli::replay::run(&args),
        Command::Check(args) => strike::cli::check::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if err.downcast_ref::<UsageError>().is_some() {
                eprintln!("strike: {err}");
                return ExitCode::from(2);
            }
            eprintln!("strike: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
