//! What the decode loop needs from a model, and its implementation over [`samd_model`].
//!
//! The loop talks to a [`Target`] rather than to `Llama` directly, so that its logic
//! (acceptance, stopping, stats) is testable against a fake, and so that one loop serves
//! every backend.

use std::future::Future;

use samd_draft::replay::ReplayLimits;
use samd_draft::tree::{DraftTree, Source};
use samd_model::cpu_matmul::CPU_MAX_ROWS;
use samd_model::step_graph::{StepPadding, padded_step_sizes};
use samd_model::{AncestorMask, Draw, KvCache, Llama, TokenIds, max_tree_nodes_on};
use web_time::Instant;

use crate::session::micros;
use crate::{CostShape, Error, Method, PREFILL_CHUNK, Sampling};

/// A model that verifies draft trees against a cache of committed positions.
pub trait Target {
    /// Vocabulary size: every id it returns is below it.
    fn vocab_size(&self) -> u32;

    /// Positions the cache holds in all.
    fn capacity(&self) -> usize;

    /// Committed positions.
    fn past_len(&self) -> usize;

    /// Runs `tree`'s nodes at positions `past_len + depth` and returns, per node, the
    /// next token (the argmax, or a draw under `sampling`) and, when `k > 0`, the `k` most
    /// likely next ids, best first. Only ids come back from the device, never logits.
    fn verify(
        &mut self,
        tree: &DraftTree,
        k: usize,
        sampling: Option<Sampling>,
    ) -> impl Future<Output = Result<Verified, Error>>;

    /// Runs `chain` (a tree of one branch: prompt tokens) as [`Target::verify`] does, and
    /// returns the ids of its nodes from `first` on (`first < chain.len()`): each one's
    /// next token and, when `k > 0`, its `k` most likely ids. A prompt's pass reads no
    /// other row, and a model need not compute the other rows' logits.
    fn fill(
        &mut self,
        chain: &DraftTree,
        first: usize,
        k: usize,
        sampling: Option<Sampling>,
    ) -> impl Future<Output = Result<Verified, Error>> {
        async move { Ok(self.verify(chain, k, sampling).await?.from_node(first, k)) }
    }

    /// Most prompt tokens per prefill pass, the same for every method
    /// ([`PREFILL_CHUNK`] says why).
    fn fill_chunk(&self) -> usize {
        PREFILL_CHUNK
    }

    /// Of a prompt's last positions, how many Token Recycling learns the top-k of at
    /// prefill ([`Target::fill`] computes only their logits, and the last position's).
    /// All of them where a row's logits cost little beside the pass.
    fn recycled_prompt_positions(&self) -> usize {
        usize::MAX
    }

    /// Most nodes a verification takes: the session cuts larger trees to this many (the
    /// likeliest, as the tree budget ranks them).
    fn max_tree_nodes(&self) -> usize {
        usize::MAX
    }

    /// How a verification pads its nodes: what it computes, and so what it costs.
    fn step_padding(&self) -> StepPadding {
        StepPadding::Exact
    }

    /// Seeds the random draws of the following verifications.
    fn seed(&mut self, seed: u64);

    /// Keeps the K/V of `path` (node indices of the last verified tree, root first) and
    /// drops the other nodes'.
    fn commit(&mut self, path: &[usize]) -> Result<(), Error>;

    /// Forgets every position, for the next request.
    fn reset(&mut self);

    /// Readies the device for every step `methods` may take, before any request, and
    /// says what it ran; `progress(done, total)` follows its passes. Nothing to do by
    /// default ([`ModelTarget`]'s on wgpu says why it is needed there).
    fn warm_up(
        &mut self,
        methods: &[Method],
        progress: impl FnMut(usize, usize),
    ) -> impl Future<Output = Result<WarmUp, Error>> {
        let _ = (methods, progress);
        async { Ok(WarmUp::default()) }
    }

    /// How a step's time grows with its nodes on this device, as a first guess: the tree
    /// budget starts from it and then follows the timings.
    fn cost_shape(&self) -> CostShape {
        CostShape::PARALLEL
    }
}

