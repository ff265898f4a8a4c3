//! The proof-of-compute challenge: pure protocol code shared by the agent and the server.
//!
//! A challenge is a 32-byte seed and a size `n`. Both define two `n×n` int8 matrices `A` and
//! `B` (expanded from the seed by the counter-based PRNG below) and their product
//! `C = A·B` with exact int32 accumulation. The agent computes all of `C` on its GPU and
//! commits to it with a Merkle root; only then does the server name `k` random *segments*
//! of `C`, which the agent opens with their Merkle proofs. The server recomputes each named
//! segment itself (`64·n` multiply-adds each) and checks the proofs.
//!
//! # Segments (the Merkle leaves)
//! `C` is stored row-major. Leaf `s` is the segment of [`SEGMENT_COLS`] (64) consecutive
//! elements `C.flat[64·s .. 64·s + 64]`, i.e. row `s / (n/64)`, columns
//! `64·(s % (n/64)) ..` of that row. There are `n·n/64` leaves. A leaf is a segment rather
//! than a whole row so that checking one costs the server `64·n` multiply-adds instead of
//! `n²`: that is what lets `n` be large enough (32768) for compute to dominate hashing and
//! round trips while verification stays under 50 ms of one core. In the wire DTOs the
//! fields keep the name `rows` (`ChallengeRows::rows`, [`RowOpening`]): each one names a leaf
//! index as defined here.
//!
//! # PRNG (exact, so anyone can reimplement it)
//! * Matrix keys: `key_M = u64_le(sha256("capex/challenge/v1/key" || seed || [m])[0..8])`
//!   with `m = 0` for `A` and `m = 1` for `B`.
//! * Block `t` of matrix `M` is the SplitMix64 output
//!   `mix(key_M + (t + 1) · 0x9E3779B97F4A7C15)` (wrapping u64 arithmetic), where
//!   `mix(z) = z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^ (z >> 31)`.
//! * Element `M[r][c]` is byte `c % 8` (little-endian byte order) of block
//!   `t = r · (n/8) + c/8`, read as a two's-complement `i8`.
//!
//! So any element is computable from `(seed, matrix, row, col)` alone, a GPU thread can
//! expand any part independently, and the server expands only the rows and column blocks
//! it needs.
//!
//! # Merkle tree
//! * leaf `s`: `sha256("capex/challenge/v1/leaf" || s as u32 LE || 64 × i32 LE)`
//! * inner: `sha256("capex/challenge/v1/node" || left || right)`
//! * a level with an odd count promotes its last node unchanged to the next level (no
//!   duplication); the root of one leaf is that leaf's hash. The leaf count is fixed by `n`,
//!   so a proof's length is fixed by the leaf index and is checked exactly.

pub mod bounds;
pub mod merkle;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub use bounds::{ChallengeBound, SIMULATED_CLASS, bound_for};
pub use merkle::{MerkleTree, leaf_hash, node_hash, proof_len, verify_proof};

/// Elements of `C` per Merkle leaf (one segment of a row).
pub const SEGMENT_COLS: usize = 64;
/// Smallest `n` accepted.
pub const N_MIN: u32 = 64;
/// Largest `n` accepted: keeps every `C` element inside i32 (`n · 128² ≤ 2^30`) and the leaf
/// count inside u32.
pub const N_MAX: u32 = 65_536;
/// SplitMix64's increment (the golden ratio in 64 bits).
pub const PRNG_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Refusal codes of the challenge protocol, one per way a challenge fails.
pub const CODE_WRONG_ROW: &str = "challenge_wrong_row";
pub const CODE_BAD_PROOF: &str = "challenge_bad_proof";
pub const CODE_LATE: &str = "challenge_late";
pub const CODE_UNKNOWN: &str = "challenge_unknown";
pub const CODE_REPLAYED: &str = "challenge_replayed";

const KEY_DOMAIN: &[u8] = b"capex/challenge/v1/key";
const PICK_DOMAIN: &[u8] = b"capex/challenge/v1/pick";

/// Which of the two input matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matrix {
    A = 0,
    B = 1,
}

