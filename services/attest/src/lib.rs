//! capex-attest: verifies NVIDIA confidential-computing (CC) attestation evidence of a GPU.
//!
//! Pure: no I/O in [`verify`] (the constructors that read files are marked so), no database.
//! The agent fetches the evidence through NVML for a nonce the exchange chose
//! ([`CcRequest`]) and answers with a [`CcAnswer`]; the server calls [`verify`] and stores
//! the [`CcVerified`] with the GPU's `cc_attested` level.
//!
//! What [`verify`] checks, in this order (the first failure is the refusal):
//! 1. the evidence decodes and parses: the SPDM request/response layout of [`spdm`] and a
//!    certificate chain of [`chain`] (`cc_bad_format`);
//! 2. the chain, leaf first, is signed link by link (ECDSA P-384 / SHA-384) up to a trusted
//!    root, every certificate valid at `now`, every issuer a CA (`cc_chain_invalid`);
//! 3. the SPDM response's signature verifies with the leaf's key over
//!    SHA-384(request || response without the signature) (`cc_signature_invalid`);
//! 4. the nonce in the signed request is the one the exchange issued (`cc_wrong_nonce`);
//! 5. the evidence is for the GPU asked about, and the report's FWID equals the leaf
//!    certificate's FWID (`cc_wrong_device`); [`check_device_binding`] then compares the
//!    chip's identity key with the one pinned for the GPU;
//! 6. with reference values, every referenced measurement matches
//!    (`cc_measurement_mismatch`); without, [`CcVerified::measurements_checked`] is false.

pub mod chain;
pub mod reference;
pub mod spdm;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use chain::ParsedCert;
pub use reference::ReferenceValues;
pub use spdm::AttestationReport;

/// Environment variable naming a PEM file of trusted roots that replaces NVIDIA's.
pub const ROOT_PEM_ENV: &str = "CAPEX_CC_ROOT_PEM";
/// Environment variable naming the reference-value (RIM) directory.
pub const RIM_DIR_ENV: &str = "CAPEX_CC_RIM_DIR";
/// NVIDIA's Device Identity CA root (from NVIDIA/nvtrust,
/// `local_gpu_verifier/src/verifier/certs/verifier_device_root.pem`).
pub const NVIDIA_DEVICE_IDENTITY_ROOT_PEM: &str = include_str!("../certs/nvidia-device-identity-root.pem");
/// Largest base64 text accepted in an evidence field.
pub const EVIDENCE_FIELD_CHARS_MAX: usize = 96 * 1024;

/// The exchange asks a host for one GPU's evidence (listed in the assignments long-poll).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CcRequest {
    pub request_id: Uuid,
    pub gpu_uuid: String,
    /// 32 bytes, 64 lowercase hex characters.
    pub nonce: String,
}

/// A GPU's attestation evidence as NVML returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CcEvidence {
    pub gpu_uuid: String,
    /// The nonce the report was fetched for, 64 hex characters.
    pub nonce: String,
    /// Base64 of `nvmlDeviceGetConfComputeGpuAttestationReport`'s report bytes.
    pub attestation_report: String,
    /// Base64 of `nvmlDeviceGetConfComputeGpuCertificate`'s attestation certificate chain
    /// (concatenated PEM, leaf first).
    pub certificate_chain: String,
}

/// The host cannot produce evidence for this GPU (CC unsupported, off, or not in the driver).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CcUnavailable {
    pub gpu_uuid: String,
    pub reason: String,
}

/// The body of `POST /api/v1/hosts/{host_id}/attestations/{request_id}`:
/// `{"evidence": CcEvidence}` or `{"unavailable": CcUnavailable}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CcAnswer {
    Evidence(CcEvidence),
    Unavailable(CcUnavailable),
}

impl CcAnswer {
    pub fn gpu_uuid(&self) -> &str {
        match self {
            CcAnswer::Evidence(e) => &e.gpu_uuid,
            CcAnswer::Unavailable(u) => &u.gpu_uuid,
        }
    }
}

