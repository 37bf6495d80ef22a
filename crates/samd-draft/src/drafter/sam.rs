//! The SAM drafter: the paper's adaptive choice between the dynamic automaton, the static
//! one and an auxiliary drafter (Token Recycling).
//!
//! Per step (SAM Decoding, §3.3): the static match length is discounted by `len_bias`,
//! because a corpus match may predict this request's text less well than the request
//! itself. Each automaton whose (discounted) match reaches `threshold` drafts, the longer
//! match first (the dynamic automaton wins ties): a chain of `min(max_chain, 1 +
//! chain_per_match · match_len)` tokens, or for the static one with `static_tree` a tree;
//! with no draft from either, the auxiliary drafter fills its tree.
//!
//! Beyond the paper, measured by replay on the Spec-Bench dev traces:
//! - with `aux_beside_chain`, the auxiliary drafter also fills its tree beside the
//!   chains, merged where they agree: on a GPU a wider tree costs little, and a wrong
//!   chain still leaves the auxiliary drafter's guesses. Then even a one-token match is
//!   worth its chain, so the default threshold is 1, not the paper's 5 (SAM+TR MAT 2.43
//!   against 2.31);
//! - both automata draft, where the paper drafts from the winner alone, and the static
//!   match is not discounted: our corpus is this model's own answers, whose matches
//!   predict as well as the request's (SAM 2.02 against 1.86, SAM+TR 2.57 against 2.47);
//! - the static automaton drafts a tree of the corpus's most frequent continuations
//!   instead of one occurrence's chain: its counts say which continuations are likely
//!   (SAM 2.30 against 2.02, SAM+TR 2.71 against 2.57, for 41 and 78 nodes per step
//!   against 14 and 52);
//! - beside its two chains, the dynamic automaton offers the alternatives: every other
//!   token that followed the match, or one of its two next-shorter suffixes, latest first
//!   (six at most), each with the six tokens after it (SAM 2.36 against 2.30 on the CPU
//!   traces, 2.15 against 2.09 on the H200's, for two more nodes per step).

use std::sync::Arc;

use super::{DraftReport, Drafter, TokenRecycling, check_tokens};
use crate::corpus::{StaticSam, TreeShape};
use crate::dynamic::DynamicSam;
use crate::sam::Matcher;
use crate::tree::{DraftTree, Source};
use crate::{Error, TokenId, check_vocab_size};

/// Settings of [`SamDrafter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamConfig {
    /// Least (discounted) match length that drafts from an automaton.
    pub threshold: u32,
    /// Discount on the static match length.
    pub len_bias: u32,
    /// Longest chain drafted.
    pub max_chain: usize,
    /// Chain tokens per matched token: longer matches earn longer drafts.
    pub chain_per_match: usize,
    /// When set, the static automaton drafts a tree of this shape instead of a chain.
    pub static_tree: Option<TreeShape>,
    /// The auxiliary drafter fills its tree beside an automaton's chain too.
    pub aux_beside_chain: bool,
    /// Alternatives to the dynamic chains' first token, each with the text after its
    /// latest occurrence (0: none).
    pub alternatives: usize,
    /// Tokens in each alternative's chain.
    pub alternative_len: usize,
}

/// How many next-shorter suffixes of the dynamic match also offer alternatives.
const ALTERNATIVE_LEVELS: usize = 2;

impl SamConfig {
    fn chain_len(&self, match_len: u32) -> usize {
        (1 + self.chain_per_match.saturating_mul(match_len as usize)).min(self.max_chain)
    }
}

impl Default for SamConfig {
    /// Any match drafts, the static one undiscounted; the dynamic automaton in chains of
    /// 4 tokens per matched token, at most 32 (longer ones replay no better), the static
    /// one in a tree of its most frequent continuations (`TreeShape::default()`).
    fn default() -> Self {
        Self {
            threshold: 1,
            len_bias: 0,
            max_chain: 32,
            chain_per_match: 4,
            static_tree: Some(TreeShape::default()),
            aux_beside_chain: true,
            alternatives: 6,
            alternative_len: 6,
        }
    }
}

/// Dynamic and static suffix automata, with an optional auxiliary drafter.
///
/// # Example
///
/// ```
/// use samd_draft::Drafter;
/// use samd_draft::drafter::{SamConfig, SamDrafter};
/// use samd_draft::tree::DraftTree;
///
/// let mut sam = SamDrafter::new(SamConfig::default(), 100, None, None).unwrap();
/// sam.commit(&[10, 11, 12, 13, 10, 11]).unwrap();
/// let mut tree = DraftTree::new(0);
/// let report = sam.draft(&mut tree).unwrap();
/// assert_eq!(report.dynamic_match_len, 2);
/// assert_eq!(tree.tokens(), &[11, 12, 13, 10, 11]);
/// ```
#[derive(Debug, Clone)]
pub struct SamDrafter {
    config: SamConfig,
    vocab_size: u32,
    dynamic: DynamicSam,
    corpus: Option<Arc<StaticSam>>,
    corpus_match: Matcher,
    aux: Option<TokenRecycling>,
}

