//! How often a drafted node is accepted once its parent is, learned per bucket of like
//! nodes: the tree budget's estimate of what each node is worth.

use samd_draft::drafter::DraftReport;
use samd_draft::tree::{DraftTree, Source};

/// Depth buckets: 1, 2, …, `DEPTHS` and deeper.
const DEPTHS: usize = 8;
/// Sibling-rank buckets: 0, 1, …, `RANKS - 1` and later.
const RANKS: usize = 4;
/// Match-length buckets, by `log2(len + 1)`: 0, 1–2, 3–6, 7–14, 15 and longer.
const MATCHES: usize = 5;
/// Draft sources with statistics of their own (see `source_slot`).
const SOURCES: usize = 4;
/// Pseudo-trials behind the prior, so that a bucket follows its data after a few steps.
const PRIOR_TRIALS: f32 = 4.0;
/// Counts are halved past this many trials, so that a bucket follows the request.
const MAX_TRIALS: f32 = 256.0;

fn source_slot(source: Source) -> usize {
    match source {
        Source::DynamicSam => 0,
        Source::StaticSam => 1,
        Source::Recycling => 2,
        _ => 3,
    }
}

fn match_bucket(len: u32) -> usize {
    ((len + 1).ilog2() as usize).min(MATCHES - 1)
}

/// The acceptance rate a node is assumed to have before its bucket has data, given that
/// its parent was accepted.
///
/// Measured on the Spec-Bench dev traces of SmolLM2-135M (`docs/traces`): the text after
/// an earlier occurrence of the matched suffix is right for its first token 34% of the
/// time after a 1–2 token match and 93% after a match of 15 or more, and each next token
/// is likelier than the first. Token Recycling's successors by rank are its template's
/// priors. Without such priors a CPU, where only sure drafts pay, would never try one and
/// so never learn that they are sure.
fn prior_rate(source: usize, depth: usize, rank: usize, matched: usize) -> f32 {
    const FIRST: [f32; MATCHES] = [0.4, 0.35, 0.65, 0.85, 0.93];
    const LATER: [f32; MATCHES] = [0.7, 0.7, 0.8, 0.88, 0.95];
    const RECYCLED: [f32; RANKS] = [0.45, 0.15, 0.07, 0.04];
    let by_match = if depth == 0 { FIRST } else { LATER };
    let rate = if source == source_slot(Source::Recycling) {
        RECYCLED[rank]
    } else {
        by_match[matched]
    };
    // A later sibling is a second guess.
    if rank > 0 && source != source_slot(Source::Recycling) {
        rate * 0.5
    } else {
        rate
    }
}

/// Acceptance rates of draft nodes, given that their parent was accepted: counts per
/// bucket, seeded with `PRIOR_TRIALS` pseudo-trials at the prior rate.
///
/// Between steps every bucket drifts back toward its prior, slowly (see
/// [`PRIOR_RETURN`]). A bucket that fell below what pays is no longer verified, so without
/// the drift nothing would show that it got better: Token Recycling's table, say, which
/// is empty at first and fills as the request goes on.
#[derive(Debug, Clone)]
pub(super) struct AcceptanceModel {
    hits: Vec<f32>,
    trials: Vec<f32>,
    /// Each bucket's prior, as hits in `PRIOR_TRIALS` trials.
    prior_hits: Vec<f32>,
}

/// The share of the way back to its prior that each bucket goes per step: a bucket left
/// untried for about 100 steps is half-way back.
const PRIOR_RETURN: f32 = 0.007;

impl Default for AcceptanceModel {
    fn default() -> Self {
        let mut prior_hits = Vec::with_capacity(SOURCES * DEPTHS * RANKS * MATCHES);
        for source in 0..SOURCES {
            for depth in 0..DEPTHS {
                for rank in 0..RANKS {
                    for matched in 0..MATCHES {
                        prior_hits.push(prior_rate(source, depth, rank, matched) * PRIOR_TRIALS);
                    }
                }
            }
        }
        let trials = vec![PRIOR_TRIALS; prior_hits.len()];
        Self {
            hits: prior_hits.clone(),
            trials,
            prior_hits,
        }
    }
}

impl AcceptanceModel {
    /// The bucket of every node but the root (`buckets[0]` is unused), written into
    /// `buckets`. A node's rank counts its elder siblings: drafters push their best guess
    /// under a parent first.
    pub(super) fn buckets(tree: &DraftTree, report: &DraftReport, buckets: &mut Vec<usize>) {
        buckets.clear();
        buckets.push(0);
        let mut children = vec![0usize; tree.len()];
        for node in 1..tree.len() {
            let parent = tree
                .parent(node)
                .expect("invariant: only the root has no parent");
            let rank = children[parent].min(RANKS - 1);
            children[parent] += 1;
            let source = tree.sources()[node];
            let matched = match source {
                Source::DynamicSam => report.dynamic_match_len,
                Source::StaticSam => report.static_match_len,
                _ => 0,
            };
            let depth = (tree.depths()[node] as usize).min(DEPTHS) - 1;
            buckets.push(
                ((source_slot(source) * DEPTHS + depth) * RANKS + rank) * MATCHES
                    + match_bucket(matched),
            );
        }
    }

    /// The estimated acceptance rate of a bucket.
    pub(super) fn rate(&self, bucket: usize) -> f32 {
        self.hits[bucket] / self.trials[bucket]
    }

    /// Moves every bucket a step back toward its prior.
    pub(super) fn drift(&mut self) {
        let keep = 1.0 - PRIOR_RETURN;
        for ((hits, trials), prior) in self
            .hits
            .iter_mut()
            .zip(&mut self.trials)
            .zip(&self.prior_hits)
        {
            *hits = keep * *hits + PRIOR_RETURN * prior;
            *trials = keep * *trials + PRIOR_RETURN * PRIOR_TRIALS;
        }
    }

    /// Counts one verified node whose parent was accepted.
    pub(super) fn record(&mut self, bucket: usize, accepted: bool) {
        if self.trials[bucket] >= MAX_TRIALS {
            self.trials[bucket] /= 2.0;
            self.hits[bucket] /= 2.0;
        }
        self.trials[bucket] += 1.0;
        self.hits[bucket] += f32::from(u8::from(accepted));
    }
}
