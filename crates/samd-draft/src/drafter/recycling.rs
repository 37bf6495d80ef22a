//! Token Recycling (Luo et al., arXiv 2408.08696): the model's own top-k predictions,
//! recycled as drafts.
//!
//! A table maps each token to the top-k ids the model predicted after it most recently.
//! Every verified node of every forward pass refreshes its token's row, accepted or not:
//! candidates the model "threw away" become drafts later. A draft fills a fixed tree
//! template whose node `(parent, rank)` takes the `rank`-th successor of its parent's
//! token. The table outlives requests, so the drafter warms up over a session.
//!
//! Beyond the paper: a second table keys rows by the token *and the one before it*, and
//! is read first. On Spec-Bench dev traces of SmolLM2-135M the pair's row holds the
//! model's next token in first place 40% of the time, against 33% for the token's row
//! alone. Pairs are too many to index directly, so that table is a bounded cache.

use super::{DraftReport, Drafter, NO_PRECEDING, check_tokens};
use crate::tree::{DraftTree, Source};
use crate::{Error, TokenId, check_token, check_vocab_size};

/// Marks an empty table slot.
const EMPTY: TokenId = u32::MAX;
/// Marks an empty pair-table slot.
const NO_PAIR: u64 = u64::MAX;
/// The largest pair table: 2^24 rows of 8 ids is 512 MiB.
const MAX_PAIR_BITS: u32 = 24;

/// Settings of [`TokenRecycling`].
#[derive(Debug, Clone, PartialEq)]
pub struct RecyclingConfig {
    /// Successors kept per token.
    pub k: usize,
    /// Nodes in the tree template, the root included.
    pub max_nodes: usize,
    /// Deepest template level below the root.
    pub max_depth: usize,
    /// Prior acceptance rate of the successor of each rank, best first. The template
    /// holds the `max_nodes` paths with the highest product of these rates.
    pub rank_priors: Vec<f64>,
    /// The pair table holds `1 << pair_bits` rows (0: no pair table, the paper's TR).
    pub pair_bits: u32,
}

impl Default for RecyclingConfig {
    fn default() -> Self {
        Self {
            k: 8,
            max_nodes: 64,
            max_depth: 7,
            rank_priors: vec![0.55, 0.15, 0.07, 0.05, 0.035, 0.025, 0.02, 0.015],
            pair_bits: 16,
        }
    }
}

/// One template node: which template node is its parent, and which successor rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TemplateNode {
    parent: usize,
    rank: usize,
}

/// The Token Recycling drafter.
///
/// # Example
///
/// ```
/// use samd_draft::Drafter;
/// use samd_draft::drafter::{RecyclingConfig, TokenRecycling};
/// use samd_draft::tree::DraftTree;
///
/// let config = RecyclingConfig { k: 2, ..RecyclingConfig::default() };
/// let mut tr = TokenRecycling::new(config, 10).unwrap();
/// // The model predicted 4 (then 5) after 3, and 6 (then 7) after 4 (after 3).
/// tr.observe(&[3, 4], &[2, 3], &[4, 5, 6, 7]).unwrap();
/// tr.commit(&[3]).unwrap();
/// let mut tree = DraftTree::new(0);
/// tr.draft(&mut tree).unwrap();
/// assert_eq!(&tree.tokens()[..3], &[3, 4, 6]);
/// ```
#[derive(Debug, Clone)]
pub struct TokenRecycling {
    k: usize,
    vocab_size: u32,
    /// `table[t * k + r]` is the `r`-th successor of token `t`, or `EMPTY`.
    table: Vec<TokenId>,
    /// The pair table, direct-mapped: slot `s` holds the row of the pair
    /// `pair_keys[s]` (`(before << 32) | token`, or `NO_PAIR`) at `pair_rows[s * k..]`.
    pair_keys: Vec<u64>,
    pair_rows: Vec<TokenId>,
    pair_bits: u32,
    /// Template nodes after the root, parents first.
    template: Vec<TemplateNode>,
    /// The last committed token (the next root) and the one before it.
    last: Option<TokenId>,
    before_last: Option<TokenId>,
}

impl TokenRecycling {
    /// A drafter with an empty table for ids below `vocab_size`.
    pub fn new(config: RecyclingConfig, vocab_size: u32) -> Result<Self, Error> {
        check_vocab_size(vocab_size)?;
        if config.k == 0 || config.rank_priors.len() < config.k {
            return Err(Error::Config {
                what: "recycling needs k >= 1 and a prior for each of the k ranks",
            });
        }
        if config.max_nodes == 0 {
            return Err(Error::Config {
                what: "recycling tree needs at least the root",
            });
        }
        if config.pair_bits > MAX_PAIR_BITS {
            return Err(Error::Config {
                what: "recycling pair table is larger than 2^24 rows",
            });
        }
        let slots = (vocab_size as usize)
            .checked_mul(config.k)
            .ok_or(Error::Config {
                what: "recycling table size overflows",
            })?;
        let pair_slots = if config.pair_bits == 0 {
            0
        } else {
            1usize << config.pair_bits
        };
        Ok(Self {
            k: config.k,
            vocab_size,
            table: vec![EMPTY; slots],
            pair_keys: vec![NO_PAIR; pair_slots],
            pair_rows: vec![EMPTY; pair_slots * config.k],
            pair_bits: config.pair_bits,
            template: build_template(&config),
            last: None,
            before_last: None,
        })
    }