/// A challenge's parameters. `n` is a multiple of [`SEGMENT_COLS`] in
/// [`N_MIN`]..=[`N_MAX`] (checked by [`ChallengeSpec::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChallengeSpec {
    pub seed: [u8; 32],
    pub n: u32,
}

/// Why a spec or an order was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("n must be a multiple of 64 from {N_MIN} to {N_MAX}, got {0}")]
    BadSize(u32),
    #[error("seed must be 64 hex digits")]
    BadSeed,
}

impl ChallengeSpec {
    pub fn new(seed: [u8; 32], n: u32) -> Result<ChallengeSpec, SpecError> {
        if !(N_MIN..=N_MAX).contains(&n) || n as usize % SEGMENT_COLS != 0 {
            return Err(SpecError::BadSize(n));
        }
        Ok(ChallengeSpec { seed, n })
    }

    /// The spec an order names (seed as 64 hex digits).
    pub fn from_order(order: &ChallengeOrder) -> Result<ChallengeSpec, SpecError> {
        let seed = decode_hash(&order.seed).ok_or(SpecError::BadSeed)?;
        ChallengeSpec::new(seed, order.n)
    }

    fn n(&self) -> usize {
        self.n as usize
    }

    /// Number of Merkle leaves (segments of [`SEGMENT_COLS`] elements): `n·n/64`.
    pub fn leaf_count(&self) -> u32 {
        (self.n() * (self.n() / SEGMENT_COLS)) as u32
    }

    /// The PRNG key of a matrix (see the module docs).
    pub fn matrix_key(&self, matrix: Matrix) -> u64 {
        let digest =
            Sha256::new().chain_update(KEY_DOMAIN).chain_update(self.seed).chain_update([matrix as u8]).finalize();
        let mut word = [0u8; 8];
        word.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(word)
    }

    /// One element, straight from the definition (slow; for tests and reimplementers).
    pub fn element(&self, matrix: Matrix, row: u32, col: u32) -> i8 {
        let t = u64::from(row) * u64::from(self.n / 8) + u64::from(col / 8);
        prng_block(self.matrix_key(matrix), t).to_le_bytes()[(col % 8) as usize] as i8
    }

    /// Row `row` of a matrix, `n` elements.
    pub fn expand_row(&self, matrix: Matrix, row: u32) -> Vec<i8> {
        let key = self.matrix_key(matrix);
        let blocks = self.n() / 8;
        let first = row as u64 * blocks as u64;
        let mut out = Vec::with_capacity(self.n());
        for b in 0..blocks as u64 {
            out.extend(prng_block(key, first + b).to_le_bytes().map(|x| x as i8));
        }
        out
    }

    /// The whole matrix, row-major.
    pub fn expand(&self, matrix: Matrix) -> Vec<i8> {
        let key = self.matrix_key(matrix);
        let blocks = self.n() * self.n() / 8;
        let mut out = vec![0i8; self.n() * self.n()];
        for (t, chunk) in out.chunks_exact_mut(8).enumerate().take(blocks) {
            for (dst, src) in chunk.iter_mut().zip(prng_block(key, t as u64).to_le_bytes()) {
                *dst = src as i8;
            }
        }
        out
    }
}

/// The SplitMix64 finaliser.
#[inline]
pub fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Block `t` (8 elements) of the matrix with key `key`.
#[inline]
pub fn prng_block(key: u64, t: u64) -> u64 {
    splitmix64(key.wrapping_add(t.wrapping_add(1).wrapping_mul(PRNG_GAMMA)))
}

/// Row `i` of `C = A·B` (reference: expands A's row and all of B).
pub fn c_row(spec: &ChallengeSpec, i: u32) -> Vec<i32> {
    let n = spec.n();
    let a = spec.expand_row(Matrix::A, i);
    let b = spec.expand(Matrix::B);
    let mut acc = vec![0i32; n];
    for (k, &a_ik) in a.iter().enumerate() {
        let a_ik = i32::from(a_ik);
        for (c, &b_kj) in acc.iter_mut().zip(&b[k * n..(k + 1) * n]) {
            *c += a_ik * i32::from(b_kj);
        }
    }
    acc
}

