//! The attestation report NVML returns: an SPDM `GET_MEASUREMENTS` request followed by the
//! GPU's `MEASUREMENTS` response (DMTF DSP0274, version 1.1 as NVIDIA's GPUs speak it).
//!
//! ```text
//! request (37 bytes)
//!   0  SPDMVersion          1   (0x11 on Hopper)
//!   1  RequestResponseCode  1   0xE0 GET_MEASUREMENTS
//!   2  Param1               1   bit 0: signature requested (must be set)
//!   3  Param2               1   measurement operation (0xFF: all blocks)
//!   4  Nonce               32   the verifier's nonce
//!  36  SlotIDParam          1
//! response
//!   0  SPDMVersion          1   equal to the request's
//!   1  RequestResponseCode  1   0x60 MEASUREMENTS
//!   2  Param1               1
//!   3  Param2               1
//!   4  NumberOfBlocks       1
//!   5  MeasurementRecordLength 3 (little endian) = L1
//!   8  MeasurementRecord   L1   NumberOfBlocks blocks, see below
//!   8+L1 Nonce             32   the responder's own nonce
//!  40+L1 OpaqueLength       2   (little endian) = L2
//!  42+L1 OpaqueData        L2   NVIDIA's TLVs: type u16, size u16, value
//!  42+L1+L2 Signature      96   ECDSA P-384 r||s over SHA-384(request || response before it)
//! measurement block
//!   0  Index                1
//!   1  MeasurementSpecification 1 (1 = DMTF)
//!   2  MeasurementSize      2   = 3 + value size
//!   4  DMTFSpecMeasurementValueType 1
//!   5  DMTFSpecMeasurementValueSize 2
//!   7  DMTFSpecMeasurementValue (48 bytes on Hopper: SHA-384 digests)
//! ```
//!
//! Every read is bounds-checked; any input either parses or yields a [`FormatError`],
//! never a panic.

use std::collections::BTreeMap;

/// Length of the SPDM `GET_MEASUREMENTS` request at the start of NVIDIA's report.
pub const REQUEST_BYTES: usize = 37;
/// Length of the raw ECDSA P-384 signature (r || s) ending the response.
pub const SIGNATURE_BYTES: usize = 96;
/// Largest report accepted: NVML's buffer is 8 KiB (`NVML_CC_GPU_ATTESTATION_REPORT_SIZE`).
pub const REPORT_BYTES_MAX: usize = 16 * 1024;

const GET_MEASUREMENTS: u8 = 0xE0;
const MEASUREMENTS: u8 = 0x60;
const SIGNATURE_REQUESTED: u8 = 0x01;
const DMTF_SPECIFICATION: u8 = 1;

/// NVIDIA opaque-data field types this crate reads (nvtrust `OpaqueData.OPAQUE_DATA_TYPES`).
pub const OPAQUE_DRIVER_VERSION: u16 = 3;
pub const OPAQUE_VBIOS_VERSION: u16 = 6;
pub const OPAQUE_FWID: u16 = 20;

/// Why the bytes are not a report of the expected layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(message: impl Into<String>) -> FormatError {
    FormatError(message.into())
}

/// One DMTF measurement block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementBlock {
    pub index: u8,
    pub value_type: u8,
    pub value: Vec<u8>,
}

/// A parsed attestation report. `signed` and `signature` are exactly what the GPU signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationReport {
    pub spdm_version: u8,
    /// The nonce the requester (the agent, for the exchange) put in `GET_MEASUREMENTS`.
    pub request_nonce: [u8; 32],
    pub measurement_operation: u8,
    pub slot_id: u8,
    pub blocks: Vec<MeasurementBlock>,
    pub responder_nonce: [u8; 32],
    /// Opaque-data fields by type, in order of appearance (a repeated type keeps the first).
    pub opaque: BTreeMap<u16, Vec<u8>>,
    /// request || response without the trailing signature.
    pub signed: Vec<u8>,
    /// Raw r || s.
    pub signature: [u8; SIGNATURE_BYTES],
}

impl AttestationReport {
    /// Measurement value by block index.
    pub fn measurement(&self, index: u8) -> Option<&[u8]> {
        self.blocks.iter().find(|b| b.index == index).map(|b| b.value.as_slice())
    }

    /// The opaque-data FWID (firmware id, a SHA-384 digest), when the GPU sent one.
    pub fn fwid(&self) -> Option<&[u8]> {
        self.opaque.get(&OPAQUE_FWID).map(Vec::as_slice).filter(|v| !v.is_empty())
    }

    /// An opaque-data text field (NUL-terminated ASCII on the GPU), e.g. the driver version.
    pub fn opaque_text(&self, field: u16) -> Option<String> {
        let raw = self.opaque.get(&field)?;
        let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
        let text = std::str::from_utf8(raw.get(..end)?).ok()?.trim();
        (!text.is_empty()).then(|| text.to_string())
    }

    /// The VBIOS version as NVIDIA prints it (`96.00.9F.00.01`), from its 8 opaque bytes.
    pub fn vbios_version(&self) -> Option<String> {
        let raw = self.opaque.get(&OPAQUE_VBIOS_VERSION)?;
        if raw.len() != 8 {
            return None;
        }
        // nvtrust format_vbios_version: bytes 3,2,1,0 then byte 4, in hex.
        Some(format!("{:02X}.{:02X}.{:02X}.{:02X}.{:02X}", raw[3], raw[2], raw[1], raw[0], raw[4]))
    }
}

