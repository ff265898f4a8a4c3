//! Signed reports and inventories: the payload types, the envelope and its signature.
//!
//! An envelope is `{"payload": base64(JSON bytes), "signature": base64(ed25519 sig)}`. The
//! signature covers a domain tag followed by the exact payload bytes, so a report signature
//! can never be replayed as an inventory (or any later message kind) and the receiver checks
//! the bytes it got before it parses them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Domain tag of usage reports.
pub const REPORT_DOMAIN: &[u8] = b"capex/report/v1";
/// Domain tag of the registration inventory.
pub const INVENTORY_DOMAIN: &[u8] = b"capex/inventory/v1";

/// The signed wire form of a report or inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedEnvelope {
    /// base64 (standard alphabet, padded) of the JSON payload bytes.
    #[schema(pattern = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")]
    pub payload: String,
    /// base64 of the 64-byte ed25519 signature over `domain || payload bytes`.
    #[schema(pattern = r"^[A-Za-z0-9+/]{85}[AQgw]==$")]
    pub signature: String,
}

/// Why an envelope was refused before its payload was parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("{0} is not valid base64")]
    InvalidBase64(&'static str),
    #[error("signature must be 64 bytes")]
    SignatureLength,
    #[error("public key must be 32 bytes of a valid, non-weak ed25519 point")]
    InvalidPublicKey,
    #[error("signature does not verify")]
    BadSignature,
}

/// Decoded, not yet verified envelope contents.
#[derive(Debug, Clone)]
pub struct DecodedEnvelope {
    pub payload: Vec<u8>,
    pub signature: Signature,
}

impl SignedEnvelope {
    /// Signs `payload` (already serialised bytes) under `domain`.
    pub fn seal(domain: &[u8], key: &SigningKey, payload: &[u8]) -> SignedEnvelope {
        let signature = key.sign(&signed_message(domain, payload));
        SignedEnvelope { payload: BASE64.encode(payload), signature: BASE64.encode(signature.to_bytes()) }
    }

    /// Serialises `value` to JSON and signs those bytes.
    pub fn seal_json<T: Serialize>(domain: &[u8], key: &SigningKey, value: &T) -> SignedEnvelope {
        let bytes = serde_json::to_vec(value).expect("report types serialise to JSON");
        Self::seal(domain, key, &bytes)
    }

    /// Decodes both fields; does not verify.
    pub fn decode(&self) -> Result<DecodedEnvelope, EnvelopeError> {
        let payload = BASE64.decode(self.payload.as_bytes()).map_err(|_| EnvelopeError::InvalidBase64("payload"))?;
        let signature =
            BASE64.decode(self.signature.as_bytes()).map_err(|_| EnvelopeError::InvalidBase64("signature"))?;
        let signature: [u8; ed25519_dalek::SIGNATURE_LENGTH] =
            signature.try_into().map_err(|_| EnvelopeError::SignatureLength)?;
        Ok(DecodedEnvelope { payload, signature: Signature::from_bytes(&signature) })
    }

    /// Decodes and verifies (strictly) against `key`; returns the verified payload bytes.
    pub fn open(&self, domain: &[u8], key: &VerifyingKey) -> Result<Vec<u8>, EnvelopeError> {
        let decoded = self.decode()?;
        verify_strict(domain, key, &decoded.payload, &decoded.signature)?;
        Ok(decoded.payload)
    }
}

/// `domain || payload`: what the signature covers.
pub fn signed_message(domain: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(domain.len() + payload.len());
    message.extend_from_slice(domain);
    message.extend_from_slice(payload);
    message
}

/// One signature check with `verify_strict` (no small-order keys or R, canonical s).
pub fn verify_strict(
    domain: &[u8],
    key: &VerifyingKey,
    payload: &[u8],
    signature: &Signature,
) -> Result<(), EnvelopeError> {
    key.verify_strict(&signed_message(domain, payload), signature).map_err(|_| EnvelopeError::BadSignature)
}

