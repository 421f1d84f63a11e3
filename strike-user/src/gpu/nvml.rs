//! The NVML sampler (nvml-wrapper, which loads `libnvidia-ml.so` at run time: Strike builds
//! and runs without it, and says so).

use nvml_wrapper::{enum_wrappers::device::Clock, enums::device::UsedGpuMemory, Nvml};

use super::{DeviceSample, GpuError, GpuProcess, GpuSource};

/// Samples every device NVML sees.
pub struct NvmlSource {
    nvml: Nvml,
    devices: u32,
    /// NVML's own timestamp (µs) of the last per-process utilisation sample read, per device.
    last_process_ts: Vec<u64>,
    /// Readings a device does not support (not an error: older GPUs have no energy counter).
    pub unsupported: u64,
}

impl std::fmt::Debug for NvmlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlSource")
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

impl NvmlSource {
    /// Loads NVML; [`GpuError::Unavailable`] when there is no driver or no device.
    pub fn new() -> Result<Self, GpuError> {
        let nvml = Nvml::init().map_err(|e| GpuError::Unavailable(e.to_string()))?;
        let devices = nvml
            .device_count()
            .map_err(|e| GpuError::Nvml(e.to_string()))?;
        if devices == 0 {
            return Err(GpuError::Unavailable("no GPU".to_owned()));
        }
        Ok(Self {
            nvml,
            devices,
            last_process_ts: vec![0; devices as usize],
            unsupported: 0,
        })
    }

    /// Devices found.
    pub fn devices(&self) -> u32 {
        self.devices
    }

    /// Each device's MIG mode: `None` where it has none (or the reading fails).
    pub fn mig_modes(&self) -> Vec<Option<bool>> {
        (0..self.devices)
            .map(|i| {
                let device = self.nvml.device_by_index(i).ok()?;
                device.mig_mode().ok().map(|m| m.current != 0)
            })
            .collect()
    }

    /// The driver version, for messages.
    pub fn driver_version(&self) -> Option<String> {
        self.nvml.sys_driver_version().ok()
    }
}

/// A reading, or `None` (counted) when the device cannot give it.
fn reading<T>(r: Result<T, nvml_wrapper::error::NvmlError>, missing: &mut u64) -> Option<T> {
    r.map_err(|_| *missing += 1).ok()
}

impl GpuSource for NvmlSource {
    fn sample(&mut self, now_ns: u64) -> Result<Vec<DeviceSample>, GpuError> {
        let mut out = Vec::with_capacity(self.devices as usize);
        for index in 0..self.devices {
            let device = self
                .nvml
                .device_by_index(index)
                .map_err(|e| GpuError::Nvml(e.to_string()))?;
            let missing = &mut self.unsupported;
            let utilization = reading(device.utilization_rates(), missing);
            let memory = reading(device.memory_info(), missing);
            let power_mw = reading(device.power_usage(), missing);
            let energy_mj = reading(device.total_energy_consumption(), missing);
            let sm_clock_mhz = reading(device.clock_info(Clock::SM), missing);
            let name = reading(device.name(), missing).unwrap_or_default();
            let uuid = reading(device.uuid(), missing).unwrap_or_default();
            let mut processes: Vec<GpuProcess> =
                reading(device.running_compute_processes(), missing)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| GpuProcess {
                        pid: p.pid,
                        used_mem_bytes: match p.used_gpu_memory {
                            UsedGpuMemory::Used(b) => Some(b),
                            UsedGpuMemory::Unavailable => None,
                        },
                        sm_util_pct: None,
                    })
                    .collect();
            let slot = &mut self.last_process_ts[index as usize];
            // Per-process utilisation since the last read (not on every GPU: optional).
            if let Ok(samples) = device.process_utilization_stats(*slot) {
                for s in samples {
                    *slot = (*slot).max(s.timestamp);
                    if let Some(p) = processes.iter_mut().find(|p| p.pid == s.pid) {
                        p.sm_util_pct = Some(s.sm_util);
                    }
                }
            }
            out.push(DeviceSample {
                ts_ns: now_ns,
                index,
                uuid,
                name,
                util_gpu_pct: utilization.as_ref().map(|u| u.gpu),
                mem_used_bytes: memory.as_ref().map(|m| m.used),
                mem_total_bytes: memory.as_ref().map(|m| m.total),
                power_mw,
                energy_mj,
                sm_clock_mhz,
                processes,
            });
        }
        Ok(out)
    }
}