    /// The pair table's slot for `token` after `before`, with its key; `None` without a
    /// pair table or a token before.
    fn pair_slot(&self, before: TokenId, token: TokenId) -> Option<(usize, u64)> {
        if self.pair_bits == 0 || before == NO_PRECEDING {
            return None;
        }
        let key = (u64::from(before) << 32) | u64::from(token);
        // Fibonacci hashing: the top bits of a multiplication by 2^64 / φ.
        let slot = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.pair_bits);
        Some((slot as usize, key))
    }

    /// The successors of `token` after `before`: the pair's row if the cache holds it,
    /// else the token's.
    fn row(&self, before: TokenId, token: TokenId) -> &[TokenId] {
        match self.pair_slot(before, token) {
            Some((slot, key)) if self.pair_keys[slot] == key => {
                &self.pair_rows[slot * self.k..][..self.k]
            }
            _ => &self.table[token as usize * self.k..][..self.k],
        }
    }

    /// Nodes in the template, the root included.
    pub fn template_len(&self) -> usize {
        self.template.len() + 1
    }

    /// Fills the template below `tree`'s node `at`, skipping empty table slots (and with
    /// them their subtrees). Where `tree` already has the child a template node asks for
    /// (another drafter's), the template continues below it instead of duplicating it.
    pub fn fill(&self, tree: &mut DraftTree, at: usize) {
        let mut placed: Vec<Option<usize>> = Vec::with_capacity(self.template.len() + 1);
        placed.push(Some(at));
        for node in &self.template {
            let slot = placed[node.parent].and_then(|parent| {
                let token = tree.tokens()[parent];
                let before = match tree.parent(parent) {
                    Some(grandparent) => tree.tokens()[grandparent],
                    None => self.before_last.unwrap_or(NO_PRECEDING),
                };
                let next = self.row(before, token)[node.rank];
                (next != EMPTY).then(|| {
                    tree.child(parent, next)
                        .unwrap_or_else(|| tree.push(parent, next, Source::Recycling))
                })
            });
            placed.push(slot);
        }
    }
}

/// Best-first over `(parent, rank)` paths by the product of rank priors: since every
/// prior is below one, a parent always outranks its children and precedes them.
fn build_template(config: &RecyclingConfig) -> Vec<TemplateNode> {
    let mut nodes: Vec<(f64, usize, TemplateNode)> = Vec::new(); // (weight, depth, node)
    let mut frontier: Vec<(f64, usize, usize)> = vec![(1.0, 0, 0)]; // (weight, depth, id)
    let mut template = Vec::new();
    while template.len() + 1 < config.max_nodes {
        // Expand every frontier node's children as candidates, then take the best.
        for (weight, depth, id) in frontier.drain(..) {
            if depth >= config.max_depth {
                continue;
            }
            for (rank, prior) in config.rank_priors.iter().take(config.k).enumerate() {
                let node = TemplateNode { parent: id, rank };
                nodes.push((weight * prior, depth + 1, node));
            }
        }
        let Some(best) = (0..nodes.len()).max_by(|&a, &b| nodes[a].0.total_cmp(&nodes[b].0)) else {
            break;
        };
        let (weight, depth, node) = nodes.swap_remove(best);
        template.push(node);
        frontier.push((weight, depth, template.len()));
    }
    template
}

