//! Test evidence in NVIDIA's layout: a five-certificate P-384 chain (root, product CA,
//! provisioner CA, device identity "BROM", attestation leaf with a TCG DICE FWID
//! extension) and SPDM 1.1 GET_MEASUREMENTS request/response pairs signed by the leaf.
#![allow(dead_code, unreachable_pub)]

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use capex_attest::{CcEvidence, TrustRoots};
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha384};
use x509_cert::Certificate;
use x509_cert::certificate::{TbsCertificate, Version};
use x509_cert::der::asn1::{BitString, GeneralizedTime, ObjectIdentifier, OctetString};
use x509_cert::der::{Decode, Encode, EncodePem, pem::LineEnding};
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, EncodePublicKey, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};

pub const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
pub const TCB_INFO: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.133.5.4.1");
pub const GPU_UUID: &str = "GPU-2f1c9a52-7a3e-4f0b-9d1e-0c4b5a6e7f80";
/// Certificates are valid from NOT_BEFORE_S to NOT_AFTER_S; tests verify at NOW_S.
pub const NOT_BEFORE_S: u64 = 1_600_000_000;
pub const NOT_AFTER_S: u64 = 2_000_000_000;
pub const NOW_S: u64 = 1_750_000_000;

pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW_S)
}

/// A deterministic P-384 key named by `label`.
pub fn key(label: &str) -> SigningKey {
    (0u32..)
        .find_map(|i| SigningKey::from_slice(&Sha384::digest(format!("{label}/{i}"))).ok())
        .expect("some scalar is valid")
}

pub fn digest48(label: &str) -> Vec<u8> {
    Sha384::digest(label).to_vec()
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ca,
    /// A CA certificate without the cA flag (a broken intermediate).
    NotCa,
    Leaf,
}

/// Hopper's TcbInfo extension value: SEQUENCE { INTEGER 1, SEQUENCE { OID sha384, OCTET STRING fwid } }
/// (the real one also carries a SubjectPublicKeyInfo before the FWID).
pub fn tcb_info(fwid: &[u8]) -> Vec<u8> {
    assert_eq!(fwid.len(), 48);
    let mut fwid_seq = vec![0x30, 61, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x04, 0x30];
    fwid_seq.extend_from_slice(fwid);
    let mut out = vec![0x30, (3 + fwid_seq.len()) as u8, 0x02, 0x01, 0x01];
    out.extend(fwid_seq);
    out
}

pub struct CertSpec<'a> {
    pub subject: &'a str,
    pub issuer: &'a str,
    pub subject_key: &'a VerifyingKey,
    pub issuer_key: &'a SigningKey,
    pub kind: Kind,
    pub fwid: Option<&'a [u8]>,
    pub not_before_s: u64,
    pub not_after_s: u64,
}

fn extension(oid: ObjectIdentifier, critical: bool, value: Vec<u8>) -> Extension {
    Extension { extn_id: oid, critical, extn_value: OctetString::new(value).unwrap() }
}

fn time(unix_s: u64) -> Time {
    Time::GeneralTime(GeneralizedTime::from_unix_duration(Duration::from_secs(unix_s)).unwrap())
}

