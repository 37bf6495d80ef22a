//! The Llama forward pass in burn, over a whole draft tree at once.
//!
//! One call of [`Llama::forward`] runs N tree nodes through the model in a single batched
//! pass: node i sees every committed cache position and, among the new nodes, exactly its
//! ancestors and itself ([`AncestorMask`]). Prefill is the special case of a chain. The pass
//! returns logits on the device; the decode loop reads back only token ids
//! ([`Logits::top_k_ids`], [`TokenIds::read`]), one small readback per step.
//!
//! Design choices and their costs:
//! - Weights: on wgpu, Q4_0, Q4_1 and Q8_0 matrices stay in the file's blocks, which the
//!   WGSL kernels read for steps and prefills alike; others are widened to f32 at load
//!   and stored `[in, out]`. On the CPU matrices are f32 `[out, in]` as GGUF has them, and
//!   on x86-64 with AVX2 the block kinds above also keep their blocks
//!   ([`crate::quant_rows`]): a verify step reads those, a sixth of the bytes, and
//!   prefills take burn's matmul over the f32s.
//! - RoPE: llama.cpp's converter permutes the rows of `attn_q`/`attn_k` so that the stored
//!   weights expect *interleaved* RoPE (rotate pairs `(2i, 2i+1)`, ggml's "normal" mode).
//!   We apply interleaved RoPE to the weights as stored rather than un-permuting them.
//!   (HF's rotate-half on un-permuted weights gives the same numbers.)
//! - On a GPU a decode step of a model this small is bound by kernel launches, not
//!   arithmetic (`samd profile` counts them). Projections of the same input share one
//!   matrix (`q|k|v`, `gate|up`); the norms, the K/V store and the attention are our WGSL
//!   kernels on wgpu ([`crate::kernels`]), beside reference burn ops on every backend
//!   ([`crate::layer_ops`]), and so are the projections of a verify step's few rows and
//!   the top-k ids ([`crate::top_k`]).
//! - The output projection reuses the token embedding when `output.weight` is absent (tied
//!   embeddings); it is then a matmul against the embedding's transposed view, with no second
//!   copy of the largest matrix.
//!
//! Tensor names follow llama.cpp (`blk.{i}.attn_q.weight`, …) and pass through
//! [`WeightName::gguf_name`] only.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::config::LlamaConfig;
use crate::cpu_matmul::CPU_MAX_ROWS;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufFile, TensorInfo};
use crate::gguf_writer::{q4_1_bytes, q5_1_bytes, q6_k_bytes, q8_0_bytes};
use crate::kernels::{Heads, SKINNY_MAX_ROWS};
use crate::kv_cache::KvCache;
use crate::layer_ops::{self, AttentionInput, BlockOps, Layout, Matrix, Norm, QkvWeights};
use crate::quant_rows::{QuantKind, QuantRows};
use crate::sampler::{self, Draw, DrawBuffers};
use crate::step_graph::{HostStep, StepInputs, padded_nodes};

/// The next [`Llama`]'s id.
static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(0);

/// Which of the model's weights; the one place tensor names are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightName {
    /// `token_embd.weight`, dims `[d_model, vocab]`.
    TokenEmbd,
    /// `output.weight`, dims `[d_model, vocab]`; optional (tied embeddings).
    Output,
    /// `output_norm.weight`, dims `[d_model]`.
    OutputNorm,
    /// `blk.{i}.attn_norm.weight`.
    AttnNorm(usize),
    /// `blk.{i}.attn_q.weight`.
    AttnQ(usize),
    /// `blk.{i}.attn_k.weight`.
    AttnK(usize),
    /// `blk.{i}.attn_v.weight`.
    AttnV(usize),
    /// `blk.{i}.attn_output.weight`.
    AttnOutput(usize),
    /// `blk.{i}.ffn_norm.weight`.
    FfnNorm(usize),
    /// `blk.{i}.ffn_gate.weight`.
    FfnGate(usize),
    /// `blk.{i}.ffn_up.weight`.
    FfnUp(usize),
    /// `blk.{i}.ffn_down.weight`.
    FfnDown(usize),
}

impl WeightName {
    /// The GGUF tensor name, as llama.cpp writes it.
    pub fn gguf_name(self) -> String {
        match self {
            Self::TokenEmbd => "token_embd.weight".into(),
            Self::Output => "output.weight".into(),
            Self::OutputNorm => "output_norm.weight".into(),
            Self::AttnNorm(i) => format!("blk.{i}.attn_norm.weight"),
            Self::AttnQ(i) => format!("blk.{i}.attn_q.weight"),
            Self::AttnK(i) => format!("blk.{i}.attn_k.weight"),
            Self::AttnV(i) => format!("blk.{i}.attn_v.weight"),
            Self::AttnOutput(i) => format!("blk.{i}.attn_output.weight"),
            Self::FfnNorm(i) => format!("blk.{i}.ffn_norm.weight"),
            Self::FfnGate(i) => format!("blk.{i}.ffn_gate.weight"),
            Self::FfnUp(i) => format!("blk.{i}.ffn_up.weight"),
            Self::FfnDown(i) => format!("blk.{i}.ffn_down.weight"),
        }
    }

    /// The dims the config implies, GGUF order (`ne0`, the innermost, first). A matrix
    /// `[in, out]` here is row-major `[out, in]` in memory.
    pub fn expected_dims(self, c: &LlamaConfig) -> Vec<usize> {
        let q_dim = c.n_heads * c.head_dim;
        let kv_dim = c.n_kv_heads * c.head_dim;
        match self {
            Self::TokenEmbd | Self::Output => vec![c.d_model, c.vocab_size],
            Self::OutputNorm | Self::AttnNorm(_) | Self::FfnNorm(_) => vec![c.d_model],
            Self::AttnQ(_) => vec![c.d_model, q_dim],
            Self::AttnK(_) | Self::AttnV(_) => vec![c.d_model, kv_dim],
            Self::AttnOutput(_) => vec![q_dim, c.d_model],
            Self::FfnGate(_) | Self::FfnUp(_) => vec![c.d_model, c.d_ffn],
            Self::FfnDown(_) => vec![c.d_ffn, c.d_model],
        }
    }

    /// The matrices whose outputs the model holds side by side with this one's, in order
    /// (a block's q, k and v; its gate and up), each one matrix on the device; itself
    /// alone for the others.
    pub fn fused(self) -> Vec<Self> {
        match self {
            Self::AttnQ(i) | Self::AttnK(i) | Self::AttnV(i) => {
                vec![Self::AttnQ(i), Self::AttnK(i), Self::AttnV(i)]
            }
            Self::FfnGate(i) | Self::FfnUp(i) => vec![Self::FfnGate(i), Self::FfnUp(i)],
            _ => vec![self],
        }
    }

    /// Every weight of a model with `n_layers` blocks, `output.weight` included, made as
    /// they are asked for: `n_layers` is a file's claim, and a check of a file claiming a
    /// billion layers must stop at its first missing weight, not build the list first.
    pub fn all(n_layers: usize) -> impl Iterator<Item = Self> {
        let layer = |i| {
            [
                Self::AttnNorm(i),
                Self::AttnQ(i),
                Self::AttnK(i),
                Self::AttnV(i),
                Self::AttnOutput(i),
                Self::FfnNorm(i),
                Self::FfnGate(i),
                Self::FfnUp(i),
                Self::FfnDown(i),
            ]
        };
        [Self::TokenEmbd, Self::Output, Self::OutputNorm]
            .into_iter()
            .chain((0..n_layers).flat_map(layer))
    }
}

/// A dequantised weight on the host: dims in GGUF order (`ne0` first) and f32 data in
/// row-major order with `ne0` innermost.
#[derive(Debug, Clone)]
pub struct HostTensor {
    /// Dims, innermost first.
    pub dims: Vec<usize>,
    /// `dims.iter().product()` values; empty for a matrix on wgpu that comes as its
    /// `quant` blocks alone.
    pub data: Vec<f32>,
    /// The file's quantised blocks of a matrix ([`QuantRows`]), kept where products read
    /// them in place of `data`: the WGSL kernels on wgpu, and the CPU's products of a few
    /// rows with AVX2. `None` elsewhere and for block types not kept.
    pub quant: Option<QuantRows>,
}

/// Most rows of logits one product computes: past it, [`Llama::forward_ids`] takes the
/// head and the ids a slice of rows at a time. A prefill pass with Token Recycling reads
/// every position's top-k; over a 1,024-token pass SmolLM2's logits would be 201 MB,
/// past WebGPU's 128 MiB binding limit, and a slice's are 25 MB. Slices this size take
/// the skinny products on wgpu, over f32 weights too, as a decode step's head does.
const HEAD_ROWS: usize = SKINNY_MAX_ROWS;

/// Most nodes a verify step takes on wgpu with each node's logits those plain decoding
/// gets at the same position, bit for bit: up to here a step takes the per-node attention
/// and replays a captured graph. Past it a forward is treated as a prefill (the tiled
/// attention; over f32 weights, burn's matmul), whose sums run in other orders. On the
/// CPU the bound is lower ([`Llama::max_tree_nodes`]).
pub const MAX_TREE_NODES: usize = SKINNY_MAX_ROWS;

/// Which nodes' logits a forward returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    /// Every node's.
    All,
    /// The last node's only.
    Last,
}

/// Which new nodes each new node may attend to: itself and its ancestors.
///
/// Row-major `n × n` booleans; `allowed(i, j)` implies `j <= i` because a parent always
/// precedes its children in node order.
///
/// ```text
///  tree:  0 ─ 1 ─ 2        mask (x = attend):   0 1 2 3
///          └─ 3                             0  x . . .
///                                           1  x x . .
///                                           2  x x x .
///                                           3  x . . x
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AncestorMask {
    n: usize,
    /// `bits[i * n + j]`: node i may attend to node j.
    bits: Vec<bool>,
}