impl Drafter for TokenRecycling {
    fn name(&self) -> &'static str {
        "tr"
    }

    fn reset(&mut self) {
        self.last = None;
        self.before_last = None;
    }

    fn commit(&mut self, tokens: &[TokenId]) -> Result<(), Error> {
        check_tokens(tokens, self.vocab_size)?;
        for &t in tokens.iter().rev().take(2).rev() {
            self.before_last = self.last;
            self.last = Some(t);
        }
        Ok(())
    }

    fn draft(&mut self, tree: &mut DraftTree) -> Result<DraftReport, Error> {
        let root = self.last.ok_or(Error::EmptyText)?;
        tree.reset(root);
        self.fill(tree, 0);
        Ok(DraftReport {
            source: (tree.len() > 1).then_some(Source::Recycling),
            ..DraftReport::default()
        })
    }

    fn top_k(&self) -> usize {
        self.k
    }

    fn observe(
        &mut self,
        tokens: &[TokenId],
        preceding: &[TokenId],
        top_k: &[TokenId],
    ) -> Result<(), Error> {
        if Some(top_k.len()) != tokens.len().checked_mul(self.k) {
            return Err(Error::VerifyLength {
                got: top_k.len(),
                nodes: tokens.len(),
            });
        }
        if preceding.len() != tokens.len() {
            return Err(Error::VerifyLength {
                got: preceding.len(),
                nodes: tokens.len(),
            });
        }
        check_tokens(tokens, self.vocab_size)?;
        check_tokens(top_k, self.vocab_size)?;
        preceding
            .iter()
            .filter(|&&t| t != NO_PRECEDING)
            .try_for_each(|&t| check_token(t, self.vocab_size))?;
        for ((&t, &before), row) in tokens.iter().zip(preceding).zip(top_k.chunks_exact(self.k)) {
            let at = t as usize * self.k;
            self.table[at..at + self.k].copy_from_slice(row);
            if let Some((slot, key)) = self.pair_slot(before, t) {
                self.pair_keys[slot] = key;
                self.pair_rows[slot * self.k..][..self.k].copy_from_slice(row);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_is_parent_first_and_bounded() {
        let config = RecyclingConfig::default();
        let template = build_template(&config);
        assert_eq!(template.len() + 1, config.max_nodes);
        let mut depth = vec![0usize];
        for (i, n) in template.iter().enumerate() {
            assert!(n.parent <= i, "parent precedes child");
            depth.push(depth[n.parent] + 1);
        }
        assert!(depth.iter().all(|&d| d <= config.max_depth));
        // The greedy chain (rank 0 all the way) is in the template, as deep as allowed.
        assert!(depth.contains(&config.max_depth));
    }

    #[test]
    fn empty_table_drafts_nothing() {
        let mut tr = TokenRecycling::new(RecyclingConfig::default(), 50).unwrap();
        tr.commit(&[7]).unwrap();
        let mut tree = DraftTree::new(0);
        let report = tr.draft(&mut tree).unwrap();
        assert_eq!(tree.len(), 1);
        assert_eq!(report.source, None);
    }

    #[test]
    fn a_full_table_fills_the_whole_template() {
        let config = RecyclingConfig::default();
        let mut tr = TokenRecycling::new(config.clone(), 1000).unwrap();
        // Successors of t: distinct ids, so no sibling merges.
        let tokens: Vec<u32> = (0..1000).collect();
        let top_k: Vec<u32> = tokens
            .iter()
            .flat_map(|&t| (0..8).map(move |r| (t * 7 + r * 131 + 1) % 1000))
            .collect();
        tr.observe(&tokens, &vec![NO_PRECEDING; 1000], &top_k)
            .unwrap();
        tr.commit(&[1]).unwrap();
        let mut tree = DraftTree::new(0);
        tr.draft(&mut tree).unwrap();
        assert_eq!(tree.len(), tr.template_len());
    }

    #[test]
    fn observe_rejects_bad_shapes_and_ids() {
        let mut tr = TokenRecycling::new(RecyclingConfig::default(), 50).unwrap();
        let row = [1, 2, 3, 4, 5, 6, 7, 8];
        assert!(tr.observe(&[1], &[0], &[1, 2]).is_err());
        assert!(tr.observe(&[1], &[0], &[1, 2, 3, 4, 5, 6, 7, 50]).is_err());
        assert!(tr.observe(&[60], &[0], &row).is_err());
        assert!(tr.observe(&[1], &[], &row).is_err());
        assert!(tr.observe(&[1], &[60], &row).is_err());
        // Nothing was learned from the bad batches.
        tr.commit(&[1]).unwrap();
        let mut tree = DraftTree::new(0);
        tr.draft(&mut tree).unwrap();
        assert_eq!(tree.len(), 1);
    }

    #[test]
    fn a_pair_row_wins_over_the_token_row() {
        let learn = |pair_bits| {
            let config = RecyclingConfig {
                k: 1,
                pair_bits,
                ..RecyclingConfig::default()
            };
            let mut tr = TokenRecycling::new(config, 50).unwrap();
            // After "9 3" the model said 5, after "3 5" 6, and after "7 3" (last) 4.
            tr.observe(&[3, 5, 3], &[9, 3, 7], &[5, 6, 4]).unwrap();
            tr
        };
        let draft = |tr: &mut TokenRecycling, text: &[u32]| {
            tr.commit(text).unwrap();
            let mut tree = DraftTree::new(0);
            tr.draft(&mut tree).unwrap();
            tree.tokens().to_vec()
        };
        let mut tr = learn(16);
        assert_eq!(
            draft(&mut tr, &[9, 3]),
            [3, 5, 6],
            "the pairs (9, 3), then (3, 5)"
        );
        assert_eq!(
            draft(&mut tr, &[8, 3]),
            [3, 4],
            "an unseen pair: 3's latest row"
        );
        let mut paper = learn(0);
        assert_eq!(
            draft(&mut paper, &[9, 3]),
            [3, 4],
            "without pairs: 3's latest row"
        );
    }
}
