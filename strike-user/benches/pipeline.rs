//! Userspace pipeline throughput on real captures: decode → stream → protocol → llm → tokens,
//! the work the processor task does per captured event. Compare runs as ratios against a
//! baseline measured in the same session (`cargo xtask bench` prints them).

use std::{fs::File, io::BufReader, path::Path};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use strike::{
    capture::{event::CaptureEvent, recording::RecordingReader},
    cost::CostConfig,
    llm::TrackerConfig,
    pipeline::{Processor, ProcessorConfig},
    stream::StreamConfig,
};

fn load(name: &str) -> (Vec<Vec<u8>>, u64, u32) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/replay")
        .join(name)
        .join("capture.strikecap");
    let reader = RecordingReader::new(BufReader::new(File::open(path).unwrap())).unwrap();
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

criterion_group!(benches, pipeline);
criterion_main!(benches);
