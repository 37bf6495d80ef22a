//! The dynamic suffix automaton: one per request, over the prompt and everything accepted.
//!
//! It is matched and then extended with each committed token, so the match is always the
//! longest suffix of the text that occurred *earlier* in it, and its first occurrence is
//! followed by at least one token that can be drafted.

use crate::sam::{ChainSource, Matcher, SuffixAutomaton, chain_source};
use crate::{Error, TokenId};

/// A suffix automaton over a growing text, with the text's own match state.
///
/// # Example
///
/// ```
/// use samd_draft::dynamic::DynamicSam;
///
/// let mut sam = DynamicSam::new();
/// for &t in &[1, 2, 3, 4, 1, 2] {
///     sam.push(t).unwrap();
/// }
/// let chain = sam.chain(3).unwrap();
/// assert_eq!(chain.match_len, 2);
/// assert_eq!(sam.tokens(chain), &[3, 4, 1]);
/// ```
#[derive(Debug, Clone)]
pub struct DynamicSam {
    sam: SuffixAutomaton,
    text: Vec<TokenId>,
    matcher: Matcher,
}

impl Default for DynamicSam {
    fn default() -> Self {
        Self {
            sam: SuffixAutomaton::tracking_recent(),
            text: Vec::new(),
            matcher: Matcher::new(),
        }
    }
}

impl DynamicSam {
    /// An empty automaton.
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the text, for the next request.
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// Makes room for `additional` more tokens, so that the next ones reallocate nothing.
    pub fn reserve(&mut self, additional: usize) {
        self.sam.reserve(additional);
        self.text.reserve(additional);
    }

    /// Appends one token: matches it against the text so far, then extends.
    pub fn push(&mut self, token: TokenId) -> Result<(), Error> {
        let mut matcher = self.matcher;
        matcher.advance(&self.sam, token);
        self.sam.extend(token)?;
        self.text.push(token);
        matcher.settle(&self.sam);
        self.matcher = matcher;
        Ok(())
    }

    /// The text so far.
    pub fn text(&self) -> &[TokenId] {
        &self.text
    }

    /// Length of the longest suffix of the text that occurred earlier in it.
    pub fn match_len(&self) -> u32 {
        self.matcher.len()
    }

    /// The automaton, for inspection.
    pub fn automaton(&self) -> &SuffixAutomaton {
        &self.sam
    }

    /// The chain draft of up to `want` tokens: the text after the first earlier
    /// occurrence of the matched suffix. `None` when nothing matches.
    pub fn chain(&self, want: usize) -> Option<ChainSource> {
        let text_len = self.text.len();
        chain_source(&self.sam, self.matcher, want, |start| {
            text_len.saturating_sub(start)
        })
    }

    /// The chain draft of up to `want` tokens after the *latest* earlier occurrence of
    /// the matched suffix: recent text predicts the next tokens better than old text.
    /// `None` when nothing matches.
    pub fn recent_chain(&self, want: usize) -> Option<ChainSource> {
        if self.matcher.is_empty() {
            return None;
        }
        let start = self.sam.recent_endpos(self.matcher.state())? as usize + 1;
        let len = self.text.len().saturating_sub(start).min(want);
        (len > 0).then_some(ChainSource {
            start,
            len,
            match_len: self.matcher.len(),
        })
    }

    /// Up to `max` chains of up to `want` tokens, one for each token that followed the
    /// matched suffix earlier, or followed one of its `levels` next-shorter suffixes (down
    /// the suffix links): the text from that token's latest occurrence on, the latest
    /// first. They are the alternatives to a chain's first token.
    pub fn continuations(&self, levels: usize, max: usize, want: usize) -> Vec<ChainSource> {
        let mut found: Vec<(TokenId, ChainSource)> = Vec::new();
        let mut state = (!self.matcher.is_empty()).then(|| self.matcher.state());
        for _ in 0..=levels {
            let Some(s) = state else { break };
            for (token, target) in self.sam.edges(s) {
                let Some(end) = self.sam.recent_endpos(target) else {
                    continue;
                };
                if found.iter().all(|&(t, _)| t != token) {
                    let start = end as usize;
                    found.push((
                        token,
                        ChainSource {
                            start,
                            len: (self.text.len() - start).min(want),
                            match_len: self.sam.state_len(s),
                        },
                    ));
                }
            }
            state = self.sam.link(s).filter(|&l| self.sam.state_len(l) > 0);
        }
        found.sort_by_key(|&(_, c)| std::cmp::Reverse(c.start));
        found.into_iter().take(max).map(|(_, c)| c).collect()
    }

