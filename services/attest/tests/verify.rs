//! verify(): each refusal code and the accepted cases, on a chain and reports made here in
//! NVIDIA's layout, plus NVIDIA's own sample Hopper evidence against the real root.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use capex_attest::{
    CcAnswer, CcEvidence, CcRefusal, CcUnavailable, ReferenceValues, TrustRoots, check_device_binding, summarize,
    verify, verify_at,
};
use common::*;
use sha2::{Digest, Sha256};

fn code(result: Result<capex_attest::CcVerified, CcRefusal>) -> &'static str {
    match result {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(refusal) => {
            assert!(!refusal.to_string().is_empty());
            refusal.code()
        }
    }
}

fn check(
    fixture: &Fixture,
    evidence: &CcEvidence,
    nonce: &[u8; 32],
    rims: Option<&ReferenceValues>,
) -> Result<capex_attest::CcVerified, CcRefusal> {
    verify_at(evidence, nonce, GPU_UUID, &fixture.roots(), rims, now())
}

fn all_rims() -> ReferenceValues {
    let mut rims = ReferenceValues::new();
    for i in 1..=8 {
        rims.insert(i, vec![measurement(i)]);
    }
    rims
}

#[test]
fn valid_evidence_verifies_with_measurements_not_checked() {
    let f = Fixture::new();
    let n = nonce("issued");
    let verified = check(&f, &f.valid_evidence(&n), &n, None).unwrap();
    assert_eq!(verified.gpu_uuid, GPU_UUID);
    assert!(!verified.measurements_checked);
    assert_eq!(verified.measurement_count, 8);
    assert_eq!(verified.measurements_matched, 0);
    assert_eq!(verified.leaf_subject, LEAF);
    assert_eq!(verified.chain_fingerprint, hex::encode(Sha256::digest(&f.chain[0])));
    assert_eq!(verified.device_subject, DEVICE);
    assert_eq!(verified.fwid.as_deref(), Some(hex::encode(&f.fwid).as_str()));
    assert_eq!(verified.driver_version.as_deref(), Some("550.90.07"));
    assert_eq!(verified.vbios_version.as_deref(), Some("96.00.9F.00.01"));
    assert_eq!(verified.spdm_version, 0x11);
    assert_eq!(verified.device_id.len(), 64);
    // The device identity is the chip's key: the same for another leaf under the same chip.
    let n2 = nonce("second");
    let again = check(&f, &f.valid_evidence(&n2), &n2, None).unwrap();
    assert_eq!(again.device_id, verified.device_id);
}

#[test]
fn chain_without_the_root_verifies_too() {
    let f = Fixture::new();
    let n = nonce("issued");
    let evidence = f.evidence(&f.report(&n), &f.chain[..4], &n);
    check(&f, &evidence, &n, None).unwrap();
}

#[test]
fn der_chain_is_accepted_like_pem() {
    let f = Fixture::new();
    let n = nonce("issued");
    let mut evidence = f.valid_evidence(&n);
    evidence.certificate_chain = base64::engine::general_purpose::STANDARD.encode(f.chain.concat());
    check(&f, &evidence, &n, None).unwrap();
}

#[test]
fn matching_reference_values_are_checked() {
    let f = Fixture::new();
    let n = nonce("issued");
    let verified = check(&f, &f.valid_evidence(&n), &n, Some(&all_rims())).unwrap();
    assert!(verified.measurements_checked);
    assert_eq!(verified.measurements_matched, 8);

    // Alternatives: any listed digest matches; unreferenced indices are not compared.
    let mut rims = ReferenceValues::new();
    rims.insert(2, vec![digest48("other"), measurement(2)]);
    let verified = check(&f, &f.valid_evidence(&n), &n, Some(&rims)).unwrap();
    assert!(verified.measurements_checked);
    assert_eq!(verified.measurements_matched, 1);
}

#[test]
fn wrong_nonce_is_refused() {
    let f = Fixture::new();
    let issued = nonce("issued");
    let old = nonce("an earlier one");
    // Validly signed, for another nonce (a replay of older evidence).
    let evidence = f.valid_evidence(&old);
    assert_eq!(code(check(&f, &evidence, &issued, None)), "cc_wrong_nonce");
    // The signed request is right but the evidence states another nonce.
    let mut evidence = f.valid_evidence(&issued);
    evidence.nonce = hex::encode(old);
    assert_eq!(code(check(&f, &evidence, &issued, None)), "cc_wrong_nonce");
}

