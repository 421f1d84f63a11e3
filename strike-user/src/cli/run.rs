//! `strike run`: the long-running agent (what the Kubernetes `DaemonSet` runs). Traces the
//! selected processes, picks up new ones and releases exited ones, exports one span and
//! metric points per request over OTLP, serves Prometheus metrics and recent records on a
//! local endpoint, and flushes on SIGTERM/SIGINT.

use std::{
    fs,
    io::{self, Write as _},
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::Context as _;

use super::{live_cost, trace::stop_on_signal, SessionArgs, UsageError};
use crate::{
    capture::{self, Capture},
    config::{ConfigLoader, RecordsOutput, RunConfig, CONFIG_FILE_VAR},
    export::Exporter,
    output::{Format, RecordWriter},
    record::RequestRecord,
    server::{self, AppState, RecentRecords},
    session::{run_live, LiveConfig},
    telemetry::{Liveness, Summary},
};

#[derive(clap::Args, Debug, Default)]
#[command(after_help = "\
Settings come from the config file, then STRIKE_* environment variables, then these flags, \
each overriding the one before; `--print-config` shows the result. Unset OTLP settings fall \
back to the standard OTEL_EXPORTER_OTLP_* / OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES \
variables. See docs/CONFIG.md.")]
pub struct RunArgs {
    /// YAML config file (default: `$STRIKE_CONFIG`).
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Print the effective configuration (credentials redacted) and exit.
    #[arg(long)]
    pub print_config: bool,
    #[command(flatten)]
    pub session: SessionArgs,
    /// OTLP collector URL (gRPC `http://host:4317`, HTTP `http://host:4318`).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP transport: grpc or http/protobuf.
    #[arg(long, value_name = "PROTOCOL")]
    pub otlp_protocol: Option<String>,
    /// Do not export over OTLP (Prometheus metrics and records stay available).
    #[arg(long)]
    pub no_otlp: bool,
    /// Address of the /metrics and /v1/requests endpoint, or `none`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Also print each record as a JSON line on stdout: none or json.
    #[arg(long, value_name = "FORMAT")]
    pub output: Option<String>,
}

impl RunArgs {
    /// Merges the file, the environment and the flags.
    pub fn load_config(&self) -> Result<RunConfig, UsageError> {
        Ok(self.loader()?.load()?)
    }

    /// The file, the environment and the flags, as layers not yet merged.
    pub fn loader(&self) -> Result<ConfigLoader, UsageError> {
        let mut loader = ConfigLoader::default();
        let file = self
            .config
            .clone()
            .or_else(|| std::env::var_os(CONFIG_FILE_VAR).map(PathBuf::from));
        if let Some(path) = file {
            loader = loader.read_file(&path)?;
        }
        let names: Vec<String> = std::env::vars_os()
            .filter_map(|(k, _)| k.into_string().ok())
            .collect();
        loader = loader.env(names.iter().map(String::as_str), |n| std::env::var(n).ok())?;
        let singles: [(&str, &'static str, Option<String>); 5] = [
            (
                "--otlp-endpoint",
                "otlp.endpoint",
                self.otlp_endpoint.clone(),
            ),
            (
                "--otlp-protocol",
                "otlp.protocol",
                self.otlp_protocol.clone(),
            ),
            (
                "--no-otlp",
                "otlp.enabled",
                self.no_otlp.then(|| "false".to_owned()),
            ),
            ("--listen", "server.listen", self.listen.clone()),
            ("--output", "output.records", self.output.clone()),
        ];
        Ok(self.session.layer(loader.flags(singles)))
    }
}

/// Runs the agent until SIGTERM/SIGINT (or `--duration`).
#[expect(
    clippy::too_many_lines,
    reason = "the agent's start-up and shutdown order, read top to bottom"
)]
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let config = args.load_config()?;
    if args.print_config {
        print!("{}", config.to_redacted_yaml());
        return Ok(());
    }
    let selector = config.targets.clone();
    let dynamic = selector.is_dynamic();
    capture::preflight()?;
    if !dynamic
        && selector
            .resolve(&capture::procfs::Proc::default())
            .is_empty()
    {
        return Err(UsageError(format!(
            "no running process matches {} (select by port, name, cgroup or container to wait \
             for processes that start later)",
            selector.describe()
        ))
        .into());
    }

    let mut export_config = config.otlp.export_config()?;
    let listen = config
        .listen_addr()
        .map_err(|e| UsageError(format!("server.listen: {e}")))?;
    export_config.prometheus = listen.is_some();
    let exporter = Arc::new(Exporter::new(&export_config).context("starting the exporter")?);
    let stats = Arc::new(Mutex::new(Summary::default()));
    exporter.observe_pipeline(Arc::clone(&stats));
    let recent = Arc::new(RecentRecords::new(
        config.server.recent_requests,
        config.otlp.include_error_messages,
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let liveness = Arc::new(Liveness::default());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("strike")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    let (server_stop, server_stopped) = tokio::sync::watch::channel(false);
    let server_task = match listen {
        Some(addr) => {
            let state = AppState {
                exporter: Arc::clone(&exporter),
                recent: Arc::clone(&recent),
                stats: Arc::clone(&stats),
                ready: Arc::clone(&ready),
                liveness: Arc::clone(&liveness),
            };
            Some(start_endpoint(&runtime, addr, state, server_stopped)?)
        }
        None => None,
    };

    let capture_config = config.capture();
    let capture = Capture::load(&capture_config)?;
    let mut live = LiveConfig::new(selector, capture_config.max_capture_bytes);
    live.duration = args.session.duration;
    live.live_stats = Some(Arc::clone(&stats));
    live.liveness = liveness;
    live_cost(&mut live, &config)?;
    let sink = record_sink(
        Arc::clone(&exporter),
        Arc::clone(&recent),
        config.output.records,
    );
    let otlp_target = if export_config.otlp {
        export_config
            .endpoint
            .clone()
            .unwrap_or_else(|| "the OTEL_EXPORTER_OTLP_* endpoint".to_owned())
    } else {
        "nowhere (OTLP off)".to_owned()
    };
    let ready_flag = Arc::clone(&ready);
    let note = super::note_random_key(&live);
    let summary = runtime.block_on(async {
        stop_on_signal(Arc::clone(&stop));
        run_live(
            capture,
            live,
            stop.clone(),
            |pids| {
                ready_flag.store(true, Ordering::Release);
                let endpoint = listen.map_or_else(String::new, |a| format!("; http://{a}/metrics"));
                eprintln!(
                    "strike: running: {} process(es) traced now{}; exporting to {otlp_target}{endpoint}",
                    pids.len(),
                    if dynamic { ", more picked up as they start" } else { "" },
                );
                note();
            },
            sink,
        )
        .await
    });
    ready.store(false, Ordering::Release);
    // Flush before the endpoint goes away: the last scrape and the last spans see it all.
    let flushed = exporter.shutdown();
    let _ = server_stop.send(true);
    if let Some(task) = server_task {
        let _ = runtime.block_on(task);
    }
    runtime.shutdown_timeout(Duration::from_millis(200));
    let mut summary = summary?;
    summary.export = export_config.otlp.then(|| exporter.stats());
    eprint!("{}", summary.human());
    if let Err(e) = flushed {
        eprintln!("strike: export shutdown: {e}");
    }
    if let Some(path) = &args.session.summary_file {
        let json = serde_json::to_vec_pretty(&summary)?;
        fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    let _ = io::stderr().flush();
    Ok(())
}

/// Binds the endpoint now (a bad address fails before capture starts) and serves it until
/// `stopped` turns true.
fn start_endpoint(
    runtime: &tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    state: AppState,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<io::Result<()>>> {
    let listener = runtime
        .block_on(server::bind(addr))
        .with_context(|| format!("listening on {addr} (server.listen)"))?;
    Ok(runtime.spawn(server::serve(listener, state, async move {
        let _ = stopped.wait_for(|s| *s).await;
    })))
}

/// Where each record goes: the exporter, the recent records, and stdout when asked.
fn record_sink(
    exporter: Arc<Exporter>,
    recent: Arc<RecentRecords>,
    output: RecordsOutput,
) -> impl FnMut(RequestRecord) + Send + 'static {
    let mut stdout =
        (output == RecordsOutput::Json).then(|| RecordWriter::new(io::stdout(), Format::Json));
    move |record: RequestRecord| {
        exporter.export(&record);
        if let Some(w) = &mut stdout {
            if w.write(&record).is_err() {
                stdout = None;
            }
        }
        recent.insert(record);
    }
}
