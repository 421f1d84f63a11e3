//! Userspace pipeline throughput on real captures: decode → stream → protocol → llm → tokens,
//! the work the processor task does per captured event. Compare runs as ratios against a
//! baseline measured in the same session (`cargo xtask bench` prints them).

use std::{fs::File, io::BufReader, path::Path};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use strike::{
    capture::capture_file::CaptureFileReader,
    cost::CostConfig,
    event::CaptureEvent,
    llm::TrackerConfig,
    session::{Processor, ProcessorConfig},
    stream::StreamConfig,
};

fn load(name: &str) -> (Vec<Vec<u8>>, u64, u32) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/replay")
        .join(name)
        .join("capture.strikecap");
    let reader = CaptureFileReader::new(BufReader::new(File::open(path).unwrap())).unwrap();
    let cap = reader.header().max_capture_bytes;
    let events: Vec<CaptureEvent> = reader.map(Result::unwrap).collect();
    let bytes = events
        .iter()
        .map(|e| {
            if let CaptureEvent::Data(d) = e {
                d.bytes.len() as u64
            } else {
                0
            }
        })
        .sum();
    (
        events.iter().map(CaptureEvent::encode).collect(),
        bytes,
        cap,
    )
}

fn pipeline(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipeline");
    for name in ["llama-server", "uvicorn"] {
        let (raw, bytes, cap) = load(name);
        group.throughput(Throughput::Bytes(bytes));
        group.bench_function(format!("{name}/decode+process"), |b| {
            b.iter_batched(
                || {
                    Processor::new(ProcessorConfig {
                        stream: StreamConfig::default(),
                        tracker: TrackerConfig::default(),
                        max_capture_bytes: cap,
                        cost: CostConfig::default(),
                        expects_gpu: false,
                    })
                },
                |mut p| {
                    let mut records = Vec::new();
                    for r in &raw {
                        let _ = p.handle(CaptureEvent::decode(r).unwrap(), &mut records);
                    }
                    p.finish(&mut records);
                    records
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

/// The cost stage's overhead: the golden cost capture replayed without and with its GPU
/// samples (two devices, 100 ms apart) and prices; compare the two as a ratio.
fn cost(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/cost");
    let capture = dir.join("capture.strikecap");
    let gpu = strike::gpu::replay::read(&dir.join("gpu.jsonl")).unwrap();
    let config: strike::config::RunConfig =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("cost.yaml")).unwrap()).unwrap();
    let mut group = c.benchmark_group("cost");
    group.bench_function("replay/without-gpu", |b| {
        b.iter(|| {
            strike::cli::replay::replay_with(
                &capture,
                strike::cli::replay::ReplayOptions {
                    gpu: None,
                    cost: config.cost.clone(),
                },
            )
            .unwrap()
        });
    });
    group.bench_function("replay/with-gpu", |b| {
        b.iter(|| {
            strike::cli::replay::replay_with(
                &capture,
                strike::cli::replay::ReplayOptions {
                    gpu: Some(gpu.clone()),
                    cost: config.cost.clone(),
                },
            )
            .unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, pipeline, cost);
criterion_main!(benches);
