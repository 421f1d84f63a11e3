//! Command line: one file per subcommand. Raw arguments become a validated configuration
//! before any work starts.

pub mod replay;
pub mod run;
pub mod trace;

use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::{
    cost::CostConfig,
    gpu::nvml::NvmlSource,
    session::{GpuSampling, LiveConfig},
};

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

impl From<TargetArgs> for crate::session::TargetSelector {
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

/// Whether to sample GPUs (`--gpu`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GpuMode {
    /// NVML when present; say why not otherwise and go on.
    #[default]
    Auto,
    /// NVML is required.
    On,
    /// No GPU sampling.
    Off,
}

impl GpuMode {
    /// `gpu.enabled`'s spelling: `null`, `true`, `false`.
    pub fn from_enabled(enabled: Option<bool>) -> Self {
        match enabled {
            None => Self::Auto,
            Some(true) => Self::On,
            Some(false) => Self::Off,
        }
    }
}

/// The `cost` section of a `strike run` config file (prices for `strike trace` and
/// `strike replay`).
pub fn cost_from_file(path: &std::path::Path) -> Result<CostConfig, UsageError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("reading {}: {e}", path.display())))?;
    let config: crate::config::RunConfig = serde_yaml_ng::from_str(&text)
        .map_err(|e| UsageError(format!("config file {}: {e}", path.display())))?;
    config.cost.validate().map_err(UsageError)?;
    Ok(config.cost)
}

/// Sets up the cost stage of a live session: prices, the tenant header, and GPU sampling
/// as `mode` asks (NVML; a clear message and no GPU cost where it is absent, unless `On`).
pub fn live_cost(
    live: &mut LiveConfig,
    cost: CostConfig,
    mode: GpuMode,
    interval_ms: u64,
) -> anyhow::Result<()> {
    live.processor.tracker.tenant_header = cost.tenant_header.as_deref().map(Arc::from);
    live.processor.cost = cost;
    live.gpu = match mode {
        GpuMode::Off => None,
        GpuMode::Auto | GpuMode::On => match NvmlSource::new() {
            Ok(source) => {
                eprintln!(
                    "strike: GPU telemetry: {} device(s) through NVML (driver {}), every {interval_ms} ms",
                    source.devices(),
                    source.driver_version().unwrap_or_else(|| "?".to_owned()),
                );
                Some(GpuSampling {
                    source: Box::new(source),
                    period: std::time::Duration::from_millis(interval_ms),
                })
            }
            Err(e) if mode == GpuMode::On => {
                return Err(UsageError(format!("GPU sampling is required but {e}")).into())
            }
            Err(e) => {
                eprintln!("strike: no GPU telemetry ({e}); requests are traced without GPU cost");
                None
            }
        },
    };
    live.processor.expects_gpu = live.gpu.is_some();
    Ok(())
}

/// An error the user can act on: printed as one line, no backtrace.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
