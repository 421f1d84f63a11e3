//! The GPU sampler thread: NVML calls block for milliseconds, so they run beside the
//! session, and samples reach the processor through a bounded queue.

use std::{
    io,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use tokio::sync::mpsc;

use super::GpuSampling;
use crate::{clock::monotonic_ns, gpu::DeviceSample};

/// Counters of the GPU sampler thread.
#[derive(Default)]
pub(super) struct GpuCounters {
    /// Sample batches dropped because the processor was behind.
    pub(super) dropped: AtomicU64,
    /// Sampling calls that failed.
    pub(super) errors: AtomicU64,
}

/// Samples every `period` until `stop`; a full queue drops the batch (counted).
pub(super) fn spawn_gpu_sampler(
    mut sampling: GpuSampling,
    tx: mpsc::Sender<Vec<DeviceSample>>,
    stop: Arc<AtomicBool>,
    counters: Arc<GpuCounters>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("strike-gpu".into())
        .spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                match sampling.source.sample(monotonic_ns()) {
                    Ok(samples) => {
                        if tx.try_send(samples).is_err() {
                            counters.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        if counters.errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::warn!("GPU sampling failed: {e}");
                        }
                    }
                }
                next += sampling.period;
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                } else {
                    next = now;
                }
            }
        })
}