/// Why evidence was refused. [`CcRefusal::code`] is stable; Display gives the detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CcRefusal {
    #[error("attestation evidence is malformed: {0}")]
    BadFormat(String),
    #[error("attestation report is not for the issued nonce: {0}")]
    WrongNonce(String),
    #[error("GPU certificate chain is not trusted: {0}")]
    ChainInvalid(String),
    #[error("attestation report signature does not verify: {0}")]
    SignatureInvalid(String),
    #[error("attestation evidence is from another device: {0}")]
    WrongDevice(String),
    #[error("GPU measurements differ from the reference values: {0}")]
    MeasurementMismatch(String),
}

impl CcRefusal {
    /// `cc_bad_format`, `cc_wrong_nonce`, `cc_chain_invalid`, `cc_signature_invalid`,
    /// `cc_wrong_device` or `cc_measurement_mismatch`.
    pub fn code(&self) -> &'static str {
        match self {
            CcRefusal::BadFormat(_) => "cc_bad_format",
            CcRefusal::WrongNonce(_) => "cc_wrong_nonce",
            CcRefusal::ChainInvalid(_) => "cc_chain_invalid",
            CcRefusal::SignatureInvalid(_) => "cc_signature_invalid",
            CcRefusal::WrongDevice(_) => "cc_wrong_device",
            CcRefusal::MeasurementMismatch(_) => "cc_measurement_mismatch",
        }
    }

    /// Every code, for metrics registration and docs.
    pub const CODES: [&'static str; 6] = [
        "cc_bad_format",
        "cc_wrong_nonce",
        "cc_chain_invalid",
        "cc_signature_invalid",
        "cc_wrong_device",
        "cc_measurement_mismatch",
    ];
}

/// What verified evidence established, to store with the GPU's `cc_attested` level.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CcVerified {
    pub gpu_uuid: String,
    /// False when no reference values were configured: "measurements not checked".
    pub measurements_checked: bool,
    /// Measurement blocks in the report.
    pub measurement_count: usize,
    /// Blocks compared with (and equal to) a reference value; 0 when not checked.
    pub measurements_matched: usize,
    /// Subject of the leaf (attestation key) certificate.
    pub leaf_subject: String,
    /// Hex SHA-256 of the leaf certificate's DER.
    pub chain_fingerprint: String,
    /// Hex serial number of the leaf certificate (NVIDIA's `ueid` claim, in hex).
    pub leaf_serial: String,
    /// The chip's identity: hex SHA-256 of the device-identity certificate's public key
    /// (the leaf's issuer, `GH100 A01 GSP BROM` on Hopper). Stable for the chip; pin it per
    /// GPU with [`check_device_binding`].
    pub device_id: String,
    /// Subject of the device-identity certificate (its CN is NVIDIA's `hwmodel` claim).
    pub device_subject: String,
    /// Hex FWID of the report and the leaf certificate, when the report carries one.
    pub fwid: Option<String>,
    pub spdm_version: u8,
    /// Driver version the GPU reports in its signed opaque data.
    pub driver_version: Option<String>,
    /// VBIOS version the GPU reports in its signed opaque data.
    pub vbios_version: Option<String>,
}

/// Trusted roots of GPU certificate chains.
#[derive(Debug, Clone)]
pub struct TrustRoots {
    roots: Vec<ParsedCert>,
}

impl TrustRoots {
    /// NVIDIA's Device Identity CA, compiled in.
    pub fn nvidia() -> TrustRoots {
        TrustRoots::from_pem(NVIDIA_DEVICE_IDENTITY_ROOT_PEM).expect("the bundled NVIDIA root parses")
    }

    /// Every certificate of a PEM text is a trusted root.
    pub fn from_pem(pem: &str) -> Result<TrustRoots, String> {
        let roots = chain::parse_chain(pem.as_bytes())?;
        Ok(TrustRoots { roots })
    }

