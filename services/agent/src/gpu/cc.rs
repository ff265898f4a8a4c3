//! Confidential-computing (CC) evidence from NVML: the GPU's attestation report for a nonce
//! the exchange chose, and its attestation certificate chain.
//!
//! nvml-wrapper 0.13 has safe wrappers for every call used here
//! (`Device::is_cc_enabled` = `nvmlSystemGetConfComputeSettings`,
//! `confidential_compute_gpu_attestation_report` =
//! `nvmlDeviceGetConfComputeGpuAttestationReport`, `confidential_compute_gpu_certificate` =
//! `nvmlDeviceGetConfComputeGpuCertificate`, ...), so this module needs no `unsafe`. Their
//! symbols are looked up when called: a driver without them answers `FailedToLoadSymbol`,
//! which becomes a [`CcUnavailable`] like every other reason CC is not there.

use std::panic::{AssertUnwindSafe, catch_unwind};

use base64::Engine;
use capex_attest::{CcEvidence, CcUnavailable, TrustRoots};
use nvml_wrapper::Nvml;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::structs::device::ConfidentialComputeGpuCapabilities;
use serde::Serialize;

/// The reason the simulated backend gives for every CC request.
pub const SIMULATED_REASON: &str = "simulated backend has no confidential computing";

fn describe(call: &str, err: &NvmlError) -> String {
    match err {
        NvmlError::FailedToLoadSymbol(_) | NvmlError::FunctionNotFound => {
            format!("this driver's NVML has no {call} (a driver with confidential-computing support is needed)")
        }
        NvmlError::NotSupported => format!("{call}: not supported by this GPU or driver"),
        other => format!("{call} failed: {other}"),
    }
}

/// The CC state NVML reports for a GPU and its system.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CcState {
    /// CC mode on (`nvmlSystemGetConfComputeSettings` ccFeature); `None` when not readable.
    pub cc_enabled: Option<bool>,
    /// CC developer-tools (debug) mode: evidence is genuine but measurements differ.
    pub dev_tools_mode: Option<bool>,
    /// Multi-GPU protected PCIe mode.
    pub protected_pcie: Option<bool>,
    /// GPUs accept work (`nvmlSystemGetConfComputeGpusReadyState`).
    pub gpus_ready: Option<bool>,
    /// GPU and CPU CC capabilities (`nvmlSystemGetConfComputeCapabilities`).
    pub capabilities: Option<String>,
    /// Why the CC mode could not be read (the first failure).
    pub error: Option<String>,
}

/// Reads the CC state through `gpu_uuid`'s device handle (the settings are system-wide).
pub fn cc_state(nvml: &Nvml, gpu_uuid: &str) -> CcState {
    let device = match nvml.device_by_uuid(gpu_uuid) {
        Ok(d) => d,
        Err(err) => return CcState { error: Some(describe("nvmlDeviceGetHandleByUUID", &err)), ..CcState::default() },
    };
    let mut errors: Vec<String> = Vec::new();
    let mut keep = |call: &str, err: NvmlError| errors.push(describe(call, &err));
    let cc_enabled = device.is_cc_enabled().map_err(|e| keep("nvmlSystemGetConfComputeSettings", e)).ok();
    let capabilities = device
        .get_confidential_compute_capabilities()
        .map(|caps| {
            let gpus = match caps.gpus_caps {
                ConfidentialComputeGpuCapabilities::Capable => "capable",
                ConfidentialComputeGpuCapabilities::NotCapable => "not capable",
            };
            format!("GPUs {gpus}, CPU TEE {:?}", caps.cpu_caps)
        })
        .map_err(|e| keep("nvmlSystemGetConfComputeCapabilities", e))
        .ok();
    CcState {
        cc_enabled,
        dev_tools_mode: device.is_cc_dev_mode_enabled().ok(),
        protected_pcie: device.is_multi_gpu_protected_pcie_enabled().ok(),
        gpus_ready: device.get_confidential_compute_state().ok(),
        capabilities,
        error: errors.into_iter().next(),
    }
}

