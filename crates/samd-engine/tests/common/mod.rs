//! A fake model for the engine's tests: its next token is a fixed function of the last
//! two tokens, so outputs are known and cycle quickly enough for drafts to be accepted.

use samd_draft::tree::DraftTree;
use samd_engine::{Error, Sampling, Target, Verified};

/// Keeps the committed tokens as its "cache" and verifies each node from its own context.
#[derive(Debug)]
pub struct FakeModel {
    pub vocab: u32,
    pub capacity: usize,
    /// The greedy next token after `(second to last, last)`.
    pub successor: fn(u32, u32) -> u32,
    /// Rank r of the top-k is `(best + r * stride) % vocab`.
    pub stride: u32,
    /// What [`Target::max_tree_nodes`] says.
    pub max_nodes: usize,
    /// What [`Target::recycled_prompt_positions`] says.
    pub recycled: usize,
    /// Each verification's room left in the cache and its tree's nodes, in order.
    pub trees: Vec<(usize, usize)>,
    /// Nodes whose top-k was asked for (`k > 0`), over all verifications and the rows
    /// read of prompt passes.
    pub top_k_rows: usize,
    cache: Vec<u32>,
    /// Contexts of the last verified tree's nodes, for commit.
    pending: Vec<Vec<u32>>,
}

impl FakeModel {
    pub fn new(vocab: u32, capacity: usize, successor: fn(u32, u32) -> u32, stride: u32) -> Self {
        Self {
            vocab,
            capacity,
            successor,
            stride,
            max_nodes: usize::MAX,
            recycled: usize::MAX,
            trees: Vec::new(),
            top_k_rows: 0,
            cache: Vec::new(),
            pending: Vec::new(),
        }
    }
}

impl Target for FakeModel {
    fn vocab_size(&self) -> u32 {
        self.vocab
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn past_len(&self) -> usize {
        self.cache.len()
    }

    async fn verify(
        &mut self,
        tree: &DraftTree,
        k: usize,
        _sampling: Option<Sampling>,
    ) -> Result<Verified, Error> {
        if k > 0 {
            self.top_k_rows += tree.len();
        }
        let k = k.max(1);
        let room = self.capacity - self.cache.len();
        assert!(
            tree.len() <= room,
            "{} nodes in a room of {room}",
            tree.len()
        );
        self.trees.push((room, tree.len()));
        self.pending.clear();
        let mut ids = Vec::with_capacity(tree.len() * k);
        for i in 0..tree.len() {
            let mut ctx = match tree.parent(i) {
                Some(p) => self.pending[p].clone(),
                None => self.cache.clone(),
            };
            ctx.push(tree.tokens()[i]);
            let n = ctx.len();
            let best = (self.successor)(ctx[n.saturating_sub(2)], ctx[n - 1]);
            ids.extend((0..k as u32).map(|r| (best + r * self.stride) % self.vocab));
            self.pending.push(ctx);
        }
        Ok(samd_engine::split_columns(&ids, k, false, k))
    }

    async fn fill(
        &mut self,
        chain: &DraftTree,
        first: usize,
        k: usize,
        sampling: Option<Sampling>,
    ) -> Result<Verified, Error> {
        // Counts the rows read, not the chain's.
        let before = self.top_k_rows;
        let verified = self.verify(chain, k, sampling).await?;
        if k > 0 {
            self.top_k_rows = before + chain.len() - first;
        }
        Ok(verified.from_node(first, k))
    }

    fn max_tree_nodes(&self) -> usize {
        self.max_nodes
    }

    fn recycled_prompt_positions(&self) -> usize {
        self.recycled
    }

    fn seed(&mut self, _seed: u64) {}

    fn commit(&mut self, path: &[usize]) -> Result<(), Error> {
        if let Some(&last) = path.last() {
            self.cache = self.pending[last].clone();
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.cache.clear();
    }
}