#[test]
fn leaf_signed_by_another_key_is_refused() {
    let f = Fixture::new();
    let n = nonce("issued");
    let impostor = key("impostor device");
    let leaf = cert(&CertSpec {
        fwid: Some(&f.fwid),
        ..spec(LEAF, DEVICE, f.leaf_key.verifying_key(), &impostor, Kind::Leaf)
    });
    let mut chain = f.chain.clone();
    chain[0] = leaf;
    assert_eq!(code(check(&f, &f.evidence(&f.report(&n), &chain, &n), &n, None)), "cc_chain_invalid");
}

#[test]
fn missing_intermediate_is_refused() {
    let f = Fixture::new();
    let n = nonce("issued");
    let mut chain = f.chain.clone();
    chain.remove(2); // the provisioner CA
    assert_eq!(code(check(&f, &f.evidence(&f.report(&n), &chain, &n), &n, None)), "cc_chain_invalid");
    // Only the leaf and the root.
    let chain = vec![f.chain[0].clone(), f.chain[4].clone()];
    assert_eq!(code(check(&f, &f.evidence(&f.report(&n), &chain, &n), &n, None)), "cc_chain_invalid");
}

#[test]
fn untrusted_root_is_refused() {
    let trusted = Fixture::new();
    let other = Fixture::with_root("somebody else's root");
    let n = nonce("issued");
    // Same names, same device and leaf keys, but issued under a root we do not trust.
    let evidence = other.valid_evidence(&n);
    assert_eq!(code(verify_at(&evidence, &n, GPU_UUID, &trusted.roots(), None, now())), "cc_chain_invalid");
    // And the real NVIDIA root does not trust the test chain either.
    assert_eq!(code(verify_at(&evidence, &n, GPU_UUID, &TrustRoots::nvidia(), None, now())), "cc_chain_invalid");
}

#[test]
fn expired_or_not_yet_valid_chain_is_refused() {
    let f = Fixture::new();
    let n = nonce("issued");
    let evidence = f.valid_evidence(&n);
    let late = UNIX_EPOCH + Duration::from_secs(NOT_AFTER_S + 1);
    let early = UNIX_EPOCH + Duration::from_secs(NOT_BEFORE_S - 1);
    assert_eq!(code(verify_at(&evidence, &n, GPU_UUID, &f.roots(), None, late)), "cc_chain_invalid");
    assert_eq!(code(verify_at(&evidence, &n, GPU_UUID, &f.roots(), None, early)), "cc_chain_invalid");
}

#[test]
fn intermediate_that_is_not_a_ca_is_refused() {
    let f = Fixture::new();
    let n = nonce("issued");
    let provisioner_key = key("provisioner");
    let mut chain = f.chain.clone();
    chain[1] = cert(&spec(DEVICE, PROVISIONER, f.device_key.verifying_key(), &provisioner_key, Kind::NotCa));
    assert_eq!(code(check(&f, &f.evidence(&f.report(&n), &chain, &n), &n, None)), "cc_chain_invalid");
}

#[test]
fn evidence_for_another_gpu_is_refused() {
    let f = Fixture::new();
    let n = nonce("issued");
    let evidence = f.valid_evidence(&n);
    let result = verify_at(&evidence, &n, "GPU-00000000-0000-0000-0000-000000000000", &f.roots(), None, now());
    assert_eq!(code(result), "cc_wrong_device");
}

#[test]
fn report_fwid_not_matching_the_leaf_is_refused() {
    let f = Fixture::new();
    let n = nonce("issued");
    let other_fwid = digest48("other firmware");
    let report = report(&ReportSpec::new(&n, &other_fwid), &f.leaf_key);
    assert_eq!(code(check(&f, &f.evidence(&report, &f.chain, &n), &n, None)), "cc_wrong_device");
}

#[test]
fn evidence_from_another_chip_breaks_the_pinned_binding() {
    let f = Fixture::new();
    let n = nonce("issued");
    let verified = check(&f, &f.valid_evidence(&n), &n, None).unwrap();
    check_device_binding(&verified, None).unwrap();
    check_device_binding(&verified, Some(&verified.device_id)).unwrap();
    let pinned = "00".repeat(32);
    let refusal = check_device_binding(&verified, Some(&pinned)).unwrap_err();
    assert_eq!(refusal.code(), "cc_wrong_device");
}

#[test]
fn tampered_measurement_fails_the_signature() {
    let f = Fixture::new();
    let n = nonce("issued");
    let mut report = f.report(&n);
    // Block 1's value starts at 37 (request) + 8 (header) + 7 (block header).
    report[37 + 8 + 7] ^= 0x01;
    assert_eq!(code(check(&f, &f.evidence(&report, &f.chain, &n), &n, None)), "cc_signature_invalid");
    assert_eq!(code(check(&f, &f.evidence(&report, &f.chain, &n), &n, Some(&all_rims()))), "cc_signature_invalid");
}

