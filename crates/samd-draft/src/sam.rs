//! The suffix automaton over token ids, and the match state that follows a text through it.
//!
//! A suffix automaton is the smallest DFA accepting every substring of its text. Each
//! state is an end-position class: the strings it accepts all end at the same positions.
//! Extension by one token is the classic online construction (Blumer et al. 1985) with the
//! clone step, giving at most `2n` states and `3n` transitions in amortised O(1) per token.
//!
//! Transitions: the vocabulary is large (49,152 for SmolLM2) and most states have one or
//! two edges, so dense per-state tables are out. Each state keeps its first two edges
//! inline, in its own 32 bytes; further edges go to one hash map keyed by
//! `(state, token)`, with a per-state token list beside it for enumeration (cloning a
//! state and drafting a tree need a state's edges). Lookups on the common low-degree
//! states then cost no extra cache miss, which is what keeps extension cheap on long
//! texts, where the hash map no longer fits in cache.
//!
//! See DESIGN.md ("Suffix automaton") and the SAM Decoding paper (arXiv 2411.10666).

use std::collections::HashMap;

use crate::TokenId;
use crate::hash::BuildKeyHasher;

/// Index of a state. The root is state 0.
pub type StateId = u32;

/// The root state: the empty string, which ends everywhere.
pub const ROOT: StateId = 0;

/// Marks "no state": the root's suffix link.
const NONE: u32 = u32::MAX;

/// The most tokens one automaton holds: state and edge ids are `u32`, and a text of `n`
/// tokens can need `2n` states and `3n` edges.
pub const MAX_TEXT_LEN: u64 = (u32::MAX / 4) as u64;

/// States per token whose latest occurrence is tracked: the longest suffixes, which
/// drafts rest on. Bounds the work per token on repetitive text.
const RECENT_WALK: usize = 64;

/// An outgoing transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Edge {
    token: TokenId,
    target: StateId,
}

/// Edges stored inside the state itself. Most states of a text automaton have one or two
/// edges, so lookups there touch only the state's own cache line, which the
/// construction reads anyway for `len` and `link`.
const INLINE_EDGES: usize = 2;

/// Bit of `State::flags` set on primary (non-clone) states.
const PRIMARY: u32 = 1 << 31;

/// One state: 32 bytes, two to a cache line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    /// Longest string of the state. Invariant: `len[link[s]] < len[s]`.
    len: u32,
    /// Suffix link: the state of the longest suffix in another class. `NONE` for the root.
    link: u32,
    /// End position (index of the last token) of the first occurrence of the state's
    /// strings. Unused for the root.
    first_endpos: u32,
    /// The number of edges in the low bits; `PRIMARY` when the state was created for a
    /// new position rather than cloned (each primary state is one end position).
    flags: u32,
    /// The first `INLINE_EDGES` edges; the rest live in `SuffixAutomaton::overflow`.
    inline: [Edge; INLINE_EDGES],
}

impl State {
    fn n_edges(&self) -> usize {
        (self.flags & !PRIMARY) as usize
    }
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
    states: Vec<State>,
    /// Edges past a state's inline ones: `(state << 32) | token` → target.
    overflow: HashMap<u64, StateId, BuildKeyHasher>,
    /// Tokens of each state's overflow edges, for enumeration, in insertion order.
    overflow_tokens: HashMap<StateId, Vec<TokenId>, BuildKeyHasher>,
    /// The state of the whole text.
    last: StateId,
    /// Tokens added so far.
    text_len: u32,
    /// Transitions in all.
    n_transitions: usize,
    /// When tracked: each state's latest end position and the one before (`NONE` when
    /// none), so that drafts can follow the most recent occurrence.
    recent: Option<Vec<[u32; 2]>>,
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

    /// An automaton with room for a text of `text_len` tokens without reallocating states.
    pub fn with_capacity(text_len: usize) -> Self {
        let mut sam = Self {
            states: Vec::with_capacity(text_len.saturating_mul(2).saturating_add(1)),
            overflow: HashMap::default(),
            overflow_tokens: HashMap::default(),
            last: ROOT,
            text_len: 0,
            n_transitions: 0,
            recent: None,
        };
        sam.push_state(0, NONE, 0, 0);
        sam
    }

