//! Feeds arbitrary bytes to the static corpus loader: it must return `Ok` or `Err`, never
//! panic, and whatever it accepts must survive drafting and a re-serialisation.
//!
//! The first input byte is a switch, not file data. A random mutation almost never keeps
//! the header's token count and the trailing checksum right, so nearly every input would
//! stop at those two checks; bit 0 sets the count from the length, and bit 1 rewrites the
//! checksum, so that the checks behind them (widths, vocabulary, ids, documents, the
//! automaton) see mutated files too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samd_draft::corpus::{StaticSam, TreeShape};
use samd_draft::tree::DraftTree;
use samd_draft::wire::checksum;

/// Bytes before the token slots, and the offsets of the width and slot-count fields
/// (see `samd_draft::wire`).
const HEADER_LEN: usize = 40;
const WIDTH_AT: usize = 12;
const SLOTS_AT: usize = 32;
const CHECKSUM_LEN: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some((&switch, file)) = data.split_first() else {
        return;
    };
    let mut bytes = file.to_vec();
    if bytes.len() >= HEADER_LEN + CHECKSUM_LEN {
        if switch & 1 != 0 {
            let width = u32::from_le_bytes(bytes[WIDTH_AT..WIDTH_AT + 4].try_into().unwrap());
            if width == 2 || width == 4 {
                let slots = (bytes.len() - HEADER_LEN - CHECKSUM_LEN) / width as usize;
                bytes[SLOTS_AT..SLOTS_AT + 8].copy_from_slice(&(slots as u64).to_le_bytes());
            }
        }
        if switch & 2 != 0 {
            let body_end = bytes.len() - CHECKSUM_LEN;
            let sum = checksum(&bytes[..body_end]);
            bytes[body_end..].copy_from_slice(&sum.to_le_bytes());
        }
    }
    let Ok(corpus) = StaticSam::from_bytes(&bytes) else {
        return;
    };
    assert_eq!(
        StaticSam::from_bytes(&corpus.to_bytes()).map(|c| c.text().len()),
        Ok(corpus.text().len())
    );
    let live: Vec<u32> = corpus
        .text()
        .iter()
        .copied()
        .filter(|&t| t < corpus.vocab_size())
        .take(64)
        .collect();
    let mut m = corpus.matcher_start();
    let mut tree = DraftTree::new(0);
    for &t in &live {
        corpus.advance(&mut m, t);
        let _ = corpus.chain(m, 16);
        tree.reset(t);
        corpus.tree(m, TreeShape::default(), &mut tree, 0);
    }
});