/// One DER certificate.
pub fn cert(spec: &CertSpec<'_>) -> Vec<u8> {
    let mut extensions = Vec::new();
    match spec.kind {
        Kind::Ca | Kind::NotCa => {
            let bc = BasicConstraints { ca: spec.kind == Kind::Ca, path_len_constraint: None };
            extensions.push(extension(ObjectIdentifier::new_unwrap("2.5.29.19"), true, bc.to_der().unwrap()));
            let ku = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
            extensions.push(extension(ObjectIdentifier::new_unwrap("2.5.29.15"), true, ku.to_der().unwrap()));
        }
        Kind::Leaf => {
            let ku = KeyUsage(KeyUsages::DigitalSignature.into());
            extensions.push(extension(ObjectIdentifier::new_unwrap("2.5.29.15"), true, ku.to_der().unwrap()));
        }
    }
    if let Some(fwid) = spec.fwid {
        extensions.push(extension(TCB_INFO, false, tcb_info(fwid)));
    }
    let serial = Sha384::digest(spec.subject);
    let mut serial = serial[..20].to_vec();
    serial[0] &= 0x7f;
    let algorithm = AlgorithmIdentifierOwned { oid: ECDSA_WITH_SHA384, parameters: None };
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).unwrap(),
        signature: algorithm.clone(),
        issuer: Name::from_str(spec.issuer).unwrap(),
        validity: Validity { not_before: time(spec.not_before_s), not_after: time(spec.not_after_s) },
        subject: Name::from_str(spec.subject).unwrap(),
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(
            spec.subject_key.to_public_key_der().unwrap().as_bytes(),
        )
        .unwrap(),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    let signature: DerSignature = spec.issuer_key.sign(&tbs.to_der().unwrap());
    Certificate {
        tbs_certificate: tbs,
        signature_algorithm: algorithm,
        signature: BitString::from_bytes(signature.as_bytes()).unwrap(),
    }
    .to_der()
    .unwrap()
}

pub fn pem(ders: &[Vec<u8>]) -> String {
    ders.iter().map(|d| Certificate::from_der(d).unwrap().to_pem(LineEnding::LF).unwrap()).collect::<Vec<_>>().join("")
}

pub const ROOT: &str = "CN=Test Device Identity CA,O=Capex Test";
pub const PRODUCT: &str = "CN=Test GH100 Identity,O=Capex Test";
pub const PROVISIONER: &str = "CN=Test GH100 Provisioner ICA 1,O=Capex Test,C=US";
pub const DEVICE: &str = "CN=GH100 A01 GSP BROM,O=Capex Test,C=US";
pub const LEAF: &str = "CN=GH100 A01 GSP FMC LF,O=Capex Test,C=US";

/// The test's chain: `chain` is leaf first and ends with the root, as NVML returns it.
pub struct Fixture {
    pub root_key: SigningKey,
    pub device_key: SigningKey,
    pub leaf_key: SigningKey,
    pub fwid: Vec<u8>,
    pub chain: Vec<Vec<u8>>,
}

pub fn spec<'a>(
    subject: &'a str,
    issuer: &'a str,
    subject_key: &'a VerifyingKey,
    issuer_key: &'a SigningKey,
    kind: Kind,
) -> CertSpec<'a> {
    CertSpec {
        subject,
        issuer,
        subject_key,
        issuer_key,
        kind,
        fwid: None,
        not_before_s: NOT_BEFORE_S,
        not_after_s: NOT_AFTER_S,
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with_root("root")
    }

    /// A chain under a root made from `root_label` (another label: an untrusted root).
    pub fn with_root(root_label: &str) -> Fixture {
        let root_key = key(root_label);
        let product_key = key("product");
        let provisioner_key = key("provisioner");
        let device_key = key("device");
        let leaf_key = key("leaf");
        let fwid = digest48("fmc firmware");
        let root = cert(&spec(ROOT, ROOT, root_key.verifying_key(), &root_key, Kind::Ca));
        let product = cert(&spec(PRODUCT, ROOT, product_key.verifying_key(), &root_key, Kind::Ca));
        let provisioner = cert(&spec(PROVISIONER, PRODUCT, provisioner_key.verifying_key(), &product_key, Kind::Ca));
        let device = cert(&spec(DEVICE, PROVISIONER, device_key.verifying_key(), &provisioner_key, Kind::Ca));
        let leaf = cert(&CertSpec {
            fwid: Some(&fwid),
            ..spec(LEAF, DEVICE, leaf_key.verifying_key(), &device_key, Kind::Leaf)
        });
        Fixture { root_key, device_key, leaf_key, fwid, chain: vec![leaf, device, provisioner, product, root] }
    }

    /// The trusted roots of the tests (never NVIDIA's).
    pub fn roots(&self) -> TrustRoots {
        TrustRoots::from_pem(&pem(&self.chain[4..])).unwrap()
    }

    pub fn report(&self, nonce: &[u8; 32]) -> Vec<u8> {
        report(&ReportSpec::new(nonce, &self.fwid), &self.leaf_key)
    }

    pub fn evidence(&self, report: &[u8], chain: &[Vec<u8>], nonce: &[u8; 32]) -> CcEvidence {
        let b64 = base64::engine::general_purpose::STANDARD;
        CcEvidence {
            gpu_uuid: GPU_UUID.into(),
            nonce: hex::encode(nonce),
            attestation_report: b64.encode(report),
            certificate_chain: b64.encode(pem(chain)),
        }
    }

    pub fn valid_evidence(&self, nonce: &[u8; 32]) -> CcEvidence {
        self.evidence(&self.report(nonce), &self.chain, nonce)
    }
}