/// Verifies many signatures at once and says which are valid, with the same verdicts
/// [`verify_strict`] gives one by one.
///
/// `verify_batch` checks the whole set in one multi-scalar multiplication, about twice
/// as fast per signature, but it does not refuse small-order `R` or keys the way
/// `verify_strict` does; those two checks run here first (keys: [`parse_public_key`]
/// refuses weak keys at registration, and the check is repeated). If the batch fails,
/// each signature is checked alone to find the bad ones.
pub fn verify_many_strict(domain: &[u8], items: &[(&VerifyingKey, &[u8], &Signature)]) -> Vec<bool> {
    let mut verdicts = vec![false; items.len()];
    let candidates: Vec<usize> = (0..items.len())
        .filter(|&i| {
            let (key, _, signature) = items[i];
            !key.is_weak() && !r_is_small_order(signature)
        })
        .collect();
    if candidates.is_empty() {
        return verdicts;
    }
    let messages: Vec<Vec<u8>> = candidates.iter().map(|&i| signed_message(domain, items[i].1)).collect();
    if candidates.len() > 1 {
        let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let signatures: Vec<Signature> = candidates.iter().map(|&i| *items[i].2).collect();
        let keys: Vec<VerifyingKey> = candidates.iter().map(|&i| *items[i].0).collect();
        if ed25519_dalek::verify_batch(&message_refs, &signatures, &keys).is_ok() {
            for &i in &candidates {
                verdicts[i] = true;
            }
            return verdicts;
        }
    }
    for (n, &i) in candidates.iter().enumerate() {
        verdicts[i] = items[i].0.verify_strict(&messages[n], items[i].2).is_ok();
    }
    verdicts
}

fn r_is_small_order(signature: &Signature) -> bool {
    match curve25519_dalek::edwards::CompressedEdwardsY(*signature.r_bytes()).decompress() {
        Some(point) => point.is_small_order(),
        // Not a point at all: the signature cannot verify; let the check below say so.
        None => true,
    }
}

/// Parses a base64 public key, refusing invalid and weak (small-order) points.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, EnvelopeError> {
    let bytes = BASE64.decode(text.as_bytes()).map_err(|_| EnvelopeError::InvalidPublicKey)?;
    let bytes: [u8; 32] = bytes.try_into().map_err(|_| EnvelopeError::InvalidPublicKey)?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| EnvelopeError::InvalidPublicKey)?;
    if key.is_weak() {
        return Err(EnvelopeError::InvalidPublicKey);
    }
    Ok(key)
}

/// base64 of a public key, as it appears in inventories and on the CLI.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    BASE64.encode(key.as_bytes())
}

/// Which probe produced an inventory or report. Signed with it, so a host cannot sell
/// simulated GPUs as real ones without a modified agent (which is why `reported` is the
/// lowest level the exchange sells outside demo mode, and challenges exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuBackend {
    /// NVIDIA's management library on real GPUs.
    Nvml,
    /// The agent's simulated GPUs (demos and tests).
    Simulated,
}

impl std::fmt::Display for GpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl GpuBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            GpuBackend::Nvml => "nvml",
            GpuBackend::Simulated => "simulated",
        }
    }
}

/// One usage report: what the host's GPUs did during the last interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportPayload {
    pub host_id: Uuid,
    /// Starts at 0 and grows by one per report; the server accepts only increasing values.
    pub seq: u64,
    /// When this envelope was signed; the server checks it against its clock-skew window.
    /// A report resent from the spool is re-signed with a new `sent_at` (same `seq`).
    pub sent_at: DateTime<Utc>,
    /// When the GPUs were sampled.
    pub measured_at: DateTime<Utc>,
    /// The agent's reporting interval; liveness allows three of them between reports.
    pub interval_s: u32,
    /// The probe that sampled the GPUs; must be the one the host registered with.
    pub backend: GpuBackend,
    pub gpus: Vec<GpuSample>,
    /// State of each lease the host runs. Absent until the job runtime fills it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leases: Option<Vec<LeaseReport>>,
}

/// One GPU in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSample {
    /// NVML UUID (`GPU-...`).
    pub uuid: String,
    pub name: String,
    pub memory_total_mib: u64,
    pub memory_used_mib: u64,
    pub utilization_pct: u32,
    pub power_mw: u64,
    /// Energy since the driver loaded, in millijoules; never goes backwards.
    pub energy_mj: u64,
    pub temperature_c: i32,
    pub processes: Vec<GpuProcess>,
}

