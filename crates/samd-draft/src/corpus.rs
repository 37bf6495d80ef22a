//! The static suffix automaton: built once over a corpus of token documents, then only
//! matched against at run time.
//!
//! Documents are joined by [`SEPARATOR`], an id outside every vocabulary. The live text
//! never contains it, so no match crosses a document boundary, and drafts stop at it.
//!
//! On disk only the tokens are stored (see [`crate::wire`]); the automaton is rebuilt on
//! load. A built automaton costs about 50 bytes per token, the tokens 2 or 4, and the
//! rebuild is faster than reading the larger form would be over a network.

use std::collections::BinaryHeap;

use crate::sam::{ChainSource, Matcher, StateId, SuffixAutomaton, chain_source};
use crate::tree::{DraftTree, Source};
use crate::{Error, TokenId, check_token, check_vocab_size};

/// Separates documents in a corpus text. Never a valid token id.
pub const SEPARATOR: TokenId = u32::MAX;

/// The most tokens (separators included) a static corpus holds. At about 50 bytes of
/// automaton a token, that is some 420 MB, which a browser's 4 GiB of wasm memory holds
/// beside a model; a larger file would exhaust it on load and take the worker down. The
/// default corpus holds 441k tokens, and a file of 8 MB about 4 million.
pub const MAX_CORPUS_TOKENS: usize = 1 << 23;

/// A read-only suffix automaton over a corpus, with end-position counts for tree drafts.
///
/// # Example
///
/// ```
/// use samd_draft::corpus::StaticSam;
///
/// let docs: [&[u32]; 2] = [&[1, 2, 3], &[1, 2, 4]];
/// let corpus = StaticSam::build(docs, 10, 0).unwrap();
/// let m = corpus.follow(corpus.matcher_start(), &[1]);
/// let chain = corpus.chain(m, 4).unwrap();
/// assert_eq!(corpus.tokens(chain), &[2, 3]); // stops at the document's end
/// ```
#[derive(Debug, Clone)]
pub struct StaticSam {
    sam: SuffixAutomaton,
    /// Documents, each followed by `SEPARATOR`.
    text: Vec<TokenId>,
    /// End-position count per state.
    counts: Vec<u32>,
    vocab_size: u32,
    n_docs: u32,
    tokenizer_hash: u64,
}

/// The shape of a tree draft: how many nodes in all, per depth, and how deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeShape {
    /// Nodes in the tree, the root included.
    pub max_nodes: usize,
    /// Nodes kept at each depth.
    pub per_depth: usize,
    /// Deepest level below the root.
    pub max_depth: usize,
}

impl Default for TreeShape {
    fn default() -> Self {
        Self {
            max_nodes: 64,
            per_depth: 8,
            max_depth: 12,
        }
    }
}

/// A candidate node in the best-first tree expansion.
#[derive(Debug, PartialEq)]
struct Candidate {
    /// Estimated probability of the path: the product of `count(child) / count(parent)`.
    weight: f64,
    parent: usize,
    token: TokenId,
    state: StateId,
    depth: usize,
}