/// Leaf `s` of `C`: its [`SEGMENT_COLS`] elements, computed from A's row and only the
/// eight B blocks per row that the segment's columns fall in (`64·n` multiply-adds).
pub fn c_segment(spec: &ChallengeSpec, s: u32) -> [i32; SEGMENT_COLS] {
    let n = spec.n();
    let segments_per_row = (n / SEGMENT_COLS) as u32;
    let row = s / segments_per_row;
    let seg = (s % segments_per_row) as u64;
    let a = spec.expand_row(Matrix::A, row);
    c_segment_with(spec.matrix_key(Matrix::B), n, &a, seg)
}

/// [`c_segment`] given A's row and B's key (the verifier reuses both across segments).
fn c_segment_with(key_b: u64, n: usize, a_row: &[i8], seg: u64) -> [i32; SEGMENT_COLS] {
    const BLOCKS: usize = SEGMENT_COLS / 8;
    let blocks_per_row = (n / 8) as u64;
    let mut acc = [0i32; SEGMENT_COLS];
    let mut b = [0i8; SEGMENT_COLS];
    for (k, &a_ik) in a_row.iter().enumerate() {
        let first = k as u64 * blocks_per_row + seg * BLOCKS as u64;
        for blk in 0..BLOCKS {
            let bytes = prng_block(key_b, first + blk as u64).to_le_bytes();
            for (dst, src) in b[blk * 8..blk * 8 + 8].iter_mut().zip(bytes) {
                *dst = src as i8;
            }
        }
        let a_ik = i32::from(a_ik);
        for (c, &b_kj) in acc.iter_mut().zip(&b) {
            *c += a_ik * i32::from(b_kj);
        }
    }
    acc
}

/// The whole of `C` (row-major, `n·n` values), using every core. The simulated backend's
/// engine and the tests' reference.
pub fn compute_c_cpu(spec: &ChallengeSpec) -> Vec<i32> {
    let n = spec.n();
    let a = spec.expand(Matrix::A);
    let b = spec.expand(Matrix::B);
    let mut c = vec![0i32; n * n];
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(n);
    let rows_per_thread = n.div_ceil(threads);
    std::thread::scope(|scope| {
        for (chunk_index, chunk) in c.chunks_mut(rows_per_thread * n).enumerate() {
            let (a, b) = (&a, &b);
            scope.spawn(move || {
                for (r, out) in chunk.chunks_exact_mut(n).enumerate() {
                    let i = chunk_index * rows_per_thread + r;
                    for (k, &a_ik) in a[i * n..(i + 1) * n].iter().enumerate() {
                        let a_ik = i32::from(a_ik);
                        for (c, &b_kj) in out.iter_mut().zip(&b[k * n..(k + 1) * n]) {
                            *c += a_ik * i32::from(b_kj);
                        }
                    }
                }
            });
        }
    });
    c
}

/// `k` distinct leaf indices (fewer only if the spec has fewer leaves), drawn from
/// `entropy`, which the server must draw fresh from its own CSPRNG *after* it has stored
/// the commitment. Deterministic in `(entropy, leaf count, k)`; uniform by rejection
/// sampling of `sha256("capex/challenge/v1/pick" || entropy || counter u64 LE)` words.
pub fn pick_rows(spec: &ChallengeSpec, entropy: &[u8; 32], k: u32) -> Vec<u32> {
    let leaves = u64::from(spec.leaf_count());
    let k = (k as usize).min(leaves as usize);
    // Largest multiple of `leaves` that fits: words at or above it are redrawn (no bias).
    let zone = u64::MAX - (u64::MAX % leaves);
    let mut picked = Vec::with_capacity(k);
    let mut counter = 0u64;
    while picked.len() < k {
        let digest = Sha256::new()
            .chain_update(PICK_DOMAIN)
            .chain_update(entropy)
            .chain_update(counter.to_le_bytes())
            .finalize();
        counter += 1;
        for word in digest.chunks_exact(8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(word);
            let x = u64::from_le_bytes(bytes);
            if x >= zone {
                continue;
            }
            let index = (x % leaves) as u32;
            if picked.len() < k && !picked.contains(&index) {
                picked.push(index);
            }
        }
    }
    picked
}

