//! The NVML backend (nvml-wrapper). The library is loaded at run time, so this builds
//! everywhere; without a driver [`NvmlProbe::open`] fails at once with a clear error.

use capex_core::{GpuProcess, GpuSample, InventoryGpu};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;

use super::{GpuInventory, GpuProbe, ProbeError};

const BYTES_PER_MIB: u64 = 1024 * 1024;

/// Keeps `Nvml` for the life of the agent; devices borrow it and are looked up per sample.
pub struct NvmlProbe {
    nvml: Nvml,
}

fn call(call: &'static str) -> impl Fn(NvmlError) -> ProbeError {
    move |err| ProbeError::Nvml { call, message: err.to_string() }
}

impl NvmlProbe {
    pub fn open() -> Result<NvmlProbe, ProbeError> {
        let nvml = Nvml::init().map_err(|err| ProbeError::NvmlUnavailable(err.to_string()))?;
        Ok(NvmlProbe { nvml })
    }
}

impl GpuProbe for NvmlProbe {
    fn backend(&self) -> &'static str {
        "nvml"
    }

    fn inventory(&mut self) -> Result<GpuInventory, ProbeError> {
        let driver_version = self.nvml.sys_driver_version().ok();
        let cuda_version = self.nvml.sys_cuda_driver_version().ok().map(|v| {
            format!("{}.{}", nvml_wrapper::cuda_driver_version_major(v), nvml_wrapper::cuda_driver_version_minor(v))
        });
        let count = self.nvml.device_count().map_err(call("device_count"))?;
        let mut gpus = Vec::with_capacity(count as usize);
        for index in 0..count {
            let device = self.nvml.device_by_index(index).map_err(call("device_by_index"))?;
            gpus.push(InventoryGpu {
                index,
                uuid: device.uuid().map_err(call("uuid"))?,
                name: device.name().map_err(call("name"))?,
                memory_total_mib: device.memory_info().map_err(call("memory_info"))?.total / BYTES_PER_MIB,
                pci_bus_id: device.pci_info().ok().map(|pci| pci.bus_id),
            });
        }
        Ok(GpuInventory { driver_version, cuda_version, gpus })
    }

    fn sample(&mut self) -> Result<Vec<GpuSample>, ProbeError> {
        let count = self.nvml.device_count().map_err(call("device_count"))?;
        let mut samples = Vec::with_capacity(count as usize);
        for index in 0..count {
            let device = self.nvml.device_by_index(index).map_err(call("device_by_index"))?;
            let memory = device.memory_info().map_err(call("memory_info"))?;
            let processes = device
                .running_compute_processes()
                .map_err(call("running_compute_processes"))?
                .into_iter()
                .map(|p| GpuProcess {
                    pid: p.pid,
                    used_memory_mib: match p.used_gpu_memory {
                        UsedGpuMemory::Used(bytes) => bytes / BYTES_PER_MIB,
                        UsedGpuMemory::Unavailable => 0,
                    },
                    // Which pids belong to leases is the job runtime's knowledge (a later
                    // issue); until then every process counts as foreign.
                    lease_id: None,
                })
                .collect();
            samples.push(GpuSample {
                uuid: device.uuid().map_err(call("uuid"))?,
                name: device.name().map_err(call("name"))?,
                memory_total_mib: memory.total / BYTES_PER_MIB,
                memory_used_mib: memory.used / BYTES_PER_MIB,
                utilization_pct: device.utilization_rates().map_err(call("utilization_rates"))?.gpu,
                power_mw: u64::from(device.power_usage().map_err(call("power_usage"))?),
                // Volta and newer; older boards report no counter and send 0 (never decreasing).
                energy_mj: device.total_energy_consumption().unwrap_or(0),
                temperature_c: device.temperature(TemperatureSensor::Gpu).map_err(call("temperature"))? as i32,
                processes,
            });
        }
        Ok(samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI machines have no NVIDIA driver: opening NVML must fail at once with an error
    /// that says what is missing and what to do. (On a GPU host it opens instead.)
    #[test]
    fn without_a_driver_open_gives_the_clear_error() {
        match NvmlProbe::open() {
            Ok(mut probe) => {
                let inventory = probe.inventory().expect("NVML loaded, so inventory works");
                assert_eq!(probe.sample().expect("sample").len(), inventory.gpus.len());
            }
            Err(err) => {
                assert!(matches!(err, ProbeError::NvmlUnavailable(_)), "{err:?}");
                let message = err.to_string();
                assert!(message.contains("NVML is not available"), "{message}");
                assert!(message.contains("--backend simulated"), "{message}");
            }
        }
    }
}
