//! The GPU sampler thread: NVML calls block for milliseconds, so they run beside the
//! session, and samples reach the processor through a bounded queue.

use std::{
    io,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Instant,
};

use tokio::sync::mpsc;

use super::{
    incident::{GpuSampleFailed, GpuSamplesDropped, Incident as _, Incidents},
    GpuSampling,
};
use crate::{clock::monotonic_ns, gpu::DeviceSample};

/// Samples every `period` until `stop`; a full queue drops the batch (counted).
pub(super) fn spawn_gpu_sampler(
    mut sampling: GpuSampling,
    tx: mpsc::Sender<Vec<DeviceSample>>,
    stop: Arc<AtomicBool>,
    incidents: Arc<Incidents>,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("strike-gpu".into())
        .spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                match sampling.source.sample(monotonic_ns()) {
                    Ok(samples) => {
                        if tx.try_send(samples).is_err() {
                            GpuSamplesDropped.emit(&incidents);
                        }
                    }
                    Err(error) => GpuSampleFailed { error: &error }.emit(&incidents),
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