/// How an answer failed. `Malformed` covers answers that do not open exactly the named
/// leaves once each, with 64 values each and proofs of 32-byte hex hashes; a proof of the
/// wrong length or one that does not lead to the committed root is `BadProof`; a leaf whose
/// proof holds but whose values are not the product's is `WrongRow`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeFailure {
    #[error("leaf {index} does not hold the values of C")]
    WrongRow { index: u32 },
    #[error("the Merkle proof of leaf {index} does not lead to the committed root")]
    BadProof { index: u32 },
    #[error("malformed answer: {0}")]
    Malformed(String),
}

impl ChallengeFailure {
    /// The refusal code of this failure (`Malformed` counts as a bad proof: the agent did not
    /// open what it committed to).
    pub fn code(&self) -> &'static str {
        match self {
            ChallengeFailure::WrongRow { .. } => CODE_WRONG_ROW,
            ChallengeFailure::BadProof { .. } | ChallengeFailure::Malformed(_) => CODE_BAD_PROOF,
        }
    }
}

/// Checks an answer against the committed `root` for the leaves the server `asked` (in any
/// order; each exactly once). Checks every proof first (cheap), then recomputes every
/// opened segment. Cost: `k · (64·n MACs + 8·n PRNG blocks)` on one core.
pub fn verify_answer(
    spec: &ChallengeSpec,
    root: &[u8; 32],
    asked: &[u32],
    answer: &ChallengeAnswer,
) -> Result<(), ChallengeFailure> {
    let leaves = spec.leaf_count();
    if answer.rows.len() != asked.len() {
        return Err(ChallengeFailure::Malformed(format!(
            "{} openings for {} named leaves",
            answer.rows.len(),
            asked.len()
        )));
    }
    let mut want: Vec<u32> = asked.to_vec();
    want.sort_unstable();
    let mut got: Vec<u32> = answer.rows.iter().map(|r| r.index).collect();
    got.sort_unstable();
    if want != got {
        return Err(ChallengeFailure::Malformed("the openings are not exactly the named leaves".into()));
    }
    let mut opened = Vec::with_capacity(answer.rows.len());
    for opening in &answer.rows {
        let index = opening.index;
        debug_assert!(index < leaves, "the server names leaves of this spec only");
        let values = opening.decode_values()?;
        let proof = opening.decode_proof()?;
        if !verify_proof(root, leaves, index, &leaf_hash(index, &values), &proof) {
            return Err(ChallengeFailure::BadProof { index });
        }
        opened.push((index, values));
    }
    let n = spec.n();
    let segments_per_row = (n / SEGMENT_COLS) as u32;
    let key_b = spec.matrix_key(Matrix::B);
    opened.sort_unstable_by_key(|(index, _)| *index);
    let mut a_row: Option<(u32, Vec<i8>)> = None;
    for (index, values) in opened {
        let row = index / segments_per_row;
        if a_row.as_ref().is_none_or(|(r, _)| *r != row) {
            a_row = Some((row, spec.expand_row(Matrix::A, row)));
        }
        let a = a_row.as_ref().map(|(_, a)| a.as_slice()).unwrap_or_default();
        let expected = c_segment_with(key_b, n, a, u64::from(index % segments_per_row));
        if values != expected {
            return Err(ChallengeFailure::WrongRow { index });
        }
    }
    Ok(())
}

/// Hex of a 32-byte hash (lower case).
pub fn encode_hash(hash: &[u8; 32]) -> String {
    hex::encode(hash)
}

/// A 32-byte hash from 64 hex digits.
pub fn decode_hash(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Opens leaf `index` of a tree over `c`: its values and its proof.
pub fn open_leaf(tree: &MerkleTree, c: &[i32], index: u32) -> RowOpening {
    let start = index as usize * SEGMENT_COLS;
    let values: Vec<u8> = c[start..start + SEGMENT_COLS].iter().flat_map(|v| v.to_le_bytes()).collect();
    RowOpening { index, values: BASE64.encode(values), proof: tree.proof(index).iter().map(encode_hash).collect() }
}

// ---- wire DTOs (the server uses the same types) ----

/// One challenge for one GPU, delivered in the assignments long-poll (`challenges`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeOrder {
    pub challenge_id: Uuid,
    pub gpu_uuid: String,
    /// 64 hex digits.
    pub seed: String,
    pub n: u32,
    pub issued_at: DateTime<Utc>,
    /// The commitment must reach the exchange by then.
    pub commit_by: DateTime<Utc>,
}

