//! The suffix automaton over token ids, and the match state that follows a text through it.
//!
//! A suffix automaton is the smallest DFA accepting every substring of its text. Each
//! state is an end-position class: the strings it accepts all end at the same positions.
//! Extension by one token is the classic online construction (Blumer et al. 1985) with the
//! clone step, giving at most `2n` states and `3n` transitions in amortised O(1) per token.
//!
//! Transitions live in one hash map keyed by `(state, token)` rather than per-state maps:
//! the vocabulary is large (49,152 for SmolLM2) and most states have one or two edges,
//! so per-state tables would waste memory and allocations. A per-state singly linked edge
//! list sits beside the map, because cloning a state and drafting a tree need to
//! enumerate a state's edges.
//!
//! See DESIGN.md ("Suffix automaton") and the SAM Decoding paper (arXiv 2411.10666).

use std::collections::HashMap;

use crate::TokenId;
use crate::hash::BuildKeyHasher;

/// Index of a state. The root is state 0.
pub type StateId = u32;

/// The root state: the empty string, which ends everywhere.
pub const ROOT: StateId = 0;

/// Marks "no state" (the root's suffix link) and "no edge" (the end of an edge list).
const NONE: u32 = u32::MAX;

/// The most tokens one automaton holds: state and edge ids are `u32`, and a text of `n`
/// tokens can need `2n` states and `3n` edges.
pub const MAX_TEXT_LEN: u64 = (u32::MAX / 4) as u64;

/// One outgoing edge in a state's edge list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Edge {
    token: TokenId,
    /// The next edge of the same state, or `NONE`.
    next: u32,
}

/// A suffix automaton, extended online one token at a time.
///
/// # Example
///
/// ```
/// use samd_draft::sam::{Matcher, SuffixAutomaton};
///
/// let mut sam = SuffixAutomaton::new();
/// for &t in &[1, 2, 3, 1, 2] {
///     sam.extend(t).unwrap();
/// }
/// let mut m = Matcher::new();
/// for &t in &[9, 1, 2] {
///     m.advance(&sam, t);
/// }
/// assert_eq!(m.len(), 2); // "1 2" occurs in the text
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuffixAutomaton {
    /// Longest string of each state. Invariant: `len[link[s]] < len[s]`.
    len: Vec<u32>,
    /// Suffix link: the state of the longest suffix in another class. `NONE` for the root.
    link: Vec<u32>,
    /// End position (index of the last token) of the first occurrence of the state's
    /// strings. Unused for the root.
    first_endpos: Vec<u32>,
    /// Whether the state was created for a new position (not a clone). Non-clones each
    /// contribute one end position when counting occurrences.
    is_primary: Vec<bool>,
    /// Head of each state's edge list, or `NONE`.
    first_edge: Vec<u32>,
    /// Edge list nodes, shared by all states.
    edges: Vec<Edge>,
    /// `(state << 32) | token` → target state.
    next: HashMap<u64, StateId, BuildKeyHasher>,
    /// The state of the whole text.
    last: StateId,
    /// Tokens added so far.
    text_len: u32,
}

impl Default for SuffixAutomaton {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn key(state: StateId, token: TokenId) -> u64 {
    (u64::from(state) << 32) | u64::from(token)
}

impl SuffixAutomaton {
    /// An automaton of the empty text.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An automaton with room for a text of `text_len` tokens without reallocating.
    pub fn with_capacity(text_len: usize) -> Self {
        let states = text_len.saturating_mul(2).saturating_add(1);
        let edges = text_len.saturating_mul(3);
        let mut sam = Self {
            len: Vec::with_capacity(states),
            link: Vec::with_capacity(states),
            first_endpos: Vec::with_capacity(states),
            is_primary: Vec::with_capacity(states),
            first_edge: Vec::with_capacity(states),
            edges: Vec::with_capacity(edges),
            next: HashMap::with_capacity_and_hasher(edges, BuildKeyHasher::default()),
            last: ROOT,
            text_len: 0,
        };
        sam.push_state(0, NONE, 0, false);
        sam
    }

