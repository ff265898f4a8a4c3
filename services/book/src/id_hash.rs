//! A fast hasher for the id index.
//!
//! Ids are assigned by the server (never chosen by clients), so the map needs no defence
//! against crafted collisions, and SipHash's cost per command would be a large share of the
//! engine's budget. One folded 64x64->128 multiply per word mixes both halves of the id.

use std::hash::{BuildHasherDefault, Hasher};

/// Odd constant with well-spread bits (from the golden ratio).
const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

pub(crate) type IdBuildHasher = BuildHasherDefault<IdHasher>;

impl IdHasher {
    fn mix(&mut self, word: u64) {
        let product = u128::from(self.0 ^ word) * u128::from(MULTIPLIER);
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0_u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.mix(value as u64);
        self.mix((value >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