impl AncestorMask {
    /// A chain of `n` nodes: the causal mask, as in prefill or a chain draft.
    pub fn causal(n: usize) -> Self {
        let mut bits = vec![false; n * n];
        for i in 0..n {
            for j in 0..=i {
                bits[i * n + j] = true;
            }
        }
        Self { n, bits }
    }

    /// The mask of a tree given each node's parent (`None` for roots). Parents must precede
    /// their children.
    pub fn from_parents(parents: &[Option<usize>]) -> Result<Self> {
        let n = parents.len();
        let mut bits = vec![false; n * n];
        for (i, parent) in parents.iter().enumerate() {
            bits[i * n + i] = true;
            if let Some(p) = *parent {
                if p >= i {
                    return Err(Error::InvalidInput {
                        what: format!("node {i} has parent {p}: parents must precede children"),
                    });
                }
                for j in 0..=p {
                    bits[i * n + j] = bits[p * n + j];
                }
            }
        }
        Ok(Self { n, bits })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the mask has no nodes.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Whether node `i` may attend to node `j`.
    pub fn allowed(&self, i: usize, j: usize) -> bool {
        i < self.n && j < self.n && self.bits[i * self.n + j]
    }
}

/// Logits of the last forward, on the device: `[n_nodes, vocab]`.
#[derive(Debug, Clone)]
pub struct Logits {
    tensor: Tensor<2>,
}

impl Logits {
    /// The raw tensor, `[n_nodes, vocab]`.
    pub fn tensor(&self) -> &Tensor<2> {
        &self.tensor
    }

    /// Number of nodes (rows).
    pub fn n_nodes(&self) -> usize {
        self.tensor.dims()[0]
    }

    /// The argmax id of each node, computed on the device: `[n_nodes, 1]`.
    ///
    /// The top-1 of [`crate::top_k`]: on wgpu its kernel, since burn's `argmax` over a
    /// 49k-wide row cost about 2 ms more per step on an H200 (prompt lookup's one-node
    /// steps, which read the argmax, ran at 7.7 ms where AR's, reading the top-8 through
    /// the kernel, ran at 5.7 ms); elsewhere burn's `argmax`.
    pub fn argmax_ids(&self) -> TokenIds {
        self.top_k_ids(1)
    }

    /// The `k` best ids of each node, best first, computed on the device: `[n_nodes, k]`.
    /// Column 0 is the argmax, so one readback serves both verification and Token Recycling.
    /// On wgpu this is one launch of our WGSL kernel ([`crate::top_k`]).
    pub fn top_k_ids(&self, k: usize) -> TokenIds {
        TokenIds::new(crate::top_k::top_k_ids(self.tensor.clone(), k))
    }

    /// One id per node drawn as `draw` says, on the device: `[n_nodes, 1]`, with node
    /// `i` at `positions[i]` ([`crate::sampler`]: Gumbel-max over a top-p nucleus, the
    /// noise hashed from the draw's seed and the node's position).
    pub fn sample_ids(&self, draw: &Draw, positions: &[u32]) -> Result<TokenIds> {
        draw.check()?;
        if positions.len() != self.n_nodes() {
            return Err(Error::InvalidInput {
                what: format!(
                    "{} positions for {} rows of logits",
                    positions.len(),
                    self.n_nodes()
                ),
            });
        }
        sampler::sample_ids(self.tensor.clone(), draw, positions, None)
    }

    /// Reads the logits back (tests and debugging; the decode loop reads ids only).
    pub async fn read(self) -> Result<Vec<f32>> {
        floats_read(self.tensor.into_data_async().await)
    }
}

/// The f32 values of a readback, or an error that says why there are none.
pub(crate) fn floats_read(
    data: std::result::Result<TensorData, impl std::fmt::Display>,
) -> Result<Vec<f32>> {
    let data = data.map_err(|e| Error::Readback {
        reason: e.to_string(),
    })?;
    data.try_into_vec_as::<f32>().map_err(|e| Error::Readback {
        reason: format!("{e:?}"),
    })
}

/// What a verify step reads back per node: its next token (the argmax, or a draw with
/// `draw`: how, at which positions, and those on the device if they are there already)
/// and, when `k > 1` or sampling with `k > 0`, its `k` best ids; one readback holds both.
fn step_ids(
    logits: &Logits,
    k: usize,
    draw: Option<(&Draw, &[u32], Option<DrawBuffers>)>,
) -> Result<TokenIds> {
    Ok(match draw {
        None if k <= 1 => logits.argmax_ids(),
        None => logits.top_k_ids(k),
        Some((draw, positions, on_device)) => {
            let draws = sampler::sample_ids(logits.tensor.clone(), draw, positions, on_device)?;
            match k {
                0 => draws,
                k => draws.join(logits.top_k_ids(k)),
            }
        }
    })
}

/// Token ids on the device, `[n_nodes, k]`, waiting to be read back.
#[derive(Debug, Clone)]
pub struct TokenIds {
    tensor: Tensor<2, Int>,
    /// The rows read back: the first `rows` of `tensor`, whose other rows are a padded
    /// step's padding ([`crate::step_graph`]).
    rows: usize,
}

impl TokenIds {
    /// Ids computed elsewhere in this crate ([`crate::top_k`]), to be read back the same way.
    pub(crate) fn new(tensor: Tensor<2, Int>) -> Self {
        let rows = tensor.dims()[0];
        Self { tensor, rows }
    }

    /// These ids' first `rows` rows, cut on the host when read.
    pub(crate) fn first_rows(self, rows: usize) -> Self {
        debug_assert!(rows <= self.rows, "invariant: a cut keeps fewer rows");
        Self { rows, ..self }
    }

    /// `[n_nodes, k]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.tensor.dims()[1]]
    }

    /// `[n_nodes, k + k2]`: these columns, then `other`'s, so that both come back in one
    /// readback.
    pub fn join(self, other: TokenIds) -> TokenIds {
        debug_assert_eq!(
            self.rows, other.rows,
            "invariant: joined ids share their rows"
        );
        TokenIds::new(Tensor::cat(vec![self.tensor, other.tensor], 1)).first_rows(self.rows)
    }

    /// Ids computed a slice of rows at a time, one slice under the other.
    fn stacked(slices: Vec<TokenIds>) -> TokenIds {
        debug_assert!(
            slices.iter().all(|s| s.rows == s.tensor.dims()[0]),
            "invariant: slices have no padding rows"
        );
        TokenIds::new(Tensor::cat(
            slices.into_iter().map(|s| s.tensor).collect(),
            0,
        ))
    }

    /// Reads the ids back, row-major. Async because synchronous reads panic in the browser.
    pub async fn read(self) -> Result<Vec<u32>> {
        let kept = self.rows * self.tensor.dims()[1];
        let data = self
            .tensor
            .into_data_async()
            .await
            .map_err(|e| Error::Readback {
                reason: e.to_string(),
            })?;
        let ids = data.try_into_vec_as::<i64>().map_err(|e| Error::Readback {
            reason: format!("{e:?}"),
        })?;
        ids.into_iter()
            .take(kept)
            .map(|id| {
                u32::try_from(id).map_err(|_| Error::Readback {
                    reason: format!("token id {id} read back out of range"),
                })
            })
            .collect()
    }
}

/// `value` as a device index (`i32`, burn's int type for `select`) when below `limit`.
fn device_index(value: u32, limit: usize) -> Option<i32> {
    usize::try_from(value)
        .ok()
        .filter(|&u| u < limit)
        .and_then(|u| i32::try_from(u).ok())
}

/// One transformer block's weights. Matrices are laid out for the device
/// ([`Layout::for_device`]).
///
/// Projections that read the same input share one matrix, their outputs side by side, so
/// that each is one matmul launch: on a GPU a step of this small model is bound by kernel
/// launches.
#[derive(Debug, Clone)]
struct Block {
    /// `[d_model]`
    attn_norm: Tensor<1>,
    /// `d_model` inputs, outputs `q | k | v`.
    w_qkv: Matrix,
    /// `n_heads * head_dim` inputs, `d_model` outputs.
    wo: Matrix,
    /// `[d_model]`
    ffn_norm: Tensor<1>,
    /// `d_model` inputs, outputs `gate | up`.
    w_gate_up: Matrix,
    /// `d_ffn` inputs, `d_model` outputs.
    w_down: Matrix,
}

/// How a model holds the matrices its file stores in a type the block kernels read
/// ([`QuantKind::of`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatrixForm {
    /// In the file's blocks alone: on wgpu as the kernels read them
    /// ([`QuantRows::gpu_words`]), and on a CPU whose products read blocks
    /// ([`crate::cpu_matmul::reads_blocks`]) as those do; a prompt's products there read
    /// them too in wasm (integer products), and natively widen each matrix to f32 for
    /// that product alone. For Q4_1 a sixth of the memory of f32 (SmolLM2-135M: 92 MB
    /// against 540), and no widening at load. The default everywhere: natively, with
    /// widening on every core and freed memory kept in the process (the CLI's allocator
    /// policy), a 1,000-token prefill took as long as over f32 copies (BENCHMARKS).
    #[default]
    Blocks,
    /// Widened to f32 at load, with the blocks beside them on a CPU whose products of a
    /// few rows read blocks, where a prompt's products read the f32s. For comparisons
    /// (`samd --f32-weights`).
    F32,
}

