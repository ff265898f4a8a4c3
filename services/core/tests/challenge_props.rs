//! Property tests of the proof-of-compute protocol: honest answers verify, every kind of
//! tampering is refused with its own failure, and a C with wrong leaves is caught with the
//! probability docs/verification.md states.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use capex_core::challenge::bounds::{K_DEFAULT, N_REAL};
use capex_core::challenge::testing::sparse_answer;
use capex_core::challenge::{
    ChallengeAnswer, ChallengeFailure, ChallengeSpec, MerkleTree, SEGMENT_COLS, compute_c_cpu, open_leaf, pick_rows,
    verify_answer,
};
use proptest::prelude::*;

fn answer(tree: &MerkleTree, c: &[i32], asked: &[u32]) -> ChallengeAnswer {
    ChallengeAnswer { rows: asked.iter().map(|&i| open_leaf(tree, c, i)).collect() }
}

fn setup(seed: [u8; 32], n: u32) -> (ChallengeSpec, Vec<i32>, MerkleTree) {
    let spec = ChallengeSpec::new(seed, n).unwrap();
    let c = compute_c_cpu(&spec);
    let tree = MerkleTree::build(&c);
    (spec, c, tree)
}

fn sizes() -> impl Strategy<Value = u32> {
    prop_oneof![Just(64u32), Just(128), Just(192)]
}