    /// Reads a PEM file of roots (file I/O; for [`ROOT_PEM_ENV`]).
    pub fn from_pem_file(path: &Path) -> Result<TrustRoots, String> {
        let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        TrustRoots::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Roots from the file named by [`ROOT_PEM_ENV`] when it is set, else NVIDIA's.
    pub fn from_env() -> Result<TrustRoots, String> {
        match std::env::var_os(ROOT_PEM_ENV) {
            Some(path) if !path.is_empty() => TrustRoots::from_pem_file(Path::new(&path)),
            _ => Ok(TrustRoots::nvidia()),
        }
    }

    pub fn certificates(&self) -> &[ParsedCert] {
        &self.roots
    }
}

/// Decodes a 64-hex-character nonce.
pub fn parse_nonce(hex_text: &str) -> Option<[u8; 32]> {
    let bytes = hex::decode(hex_text).ok()?;
    bytes.try_into().ok()
}

/// The two byte strings inside evidence, decoded and size-checked.
pub fn decode_evidence(evidence: &CcEvidence) -> Result<(Vec<u8>, Vec<u8>), CcRefusal> {
    let decode = |field: &str, text: &str| {
        if text.len() > EVIDENCE_FIELD_CHARS_MAX {
            return Err(CcRefusal::BadFormat(format!("{field} is over {EVIDENCE_FIELD_CHARS_MAX} characters")));
        }
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| CcRefusal::BadFormat(format!("{field} is not base64: {e}")))
    };
    Ok((
        decode("attestation_report", &evidence.attestation_report)?,
        decode("certificate_chain", &evidence.certificate_chain)?,
    ))
}

/// [`verify_at`] at the current time.
pub fn verify(
    evidence: &CcEvidence,
    expected_nonce: &[u8; 32],
    expected_gpu_uuid: &str,
    roots: &TrustRoots,
    rims: Option<&ReferenceValues>,
) -> Result<CcVerified, CcRefusal> {
    verify_at(evidence, expected_nonce, expected_gpu_uuid, roots, rims, SystemTime::now())
}

/// Verifies `evidence` as the module docs describe, with certificate validity taken at
/// `now`. Never panics, whatever the evidence holds.
pub fn verify_at(
    evidence: &CcEvidence,
    expected_nonce: &[u8; 32],
    expected_gpu_uuid: &str,
    roots: &TrustRoots,
    rims: Option<&ReferenceValues>,
    now: SystemTime,
) -> Result<CcVerified, CcRefusal> {
    // 1. Format.
    let stated_nonce =
        parse_nonce(&evidence.nonce).ok_or_else(|| CcRefusal::BadFormat("nonce is not 64 hex characters".into()))?;
    let (report_bytes, chain_bytes) = decode_evidence(evidence)?;
    let report =
        spdm::parse_report(&report_bytes).map_err(|e| CcRefusal::BadFormat(format!("attestation report: {e}")))?;
    let certs = chain::parse_chain(&chain_bytes).map_err(CcRefusal::BadFormat)?;

    // 2. Chain.
    let now_unix_s = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    chain::verify_chain(&certs, &roots.roots, now_unix_s).map_err(CcRefusal::ChainInvalid)?;
    let leaf = &certs[0];
    let device = &certs[1];

    // 3. Signature of the measurements by the leaf (attestation) key.
    let key = leaf.p384_key().map_err(CcRefusal::ChainInvalid)?;
    let signature = p384::ecdsa::Signature::from_slice(&report.signature)
        .map_err(|_| CcRefusal::SignatureInvalid("signature is not a valid P-384 r||s pair".into()))?;
    {
        use p384::ecdsa::signature::Verifier;
        key.verify(&report.signed, &signature).map_err(|_| {
            CcRefusal::SignatureInvalid(format!("the SPDM measurement response is not signed by {}", leaf.subject()))
        })?;
    }

    // 4. Nonce: the signed request must carry ours.
    if report.request_nonce != *expected_nonce {
        return Err(CcRefusal::WrongNonce(format!(
            "the signed request carries nonce {}, the exchange issued {}",
            hex::encode(report.request_nonce),
            hex::encode(expected_nonce)
        )));
    }
    if stated_nonce != *expected_nonce {
        return Err(CcRefusal::WrongNonce("the evidence states another nonce than the one issued".into()));
    }

    // 5. Device.
    if evidence.gpu_uuid != expected_gpu_uuid {
        return Err(CcRefusal::WrongDevice(format!(
            "evidence is for GPU {}, the exchange asked for {expected_gpu_uuid}",
            evidence.gpu_uuid
        )));
    }
    let fwid = match report.fwid() {
        Some(report_fwid) => {
            let cert_fwid = leaf.fwid().ok_or_else(|| {
                CcRefusal::WrongDevice(format!("the report has an FWID but {} carries none", leaf.subject()))
            })?;
            if cert_fwid != report_fwid {
                return Err(CcRefusal::WrongDevice(format!(
                    "the report's FWID {} differs from the leaf certificate's {}",
                    hex::encode(report_fwid),
                    hex::encode(&cert_fwid)
                )));
            }
            Some(hex::encode(report_fwid))
        }
        None => None,
    };
    let device_id = device.key_fingerprint().map_err(CcRefusal::ChainInvalid)?;

    // 6. Measurements.
    let mut matched = 0;
    if let Some(rims) = rims {
        for (index, accepted) in rims.indices() {
            let value = report.measurement(*index).ok_or_else(|| {
                CcRefusal::MeasurementMismatch(format!(
                    "measurement {index} has a reference value but is not in the report"
                ))
            })?;
            if !accepted.iter().any(|a| a.as_slice() == value) {
                return Err(CcRefusal::MeasurementMismatch(format!(
                    "measurement {index} is {}, not one of the {} reference value(s)",
                    hex::encode(value),
                    accepted.len()
                )));
            }
            matched += 1;
        }
    }

    Ok(CcVerified {
        gpu_uuid: evidence.gpu_uuid.clone(),
        measurements_checked: rims.is_some(),
        measurement_count: report.blocks.len(),
        measurements_matched: matched,
        leaf_subject: leaf.subject(),
        chain_fingerprint: leaf.fingerprint(),
        leaf_serial: leaf.serial_hex(),
        device_id,
        device_subject: device.subject(),
        fwid,
        spdm_version: report.spdm_version,
        driver_version: report.opaque_text(spdm::OPAQUE_DRIVER_VERSION),
        vbios_version: report.vbios_version(),
    })
}