/// A Llama-family decoder with immutable weights on one device.
#[derive(Debug, Clone)]
pub struct Llama {
    config: LlamaConfig,
    device: Device,
    /// `[vocab, d_model]`, out-major (or in blocks): rows are gathered by token id.
    token_embd: Matrix,
    /// `d_model` inputs, `vocab` outputs: its own matrix, or `token_embd` when tied.
    output: Matrix,
    /// `[d_model]`
    output_norm: Tensor<1>,
    blocks: Vec<Block>,
    /// `[context_len, 2 * head_dim]`: row `pos` is `cos | sin` with `cos(pos * theta_i)`
    /// at columns `2i` and `2i + 1`, and `-sin(pos * theta_i)` at `2i`, `+sin` at `2i + 1`.
    rope: Tensor<2>,
    /// Kernels or reference ops for the fused pieces of each block.
    ops: BlockOps,
    /// Whether [`Llama::forward_ids`] replays captured step graphs.
    step_graphs: bool,
    /// Tells this model's weights from another's, for the step graphs that read them:
    /// clones share it, as they share the weights.
    id: u64,
    /// What [`Llama::weight_bytes`] says.
    weight_bytes: usize,
}

/// A tensor's dims as `usize`s, or an error where one is beyond them (a 32-bit target).
fn weight_dims(info: &TensorInfo) -> Result<Vec<usize>> {
    info.dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| Error::InvalidInput {
            what: format!("{} has dims {:?} beyond usize", info.name, info.dims),
        })
}

impl Llama {
    /// Builds the model from weights supplied by `load`, which returns `None` for an absent
    /// tensor (allowed only for `output.weight`). Every tensor's dims are checked against
    /// `config` before it is uploaded.
    pub fn from_weights(
        config: LlamaConfig,
        device: &Device,
        mut load: impl FnMut(WeightName) -> Result<Option<HostTensor>>,
    ) -> Result<Self> {
        config.validate()?;
        let layout = Layout::for_device(device);
        let mut fetch = |name: WeightName| -> Result<Option<HostTensor>> {
            let Some(t) = load(name)? else {
                return Ok(None);
            };
            let expected = name.expected_dims(&config);
            if t.dims != expected {
                return Err(Error::WeightShape {
                    name: name.gguf_name(),
                    expected,
                    actual: t.dims,
                });
            }
            let values = expected.iter().product::<usize>();
            // A matrix may come as its blocks alone where products read them: the
            // kernels on wgpu, and some CPUs' products.
            let blocks_only = (layout == Layout::InOut || crate::cpu_matmul::reads_blocks())
                && t.data.is_empty()
                && t.quant
                    .as_ref()
                    .is_some_and(|q| q.rows() * q.cols() == values);
            if t.data.len() != values && !blocks_only {
                return Err(Error::InvalidInput {
                    what: format!(
                        "{} has {} values for dims {expected:?}",
                        name.gguf_name(),
                        t.data.len()
                    ),
                });
            }
            Ok(Some(t))
        };
        let mut required = |name: WeightName| -> Result<HostTensor> {
            fetch(name)?.ok_or_else(|| Error::MissingWeight {
                name: name.gguf_name(),
            })
        };
        let vector = |t: HostTensor| -> Tensor<1> {
            let n = t.data.len();
            Tensor::from_data(TensorData::new(t.data, [n]), device)
        };
        // GGUF matrices (each `[out, in]` row-major), their outputs side by side.
        let upload = |mut parts: Vec<HostTensor>| -> Result<Matrix> {
            let quant = parts
                .iter_mut()
                .map(|p| p.quant.take())
                .collect::<Option<Vec<_>>>()
                .and_then(QuantRows::stack);
            if quant.is_none() && parts.iter().any(|p| p.data.is_empty()) {
                return Err(Error::InvalidInput {
                    what: "a matrix came as blocks alone, but the matrices held beside it \
                           are not all blocks of its type"
                        .into(),
                });
            }
            Ok(match (layout, quant) {
                (Layout::InOut, Some(blocks)) => gpu_blocks(&blocks, device),
                (Layout::InOut, None) => {
                    let parts = parts.into_iter().map(InOut::from_gguf).collect::<Vec<_>>();
                    let m = InOut::side_by_side(&parts);
                    Matrix {
                        tensor: Some(Tensor::from_data(
                            TensorData::new(m.data, [m.n_in, m.n_out]),
                            device,
                        )),
                        layout,
                        quant: None,
                    }
                }
                (_, quant) => {
                    let n_in = parts[0].dims[0];
                    let n_out = parts.iter().map(|p| p.dims[1]).sum::<usize>();
                    let data = parts
                        .into_iter()
                        .map(|p| p.data)
                        .collect::<Vec<_>>()
                        .concat();
                    out_major(data, [n_out, n_in], quant, device)
                }
            })
        };

        let embd = required(WeightName::TokenEmbd)?;
        // [vocab, d_model]: the row-major layout as stored, whose rows a step gathers, and
        // which a tied head reads out-major.
        let token_embd = match (layout, embd.quant) {
            (Layout::InOut, Some(blocks)) => gpu_blocks(&blocks, device),
            (_, quant) => out_major(
                embd.data,
                [config.vocab_size, config.d_model],
                quant,
                device,
            ),
        };
        // Grown as the layers load: `n_layers` is a file's claim, and a claim of a billion
        // layers must end at the first missing tensor, not in an allocation.
        let mut blocks = Vec::new();
        for i in 0..config.n_layers {
            let mut fused = |name: WeightName| -> Result<Matrix> {
                let parts = name.fused().into_iter().map(&mut required);
                upload(parts.collect::<Result<_>>()?)
            };
            let (w_qkv, wo) = (
                fused(WeightName::AttnQ(i))?,
                fused(WeightName::AttnOutput(i))?,
            );
            let (w_gate_up, w_down) = (
                fused(WeightName::FfnGate(i))?,
                fused(WeightName::FfnDown(i))?,
            );
            blocks.push(Block {
                attn_norm: vector(required(WeightName::AttnNorm(i))?),
                w_qkv,
                wo,
                ffn_norm: vector(required(WeightName::FfnNorm(i))?),
                w_gate_up,
                w_down,
            });
        }
        let output_norm = vector(required(WeightName::OutputNorm)?);
        let (output, own_output) = match fetch(WeightName::Output)? {
            Some(t) => (upload(vec![t])?, true),
            None => (token_embd.clone(), false),
        };
        let vector_bytes = |v: &Tensor<1>| 4 * v.dims()[0];
        let weight_bytes = token_embd.bytes()
            + if own_output { output.bytes() } else { 0 }
            + vector_bytes(&output_norm)
            + blocks
                .iter()
                .map(|b| {
                    vector_bytes(&b.attn_norm)
                        + vector_bytes(&b.ffn_norm)
                        + [&b.w_qkv, &b.wo, &b.w_gate_up, &b.w_down]
                            .into_iter()
                            .map(Matrix::bytes)
                            .sum::<usize>()
                })
                .sum::<usize>();
        let rope = rope_table(&config, device);
        Ok(Self {
            config,
            device: device.clone(),
            token_embd,
            output,
            output_norm,
            blocks,
            rope,
            ops: BlockOps::for_device(device),
            step_graphs: true,
            id: NEXT_MODEL_ID.fetch_add(1, Ordering::Relaxed),
            weight_bytes,
        })
    }

    /// Loads a Llama GGUF: reads the config from its metadata and uploads its weights to
    /// `device`, in the default form ([`MatrixForm::Blocks`]).
    pub fn from_gguf(file: &GgufFile<'_>, device: &Device) -> Result<Self> {
        Self::from_gguf_with(file, device, MatrixForm::default())
    }

    /// What [`Llama::from_gguf`] would refuse in `file`, found from its metadata and
    /// tensor infos alone, with nothing dequantised or uploaded: the config, and every
    /// weight's presence, dims and type. The browser's engine releases its model before it
    /// loads the next (two would not fit beside each other in a tab), so it checks first:
    /// a file it cannot run then leaves the model it had.
    pub fn check_gguf(file: &GgufFile<'_>) -> Result<LlamaConfig> {
        let config = LlamaConfig::from_gguf(file)?;
        config.validate()?;
        for name in WeightName::all(config.n_layers) {
            let gguf_name = name.gguf_name();
            let Ok(info) = file.tensor(&gguf_name) else {
                if name == WeightName::Output {
                    continue; // tied to the embedding
                }
                return Err(Error::MissingWeight { name: gguf_name });
            };
            let (actual, expected) = (weight_dims(info)?, name.expected_dims(&config));
            if actual != expected {
                return Err(Error::WeightShape {
                    name: gguf_name,
                    expected,
                    actual,
                });
            }
            if !crate::dequant::supports(info.dtype) {
                return Err(Error::UnsupportedType {
                    name: gguf_name,
                    dtype: info.dtype,
                });
            }
        }
        Ok(config)
    }

    /// [`Llama::from_gguf`], with the matrices held in `form`.
    pub fn from_gguf_with(file: &GgufFile<'_>, device: &Device, form: MatrixForm) -> Result<Self> {
        // Before any upload: a file missing its last layer fails now, not after the rest.
        let config = Self::check_gguf(file)?;
        let layout = Layout::for_device(device);
        let keep_blocks = match layout {
            Layout::InOut => form == MatrixForm::Blocks,
            _ => crate::cpu_matmul::reads_blocks(),
        };
        Self::from_weights(config, device, |name| {
            let gguf_name = name.gguf_name();
            let Ok(info) = file.tensor(&gguf_name) else {
                return Ok(None);
            };
            let dims = weight_dims(info)?;
            let quant = keep_blocks
                .then(|| QuantRows::of_tensor(file, info))
                .flatten();
            // Where the products read a matrix's blocks alone, widening it on the host
            // would be wasted; but matrices held side by side stack their blocks only if
            // all are kept as one kind, else they are widened together.
            let blocks_only = form == MatrixForm::Blocks
                && quant.is_some()
                && name.fused().iter().all(|mate| {
                    file.tensor(&mate.gguf_name())
                        .is_ok_and(|t| QuantKind::of(t.dtype) == QuantKind::of(info.dtype))
                });
            let data = if blocks_only {
                Vec::new()
            } else {
                file.tensor_f32(&gguf_name)?
            };
            Ok(Some(HostTensor { dims, data, quant }))
        })
    }

