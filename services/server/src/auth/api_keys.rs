//! Long-lived API keys for scripts and agents: shown once, stored as a sha256 hash.
//! The keys are 256 random bits, so a fast hash is as safe as a slow one here and keeps
//! every authenticated request cheap.

use sha2::{Digest, Sha256};

pub const API_KEY_PREFIX: &str = "capex_";
/// Characters of a key kept in clear to tell keys apart in listings.
pub const API_KEY_SHOWN_CHARS: usize = 12;

pub fn generate() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{API_KEY_PREFIX}{}", hex::encode(bytes))
}

pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

pub fn looks_like_api_key(token: &str) -> bool {
    token.starts_with(API_KEY_PREFIX)
}
