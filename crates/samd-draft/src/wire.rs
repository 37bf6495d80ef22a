//! The static corpus file: a versioned, checksummed, compact list of token documents.
//!
//! Only the tokens are stored, 2 bytes each when the vocabulary fits in 16 bits, and the
//! automaton is rebuilt on load (see [`crate::corpus`]). Everything is validated before
//! anything is trusted: the length is checked against the header, then the checksum over
//! every byte, then each token and the document count.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  magic "SAMDCORP"
//!      8     4  version (1)
//!     12     4  token width in bytes (2 or 4)
//!     16     4  vocabulary size
//!     20     4  number of documents
//!     24     8  tokenizer hash
//!     32     8  number of token slots (documents plus one separator each)
//!     40   w·n  token slots; the separator is all ones (0xFFFF or 0xFFFF_FFFF)
//!    end     8  checksum of every byte before it
//! ```

use crate::corpus::{SEPARATOR, StaticSam, check_corpus_len};
use crate::{Error, check_vocab_size};

/// First bytes of every corpus file.
pub const MAGIC: [u8; 8] = *b"SAMDCORP";
/// The format version this build reads and writes.
pub const VERSION: u32 = 1;
/// Bytes before the token slots.
const HEADER_LEN: usize = 40;
/// Bytes of the trailing checksum.
const CHECKSUM_LEN: usize = 8;

/// A 64-bit checksum over 8-byte words. Each step is a bijection of the running state
/// for a fixed word, so any change to a single word (hence any single bit flip or any
/// single corrupted byte) changes the result. It is not cryptographic: it catches damage,
/// not forgery.
pub fn checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (bytes.len() as u64).wrapping_mul(K) ^ 0x5AD0_5AD0_5AD0_5AD0;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("invariant: chunks are 8 bytes"));
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let mut tail = [0u8; 8];
    for (t, &b) in tail.iter_mut().zip(chunks.remainder()) {
        *t = b;
    }
    h = (h ^ u64::from_le_bytes(tail))
        .wrapping_mul(K)
        .rotate_left(29);
    h ^ (h >> 31)
}

/// Reads a little-endian integer of `N` bytes at `at`; the caller has checked the length.
fn read<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes
        .get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .expect("invariant: the caller checked the length")
}

impl StaticSam {
    /// Serialises the corpus: the header, the tokens, and the checksum.
    pub fn to_bytes(&self) -> Vec<u8> {
        let width: usize = if self.vocab_size() <= u32::from(u16::MAX) {
            2
        } else {
            4
        };
        let text = self.text();
        let mut out = Vec::with_capacity(HEADER_LEN + width * text.len() + CHECKSUM_LEN);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(width as u32).to_le_bytes());
        out.extend_from_slice(&self.vocab_size().to_le_bytes());
        out.extend_from_slice(&self.n_docs().to_le_bytes());
        out.extend_from_slice(&self.tokenizer_hash().to_le_bytes());
        out.extend_from_slice(&(text.len() as u64).to_le_bytes());
        for &t in text {
            if width == 2 {
                let t = if t == SEPARATOR { u16::MAX } else { t as u16 };
                out.extend_from_slice(&t.to_le_bytes());
            } else {
                out.extend_from_slice(&t.to_le_bytes());
            }
        }
        let sum = checksum(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Loads a corpus file, validating it whole before building the automaton.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let have = bytes.len() as u64;
        if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
            if !bytes.is_empty() && !MAGIC.starts_with(bytes.get(..8).unwrap_or(bytes)) {
                return Err(Error::BadMagic);
            }
            return Err(Error::Length {
                need: (HEADER_LEN + CHECKSUM_LEN) as u64,
                have,
            });
        }
        if read::<8>(bytes, 0) != MAGIC {
            return Err(Error::BadMagic);
        }
        let version = u32::from_le_bytes(read(bytes, 8));
        if version != VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: VERSION,
            });
        }
        let width = u32::from_le_bytes(read(bytes, 12));
        let vocab_size = u32::from_le_bytes(read(bytes, 16));
        let n_docs = u32::from_le_bytes(read(bytes, 20));
        let tokenizer_hash = u64::from_le_bytes(read(bytes, 24));
        let n_slots = u64::from_le_bytes(read(bytes, 32));
        if width != 2 && width != 4 {
            return Err(Error::Corrupt {
                what: "token width is not 2 or 4",
            });
        }
        let need = n_slots
            .checked_mul(u64::from(width))
            .and_then(|b| b.checked_add((HEADER_LEN + CHECKSUM_LEN) as u64))
            .ok_or(Error::Corrupt {
                what: "token count overflows",
            })?;
        if need != have {
            return Err(Error::Length { need, have });
        }
        // Before the tokens are decoded: the automaton is built from as many.
        check_corpus_len(n_slots)?;
        let body_end = bytes.len() - CHECKSUM_LEN;
        let (body, _) = bytes
            .split_at_checked(body_end)
            .ok_or(Error::Length { need, have })?;
        let stored = u64::from_le_bytes(read(bytes, body_end));
        let computed = checksum(body);
        if stored != computed {
            return Err(Error::Checksum { stored, computed });
        }
        check_vocab_size(vocab_size).map_err(|_| Error::Corrupt {
            what: "vocabulary size out of range",
        })?;
        if width == 2 && vocab_size > u32::from(u16::MAX) {
            return Err(Error::Corrupt {
                what: "vocabulary too large for 2-byte tokens",
            });
        }
        let slots = body.get(HEADER_LEN..).unwrap_or_default();
        let text = decode_tokens(slots, width, vocab_size)?;
        let separators = text.iter().filter(|&&t| t == SEPARATOR).count();
        if separators as u64 != u64::from(n_docs) || text.last().is_some_and(|&t| t != SEPARATOR) {
            return Err(Error::Corrupt {
                what: "document count disagrees with the separators",
            });
        }
        Self::from_text(text, vocab_size, n_docs, tokenizer_hash)
    }
}