    /// Tokens added so far.
    pub fn text_len(&self) -> usize {
        self.text_len as usize
    }

    /// Number of states, the root included.
    pub fn n_states(&self) -> usize {
        self.len.len()
    }

    /// Number of transitions.
    pub fn n_transitions(&self) -> usize {
        self.edges.len()
    }

    /// Length of the longest string in `state`.
    #[inline]
    pub fn state_len(&self, state: StateId) -> u32 {
        self.len[state as usize]
    }

    /// Suffix link of `state`, or `None` for the root.
    #[inline]
    pub fn link(&self, state: StateId) -> Option<StateId> {
        let l = self.link[state as usize];
        (l != NONE).then_some(l)
    }

    /// End position (token index) of the first occurrence of `state`'s strings.
    #[inline]
    pub fn first_endpos(&self, state: StateId) -> u32 {
        self.first_endpos[state as usize]
    }

    /// The state reached from `state` by `token`, if any.
    #[inline]
    pub fn next(&self, state: StateId, token: TokenId) -> Option<StateId> {
        self.next.get(&key(state, token)).copied()
    }

    /// The outgoing edges of `state` as `(token, target)` pairs, newest first.
    pub fn edges(&self, state: StateId) -> impl Iterator<Item = (TokenId, StateId)> + '_ {
        let mut e = self.first_edge[state as usize];
        std::iter::from_fn(move || {
            if e == NONE {
                return None;
            }
            let edge = self.edges[e as usize];
            e = edge.next;
            let target = self
                .next(state, edge.token)
                .expect("invariant: every listed edge is in the transition map");
            Some((edge.token, target))
        })
    }

    fn push_state(&mut self, len: u32, link: u32, first_endpos: u32, is_primary: bool) -> StateId {
        let id = self.len.len() as StateId;
        self.len.push(len);
        self.link.push(link);
        self.first_endpos.push(first_endpos);
        self.is_primary.push(is_primary);
        self.first_edge.push(NONE);
        id
    }

    fn add_edge(&mut self, from: StateId, token: TokenId, to: StateId) {
        let e = self.edges.len() as u32;
        self.edges.push(Edge {
            token,
            next: self.first_edge[from as usize],
        });
        self.first_edge[from as usize] = e;
        self.next.insert(key(from, token), to);
    }

    /// Appends `token` to the text.
    ///
    /// Fails only when the text would exceed [`MAX_TEXT_LEN`].
    pub fn extend(&mut self, token: TokenId) -> Result<(), crate::Error> {
        if u64::from(self.text_len) >= MAX_TEXT_LEN {
            return Err(crate::Error::TextTooLong {
                len: u64::from(self.text_len) + 1,
                max: MAX_TEXT_LEN,
            });
        }
        let pos = self.text_len;
        self.text_len += 1;
        let cur = self.push_state(self.len[self.last as usize] + 1, ROOT, pos, true);

        // Walk the suffix path of the old text, adding `token` edges until one exists.
        let mut p = self.last;
        let existing = loop {
            if let Some(q) = self.next(p, token) {
                break Some((p, q));
            }
            self.add_edge(p, token, cur);
            match self.link(p) {
                Some(l) => p = l,
                None => break None,
            }
        };

        if let Some((p, q)) = existing {
            if self.len[p as usize] + 1 == self.len[q as usize] {
                self.link[cur as usize] = q;
            } else {
                // `q` holds strings longer than `p`'s + 1: split off the short ones.
                let clone = self.push_state(
                    self.len[p as usize] + 1,
                    self.link[q as usize],
                    self.first_endpos[q as usize],
                    false,
                );
                let mut e = self.first_edge[q as usize];
                while e != NONE {
                    let edge = self.edges[e as usize];
                    let target = self
                        .next(q, edge.token)
                        .expect("invariant: every listed edge is in the transition map");
                    self.add_edge(clone, edge.token, target);
                    e = edge.next;
                }
                let mut p = Some(p);
                while let Some(s) = p {
                    match self.next.get_mut(&key(s, token)) {
                        Some(t) if *t == q => *t = clone,
                        _ => break,
                    }
                    p = self.link(s);
                }
                self.link[q as usize] = clone;
                self.link[cur as usize] = clone;
            }
        }
        self.last = cur;
        Ok(())
    }