/// Body of `POST /api/v1/hosts/{host_id}/challenges/{challenge_id}/commitment` (host-signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeCommitment {
    /// The Merkle root over C's leaves, 64 hex digits.
    pub root: String,
}

/// Answer to a commitment: the leaves to open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRows {
    /// Leaf (row segment) indices, see the module docs.
    pub rows: Vec<u32>,
    pub answer_by: DateTime<Utc>,
}

/// Body of `POST /api/v1/hosts/{host_id}/challenges/{challenge_id}/answer` (host-signed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeAnswer {
    pub rows: Vec<RowOpening>,
}

/// One opened leaf.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RowOpening {
    /// Leaf index.
    pub index: u32,
    /// base64 (standard, padded) of the 64 values as i32 little-endian (256 bytes).
    pub values: String,
    /// Sibling hashes from the leaf up, 64 hex digits each.
    pub proof: Vec<String>,
}

impl RowOpening {
    pub fn decode_values(&self) -> Result<[i32; SEGMENT_COLS], ChallengeFailure> {
        let bytes = BASE64
            .decode(&self.values)
            .map_err(|_| ChallengeFailure::Malformed(format!("leaf {}: values are not base64", self.index)))?;
        if bytes.len() != SEGMENT_COLS * 4 {
            return Err(ChallengeFailure::Malformed(format!(
                "leaf {}: {} value bytes, want {}",
                self.index,
                bytes.len(),
                SEGMENT_COLS * 4
            )));
        }
        let mut out = [0i32; SEGMENT_COLS];
        for (dst, src) in out.iter_mut().zip(bytes.chunks_exact(4)) {
            *dst = i32::from_le_bytes([src[0], src[1], src[2], src[3]]);
        }
        Ok(out)
    }

    pub fn decode_proof(&self) -> Result<Vec<[u8; 32]>, ChallengeFailure> {
        self.proof.iter().map(|h| decode_hash(h)).collect::<Option<Vec<_>>>().ok_or_else(|| {
            ChallengeFailure::Malformed(format!("leaf {}: a proof hash is not 64 hex digits", self.index))
        })
    }
}

/// The exchange's verdict on an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeVerdict {
    /// `passed` or `failed`.
    pub outcome: String,
    /// The refusal code when failed.
    #[serde(default)]
    pub code: Option<String>,
    /// The GPU's verification level after this verdict.
    pub level: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: u32) -> ChallengeSpec {
        ChallengeSpec::new([7u8; 32], n).unwrap()
    }

    #[test]
    fn sizes_are_checked() {
        assert!(ChallengeSpec::new([0; 32], 0).is_err());
        assert!(ChallengeSpec::new([0; 32], 100).is_err());
        assert!(ChallengeSpec::new([0; 32], N_MAX + 64).is_err());
        assert!(ChallengeSpec::new([0; 32], 128).is_ok());
    }

    #[test]
    fn prng_is_pinned() {
        // Reference values: a reimplementation must produce exactly these.
        assert_eq!(splitmix64(0), 0);
        assert_eq!(prng_block(0, 0), 0xE220_A839_7B1D_CDAF, "SplitMix64's first output from state 0");
        let s = ChallengeSpec::new([0u8; 32], 64).unwrap();
        let row = s.expand_row(Matrix::A, 3);
        for (c, &v) in row.iter().enumerate() {
            assert_eq!(v, s.element(Matrix::A, 3, c as u32));
        }
        assert_ne!(s.matrix_key(Matrix::A), s.matrix_key(Matrix::B));
    }

    #[test]
    fn expand_matches_rows_and_elements() {
        let s = spec(128);
        let a = s.expand(Matrix::B);
        assert_eq!(&a[5 * 128..6 * 128], s.expand_row(Matrix::B, 5).as_slice());
        assert_eq!(a[77 * 128 + 93], s.element(Matrix::B, 77, 93));
    }

    #[test]
    fn cpu_product_matches_rows_and_segments() {
        let s = spec(192);
        let c = compute_c_cpu(&s);
        assert_eq!(&c[10 * 192..11 * 192], c_row(&s, 10).as_slice());
        for leaf in [0u32, 1, 2, 100, s.leaf_count() - 1] {
            let start = leaf as usize * SEGMENT_COLS;
            assert_eq!(&c[start..start + SEGMENT_COLS], &c_segment(&s, leaf));
        }
    }

    #[test]
    fn picks_are_distinct_and_in_range() {
        let s = spec(64);
        let picked = pick_rows(&s, &[1; 32], 40);
        assert_eq!(picked.len(), 40);
        let mut sorted = picked.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 40);
        assert!(picked.iter().all(|&i| i < s.leaf_count()));
        assert_eq!(pick_rows(&s, &[1; 32], 40), picked, "deterministic");
        assert_ne!(pick_rows(&s, &[2; 32], 40), picked);
        assert_eq!(pick_rows(&s, &[1; 32], 1000).len(), 64, "at most every leaf");
    }
}