    /// A model with deterministic pseudo-random weights, for tests. `tied` leaves out
    /// `output.weight`.
    pub fn random(config: LlamaConfig, seed: u64, tied: bool, device: &Device) -> Result<Self> {
        let c = config.clone();
        Self::from_weights(config, device, |name| {
            if tied && name == WeightName::Output {
                return Ok(None);
            }
            Ok(Some(random_weight(&c, name, seed)))
        })
    }

    /// [`Llama::random`] with its matrices quantised as SmolLM2's file has them (the
    /// token embedding in Q8_0, the rest in Q4_1), but for the down projections, in Q5_1
    /// as a Q5_K_M file has them, and the second layer's in Q6_K where its rows are whole
    /// super-blocks of 256, so that the kernel checks cover each kind of block with a
    /// minimum, and with a scale per 16. Each is loaded as [`Llama::from_gguf`] loads
    /// such blocks. Widths must be multiples of 32.
    pub fn random_quantized(
        config: LlamaConfig,
        seed: u64,
        tied: bool,
        device: &Device,
    ) -> Result<Self> {
        let c = config.clone();
        Self::from_weights(config, device, |name| {
            if tied && name == WeightName::Output {
                return Ok(None);
            }
            let t = random_weight(&c, name, seed);
            let [cols, rows] = t.dims[..] else {
                return Ok(Some(t));
            };
            let (dtype, bytes) = match name {
                WeightName::TokenEmbd => (GgmlType::Q8_0, q8_0_bytes(&t.data)),
                WeightName::FfnDown(1) if cols % 256 == 0 => (GgmlType::Q6_K, q6_k_bytes(&t.data)),
                WeightName::FfnDown(_) => (GgmlType::Q5_1, q5_1_bytes(&t.data)),
                _ => (GgmlType::Q4_1, q4_1_bytes(&t.data)),
            };
            let quant = QuantRows::from_gguf(dtype, &bytes, rows, cols);
            if quant.is_none() {
                return Err(Error::InvalidInput {
                    what: format!("{} is {rows} x {cols}: not whole blocks", name.gguf_name()),
                });
            }
            let data =
                crate::dequant::dequantize(dtype, &bytes, t.data.len() as u64).map_err(|e| {
                    Error::InvalidInput {
                        what: format!("{}: {e:?}", name.gguf_name()),
                    }
                })?;
            Ok(Some(HostTensor {
                dims: t.dims,
                data,
                quant,
            }))
        })
    }

    /// The most floats any one weight tensor of this model takes on the device: the
    /// embedding, or one of the side-by-side matrices of a block. A device must bind a
    /// buffer this large (times 4 bytes) to run the model.
    pub fn largest_weight_floats(c: &LlamaConfig) -> usize {
        let (q, kv) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        [
            c.vocab_size * c.d_model,
            c.d_model * (q + 2 * kv),
            c.d_model * 2 * c.d_ffn,
        ]
        .into_iter()
        .max()
        .unwrap_or(0)
    }

    /// The model's hyperparameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The bytes its weights take on its device, as they are held there: f32s, the
    /// blocks the products read, or both (with [`MatrixForm::F32`] on a CPU whose
    /// products read blocks). What a file's types cost once loaded; the KV cache and the
    /// RoPE table are apart.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// The device holding the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the model runs on burn's wgpu backend (a GPU, WebGPU, or lavapipe), where
    /// a forward of many nodes costs little more than one; on the CPU backend each node
    /// costs a share of a forward.
    pub fn on_wgpu(&self) -> bool {
        BlockOps::for_device(&self.device) == BlockOps::Kernels
    }

    /// Most nodes a verify step takes with each node's logits those plain decoding gets
    /// at the same position, bit for bit: [`MAX_TREE_NODES`] on wgpu, and on the CPU
    /// [`CPU_MAX_ROWS`], past which the products take burn's matmul, whose sums run in
    /// other orders (the attention keeps each node's order at any size). A larger draft
    /// is cut to this many nodes; on a CPU, where each node costs a share of a step, the
    /// tree budget keeps fewer anyway.
    pub fn max_tree_nodes(&self) -> usize {
        if self.on_wgpu() {
            MAX_TREE_NODES
        } else {
            CPU_MAX_ROWS
        }
    }

    /// The model running `ops` for the fused pieces of each block. By default a model
    /// runs our kernels on wgpu and the reference ops elsewhere; the reference on wgpu
    /// is what the kernels are checked against.
    ///
    /// # Panics
    /// If `ops` is [`BlockOps::Kernels`] and the device is not a wgpu device.
    pub fn with_block_ops(mut self, ops: BlockOps) -> Self {
        assert!(
            ops == BlockOps::Reference || BlockOps::for_device(&self.device) == ops,
            "the block kernels need a wgpu device"
        );
        self.ops = ops;
        self
    }

    /// A fresh cache for this model holding up to `max_seq_len` positions.
    pub fn new_cache(&self, max_seq_len: usize) -> KvCache {
        KvCache::new(&self.config, max_seq_len, &self.device)
    }

