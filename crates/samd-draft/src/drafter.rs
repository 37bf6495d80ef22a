//! The [`Drafter`] trait and its implementations.
//!
//! The decode loop drives every drafter the same way:
//!
//! 1. `commit(prompt)` once, then `commit(accepted + bonus)` after every step: the text
//!    the drafter sees is exactly the tokens known to be right, the last of which is the
//!    root of the next tree;
//! 2. `draft(&mut tree)` before each verification;
//! 3. `observe(tokens, preceding, top_k)` with the model's top-k successors of verified
//!    nodes and the token before each, for drafters that learn from the model (Token
//!    Recycling).

mod lookup;
mod recycling;
mod sam;

pub use lookup::{LookupConfig, PromptLookup};
pub use recycling::{RecyclingConfig, TokenRecycling};
pub use sam::{SamConfig, SamDrafter};

use crate::tree::{DraftTree, Source};
use crate::{Error, TokenId, check_token};

/// In [`Drafter::observe`]'s `preceding`: the node is the first token of its text.
pub const NO_PRECEDING: TokenId = u32::MAX;

/// What a draft rested on, for the demo's per-step display and the stats.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DraftReport {
    /// Match length in the dynamic automaton (0 when the drafter has none).
    pub dynamic_match_len: u32,
    /// Match length in the static automaton, before the `len_bias` discount.
    pub static_match_len: u32,
    /// Which source drafted the tree's first level, `None` for a root-only tree.
    pub source: Option<Source>,
}

/// A source of draft trees.
pub trait Drafter {
    /// A short name for reports and logs.
    fn name(&self) -> &'static str;

    /// Forgets the current request's text. What was learned from the model stays.
    fn reset(&mut self);

    /// Appends tokens known to be right. Checks every id before changing anything, so a
    /// bad id leaves the drafter as it was.
    fn commit(&mut self, tokens: &[TokenId]) -> Result<(), Error>;

    /// Makes room for `additional` more committed tokens (the prompt plus the token
    /// budget), so that no step pays for a reallocation.
    fn reserve(&mut self, additional: usize) {
        let _ = additional;
    }

    /// Fills `tree` with a draft rooted at the last committed token.
    fn draft(&mut self, tree: &mut DraftTree) -> Result<DraftReport, Error>;

    /// How many successors per verified node [`Drafter::observe`] wants (0: none).
    fn top_k(&self) -> usize {
        0
    }

    /// Whether the prefill must pass [`Drafter::observe`] the top-k of every prompt
    /// position. A decode loop may pass only the prompt's last positions, where each row
    /// costs (Token Recycling learns most from the prompt's end); a recorder of whole
    /// traces needs them all.
    fn observes_whole_prompt(&self) -> bool {
        false
    }

    /// Learns from verification: `top_k[i * k .. (i + 1) * k]` are the model's top-k
    /// next tokens after node `tokens[i]`, best first, and `preceding[i]` is the token
    /// before that node (its parent's, or [`NO_PRECEDING`]).
    fn observe(
        &mut self,
        tokens: &[TokenId],
        preceding: &[TokenId],
        top_k: &[TokenId],
    ) -> Result<(), Error> {
        let _ = (tokens, preceding, top_k);
        Ok(())
    }
}

/// Checks a whole batch of ids before any is used.
pub(crate) fn check_tokens(tokens: &[TokenId], vocab_size: u32) -> Result<(), Error> {
    tokens.iter().try_for_each(|&t| check_token(t, vocab_size))
}
