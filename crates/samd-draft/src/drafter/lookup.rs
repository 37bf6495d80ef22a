//! Prompt lookup decoding (PLD): the n-gram drafter HF transformers ships as
//! `prompt_lookup_num_tokens`, kept as the peer baseline.
//!
//! For n from `max_ngram` down to `min_ngram`, the last n tokens are searched for in the
//! earlier text, and the tokens after the earliest match are the draft. The search is a
//! naive scan, O(text) per step, as in HF; the suffix automata do the same job in O(1).

use super::{DraftReport, Drafter, check_tokens};
use crate::tree::{DraftTree, Source};
use crate::{Error, TokenId, check_vocab_size};

/// Settings of [`PromptLookup`], with HF's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupConfig {
    /// Longest n-gram tried.
    pub max_ngram: usize,
    /// Shortest n-gram tried.
    pub min_ngram: usize,
    /// Tokens drafted after a match (HF's `prompt_lookup_num_tokens`).
    pub num_tokens: usize,
}

impl Default for LookupConfig {
    fn default() -> Self {
        Self {
            max_ngram: 3,
            min_ngram: 1,
            num_tokens: 10,
        }
    }
}

/// The prompt-lookup drafter.
///
/// # Example
///
/// ```
/// use samd_draft::Drafter;
/// use samd_draft::drafter::{LookupConfig, PromptLookup};
/// use samd_draft::tree::DraftTree;
///
/// let mut pld = PromptLookup::new(LookupConfig::default(), 100).unwrap();
/// pld.commit(&[5, 6, 7, 8, 9, 6, 7]).unwrap();
/// let mut tree = DraftTree::new(0);
/// pld.draft(&mut tree).unwrap();
/// assert_eq!(tree.tokens(), &[7, 8, 9, 6, 7]);
/// ```
#[derive(Debug, Clone)]
pub struct PromptLookup {
    config: LookupConfig,
    vocab_size: u32,
    text: Vec<TokenId>,
}

impl PromptLookup {
    /// A drafter for ids below `vocab_size`.
    pub fn new(config: LookupConfig, vocab_size: u32) -> Result<Self, Error> {
        check_vocab_size(vocab_size)?;
        if config.min_ngram == 0 || config.min_ngram > config.max_ngram {
            return Err(Error::Config {
                what: "n-gram sizes must satisfy 1 <= min_ngram <= max_ngram",
            });
        }
        Ok(Self {
            config,
            vocab_size,
            text: Vec::new(),
        })
    }

    /// The draft after the earliest match of the longest matching n-gram, as HF does it.
    fn lookup(&self) -> &[TokenId] {
        let text = &self.text;
        let n = text.len();
        for size in (self.config.min_ngram..=self.config.max_ngram).rev() {
            if size >= n {
                continue;
            }
            let pattern = &text[n - size..];
            // Windows ending before the last token: each has at least one token after it.
            if let Some(start) = text[..n - 1].windows(size).position(|w| w == pattern) {
                let from = start + size;
                let to = (from + self.config.num_tokens).min(n);
                return &text[from..to];
            }
        }
        &[]
    }
}

impl Drafter for PromptLookup {
    fn name(&self) -> &'static str {
        "pld"
    }

    fn reset(&mut self) {
        self.text.clear();
    }

    fn commit(&mut self, tokens: &[TokenId]) -> Result<(), Error> {
        check_tokens(tokens, self.vocab_size)?;
        self.text.extend_from_slice(tokens);
        Ok(())
    }

    fn reserve(&mut self, additional: usize) {
        self.text.reserve(additional);
    }

    fn draft(&mut self, tree: &mut DraftTree) -> Result<DraftReport, Error> {
        let &root = self.text.last().ok_or(Error::EmptyText)?;
        tree.reset(root);
        let draft = self.lookup();
        tree.push_chain(0, draft, Source::Lookup);
        Ok(DraftReport {
            source: (!draft.is_empty()).then_some(Source::Lookup),
            ..DraftReport::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(text: &[TokenId]) -> Vec<TokenId> {
        let mut pld = PromptLookup::new(LookupConfig::default(), 100).unwrap();
        pld.commit(text).unwrap();
        let mut tree = DraftTree::new(0);
        pld.draft(&mut tree).unwrap();
        tree.tokens()[1..].to_vec()
    }

    #[test]
    fn prefers_the_longest_ngram_then_the_earliest_match() {
        // "2 3" occurs at 1 and 5; the trigram "1 2 3" only at 0.
        assert_eq!(
            draft(&[1, 2, 3, 4, 9, 2, 3, 5, 1, 2, 3]),
            vec![4, 9, 2, 3, 5, 1, 2, 3]
        );
        // Only the unigram "3" matches; the earliest occurrence wins.
        assert_eq!(draft(&[3, 7, 0, 3, 8, 3]), vec![7, 0, 3, 8, 3]);
    }

    #[test]
    fn caps_the_draft_length() {
        let text: Vec<u32> = (0..30).chain(0..3).collect();
        assert_eq!(draft(&text), (3..13).collect::<Vec<_>>());
    }

    #[test]
    fn no_match_gives_a_root_only_tree() {
        assert!(draft(&[1, 2, 3]).is_empty());
    }

    #[test]
    fn bad_input_is_rejected_without_change() {
        let mut pld = PromptLookup::new(LookupConfig::default(), 10).unwrap();
        assert!(pld.commit(&[1, 10]).is_err());
        let mut tree = DraftTree::new(0);
        assert_eq!(pld.draft(&mut tree), Err(Error::EmptyText));
        let bad = LookupConfig {
            min_ngram: 0,
            ..LookupConfig::default()
        };
        assert!(PromptLookup::new(bad, 10).is_err());
    }
}