fn deltas() -> impl Strategy<Value = i32> {
    prop_oneof![Just(1i32), Just(-1), any::<i32>().prop_filter("nonzero", |d| *d != 0)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn honest_answers_verify(seed in any::<[u8; 32]>(), n in sizes(), entropy in any::<[u8; 32]>(), k in 1u32..32) {
        let (spec, c, tree) = setup(seed, n);
        let asked = pick_rows(&spec, &entropy, k);
        prop_assert_eq!(verify_answer(&spec, &tree.root(), &asked, &answer(&tree, &c, &asked)), Ok(()));
        // Openings in another order are the same answer.
        let mut reversed = answer(&tree, &c, &asked);
        reversed.rows.reverse();
        prop_assert_eq!(verify_answer(&spec, &tree.root(), &asked, &reversed), Ok(()));
    }

    #[test]
    fn a_committed_wrong_element_in_a_named_leaf_is_a_wrong_row(
        seed in any::<[u8; 32]>(), n in sizes(), entropy in any::<[u8; 32]>(), which in any::<prop::sample::Index>(),
        col in 0usize..SEGMENT_COLS, delta in deltas(),
    ) {
        let (spec, mut c, _) = setup(seed, n);
        let asked = pick_rows(&spec, &entropy, K_DEFAULT);
        let bad = asked[which.index(asked.len())];
        let at = bad as usize * SEGMENT_COLS + col;
        c[at] = c[at].wrapping_add(delta);
        let tree = MerkleTree::build(&c);
        prop_assert_eq!(
            verify_answer(&spec, &tree.root(), &asked, &answer(&tree, &c, &asked)),
            Err(ChallengeFailure::WrongRow { index: bad })
        );
    }

    #[test]
    fn a_wrong_leaf_not_named_passes_but_stays_bound(seed in any::<[u8; 32]>(), n in sizes(), entropy in any::<[u8; 32]>()) {
        let (spec, honest, _) = setup(seed, n);
        let asked = pick_rows(&spec, &entropy, 8);
        let bad = (0..spec.leaf_count()).find(|i| !asked.contains(i)).unwrap();
        let mut c = honest.clone();
        c[bad as usize * SEGMENT_COLS] += 1;
        let tree = MerkleTree::build(&c);
        // Not opened: the spot check misses it (that is the (1-f)^k term).
        prop_assert_eq!(verify_answer(&spec, &tree.root(), &asked, &answer(&tree, &c, &asked)), Ok(()));
        // But the root binds it: opening it with the true values, or with another leaf's
        // proof, fails.
        let mut asked_bad = asked.clone();
        asked_bad[0] = bad;
        let mut opened = answer(&tree, &c, &asked_bad);
        opened.rows[0] = open_leaf(&tree, &honest, bad);
        prop_assert_eq!(
            verify_answer(&spec, &tree.root(), &asked_bad, &opened),
            Err(ChallengeFailure::BadProof { index: bad })
        );
        let mut borrowed = answer(&tree, &c, &asked_bad);
        borrowed.rows[0].proof = open_leaf(&tree, &c, asked[0]).proof;
        let result = verify_answer(&spec, &tree.root(), &asked_bad, &borrowed);
        prop_assert!(matches!(result, Err(ChallengeFailure::BadProof { index }) if index == bad), "{:?}", result);
    }

    #[test]
    fn tampered_proofs_swapped_indices_and_wrong_roots_are_bad_proofs(
        seed in any::<[u8; 32]>(), n in sizes(), entropy in any::<[u8; 32]>(), which in any::<prop::sample::Index>(),
        hop in any::<prop::sample::Index>(), bit in 0u8..8,
    ) {
        let (spec, c, tree) = setup(seed, n);
        let asked = pick_rows(&spec, &entropy, K_DEFAULT);
        let honest = answer(&tree, &c, &asked);
        let t = which.index(asked.len());

        let mut tampered = honest.clone();
        let proof = &mut tampered.rows[t].proof;
        let h = hop.index(proof.len());
        let mut bytes = hex::decode(&proof[h]).unwrap();
        bytes[0] ^= 1 << bit;
        proof[h] = hex::encode(bytes);
        prop_assert_eq!(
            verify_answer(&spec, &tree.root(), &asked, &tampered),
            Err(ChallengeFailure::BadProof { index: asked[t] })
        );

        let mut swapped = honest.clone();
        let u = (t + 1) % asked.len();
        swapped.rows[t].index = asked[u];
        swapped.rows[u].index = asked[t];
        let result = verify_answer(&spec, &tree.root(), &asked, &swapped);
        prop_assert!(matches!(result, Err(ChallengeFailure::BadProof { .. })), "{:?}", result);

        let mut root = tree.root();
        root[31] ^= 1 << bit;
        let result = verify_answer(&spec, &root, &asked, &honest);
        prop_assert!(matches!(result, Err(ChallengeFailure::BadProof { .. })), "{:?}", result);

        let mut short = honest.clone();
        short.rows[t].proof.pop();
        prop_assert_eq!(
            verify_answer(&spec, &tree.root(), &asked, &short),
            Err(ChallengeFailure::BadProof { index: asked[t] })
        );
    }
}

#[test]
fn malformed_answers_are_refused() {
    let (spec, c, tree) = setup([3; 32], 64);
    let asked = pick_rows(&spec, &[4; 32], 6);
    let honest = answer(&tree, &c, &asked);
    let malformed = |a: &ChallengeAnswer| {
        matches!(verify_answer(&spec, &tree.root(), &asked, a), Err(ChallengeFailure::Malformed(_)))
    };

    let mut missing = honest.clone();
    missing.rows.pop();
    assert!(malformed(&missing));
    let mut extra = honest.clone();
    extra.rows.push(open_leaf(&tree, &c, (0..64).find(|i| !asked.contains(i)).unwrap()));
    assert!(malformed(&extra));
    let mut duplicate = honest.clone();
    duplicate.rows[1] = duplicate.rows[0].clone();
    assert!(malformed(&duplicate));
    let mut short_values = honest.clone();
    short_values.rows[0].values = BASE64.encode([0u8; SEGMENT_COLS * 4 - 4]);
    assert!(malformed(&short_values));
    let mut not_base64 = honest.clone();
    not_base64.rows[0].values = "%%%".into();
    assert!(malformed(&not_base64));
    let mut bad_hex = honest.clone();
    bad_hex.rows[0].proof[0] = "zz".into();
    assert!(malformed(&bad_hex));
    for failure in [ChallengeFailure::Malformed("x".into()), ChallengeFailure::BadProof { index: 0 }] {
        assert_eq!(failure.code(), "challenge_bad_proof");
    }
    assert_eq!(ChallengeFailure::WrongRow { index: 0 }.code(), "challenge_wrong_row");
}

/// `P(caught) = 1 - C(L - m, k) / C(L, k)` for `m` wrong leaves of `L`, `k` distinct picks.
fn catch_probability(leaves: u64, wrong: u64, k: u64) -> f64 {
    let mut miss = 1.0;
    for t in 0..k {
        miss *= (leaves - wrong - t) as f64 / (leaves - t) as f64;
    }
    1.0 - miss
}

#[test]
fn wrong_leaves_are_caught_with_the_stated_probability() {
    let (spec, honest, _) = setup([11; 32], 128);
    let leaves = spec.leaf_count() as u64; // 256
    let k = 8u32;
    const TRIALS: u32 = 600;
    for wrong in [1u64, 8, 26, 64] {
        let mut c = honest.clone();
        // A fixed, spread-out set of wrong leaves (97 is coprime with 256: all distinct).
        for j in 0..wrong {
            c[((j * 97) % leaves) as usize * SEGMENT_COLS + 5] ^= 0x40;
        }
        let tree = MerkleTree::build(&c);
        let mut caught = 0u32;
        for trial in 0..TRIALS {
            let mut entropy = [0u8; 32];
            entropy[..4].copy_from_slice(&trial.to_le_bytes());
            entropy[4..12].copy_from_slice(&wrong.to_le_bytes());
            let asked = pick_rows(&spec, &entropy, k);
            match verify_answer(&spec, &tree.root(), &asked, &answer(&tree, &c, &asked)) {
                Ok(()) => {}
                Err(ChallengeFailure::WrongRow { .. }) => caught += 1,
                Err(other) => panic!("an honest opening of a wrong C fails only as WrongRow, got {other:?}"),
            }
        }
        let observed = f64::from(caught) / f64::from(TRIALS);
        let expected = catch_probability(leaves, wrong, u64::from(k));
        // The standard error at 600 trials is at most 0.021; allow 0.07.
        assert!(
            (observed - expected).abs() < 0.07,
            "{wrong} wrong of {leaves}: caught {observed:.3}, stated {expected:.3}"
        );
    }
    // One wrong leaf of L is caught with probability exactly k / L.
    assert!((catch_probability(leaves, 1, 8) - 8.0 / 256.0).abs() < 1e-12);
}

#[test]
fn a_default_answer_fits_the_exchange_body_limit() {
    let spec = ChallengeSpec::new([5; 32], N_REAL).unwrap();
    let asked = pick_rows(&spec, &[6; 32], K_DEFAULT);
    let (root, answer) = sparse_answer(&spec, &asked, None);
    let body = serde_json::to_vec(&answer).unwrap();
    assert!(body.len() < 64 * 1024, "{} bytes", body.len());
    assert_eq!(verify_answer(&spec, &root, &asked, &answer), Ok(()));
    let (root, answer) = sparse_answer(&spec, &asked, Some(asked[3]));
    assert_eq!(verify_answer(&spec, &root, &asked, &answer), Err(ChallengeFailure::WrongRow { index: asked[3] }));
}