    /// An empty automaton that also tracks the latest occurrences of its states
    /// ([`SuffixAutomaton::recent_endpos`]), for texts that grow while drafting.
    pub fn tracking_recent() -> Self {
        let mut sam = Self::new();
        sam.recent = Some(vec![[NONE; 2]]);
        sam
    }

    /// The end position of the latest occurrence of `state`'s strings before the end of
    /// the text; `None` unless tracked and seen before. Tracking stops after
    /// `RECENT_WALK` states per token, so a short, frequent string may report an older
    /// occurrence: still a true one.
    pub fn recent_endpos(&self, state: StateId) -> Option<u32> {
        let [latest, before] = self.recent.as_ref()?[state as usize];
        let end = self.text_len.checked_sub(1)?;
        [latest, before].into_iter().find(|&p| p != NONE && p < end)
    }

    /// Makes room for `additional` more tokens, so that growing the text to that length
    /// reallocates nothing.
    pub fn reserve(&mut self, additional: usize) {
        self.states.reserve(additional.saturating_mul(2));
        if let Some(recent) = &mut self.recent {
            recent.reserve(additional.saturating_mul(2));
        }
        // Roughly one edge in three lands past the inline slots on natural text.
        self.overflow.reserve(additional / 3);
    }

    /// Tokens added so far.
    pub fn text_len(&self) -> usize {
        self.text_len as usize
    }

    /// Number of states, the root included.
    pub fn n_states(&self) -> usize {
        self.states.len()
    }

    /// Number of transitions.
    pub fn n_transitions(&self) -> usize {
        self.n_transitions
    }

    /// Length of the longest string in `state`.
    #[inline]
    pub fn state_len(&self, state: StateId) -> u32 {
        self.states[state as usize].len
    }

    /// Suffix link of `state`, or `None` for the root.
    #[inline]
    pub fn link(&self, state: StateId) -> Option<StateId> {
        let l = self.states[state as usize].link;
        (l != NONE).then_some(l)
    }

    /// End position (token index) of the first occurrence of `state`'s strings.
    #[inline]
    pub fn first_endpos(&self, state: StateId) -> u32 {
        self.states[state as usize].first_endpos
    }

    /// The state reached from `state` by `token`, if any.
    #[inline]
    pub fn next(&self, state: StateId, token: TokenId) -> Option<StateId> {
        let st = &self.states[state as usize];
        let n = st.n_edges();
        for e in &st.inline[..n.min(INLINE_EDGES)] {
            if e.token == token {
                return Some(e.target);
            }
        }
        if n > INLINE_EDGES {
            return self.overflow.get(&key(state, token)).copied();
        }
        None
    }

    /// The target of `state`'s `token` edge, for redirection during a clone.
    fn next_mut(&mut self, state: StateId, token: TokenId) -> Option<&mut StateId> {
        let st = &mut self.states[state as usize];
        let n = st.n_edges();
        if let Some(e) = st.inline[..n.min(INLINE_EDGES)]
            .iter_mut()
            .find(|e| e.token == token)
        {
            return Some(&mut e.target);
        }
        if n > INLINE_EDGES {
            return self.overflow.get_mut(&key(state, token));
        }
        None
    }