/// What one verification returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    /// Per node, the token that follows it.
    pub next: Vec<u32>,
    /// Per node, the `k` most likely next ids, best first, row-major (empty when `k = 0`).
    pub top_k: Vec<u32>,
}

impl Verified {
    /// The ids of the nodes from `first` on, `k` of them per node in the top-k: what
    /// [`Target::fill`] returns of a verification of the whole chain.
    pub fn from_node(mut self, first: usize, k: usize) -> Self {
        self.next.drain(..first.min(self.next.len()));
        self.top_k.drain(..(first * k).min(self.top_k.len()));
        self
    }
}

/// A [`Llama`] with its KV cache.
#[derive(Debug)]
pub struct ModelTarget {
    model: Llama,
    cache: KvCache,
    /// The generation's seed ([`Target::seed`]).
    seed: u64,
}

impl ModelTarget {
    /// Wraps `model` with a cache of `capacity` positions (at most the model's context).
    pub fn new(model: Llama, capacity: usize) -> Self {
        let capacity = capacity.min(model.config().context_len);
        let cache = model.new_cache(capacity);
        Self {
            model,
            cache,
            seed: 0,
        }
    }

    /// What a run of a model target on wgpu, or else on the CPU, with a cache of
    /// `capacity` positions verifies and learns from: the limits trace replay cuts by.
    pub fn replay_limits(on_wgpu: bool, capacity: usize) -> ReplayLimits {
        ReplayLimits {
            max_tree_nodes: max_tree_nodes_on(on_wgpu),
            capacity,
            prompt_rows: recycled_prompt_positions_on(on_wgpu),
        }
    }

    /// The model.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// Step graphs captured against the cache ([`samd_model::step_graph`]).
    pub fn captured_steps(&self) -> usize {
        self.cache.captured_steps()
    }

    /// [`Llama::set_step_graphs`] on the model, and [`KvCache::set_step_graphs`] on the
    /// cache.
    pub fn set_step_graphs(&mut self, on: bool) {
        self.model.set_step_graphs(on);
        self.cache.set_step_graphs(on);
    }

    /// The host's half of [`Target::verify`] (or of [`Target::fill`], with
    /// [`Reads::From`]): builds the step's forward and hands it to the device, waiting on
    /// nothing. On a GPU a small model's step can be bound by this half, which `samd
    /// profile` times apart.
    pub fn launch(
        &mut self,
        tree: &DraftTree,
        reads: Reads,
        sampling: Option<Sampling>,
    ) -> Result<PendingIds, Error> {
        let past = u32::try_from(self.cache.len()).map_err(|_| Error::Options {
            what: "cache length exceeds u32",
        })?;
        let parents: Vec<Option<usize>> = (0..tree.len()).map(|i| tree.parent(i)).collect();
        let mask = AncestorMask::from_parents(&parents)?;
        let (tokens, positions) = (tree.tokens(), &tree.positions(past));
        let draw = sampling.map(|s| Draw {
            temperature: s.temperature,
            top_p: s.top_p,
            seed: self.seed,
        });
        let (cache, model) = (&mut self.cache, &self.model);
        // One readback: the draws (if sampling) and the top-k (if wanted), side by side.
        // Verify steps replay a captured graph of their launches on wgpu.
        let (ids, k) = match reads {
            Reads::Every { k } => {
                let ids = model.forward_ids(cache, tokens, positions, &mask, k, draw.as_ref())?;
                (ids, k)
            }
            Reads::From { first, k } => {
                let ids = model.forward_ids_from(
                    cache,
                    tokens,
                    positions,
                    &mask,
                    first,
                    k,
                    draw.as_ref(),
                )?;
                (ids, k)
            }
        };
        Ok(PendingIds {
            ids,
            sampled: sampling.is_some(),
            k,
        })
    }

    /// The device's half of [`Target::verify`]: waits for the ids and reads them back.
    pub async fn finish(&self, pending: PendingIds) -> Result<Verified, Error> {
        let PendingIds { ids, sampled, k } = pending;
        let width = ids.dims()[1];
        let ids = self.model.read_ids(ids).await?;
        Ok(split_columns(&ids, width, sampled, k))
    }
}