pub struct ReportSpec {
    pub nonce: [u8; 32],
    pub measurements: Vec<(u8, Vec<u8>)>,
    pub fwid: Option<Vec<u8>>,
    pub driver_version: &'static str,
}

/// Index n (1..=8) of the standard test report measures digest48("measurement n").
pub fn measurement(index: u8) -> Vec<u8> {
    digest48(&format!("measurement {index}"))
}

impl ReportSpec {
    pub fn new(nonce: &[u8; 32], fwid: &[u8]) -> ReportSpec {
        ReportSpec {
            nonce: *nonce,
            measurements: (1..=8).map(|i| (i, measurement(i))).collect(),
            fwid: Some(fwid.to_vec()),
            driver_version: "550.90.07",
        }
    }
}

fn opaque_field(out: &mut Vec<u8>, field: u16, value: &[u8]) {
    out.extend_from_slice(&field.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
}

/// request || response (with signature by `signer`) in NVIDIA's SPDM 1.1 layout.
pub fn report(spec: &ReportSpec, signer: &SigningKey) -> Vec<u8> {
    let mut out = vec![0x11, 0xE0, 0x01, 0xFF];
    out.extend_from_slice(&spec.nonce);
    out.push(0x00);
    let mut record = Vec::new();
    for (index, value) in &spec.measurements {
        record.push(*index);
        record.push(1);
        record.extend_from_slice(&((value.len() + 3) as u16).to_le_bytes());
        record.push(1);
        record.extend_from_slice(&(value.len() as u16).to_le_bytes());
        record.extend_from_slice(value);
    }
    out.extend_from_slice(&[0x11, 0x60, 0x00, 0x00, spec.measurements.len() as u8]);
    out.extend_from_slice(&(record.len() as u32).to_le_bytes()[..3]);
    out.extend(record);
    out.extend_from_slice(&digest48("responder nonce")[..32]);
    let mut opaque = Vec::new();
    opaque_field(&mut opaque, 6, &[0x00, 0x9f, 0x00, 0x96, 0x01, 0x00, 0x00, 0x00]);
    let mut driver = spec.driver_version.as_bytes().to_vec();
    driver.push(0);
    opaque_field(&mut opaque, 3, &driver);
    if let Some(fwid) = &spec.fwid {
        opaque_field(&mut opaque, 20, fwid);
    }
    out.extend_from_slice(&(opaque.len() as u16).to_le_bytes());
    out.extend(opaque);
    sign_report(out, signer)
}

/// Appends the leaf's signature over everything before it.
pub fn sign_report(mut unsigned: Vec<u8>, signer: &SigningKey) -> Vec<u8> {
    let signature: Signature = signer.sign(&unsigned);
    unsigned.extend_from_slice(&signature.to_bytes());
    unsigned
}

pub fn nonce(label: &str) -> [u8; 32] {
    Sha384::digest(label)[..32].try_into().unwrap()
}
