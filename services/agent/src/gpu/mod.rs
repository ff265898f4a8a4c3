//! The GPU probe: one trait, two backends (NVML on real hosts, simulated elsewhere), both
//! feeding the same report code.

pub mod cc;
pub mod nvml;
pub mod simulated;

use capex_core::{GpuSample, InventoryGpu};
use serde::{Deserialize, Serialize};

pub use nvml::NvmlProbe;
pub use simulated::{SimulatedControl, SimulatedGpus};

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// NVML when it loads, else the simulated backend.
    Auto,
    Nvml,
    Simulated,
}

/// What registration needs to know about the host's GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuInventory {
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
    pub gpus: Vec<InventoryGpu>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The NVML library or the driver is not there.
    #[error(
        "NVML is not available ({0}). Install the NVIDIA driver so that libnvidia-ml.so.1 loads, \
         or run with --backend simulated on a host without NVIDIA GPUs"
    )]
    NvmlUnavailable(String),
    #[error("NVML call {call} failed: {message}")]
    Nvml { call: &'static str, message: String },
}

/// A source of GPU inventory and samples.
pub trait GpuProbe: Send {
    /// "nvml" or "simulated".
    fn backend(&self) -> capex_core::GpuBackend;
    fn inventory(&mut self) -> Result<GpuInventory, ProbeError>;
    /// One sample of every GPU, in index order.
    fn sample(&mut self) -> Result<Vec<GpuSample>, ProbeError>;
    /// The simulated backend's control handle (which GPU runs which pid); `None` on NVML.
    fn simulated_control(&self) -> Option<SimulatedControl> {
        None
    }
}

/// Opens the configured backend. `seed` makes simulated GPU UUIDs unique per host (the
/// host's public key is used), so two simulated hosts never claim the same GPU.
pub fn open_probe(
    kind: BackendKind,
    simulated_models: &[String],
    seed: &[u8],
) -> Result<Box<dyn GpuProbe>, ProbeError> {
    match kind {
        BackendKind::Nvml => Ok(Box::new(NvmlProbe::open()?)),
        BackendKind::Simulated => Ok(Box::new(SimulatedGpus::new(simulated_models, seed))),
        BackendKind::Auto => match NvmlProbe::open() {
            Ok(probe) => Ok(Box::new(probe)),
            Err(err) => {
                tracing::info!(reason = %err, "NVML not available; using the simulated GPU backend");
                Ok(Box::new(SimulatedGpus::new(simulated_models, seed)))
            }
        },
    }
}
