//! `strike replay`: runs a capture recording through the same pipeline as a live session.

use std::{fs::File, io, path::PathBuf, sync::Arc};

use anyhow::Context as _;

use super::UsageError;
use crate::{
    capture::capture_file::CaptureFileReader,
    config::ConfigLoader,
    cost::CostConfig,
    gpu::replay::ReplayLine,
    llm::TrackerConfig,
    output::{Format, RecordWriter},
    record::RequestRecord,
    session::{Processor, ProcessorConfig},
    stream::StreamConfig,
    telemetry::Summary,
};

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// The recording (`strike trace --record PATH`).
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// GPU samples recorded on the same clock (JSON lines; see `docs/COST.md`): each
    /// request gets its share of GPU time, energy and cost.
    #[arg(long, value_name = "PATH")]
    pub gpu_replay: Option<PathBuf>,
    /// A `strike run` config file whose `cost` section prices the replay.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// What a replay adds to the capture.
#[derive(Debug, Default, Clone)]
pub struct ReplayOptions {
    /// GPU samples and process facts, in time order.
    pub gpu: Option<Vec<ReplayLine>>,
    pub cost: CostConfig,
}

/// Replays a recording; returns its records and the stages' summary.
pub fn replay_file(path: &std::path::Path) -> anyhow::Result<(Vec<RequestRecord>, Summary)> {
    replay_with(path, ReplayOptions::default())
}

/// Replays a recording with GPU samples and prices: GPU samples enter the pipeline when
/// the capture's clock reaches them, as they would live.
pub fn replay_with(
    path: &std::path::Path,
    options: ReplayOptions,
) -> anyhow::Result<(Vec<RequestRecord>, Summary)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = CaptureFileReader::new(io::BufReader::new(file))
        .with_context(|| format!("reading {}", path.display()))?;
    let header = reader.header().clone();
    let tenant_header = options.cost.tenant_header.as_deref().map(Arc::from);
    let key_hasher = Some(crate::cost::key_hasher(&options.cost)?);
    let mut processor = Processor::new(ProcessorConfig {
        stream: StreamConfig::default(),
        tracker: TrackerConfig {
            clock_offset_ns: header.clock_offset_ns,
            tenant_header,
            key_hasher,
            ..TrackerConfig::default()
        },
        max_capture_bytes: header.max_capture_bytes,
        expects_gpu: options.gpu.is_some(),
        cost: options.cost,
    });
    let mut samples = Vec::new();
    for line in options.gpu.unwrap_or_default() {
        match line {
            ReplayLine::Process { process } => processor.process_parent(process.pid, process.ppid),
            ReplayLine::Sample(s) => samples.push(s),
        }
    }
    samples.sort_by_key(|s| s.ts_ns);
    let mut samples = samples.into_iter().peekable();
    let mut records = Vec::new();
    for event in reader {
        let event = event.with_context(|| format!("reading {}", path.display()))?;
        let ts = event.ts_ns();
        let due: Vec<_> = std::iter::from_fn(|| samples.next_if(|s| s.ts_ns <= ts)).collect();
        processor.gpu_samples(due);
        let _ = processor.handle(event, &mut records);
        // A recording holds every event in ring order: all before this one are handled.
        processor.captured_until(ts);
        // Upkeep at the recording's own clock, as the live session ticks.
        processor.tick(ts, &mut records);
    }
    // The recording is over: nothing more will be captured.
    processor.captured_until(u64::MAX);
    for sample in samples {
        let ts = sample.ts_ns;
        processor.gpu_samples(vec![sample]);
        processor.tick(ts, &mut records);
    }
    processor.finish(&mut records);
    Ok((records, processor.summary()))
}

pub fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let cost = match &args.config {
        Some(path) => {
            let loader = ConfigLoader::default().without_targets().read_file(path);
            loader
                .and_then(ConfigLoader::load)
                .map_err(UsageError::from)?
                .cost
        }
        None => CostConfig::default(),
    };
    let gpu = args
        .gpu_replay
        .as_deref()
        .map(crate::gpu::replay::read)
        .transpose()
        .map_err(|e| UsageError(e.to_string()))?;
    let (records, summary) = replay_with(&args.file, ReplayOptions { gpu, cost })?;
    let mut writer = RecordWriter::new(io::stdout().lock(), args.format);
    for r in &records {
        if let Err(e) = writer.write(r) {
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
    }
    eprint!("{}", summary.human());
    Ok(())
}