    /// Number of end positions (occurrences) of every state's strings, indexed by state.
    ///
    /// Computed in O(states) by summing primary states up the suffix-link tree in order of
    /// decreasing `len` (a counting sort, since lengths are bounded by the text length).
    pub fn occurrence_counts(&self) -> Vec<u32> {
        let n = self.n_states();
        let mut bucket = vec![0u32; self.text_len as usize + 2];
        for &l in &self.len {
            bucket[l as usize] += 1;
        }
        for i in 1..bucket.len() {
            bucket[i] += bucket[i - 1];
        }
        let mut order = vec![0 as StateId; n];
        for s in (0..n).rev() {
            let l = self.len[s] as usize;
            bucket[l] -= 1;
            order[bucket[l] as usize] = s as StateId;
        }
        let mut count: Vec<u32> = self.is_primary.iter().map(|&p| u32::from(p)).collect();
        for &s in order.iter().rev() {
            if let Some(l) = self.link(s) {
                count[l as usize] += count[s as usize];
            }
        }
        count
    }

    /// Checks the structural invariants. Tests call it after every mutation.
    #[cfg(test)]
    pub(crate) fn validate(&self) {
        let n = self.n_states() as u32;
        assert_eq!(self.link[0], NONE);
        for s in 1..n as usize {
            let l = self.link[s];
            assert!(l < n, "link out of range");
            assert!(self.len[l as usize] < self.len[s], "len[link[s]] < len[s]");
            assert!(self.first_endpos[s] < self.text_len);
        }
        let mut listed = 0;
        for s in 0..n {
            for (_, t) in self.edges(s) {
                assert!(t < n);
                assert!(self.len[t as usize] > self.len[s as usize]);
                listed += 1;
            }
        }
        assert_eq!(listed, self.next.len());
        assert!(self.n_states() <= 2 * self.text_len.max(1) as usize);
    }
}

/// Where a text stands in an automaton: the longest suffix of the text that occurs in the
/// automaton's text.
///
/// Invariant (outside the root): `len(link(state)) < len <= len(state)`, so `state` is
/// the class of the matched suffix and its first occurrence ends at
/// `first_endpos(state)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Matcher {
    state: StateId,
    len: u32,
}

impl Matcher {
    /// The match of the empty text.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of the matched suffix (the root when nothing matches).
    pub fn state(&self) -> StateId {
        self.state
    }

    /// Length of the matched suffix in tokens.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether nothing matches.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Follows the text by one token: amortised O(1), since each suffix-link step shortens
    /// the match that the next tokens can only lengthen by one each.
    #[inline]
    pub fn advance(&mut self, sam: &SuffixAutomaton, token: TokenId) {
        loop {
            if let Some(next) = sam.next(self.state, token) {
                self.state = next;
                self.len += 1;
                return;
            }
            match sam.link(self.state) {
                Some(l) => {
                    self.state = l;
                    self.len = sam.state_len(l);
                }
                None => {
                    self.len = 0;
                    return;
                }
            }
        }
    }

    /// Restores the invariant after `sam` was extended: a clone may have taken over the
    /// shorter strings of the matched state.
    #[inline]
    pub fn settle(&mut self, sam: &SuffixAutomaton) {
        while let Some(l) = sam.link(self.state) {
            if sam.state_len(l) < self.len {
                break;
            }
            self.state = l;
        }
    }
}

/// Where a chain draft starts in the automaton's text, how long it is, and the match
/// length it rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainSource {
    /// Index in the text of the first drafted token.
    pub start: usize,
    /// Tokens to draft, at most the length asked for.
    pub len: usize,
    /// Length of the matched suffix whose first occurrence the draft continues.
    pub match_len: u32,
}

