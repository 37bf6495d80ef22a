//! A small, fast hasher for the automaton's `(state, token)` transition keys.
//!
//! std's SipHash costs more than the rest of an extension step. Keys are trusted here
//! (built from our own state ids and validated token ids), so flooding resistance buys
//! nothing. The mixer spreads both halves of the key into the low bits, which SwissTable
//! uses for the bucket index.

use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for `u64` keys: one multiply and two xor-shifts.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, key: u64) {
        let x = (self.0 ^ key ^ (key >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = x ^ (x >> 32);
    }
}

/// `BuildHasher` for maps keyed by packed `(state, token)` pairs.
pub(crate) type BuildKeyHasher = BuildHasherDefault<KeyHasher>;
