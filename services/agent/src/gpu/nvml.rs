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
    fn backend(&self) -> capex_core::GpuBackend {
        capex_core::GpuBackend::Nvml
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
                    // The reporter ties pids to leases (crate::attribution).
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
    use std::collections::HashMap;
    use std::process::{Child, Command};
    use std::time::{Duration, Instant};

    use capex_core::GpuClass;
    use uuid::Uuid;

    use super::*;
    use crate::attribution::{LEASE_ENV, attribute, lease_in_environment};

    /// CI machines have no NVIDIA driver: opening NVML must fail at once with an error
    /// that says what is missing and what to do. On a GPU host (the GPU check sets
    /// `CAPEX_REQUIRE_NVML=1`) it must open and return sane readings instead.
    #[test]
    fn nvml_reads_the_gpus_or_says_clearly_why_not() {
        let required = std::env::var_os("CAPEX_REQUIRE_NVML").is_some();
        match NvmlProbe::open() {
            Ok(mut probe) => check_readings(&mut probe),
            Err(err) => {
                assert!(!required, "CAPEX_REQUIRE_NVML is set, but: {err}");
                assert!(matches!(err, ProbeError::NvmlUnavailable(_)), "{err:?}");
                let message = err.to_string();
                assert!(message.contains("NVML is not available"), "{message}");
                assert!(message.contains("--backend simulated"), "{message}");
            }
        }
    }

    fn check_readings(probe: &mut NvmlProbe) {
        let inventory = probe.inventory().expect("inventory");
        eprintln!("nvml: driver {:?} cuda {:?}", inventory.driver_version, inventory.cuda_version);
        assert!(!inventory.gpus.is_empty(), "NVML opened but lists no GPU");
        assert!(inventory.driver_version.is_some(), "no driver version");
        for gpu in &inventory.gpus {
            let class = GpuClass::from_nvml(&gpu.name, gpu.memory_total_mib);
            eprintln!(
                "nvml: gpu {} {} {:?} {} MiB pci {:?} -> class {class}",
                gpu.index, gpu.uuid, gpu.name, gpu.memory_total_mib, gpu.pci_bus_id
            );
            assert!(gpu.uuid.starts_with("GPU-"), "{}", gpu.uuid);
            assert!(!gpu.name.is_empty());
            assert!(gpu.memory_total_mib >= 1024, "{} MiB", gpu.memory_total_mib);
            assert!(GpuClass::parse(class.as_str()).is_some(), "{class}");
        }
        let first = probe.sample().expect("first sample");
        std::thread::sleep(Duration::from_secs(1));
        let second = probe.sample().expect("second sample");
        assert_eq!(first.len(), inventory.gpus.len());
        for ((a, b), gpu) in first.iter().zip(&second).zip(&inventory.gpus) {
            eprintln!(
                "nvml: sample {} util {}% mem {}/{} MiB power {} mW temp {} C energy {} -> {} mJ processes {:?}",
                b.uuid,
                b.utilization_pct,
                b.memory_used_mib,
                b.memory_total_mib,
                b.power_mw,
                b.temperature_c,
                a.energy_mj,
                b.energy_mj,
                b.processes
            );
            assert_eq!((&a.uuid, &b.uuid), (&gpu.uuid, &gpu.uuid), "samples follow the inventory's order");
            assert_eq!(b.memory_total_mib, gpu.memory_total_mib);
            assert!(b.memory_used_mib <= b.memory_total_mib);
            assert!(b.utilization_pct <= 100);
            assert!(b.power_mw > 0, "an idle GPU still draws power");
            assert!((0..=120).contains(&b.temperature_c), "{} C", b.temperature_c);
            assert!(b.energy_mj >= a.energy_mj, "the energy counter never goes back");
        }
    }

    /// Starts `sh -c "exec $command"`, so the pid is the GPU program's own.
    fn start_gpu_program(command: &str, gpu_uuid: &str, lease: Option<Uuid>) -> Child {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("exec {command}")).env("CUDA_VISIBLE_DEVICES", gpu_uuid).env_remove(LEASE_ENV);
        if let Some(lease) = lease {
            cmd.env(LEASE_ENV, lease.to_string());
        }
        cmd.spawn().expect("start the GPU program")
    }

    /// On a real GPU: two CUDA programs on GPU 0, one started as a lease's job (with
    /// `CAPEX_LEASE_ID`, as the runtimes start jobs) and one not. NVML must list both, and
    /// the reporter's attribution must give the lease only its own job.
    /// `CAPEX_NVML_TEST_GPU_COMMAND` is a command that holds GPU memory until killed.
    #[test]
    #[ignore = "needs an NVIDIA GPU and CAPEX_NVML_TEST_GPU_COMMAND; run by scripts/gpu-check"]
    fn a_lease_s_cuda_process_is_told_from_a_foreign_one() {
        let command = std::env::var("CAPEX_NVML_TEST_GPU_COMMAND").expect("CAPEX_NVML_TEST_GPU_COMMAND");
        let mut probe = NvmlProbe::open().expect("NVML");
        let gpu = probe.inventory().expect("inventory").gpus.remove(0).uuid;
        let lease = Uuid::now_v7();
        let mut job = start_gpu_program(&command, &gpu, Some(lease));
        let mut stranger = start_gpu_program(&command, &gpu, None);
        let (job_pid, stranger_pid) = (job.id(), stranger.id());
        let deadline = Instant::now() + Duration::from_secs(90);
        let samples = loop {
            let samples = probe.sample().expect("sample");
            let pids: Vec<u32> = samples[0].processes.iter().map(|p| p.pid).collect();
            if pids.contains(&job_pid) && pids.contains(&stranger_pid) {
                break samples;
            }
            assert!(Instant::now() < deadline, "NVML never listed pids {job_pid} and {stranger_pid}: {pids:?}");
            std::thread::sleep(Duration::from_millis(500));
        };
        let mut attributed = samples.clone();
        attribute(&mut attributed, &HashMap::from([(lease, vec![gpu.clone()])]), lease_in_environment);
        let mut unleased = samples;
        attribute(&mut unleased, &HashMap::new(), lease_in_environment);
        for child in [&mut job, &mut stranger] {
            let _ = child.kill();
            let _ = child.wait();
        }
        eprintln!("nvml: GPU 0 processes, attributed: {:?}", attributed[0].processes);
        let lease_of = |pid| attributed[0].processes.iter().find(|p| p.pid == pid).map(|p| p.lease_id);
        assert_eq!(lease_of(job_pid), Some(Some(lease)), "the job is the lease's");
        assert_eq!(lease_of(stranger_pid), Some(None), "the other program is foreign");
        assert!(unleased[0].processes.iter().all(|p| p.lease_id.is_none()), "no running lease, no attribution");
        assert!(attributed.iter().skip(1).flat_map(|s| &s.processes).all(|p| p.lease_id.is_none()));
    }
}