/// Answers for tests and benches at any `n` without computing all of `C`: the named leaves
/// hold the true segments, every other subtree is a placeholder hash, so the root and the
/// proofs are consistent with each other (but not a commitment to a real `C`).
pub mod testing {
    use super::*;

    fn placeholder(level: u32, index: u64) -> [u8; 32] {
        Sha256::new()
            .chain_update(b"placeholder")
            .chain_update(level.to_le_bytes())
            .chain_update(index.to_le_bytes())
            .finalize()
            .into()
    }

    struct Sparse<'a> {
        widths: Vec<u64>,
        leaves: &'a [(u32, [u8; 32])],
    }

    impl Sparse<'_> {
        /// Whether any named leaf lies under node `(level, index)`.
        fn covers(&self, level: u32, index: u64) -> bool {
            let (lo, hi) = (index << level, (index + 1) << level);
            self.leaves.iter().any(|(i, _)| (lo..hi).contains(&u64::from(*i)))
        }

        fn hash(&self, level: u32, index: u64) -> [u8; 32] {
            if level == 0 {
                return self
                    .leaves
                    .iter()
                    .find(|(i, _)| u64::from(*i) == index)
                    .map_or_else(|| placeholder(0, index), |(_, h)| *h);
            }
            if !self.covers(level, index) {
                return placeholder(level, index);
            }
            let below = self.widths[level as usize - 1];
            if 2 * index + 1 < below {
                node_hash(&self.hash(level - 1, 2 * index), &self.hash(level - 1, 2 * index + 1))
            } else {
                self.hash(level - 1, 2 * index)
            }
        }
    }

    /// The root and the answer opening `asked`; with `corrupt`, that leaf's first value is
    /// off by one *before* hashing (a committed wrong leaf).
    pub fn sparse_answer(spec: &ChallengeSpec, asked: &[u32], corrupt: Option<u32>) -> ([u8; 32], ChallengeAnswer) {
        let mut widths = vec![u64::from(spec.leaf_count())];
        while *widths.last().unwrap_or(&1) > 1 {
            let next = widths.last().copied().unwrap_or(1).div_ceil(2);
            widths.push(next);
        }
        let values: Vec<(u32, [i32; SEGMENT_COLS])> = asked
            .iter()
            .map(|&i| {
                let mut v = c_segment(spec, i);
                if corrupt == Some(i) {
                    v[0] = v[0].wrapping_add(1);
                }
                (i, v)
            })
            .collect();
        let leaves: Vec<(u32, [u8; 32])> = values.iter().map(|(i, v)| (*i, leaf_hash(*i, v))).collect();
        let sparse = Sparse { widths: widths.clone(), leaves: &leaves };
        let top = widths.len() as u32 - 1;
        let root = sparse.hash(top, 0);
        let rows = values
            .iter()
            .map(|(i, v)| {
                let mut proof = Vec::new();
                let mut index = u64::from(*i);
                for level in 0..top {
                    let sibling = index ^ 1;
                    if sibling < widths[level as usize] {
                        proof.push(encode_hash(&sparse.hash(level, sibling)));
                    }
                    index /= 2;
                }
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                RowOpening { index: *i, values: BASE64.encode(bytes), proof }
            })
            .collect();
        (root, ChallengeAnswer { rows })
    }
}