    /// The drafted tokens of `chain`.
    pub fn tokens(&self, chain: ChainSource) -> &[TokenId] {
        &self.text[chain.start..chain.start + chain.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Brute force: the longest suffix of `text` that also ends earlier.
    fn brute_match_len(text: &[TokenId]) -> usize {
        let n = text.len();
        (1..n)
            .rev()
            .find(|&l| {
                let suffix = &text[n - l..];
                (l..n).any(|end| &text[end - l..end] == suffix)
            })
            .unwrap_or(0)
    }

    /// Brute force of [`chain_source`]: per suffix length, the first occurrence's end.
    fn brute_chain(text: &[TokenId], want: usize) -> Vec<TokenId> {
        let n = text.len();
        let longest = brute_match_len(text);
        let mut best: Option<(usize, usize)> = None; // (start, len)
        for l in (1..=longest).rev() {
            let suffix = &text[n - l..];
            let end = (l..n).find(|&e| &text[e - l..e] == suffix).unwrap();
            let len = (n - end).min(want);
            if best.is_none_or(|(_, b)| len > b) {
                best = Some((end, len));
            }
            if len >= want {
                break;
            }
        }
        best.map(|(s, l)| text[s..s + l].to_vec())
            .unwrap_or_default()
    }

    /// Brute force of [`DynamicSam::recent_chain`]: the text after the latest earlier
    /// occurrence of the longest matched suffix.
    fn brute_recent_chain(text: &[TokenId], want: usize) -> Vec<TokenId> {
        let (n, l) = (text.len(), brute_match_len(text));
        if l == 0 {
            return Vec::new();
        }
        let suffix = &text[n - l..];
        let end = (l..n).rev().find(|&e| &text[e - l..e] == suffix).unwrap();
        text[end..n.min(end + want)].to_vec()
    }

    fn check(text: &[TokenId], want: usize) -> Result<(), TestCaseError> {
        let mut sam = DynamicSam::new();
        for (i, &t) in text.iter().enumerate() {
            sam.push(t).unwrap();
            let prefix = &text[..=i];
            prop_assert_eq!(sam.match_len() as usize, brute_match_len(prefix));
            let got = sam.chain(want).map(|c| sam.tokens(c).to_vec());
            prop_assert_eq!(got.unwrap_or_default(), brute_chain(prefix, want));
            let recent = sam.recent_chain(want).map(|c| sam.tokens(c).to_vec());
            prop_assert_eq!(recent.unwrap_or_default(), brute_recent_chain(prefix, want));
        }
        sam.automaton().validate();
        Ok(())
    }

    proptest! {
        #[test]
        fn matches_brute_force_small_alphabet(
            text in prop::collection::vec(0u32..3, 0..120),
            want in 1usize..12,
        ) {
            check(&text, want)?;
        }

        #[test]
        fn matches_brute_force_large_alphabet(
            text in prop::collection::vec(0u32..50_000, 0..120),
            want in 1usize..12,
        ) {
            check(&text, want)?;
        }

        #[test]
        fn matches_brute_force_repetitive(
            unit in prop::collection::vec(0u32..6, 1..6),
            reps in 1usize..8,
            noise in prop::collection::vec(0u32..6, 0..10),
            want in 1usize..12,
        ) {
            let mut text: Vec<u32> = unit.iter().copied().cycle().take(unit.len() * reps).collect();
            text.extend(noise);
            check(&text, want)?;
        }
    }

    #[test]
    fn empty_text_has_no_draft() {
        let sam = DynamicSam::new();
        assert_eq!(sam.match_len(), 0);
        assert!(sam.chain(5).is_none());
        assert!(sam.recent_chain(5).is_none());
    }

    #[test]
    fn the_recent_chain_follows_the_latest_occurrence() {
        let mut sam = DynamicSam::new();
        for t in [1, 2, 3, 9, 1, 2, 4, 7, 1, 2] {
            sam.push(t).unwrap();
        }
        let first = sam.chain(3).unwrap();
        let recent = sam.recent_chain(3).unwrap();
        assert_eq!(sam.tokens(first), &[3, 9, 1]);
        assert_eq!(sam.tokens(recent), &[4, 7, 1]);
        assert_eq!(recent.match_len, 2);
    }

    #[test]
    fn continuations_offer_every_earlier_follower_latest_first() {
        let mut sam = DynamicSam::new();
        // "1 2" was followed by 3, then 4; the shorter suffix "2" also by 5.
        for t in [1, 2, 3, 9, 2, 5, 9, 1, 2, 4, 8, 1, 2] {
            sam.push(t).unwrap();
        }
        let chains = |levels, max| -> Vec<Vec<u32>> {
            sam.continuations(levels, max, 3)
                .into_iter()
                .map(|c| sam.tokens(c).to_vec())
                .collect()
        };
        assert_eq!(chains(0, 8), [vec![4, 8, 1], vec![3, 9, 2]]);
        assert_eq!(chains(1, 8), [vec![4, 8, 1], vec![5, 9, 1], vec![3, 9, 2]]);
        assert_eq!(chains(1, 1), [vec![4, 8, 1]]);
        assert!(DynamicSam::new().continuations(2, 8, 3).is_empty());
    }

    #[test]
    fn draft_longer_than_the_text_is_truncated() {
        let mut sam = DynamicSam::new();
        for t in [1, 2, 1] {
            sam.push(t).unwrap();
        }
        let chain = sam.chain(100).unwrap();
        assert_eq!(sam.tokens(chain), &[2, 1]);
    }
}
