//! A preallocated key/value cache with a cursor, built for tree verification.
//!
//! Each layer owns one `[2, n_kv_heads, max_seq_len, head_dim]` tensor, keys then values
//! (batch 1), allocated once: one tensor per layer, so a kernel stores both in one launch
//! and compaction gathers both in one. `len` counts the committed positions. A forward
//! pass over N draft nodes writes their K/V *past* the cursor without moving it:
//!
//! ```text
//!  slot:  0 .. len-1 | len .. len+N-1          | .. max_seq_len-1
//!         committed  | pending (this forward)  | free
//! ```
//!
//! [`KvCache::compact`] then gathers the accepted nodes' K/V into `len .. len+acc` on the
//! device and advances the cursor; rejected nodes are simply overwritten later. Rolling back
//! is moving the cursor ([`KvCache::truncate`]). Unlike llama-burn's cache, a full cache is an
//! error ([`Error::CacheFull`]) and never slides: sliding would silently change the output.
//! The cost is `2 * n_layers * n_kv_heads * max_seq_len * head_dim` floats up front
//! (SmolLM2-135M at 2048 positions: 2·30·3·2048·64·4 B = 94 MB).

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::LlamaConfig;
use crate::error::{Error, Result};
use crate::layer_ops::BlockOps;
use crate::step_graph::StepGraphs;

mod compaction;

use compaction::Compaction;

/// The per-request KV cache. The model's weights stay immutable; the engine owns this.
#[derive(Debug)]
pub struct KvCache {
    /// Per layer `[2, n_kv_heads, max_seq_len, head_dim]`: keys (RoPE applied), then values.
    layers: Vec<Tensor<4>>,
    /// Committed positions. Invariant: `len <= max_seq_len`.
    len: usize,
    /// Slots `len .. len + pending` hold K/V written by the last forward and not yet
    /// compacted. Invariant: `len + pending <= max_seq_len`.
    pending: usize,
    max_seq_len: usize,
    device: Device,
    /// Whether [`KvCache::compact`] moves K/V with our kernel or with burn's ops: the
    /// model's choice ([`crate::Llama::new_cache`]), so that the kernel checks compare
    /// the two.
    ops: BlockOps,
    /// Whether compaction on wgpu replays a captured graph ([`KvCache::set_step_graphs`]).
    compaction_graph: bool,
    /// That graph, once captured.
    compaction: Compaction,
    /// The verify steps captured against these layers' buffers ([`crate::step_graph`]),
    /// which is why a layer is only ever written in place.
    graphs: StepGraphs,
}

/// A copy with its own buffers, and so without the original's step graphs: sharing
/// buffers, each cache's first write would copy its layers away from the graphs that
/// write them.
impl Clone for KvCache {
    fn clone(&self) -> Self {
        Self {
            layers: self
                .layers
                .iter()
                .map(|t| t.clone().mul_scalar(1.0))
                .collect(),
            len: self.len,
            pending: self.pending,
            max_seq_len: self.max_seq_len,
            device: self.device.clone(),
            ops: self.ops,
            compaction_graph: self.compaction_graph,
            compaction: Compaction::Untried,
            graphs: StepGraphs::default(),
        }
    }
}

impl KvCache {
    /// Allocates a zeroed cache for `max_seq_len` positions on `device`.
    pub fn new(config: &LlamaConfig, max_seq_len: usize, device: &Device) -> Self {
        let shape = [2, config.n_kv_heads, max_seq_len, config.head_dim];
        let layers = (0..config.n_layers)
            .map(|_| Tensor::zeros(shape, device))
            .collect();
        Self {
            layers,
            len: 0,
            pending: 0,
            max_seq_len,
            device: device.clone(),
            ops: BlockOps::for_device(device),
            compaction_graph: true,
            compaction: Compaction::Untried,
            graphs: StepGraphs::default(),
        }
    }

    /// The cache of a model that runs `ops`, whose [`KvCache::compact`] then moves K/V
    /// alike.
    pub(crate) fn with_block_ops(mut self, ops: BlockOps) -> Self {
        self.ops = ops;
        self
    }

    /// Whether [`KvCache::compact`] on wgpu replays its launches from a graph captured
    /// once, as a model's verify steps do ([`crate::Llama::set_step_graphs`]); on by
    /// default. Off, each compaction launches its kernels one by one.
    pub fn set_step_graphs(&mut self, on: bool) {
        self.compaction_graph = on;
    }

    /// Number of committed positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is committed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of positions the cache can hold.
    pub fn capacity(&self) -> usize {
        self.max_seq_len
    }

