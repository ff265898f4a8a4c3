//! The Merkle commitment over C's leaves (segments of [`SEGMENT_COLS`] elements).
//!
//! leaf = `sha256("capex/challenge/v1/leaf" || index u32 LE || values as i32 LE)`,
//! node = `sha256("capex/challenge/v1/node" || left || right)`. A level with an odd number
//! of nodes promotes its last node unchanged. The two domain tags keep a leaf from ever
//! being read as a node (second-preimage across levels), and the index in the leaf keeps an
//! opening of one leaf from being presented as another.

use sha2::{Digest, Sha256};

use super::SEGMENT_COLS;

const LEAF_DOMAIN: &[u8] = b"capex/challenge/v1/leaf";
const NODE_DOMAIN: &[u8] = b"capex/challenge/v1/node";

/// Hash of leaf `index` holding `values`.
pub fn leaf_hash(index: u32, values: &[i32; SEGMENT_COLS]) -> [u8; 32] {
    let mut bytes = [0u8; SEGMENT_COLS * 4];
    for (dst, v) in bytes.chunks_exact_mut(4).zip(values) {
        dst.copy_from_slice(&v.to_le_bytes());
    }
    Sha256::new().chain_update(LEAF_DOMAIN).chain_update(index.to_le_bytes()).chain_update(bytes).finalize().into()
}

/// Hash of an inner node.
pub fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    Sha256::new().chain_update(NODE_DOMAIN).chain_update(left).chain_update(right).finalize().into()
}

/// Number of sibling hashes in the proof of leaf `index` in a tree of `leaves` leaves
/// (levels where the node is a promoted odd last one contribute none).
pub fn proof_len(leaves: u32, index: u32) -> usize {
    let (mut width, mut i, mut len) = (leaves as u64, index as u64, 0usize);
    while width > 1 {
        if !(i == width - 1 && width % 2 == 1) {
            len += 1;
        }
        i /= 2;
        width = width.div_ceil(2);
    }
    len
}

/// A full tree: every level, leaves first.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    levels: Vec<Vec<[u8; 32]>>,
}

impl MerkleTree {
    /// The tree over given leaf hashes. At least one leaf.
    pub fn from_leaves(leaves: Vec<[u8; 32]>) -> MerkleTree {
        assert!(!leaves.is_empty(), "a Merkle tree has at least one leaf");
        let mut levels = vec![leaves];
        while let Some(level) = levels.last().filter(|l| l.len() > 1) {
            let next: Vec<[u8; 32]> = level
                .chunks(2)
                .map(|pair| match pair {
                    [left, right] => node_hash(left, right),
                    [single] => *single,
                    _ => unreachable!("chunks(2) yields one or two"),
                })
                .collect();
            levels.push(next);
        }
        MerkleTree { levels }
    }

    /// The tree over `c` (row-major, length a multiple of 64), leaf hashes computed on every
    /// core; upper levels are cheap (one hash per two leaves of 256 bytes each).
    pub fn build(c: &[i32]) -> MerkleTree {
        assert!(!c.is_empty() && c.len() % SEGMENT_COLS == 0, "C is whole segments");
        let count = c.len() / SEGMENT_COLS;
        let mut leaves = vec![[0u8; 32]; count];
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get()).min(count);
        let per_thread = count.div_ceil(threads);
        std::thread::scope(|scope| {
            for (t, out) in leaves.chunks_mut(per_thread).enumerate() {
                scope.spawn(move || {
                    for (j, hash) in out.iter_mut().enumerate() {
                        let index = t * per_thread + j;
                        let mut values = [0i32; SEGMENT_COLS];
                        values.copy_from_slice(&c[index * SEGMENT_COLS..(index + 1) * SEGMENT_COLS]);
                        *hash = leaf_hash(index as u32, &values);
                    }
                });
            }
        });
        MerkleTree::from_leaves(leaves)
    }

    pub fn root(&self) -> [u8; 32] {
        self.levels.last().and_then(|l| l.first()).copied().unwrap_or_default()
    }

    pub fn leaf_count(&self) -> u32 {
        self.levels[0].len() as u32
    }

    /// Sibling hashes from leaf `index` up to the root.
    pub fn proof(&self, index: u32) -> Vec<[u8; 32]> {
        let mut i = index as usize;
        let mut proof = Vec::new();
        for level in &self.levels[..self.levels.len() - 1] {
            let sibling = i ^ 1;
            if sibling < level.len() {
                proof.push(level[sibling]);
            }
            i /= 2;
        }
        debug_assert_eq!(proof.len(), proof_len(self.leaf_count(), index));
        proof
    }
}

/// Whether `proof` leads from `leaf` (leaf number `index` of `leaves`) to `root`. The proof
/// must have exactly [`proof_len`] hashes.
pub fn verify_proof(root: &[u8; 32], leaves: u32, index: u32, leaf: &[u8; 32], proof: &[[u8; 32]]) -> bool {
    if index >= leaves || proof.len() != proof_len(leaves, index) {
        return false;
    }
    let (mut width, mut i) = (leaves as u64, index as u64);
    let mut hash = *leaf;
    let mut siblings = proof.iter();
    while width > 1 {
        if !(i == width - 1 && width % 2 == 1) {
            let Some(sibling) = siblings.next() else { return false };
            hash = if i % 2 == 0 { node_hash(&hash, sibling) } else { node_hash(sibling, &hash) };
        }
        i /= 2;
        width = width.div_ceil(2);
    }
    hash == *root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(count: usize) -> Vec<[u8; 32]> {
        (0..count).map(|i| leaf_hash(i as u32, &[i as i32; SEGMENT_COLS])).collect()
    }

    #[test]
    fn every_proof_verifies_for_every_width() {
        for count in 1..=17usize {
            let tree = MerkleTree::from_leaves(leaves(count));
            for i in 0..count as u32 {
                let proof = tree.proof(i);
                let leaf = tree.levels[0][i as usize];
                assert!(verify_proof(&tree.root(), count as u32, i, &leaf, &proof), "count {count} leaf {i}");
                if count > 1 {
                    let other = (i + 1) % count as u32;
                    assert!(!verify_proof(&tree.root(), count as u32, other, &leaf, &proof));
                }
                let mut longer = proof.clone();
                longer.push([0; 32]);
                assert!(!verify_proof(&tree.root(), count as u32, i, &leaf, &longer));
            }
        }
    }

    #[test]
    fn one_leaf_is_its_own_root() {
        let tree = MerkleTree::from_leaves(leaves(1));
        assert_eq!(tree.root(), tree.levels[0][0]);
        assert!(tree.proof(0).is_empty());
    }

    #[test]
    fn build_matches_from_leaves() {
        let c: Vec<i32> = (0..SEGMENT_COLS as i32 * 5).collect();
        let by_hand: Vec<[u8; 32]> = c
            .chunks_exact(SEGMENT_COLS)
            .enumerate()
            .map(|(i, chunk)| {
                let mut v = [0i32; SEGMENT_COLS];
                v.copy_from_slice(chunk);
                leaf_hash(i as u32, &v)
            })
            .collect();
        assert_eq!(MerkleTree::build(&c).root(), MerkleTree::from_leaves(by_hand).root());
    }
}
