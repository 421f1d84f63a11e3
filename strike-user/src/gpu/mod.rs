//! GPU stage: samples of each device (utilisation, memory, power, the total-energy counter,
//! clocks, the compute processes on it), from NVML on a real machine or from a recorded
//! file (`--gpu-replay`), and the intervals between consecutive samples that the cost stage
//! shares among requests.
//!
//! A [`GpuSource`] yields samples; [`Intervals`] turns each device's consecutive samples
//! into [`DeviceInterval`]s with the energy used in between (from the energy counter, else
//! the mean of the two power readings times the duration).

pub mod nvml;
pub mod replay;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::num::u64_to_f64;

/// One sample of one device. Timestamps are kernel `CLOCK_MONOTONIC` ns, the clock of the
/// capture, so samples and requests share one time line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceSample {
    pub ts_ns: u64,
    /// NVML index.
    pub index: u32,
    pub uuid: String,
    /// Product name (`NVIDIA H100 80GB HBM3`): the key of the GPU price.
    pub name: String,
    /// Percent of the last sample period a kernel ran.
    #[serde(default)]
    pub util_gpu_pct: Option<u32>,
    #[serde(default)]
    pub mem_used_bytes: Option<u64>,
    #[serde(default)]
    pub mem_total_bytes: Option<u64>,
    /// Board power, mW.
    #[serde(default)]
    pub power_mw: Option<u32>,
    /// Energy used since the driver loaded, mJ (Volta and later).
    #[serde(default)]
    pub energy_mj: Option<u64>,
    #[serde(default)]
    pub sm_clock_mhz: Option<u32>,
    /// Compute processes on the device now.
    #[serde(default)]
    pub processes: Vec<GpuProcess>,
}

/// A compute process on a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuProcess {
    pub pid: u32,
    #[serde(default)]
    pub used_mem_bytes: Option<u64>,
    /// SM utilisation of this process over the last sample period, percent.
    #[serde(default)]
    pub sm_util_pct: Option<u32>,
}

/// Where samples come from.
pub trait GpuSource: Send {
    /// One sample of every device, stamped `now_ns`.
    fn sample(&mut self, now_ns: u64) -> Result<Vec<DeviceSample>, GpuError>;
}

/// Errors of the GPU stage.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("NVML is not available: {0}")]
    Unavailable(String),
    #[error("NVML: {0}")]
    Nvml(String),
    #[error("GPU replay file {path}, line {line}: {message}")]
    Replay {
        path: String,
        line: usize,
        message: String,
    },
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What one device did between two consecutive samples.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInterval {
    pub index: u32,
    pub name: String,
    pub t0_ns: u64,
    pub t1_ns: u64,
    /// Energy used in the interval, J.
    pub energy_j: f64,
    /// Compute processes seen on the device at either end.
    pub pids: Vec<u32>,
    /// Utilisation at the end of the interval, percent.
    pub util_gpu_pct: Option<u32>,
}

impl DeviceInterval {
    pub fn seconds(&self) -> f64 {
        ns_to_s(self.t1_ns.saturating_sub(self.t0_ns))
    }
}

/// Turns each device's consecutive samples into intervals.
#[derive(Debug, Default)]
pub struct Intervals {
    last: HashMap<u32, DeviceSample>,
    /// Samples that went back in time or repeated a timestamp (ignored).
    pub out_of_order: u64,
    /// Intervals whose energy came from power readings (no energy counter, or it went
    /// backwards: a driver reload).
    pub energy_from_power: u64,
}

impl Intervals {
    /// The interval since the device's previous sample, if there was one.
    pub fn push(&mut self, sample: DeviceSample) -> Option<DeviceInterval> {
        let Some(prev) = self.last.get(&sample.index) else {
            self.last.insert(sample.index, sample);
            return None;
        };
        if sample.ts_ns <= prev.ts_ns {
            self.out_of_order += 1;
            return None;
        }
        let dt_s = ns_to_s(sample.ts_ns - prev.ts_ns);
        let energy_j = match (prev.energy_mj, sample.energy_mj) {
            (Some(a), Some(b)) if b >= a => u64_to_f64(b - a) / 1000.0,
            _ => {
                self.energy_from_power += 1;
                let mean_mw = match (prev.power_mw, sample.power_mw) {
                    (Some(a), Some(b)) => f64::midpoint(f64::from(a), f64::from(b)),
                    (Some(p), None) | (None, Some(p)) => f64::from(p),
                    (None, None) => 0.0,
                };
                mean_mw / 1000.0 * dt_s
            }
        };
        let mut pids: Vec<u32> = prev
            .processes
            .iter()
            .chain(&sample.processes)
            .map(|p| p.pid)
            .collect();
        pids.sort_unstable();
        pids.dedup();
        let interval = DeviceInterval {
            index: sample.index,
            name: sample.name.clone(),
            t0_ns: prev.ts_ns,
            t1_ns: sample.ts_ns,
            energy_j,
            pids,
            util_gpu_pct: sample.util_gpu_pct,
        };
        self.last.insert(sample.index, sample);
        Some(interval)
    }

    /// The latest sample time of every device seen (the GPU time line has reached it).
    pub fn horizon_ns(&self) -> Option<u64> {
        self.last.values().map(|s| s.ts_ns).min()
    }

    /// Devices seen so far.
    pub fn devices(&self) -> usize {
        self.last.len()
    }
}

pub(crate) fn ns_to_s(ns: u64) -> f64 {
    u64_to_f64(ns) / 1e9
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(
        index: u32,
        ts_ns: u64,
        energy_mj: Option<u64>,
        power_mw: Option<u32>,
        pids: &[u32],
    ) -> DeviceSample {
        DeviceSample {
            ts_ns,
            index,
            uuid: format!("GPU-{index}"),
            name: "NVIDIA H100 80GB HBM3".to_owned(),
            util_gpu_pct: Some(50),
            mem_used_bytes: None,
            mem_total_bytes: None,
            power_mw,
            energy_mj,
            sm_clock_mhz: None,
            processes: pids
                .iter()
                .map(|&pid| GpuProcess {
                    pid,
                    used_mem_bytes: None,
                    sm_util_pct: None,
                })
                .collect(),
        }
    }

    #[test]
    fn intervals_use_the_energy_counter_else_power() {
        let mut iv = Intervals::default();
        assert!(iv
            .push(sample(0, 1_000_000_000, Some(5_000), Some(300_000), &[7]))
            .is_none());
        let a = iv
            .push(sample(0, 1_500_000_000, Some(155_000), Some(300_000), &[8]))
            .unwrap();
        assert_eq!((a.t0_ns, a.t1_ns), (1_000_000_000, 1_500_000_000));
        assert!((a.energy_j - 150.0).abs() < 1e-9, "counter delta: {a:?}");
        assert_eq!(a.pids, [7, 8]);
        // Counter reset (driver reload): power × time instead.
        let b = iv
            .push(sample(0, 2_500_000_000, Some(10), Some(100_000), &[]))
            .unwrap();
        assert!(
            (b.energy_j - 200.0).abs() < 1e-9,
            "(300 + 100) / 2 W × 1 s: {b:?}"
        );
        assert_eq!(iv.energy_from_power, 1);
        // Back in time: ignored and counted.
        assert!(iv
            .push(sample(0, 2_000_000_000, Some(20), None, &[]))
            .is_none());
        assert_eq!(iv.out_of_order, 1);
        assert!(iv
            .push(sample(1, 2_600_000_000, None, Some(50_000), &[]))
            .is_none());
        assert_eq!(iv.horizon_ns(), Some(2_500_000_000));
        assert_eq!(iv.devices(), 2);
    }
}