    /// Number of nodes written by the last forward and not yet compacted.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Rolls back to `len` committed positions (no device work) and drops pending nodes.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
        self.pending = 0;
    }

    /// Empties the cache for a new request, keeping its allocation.
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// Checks that `n` more nodes fit, and marks them pending. Called before any write.
    pub(crate) fn reserve(&mut self, n: usize) -> Result<()> {
        let need = self.len.checked_add(n).ok_or_else(|| Error::InvalidInput {
            what: format!("{n} nodes overflow the cache length"),
        })?;
        if need > self.max_seq_len {
            return Err(Error::CacheFull {
                need,
                capacity: self.max_seq_len,
            });
        }
        self.pending = n;
        Ok(())
    }

    /// Writes `k`, `v` (`[n_kv_heads, n, head_dim]`) of `layer` into the pending slots
    /// `len .. len+n`.
    pub(crate) fn write(&mut self, layer: usize, k: Tensor<3>, v: Tensor<3>) {
        let [n_kv_heads, n, head_dim] = k.dims();
        debug_assert_eq!(n, self.pending, "invariant: reserve() precedes writes");
        let start = self.len;
        let end = start + n;
        // slice_assign works in place when the cache tensor is uniquely owned, which holds
        // here: windows handed out by `window` are dropped before the next write.
        for (kv, value) in [k, v].into_iter().enumerate() {
            self.layers[layer].inplace(|t| {
                t.slice_assign(
                    [kv..kv + 1, 0..n_kv_heads, start..end, 0..head_dim],
                    value.unsqueeze_dim(0),
                )
            });
        }
    }

    /// `layer`'s keys and values in slots `0 .. len + pending`, `[1, n_kv_heads, len +
    /// pending, head_dim]` each.
    pub(crate) fn window(&self, layer: usize) -> (Tensor<4>, Tensor<4>) {
        let cache = &self.layers[layer];
        let [_, n_kv_heads, _, head_dim] = cache.dims();
        let end = self.len + self.pending;
        let part = |kv: usize| {
            cache
                .clone()
                .slice([kv..kv + 1, 0..n_kv_heads, 0..end, 0..head_dim])
        };
        (part(0), part(1))
    }

    /// How many verify steps this cache replays from captured graphs, one per padded size
    /// and ids per node ([`crate::step_graph`]).
    pub fn captured_steps(&self) -> usize {
        self.graphs.captured()
    }

    /// The step graphs, taken out while a step runs against this cache.
    pub(crate) fn take_graphs(&mut self) -> StepGraphs {
        std::mem::take(&mut self.graphs)
    }

    /// Puts back what [`KvCache::take_graphs`] took.
    pub(crate) fn restore_graphs(&mut self, graphs: StepGraphs) {
        self.graphs = graphs;
    }

    /// `layer`'s keys and values, `[2, n_kv_heads, max_seq_len, head_dim]`, for a kernel
    /// that reads slots `0 .. len + pending`.
    pub(crate) fn layer(&self, layer: usize) -> &Tensor<4> {
        &self.layers[layer]
    }

    /// Replaces `layer`'s tensor with `write(tensor)`, for a kernel that stores the
    /// pending nodes' K/V. Owning the tensor lets the kernel write in place.
    pub(crate) fn update_layer(
        &mut self,
        layer: usize,
        write: impl FnOnce(Tensor<4>) -> Tensor<4>,
    ) {
        self.layers[layer].inplace(write);
    }

    /// Commits the pending nodes listed in `accepted` (indices into the last forward's
    /// nodes, in path order) and drops the rest.
    ///
    /// Their K/V are gathered on the device into slots `len .. len+accepted.len()` (on
    /// wgpu by `compact_kv.wgsl`, one launch a layer), then the cursor advances by
    /// `accepted.len()`. A chain prefix (`accepted == [0, 1, .., a-1]`)
    /// is already in place and moves nothing; prefill is that case.
    pub fn compact(&mut self, accepted: &[usize]) -> Result<()> {
        let n_acc = accepted.len();
        if n_acc > self.pending {
            return Err(Error::InvalidInput {
                what: format!("{n_acc} accepted nodes but only {} pending", self.pending),
            });
        }
        if let Some(&bad) = accepted.iter().find(|&&i| i >= self.pending) {
            return Err(Error::InvalidInput {
                what: format!(
                    "accepted node {bad} out of range for {} pending",
                    self.pending
                ),
            });
        }
        // A path from the root: parents precede their children (which the in-place
        // move on wgpu relies on).
        if let Some(w) = accepted.windows(2).find(|w| w[0] >= w[1]) {
            return Err(Error::InvalidInput {
                what: format!(
                    "accepted nodes {} then {}: a path's nodes ascend",
                    w[0], w[1]
                ),
            });
        }
        let is_prefix = accepted
            .iter()
            .enumerate()
            .all(|(slot, &node)| slot == node);
        if !is_prefix && self.ops == BlockOps::Kernels {
            let graph = self.compaction_graph.then_some(&mut self.compaction);
            compaction::compact(&mut self.layers, self.len, accepted, &self.device, graph)?;
        } else if !is_prefix {
            let start = self.len;
            let indices: Vec<i32> = accepted
                .iter()
                .map(|&i| i32::try_from(i).expect("invariant: i < pending <= max_seq_len"))
                .collect();
            let indices =
                Tensor::<1, Int>::from_data(TensorData::new(indices, [n_acc]), &self.device);
            for t in &mut self.layers {
                let [_, n_kv_heads, _, head_dim] = t.dims();
                let pending_range = start..start + self.pending;
                // [2, n_kv_heads, n_acc, head_dim]: select copies, so the write below cannot
                // clobber a source slot it still needs.
                let gathered = t
                    .clone()
                    .slice([0..2, 0..n_kv_heads, pending_range, 0..head_dim])
                    .select(2, indices.clone());
                t.inplace(|t| {
                    t.slice_assign(
                        [0..2, 0..n_kv_heads, start..start + n_acc, 0..head_dim],
                        gathered,
                    )
                });
            }
        }
        self.len += n_acc;
        self.pending = 0;
        Ok(())
    }
}