impl SamDrafter {
    /// A drafter for ids below `vocab_size`, over an optional corpus, with an optional
    /// auxiliary drafter. The corpus must come from the same vocabulary.
    pub fn new(
        config: SamConfig,
        vocab_size: u32,
        corpus: Option<Arc<StaticSam>>,
        aux: Option<TokenRecycling>,
    ) -> Result<Self, Error> {
        check_vocab_size(vocab_size)?;
        if corpus
            .as_ref()
            .is_some_and(|c| c.vocab_size() != vocab_size)
        {
            return Err(Error::Config {
                what: "the static corpus was built for another vocabulary size",
            });
        }
        if config.static_tree.is_some_and(|s| s.max_nodes == 0) {
            return Err(Error::Config {
                what: "a static tree needs at least the root",
            });
        }
        Ok(Self {
            config,
            vocab_size,
            dynamic: DynamicSam::new(),
            corpus,
            corpus_match: Matcher::new(),
            aux,
        })
    }

    /// The request's text so far.
    pub fn text(&self) -> &[TokenId] {
        self.dynamic.text()
    }

    /// Drafts from the dynamic automaton; false when it has nothing to offer. The text
    /// after the matched suffix's latest occurrence goes first, then the text after its
    /// first, branching where they differ; then the alternatives, every other token that
    /// followed the match or a slightly shorter suffix of it.
    fn draft_dynamic(&self, tree: &mut DraftTree) -> bool {
        let want = self.config.chain_len(self.dynamic.match_len());
        let chains = [self.dynamic.recent_chain(want), self.dynamic.chain(want)];
        for chain in chains.iter().flatten() {
            tree.push_chain(0, self.dynamic.tokens(*chain), Source::DynamicSam);
        }
        let alternatives = self.dynamic.continuations(
            ALTERNATIVE_LEVELS,
            self.config.alternatives,
            self.config.alternative_len,
        );
        for chain in alternatives {
            tree.push_chain(0, self.dynamic.tokens(chain), Source::DynamicSam);
        }
        chains.iter().any(Option::is_some)
    }

    /// Drafts from the static automaton; false when it has nothing to offer.
    fn draft_static(&self, tree: &mut DraftTree) -> bool {
        let Some(corpus) = &self.corpus else {
            return false;
        };
        if let Some(shape) = self.config.static_tree {
            let before = tree.len();
            corpus.tree(self.corpus_match, shape, tree, 0);
            return tree.len() > before;
        }
        let want = self.config.chain_len(self.corpus_match.len());
        match corpus.chain(self.corpus_match, want) {
            Some(chain) => {
                tree.push_chain(0, corpus.tokens(chain), Source::StaticSam);
                true
            }
            None => false,
        }
    }
}