/// Chooses the occurrence a chain draft of `want` tokens continues.
///
/// The draft is the text after the first occurrence of the matched suffix. When fewer than
/// `want` tokens follow it (a match near the end of the dynamic text, or before a corpus
/// separator), shorter suffixes are tried up the suffix links: their first occurrences are
/// no later, so they can only have more text after them. The longest match with `want`
/// tokens after it wins; failing that, the one with the most, the longer match on ties.
///
/// `available(start)` says how many tokens can be drafted from `start` (at most `want`).
pub(crate) fn chain_source(
    sam: &SuffixAutomaton,
    matched: Matcher,
    want: usize,
    available: impl Fn(usize) -> usize,
) -> Option<ChainSource> {
    if matched.is_empty() || want == 0 {
        return None;
    }
    let (mut state, mut match_len) = (matched.state(), matched.len());
    let mut best: Option<ChainSource> = None;
    loop {
        let start = sam.first_endpos(state) as usize + 1;
        let len = available(start).min(want);
        if best.is_none_or(|b| len > b.len) {
            best = Some(ChainSource {
                start,
                len,
                match_len,
            });
        }
        match sam.link(state) {
            Some(l) if len < want && l != ROOT => {
                state = l;
                match_len = sam.state_len(l);
            }
            _ => break,
        }
    }
    best.filter(|b| b.len > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(text: &[TokenId]) -> SuffixAutomaton {
        let mut sam = SuffixAutomaton::new();
        for &t in text {
            sam.extend(t).unwrap();
            sam.validate();
        }
        sam
    }

    fn accepts(sam: &SuffixAutomaton, s: &[TokenId]) -> bool {
        let mut st = ROOT;
        for &t in s {
            match sam.next(st, t) {
                Some(n) => st = n,
                None => return false,
            }
        }
        true
    }

    #[test]
    fn accepts_exactly_the_substrings() {
        let text = [0, 1, 0, 1, 2, 0, 1, 0];
        let sam = build(&text);
        for i in 0..text.len() {
            for j in i..=text.len() {
                assert!(accepts(&sam, &text[i..j]));
            }
        }
        assert!(!accepts(&sam, &[2, 2]));
        assert!(!accepts(&sam, &[1, 1]));
        assert!(!accepts(&sam, &[3]));
    }

    #[test]
    fn counts_occurrences() {
        let text = [5, 6, 5, 6, 5];
        let sam = build(&text);
        let counts = sam.occurrence_counts();
        let state_of = |s: &[TokenId]| {
            let mut st = ROOT;
            for &t in s {
                st = sam.next(st, t).unwrap();
            }
            st
        };
        assert_eq!(counts[state_of(&[5]) as usize], 3);
        assert_eq!(counts[state_of(&[5, 6]) as usize], 2);
        assert_eq!(counts[state_of(&[6, 5]) as usize], 2);
        assert_eq!(counts[state_of(&[5, 6, 5, 6, 5]) as usize], 1);
        assert_eq!(counts[ROOT as usize], 5);
    }

    #[test]
    fn first_endpos_is_the_first_occurrence() {
        let text = [1, 2, 3, 1, 2, 4];
        let sam = build(&text);
        let mut st = ROOT;
        for t in [1, 2] {
            st = sam.next(st, t).unwrap();
        }
        assert_eq!(sam.first_endpos(st), 1);
    }

    #[test]
    fn matcher_falls_back_to_root() {
        let sam = build(&[1, 2, 3]);
        let mut m = Matcher::new();
        m.advance(&sam, 7);
        assert_eq!((m.state(), m.len()), (ROOT, 0));
        m.advance(&sam, 2);
        m.advance(&sam, 3);
        assert_eq!(m.len(), 2);
        m.advance(&sam, 1);
        assert_eq!(m.len(), 1);
    }
}
