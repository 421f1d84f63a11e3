//! Command line: one file per subcommand. Raw arguments become a validated configuration
//! before any work starts.

pub mod check;
pub mod replay;
pub mod run;
pub mod trace;

use std::{path::PathBuf, sync::Arc, time::Duration};

use clap::{Parser, Subcommand};

use crate::{
    config::{ConfigLoader, RunConfig},
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
    /// Check whether Strike can run here: kernel, privileges, tracefs, a real load of the
    /// eBPF programs, PID namespace, cgroups, GPUs, the collector, the endpoint, and what a
    /// selection would trace. Exits non-zero when an item fails, with its fix.
    Check(check::CheckArgs),
}

/// What every tracing command (`strike trace`, `strike run`) is told by flags: the flags
/// layer of the one configuration loader, plus how long to run and where the summary goes.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct SessionArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Bytes captured from one syscall at most; the rest is counted as truncated
    /// (`capture.max_capture_bytes`, default 262144).
    #[arg(long, value_name = "BYTES")]
    pub max_capture_bytes: Option<String>,
    /// Kernel ring buffer size in MiB, a power of two (`capture.ring_mib`, default 16).
    #[arg(long, value_name = "MIB")]
    pub ring_mib: Option<String>,
    /// Sample GPUs with NVML and give each request its cost: auto (when NVML is present),
    /// on (required) or off (`gpu.enabled`).
    #[arg(long, value_enum, value_name = "MODE")]
    pub gpu: Option<GpuMode>,
    /// Milliseconds between GPU samples (`gpu.sample_interval_ms`, default 250).
    #[arg(long, value_name = "MS")]
    pub gpu_interval_ms: Option<String>,
    /// Stop by itself after this many seconds.
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub duration: Option<Duration>,
    /// Write the closing summary as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub summary_file: Option<PathBuf>,
}

impl SessionArgs {
    /// Adds the flags given to `loader`, each under its setting's name.
    pub fn layer(&self, loader: ConfigLoader) -> ConfigLoader {
        let t = &self.targets;
        let join = |v: Vec<String>| (!v.is_empty()).then(|| v.join(","));
        let flags: [(&str, &'static str, Option<String>); 10] = [
            (
                "--pid",
                "targets.pids",
                join(t.pids.iter().map(u32::to_string).collect()),
            ),
            (
                "--port",
                "targets.ports",
                join(t.ports.iter().map(u16::to_string).collect()),
            ),
            ("--comm", "targets.comms", join(t.comms.clone())),
            ("--cgroup", "targets.cgroups", join(t.cgroups.clone())),
            (
                "--container",
                "targets.containers",
                join(t.containers.clone()),
            ),
            (
                "--no-follow",
                "targets.follow_children",
                t.no_follow.then(|| "false".to_owned()),
            ),
            (
                "--max-capture-bytes",
                "capture.max_capture_bytes",
                self.max_capture_bytes.clone(),
            ),
            ("--ring-mib", "capture.ring_mib", self.ring_mib.clone()),
            ("--gpu", "gpu.enabled", self.gpu.map(GpuMode::enabled)),
            (
                "--gpu-interval-ms",
                "gpu.sample_interval_ms",
                self.gpu_interval_ms.clone(),
            ),
        ];
        loader.flags(flags)
    }
}

/// A positive, finite number of seconds (`--duration`).
fn parse_secs(text: &str) -> Result<Duration, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| format!("expected a positive number of seconds, got {text:?}"))
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
    /// The mode of `gpu.enabled`: `null`, `true`, `false`.
    pub fn from_enabled(enabled: Option<bool>) -> Self {
        match enabled {
            None => Self::Auto,
            Some(true) => Self::On,
            Some(false) => Self::Off,
        }
    }

    /// `gpu.enabled`'s spelling of the mode.
    fn enabled(self) -> String {
        match self {
            Self::Auto => "null",
            Self::On => "true",
            Self::Off => "false",
        }
        .to_owned()
    }
}

/// Says, after the session's ready line, that its `api_key_hash` secret is its own.
pub fn note_random_key(live: &LiveConfig) -> impl Fn() {
    let random = live
        .processor
        .tracker
        .key_hasher
        .as_ref()
        .is_some_and(|k| k.is_random());
    move || {
        if random {
            eprintln!("{}", crate::cost::RANDOM_KEY_NOTE);
        }
    }
}

/// Sets up the cost stage of a live session: prices, the tenant header, and GPU sampling
/// as `mode` asks (NVML; a clear message and no GPU cost where it is absent, unless `On`);
/// and the byte budgets of the connections' buffers (`capture.buffers_mib`).
pub fn live_cost(live: &mut LiveConfig, config: &RunConfig) -> anyhow::Result<()> {
    (
        live.processor.stream.max_buffered_bytes,
        live.processor.tracker.max_buffered_bytes,
    ) = config.buffer_budgets();
    let cost = config.cost.clone();
    let mode = GpuMode::from_enabled(config.gpu.enabled);
    let interval_ms = config.gpu.sample_interval_ms;
    live.processor.tracker.tenant_header = cost.tenant_header.as_deref().map(Arc::from);
    live.processor.tracker.key_hasher = Some(crate::cost::key_hasher(&cost)?);
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
                    period: Duration::from_millis(interval_ms),
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

impl From<crate::config::ConfigError> for UsageError {
    fn from(e: crate::config::ConfigError) -> Self {
        Self(e.to_string())
    }
}
