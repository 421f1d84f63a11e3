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

/// Which processes to trace: the same flags for `strike trace` and `strike run`.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct TargetArgs {
    /// Trace this process id (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,
    /// Trace the process(es) listening on this TCP port (repeatable).
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Trace processes with this name, as in /proc/PID/comm (repeatable).
    #[arg(long = "comm", value_name = "NAME")]
    pub comms: Vec<String>,
    /// Trace processes whose cgroup path contains this (repeatable).
    #[arg(long = "cgroup", value_name = "SUBSTRING")]
    pub cgroups: Vec<String>,
    /// Trace the processes of this container: its id, or a prefix of 12+ hex digits
    /// (repeatable).
    #[arg(long = "container", value_name = "ID")]
    pub containers: Vec<String>,
    /// Do not follow the children and workers of the selected processes.
    #[arg(long)]
    pub no_follow: bool,
}

impl From<TargetArgs> for crate::pipeline::TargetSelector {
    fn from(a: TargetArgs) -> Self {
        Self {
            pids: a.pids,
            ports: a.ports,
            comms: a.comms,
            cgroups: a.cgroups,
            containers: a.containers,
            follow_children: !a.no_follow,
        }
    }
}

/// An error the user can act on: printed as one line, no backtrace.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