/// The relay check the certificate chain alone cannot make: NVIDIA's chain names the chip
/// (its device-identity key), not the GPU UUID NVML reports. The server pins
/// [`CcVerified::device_id`] to the GPU at its first verified attestation; later evidence
/// for that GPU must come from the same chip, and (checked by the server's uniqueness rule)
/// one chip's identity may be pinned to one GPU only.
pub fn check_device_binding(verified: &CcVerified, pinned_device_id: Option<&str>) -> Result<(), CcRefusal> {
    match pinned_device_id {
        Some(pinned) if pinned != verified.device_id => Err(CcRefusal::WrongDevice(format!(
            "GPU {} was attested by the chip with identity {pinned}, this evidence comes from {}",
            verified.gpu_uuid, verified.device_id
        ))),
        _ => Ok(()),
    }
}

/// What the agent's probe prints about evidence it fetched: parsed, not verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EvidenceSummary {
    pub report_bytes: usize,
    pub spdm_version: u8,
    pub request_nonce: String,
    pub measurement_count: usize,
    pub fwid: Option<String>,
    pub driver_version: Option<String>,
    pub vbios_version: Option<String>,
    pub chain_subjects: Vec<String>,
}

/// Parses evidence without verifying it, for diagnostics.
pub fn summarize(evidence: &CcEvidence) -> Result<EvidenceSummary, CcRefusal> {
    let (report_bytes, chain_bytes) = decode_evidence(evidence)?;
    let report =
        spdm::parse_report(&report_bytes).map_err(|e| CcRefusal::BadFormat(format!("attestation report: {e}")))?;
    let certs = chain::parse_chain(&chain_bytes).map_err(CcRefusal::BadFormat)?;
    Ok(EvidenceSummary {
        report_bytes: report_bytes.len(),
        spdm_version: report.spdm_version,
        request_nonce: hex::encode(report.request_nonce),
        measurement_count: report.blocks.len(),
        fwid: report.fwid().map(hex::encode),
        driver_version: report.opaque_text(spdm::OPAQUE_DRIVER_VERSION),
        vbios_version: report.vbios_version(),
        chain_subjects: certs.iter().map(ParsedCert::subject).collect(),
    })
}