    /// The outgoing edges of `state` as `(token, target)` pairs, in insertion order.
    pub fn edges(&self, state: StateId) -> impl Iterator<Item = (TokenId, StateId)> + '_ {
        let st = &self.states[state as usize];
        let inline = st.inline[..st.n_edges().min(INLINE_EDGES)]
            .iter()
            .map(|e| (e.token, e.target));
        let overflow = self
            .overflow_tokens
            .get(&state)
            .into_iter()
            .flatten()
            .map(move |&t| {
                let target = self.overflow[&key(state, t)];
                (t, target)
            });
        inline.chain(overflow)
    }

    fn push_state(&mut self, len: u32, link: u32, first_endpos: u32, flags: u32) -> StateId {
        let id = self.states.len() as StateId;
        if let Some(recent) = &mut self.recent {
            recent.push([first_endpos, NONE]);
        }
        self.states.push(State {
            len,
            link,
            first_endpos,
            flags,
            inline: [Edge::default(); INLINE_EDGES],
        });
        id
    }

    fn add_edge(&mut self, from: StateId, token: TokenId, target: StateId) {
        let st = &mut self.states[from as usize];
        let n = st.n_edges();
        st.flags += 1;
        self.n_transitions += 1;
        if n < INLINE_EDGES {
            st.inline[n] = Edge { token, target };
        } else {
            self.overflow.insert(key(from, token), target);
            self.overflow_tokens.entry(from).or_default().push(token);
        }
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
        let last_len = self.states[self.last as usize].len;
        let cur = self.push_state(last_len + 1, ROOT, pos, PRIMARY);

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
            let p_len = self.states[p as usize].len;
            let q_state = self.states[q as usize];
            if p_len + 1 == q_state.len {
                self.states[cur as usize].link = q;
            } else {
                // `q` holds strings longer than `p`'s + 1: split off the short ones.
                let clone = self.push_state(p_len + 1, q_state.link, q_state.first_endpos, 0);
                if let Some(recent) = &mut self.recent {
                    recent[clone as usize] = recent[q as usize];
                }
                let edges: Vec<(TokenId, StateId)> = self.edges(q).collect();
                for (t, target) in edges {
                    self.add_edge(clone, t, target);
                }
                let mut p = Some(p);
                while let Some(s) = p {
                    match self.next_mut(s, token) {
                        Some(t) if *t == q => *t = clone,
                        _ => break,
                    }
                    p = self.link(s);
                }
                self.states[q as usize].link = clone;
                self.states[cur as usize].link = clone;
            }
        }
        self.last = cur;
        self.note_recent(cur, pos);
        Ok(())
    }

    /// Records `pos` as the latest end position of the states on `cur`'s suffix path,
    /// the longest first (every suffix of the text ends at `pos`).
    fn note_recent(&mut self, cur: StateId, pos: u32) {
        let Some(recent) = &mut self.recent else {
            return;
        };
        let mut state = self.states[cur as usize].link;
        for _ in 0..RECENT_WALK {
            if state == NONE {
                break;
            }
            let r = &mut recent[state as usize];
            if r[0] != pos {
                *r = [pos, r[0]];
            }
            state = self.states[state as usize].link;
        }
    }

    /// Number of end positions (occurrences) of every state's strings, indexed by state.
    ///
    /// Computed in O(states) by summing primary states up the suffix-link tree in order of
    /// decreasing `len` (a counting sort, since lengths are bounded by the text length).
    pub fn occurrence_counts(&self) -> Vec<u32> {
        let n = self.n_states();
        let mut bucket = vec![0u32; self.text_len as usize + 2];
        for st in &self.states {
            bucket[st.len as usize] += 1;
        }
        for i in 1..bucket.len() {
            bucket[i] += bucket[i - 1];
        }
        let mut order = vec![0 as StateId; n];
        for s in (0..n).rev() {
            let l = self.states[s].len as usize;
            bucket[l] -= 1;
            order[bucket[l] as usize] = s as StateId;
        }
        let mut count: Vec<u32> = self
            .states
            .iter()
            .map(|st| u32::from(st.flags & PRIMARY != 0))
            .collect();
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
        assert_eq!(self.states[0].link, NONE);
        for s in 1..n as usize {
            let l = self.states[s].link;
            assert!(l < n, "link out of range");
            assert!(
                self.states[l as usize].len < self.states[s].len,
                "len[link[s]] < len[s]"
            );
            assert!(self.states[s].first_endpos < self.text_len);
        }
        let mut listed = 0;
        for s in 0..n {
            let mut tokens = std::collections::HashSet::new();
            for (t, target) in self.edges(s) {
                assert!(target < n);
                assert!(tokens.insert(t), "one edge per token");
                assert_eq!(self.next(s, t), Some(target));
                assert!(self.state_len(target) > self.state_len(s));
                listed += 1;
            }
            assert_eq!(tokens.len(), self.states[s as usize].n_edges());
        }
        assert_eq!(listed, self.n_transitions);
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
