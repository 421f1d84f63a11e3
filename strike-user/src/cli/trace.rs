//! `strike trace`: a one-off trace session on this host.

use std::{
    fs,
    io::{self, Write},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use strike_common::{DEFAULT_MAX_CAPTURE, MAX_CAPTURE_LIMIT};

use super::{live_cost, GpuMode, TargetArgs, UsageError};
use crate::{
    capture::{self, Capture, CaptureConfig},
    cost::CostConfig,
    output::{Format, RecordWriter},
    session::{run_live, LiveConfig, TargetSelector},
};

#[derive(clap::Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Stop by itself after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Bytes captured from one syscall at most; the rest is reported as truncated.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_CAPTURE)]
    pub max_capture_bytes: u32,
    /// Kernel ring buffer size in MiB (a power of two).
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub ring_mib: u32,
    /// Write the closing summary as JSON to this file.
    #[arg(long, value_name = "PATH")]
    pub summary_file: Option<PathBuf>,
    /// Sample GPUs with NVML and give each request its cost: auto (when NVML is present),
    /// on (required) or off.
    #[arg(long, value_enum, default_value = "auto")]
    pub gpu: GpuMode,
    /// Milliseconds between GPU samples.
    #[arg(long, value_name = "MS", default_value_t = 250)]
    pub gpu_interval_ms: u64,
    /// A `strike run` config file whose `cost` section prices the requests.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Record every capture event to this file, for `strike replay`. It holds raw payloads,
    /// prompts and credentials included: it is created readable by its owner only.
    #[arg(long, value_name = "PATH")]
    pub record: Option<PathBuf>,
}

/// Validated settings of a trace session.
#[derive(Debug)]
pub struct TraceConfig {
    pub selector: TargetSelector,
    pub format: Format,
    pub duration: Option<Duration>,
    pub capture: CaptureConfig,
    pub summary_file: Option<PathBuf>,
    pub record: Option<PathBuf>,
    pub gpu: GpuMode,
    pub gpu_interval_ms: u64,
    pub cost: CostConfig,
}

impl TryFrom<TraceArgs> for TraceConfig {
    type Error = UsageError;

    fn try_from(a: TraceArgs) -> Result<Self, UsageError> {
        let selector = TargetSelector::from(a.targets);
        selector.validate().map_err(UsageError)?;
        let duration = match a.duration {
            Some(d) if !(d.is_finite() && d > 0.0) => {
                return Err(UsageError(format!(
                    "--duration must be a positive number of seconds, got {d}"
                )))
            }
            Some(d) => Some(Duration::from_secs_f64(d)),
            None => None,
        };
        if a.max_capture_bytes == 0 || a.max_capture_bytes > MAX_CAPTURE_LIMIT {
            return Err(UsageError(format!(
                "--max-capture-bytes must be between 1 and {MAX_CAPTURE_LIMIT}, got {}",
                a.max_capture_bytes
            )));
        }
        if !a.ring_mib.is_power_of_two() || a.ring_mib > 1024 {
            return Err(UsageError(format!(
                "--ring-mib must be a power of two up to 1024, got {}",
                a.ring_mib
            )));
        }
        Ok(TraceConfig {
            selector,
            format: a.format,
            duration,
            capture: CaptureConfig {
                max_capture_bytes: a.max_capture_bytes,
                ring_bytes: a.ring_mib << 20,
            },
            summary_file: a.summary_file,
            record: a.record,
            gpu: a.gpu,
            gpu_interval_ms: a.gpu_interval_ms,
            cost: match &a.config {
                Some(path) => super::cost_from_file(path)?,
                None => CostConfig::default(),
            },
        })
    }
}

/// Runs the session; returns whether it ended cleanly.
pub fn run(args: TraceArgs) -> anyhow::Result<()> {
    let config = TraceConfig::try_from(args)?;
    capture::preflight()?;
    let targets_now = config.selector.resolve(&capture::procfs::Proc::default());
    if targets_now.is_empty() {
        return Err(UsageError(format!(
            "no running process matches {}",
            config.selector.describe()
        ))
        .into());
    }
    let record_file = match &config.record {
        Some(path) => {
            Some(create_private(path).with_context(|| format!("creating {}", path.display()))?)
        }
        None => None,
    };
    let capture = Capture::load(&config.capture)?;

    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut live = LiveConfig::new(config.selector, config.capture.max_capture_bytes);
    live.duration = config.duration;
    live.record_file = record_file;
    live_cost(&mut live, config.cost, config.gpu, config.gpu_interval_ms)?;
    let format = config.format;
    let sink_stop = stop.clone();
    let mut writer = RecordWriter::new(io::stdout(), format);
    let mut out_closed = false;
    let sink = move |record| {
        if out_closed {
            return;
        }
        if let Err(e) = writer.write(&record) {
            // A closed pipe (`strike trace | head`) ends the session quietly.
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::error!("writing a record failed: {e}");
            }
            out_closed = true;
            sink_stop.store(true, Ordering::Relaxed);
        }
    };
    let summary = runtime.block_on(async {
        stop_on_signal(Arc::clone(&stop));
        run_live(
            capture,
            live,
            stop.clone(),
            |pids| {
                let list: Vec<String> = pids.iter().map(u32::to_string).collect();
                eprintln!(
                    "strike: attached to {} process(es) [{}]; Ctrl-C to stop",
                    pids.len(),
                    list.join(" ")
                );
            },
            sink,
        )
        .await
    })?;
    runtime.shutdown_timeout(Duration::from_millis(200));

    eprint!("{}", summary.human());
    if let Some(path) = &config.summary_file {
        let json = serde_json::to_vec_pretty(&summary)?;
        fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    let _ = io::stderr().flush();
    Ok(())
}

/// Sets `stop` on SIGINT or SIGTERM (a task on the current runtime).
pub(crate) fn stop_on_signal(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        wait_for_signal().await;
        stop.store(true, Ordering::Relaxed);
    });
}

async fn wait_for_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn create_private(path: &std::path::Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> TraceArgs {
        TraceArgs {
            targets: TargetArgs {
                pids: vec![1],
                ..TargetArgs::default()
            },
            format: Format::Json,
            duration: None,
            max_capture_bytes: DEFAULT_MAX_CAPTURE,
            ring_mib: 16,
            summary_file: None,
            record: None,
            gpu: GpuMode::Off,
            gpu_interval_ms: 250,
            config: None,
        }
    }

    #[test]
    fn validates_arguments() {
        assert!(TraceConfig::try_from(args()).is_ok());
        let none = TraceArgs {
            targets: TargetArgs::default(),
            ..args()
        };
        assert!(TraceConfig::try_from(none)
            .unwrap_err()
            .0
            .contains("say what to trace"));
        assert!(TraceConfig::try_from(TraceArgs {
            duration: Some(-1.0),
            ..args()
        })
        .is_err());
        assert!(TraceConfig::try_from(TraceArgs {
            max_capture_bytes: MAX_CAPTURE_LIMIT + 1,
            ..args()
        })
        .is_err());
        assert!(TraceConfig::try_from(TraceArgs {
            ring_mib: 3,
            ..args()
        })
        .is_err());
        let ok = TraceConfig::try_from(TraceArgs {
            duration: Some(1.5),
            ring_mib: 8,
            ..args()
        })
        .unwrap();
        assert_eq!(ok.duration, Some(Duration::from_millis(1500)));
        assert_eq!(ok.capture.ring_bytes, 8 << 20);
    }
}
