//! Feeds arbitrary bytes to the static corpus loader: it must return `Ok` or `Err`, never
//! panic, and whatever it accepts must survive drafting and a re-serialisation.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samd_draft::corpus::{StaticSam, TreeShape};
use samd_draft::tree::DraftTree;

fuzz_target!(|bytes: &[u8]| {
    let Ok(corpus) = StaticSam::from_bytes(bytes) else {
        return;
    };
    assert_eq!(StaticSam::from_bytes(&corpus.to_bytes()).map(|c| c.text().len()), Ok(corpus.text().len()));
    let live: Vec<u32> = corpus.text().iter().copied().filter(|&t| t < corpus.vocab_size()).take(64).collect();
    let mut m = corpus.matcher_start();
    let mut tree = DraftTree::new(0);
    for &t in &live {
        corpus.advance(&mut m, t);
        let _ = corpus.chain(m, 16);
        tree.reset(t);
        corpus.tree(m, TreeShape::default(), &mut tree, 0);
    }
});