    /// Runs `tokens` (N nodes) through the model against the committed cache.
    ///
    /// `positions[i]` is node i's absolute position (`cache.len() + depth(i)`), and `mask`
    /// says which new nodes node i sees besides every committed position. The nodes' K/V
    /// land in the cache's pending slots `len .. len+N`; call [`KvCache::compact`] with the
    /// accepted nodes afterwards. Returns logits for all N nodes.
    pub fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        positions: &[u32],
        mask: &AncestorMask,
    ) -> Result<Logits> {
        self.forward_rows(cache, tokens, positions, mask, LogitRows::All)
    }

    /// [`Llama::forward`] with the logits of `rows` only. [`LogitRows::Last`] is what a
    /// prefill needs when nothing reads the other positions' logits: the output
    /// projection is the largest matrix (49,152 × 576 for SmolLM2), and over a prompt's
    /// every position it was a fifth of a prefill's arithmetic.
    pub fn forward_rows(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        positions: &[u32],
        mask: &AncestorMask,
        rows: LogitRows,
    ) -> Result<Logits> {
        let n = tokens.len();
        let step = self.host_step(cache, tokens, positions, mask)?;
        cache.reserve(n)?;
        let mut run = || self.run_blocks(cache, &step.upload(&self.device), rows);
        Ok(if self.on_wgpu() {
            run()
        } else {
            on_cpu_pool(run)
        })
    }

    /// Each node's next token, and its `k` most likely ids, best first: [`Llama::forward`],
    /// then the argmax (greedy, `draw` `None`) or a draw ([`Logits::sample_ids`]), and the
    /// top-k. Greedy with `k` > 0, the next token is the top-k's first column (`[n, k]`);
    /// sampling, it is a column of its own before them (`[n, 1 + k]`).
    ///
    /// On wgpu a step of up to 128 nodes replays a captured graph of its launches
    /// ([`crate::step_graph`]), which takes a fraction of the host time; the first step
    /// of each size captures it. A sampling step's graph keys its noise by the positions
    /// and draw it is refilled with, so each replay draws afresh.
    pub fn forward_ids(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        positions: &[u32],
        mask: &AncestorMask,
        k: usize,
        draw: Option<&Draw>,
    ) -> Result<TokenIds> {
        if let Some(draw) = draw {
            draw.check()?;
        }
        let n = tokens.len();
        let step = self.host_step(cache, tokens, positions, mask)?;
        let padded = padded_nodes(n)
            .filter(|_| self.step_graphs && self.ops == BlockOps::Kernels)
            .filter(|&p| cache.len() + p <= cache.capacity());
        let Some(padded) = padded else {
            return self.ids_launched(cache, &step, positions, 0, k, draw);
        };
        let step = step.padded(padded).with_draw(draw.copied());
        cache.reserve(padded)?;
        let mut graphs = cache.take_graphs();
        // Runs only when a step is captured or cannot be, never on a replay.
        let ids = graphs.run(self.id, &self.device, &step, k, |inputs| {
            let logits = self.run_blocks(cache, inputs, LogitRows::All);
            let Some(draw) = draw else {
                return step_ids(&logits, k, None);
            };
            // The padded step's, as its logits have a row per padded node.
            let positions: Vec<u32> = step.positions.iter().map(|&p| p as u32).collect();
            step_ids(&logits, k, Some((draw, &positions, inputs.draw_buffers())))
        });
        cache.restore_graphs(graphs);
        Ok(ids?.first_rows(n))
    }

    /// [`Llama::forward_ids`] reading the ids of nodes `first..` only, and computing only
    /// their logits: a prompt's pass, where plain decoding reads its last node's next
    /// token and Token Recycling the top-k of the prompt's last positions. The output
    /// projection is the largest matrix (49,152 × 576 for SmolLM2): over a whole pass on
    /// the CPU it cost more than the rest of a short prompt's pass. Issued launch by
    /// launch: a prompt's pass runs once per request. The last node's ids are those of
    /// [`LogitRows::Last`] ([`Llama::head_slices`]).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_ids_from(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        positions: &[u32],
        mask: &AncestorMask,
        first: usize,
        k: usize,
        draw: Option<&Draw>,
    ) -> Result<TokenIds> {
        if let Some(draw) = draw {
            draw.check()?;
        }
        if first >= tokens.len() {
            return Err(Error::InvalidInput {
                what: format!(
                    "ids from node {first} of a forward of {} nodes",
                    tokens.len()
                ),
            });
        }
        let step = self.host_step(cache, tokens, positions, mask)?;
        self.ids_launched(cache, &step, positions, first, k, draw)
    }

    /// Whether verify steps replay captured graphs on wgpu ([`Llama::forward_ids`]); on by
    /// default. Off, every step issues its launches one by one: for comparisons, and for
    /// counting launches, which a replay does not make.
    pub fn set_step_graphs(&mut self, on: bool) {
        self.step_graphs = on;
    }

    /// Whether verify steps replay captured graphs ([`Llama::set_step_graphs`]).
    pub fn step_graphs(&self) -> bool {
        self.step_graphs
    }

    /// The step's inputs, checked: equal nonzero counts, ids in the vocab and positions
    /// in the context.
    fn host_step(
        &self,
        cache: &KvCache,
        tokens: &[u32],
        positions: &[u32],
        mask: &AncestorMask,
    ) -> Result<HostStep> {
        let n = tokens.len();
        if n == 0 || positions.len() != n || mask.len() != n {
            return Err(Error::InvalidInput {
                what: format!(
                    "{n} tokens, {} positions, mask of {} nodes: need equal nonzero counts",
                    positions.len(),
                    mask.len()
                ),
            });
        }
        let c = &self.config;
        let token_ids = tokens
            .iter()
            .map(|&t| {
                device_index(t, c.vocab_size).ok_or(Error::TokenOutOfRange {
                    token: t,
                    vocab_size: c.vocab_size,
                })
            })
            .collect::<Result<Vec<i32>>>()?;
        let position_ids = positions
            .iter()
            .map(|&p| {
                device_index(p, c.context_len).ok_or(Error::PositionOutOfRange {
                    position: p,
                    max_positions: c.context_len,
                })
            })
            .collect::<Result<Vec<i32>>>()?;
        let past = i32::try_from(cache.len()).map_err(|_| Error::InvalidInput {
            what: format!("cache length {} exceeds i32", cache.len()),
        })?;
        Ok(HostStep::new(token_ids, position_ids, mask, past))
    }

    /// [`Llama::forward_ids`] without a step graph, launch by launch: the blocks over
    /// every node, then the head and the ids of nodes `first..` a slice of rows at a time
    /// ([`Llama::head_slices`]).
    /// `step` is [`Llama::host_step`]'s, and `positions` its nodes', for the draws.
    fn ids_launched(
        &self,
        cache: &mut KvCache,
        step: &HostStep,
        positions: &[u32],
        first: usize,
        k: usize,
        draw: Option<&Draw>,
    ) -> Result<TokenIds> {
        let n = step.len();
        cache.reserve(n)?;
        let mut run = || {
            let stream = self.run_body(cache, &step.upload(&self.device));
            let slices = self
                .head_slices(first..n)
                .into_iter()
                .map(|range| {
                    let draw = draw.map(|d| (d, &positions[range.clone()], None));
                    let rows = stream.clone().slice([range, 0..self.config.d_model]);
                    step_ids(&self.head(rows), k, draw)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(TokenIds::stacked(slices))
        };
        if self.on_wgpu() {
            run()
        } else {
            on_cpu_pool(run)
        }
    }

    /// [`Llama::forward_rows`] past its checks, on inputs already on the device.
    fn run_blocks(&self, cache: &mut KvCache, inputs: &StepInputs, rows: LogitRows) -> Logits {
        let stream = self.run_body(cache, inputs);
        let n = stream.dims()[0];
        let d = self.config.d_model;
        if rows == LogitRows::Last {
            return self.head(stream.slice([n - 1..n, 0..d]));
        }
        let slices = self.head_slices(0..n);
        if let [_] = slices[..] {
            return self.head(stream);
        }
        let logits = slices
            .into_iter()
            .map(|range| self.head(stream.clone().slice([range, 0..d])).tensor)
            .collect();
        Logits {
            tensor: Tensor::cat(logits, 0),
        }
    }

    /// Where the head cuts a forward's `rows` (the last of them its last node): slices of
    /// [`HEAD_ROWS`], so that no slice's logits pass WebGPU's binding limit, and on the
    /// CPU, past the rows whose products are row-invariant ([`CPU_MAX_ROWS`]), the last
    /// row alone. The last row's logits are then bit for bit those of
    /// [`LogitRows::Last`]: plain decoding reads only them after a prefill, and Token
    /// Recycling the prompt's last rows'.
    fn head_slices(&self, rows: Range<usize>) -> Vec<Range<usize>> {
        let cut = |rows: Range<usize>| {
            rows.clone()
                .step_by(HEAD_ROWS)
                .map(move |start| start..(start + HEAD_ROWS).min(rows.end))
        };
        if self.on_wgpu() || rows.len() <= CPU_MAX_ROWS {
            return cut(rows).collect();
        }
        let last = rows.end - 1;
        cut(rows.start..last)
            .chain(std::iter::once(last..rows.end))
            .collect()
    }

    /// The blocks: every node's residual stream after the last, `[n, d_model]`, its K/V
    /// written into the cache's pending slots.
    fn run_body(&self, cache: &mut KvCache, inputs: &StepInputs) -> Tensor<2> {
        let c = &self.config;
        let n = inputs.ids.dims()[0];
        let heads = Heads::of(c);
        let ops = self.ops.for_nodes(n);

        // The residual stream, [n, d_model]: each block's two projections add into it.
        let mut stream = layer_ops::embed(&self.token_embd, &inputs.ids);
        // [n, 2 * head_dim]
        let rope = self.rope.clone().select(0, inputs.positions.clone());
        let norm = |weight| Norm {
            weight,
            eps: c.rms_eps,
        };

        for (layer, block) in self.blocks.iter().enumerate() {
            let weights = QkvWeights {
                norm: norm(&block.attn_norm),
                w_qkv: &block.w_qkv,
            };
            // [n, q | …]: the queries; the keys and values are in the cache.
            let queries = layer_ops::project_qkv(
                ops,
                cache,
                layer,
                &stream,
                weights,
                &rope,
                &inputs.slots,
                heads,
            );
            let input = AttentionInput {
                queries,
                rope: &rope,
                tree_mask: &inputs.tree_mask,
                ancestry: &inputs.ancestry,
                slots: &inputs.slots,
                heads,
            };
            // [n, n_heads * head_dim]
            let attn = layer_ops::attend(ops, cache, layer, input);
            stream = layer_ops::add_project(ops, stream, attn, &block.wo);
            // [n, 2 * d_ffn]: gate, then up
            let gate_up =
                layer_ops::normed_project(ops, &stream, norm(&block.ffn_norm), &block.w_gate_up);
            stream = layer_ops::add_swiglu_down(ops, stream, gate_up, &block.w_down);
        }
        stream
    }

    /// The final norm and the output projection: `[rows, d_model]` -> `[rows, vocab]`.
    fn head(&self, stream: Tensor<2>) -> Logits {
        let ops = self.ops.for_nodes(stream.dims()[0]);
        let norm = Norm {
            weight: &self.output_norm,
            eps: self.config.rms_eps,
        };
        Logits {
            tensor: layer_ops::normed_project(ops, &stream, norm, &self.output),
        }
    }

    /// Reads ids back from the device; the only readback the decode loop needs per step.
    pub async fn read_ids(&self, ids: TokenIds) -> Result<Vec<u32>> {
        ids.read().await
    }
}

/// The table the attention reads RoPE angles from, `[context_len, 2 * head_dim]`: per
/// position, `cos` at both columns of a pair, then `-sin` at the first and `+sin` at the
/// second, with `theta_i = base^(-2i / head_dim)`, computed in f64 so long positions keep
/// their precision. One table, so one gather per step serves every layer.
fn rope_table(c: &LlamaConfig, device: &Device) -> Tensor<2> {
    let half = c.head_dim / 2;
    let mut table = Vec::with_capacity(c.context_len * 2 * c.head_dim);
    let mut sin = Vec::with_capacity(c.head_dim);
    for pos in 0..c.context_len {
        sin.clear();
        for i in 0..half {
            let theta = f64::from(c.rope_theta).powf(-2.0 * i as f64 / c.head_dim as f64);
            let angle = pos as f64 * theta;
            let (s, co) = (angle.sin() as f32, angle.cos() as f32);
            table.extend([co, co]);
            sin.extend([-s, s]);
        }
        table.extend_from_slice(&sin);
    }
    Tensor::from_data(
        TensorData::new(table, [c.context_len, 2 * c.head_dim]),
        device,
    )
}

/// An out-major matrix on the CPU, `dims` `[out, in]`: f32 `data` with its blocks where
/// the products read them, or, where `data` is empty, the blocks alone.
fn out_major(
    data: Vec<f32>,
    dims: [usize; 2],
    quant: Option<QuantRows>,
    device: &Device,
) -> Matrix {
    Matrix {
        tensor: (!data.is_empty()).then(|| Tensor::from_data(TensorData::new(data, dims), device)),
        layout: Layout::OutIn,
        quant: quant
            .filter(|_| crate::cpu_matmul::reads_blocks())
            .map(Arc::new),
    }
}

/// A matrix's blocks on a wgpu device, as the WGSL kernels read them ([`Layout::Blocks`]).
fn gpu_blocks(blocks: &QuantRows, device: &Device) -> Matrix {
    let words = blocks.gpu_words();
    let row_words = words.len() / blocks.rows();
    // The words' bits, carried in f32s: kernels bind them as u32 and nothing computes on
    // them as floats.
    let bits = words.into_iter().map(f32::from_bits).collect::<Vec<_>>();
    Matrix {
        tensor: Some(Tensor::from_data(
            TensorData::new(bits, [blocks.rows(), row_words]),
            device,
        )),
        layout: Layout::Blocks(blocks.kind()),
        quant: None,
    }
}

/// A weight matrix on the host, `[in, out]` row-major, on its way to the device.
struct InOut {
    n_in: usize,
    n_out: usize,
    data: Vec<f32>,
}

impl InOut {
    /// GGUF dims `[in, out]` are stored row-major as `[out, in]`; transposed here so the
    /// forward is `x @ W` on contiguous memory.
    fn from_gguf(t: HostTensor) -> Self {
        let (n_in, n_out) = (t.dims[0], t.dims[1]);
        let mut data = vec![0.0f32; t.data.len()];
        for o in 0..n_out {
            for i in 0..n_in {
                data[i * n_out + o] = t.data[o * n_in + i];
            }
        }
        Self { n_in, n_out, data }
    }

    /// `[A | B | …]`: the matrices' columns side by side (all have the same `n_in`).
    fn side_by_side(parts: &[InOut]) -> Self {
        let n_in = parts[0].n_in;
        let n_out = parts.iter().map(|p| p.n_out).sum();
        let mut data = Vec::with_capacity(n_in * n_out);
        for i in 0..n_in {
            for p in parts {
                data.extend_from_slice(&p.data[i * p.n_out..][..p.n_out]);
            }
        }
        Self { n_in, n_out, data }
    }
}

/// Deterministic pseudo-random weights (splitmix64 per tensor): norms near 1, matrices
/// uniform with a `1/sqrt(fan_in)` scale so activations stay O(1) through the layers.
fn random_weight(c: &LlamaConfig, name: WeightName, seed: u64) -> HostTensor {
    let dims = name.expected_dims(c);
    let len = dims.iter().product::<usize>();
    let mut state = seed
        ^ name
            .gguf_name()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // uniform in [-1, 1)
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let data = if dims.len() == 1 {
        (0..len).map(|_| 1.0 + 0.2 * next()).collect()
    } else {
        let scale = match name {
            WeightName::TokenEmbd => 1.0,
            _ => 1.7 / (dims[0] as f32).sqrt(),
        };
        (0..len).map(|_| scale * next()).collect()
    };
    HostTensor {
        dims,
        data,
        quant: None,
    }
}

/// Runs `f` on a thread of rayon's pool. The CPU backend's products split their work with
/// rayon, and from a thread outside the pool each split hands its work over and sleeps
/// until it is done, some 150 times a step; from inside the pool a split only queues its
/// half for the other threads. On the dev machine, two builds run in turn: with one
/// rayon thread a one-node step took 18.4 ms against 23.2, and with two, 8 nodes took
/// 34.4 ms against 39.0 (one node: 15.4 against 15.3).
#[cfg(not(target_arch = "wasm32"))]
fn on_cpu_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// Runs `f` here: wasm has no threads.
#[cfg(target_arch = "wasm32")]
fn on_cpu_pool<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_matmul::max_abs_diff;
    use burn::tensor::read_sync;

    /// Max abs difference allowed between a tree forward and the equivalent chain forward:
    /// both are f32 with different matmul shapes, so summation order differs slightly.
    const TREE_TOLERANCE: f32 = 1e-4;

    fn cpu() -> Device {
        Device::flex()
    }

    /// A small deterministic generator for test inputs.
    struct Lcg(u64);
    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) as usize) % n
        }
    }

    fn read_logits(logits: Logits) -> Vec<f32> {
        read_sync(logits.read()).expect("read logits")
    }

    /// Feeds `tokens` as a chain from the cache's current position and commits them all.
    fn feed_chain(model: &Llama, cache: &mut KvCache, tokens: &[u32]) -> Logits {
        let past = cache.len() as u32;
        let positions: Vec<u32> = (0..tokens.len() as u32).map(|i| past + i).collect();
        let logits = model
            .forward(
                cache,
                tokens,
                &positions,
                &AncestorMask::causal(tokens.len()),
            )
            .expect("chain forward");
        let all: Vec<usize> = (0..tokens.len()).collect();
        cache.compact(&all).expect("compact chain");
        logits
    }

    fn random_tree(rng: &mut Lcg, n: usize, vocab: usize) -> (Vec<u32>, Vec<Option<usize>>) {
        let tokens = (0..n).map(|_| rng.below(vocab) as u32).collect();
        let parents = (0..n)
            .map(|i| if i == 0 { None } else { Some(rng.below(i)) })
            .collect();
        (tokens, parents)
    }

    fn path_to(parents: &[Option<usize>], node: usize) -> Vec<usize> {
        let mut path = vec![node];
        let mut at = node;
        while let Some(p) = parents[at] {
            path.push(p);
            at = p;
        }
        path.reverse();
        path
    }

    fn depth_positions(parents: &[Option<usize>], past: usize) -> Vec<u32> {
        (0..parents.len())
            .map(|i| (past + path_to(parents, i).len() - 1) as u32)
            .collect()
    }

    #[test]
    fn ancestor_mask_from_parents_matches_diagram() {
        let mask = AncestorMask::from_parents(&[None, Some(0), Some(1), Some(0)]).expect("mask");
        let rows: Vec<Vec<bool>> = (0..4)
            .map(|i| (0..4).map(|j| mask.allowed(i, j)).collect())
            .collect();
        assert_eq!(
            rows,
            vec![
                vec![true, false, false, false],
                vec![true, true, false, false],
                vec![true, true, true, false],
                vec![true, false, false, true],
            ]
        );
        let chain = AncestorMask::from_parents(&[None, Some(0), Some(1)]).expect("chain");
        assert_eq!(chain, AncestorMask::causal(3));
        assert!(AncestorMask::from_parents(&[None, Some(1)]).is_err());
    }

    #[test]
    fn tree_forward_equals_each_root_to_node_path_as_a_chain() {
        let config = LlamaConfig::tiny();
        let device = cpu();
        for (case, tied) in [(0u64, true), (1, false), (2, true)] {
            let model = Llama::random(config.clone(), 7 + case, tied, &device).expect("model");
            let mut rng = Lcg(case * 1000 + 3);
            let prompt: Vec<u32> = (0..5 + case as usize)
                .map(|_| rng.below(config.vocab_size) as u32)
                .collect();
            let mut cache = model.new_cache(64);
            feed_chain(&model, &mut cache, &prompt);
            let past = cache.len();

            let n = 12;
            let (tokens, parents) = random_tree(&mut rng, n, config.vocab_size);
            let mask = AncestorMask::from_parents(&parents).expect("mask");
            let positions = depth_positions(&parents, past);
            let mut tree_cache = cache.clone();
            let tree = read_logits(
                model
                    .forward(&mut tree_cache, &tokens, &positions, &mask)
                    .expect("tree forward"),
            );
            let vocab = config.vocab_size;
            for node in 0..n {
                let path: Vec<u32> = path_to(&parents, node).iter().map(|&i| tokens[i]).collect();
                let mut chain_cache = cache.clone();
                let chain = read_logits(feed_chain(&model, &mut chain_cache, &path));
                let last = &chain[(path.len() - 1) * vocab..path.len() * vocab];
                let row = &tree[node * vocab..(node + 1) * vocab];
                let diff = max_abs_diff(last, row);
                assert!(
                    diff <= TREE_TOLERANCE,
                    "case {case} node {node}: tree vs chain max abs diff {diff}"
                );
            }
        }
    }

    #[test]
    fn the_last_row_alone_is_the_last_row_of_all_and_fills_the_same_cache() {
        let config = LlamaConfig::tiny();
        let model = Llama::random(config.clone(), 5, true, &cpu()).expect("model");
        let mut rng = Lcg(11);
        // Both sides of CPU_MAX_ROWS: a few-row product, and burn's matmul (the last row
        // apart, in a product of its own).
        for n in [6, 40] {
            let tokens: Vec<u32> = (0..n)
                .map(|_| rng.below(config.vocab_size) as u32)
                .collect();
            let positions: Vec<u32> = (0..n as u32).collect();
            let mask = AncestorMask::causal(n);
            let (mut all_cache, mut last_cache) = (model.new_cache(64), model.new_cache(64));
            let all = read_logits(
                model
                    .forward(&mut all_cache, &tokens, &positions, &mask)
                    .expect("forward"),
            );
            let last = read_logits(
                model
                    .forward_rows(&mut last_cache, &tokens, &positions, &mask, LogitRows::Last)
                    .expect("forward of the last row"),
            );
            let vocab = config.vocab_size;
            assert_eq!(last.len(), vocab, "n {n}: one row");
            assert_eq!(last, all[(n - 1) * vocab..], "n {n}");
            // The next token sees the same cache either way.
            let chain: Vec<usize> = (0..n).collect();
            all_cache.compact(&chain).expect("compact");
            last_cache.compact(&chain).expect("compact");
            let next = [rng.below(vocab) as u32];
            let after_all = read_logits(feed_chain(&model, &mut all_cache, &next));
            let after_last = read_logits(feed_chain(&model, &mut last_cache, &next));
            assert_eq!(after_all, after_last, "n {n}");
        }
    }

    /// A random model of `config` (tied embeddings) and a prompt pass of `n` random
    /// tokens over it: tokens, positions and a causal mask.
    fn random_prompt_pass(
        config: LlamaConfig,
        seed: u64,
        n: usize,
    ) -> (Llama, Vec<u32>, Vec<u32>, AncestorMask) {
        let model = Llama::random(config.clone(), seed, true, &cpu()).expect("model");
        let mut rng = Lcg(seed);
        let tokens = (0..n)
            .map(|_| rng.below(config.vocab_size) as u32)
            .collect();
        (
            model,
            tokens,
            (0..n as u32).collect(),
            AncestorMask::causal(n),
        )
    }

    /// Past [`HEAD_ROWS`] nodes the head and the ids run a slice of rows at a time; the
    /// ids, greedy and drawn, are those of the whole forward's logits.
    #[test]
    fn ids_of_a_forward_in_head_slices_are_those_of_all_its_logits() {
        let config = LlamaConfig {
            context_len: 512,
            ..LlamaConfig::tiny()
        };
        let n = 2 * HEAD_ROWS + 44;
        let (model, tokens, positions, mask) = random_prompt_pass(config, 5, n);
        let draw = Draw {
            temperature: 0.8,
            top_p: 0.9,
            seed: 7,
        };
        let logits = model
            .forward(&mut model.new_cache(n), &tokens, &positions, &mask)
            .expect("forward");
        for draw in [None, Some(&draw)] {
            let whole = step_ids(&logits, 8, draw.map(|d| (d, &positions[..], None)))
                .expect("ids of all logits");
            let sliced = model
                .forward_ids(&mut model.new_cache(n), &tokens, &positions, &mask, 8, draw)
                .expect("ids in slices");
            assert_eq!(sliced.dims(), [n, 8 + usize::from(draw.is_some())]);
            let [whole, sliced] = [whole, sliced].map(|ids| read_sync(ids.read()).expect("read"));
            assert_eq!(sliced, whole, "drawn: {}", draw.is_some());
        }
    }

    #[test]
    fn ids_from_a_node_on_are_the_last_rows_of_every_nodes_ids() {
        let config = LlamaConfig {
            context_len: 512,
            ..LlamaConfig::tiny()
        };
        let n = HEAD_ROWS + 30;
        let (model, tokens, positions, mask) = random_prompt_pass(config, 6, n);
        let draw = Draw {
            temperature: 0.8,
            top_p: 0.9,
            seed: 9,
        };
        for draw in [None, Some(&draw)] {
            let every = model
                .forward_ids(&mut model.new_cache(n), &tokens, &positions, &mask, 8, draw)
                .expect("every node's ids");
            let width = every.dims()[1];
            let every = read_sync(every.read()).expect("read");
            // Past the row-invariant rows, within them, and the last node alone.
            for first in [20, n - CPU_MAX_ROWS, n - 1] {
                let mut cache = model.new_cache(n);
                let ids = model
                    .forward_ids_from(&mut cache, &tokens, &positions, &mask, first, 8, draw)
                    .expect("ids from a node on");
                assert_eq!(ids.dims(), [n - first, width]);
                let ids = read_sync(ids.read()).expect("read");
                // The last node's ids are plain decoding's, bit for bit; the others may
                // come from products over other tiles of rows.
                assert_eq!(
                    ids[(n - 1 - first) * width..],
                    every[(n - 1) * width..],
                    "from {first}"
                );
            }
        }
        let err = model.forward_ids_from(
            &mut model.new_cache(n),
            &tokens,
            &positions,
            &mask,
            n,
            8,
            None,
        );
        assert!(err.is_err(), "a first node past the last");
    }

    #[test]
    fn compaction_leaves_cache_as_if_only_the_accepted_path_was_fed() {
        let config = LlamaConfig::tiny();
        let device = cpu();
        let model = Llama::random(config.clone(), 11, true, &device).expect("model");
        let mut rng = Lcg(42);
        for round in 0..4 {
            let prompt: Vec<u32> = (0..6)
                .map(|_| rng.below(config.vocab_size) as u32)
                .collect();
            let mut cache = model.new_cache(64);
            feed_chain(&model, &mut cache, &prompt);
            let past = cache.len();
            let (tokens, parents) = random_tree(&mut rng, 10, config.vocab_size);
            let mask = AncestorMask::from_parents(&parents).expect("mask");
            let positions = depth_positions(&parents, past);
            model
                .forward(&mut cache, &tokens, &positions, &mask)
                .expect("tree forward");
            // Accept the path to the last node (round 0: a non-prefix path in general) or
            // to a random node.
            let leaf = if round == 0 { 9 } else { rng.below(10) };
            let accepted = path_to(&parents, leaf);
            cache.compact(&accepted).expect("compact");
            assert_eq!(cache.len(), past + accepted.len());

            let next = [rng.below(config.vocab_size) as u32, 5];
            let got = read_logits(feed_chain(&model, &mut cache, &next));

            let mut reference = model.new_cache(64);
            let fed: Vec<u32> = prompt
                .iter()
                .copied()
                .chain(accepted.iter().map(|&i| tokens[i]))
                .collect();
            feed_chain(&model, &mut reference, &fed);
            let want = read_logits(feed_chain(&model, &mut reference, &next));
            let diff = max_abs_diff(&got, &want);
            assert!(diff <= TREE_TOLERANCE, "round {round}: diff {diff}");
        }
    }

    #[test]
    fn cache_full_is_an_error_not_a_slide() {
        let config = LlamaConfig::tiny();
        let model = Llama::random(config, 1, true, &cpu()).expect("model");
        let mut cache = model.new_cache(4);
        feed_chain(&model, &mut cache, &[1, 2, 3]);
        let err = model
            .forward(&mut cache, &[4, 5], &[3, 4], &AncestorMask::causal(2))
            .expect_err("overflow");
        assert!(
            matches!(
                err,
                Error::CacheFull {
                    need: 5,
                    capacity: 4
                }
            ),
            "{err}"
        );
        assert_eq!(cache.len(), 3);
        let err = model
            .forward(&mut cache, &[99], &[3], &AncestorMask::causal(1))
            .expect_err("token range");
        assert!(
            matches!(err, Error::TokenOutOfRange { token: 99, .. }),
            "{err}"
        );
        assert!(
            cache.compact(&[0]).is_err(),
            "nothing pending after an error"
        );
    }

    #[test]
    fn top_k_ids_match_a_host_sort_and_start_with_argmax() {
        let device = cpu();
        let (n, vocab, k) = (5, 40, 8);
        let mut rng = Lcg(9);
        let values: Vec<f32> = (0..n * vocab)
            .map(|_| rng.below(1000) as f32 * 0.01)
            .collect();
        let logits = Logits {
            tensor: Tensor::from_data(TensorData::new(values.clone(), [n, vocab]), &device),
        };
        let top = read_sync(logits.top_k_ids(k).read()).expect("top-k");
        let argmax = read_sync(logits.argmax_ids().read()).expect("argmax");
        for row in 0..n {
            let slice = &values[row * vocab..(row + 1) * vocab];
            let mut order: Vec<usize> = (0..vocab).collect();
            // Descending by value, ties to the lower id.
            order.sort_by(|&a, &b| slice[b].total_cmp(&slice[a]).then(a.cmp(&b)));
            let want: Vec<u32> = order[..k].iter().map(|&i| i as u32).collect();
            assert_eq!(&top[row * k..(row + 1) * k], &want[..], "row {row}");
            assert_eq!(argmax[row], want[0], "row {row}");
        }
    }

    #[test]
    fn a_model_cut_to_its_first_layers_loads_with_that_many() {
        let bytes = tiny_gguf("llama", None, |_| {});
        let file = GgufFile::parse(&bytes).expect("tiny");
        let cut = crate::gguf_writer::keep_first_layers(&file, 1).expect("cut");
        let cut = GgufFile::parse(&cut).expect("valid");
        assert_eq!(LlamaConfig::from_gguf(&cut).expect("config").n_layers, 1);
        assert!(cut.tensors().iter().all(|t| !t.name.starts_with("blk.1.")));
        assert_eq!(
            cut.tensor_bytes("token_embd.weight").expect("kept"),
            file.tensor_bytes("token_embd.weight").expect("orig")
        );
        Llama::from_gguf(&cut, &cpu()).expect("loads");
        for bad in [0, 3] {
            assert!(crate::gguf_writer::keep_first_layers(&file, bad).is_err());
        }
    }

    /// A GGUF of the tiny config with `Llama::random`'s weights stored as F32, its
    /// metadata changed by `edit` before the tensors are added.
    fn tiny_gguf(
        arch: &str,
        extra_tensor: Option<&str>,
        edit: impl FnOnce(&mut crate::gguf_writer::GgufWriter),
    ) -> Vec<u8> {
        use crate::gguf_writer::GgufWriter;
        let c = LlamaConfig::tiny();
        let mut w = GgufWriter::new();
        w.llama_config(arch, &c);
        for name in WeightName::all(c.n_layers) {
            if name == WeightName::Output {
                continue; // tied
            }
            let t = random_weight(&c, name, 5);
            let dims: Vec<u64> = t.dims.iter().map(|&d| d as u64).collect();
            w.tensor_f32(&name.gguf_name(), &dims, &t.data);
        }
        if let Some(extra) = extra_tensor {
            w.tensor_f32(extra, &[c.d_model as u64], &vec![0.0; c.d_model]);
        }
        edit(&mut w);
        w.to_bytes()
    }

    /// A model's weight bytes are what it holds: its parameters as f32 (a tied head
    /// counted once), or, loaded from a file in Q8_0, its matrices' blocks where the
    /// CPU's products read them (36 bytes for 32 values: the codes, and the scale as f32).
    #[test]
    fn weight_bytes_are_what_the_model_holds() {
        use crate::gguf_writer::GgufWriter;
        let c = LlamaConfig {
            d_model: 64,
            d_ffn: 96,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            ..LlamaConfig::tiny()
        };
        let (q, kv) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        let layer = c.d_model * (q + 2 * kv) + q * c.d_model + 3 * c.d_model * c.d_ffn;
        let head = c.vocab_size * c.d_model;
        let matrices = head + c.n_layers * layer;
        let norms = (2 * c.n_layers + 1) * c.d_model;
        for (tied, values) in [(true, matrices + norms), (false, matrices + norms + head)] {
            let model = Llama::random(c.clone(), 3, tied, &cpu()).expect("model");
            assert_eq!(model.weight_bytes(), 4 * values, "tied: {tied}");
        }
        let mut w = GgufWriter::new();
        w.llama_config("llama", &c);
        for name in WeightName::all(c.n_layers) {
            if name == WeightName::Output {
                continue; // tied
            }
            let t = random_weight(&c, name, 3);
            let dims: Vec<u64> = t.dims.iter().map(|&d| d as u64).collect();
            if dims.len() == 2 {
                w.tensor_q8_0(&name.gguf_name(), &dims, &t.data);
            } else {
                w.tensor_f32(&name.gguf_name(), &dims, &t.data);
            }
        }
        let bytes = w.to_bytes();
        let file = GgufFile::parse(&bytes).expect("parse");
        let model = Llama::from_gguf(&file, &cpu()).expect("load");
        let held = if crate::cpu_matmul::reads_blocks() {
            matrices / 32 * 36
        } else {
            4 * matrices
        };
        assert_eq!(model.weight_bytes(), held + 4 * norms);
    }

    #[test]
    fn from_gguf_loads_the_same_model_as_from_weights() {
        let bytes = tiny_gguf("llama", None, |_| {});
        let file = GgufFile::parse(&bytes).expect("parse");
        assert_eq!(
            LlamaConfig::from_gguf(&file).expect("config"),
            LlamaConfig::tiny()
        );
        let device = cpu();
        let loaded = Llama::from_gguf(&file, &device).expect("load");
        let random = Llama::random(LlamaConfig::tiny(), 5, true, &device).expect("random");
        let tokens = [1, 2, 3, 60];
        let run = |m: &Llama| {
            let mut cache = m.new_cache(8);
            read_logits(feed_chain(m, &mut cache, &tokens))
        };
        assert_eq!(run(&loaded), run(&random));
    }

    #[test]
    fn from_gguf_rejects_other_architectures_and_qkv_biases() {
        let bytes = tiny_gguf("qwen2", None, |_| {});
        let file = GgufFile::parse(&bytes).expect("parse");
        let err = LlamaConfig::from_gguf(&file).expect_err("qwen2");
        assert!(
            matches!(err, Error::UnsupportedArchitecture { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("qwen2"), "{err}");

        let bytes = tiny_gguf("llama", Some("blk.0.attn_q.bias"), |_| {});
        let file = GgufFile::parse(&bytes).expect("parse");
        let err = Llama::from_gguf(&file, &cpu()).expect_err("bias");
        assert!(err.to_string().contains("blk.0.attn_q.bias"), "{err}");

        let bytes = tiny_gguf("llama", None, |w| {
            w.without_metadata("llama.attention.head_count");
        });
        let file = GgufFile::parse(&bytes).expect("parse");
        let err = LlamaConfig::from_gguf(&file).expect_err("missing key");
        assert!(
            err.to_string().contains("llama.attention.head_count"),
            "{err}"
        );
    }

    /// What the load would refuse, the check finds without reading a weight: a missing
    /// weight, one of other dims, one of a type samd cannot read.
    #[test]
    fn check_gguf_finds_what_the_load_refuses() {
        let c = LlamaConfig::tiny();
        let good = tiny_gguf("llama", None, |_| {});
        let file = GgufFile::parse(&good).expect("parse");
        assert_eq!(Llama::check_gguf(&file).expect("check"), c);

        let last = "blk.1.ffn_down.weight";
        type Edit = fn(&mut crate::gguf_writer::GgufWriter);
        let cases: [(&str, Edit); 3] = [
            ("missing weight", |w| {
                w.without_tensor("blk.1.ffn_down.weight");
            }),
            ("has dims", |w| {
                let c = LlamaConfig::tiny();
                w.without_tensor("blk.1.ffn_down.weight").tensor_f32(
                    "blk.1.ffn_down.weight",
                    &[c.d_model as u64, c.d_ffn as u64],
                    &vec![0.0; c.d_ffn * c.d_model],
                );
            }),
            ("cannot dequantise", |w| {
                let c = LlamaConfig::tiny();
                w.without_tensor("blk.1.ffn_down.weight").tensor_raw(
                    "blk.1.ffn_down.weight",
                    &[c.d_ffn as u64, c.d_model as u64],
                    GgmlType::F64,
                    vec![0; c.d_ffn * c.d_model * 8],
                );
            }),
        ];
        for (says, edit) in cases {
            let bytes = tiny_gguf("llama", None, edit);
            let file = GgufFile::parse(&bytes).expect("parse");
            let checked = Llama::check_gguf(&file).expect_err(says).to_string();
            assert!(
                checked.contains(last) && checked.contains(says),
                "{checked}"
            );
            let loaded = Llama::from_gguf(&file, &cpu()).expect_err(says);
            assert_eq!(loaded.to_string(), checked);
        }
    }

    /// A model as llama.cpp's presets write one (Q5_0 and Q8_0 side by side in q|k|v,
    /// IQ4_NL, Q4_K, IQ4_XS, Q5_1, Q5_K, Q3_K, Q6_K), held in blocks of other kinds, gives
    /// the logits of the same file dequantised to f32, bit for bit, in a prompt's pass:
    /// more rows than [`CPU_MAX_ROWS`] take burn's matmul, over each matrix widened from
    /// the blocks in one model and dequantised from the file in the other. (A step's few
    /// rows read the blocks in both; `cpu_matmul::check_block_products` holds that code
    /// to the dequantised values for each kind.)
    #[test]
    fn other_types_held_as_blocks_give_the_f32_models_logits() {
        use crate::gguf_writer::GgufWriter;
        let c = LlamaConfig {
            d_model: 256,
            d_ffn: 256,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 64,
            n_layers: 3,
            ..LlamaConfig::tiny()
        };
        let mut w = GgufWriter::new();
        w.llama_config("llama", &c);
        for (seed, name) in (0u64..).zip(WeightName::all(c.n_layers)) {
            let dims = name.expected_dims(&c);
            let dtype = match name {
                WeightName::Output => continue, // tied
                WeightName::OutputNorm | WeightName::AttnNorm(_) | WeightName::FfnNorm(_) => {
                    w.tensor_f32(&name.gguf_name(), &[dims[0] as u64], &vec![1.0; dims[0]]);
                    continue;
                }
                WeightName::TokenEmbd | WeightName::AttnQ(_) | WeightName::AttnK(_) => {
                    GgmlType::Q5_0
                }
                WeightName::AttnV(_) => GgmlType::Q8_0,
                WeightName::AttnOutput(0) => GgmlType::IQ4_NL,
                WeightName::AttnOutput(1) => GgmlType::Q5_1,
                WeightName::AttnOutput(_) => GgmlType::Q3_K,
                WeightName::FfnGate(_) | WeightName::FfnUp(_) => GgmlType::Q4_K,
                WeightName::FfnDown(0) => GgmlType::IQ4_XS,
                WeightName::FfnDown(1) => GgmlType::Q5_K,
                WeightName::FfnDown(_) => GgmlType::Q6_K,
            };
            let blocks = dims[0] * dims[1] / dtype.block_size() as usize;
            let bytes = crate::quant_rows::random_blocks(dtype, blocks, seed);
            let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
            w.tensor_raw(&name.gguf_name(), &dims, dtype, bytes);
        }
        let bytes = w.to_bytes();
        let file = GgufFile::parse(&bytes).expect("parse");
        let tokens: Vec<u32> = (0..CPU_MAX_ROWS as u32 + 4).map(|i| i * 7 % 64).collect();
        let run = |form| {
            let model = Llama::from_gguf_with(&file, &cpu(), form).expect("load");
            let mut cache = model.new_cache(tokens.len());
            read_logits(feed_chain(&model, &mut cache, &tokens))
        };
        let (blocks, f32s) = (run(MatrixForm::Blocks), run(MatrixForm::F32));
        assert!(blocks.iter().all(|x| x.is_finite()));
        assert_eq!(blocks, f32s);
    }

    /// A file may claim any number of layers: the load ends at the first one it lacks.
    #[test]
    fn a_file_claiming_more_layers_than_it_holds_is_an_error() {
        use crate::gguf::Value;
        let bytes = tiny_gguf("llama", None, |w| {
            w.without_metadata("llama.block_count")
                .metadata("llama.block_count", Value::U32(u32::MAX));
        });
        let file = GgufFile::parse(&bytes).expect("parse");
        let err = Llama::from_gguf(&file, &cpu()).expect_err("layers");
        assert!(err.to_string().contains("blk.2."), "{err}");
    }

    /// A file may claim any context; the RoPE table is built for the positions served,
    /// not for 2^31 (which would be terabytes, and a crash rather than an error).
    #[test]
    fn a_file_claiming_a_huge_context_loads_with_the_positions_served() {
        use crate::config::MAX_CONTEXT_LEN;
        use crate::gguf::Value;
        let bytes = tiny_gguf("llama", None, |w| {
            w.without_metadata("llama.context_length")
                .metadata("llama.context_length", Value::U32(i32::MAX as u32));
        });
        let file = GgufFile::parse(&bytes).expect("parse");
        let model = Llama::from_gguf(&file, &cpu()).expect("loads");
        assert_eq!(model.config().context_len, MAX_CONTEXT_LEN);
        let mut cache = model.new_cache(4);
        read_logits(feed_chain(&model, &mut cache, &[1, 2, 3]));
    }
}
