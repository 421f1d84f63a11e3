//! `strike replay`: runs a capture recording through the same pipeline as a live session.

use std::{fs::File, io, path::PathBuf};

use anyhow::Context as _;

use crate::{
    capture::recording::RecordingReader,
    llm::TrackerConfig,
    output::{Format, RecordWriter},
    pipeline::{Processor, ProcessorConfig},
    record::RequestRecord,
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
}

/// Replays a recording; returns its records and the stages' summary.
pub fn replay_file(path: &std::path::Path) -> anyhow::Result<(Vec<RequestRecord>, Summary)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader = RecordingReader::new(io::BufReader::new(file))
        .with_context(|| format!("reading {}", path.display()))?;
    let header = reader.header().clone();
    let mut processor = Processor::new(ProcessorConfig {
        stream: StreamConfig::default(),
        tracker: TrackerConfig {
            clock_offset_ns: header.clock_offset_ns,
            ..TrackerConfig::default()
        },
        max_capture_bytes: header.max_capture_bytes,
    });
    let mut records = Vec::new();
    for event in reader {
        let event = event.with_context(|| format!("reading {}", path.display()))?;
        let ts = event.ts_ns();
        let _ = processor.handle(event, &mut records);
        // Upkeep at the recording's own clock, as the live session ticks.
        processor.tick(ts, &mut records);
    }
    processor.finish(&mut records);
    Ok((records, processor.summary()))
}

pub fn run(args: &ReplayArgs) -> anyhow::Result<()> {
    let (records, summary) = replay_file(&args.file)?;
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
