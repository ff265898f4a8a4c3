//! The GPU's attestation certificate chain, leaf first (as NVML returns it), checked up to a
//! trusted root.
//!
//! NVIDIA's Hopper chain has five certificates:
//!
//! | # | subject CN (Hopper) | what it is |
//! |---|---|---|
//! | 0 | `GH100 A01 GSP FMC LF` | the attestation key, made by the GPU's firmware at boot (DICE layer); carries the FWID in a TCG DICE extension |
//! | 1 | `GH100 A01 GSP BROM` | the chip's device identity, provisioned by NVIDIA; its key lives in the chip |
//! | 2 | `NVIDIA GH100 Provisioner ICA 1` | provisioning CA |
//! | 3 | `NVIDIA GH100 Identity` | product-line CA |
//! | 4 | `NVIDIA Device Identity CA` | the self-signed root (replaced by our copy, as NVIDIA's verifier does) |
//!
//! Every certificate must be signed by the next one with ECDSA P-384 / SHA-384; the last one
//! the host sent must either be a trusted root itself (same DER) or be signed by one.

use der::{Decode, Encode};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::der;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};

/// Largest certificate chain accepted (NVML's buffer is 5 KiB).
pub const CHAIN_BYTES_MAX: usize = 64 * 1024;
/// Most certificates in a chain.
pub const CHAIN_CERTS_MAX: usize = 8;

const ECDSA_WITH_SHA384: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ID_EC_PUBLIC_KEY: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP384R1: der::asn1::ObjectIdentifier = der::asn1::ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// TCG DICE TcbInfo (and the older 2.23.133.5.4.1.1 NVIDIA's verifier also accepts).
const TCG_DICE_TCB_INFO: [der::asn1::ObjectIdentifier; 2] = [
    der::asn1::ObjectIdentifier::new_unwrap("2.23.133.5.4.1"),
    der::asn1::ObjectIdentifier::new_unwrap("2.23.133.5.4.1.1"),
];
/// DER of `OBJECT IDENTIFIER sha384` then `OCTET STRING` of 48 bytes: how an FWID's digest
/// starts in both the Hopper and the Blackwell TcbInfo layouts.
const SHA384_FWID_PREFIX: [u8; 13] = [0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x04, 0x30];

/// A parsed certificate and its exact DER.
#[derive(Clone)]
pub struct ParsedCert {
    pub der: Vec<u8>,
    pub cert: Certificate,
}

impl std::fmt::Debug for ParsedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParsedCert({})", self.subject())
    }
}

impl ParsedCert {
    /// Parses one DER certificate; re-encoding must give the same bytes, so that the
    /// to-be-signed part checked below is exactly what the issuer signed.
    pub fn from_der(bytes: &[u8]) -> Result<ParsedCert, String> {
        let cert = Certificate::from_der(bytes).map_err(|e| format!("certificate does not parse: {e}"))?;
        let again = cert.to_der().map_err(|e| format!("certificate does not re-encode: {e}"))?;
        if again != bytes {
            return Err("certificate is not in canonical DER".into());
        }
        Ok(ParsedCert { der: bytes.to_vec(), cert })
    }

