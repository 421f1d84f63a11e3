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

use super::{live_cost, SessionArgs, UsageError};
use crate::{
    capture::{self, Capture},
    config::{ConfigLoader, RunConfig},
    output::{Format, RecordWriter},
    session::{run_live, LiveConfig},
};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
A config file (--config) gives defaults that these flags override, as for `strike run`; \
the STRIKE_* variables configure `strike run` only. See docs/CONFIG.md.")]
pub struct TraceArgs {
    #[command(flatten)]
    pub session: SessionArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// A `strike run` config file: its settings apply where no flag is given (its `cost`
    /// section prices the requests; OTLP and the endpoint are `strike run`'s alone).
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Record every capture event to this file, for `strike replay`. It holds raw payloads,
    /// prompts and credentials included: it is created readable by its owner only.
    #[arg(long, value_name = "PATH")]
    pub record: Option<PathBuf>,
    /// Size cap of the recording: past it, later events are left out (counted and logged).
    #[arg(long, value_name = "MIB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub record_max_mib: u64,
}

impl TraceArgs {
    /// The configuration: the file when given, then the flags; validated once.
    pub fn load_config(&self) -> Result<RunConfig, UsageError> {
        let mut loader = ConfigLoader::default();
        if let Some(path) = &self.config {
            loader = loader.read_file(path)?;
        }
        Ok(self.session.layer(loader).load()?)
    }
}

/// Runs the session; returns whether it ended cleanly.
pub fn run(args: &TraceArgs) -> anyhow::Result<()> {
    let config = args.load_config()?;
    capture::preflight()?;
    let selector = config.targets.clone();
    let targets_now = selector.resolve(&capture::procfs::Proc::default());
    if targets_now.is_empty() {
        return Err(UsageError(format!(
            "no running process matches {}",
            selector.describe()
        ))
        .into());
    }
    let record_file = match &args.record {
        Some(path) => {
            Some(create_private(path).with_context(|| format!("creating {}", path.display()))?)
        }
        None => None,
    };
    let capture_config = config.capture();
    let capture = Capture::load(&capture_config)?;

    let stop = Arc::new(AtomicBool::new(false));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let mut live = LiveConfig::new(selector, capture_config.max_capture_bytes);
    live.duration = args.session.duration;
    live.record_file = record_file;
    live.record_max_bytes = args.record_max_mib << 20;
    live_cost(&mut live, &config)?;
    let format = args.format;
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
        let note = super::note_random_key(&live);
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
                note();
            },
            sink,
        )
        .await
    })?;
    runtime.shutdown_timeout(Duration::from_millis(200));

    eprint!("{}", summary.human());
    if let Some(path) = &args.session.summary_file {
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

/// A new file only its owner can read (a recording holds prompts and API keys): never an
/// existing one (`O_EXCL`, which a symlink counts as), never through a symlink
/// (`O_NOFOLLOW`), mode 0600 whatever the umask.
fn create_private(path: &std::path::Path) -> io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                io::Error::new(
                    e.kind(),
                    "it exists (Strike writes a recording only to a new file)",
                )
            } else {
                e
            }
        })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn recordings_are_new_private_files_never_through_a_symlink() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("strike-record-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("capture.strikecap");
        drop(create_private(&path).unwrap());
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = create_private(&path).unwrap_err();
        assert!(again.to_string().contains("only to a new file"), "{again}");
        let target = dir.join("elsewhere");
        fs::write(&target, "keep me").unwrap();
        let link = dir.join("link.strikecap");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(create_private(&link).is_err());
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me");
        fs::remove_dir_all(&dir).unwrap();
    }

    fn trace(args: &[&str]) -> Result<RunConfig, String> {
        let cli = Cli::try_parse_from(["strike", "trace"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        let Command::Trace(args) = cli.command else {
            unreachable!("parsed as trace")
        };
        args.load_config().map_err(|e| e.0)
    }

    #[test]
    fn flags_are_the_loaders_last_layer() {
        let c = trace(&["--pid", "1", "--ring-mib", "8", "--gpu", "off"]).unwrap();
        assert_eq!(c.targets.pids, [1]);
        assert_eq!(c.capture().ring_bytes, 8 << 20);
        assert_eq!(c.gpu.enabled, Some(false));
        assert_eq!(
            c.capture.max_capture_bytes,
            strike_common::DEFAULT_MAX_CAPTURE
        );
    }

    #[test]
    fn errors_name_the_flag_that_gave_the_value() {
        let e = trace(&[]).unwrap_err();
        assert!(e.contains("say what to trace"), "{e}");
        let e = trace(&["--pid", "1", "--ring-mib", "3"]).unwrap_err();
        assert!(
            e.starts_with("--ring-mib=\"3\": capture.ring_mib must be a power of two"),
            "{e}"
        );
        let cap = (strike_common::MAX_CAPTURE_LIMIT + 1).to_string();
        let e = trace(&["--pid", "1", "--max-capture-bytes", &cap]).unwrap_err();
        assert!(e.starts_with("--max-capture-bytes="), "{e}");
        let e = trace(&["--comm", "a-name-longer-than-15"]).unwrap_err();
        assert!(
            e.starts_with("--comm=\"a-name-longer-than-15\": comm"),
            "{e}"
        );
        let e = trace(&["--pid", "1", "--duration=-1"]).unwrap_err();
        assert!(e.contains("--duration") && e.contains("positive"), "{e}");
        let e = trace(&["--pid", "1", "--duration", "0"]).unwrap_err();
        assert!(e.contains("--duration") && e.contains("positive"), "{e}");
    }

    #[test]
    fn the_config_file_is_a_layer_beneath_the_flags() {
        let dir = std::env::temp_dir().join(format!("strike-trace-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("strike.yaml");
        fs::write(
            &path,
            "targets: {ports: [8000]}\ncapture: {ring_mib: 3}\ncost: {pue: 1.3}\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let e = trace(&["-c", file]).unwrap_err();
        assert_eq!(
            e,
            format!(
                "config file {file}, capture.ring_mib: capture.ring_mib must be a power of two \
                 up to 1024, got 3"
            )
        );
        let c = trace(&["-c", file, "--ring-mib", "4", "--pid", "7"]).unwrap();
        assert_eq!(
            (
                c.capture.ring_mib,
                c.targets.ports.as_slice(),
                c.targets.pids.as_slice()
            ),
            (4, &[8000][..], &[7][..])
        );
        assert!((c.cost.pue - 1.3).abs() < 1e-12);
        fs::remove_dir_all(&dir).unwrap();
    }
}