impl Eq for Candidate {}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.weight
            .total_cmp(&other.weight)
            .then_with(|| other.token.cmp(&self.token))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl StaticSam {
    /// Builds the automaton over `docs`. `tokenizer_hash` identifies the tokenizer that
    /// made the ids, so that a corpus cannot be used with another one by mistake.
    pub fn build<'a>(
        docs: impl IntoIterator<Item = &'a [TokenId]>,
        vocab_size: u32,
        tokenizer_hash: u64,
    ) -> Result<Self, Error> {
        check_vocab_size(vocab_size)?;
        let mut text = Vec::new();
        let mut n_docs = 0u32;
        for doc in docs {
            for &t in doc {
                check_token(t, vocab_size)?;
            }
            text.extend_from_slice(doc);
            text.push(SEPARATOR);
            n_docs = n_docs.checked_add(1).ok_or(Error::Config {
                what: "more than 2^32 documents",
            })?;
        }
        check_corpus_len(text.len() as u64)?;
        Self::from_text(text, vocab_size, n_docs, tokenizer_hash)
    }

    /// Builds from a validated text (documents each ended by `SEPARATOR`, at most
    /// [`MAX_CORPUS_TOKENS`] tokens).
    pub(crate) fn from_text(
        text: Vec<TokenId>,
        vocab_size: u32,
        n_docs: u32,
        tokenizer_hash: u64,
    ) -> Result<Self, Error> {
        let mut sam = SuffixAutomaton::with_capacity(text.len());
        for &t in &text {
            sam.extend(t)?;
        }
        let counts = sam.occurrence_counts();
        Ok(Self {
            sam,
            text,
            counts,
            vocab_size,
            n_docs,
            tokenizer_hash,
        })
    }

    /// The corpus text, documents each followed by [`SEPARATOR`].
    pub fn text(&self) -> &[TokenId] {
        &self.text
    }

    /// Vocabulary size of the tokenizer that made the corpus.
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// Number of documents.
    pub fn n_docs(&self) -> u32 {
        self.n_docs
    }

    /// Fingerprint of the tokenizer that made the corpus.
    pub fn tokenizer_hash(&self) -> u64 {
        self.tokenizer_hash
    }

    /// The automaton, for inspection.
    pub fn automaton(&self) -> &SuffixAutomaton {
        &self.sam
    }

    /// The match state of an empty text.
    pub fn matcher_start(&self) -> Matcher {
        Matcher::new()
    }

    /// The match state after following `tokens` from `m`.
    pub fn follow(&self, mut m: Matcher, tokens: &[TokenId]) -> Matcher {
        for &t in tokens {
            m.advance(&self.sam, t);
        }
        m
    }

    /// Moves `m` by one token of the live text.
    #[inline]
    pub fn advance(&self, m: &mut Matcher, token: TokenId) {
        m.advance(&self.sam, token);
    }

    /// The chain draft of up to `want` tokens after the first occurrence of `m`'s match,
    /// stopping at the end of its document.
    pub fn chain(&self, m: Matcher, want: usize) -> Option<ChainSource> {
        chain_source(&self.sam, m, want, |start| {
            self.text
                .get(start..)
                .unwrap_or_default()
                .iter()
                .take(want)
                .take_while(|&&t| t != SEPARATOR)
                .count()
        })
    }

    /// The drafted tokens of `chain`.
    pub fn tokens(&self, chain: ChainSource) -> &[TokenId] {
        &self.text[chain.start..chain.start + chain.len]
    }

    /// Drafts a tree below `tree`'s node `at`, best-first by estimated path probability:
    /// a child's weight is `count(child) / count(parent)`, where count is the number of
    /// end positions, so frequent continuations in the corpus come first.
    pub fn tree(&self, m: Matcher, shape: TreeShape, tree: &mut DraftTree, at: usize) {
        if m.is_empty() {
            return;
        }
        let mut per_depth = vec![0usize; shape.max_depth + 1];
        let mut heap = BinaryHeap::new();
        self.push_children(&mut heap, m.state(), at, 1.0, 1, shape);
        while let Some(c) = heap.pop() {
            if tree.len() >= shape.max_nodes {
                break;
            }
            if per_depth[c.depth] >= shape.per_depth {
                continue;
            }
            per_depth[c.depth] += 1;
            let node = tree.push(c.parent, c.token, Source::StaticSam);
            self.push_children(&mut heap, c.state, node, c.weight, c.depth + 1, shape);
        }
    }

    fn push_children(
        &self,
        heap: &mut BinaryHeap<Candidate>,
        state: StateId,
        parent: usize,
        weight: f64,
        depth: usize,
        shape: TreeShape,
    ) {
        if depth > shape.max_depth || shape.per_depth == 0 {
            return;
        }
        // No node can use more than `per_depth` of its children, so keep only the most
        // frequent ones: states near the root can have thousands of edges, and pushing
        // them all would cost far more than the rest of the draft.
        let keep = shape.per_depth;
        let mut best: Vec<(u32, TokenId, StateId)> = Vec::with_capacity(keep + 1);
        for (token, child) in self.sam.edges(state) {
            let count = self.counts[child as usize];
            if token == SEPARATOR || best.len() == keep && best[keep - 1].0 >= count {
                continue;
            }
            let at = best.partition_point(|b| b.0 >= count);
            best.insert(at, (count, token, child));
            best.truncate(keep);
        }
        let total = f64::from(self.counts[state as usize]);
        for (count, token, child) in best {
            heap.push(Candidate {
                weight: weight * f64::from(count) / total,
                parent,
                token,
                state: child,
                depth,
            });
        }
    }
}