/// A bounds-checked reader over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FormatError> {
        let end = self.at.checked_add(n).ok_or_else(|| bad(format!("{what}: length overflows")))?;
        let out = self
            .bytes
            .get(self.at..end)
            .ok_or_else(|| bad(format!("{what}: needs {n} bytes at offset {}, {} left", self.at, self.left())))?;
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, FormatError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16le(&mut self, what: &str) -> Result<u16, FormatError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u24le(&mut self, what: &str) -> Result<usize, FormatError> {
        let b = self.take(3, what)?;
        Ok(usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16)
    }

    fn array32(&mut self, what: &str) -> Result<[u8; 32], FormatError> {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.take(32, what)?);
        Ok(out)
    }

    fn left(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }
}

/// Parses NVIDIA's attestation report (request then response, nothing after the signature).
pub fn parse_report(report: &[u8]) -> Result<AttestationReport, FormatError> {
    if report.len() > REPORT_BYTES_MAX {
        return Err(bad(format!("report is {} bytes, at most {REPORT_BYTES_MAX} accepted", report.len())));
    }
    if report.len() < REQUEST_BYTES + 8 + 32 + 2 + SIGNATURE_BYTES {
        return Err(bad(format!("report is {} bytes, too short for an SPDM request and response", report.len())));
    }
    let mut r = Reader::new(report);
    let spdm_version = r.u8("request SPDMVersion")?;
    let code = r.u8("request code")?;
    if code != GET_MEASUREMENTS {
        return Err(bad(format!("request code is {code:#04x}, expected GET_MEASUREMENTS (0xe0)")));
    }
    let param1 = r.u8("request Param1")?;
    if param1 & SIGNATURE_REQUESTED == 0 {
        return Err(bad("the GET_MEASUREMENTS request did not ask for a signature"));
    }
    let measurement_operation = r.u8("request Param2")?;
    let request_nonce = r.array32("request nonce")?;
    let slot_id = r.u8("request SlotIDParam")?;
    debug_assert_eq!(r.at, REQUEST_BYTES);

    let version = r.u8("response SPDMVersion")?;
    if version != spdm_version {
        return Err(bad(format!(
            "response SPDM version {version:#04x} differs from the request's {spdm_version:#04x}"
        )));
    }
    let code = r.u8("response code")?;
    if code != MEASUREMENTS {
        return Err(bad(format!("response code is {code:#04x}, expected MEASUREMENTS (0x60)")));
    }
    let _param1 = r.u8("response Param1")?;
    let _param2 = r.u8("response Param2")?;
    let block_count = r.u8("NumberOfBlocks")?;
    let record_len = r.u24le("MeasurementRecordLength")?;
    let record = r.take(record_len, "MeasurementRecord")?;
    let blocks = parse_blocks(record, block_count)?;
    let responder_nonce = r.array32("response nonce")?;
    let opaque_len = r.u16le("OpaqueLength")?;
    let opaque = parse_opaque(r.take(usize::from(opaque_len), "OpaqueData")?)?;
    let signed_len = r.at;
    let signature_bytes = r.take(SIGNATURE_BYTES, "Signature")?;
    if r.left() != 0 {
        return Err(bad(format!("{} bytes after the signature", r.left())));
    }
    let mut signature = [0u8; SIGNATURE_BYTES];
    signature.copy_from_slice(signature_bytes);
    Ok(AttestationReport {
        spdm_version,
        request_nonce,
        measurement_operation,
        slot_id,
        blocks,
        responder_nonce,
        opaque,
        signed: report[..signed_len].to_vec(),
        signature,
    })
}

fn parse_blocks(record: &[u8], count: u8) -> Result<Vec<MeasurementBlock>, FormatError> {
    let mut r = Reader::new(record);
    let mut blocks: Vec<MeasurementBlock> = Vec::with_capacity(usize::from(count));
    for n in 0..count {
        let index = r.u8("measurement Index")?;
        let spec = r.u8("MeasurementSpecification")?;
        if spec != DMTF_SPECIFICATION {
            return Err(bad(format!("measurement block {index} uses specification {spec}, not DMTF (1)")));
        }
        let size = usize::from(r.u16le("MeasurementSize")?);
        let mut m = Reader::new(r.take(size, "Measurement")?);
        let value_type = m.u8("DMTFSpecMeasurementValueType")?;
        let value_size = usize::from(m.u16le("DMTFSpecMeasurementValueSize")?);
        let value = m.take(value_size, "DMTFSpecMeasurementValue")?.to_vec();
        if m.left() != 0 {
            return Err(bad(format!("measurement block {index}: {} bytes after its value", m.left())));
        }
        if blocks.iter().any(|b| b.index == index) {
            return Err(bad(format!("measurement index {index} appears twice (block {n})")));
        }
        blocks.push(MeasurementBlock { index, value_type, value });
    }
    if r.left() != 0 {
        return Err(bad(format!("{} bytes in the measurement record after {count} blocks", r.left())));
    }
    Ok(blocks)
}

fn parse_opaque(data: &[u8]) -> Result<BTreeMap<u16, Vec<u8>>, FormatError> {
    let mut r = Reader::new(data);
    let mut fields = BTreeMap::new();
    while r.left() > 0 {
        let field = r.u16le("opaque DataType")?;
        let size = usize::from(r.u16le("opaque DataSize")?);
        let value = r.take(size, "opaque Data")?;
        fields.entry(field).or_insert_with(|| value.to_vec());
    }
    Ok(fields)
}