/// Tokens of [`Target::warm_up`]'s prompt pass: more than the 8 rows past which the
/// products tile their rows, as a chat prompt's pass does.
const WARM_UP_PROMPT: usize = 32;

/// What [`Target::warm_up`] ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmUp {
    /// Forward passes run: verify steps and prompt passes.
    pub passes: usize,
    /// Step graphs the cache holds after them.
    pub graphs: usize,
    /// `(nodes, microseconds)` of verify steps whose time is what a request's would be:
    /// nothing left to compile or capture.
    pub timings: Vec<(usize, u64)>,
}

/// Which nodes' ids a verification reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Every node's next token, and its `k` most likely next ids when `k > 0`.
    Every {
        /// Ids per node beside the next token (0: none).
        k: usize,
    },
    /// The next tokens of the nodes from `first` on, and their `k` most likely next ids
    /// when `k > 0`: a prompt's pass ([`Target::fill`]).
    From {
        /// The first node read.
        first: usize,
        /// Ids per node beside the next token (0: none).
        k: usize,
    },
}

/// A verification handed to the device and not yet read back ([`ModelTarget::launch`]).
#[derive(Debug)]
pub struct PendingIds {
    ids: TokenIds,
    sampled: bool,
    k: usize,
}

/// Prompt tokens per prefill pass on wgpu. A pass costs the same launches and one
/// readback whatever its length (five launches per block), so a 1,000-token prompt in
/// one pass saves three passes' worth of both. The bound keeps the pass's `[n, n]` tree
/// mask (4 MiB) and its activations small beside WebGPU's 128 MiB binding limit. On the
/// CPU the attention's scores are `[heads, n, past + n]`, so it keeps [`PREFILL_CHUNK`].
const WGPU_FILL_CHUNK: usize = 1024;

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

    async fn verify(
        &mut self,
        tree: &DraftTree,
        k: usize,
        sampling: Option<Sampling>,
    ) -> Result<Verified, Error> {
        let pending = self.launch(tree, Reads::Every { k }, sampling)?;
        self.finish(pending).await
    }

    async fn fill(
        &mut self,
        chain: &DraftTree,
        first: usize,
        k: usize,
        sampling: Option<Sampling>,
    ) -> Result<Verified, Error> {
        let pending = self.launch(chain, Reads::From { first, k }, sampling)?;
        self.finish(pending).await
    }

    fn seed(&mut self, seed: u64) {
        self.seed = seed;
    }

    fn commit(&mut self, path: &[usize]) -> Result<(), Error> {
        Ok(self.cache.compact(path)?)
    }

    fn reset(&mut self) {
        self.cache.clear();
    }

    fn fill_chunk(&self) -> usize {
        if self.model.on_wgpu() {
            WGPU_FILL_CHUNK
        } else {
            PREFILL_CHUNK
        }
    }

    /// On the CPU a row of the head costs about what the rest of a prompt's row does
    /// natively, and SAM+TR prefilled a 100-token prompt a good deal slower than SAM;
    /// so the last [`CPU_MAX_ROWS`] positions, whose products read the weights once for
    /// all of them. The prompt's end says the most about what comes next: by trace replay
    /// SAM+TR's MAT loses about 0.03 against learning from every position.
    fn recycled_prompt_positions(&self) -> usize {
        recycled_prompt_positions_on(self.model.on_wgpu())
    }

    /// A larger tree's nodes would no longer get the logits plain decoding gets
    /// ([`Llama::max_tree_nodes`]). SAM+TR's trees average 78 nodes before the budget
    /// prunes them, and can exceed it.
    fn max_tree_nodes(&self) -> usize {
        self.model.max_tree_nodes()
    }

    /// On wgpu a verify step replays the step graph of its node count rounded up to a
    /// power of two ([`Llama::step_padding`]).
    fn step_padding(&self) -> StepPadding {
        self.model.step_padding()
    }

    /// On wgpu: one greedy verify step of every size step graphs are captured at
    /// ([`padded_step_sizes`]), with its commit, then a second, timed, and one prompt
    /// pass, for each number of ids per node that `methods` read back; the cache is
    /// emptied after each.
    ///
    /// A size's first step compiles its kernels' pipelines and captures its graph, which
    /// later steps of that size skip. Plain decoding needs only the one-node step, so
    /// without this a request's speculative steps paid for every new size, and the demo's
    /// first race charged it to the speculative lane alone. The second steps' timings
    /// tell the tree budget what each size costs on this device before it has to guess
    /// ([`crate::Session::warm_up`]): from its GPU guess, nodes nearly free, a first race
    /// on SwiftShader verified 55 nodes at five one-node steps' cost. On the CPU there is
    /// nothing to compile or capture. A sampling step still captures its own graph at its
    /// first use of a size.
    async fn warm_up(
        &mut self,
        methods: &[Method],
        mut progress: impl FnMut(usize, usize),
    ) -> Result<WarmUp, Error> {
        if !self.model.on_wgpu() {
            return Ok(WarmUp::default());
        }
        let mut ks: Vec<usize> = methods.iter().map(|m| m.top_k()).collect();
        ks.sort_unstable();
        ks.dedup();
        let capacity = self.capacity();
        let sizes: Vec<usize> = padded_step_sizes(self.max_tree_nodes())
            .into_iter()
            .filter(|&n| n <= capacity)
            .collect();
        let prompt_len = WARM_UP_PROMPT.min(capacity);
        let total = ks.len() * (1 + 2 * sizes.len());
        let mut warm = WarmUp::default();
        let mut tree = DraftTree::new(0);
        self.reset();
        for &k in &ks {
            // A prompt's pass reads every row's top-k for Token Recycling, else the last.
            tree.reset(0);
            tree.push_chain(0, &vec![0; prompt_len - 1], Source::Model);
            let first = if k > 0 { 0 } else { prompt_len - 1 };
            self.fill(&tree, first, k, None).await?;
            self.reset();
            warm.passes += 1;
            progress(warm.passes, total);
            for &n in &sizes {
                // A branch and a last node beside it, which is kept: a path off the
                // first branch is gathered into place, and that has kernels of its own.
                tree.reset(0);
                tree.push_chain(0, &vec![0; n.saturating_sub(2)], Source::Model);
                let last = if n > 1 {
                    tree.push(0, 1, Source::Model)
                } else {
                    0
                };
                let path = &[0, last][..n.min(2)];
                for timed in [false, true] {
                    let started = Instant::now();
                    self.verify(&tree, k, None).await?;
                    self.commit(path)?;
                    if timed {
                        warm.timings.push((n, micros(started)));
                    }
                    self.reset();
                    warm.passes += 1;
                    progress(warm.passes, total);
                }
            }
        }
        warm.graphs = self.captured_steps();
        Ok(warm)
    }

    fn cost_shape(&self) -> CostShape {
        if self.model.on_wgpu() {
            CostShape::PARALLEL
        } else if cfg!(target_arch = "wasm32") {
            CostShape::WASM
        } else {
            CostShape::SERIAL
        }
    }
}

/// Splits rows of `width` ids into the next tokens and the top-k. Under greedy decoding
/// the next token is the top-k's first column; under sampling it is a column of its own.
pub fn split_columns(ids: &[u32], width: usize, sampled: bool, k: usize) -> Verified {
    let rows = ids.chunks_exact(width.max(1));
    let next = rows.clone().map(|row| row[0]).collect();
    let top_k = match (sampled, k) {
        (_, 0) => Vec::new(),
        (false, _) => ids.to_vec(),
        (true, _) => rows.flat_map(|row| row[1..].iter().copied()).collect(),
    };
    Verified { next, top_k }
}

/// [`Target::recycled_prompt_positions`] of a [`ModelTarget`] on wgpu, or else on the CPU.
fn recycled_prompt_positions_on(wgpu: bool) -> usize {
    if wgpu { usize::MAX } else { CPU_MAX_ROWS }
}