impl Drafter for SamDrafter {
    fn name(&self) -> &'static str {
        if self.aux.is_some() { "sam+tr" } else { "sam" }
    }

    fn reset(&mut self) {
        self.dynamic.clear();
        self.corpus_match = Matcher::new();
        if let Some(aux) = &mut self.aux {
            aux.reset();
        }
    }

    fn commit(&mut self, tokens: &[TokenId]) -> Result<(), Error> {
        check_tokens(tokens, self.vocab_size)?;
        for &t in tokens {
            self.dynamic.push(t)?;
            if let Some(corpus) = &self.corpus {
                corpus.advance(&mut self.corpus_match, t);
            }
        }
        if let Some(aux) = &mut self.aux {
            aux.commit(tokens)?;
        }
        Ok(())
    }

    fn reserve(&mut self, additional: usize) {
        self.dynamic.reserve(additional);
    }

    fn draft(&mut self, tree: &mut DraftTree) -> Result<DraftReport, Error> {
        let &root = self.dynamic.text().last().ok_or(Error::EmptyText)?;
        tree.reset(root);
        let dynamic_len = self.dynamic.match_len();
        let static_len = self.corpus_match.len();
        let discounted = static_len.saturating_sub(self.config.len_bias);
        let mut report = DraftReport {
            dynamic_match_len: dynamic_len,
            static_match_len: static_len,
            source: None,
        };
        let threshold = self.config.threshold.max(1);
        // Both automata draft where they match, the longer match first: where their
        // chains agree they merge, and where they differ each is a branch.
        let order = if dynamic_len >= discounted {
            [Source::DynamicSam, Source::StaticSam]
        } else {
            [Source::StaticSam, Source::DynamicSam]
        };
        for source in order {
            let drafted = match source {
                Source::DynamicSam => dynamic_len >= threshold && self.draft_dynamic(tree),
                _ => discounted >= threshold && self.draft_static(tree),
            };
            if drafted {
                report.source.get_or_insert(source);
            }
        }
        match (&self.aux, report.source) {
            (Some(aux), Some(_)) if self.config.aux_beside_chain => aux.fill(tree, 0),
            (Some(aux), None) => {
                aux.fill(tree, 0);
                report.source = (tree.len() > 1).then_some(Source::Recycling);
            }
            _ => {}
        }
        Ok(report)
    }

    fn top_k(&self) -> usize {
        self.aux.as_ref().map_or(0, Drafter::top_k)
    }

    fn observe(
        &mut self,
        tokens: &[TokenId],
        preceding: &[TokenId],
        top_k: &[TokenId],
    ) -> Result<(), Error> {
        match &mut self.aux {
            Some(aux) => aux.observe(tokens, preceding, top_k),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drafter::{NO_PRECEDING, RecyclingConfig};

    fn corpus() -> Arc<StaticSam> {
        let docs: [&[u32]; 2] = [&[1, 2, 3, 4, 5, 6, 7, 8, 9], &[20, 21, 22]];
        Arc::new(StaticSam::build(docs, 100, 0).unwrap())
    }

    #[test]
    fn both_automata_draft_the_longer_discounted_match_first() {
        let draft = |len_bias| {
            let config = SamConfig {
                len_bias,
                ..SamConfig::default()
            };
            let mut d = SamDrafter::new(config, 100, Some(corpus()), None).unwrap();
            // Static match "1 2 3 4 5 6" (6), then 7; dynamic match "5 6" (2), then 0.
            d.commit(&[5, 6, 0, 1, 2, 3, 4, 5, 6]).unwrap();
            let mut tree = DraftTree::new(0);
            let report = d.draft(&mut tree).unwrap();
            assert_eq!((report.dynamic_match_len, report.static_match_len), (2, 6));
            let first_children: Vec<u32> = tree.children(0).map(|c| tree.tokens()[c]).collect();
            (report.source, first_children)
        };
        // Discounted to 1, the static match loses to the dynamic one but still drafts.
        // (Children are listed newest first.)
        assert_eq!(draft(5), (Some(Source::DynamicSam), vec![7, 0]));
        assert_eq!(draft(0), (Some(Source::StaticSam), vec![0, 7]));
        // Discounted to nothing, it does not draft.
        assert_eq!(draft(6), (Some(Source::DynamicSam), vec![0]));
    }

    #[test]
    fn a_long_static_match_drafts_from_the_corpus() {
        let config = SamConfig {
            len_bias: 0,
            ..SamConfig::default()
        };
        let mut d = SamDrafter::new(config, 100, Some(corpus()), None).unwrap();
        d.commit(&[50, 2, 3, 4]).unwrap();
        let mut tree = DraftTree::new(0);
        let report = d.draft(&mut tree).unwrap();
        assert_eq!(report.source, Some(Source::StaticSam));
        assert_eq!(tree.tokens(), &[4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn below_threshold_falls_back_to_recycling() {
        let tr = TokenRecycling::new(RecyclingConfig::default(), 100).unwrap();
        // The static match of "3" (1) is discounted below the threshold.
        let config = SamConfig {
            len_bias: 1,
            ..SamConfig::default()
        };
        let mut d = SamDrafter::new(config, 100, Some(corpus()), Some(tr)).unwrap();
        d.observe(&[3], &[NO_PRECEDING], &[30, 31, 32, 33, 34, 35, 36, 37])
            .unwrap();
        d.commit(&[40, 41, 3]).unwrap();
        let mut tree = DraftTree::new(0);
        let report = d.draft(&mut tree).unwrap();
        assert_eq!(report.source, Some(Source::Recycling));
        assert_eq!(tree.len(), 9);
        // A reset keeps what recycling learned.
        d.reset();
        d.commit(&[3]).unwrap();
        d.draft(&mut tree).unwrap();
        assert_eq!(tree.len(), 9);
    }

    #[test]
    fn foreign_corpus_is_rejected() {
        let err = SamDrafter::new(SamConfig::default(), 99, Some(corpus()), None).unwrap_err();
        assert!(matches!(err, Error::Config { .. }));
    }

    #[test]
    fn bad_ids_change_nothing() {
        let mut d = SamDrafter::new(SamConfig::default(), 100, None, None).unwrap();
        d.commit(&[1, 2]).unwrap();
        assert!(d.commit(&[3, 100]).is_err());
        assert_eq!(d.text(), &[1, 2]);
    }
}
