//! Keeps each GPU's reported energy counter monotonic across driver reloads and reboots.
//!
//! NVML's total energy counts from when the driver loaded, so it drops to near zero after a
//! reboot, while the exchange refuses any report whose counter goes backwards. The agent
//! therefore reports `raw + offset`, and when a raw value falls below the last one it adds
//! that last value to the offset. The last raw value and the offset of each GPU are saved
//! in the state directory after every sample, so this also holds across agent restarts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use capex_core::GpuSample;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Counter {
    last_raw_mj: u64,
    offset_mj: u64,
}

pub struct EnergyCounters {
    path: PathBuf,
    counters: BTreeMap<String, Counter>,
}

impl EnergyCounters {
    /// Loads `energy.json` from the state directory (empty if absent or unreadable).
    pub fn open(state_dir: &Path) -> EnergyCounters {
        let path = state_dir.join("energy.json");
        let counters = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default();
        EnergyCounters { path, counters }
    }

    /// Rewrites each sample's `energy_mj` to the monotonic value and saves the state.
    pub fn apply(&mut self, samples: &mut [GpuSample]) -> std::io::Result<()> {
        for sample in samples.iter_mut() {
            let counter = self.counters.entry(sample.uuid.clone()).or_default();
            let raw = sample.energy_mj;
            if raw < counter.last_raw_mj {
                tracing::warn!(gpu = %sample.uuid, raw, last = counter.last_raw_mj,
                    "GPU energy counter restarted (driver reload or reboot); carrying it on");
                counter.offset_mj = counter.offset_mj.saturating_add(counter.last_raw_mj);
            }
            counter.last_raw_mj = raw;
            sample.energy_mj = raw.saturating_add(counter.offset_mj);
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.counters).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(energy_mj: u64) -> GpuSample {
        GpuSample {
            uuid: "GPU-1".into(),
            name: "NVIDIA L4".into(),
            memory_total_mib: 1,
            memory_used_mib: 0,
            utilization_pct: 0,
            power_mw: 0,
            energy_mj,
            temperature_c: 30,
            processes: vec![],
        }
    }

    #[test]
    fn counter_never_goes_backwards_across_resets_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut energy = EnergyCounters::open(dir.path());
        let mut reported = Vec::new();
        for raw in [100, 200, 5, 50] {
            let mut samples = [sample(raw)];
            energy.apply(&mut samples).unwrap();
            reported.push(samples[0].energy_mj);
        }
        assert_eq!(reported, [100, 200, 205, 250]);
        // The agent restarts, then the driver resets again.
        let mut energy = EnergyCounters::open(dir.path());
        let mut samples = [sample(10)];
        energy.apply(&mut samples).unwrap();
        assert_eq!(samples[0].energy_mj, 260);
    }
}
