//! No input makes the verifier panic, and no change to valid evidence verifies.

mod common;

use base64::Engine;
use capex_attest::{CcEvidence, spdm, verify_at};
use common::*;
use proptest::prelude::*;
use std::sync::LazyLock;

/// Built once: making keys and certificates per case would dominate the run.
static FIXTURE: LazyLock<(Fixture, capex_attest::TrustRoots, Vec<u8>)> = LazyLock::new(|| {
    let f = Fixture::new();
    let roots = f.roots();
    let report = f.report(&nonce("issued"));
    (f, roots, report)
});

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_bytes_never_panic(report in proptest::collection::vec(any::<u8>(), 0..4096),
                                chain in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let (_, roots, _) = &*FIXTURE;
        let n = nonce("issued");
        let _ = spdm::parse_report(&report);
        let _ = capex_attest::chain::parse_chain(&chain);
        let evidence = CcEvidence {
            gpu_uuid: GPU_UUID.into(),
            nonce: hex::encode(n),
            attestation_report: b64(&report),
            certificate_chain: b64(&chain),
        };
        prop_assert!(verify_at(&evidence, &n, GPU_UUID, roots, None, now()).is_err());
    }

    /// Random bytes after a valid request prefix reach deeper into the response parser.
    #[test]
    fn random_responses_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let n = nonce("issued");
        let mut report = vec![0x11, 0xE0, 0x01, 0xFF];
        report.extend_from_slice(&n);
        report.push(0);
        report.extend_from_slice(&[0x11, 0x60, 0, 0]);
        report.extend(tail);
        let _ = spdm::parse_report(&report);
    }

    #[test]
    fn any_changed_byte_of_a_valid_report_is_refused(at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let (f, roots, report) = &*FIXTURE;
        let n = nonce("issued");
        let mut report = report.clone();
        let i = at.index(report.len());
        report[i] ^= xor;
        let evidence = f.evidence(&report, &f.chain, &n);
        prop_assert!(verify_at(&evidence, &n, GPU_UUID, roots, None, now()).is_err());
    }

    #[test]
    fn truncated_or_extended_reports_are_refused(cut in 0usize..2000, extra in proptest::collection::vec(any::<u8>(), 1..64)) {
        let (f, roots, report) = &*FIXTURE;
        let n = nonce("issued");
        let cut = cut.min(report.len() - 1);
        let short = f.evidence(&report[..cut], &f.chain, &n);
        prop_assert_eq!(verify_at(&short, &n, GPU_UUID, roots, None, now()).unwrap_err().code(), "cc_bad_format");
        let mut long = report.clone();
        long.extend(extra);
        let long = f.evidence(&long, &f.chain, &n);
        prop_assert!(verify_at(&long, &n, GPU_UUID, roots, None, now()).is_err());
    }

    #[test]
    fn any_changed_byte_of_the_chain_never_panics_or_verifies(cert in 0usize..5, at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let (f, roots, report) = &*FIXTURE;
        let n = nonce("issued");
        let mut chain = f.chain.clone();
        let i = at.index(chain[cert].len());
        chain[cert][i] ^= xor;
        let mut evidence = f.evidence(report, &f.chain, &n);
        evidence.certificate_chain = b64(&chain.concat());
        let result = verify_at(&evidence, &n, GPU_UUID, roots, None, now());
        // A flip inside the root's copy at the end is harmless only if the root is then
        // not recognised and the chain still resolves to the trusted root (it cannot:
        // a modified self-signed root no longer verifies), so every case is refused.
        prop_assert!(result.is_err(), "cert {cert} byte {i}: {result:?}");
    }
}