/// Fetches `gpu_uuid`'s attestation report for `nonce` and its attestation certificate
/// chain. Where CC is unsupported, off, or missing in the driver, says why.
pub fn cc_evidence(nvml: &Nvml, gpu_uuid: &str, nonce: [u8; 32]) -> Result<CcEvidence, CcUnavailable> {
    let unavailable = |reason: String| CcUnavailable { gpu_uuid: gpu_uuid.to_string(), reason };
    let device = nvml
        .device_by_uuid(gpu_uuid)
        .map_err(|err| unavailable(format!("GPU not found: {}", describe("nvmlDeviceGetHandleByUUID", &err))))?;
    match device.is_cc_enabled() {
        Ok(true) => {}
        Ok(false) => return Err(unavailable("confidential computing is off on this system (CC mode off)".into())),
        Err(err) => return Err(unavailable(describe("nvmlSystemGetConfComputeSettings", &err))),
    }
    // nvml-wrapper slices its fixed buffers by the sizes the driver returns; a size past
    // the buffer would panic there, and must not take the agent down.
    let report = catch_unwind(AssertUnwindSafe(|| device.confidential_compute_gpu_attestation_report(nonce)))
        .map_err(|_| unavailable("the driver returned an attestation report larger than NVML's buffer".into()))?
        .map_err(|err| unavailable(describe("nvmlDeviceGetConfComputeGpuAttestationReport", &err)))?;
    let certificate = catch_unwind(AssertUnwindSafe(|| device.confidential_compute_gpu_certificate()))
        .map_err(|_| unavailable("the driver returned a certificate chain larger than NVML's buffer".into()))?
        .map_err(|err| unavailable(describe("nvmlDeviceGetConfComputeGpuCertificate", &err)))?;
    if report.attestation_report.is_empty() || certificate.attestation_cert_chain.is_empty() {
        return Err(unavailable("NVML returned an empty attestation report or certificate chain".into()));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(CcEvidence {
        gpu_uuid: gpu_uuid.to_string(),
        nonce: hex::encode(nonce),
        attestation_report: b64.encode(&report.attestation_report),
        certificate_chain: b64.encode(&certificate.attestation_cert_chain),
    })
}

/// One GPU in [`cc_probe_report`].
#[derive(Debug, Clone, Serialize)]
pub struct GpuCcProbe {
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub state: CcState,
    /// Why no evidence came back, when none did.
    pub unavailable: Option<String>,
    /// The evidence, parsed (not verified), when it came back.
    pub summary: Option<capex_attest::EvidenceSummary>,
    /// Whether the parsed request nonce is the one asked for.
    pub nonce_matches: Option<bool>,
    /// The exchange's verdict on it, with NVIDIA's root: "verified" or `code: detail`.
    pub verdict: Option<String>,
    /// The evidence itself (base64), for saving as a fixture.
    pub evidence: Option<CcEvidence>,
}

/// For every GPU: the CC state and, for a fresh random nonce, what NVML's attestation
/// calls return: report length, parsed nonce, chain subjects, and what the exchange's
/// verifier (NVIDIA root, no reference values) says of it.
pub fn cc_probe_report(nvml: &Nvml) -> Result<Vec<GpuCcProbe>, NvmlError> {
    let count = nvml.device_count()?;
    let roots = TrustRoots::from_env().unwrap_or_else(|_| TrustRoots::nvidia());
    let mut out = Vec::new();
    for index in 0..count {
        let device = nvml.device_by_index(index)?;
        let uuid = device.uuid()?;
        let name = device.name().unwrap_or_default();
        let state = cc_state(nvml, &uuid);
        let nonce: [u8; 32] = rand::random();
        let mut probe = GpuCcProbe {
            index,
            uuid: uuid.clone(),
            name,
            state,
            unavailable: None,
            summary: None,
            nonce_matches: None,
            verdict: None,
            evidence: None,
        };
        match cc_evidence(nvml, &uuid, nonce) {
            Err(why) => probe.unavailable = Some(why.reason),
            Ok(evidence) => {
                match capex_attest::summarize(&evidence) {
                    Ok(summary) => {
                        probe.nonce_matches = Some(summary.request_nonce == hex::encode(nonce));
                        probe.summary = Some(summary);
                    }
                    Err(err) => probe.verdict = Some(format!("{}: {err}", err.code())),
                }
                if probe.verdict.is_none() {
                    probe.verdict = Some(match capex_attest::verify(&evidence, &nonce, &uuid, &roots, None) {
                        Ok(v) => format!("verified (device {}, measurements not checked)", v.device_id),
                        Err(err) => format!("{}: {err}", err.code()),
                    });
                }
                probe.evidence = Some(evidence);
            }
        }
        out.push(probe);
    }
    Ok(out)
}