    pub fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    /// Hex SHA-256 of the DER.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.der))
    }

    /// Hex SHA-256 of the DER SubjectPublicKeyInfo.
    pub fn key_fingerprint(&self) -> Result<String, String> {
        let spki = self.cert.tbs_certificate.subject_public_key_info.to_der().map_err(|e| e.to_string())?;
        Ok(hex::encode(Sha256::digest(spki)))
    }

    pub fn serial_hex(&self) -> String {
        hex::encode(self.cert.tbs_certificate.serial_number.as_bytes())
    }

    /// The P-384 key of this certificate.
    pub fn p384_key(&self) -> Result<p384::ecdsa::VerifyingKey, String> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid != ID_EC_PUBLIC_KEY {
            return Err(format!("{}: key is not an EC key ({})", self.subject(), spki.algorithm.oid));
        }
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
            .ok_or_else(|| format!("{}: EC key names no curve", self.subject()))?;
        if curve != SECP384R1 {
            return Err(format!("{}: key is on curve {curve}, not P-384", self.subject()));
        }
        let point = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| format!("{}: key bits are not whole bytes", self.subject()))?;
        p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
            .map_err(|_| format!("{}: key is not a P-384 point", self.subject()))
    }

    /// Checks that `issuer` signed this certificate (names chain, ECDSA P-384 / SHA-384).
    fn signed_by(&self, issuer: &ParsedCert) -> Result<(), String> {
        let tbs = &self.cert.tbs_certificate;
        if tbs.issuer != issuer.cert.tbs_certificate.subject {
            return Err(format!(
                "{} names issuer {}, but the next certificate is {}",
                self.subject(),
                tbs.issuer,
                issuer.subject()
            ));
        }
        if self.cert.signature_algorithm.oid != ECDSA_WITH_SHA384 || tbs.signature.oid != ECDSA_WITH_SHA384 {
            return Err(format!(
                "{}: signature algorithm {} is not ecdsa-with-SHA384",
                self.subject(),
                self.cert.signature_algorithm.oid
            ));
        }
        let key = issuer.p384_key()?;
        let signature = self
            .cert
            .signature
            .as_bytes()
            .ok_or_else(|| format!("{}: signature bits are not whole bytes", self.subject()))?;
        let signature = p384::ecdsa::Signature::from_der(signature)
            .map_err(|_| format!("{}: signature is not a DER ECDSA signature", self.subject()))?;
        let tbs_der = tbs.to_der().map_err(|e| e.to_string())?;
        use p384::ecdsa::signature::Verifier;
        key.verify(&tbs_der, &signature)
            .map_err(|_| format!("{}: signature by {} does not verify", self.subject(), issuer.subject()))
    }

    fn check_validity(&self, now_unix_s: u64) -> Result<(), String> {
        let validity = &self.cert.tbs_certificate.validity;
        let not_before = validity.not_before.to_unix_duration().as_secs();
        let not_after = validity.not_after.to_unix_duration().as_secs();
        if now_unix_s < not_before {
            return Err(format!("{} is not valid before {}", self.subject(), validity.not_before));
        }
        if now_unix_s > not_after {
            return Err(format!("{} expired at {}", self.subject(), validity.not_after));
        }
        Ok(())
    }

    /// A CA certificate: basic constraints with `cA` true, and `keyCertSign` when it has a
    /// key usage. `below` is how many CA certificates sit under it in the path.
    fn check_ca(&self, below: usize) -> Result<(), String> {
        let tbs = &self.cert.tbs_certificate;
        let constraints =
            tbs.get::<BasicConstraints>().map_err(|e| format!("{}: basic constraints: {e}", self.subject()))?;
        match constraints {
            Some((_, bc)) if bc.ca => {
                if let Some(max) = bc.path_len_constraint
                    && below > usize::from(max)
                {
                    return Err(format!("{}: path length {below} exceeds its constraint {max}", self.subject()));
                }
            }
            _ => return Err(format!("{} signs certificates but is not a CA (basic constraints)", self.subject())),
        }
        if let Some((_, usage)) = tbs.get::<KeyUsage>().map_err(|e| format!("{}: key usage: {e}", self.subject()))?
            && !usage.0.contains(KeyUsages::KeyCertSign)
        {
            return Err(format!("{}: key usage does not allow signing certificates", self.subject()));
        }
        Ok(())
    }

    /// The leaf may sign (digitalSignature, when it has a key usage) and is no CA.
    fn check_leaf(&self) -> Result<(), String> {
        let tbs = &self.cert.tbs_certificate;
        if let Some((_, usage)) = tbs.get::<KeyUsage>().map_err(|e| format!("{}: key usage: {e}", self.subject()))?
            && !usage.0.contains(KeyUsages::DigitalSignature)
        {
            return Err(format!("{}: key usage does not allow digital signatures", self.subject()));
        }
        Ok(())
    }

    /// The first SHA-384 FWID digest of the TCG DICE TcbInfo extension, if the certificate
    /// has one. Hopper's extension is `SEQUENCE { INTEGER, SubjectPublicKeyInfo, FWID }`
    /// (NVIDIA's verifier reads its last 48 bytes); Blackwell's is a standard DiceTcbInfo
    /// whose `fwids` list holds FWID structures. Both encode an FWID as
    /// `SEQUENCE { OID sha384, OCTET STRING (48) }`, which is what is looked for.
    pub fn fwid(&self) -> Option<Vec<u8>> {
        let extensions = self.cert.tbs_certificate.extensions.as_ref()?;
        let ext = extensions.iter().find(|e| TCG_DICE_TCB_INFO.contains(&e.extn_id))?;
        let value = ext.extn_value.as_bytes();
        let at = value.windows(SHA384_FWID_PREFIX.len()).position(|w| w == SHA384_FWID_PREFIX)?;
        let start = at + SHA384_FWID_PREFIX.len();
        value.get(start..start + 48).map(<[u8]>::to_vec)
    }
}