/// A compute process on a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_memory_mib: u64,
    /// The Capex lease this process runs for; `None` marks a foreign process (one the
    /// exchange did not place), which makes the GPU unavailable for sale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_id: Option<Uuid>,
}

/// State of one lease as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseReport {
    pub lease_id: Uuid,
    /// e.g. "starting", "running", "exited".
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// The registration message: the host's key and what hardware it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryPayload {
    /// base64 of the host's ed25519 public key; the envelope must verify under it, which
    /// proves the registering agent holds the private key.
    pub public_key: String,
    /// A human name for the host (its hostname by default).
    pub name: String,
    /// When the inventory was signed; checked against the clock-skew window.
    pub created_at: DateTime<Utc>,
    pub interval_s: u32,
    /// The probe that found the GPUs; the server refuses `simulated` outside demo mode.
    pub backend: GpuBackend,
    pub driver_version: Option<String>,
    pub cuda_version: Option<String>,
    pub gpus: Vec<InventoryGpu>,
}

/// One GPU in the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryGpu {
    /// NVML index on the host.
    pub index: u32,
    pub uuid: String,
    pub name: String,
    pub memory_total_mib: u64,
    pub pci_bus_id: Option<String>,
}

/// Domain tag of host-authenticated API requests (assignments, acknowledgements, logs).
/// v2 added the nonce to the signed bytes; a v1 request (no nonce) is refused.
pub const HOST_REQUEST_DOMAIN: &[u8] = b"capex/host-request/v2";
/// Header with the request's unix time in seconds (checked against the clock-skew window).
pub const HOST_TIME_HEADER: &str = "x-capex-host-time";
/// Header with the request's nonce: [`HOST_NONCE_HEX_CHARS`] lowercase hex characters
/// (128 random bits), new for every request. The server refuses a nonce it has seen from
/// the same host within the clock-skew window, so a captured request cannot be replayed.
pub const HOST_NONCE_HEADER: &str = "x-capex-host-nonce";
/// Header with base64 of the host key's signature over [`host_request_message`].
pub const HOST_SIGNATURE_HEADER: &str = "x-capex-host-signature";
/// Length of a nonce in hex characters (16 bytes).
pub const HOST_NONCE_HEX_CHARS: usize = 32;