/// Refuses a corpus of more than [`MAX_CORPUS_TOKENS`] tokens.
pub(crate) fn check_corpus_len(len: u64) -> Result<(), Error> {
    if len > MAX_CORPUS_TOKENS as u64 {
        return Err(Error::TextTooLong {
            len,
            max: MAX_CORPUS_TOKENS as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn corpus(docs: &[Vec<TokenId>]) -> StaticSam {
        StaticSam::build(docs.iter().map(Vec::as_slice), 100, 7).unwrap()
    }

    /// Brute force: the longest suffix of `live` found in some document.
    fn brute_static_match(docs: &[Vec<TokenId>], live: &[TokenId]) -> usize {
        (0..=live.len())
            .rev()
            .find(|&l| {
                let s = &live[live.len() - l..];
                l == 0 || docs.iter().any(|d| d.windows(l).any(|w| w == s))
            })
            .unwrap_or(0)
    }

    proptest! {
        #[test]
        fn static_match_is_longest_suffix_in_a_document(
            docs in prop::collection::vec(prop::collection::vec(0u32..4, 0..30), 1..5),
            live in prop::collection::vec(0u32..4, 0..40),
        ) {
            let c = corpus(&docs);
            let mut m = c.matcher_start();
            for i in 0..live.len() {
                c.advance(&mut m, live[i]);
                prop_assert_eq!(m.len() as usize, brute_static_match(&docs, &live[..=i]));
                if let Some(chain) = c.chain(m, 5) {
                    prop_assert!(!c.tokens(chain).contains(&SEPARATOR));
                }
            }
        }
    }

    #[test]
    fn tree_prefers_frequent_continuations() {
        let docs = vec![vec![1, 2, 3], vec![1, 2, 3], vec![1, 2, 4], vec![1, 5]];
        let c = corpus(&docs);
        let m = c.follow(c.matcher_start(), &[1]);
        let mut tree = DraftTree::new(1);
        c.tree(m, TreeShape::default(), &mut tree, 0);
        // Depth 1: "2" (3 of 4) before "5" (1 of 4); depth 2 under "2": "3" before "4".
        let two = tree.child(0, 2).unwrap();
        assert!(tree.child(0, 5).is_some());
        let three = tree.child(two, 3).unwrap();
        let four = tree.child(two, 4).unwrap();
        assert!(three < four);
        assert!(tree.tokens().iter().all(|&t| t != SEPARATOR));
        assert_eq!(tree.len(), 5);
    }

    #[test]
    fn tree_respects_its_shape() {
        let docs: Vec<Vec<u32>> = (0..50).map(|i| vec![1, i % 7 + 2, i % 3 + 20, 9]).collect();
        let c = corpus(&docs);
        let m = c.follow(c.matcher_start(), &[1]);
        let shape = TreeShape {
            max_nodes: 6,
            per_depth: 3,
            max_depth: 2,
        };
        let mut tree = DraftTree::new(1);
        c.tree(m, shape, &mut tree, 0);
        assert_eq!(tree.len(), 6);
        assert!(tree.max_depth() <= 2);
        assert!(tree.depths().iter().filter(|&&d| d == 1).count() <= 3);
    }

    #[test]
    fn out_of_vocab_document_is_rejected() {
        let docs: [&[u32]; 1] = [&[1, 100]];
        assert_eq!(
            StaticSam::build(docs, 100, 0).unwrap_err(),
            Error::TokenOutOfVocab {
                token: 100,
                vocab_size: 100
            }
        );
    }
}