#[test]
fn report_signed_by_another_key_fails_the_signature() {
    let f = Fixture::new();
    let n = nonce("issued");
    let report = report(&ReportSpec::new(&n, &f.fwid), &key("not the leaf"));
    assert_eq!(code(check(&f, &f.evidence(&report, &f.chain, &n), &n, None)), "cc_signature_invalid");
}

#[test]
fn validly_signed_but_different_measurement_is_a_mismatch() {
    let f = Fixture::new();
    let n = nonce("issued");
    let mut spec = ReportSpec::new(&n, &f.fwid);
    spec.measurements[2].1 = digest48("modified firmware");
    let report = report(&spec, &f.leaf_key);
    let evidence = f.evidence(&report, &f.chain, &n);
    // Without reference values nothing is compared: accepted, marked not checked.
    assert!(!check(&f, &evidence, &n, None).unwrap().measurements_checked);
    assert_eq!(code(check(&f, &evidence, &n, Some(&all_rims()))), "cc_measurement_mismatch");
    // A referenced index missing from the report is a mismatch too.
    let mut spec = ReportSpec::new(&n, &f.fwid);
    spec.measurements.truncate(4);
    let evidence = f.evidence(&report_of(&spec, &f), &f.chain, &n);
    assert_eq!(code(check(&f, &evidence, &n, Some(&all_rims()))), "cc_measurement_mismatch");
}

fn report_of(spec: &ReportSpec, f: &Fixture) -> Vec<u8> {
    report(spec, &f.leaf_key)
}

