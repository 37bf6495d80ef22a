//! Trace replay: measuring drafters without a model.
//!
//! With greedy decoding, what a verification step accepts follows from the greedy
//! continuation alone: a draft node is accepted exactly when it and its ancestors spell
//! the continuation. So one recorded AR trace (prompt plus greedy output) replays any
//! drafter step by step and gives its mean accepted tokens per step (MAT) in
//! milliseconds. Replay is exact for the automata and prompt lookup. For Token Recycling
//! it is approximate: the trace holds the model's top-k only along the true path, while a
//! real run also learns from the rejected branches.
//!
//! A run's verify step takes only so many nodes, and near the end of its context no more
//! than the cache's room: the decode loop cuts larger trees with its tree budget. Replay
//! cuts each tree alike ([`ReplayLimits`], [`TreeCut`]), so that it predicts a capped run
//! too, where uncapped it would only bound it from above.

use crate::drafter::{DraftReport, NO_PRECEDING};
use crate::tree::DraftTree;
use crate::{Drafter, Error, TokenId};

/// Marks "no prediction" for nodes off the true path; never a token id.
const NO_TOKEN: TokenId = u32::MAX;

/// A recorded greedy generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// The prompt followed by the greedy continuation.
    pub tokens: Vec<TokenId>,
    /// How many of `tokens` are the prompt (at least one).
    pub prompt_len: usize,
    /// Optionally, the model's top-k next tokens after every position but the last (which
    /// a generation cut by its token budget never verifies).
    pub top_k: Option<TopK>,
}

/// The model's top-k next tokens per position, best first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopK {
    /// Tokens per position.
    pub k: usize,
    /// `ids[q * k .. (q + 1) * k]` follow `tokens[..=q]`.
    pub ids: Vec<TokenId>,
}

/// What the replayed run's verify steps could take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayLimits {
    /// Nodes one verify step takes at most, the root included.
    pub max_tree_nodes: usize,
    /// Positions the run's KV cache holds: a step's tree also fits the room left.
    pub capacity: usize,
    /// Of the prompt's last positions, how many the run's prefill passed the drafter's
    /// [`Drafter::observe`] (on the CPU, a few; see [`Drafter::observes_whole_prompt`]).
    pub prompt_rows: usize,
}

impl ReplayLimits {
    /// No cap: every drafted node is verified.
    pub const NONE: Self = Self {
        max_tree_nodes: usize::MAX,
        capacity: usize::MAX,
        prompt_rows: usize::MAX,
    };
}

/// How the decode loop cuts a drafted tree to what a step takes, and what it learns from
/// each verified step to cut the next: replay consults it where the loop would.
pub trait TreeCut {
    /// Cuts `tree` to at most `most` nodes (at least one), leaving a tree.
    fn cut(&mut self, tree: &mut DraftTree, report: &DraftReport, most: usize);

    /// Learns from a verified step: `path` lists the accepted nodes, root first.
    fn learn(&mut self, tree: &DraftTree, path: &[usize]);
}

/// What a replay measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Verification steps (the prefill excluded).
    pub steps: u64,
    /// Tokens those steps produced, bonus tokens included.
    pub tokens: u64,
    /// Draft nodes proposed, roots excluded.
    pub drafted: u64,
    /// `histogram[n]` counts the steps that produced `n` tokens.
    pub histogram: Vec<u64>,
}

impl ReplayReport {
    /// Mean accepted tokens per step, the bonus token included (1.0 for plain decoding).
    pub fn mat(&self) -> f64 {
        if self.steps == 0 {
            return 0.0;
        }
        self.tokens as f64 / self.steps as f64
    }

    /// Adds another replay's counts to this one.
    pub fn merge(&mut self, other: &ReplayReport) {
        self.steps += other.steps;
        self.tokens += other.tokens;
        self.drafted += other.drafted;
        if self.histogram.len() < other.histogram.len() {
            self.histogram.resize(other.histogram.len(), 0);
        }
        for (a, b) in self.histogram.iter_mut().zip(&other.histogram) {
            *a += b;
        }
    }

    fn record(&mut self, produced: usize, drafted: usize) {
        self.steps += 1;
        self.tokens += produced as u64;
        self.drafted += drafted as u64;
        if self.histogram.len() <= produced {
            self.histogram.resize(produced + 1, 0);
        }
        self.histogram[produced] += 1;
    }
}

impl Trace {
    fn validate(&self) -> Result<(), Error> {
        if self.prompt_len == 0 {
            return Err(Error::Trace {
                what: "the prompt is empty",
            });
        }
        if self.tokens.len() <= self.prompt_len {
            return Err(Error::Trace {
                what: "the trace has no generated token",
            });
        }
        if let Some(top_k) = &self.top_k
            && (top_k.k == 0
                || top_k.ids.len() % top_k.k != 0
                || top_k.ids.len() / top_k.k + 1 < self.tokens.len())
        {
            return Err(Error::Trace {
                what: "top-k ids do not cover every position but the last",
            });
        }
        Ok(())
    }

