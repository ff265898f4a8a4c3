//! The simulated backend: configured GPU models whose utilisation follows the processes
//! the agent runs on them, with an energy counter that grows with utilisation. Used on
//! hosts without GPUs, for demos and in tests.
//!
//! The job runtime tells it which GPU runs which pid through [`SimulatedControl`]; a GPU
//! with a live assigned pid runs at high utilisation, and a pid that has exited is
//! dropped at the next sample.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use capex_core::{GpuProcess, GpuSample, InventoryGpu};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{GpuInventory, GpuProbe, ProbeError};

/// A model the simulator knows: its NVML name, memory and power envelope.
#[derive(Debug, Clone, Copy)]
struct Model {
    short: &'static str,
    name: &'static str,
    memory_mib: u64,
    idle_w: u64,
    max_w: u64,
}

const MODELS: &[Model] = &[
    Model { short: "H200", name: "NVIDIA H200", memory_mib: 143_771, idle_w: 90, max_w: 700 },
    Model { short: "H100", name: "NVIDIA H100 80GB HBM3", memory_mib: 81_559, idle_w: 70, max_w: 700 },
    Model { short: "A100-80GB", name: "NVIDIA A100-SXM4-80GB", memory_mib: 81_920, idle_w: 55, max_w: 400 },
    Model { short: "A100", name: "NVIDIA A100-SXM4-40GB", memory_mib: 40_960, idle_w: 50, max_w: 400 },
    Model { short: "L40S", name: "NVIDIA L40S", memory_mib: 46_068, idle_w: 35, max_w: 350 },
    Model { short: "L4", name: "NVIDIA L4", memory_mib: 23_034, idle_w: 16, max_w: 72 },
    Model { short: "A10", name: "NVIDIA A10", memory_mib: 23_028, idle_w: 20, max_w: 150 },
    Model { short: "RTX4090", name: "NVIDIA GeForce RTX 4090", memory_mib: 24_564, idle_w: 20, max_w: 450 },
    Model { short: "RTX3090", name: "NVIDIA GeForce RTX 3090", memory_mib: 24_576, idle_w: 20, max_w: 350 },
];

/// Default when nothing is configured.
pub const DEFAULT_MODELS: &[&str] = &["RTX4090"];
/// Memory a simulated process holds.
const PROCESS_MEMORY_MIB: u64 = 2048;
/// Utilisation of a GPU that runs at least one live process.
const BUSY_UTILIZATION_PCT: u32 = 97;

/// Looks up a configured model: a short name (`H100`, `RTX4090`) or a full NVML name.
/// An unknown text becomes a 24 GiB card of that name (its class is then a slug).
fn model(text: &str) -> Model {
    let upper = text.trim().to_ascii_uppercase();
    MODELS.iter().find(|m| m.short == upper || m.name.eq_ignore_ascii_case(text.trim())).copied().unwrap_or(Model {
        short: "custom",
        name: "",
        memory_mib: 24_576,
        idle_w: 20,
        max_w: 300,
    })
}

struct SimGpu {
    uuid: String,
    name: String,
    memory_mib: u64,
    idle_w: u64,
    max_w: u64,
    energy_mj: u64,
    /// pid -> lease id (None: a process the exchange did not place).
    processes: BTreeMap<u32, Option<Uuid>>,
}

struct SimState {
    gpus: Vec<SimGpu>,
    last_sample: Instant,
}

/// Simulated GPUs. Clone the [`SimulatedControl`] to steer them from elsewhere.
pub struct SimulatedGpus {
    state: Arc<Mutex<SimState>>,
}

/// Tells the simulated backend which GPU runs which process.
#[derive(Clone)]
pub struct SimulatedControl {
    state: Arc<Mutex<SimState>>,
}

impl SimulatedControl {
    /// Marks `pid` as running on the GPU at `gpu_index` (for `lease_id`, or foreign when None).
    /// Returns false if there is no such GPU.
    pub fn assign(&self, gpu_index: usize, pid: u32, lease_id: Option<Uuid>) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.gpus.get_mut(gpu_index) {
            Some(gpu) => {
                gpu.processes.insert(pid, lease_id);
                true
            }
            None => false,
        }
    }

    /// Same as [`assign`](Self::assign), by GPU UUID.
    pub fn assign_uuid(&self, gpu_uuid: &str, pid: u32, lease_id: Option<Uuid>) -> bool {
        let index = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.gpus.iter().position(|g| g.uuid == gpu_uuid)
        };
        index.is_some_and(|i| self.assign(i, pid, lease_id))
    }

    /// Forgets `pid` on every GPU.
    pub fn release(&self, pid: u32) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        for gpu in &mut state.gpus {
            gpu.processes.remove(&pid);
        }
    }

    /// UUIDs of the simulated GPUs, in index order.
    pub fn gpu_uuids(&self) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.gpus.iter().map(|g| g.uuid.clone()).collect()
    }
}

