//! What the decode loop needs from a model, and its implementation over [`samd_model`].
//!
//! The loop talks to a [`Target`] rather than to `Llama` directly, so that its logic
//! (acceptance, stopping, stats) is testable against a fake, and so that one loop serves
//! every backend.

use std::future::Future;

use samd_draft::tree::DraftTree;
use samd_model::{AncestorMask, KvCache, Llama};

use crate::Error;

/// A model that verifies draft trees against a cache of committed positions.
pub trait Target {
    /// Vocabulary size: every id it returns is below it.
    fn vocab_size(&self) -> u32;

    /// Positions the cache holds in all.
    fn capacity(&self) -> usize;

    /// Committed positions.
    fn past_len(&self) -> usize;

    /// Runs `tree`'s nodes at positions `past_len + depth` and returns each node's `k`
    /// most likely next ids, best first, row-major (`k >= 1`; column 0 is the argmax).
    /// Only ids come back from the device, never logits.
    fn verify(
        &mut self,
        tree: &DraftTree,
        k: usize,
    ) -> impl Future<Output = Result<Vec<u32>, Error>>;

    /// Keeps the K/V of `path` (node indices of the last verified tree, root first) and
    /// drops the other nodes'.
    fn commit(&mut self, path: &[usize]) -> Result<(), Error>;

    /// Forgets every position, for the next request.
    fn reset(&mut self);
}

/// A [`Llama`] with its KV cache.
#[derive(Debug)]
pub struct ModelTarget {
    model: Llama,
    cache: KvCache,
}

impl ModelTarget {
    /// Wraps `model` with a cache of `capacity` positions (at most the model's context).
    pub fn new(model: Llama, capacity: usize) -> Self {
        let capacity = capacity.min(model.config().context_len);
        let cache = model.new_cache(capacity);
        Self { model, cache }
    }

    /// The model.
    pub fn model(&self) -> &Llama {
        &self.model
    }
}

impl Target for ModelTarget {
    fn vocab_size(&self) -> u32 {
        u32::try_from(self.model.config().vocab_size).unwrap_or(u32::MAX)
    }

    fn capacity(&self) -> usize {
        self.cache.capacity()
    }

    fn past_len(&self) -> usize {
        self.cache.len()
    }

    async fn verify(&mut self, tree: &DraftTree, k: usize) -> Result<Vec<u32>, Error> {
        let past = u32::try_from(self.cache.len()).map_err(|_| Error::Options {
            what: "cache length exceeds u32",
        })?;
        let parents: Vec<Option<usize>> = (0..tree.len()).map(|i| tree.parent(i)).collect();
        let mask = AncestorMask::from_parents(&parents)?;
        let logits =
            self.model
                .forward(&mut self.cache, tree.tokens(), &tree.positions(past), &mask)?;
        let ids = if k <= 1 {
            logits.argmax_ids()
        } else {
            logits.top_k_ids(k)
        };
        Ok(self.model.read_ids(ids).await?)
    }

    fn commit(&mut self, path: &[usize]) -> Result<(), Error> {
        Ok(self.cache.compact(path)?)
    }

    fn reset(&mut self) {
        self.cache.clear();
    }
}