/// A nonce's 16 bytes from its header value: exactly [`HOST_NONCE_HEX_CHARS`] lowercase
/// hex characters (one spelling per nonce, so a replay cannot dodge the check by case).
pub fn parse_host_nonce(text: &str) -> Option<[u8; 16]> {
    if text.len() != HOST_NONCE_HEX_CHARS || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        bytes[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(bytes)
}

/// The header spelling of a nonce's bytes.
pub fn format_host_nonce(bytes: &[u8; 16]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a host-authenticated request's signature covers (after [`HOST_REQUEST_DOMAIN`]):
/// method, path (without the query), host id, unix time, nonce and the exact body bytes,
/// so a signature cannot be moved to another route, host, time, nonce or body.
pub fn host_request_message(method: &str, path: &str, host_id: Uuid, unix_s: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = format!("{method}\n{path}\n{host_id}\n{unix_s}\n{nonce}\n").into_bytes();
    message.extend_from_slice(body);
    message
}

/// Signs a host request; returns the time and signature header values (the nonce header
/// is `nonce` itself).
pub fn sign_host_request(
    key: &SigningKey,
    method: &str,
    path: &str,
    host_id: Uuid,
    unix_s: i64,
    nonce: &str,
    body: &[u8],
) -> (String, String) {
    let message =
        signed_message(HOST_REQUEST_DOMAIN, &host_request_message(method, path, host_id, unix_s, nonce, body));
    let signature = key.sign(&message);
    (unix_s.to_string(), BASE64.encode(signature.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn host_nonces_have_one_spelling() {
        let bytes = [0xab; 16];
        let text = format_host_nonce(&bytes);
        assert_eq!(text.len(), HOST_NONCE_HEX_CHARS);
        assert_eq!(parse_host_nonce(&text), Some(bytes));
        assert_eq!(parse_host_nonce(&text.to_uppercase()), None);
        assert_eq!(parse_host_nonce(&text[1..]), None);
        assert_eq!(parse_host_nonce(&format!("{}g", &text[1..])), None);
        assert_eq!(parse_host_nonce("+1234567890abcdef1234567890abcde"), None);
    }

    #[test]
    fn sealed_envelope_opens_with_its_key_only() {
        let envelope = SignedEnvelope::seal(REPORT_DOMAIN, &key(1), b"{\"x\":1}");
        assert_eq!(envelope.open(REPORT_DOMAIN, &key(1).verifying_key()).unwrap(), b"{\"x\":1}");
        assert_eq!(envelope.open(REPORT_DOMAIN, &key(2).verifying_key()), Err(EnvelopeError::BadSignature));
        // The domain tag separates message kinds.
        assert_eq!(envelope.open(INVENTORY_DOMAIN, &key(1).verifying_key()), Err(EnvelopeError::BadSignature));
    }

    #[test]
    fn altered_payload_fails() {
        let mut envelope = SignedEnvelope::seal(REPORT_DOMAIN, &key(1), b"{\"x\":1}");
        envelope.payload = BASE64.encode(b"{\"x\":2}");
        assert_eq!(envelope.open(REPORT_DOMAIN, &key(1).verifying_key()), Err(EnvelopeError::BadSignature));
    }

    #[test]
    fn malformed_fields_are_named() {
        let envelope = SignedEnvelope { payload: "***".into(), signature: BASE64.encode([0u8; 64]) };
        assert_eq!(envelope.decode().unwrap_err(), EnvelopeError::InvalidBase64("payload"));
        let envelope = SignedEnvelope { payload: "e30=".into(), signature: BASE64.encode([0u8; 10]) };
        assert_eq!(envelope.decode().unwrap_err(), EnvelopeError::SignatureLength);
    }

    #[test]
    fn batch_verdicts_match_single_verdicts() {
        let keys: Vec<SigningKey> = (1..=6).map(key).collect();
        let payloads: Vec<Vec<u8>> = (0..6).map(|i| format!("{{\"n\":{i}}}").into_bytes()).collect();
        let mut signatures: Vec<Signature> =
            keys.iter().zip(&payloads).map(|(k, p)| k.sign(&signed_message(REPORT_DOMAIN, p))).collect();
        // Item 2 is signed by the wrong key, item 4 over other bytes.
        signatures[2] = keys[0].sign(&signed_message(REPORT_DOMAIN, &payloads[2]));
        signatures[4] = keys[4].sign(b"something else");
        let verifying: Vec<VerifyingKey> = keys.iter().map(SigningKey::verifying_key).collect();
        let items: Vec<(&VerifyingKey, &[u8], &Signature)> =
            (0..6).map(|i| (&verifying[i], payloads[i].as_slice(), &signatures[i])).collect();
        assert_eq!(verify_many_strict(REPORT_DOMAIN, &items), vec![true, true, false, true, false, true]);
        let all_good: Vec<_> = items.iter().enumerate().filter(|(i, _)| *i != 2 && *i != 4).map(|(_, x)| *x).collect();
        assert!(verify_many_strict(REPORT_DOMAIN, &all_good).iter().all(|ok| *ok));
    }

    #[test]
    fn weak_public_keys_are_refused() {
        // The identity point: small order.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(parse_public_key(&BASE64.encode(identity)), Err(EnvelopeError::InvalidPublicKey));
        assert!(parse_public_key(&encode_public_key(&key(7).verifying_key())).is_ok());
        assert_eq!(parse_public_key("short"), Err(EnvelopeError::InvalidPublicKey));
    }

    #[test]
    fn report_round_trips_and_leases_are_optional() {
        let report = ReportPayload {
            host_id: Uuid::nil(),
            seq: 3,
            sent_at: Utc::now(),
            measured_at: Utc::now(),
            interval_s: 10,
            backend: GpuBackend::Nvml,
            gpus: vec![],
            leases: None,
        };
        let text = serde_json::to_string(&report).unwrap();
        assert!(!text.contains("leases"));
        assert_eq!(serde_json::from_str::<ReportPayload>(&text).unwrap(), report);
    }
}