/// A stable, host-unique UUID for simulated GPU `index`.
fn simulated_uuid(seed: &[u8], index: usize) -> String {
    let digest =
        Sha256::new().chain_update(b"capex/simulated-gpu").chain_update(seed).chain_update(index.to_le_bytes());
    let bytes: [u8; 16] = digest.finalize()[..16].try_into().expect("16 of 32 bytes");
    format!("GPU-{}", Uuid::from_bytes(bytes))
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl SimulatedGpus {
    /// GPUs of the given models (see the model table; `[]` means one RTX 4090).
    pub fn new(models: &[String], seed: &[u8]) -> SimulatedGpus {
        let defaults: Vec<String> = DEFAULT_MODELS.iter().map(|m| m.to_string()).collect();
        let models = if models.is_empty() { &defaults } else { models };
        // NVML's counter survives agent restarts (it counts since the driver loaded); a
        // simulated one must too, or a restarted agent would report energy going
        // backwards. Start at "full power since 1970": no earlier run can have counted
        // more, whatever it did, and from here the counter grows at the actual power.
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let gpus = models
            .iter()
            .enumerate()
            .map(|(index, text)| {
                let m = model(text);
                SimGpu {
                    uuid: simulated_uuid(seed, index),
                    name: if m.name.is_empty() { text.trim().to_string() } else { m.name.to_string() },
                    memory_mib: m.memory_mib,
                    idle_w: m.idle_w,
                    max_w: m.max_w,
                    // W x ms = mJ.
                    energy_mj: m.max_w * unix_ms,
                    processes: BTreeMap::new(),
                }
            })
            .collect();
        SimulatedGpus { state: Arc::new(Mutex::new(SimState { gpus, last_sample: Instant::now() })) }
    }

    pub fn control(&self) -> SimulatedControl {
        SimulatedControl { state: self.state.clone() }
    }
}

impl GpuProbe for SimulatedGpus {
    fn backend(&self) -> capex_core::GpuBackend {
        capex_core::GpuBackend::Simulated
    }

    fn inventory(&mut self) -> Result<GpuInventory, ProbeError> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let gpus = state
            .gpus
            .iter()
            .enumerate()
            .map(|(index, g)| InventoryGpu {
                index: index as u32,
                uuid: g.uuid.clone(),
                name: g.name.clone(),
                memory_total_mib: g.memory_mib,
                pci_bus_id: Some(format!("00000000:{:02X}:00.0", 0x10 + index)),
            })
            .collect();
        Ok(GpuInventory { driver_version: Some("simulated".into()), cuda_version: Some("12.4".into()), gpus })
    }

    fn sample(&mut self) -> Result<Vec<GpuSample>, ProbeError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let elapsed_ms = now.duration_since(state.last_sample).as_millis() as u64;
        state.last_sample = now;
        let samples = state
            .gpus
            .iter_mut()
            .map(|gpu| {
                gpu.processes.retain(|pid, _| pid_alive(*pid));
                let utilization_pct = if gpu.processes.is_empty() { 0 } else { BUSY_UTILIZATION_PCT };
                let power_mw = (gpu.idle_w * 1000) + (gpu.max_w - gpu.idle_w) * 1000 * u64::from(utilization_pct) / 100;
                // mW x ms = µJ; / 1000 = mJ.
                gpu.energy_mj += power_mw * elapsed_ms / 1000;
                let processes: Vec<GpuProcess> = gpu
                    .processes
                    .iter()
                    .map(|(pid, lease_id)| GpuProcess {
                        pid: *pid,
                        used_memory_mib: PROCESS_MEMORY_MIB,
                        lease_id: *lease_id,
                    })
                    .collect();
                GpuSample {
                    uuid: gpu.uuid.clone(),
                    name: gpu.name.clone(),
                    memory_total_mib: gpu.memory_mib,
                    memory_used_mib: (processes.len() as u64 * PROCESS_MEMORY_MIB).min(gpu.memory_mib),
                    utilization_pct,
                    power_mw,
                    energy_mj: gpu.energy_mj,
                    temperature_c: 30 + (utilization_pct as i32) / 2,
                    processes,
                }
            })
            .collect();
        Ok(samples)
    }

    fn simulated_control(&self) -> Option<SimulatedControl> {
        Some(self.control())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_and_uuids() {
        let mut sim = SimulatedGpus::new(&["H100".into(), "l4".into(), "Mystery Card".into()], b"host-a");
        let inventory = sim.inventory().unwrap();
        let names: Vec<&str> = inventory.gpus.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["NVIDIA H100 80GB HBM3", "NVIDIA L4", "Mystery Card"]);
        let other = SimulatedGpus::new(&["H100".into()], b"host-b").control().gpu_uuids();
        assert_ne!(inventory.gpus[0].uuid, other[0], "UUIDs differ between hosts");
        let again = SimulatedGpus::new(&["H100".into()], b"host-a").control().gpu_uuids();
        assert_eq!(inventory.gpus[0].uuid, again[0], "UUIDs are stable for a host");
    }

    #[test]
    fn utilisation_follows_processes_and_energy_grows() {
        let mut sim = SimulatedGpus::new(&["H100".into(), "H100".into()], b"seed");
        let control = sim.control();
        let idle = sim.sample().unwrap();
        assert!(idle.iter().all(|g| g.utilization_pct == 0 && g.processes.is_empty()));
        let me = std::process::id();
        assert!(control.assign(1, me, None));
        assert!(!control.assign(5, me, None));
        std::thread::sleep(std::time::Duration::from_millis(20));
        let busy = sim.sample().unwrap();
        assert_eq!(busy[0].utilization_pct, 0);
        assert_eq!(busy[1].utilization_pct, BUSY_UTILIZATION_PCT);
        assert_eq!(busy[1].processes[0].pid, me);
        assert!(busy[1].energy_mj > busy[0].energy_mj, "a busy GPU uses more energy");
        assert!(busy[1].energy_mj >= idle[1].energy_mj);
        control.release(me);
        assert_eq!(sim.sample().unwrap()[1].utilization_pct, 0);
        // A pid that does not exist is dropped at the next sample.
        control.assign(0, u32::MAX - 1, None);
        assert!(sim.sample().unwrap()[0].processes.is_empty());
    }
}