#[test]
fn malformed_evidence_is_bad_format() {
    let f = Fixture::new();
    let n = nonce("issued");
    let good = f.valid_evidence(&n);

    let mut e = good.clone();
    e.attestation_report = "not base64 !".into();
    assert_eq!(code(check(&f, &e, &n, None)), "cc_bad_format");

    let mut e = good.clone();
    e.nonce = "abcd".into();
    assert_eq!(code(check(&f, &e, &n, None)), "cc_bad_format");

    let report = f.report(&n);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut e = good.clone();
    e.attestation_report = b64.encode(&report[..report.len() - 1]);
    assert_eq!(code(check(&f, &e, &n, None)), "cc_bad_format");

    let mut longer = report.clone();
    longer.push(0);
    let mut e = good.clone();
    e.attestation_report = b64.encode(&longer);
    assert_eq!(code(check(&f, &e, &n, None)), "cc_bad_format");

    let mut e = good.clone();
    e.certificate_chain = b64.encode("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    assert_eq!(code(check(&f, &e, &n, None)), "cc_bad_format");

    let mut e = good;
    e.certificate_chain = String::new();
    assert_eq!(code(check(&f, &e, &n, None)), "cc_bad_format");
}

#[test]
fn refusal_codes_are_stable() {
    let all = [
        CcRefusal::BadFormat(String::new()),
        CcRefusal::WrongNonce(String::new()),
        CcRefusal::ChainInvalid(String::new()),
        CcRefusal::SignatureInvalid(String::new()),
        CcRefusal::WrongDevice(String::new()),
        CcRefusal::MeasurementMismatch(String::new()),
    ];
    let codes: Vec<&str> = all.iter().map(CcRefusal::code).collect();
    assert_eq!(codes, CcRefusal::CODES);
}

#[test]
fn answers_have_the_documented_json_shape() {
    let evidence = CcAnswer::Evidence(CcEvidence {
        gpu_uuid: "GPU-1".into(),
        nonce: "00".repeat(32),
        attestation_report: "AA==".into(),
        certificate_chain: "AA==".into(),
    });
    let json = serde_json::to_value(&evidence).unwrap();
    assert_eq!(json["evidence"]["gpu_uuid"], "GPU-1");
    assert_eq!(serde_json::from_value::<CcAnswer>(json).unwrap(), evidence);
    let unavailable = CcAnswer::Unavailable(CcUnavailable { gpu_uuid: "GPU-1".into(), reason: "off".into() });
    let json = serde_json::to_value(&unavailable).unwrap();
    assert_eq!(json, serde_json::json!({"unavailable": {"gpu_uuid": "GPU-1", "reason": "off"}}));
    let request: capex_attest::CcRequest = serde_json::from_value(serde_json::json!({
        "request_id": "0190a1b2-0000-7000-8000-000000000001", "gpu_uuid": "GPU-1", "nonce": "11".repeat(32)
    }))
    .unwrap();
    assert_eq!(request.gpu_uuid, "GPU-1");
}

#[test]
fn reference_values_text_format() {
    let text = "# driver RIM\n1 aabb\n\n2 ccdd, eeff  # two alternatives\n";
    let rims = ReferenceValues::parse(text, "test").unwrap();
    assert_eq!(rims.indices()[&1], vec![vec![0xaa, 0xbb]]);
    assert_eq!(rims.indices()[&2], vec![vec![0xcc, 0xdd], vec![0xee, 0xff]]);
    assert!(ReferenceValues::parse("1 aa\n1 bb\n", "dup").is_err());
    assert!(ReferenceValues::parse("300 aa\n", "index").is_err());
    assert!(ReferenceValues::parse("1 xyz\n", "hex").is_err());

    let dir = std::env::temp_dir().join(format!("capex-attest-rims-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("driver.txt"), "1 aa\n").unwrap();
    std::fs::write(dir.join("vbios.txt"), "2 bb\n").unwrap();
    std::fs::write(dir.join("ignored.xml"), "<not read/>").unwrap();
    let rims = ReferenceValues::from_dir(&dir).unwrap();
    assert_eq!(rims.indices().len(), 2);
    std::fs::write(dir.join("vbios.txt"), "1 bb\n").unwrap();
    assert!(ReferenceValues::from_dir(&dir).is_err(), "an index in two files is refused");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn trust_roots_from_a_pem_file() {
    let f = Fixture::new();
    let path = std::env::temp_dir().join(format!("capex-attest-root-{}.pem", std::process::id()));
    std::fs::write(&path, pem(&f.chain[4..])).unwrap();
    let roots = TrustRoots::from_pem_file(&path).unwrap();
    let n = nonce("issued");
    verify_at(&f.valid_evidence(&n), &n, GPU_UUID, &roots, None, now()).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert!(TrustRoots::from_pem_file(&path).is_err());
    assert_eq!(TrustRoots::nvidia().certificates().len(), 1);
}

/// NVIDIA's sample Hopper evidence (nvtrust) verifies against the bundled NVIDIA root:
/// the byte layout, the chain and the signature scheme are the real ones.
#[test]
fn nvidia_sample_hopper_evidence_verifies_against_the_nvidia_root() {
    let report = hex::decode(include_str!("fixtures/nvtrust-hopper-report.hex").trim()).unwrap();
    let chain = include_str!("fixtures/nvtrust-hopper-chain.pem");
    let nonce: [u8; 32] = report[4..36].try_into().unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let evidence = CcEvidence {
        gpu_uuid: "GPU-sample".into(),
        nonce: hex::encode(nonce),
        attestation_report: b64.encode(&report),
        certificate_chain: b64.encode(chain),
    };
    let verified = verify(&evidence, &nonce, "GPU-sample", &TrustRoots::nvidia(), None).unwrap();
    assert_eq!(verified.measurement_count, 64);
    assert!(!verified.measurements_checked);
    assert!(verified.leaf_subject.contains("GH100 A01 GSP FMC LF"), "{}", verified.leaf_subject);
    assert!(verified.device_subject.contains("GH100 A01 GSP BROM"), "{}", verified.device_subject);
    assert_eq!(verified.leaf_serial, "53c22ba15e5d68088282da074ed9fb37aa585771");
    assert_eq!(
        verified.fwid.as_deref(),
        Some("f5c384aebb579217a2c66b17ed0f28e6a9b8d639041acd7b4721cec004f7275494ba94bb5cdfdb3055ee051762b1f75d")
    );
    assert_eq!(verified.driver_version.as_deref(), Some("550.90.07"));
    assert_eq!(verified.vbios_version.as_deref(), Some("96.00.9F.00.01"));

    let summary = summarize(&evidence).unwrap();
    assert_eq!(summary.chain_subjects.len(), 5);
    assert_eq!(summary.request_nonce, hex::encode(nonce));

    // Another nonce: refused although everything else is genuine.
    assert_eq!(code(verify(&evidence, &[7u8; 32], "GPU-sample", &TrustRoots::nvidia(), None)), "cc_wrong_nonce");
    // A flipped measurement bit: the GPU's signature no longer verifies.
    let mut tampered = report.clone();
    tampered[37 + 8 + 55 + 7] ^= 0x80;
    let mut e = evidence.clone();
    e.attestation_report = b64.encode(&tampered);
    assert_eq!(code(verify(&e, &nonce, "GPU-sample", &TrustRoots::nvidia(), None)), "cc_signature_invalid");
}