/// Splits what NVML returned (concatenated PEM, as NVIDIA's tools read it; concatenated DER
/// is accepted too) into certificates, leaf first.
pub fn parse_chain(bytes: &[u8]) -> Result<Vec<ParsedCert>, String> {
    if bytes.len() > CHAIN_BYTES_MAX {
        return Err(format!("certificate chain is {} bytes, at most {CHAIN_BYTES_MAX} accepted", bytes.len()));
    }
    // NVML buffers are NUL padded; PEM may end in whitespace.
    let end = bytes.iter().rposition(|b| *b != 0 && !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    let bytes = &bytes[..end];
    let ders: Vec<Vec<u8>> = if bytes.starts_with(b"-----BEGIN") {
        let certs =
            Certificate::load_pem_chain(bytes).map_err(|e| format!("certificate chain PEM does not parse: {e}"))?;
        certs.iter().map(|c| c.to_der().map_err(|e| e.to_string())).collect::<Result<_, _>>()?
    } else {
        split_der(bytes)?
    };
    if ders.is_empty() {
        return Err("certificate chain is empty".into());
    }
    if ders.len() > CHAIN_CERTS_MAX {
        return Err(format!("certificate chain has {} certificates, at most {CHAIN_CERTS_MAX} accepted", ders.len()));
    }
    ders.iter().map(|d| ParsedCert::from_der(d)).collect()
}

fn split_der(mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if out.len() >= CHAIN_CERTS_MAX {
            return Err(format!("certificate chain has more than {CHAIN_CERTS_MAX} certificates"));
        }
        let mut reader = der::SliceReader::new(bytes).map_err(|e| e.to_string())?;
        let header =
            der::Header::decode(&mut reader).map_err(|e| format!("certificate chain DER does not parse: {e}"))?;
        let header_len =
            usize::try_from(u32::from(header.encoded_len().map_err(|e| e.to_string())?)).map_err(|e| e.to_string())?;
        let body_len = usize::try_from(u32::from(header.length)).map_err(|e| e.to_string())?;
        let total = header_len.checked_add(body_len).ok_or("certificate length overflows")?;
        let cert = bytes.get(..total).ok_or("certificate chain DER is truncated")?;
        out.push(cert.to_vec());
        bytes = &bytes[total..];
    }
    Ok(out)
}

/// Checks `chain` (leaf first) up to one of `roots` at `now_unix_s`. Returns the number of
/// certificates of `chain` that are below the root (a trailing copy of the root is dropped).
pub fn verify_chain(chain: &[ParsedCert], roots: &[ParsedCert], now_unix_s: u64) -> Result<usize, String> {
    let mut path: &[ParsedCert] = chain;
    // NVML's chain ends with the root; like NVIDIA's verifier, trust only our own copy.
    if let Some(last) = path.last()
        && roots.iter().any(|r| r.der == last.der)
    {
        path = &path[..path.len() - 1];
    }
    if path.len() < 2 {
        return Err(format!(
            "the chain has {} certificate(s) below the root; a GPU's has at least the attestation key and the device identity",
            path.len()
        ));
    }
    let top = &path[path.len() - 1];
    let root = roots
        .iter()
        .find(|r| r.cert.tbs_certificate.subject == top.cert.tbs_certificate.issuer && top.signed_by(r).is_ok())
        .ok_or_else(|| {
            format!("{} is not issued by a trusted root (issuer {})", top.subject(), top.cert.tbs_certificate.issuer)
        })?;
    root.check_validity(now_unix_s)?;
    root.check_ca(path.len() - 1)?;
    for (i, cert) in path.iter().enumerate() {
        cert.check_validity(now_unix_s)?;
        if i == 0 {
            cert.check_leaf()?;
        } else {
            cert.check_ca(i - 1)?;
        }
        if let Some(issuer) = path.get(i + 1) {
            cert.signed_by(issuer)?;
        }
    }
    Ok(path.len())
}