    /// The tokens at those of `positions` that have a top-k row, the token before each,
    /// and their rows cut to `k`, flattened; `None` without rows of at least `k` ids.
    fn rows(&self, positions: impl Iterator<Item = usize>, k: usize) -> Option<Observed> {
        let top_k = self.top_k.as_ref().filter(|t| k > 0 && t.k >= k)?;
        let mut out = Observed::default();
        for q in positions.filter(|&q| (q + 1) * top_k.k <= top_k.ids.len()) {
            out.tokens.push(self.tokens[q]);
            out.preceding
                .push(q.checked_sub(1).map_or(NO_PRECEDING, |p| self.tokens[p]));
            out.rows.extend_from_slice(&top_k.ids[q * top_k.k..][..k]);
        }
        Some(out)
    }
}

/// What [`Drafter::observe`] takes, gathered from a trace.
#[derive(Debug, Default)]
struct Observed {
    tokens: Vec<TokenId>,
    preceding: Vec<TokenId>,
    rows: Vec<TokenId>,
}

impl Observed {
    fn feed(&self, drafter: &mut dyn Drafter) -> Result<(), Error> {
        drafter.observe(&self.tokens, &self.preceding, &self.rows)
    }
}

/// Replays `drafter` against `trace` as the decode loop would run it: the prefill yields
/// the first generated token, then each step drafts, cuts the tree to `limits` with
/// `cut`, verifies against the trace, and commits the accepted tokens plus the bonus.
pub fn replay(
    drafter: &mut dyn Drafter,
    trace: &Trace,
    limits: ReplayLimits,
    cut: &mut dyn TreeCut,
) -> Result<ReplayReport, Error> {
    trace.validate()?;
    if trace.tokens.len() > limits.capacity {
        return Err(Error::Trace {
            what: "the trace is longer than the replayed run's context",
        });
    }
    let tokens = &trace.tokens;
    let k = drafter.top_k();
    drafter.reset();
    let prompt_rows = trace.prompt_len.saturating_sub(limits.prompt_rows)..trace.prompt_len;
    if let Some(observed) = trace.rows(prompt_rows, k) {
        observed.feed(drafter)?;
    }
    drafter.commit(&tokens[..=trace.prompt_len])?;
    let mut committed = trace.prompt_len + 1;
    let mut report = ReplayReport::default();
    let mut tree = DraftTree::new(0);
    let mut on_path = Vec::new();
    let mut verified = Vec::new();
    while committed < tokens.len() {
        let draft = drafter.draft(&mut tree)?;
        let root_pos = committed - 1;
        // The cache holds every position before the root's, as in the decode loop.
        let room = limits.capacity - root_pos;
        cut.cut(&mut tree, &draft, limits.max_tree_nodes.min(room));
        on_path.clear();
        verified.clear();
        for i in 0..tree.len() {
            let pos = root_pos + tree.depths()[i] as usize;
            let on = match tree.parent(i) {
                None => true,
                Some(p) => on_path[p] && tokens.get(pos) == Some(&tree.tokens()[i]),
            };
            on_path.push(on);
            let next = tokens.get(pos + 1).copied().filter(|_| on);
            verified.push(next.unwrap_or(NO_TOKEN));
        }
        let acc = tree.accept(&verified)?;
        cut.learn(&tree, &acc.path);
        let produced = acc.path.len().min(tokens.len() - committed);
        let path_positions = acc
            .path
            .iter()
            .map(|&i| root_pos + tree.depths()[i] as usize);
        if let Some(observed) = trace.rows(path_positions, k) {
            observed.feed(drafter)?;
        }
        drafter.commit(&tokens[committed..committed + produced])?;
        committed += produced;
        report.record(produced, tree.len() - 1);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drafter::TokenRecycling;
    use crate::drafter::{LookupConfig, PromptLookup, RecyclingConfig, SamConfig, SamDrafter};

    fn sam() -> SamDrafter {
        SamDrafter::new(SamConfig::default(), 100, None, None).unwrap()
    }

    /// A tree's first nodes, which a tree budget would not choose, but a tree.
    struct FirstNodes;

    impl TreeCut for FirstNodes {
        fn cut(&mut self, tree: &mut DraftTree, _: &DraftReport, most: usize) {
            let keep: Vec<bool> = (0..tree.len()).map(|i| i < most).collect();
            tree.retain(&keep);
        }

        fn learn(&mut self, _: &DraftTree, _: &[usize]) {}
    }

    fn uncut(drafter: &mut dyn Drafter, trace: &Trace) -> Result<ReplayReport, Error> {
        replay(drafter, trace, ReplayLimits::NONE, &mut FirstNodes)
    }

    #[test]
    fn a_repeated_text_is_accepted_in_long_runs() {
        let unit: Vec<u32> = (10..30).collect();
        let mut tokens = unit.clone();
        tokens.extend(&unit);
        tokens.extend(&unit);
        let trace = Trace {
            tokens,
            prompt_len: 20,
            top_k: None,
        };
        let report = uncut(&mut sam(), &trace).unwrap();
        assert_eq!(report.tokens, 39);
        assert!(report.mat() > 5.0, "mat {}", report.mat());
        let sum: u64 = report
            .histogram
            .iter()
            .enumerate()
            .map(|(n, c)| n as u64 * c)
            .sum();
        assert_eq!(sum, report.tokens);
    }

    #[test]
    fn a_capped_replay_verifies_what_fits() {
        let unit: Vec<u32> = (10..30).collect();
        let tokens = unit.repeat(3);
        let trace = Trace {
            tokens,
            prompt_len: 20,
            top_k: None,
        };
        let whole = uncut(&mut sam(), &trace).unwrap();
        let limits = ReplayLimits {
            max_tree_nodes: 4,
            ..ReplayLimits::NONE
        };
        let capped = replay(&mut sam(), &trace, limits, &mut FirstNodes).unwrap();
        // A step of at most 4 nodes makes at most 4 tokens.
        assert_eq!(capped.histogram.len(), 5, "{:?}", capped.histogram);
        assert!(capped.steps > whole.steps);
        assert_eq!(capped.tokens, whole.tokens);
        // Trees near the end are cut to the cache's room: the last steps draft less.
        let near_the_end = ReplayLimits {
            capacity: 60,
            ..ReplayLimits::NONE
        };
        let room = replay(&mut sam(), &trace, near_the_end, &mut FirstNodes).unwrap();
        assert!(room.drafted < whole.drafted, "{room:?} {whole:?}");
        assert_eq!(room.tokens, whole.tokens);
        let too_short = ReplayLimits {
            capacity: 59,
            ..ReplayLimits::NONE
        };
        assert!(replay(&mut sam(), &trace, too_short, &mut FirstNodes).is_err());
    }

    #[test]
    fn no_draft_means_one_token_per_step() {
        let trace = Trace {
            tokens: (0..50).collect(),
            prompt_len: 10,
            top_k: None,
        };
        let mut pld = PromptLookup::new(LookupConfig::default(), 100).unwrap();
        let report = uncut(&mut pld, &trace).unwrap();
        assert_eq!((report.steps, report.tokens), (39, 39));
        assert_eq!(report.mat(), 1.0);
    }

    #[test]
    fn recycling_learns_from_the_trace() {
        // A periodic text where each token's successor is fixed: once seen, always right.
        let tokens: Vec<u32> = (0..200).map(|i| (i * 7) % 13).collect();
        let k = 2;
        // Every position but the last, as a run cut by its token budget records them.
        let ids = (1..tokens.len()).flat_map(|i| [tokens[i], 99]).collect();
        let trace = Trace {
            tokens,
            prompt_len: 5,
            top_k: Some(TopK { k, ids }),
        };
        let config = RecyclingConfig {
            k,
            ..RecyclingConfig::default()
        };
        let mut tr = TokenRecycling::new(config, 100).unwrap();
        let report = uncut(&mut tr, &trace).unwrap();
        assert!(report.mat() > 3.0, "mat {}", report.mat());
    }

    #[test]
    fn recycling_learns_only_the_prompt_rows_the_run_read() {
        // The prompt holds every successor of the periodic text: read whole, it makes
        // the first steps right; unread, they are learned step by step.
        let tokens: Vec<u32> = (0..80).map(|i| (i * 7) % 13).collect();
        let ids = (1..tokens.len()).flat_map(|i| [tokens[i], 99]).collect();
        let trace = Trace {
            tokens,
            prompt_len: 26,
            top_k: Some(TopK { k: 2, ids }),
        };
        let mat = |prompt_rows| {
            let config = RecyclingConfig {
                k: 2,
                ..RecyclingConfig::default()
            };
            let mut tr = TokenRecycling::new(config, 100).unwrap();
            let limits = ReplayLimits {
                prompt_rows,
                ..ReplayLimits::NONE
            };
            replay(&mut tr, &trace, limits, &mut FirstNodes)
                .unwrap()
                .mat()
        };
        let (all, none) = (mat(usize::MAX), mat(0));
        assert!(all > none, "{all} against {none}");
    }

    #[test]
    fn bad_traces_are_rejected() {
        let empty_prompt = Trace {
            tokens: vec![1, 2],
            prompt_len: 0,
            top_k: None,
        };
        assert!(uncut(&mut sam(), &empty_prompt).is_err());
        let nothing_generated = Trace {
            tokens: vec![1, 2],
            prompt_len: 2,
            top_k: None,
        };
        assert!(uncut(&mut sam(), &nothing_generated).is_err());
        // Three tokens need two rows of k = 2: a partial row, and one row of two.
        for ids in [5, 2] {
            let short_top_k = Trace {
                tokens: vec![1, 2, 3],
                prompt_len: 1,
                top_k: Some(TopK {
                    k: 2,
                    ids: vec![1; ids],
                }),
            };
            assert!(uncut(&mut sam(), &short_top_k).is_err(), "{ids} ids");
        }
    }
}