/// Decodes token slots, mapping the all-ones slot to [`SEPARATOR`] and rejecting ids at
/// or beyond the vocabulary.
fn decode_tokens(body: &[u8], width: u32, vocab_size: u32) -> Result<Vec<u32>, Error> {
    let separator_slot = if width == 2 {
        u32::from(u16::MAX)
    } else {
        SEPARATOR
    };
    body.chunks_exact(width as usize)
        .map(|c| {
            let t = c
                .iter()
                .rev()
                .fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
            match t {
                _ if t == separator_slot => Ok(SEPARATOR),
                _ if t < vocab_size => Ok(t),
                _ => Err(Error::Corrupt {
                    what: "token id beyond the vocabulary",
                }),
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(vocab_size: u32) -> StaticSam {
        let docs: Vec<Vec<u32>> = (0..20u32)
            .map(|i| {
                (0..(i % 7 + 1))
                    .map(|j| (i * 31 + j * 17) % vocab_size)
                    .collect()
            })
            .collect();
        StaticSam::build(docs.iter().map(Vec::as_slice), vocab_size, 0xABCD).unwrap()
    }

    /// A file whose length backs its token count, but whose count passes the cap, is
    /// refused before its tokens are decoded (its checksum is never reached).
    #[test]
    fn refuses_more_tokens_than_the_cap() {
        use crate::corpus::MAX_CORPUS_TOKENS;
        let slots = MAX_CORPUS_TOKENS + 1;
        let mut bytes = sample(300).to_bytes();
        bytes[32..40].copy_from_slice(&(slots as u64).to_le_bytes());
        bytes.resize(HEADER_LEN + 2 * slots + CHECKSUM_LEN, 0);
        assert_eq!(
            StaticSam::from_bytes(&bytes).err(),
            Some(Error::TextTooLong {
                len: slots as u64,
                max: MAX_CORPUS_TOKENS as u64
            })
        );
    }

    #[test]
    fn round_trips_with_both_widths() {
        for vocab in [300, 49_152, 65_535, 70_000, 151_936] {
            let c = sample(vocab);
            let bytes = c.to_bytes();
            let back = StaticSam::from_bytes(&bytes).unwrap();
            assert_eq!(back.text(), c.text());
            assert_eq!(back.automaton(), c.automaton());
            assert_eq!(back.n_docs(), 20);
            assert_eq!(back.vocab_size(), vocab);
            assert_eq!(back.tokenizer_hash(), 0xABCD);
            let width = if vocab <= 65_535 { 2 } else { 4 };
            assert_eq!(bytes.len(), 48 + width * c.text().len());
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample(1000).to_bytes();
        for len in 0..bytes.len() {
            assert!(
                StaticSam::from_bytes(&bytes[..len]).is_err(),
                "length {len}"
            );
        }
    }

    #[test]
    fn every_bit_flip_is_an_error() {
        let bytes = sample(1000).to_bytes();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(StaticSam::from_bytes(&b).is_err(), "bit {i}");
        }
    }

    #[test]
    fn foreign_files_are_named() {
        assert_eq!(
            StaticSam::from_bytes(b"GGUF\x03\0\0\0").unwrap_err(),
            Error::BadMagic
        );
        let mut bytes = sample(1000).to_bytes();
        bytes[8] = 9;
        assert_eq!(
            StaticSam::from_bytes(&bytes).unwrap_err(),
            Error::UnsupportedVersion {
                found: 9,
                supported: 1
            }
        );
    }

    #[test]
    fn valid_checksum_over_bad_fields_is_still_rejected() {
        // A file whose checksum was recomputed after damage must fail field checks.
        let mut bytes = sample(1000).to_bytes();
        let body_end = bytes.len() - 8;
        bytes[HEADER_LEN] = 0xEE; // token id 0x..EE beyond vocab 1000
        bytes[HEADER_LEN + 1] = 0xEE;
        let sum = checksum(&bytes[..body_end]);
        bytes[body_end..].copy_from_slice(&sum.to_le_bytes());
        assert!(matches!(
            StaticSam::from_bytes(&bytes),
            Err(Error::Corrupt { .. })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = StaticSam::from_bytes(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_header_never_panic(
            tail in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = sample(1000).to_bytes();
            bytes.truncate(HEADER_LEN);
            bytes.extend(tail);
            let _ = StaticSam::from_bytes(&bytes);
        }
    }
}
