//! Command line: one file per subcommand. Raw arguments become a validated configuration
//! before any work starts.

pub mod replay;
pub mod run;
pub mod trace;

use clap::{Parser, Subcommand};

/// Strike: what each request to your self-hosted LLM costs, seen from the kernel.
#[derive(Parser, Debug)]
#[command(name = "strike", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace an inference server's requests from its socket syscalls, one record per request.
    Trace(trace::TraceArgs),
    /// Run as an agent: export one span and metrics per request over OTLP, serve Prometheus
    /// metrics and recent records; configured by file, STRIKE_* variables and flags.
    Run(run::RunArgs),
    /// Run a capture recording (`strike trace --record`) through the pipeline again.
    Replay(replay::ReplayArgs),
}

/// An error the user can act on: printed as one line, no backtrace.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
