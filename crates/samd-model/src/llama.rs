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
//!   ([`crate::block_rows`]): a verify step reads those, a sixth of the bytes, and
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

use burn::tensor::{Device, Tensor, TensorData};

use crate::block_form::BlockForm;
use crate::block_rows::{BLOCK, BlockRows};
use crate::config::LlamaConfig;
use crate::cpu_matmul::CPU_MAX_ROWS;
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, TensorInfo};
use crate::kernels::{Heads, SKINNY_MAX_ROWS};
use crate::kv_cache::KvCache;
use crate::layer_ops::{self, AttentionInput, BlockOps, Layout, Matrix, Norm, QkvWeights};
use crate::sampler::Draw;
use crate::step_graph::{HostStep, StepInputs, StepPadding, padded_nodes};

mod ancestor_mask;
mod ids;
mod random;
mod weights;

pub use ancestor_mask::AncestorMask;
pub(crate) use ids::floats_read;
pub use ids::{Logits, TokenIds};
pub use weights::{HostTensor, WeightName};

use ids::step_ids;

/// The next [`Llama`]'s id.
static NEXT_MODEL_ID: AtomicU64 = AtomicU64::new(0);

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

/// [`Llama::max_tree_nodes`] of a model on wgpu, or else on the CPU, for what needs
/// the bound without a model (trace replay).
pub const fn max_tree_nodes_on(wgpu: bool) -> usize {
    if wgpu { MAX_TREE_NODES } else { CPU_MAX_ROWS }
}

/// Which nodes' logits a forward returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitRows {
    /// Every node's.
    All,
    /// The last node's only.
    Last,
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
    /// `[q_dim + 2 * kv_dim]`, added to `q | k | v` where the model has biases.
    qkv_bias: Option<Tensor<1>>,
    /// `[head_dim]` each: the query heads' and the key heads' RMSNorm weights, where the
    /// model norms them (Qwen3).
    head_norms: Option<[Tensor<1>; 2]>,
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
/// ([`BlockForm::of`]: quantised blocks, or 16-bit floats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatrixForm {
    /// In the file's blocks alone: on wgpu as the kernels read them
    /// ([`BlockRows::gpu_words`]), and on a CPU whose products read blocks
    /// ([`crate::cpu_matmul::reads_blocks`]) as those do; a prompt's products there read
    /// them too in wasm (integer products), and natively widen each matrix to f32 for
    /// that product alone (wasm's over 16-bit floats too). For Q4_1 a sixth of the
    /// memory of f32 (SmolLM2-135M: 92 MB against 540), for F16 half, and no widening at
    /// load. The default everywhere: natively, with
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
            let finite = t.data.iter().all(|x| x.is_finite())
                && t.quant.as_ref().is_none_or(BlockRows::is_finite);
            if !finite {
                return Err(Error::NonFiniteWeight {
                    name: name.gguf_name(),
                });
            }
            let t = match name.feeds_rope() {
                true => t.with_interleaved_rope(config.rope_style, config.head_dim),
                false => t,
            };
            // A matrix may come as its blocks alone where products read them: the
            // kernels on wgpu, and some CPUs' products.
            let blocks_only = t.data.is_empty()
                && t.quant.as_ref().is_some_and(|q| {
                    q.rows() * q.cols() == values && (layout == Layout::InOut || reads_on_cpu(q))
                });
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
                .and_then(BlockRows::stack);
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

        let mut embd = required(WeightName::TokenEmbd)?;
        // [vocab, d_model]: the row-major layout as stored, whose rows a step gathers, and
        // which a tied head reads out-major.
        let token_embd = match (layout, embd.quant.take()) {
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
            let qkv_bias = match config.qkv_bias {
                true => {
                    let parts = WeightName::AttnQBias(i).fused().into_iter();
                    let parts = parts.map(&mut required).collect::<Result<Vec<_>>>()?;
                    Some(vector(HostTensor {
                        dims: Vec::new(),
                        data: parts.into_iter().flat_map(|p| p.data).collect(),
                        quant: None,
                    }))
                }
                false => None,
            };
            let head_norms = match config.qk_norm {
                true => Some([
                    vector(required(WeightName::AttnQNorm(i))?),
                    vector(required(WeightName::AttnKNorm(i))?),
                ]),
                false => None,
            };
            blocks.push(Block {
                attn_norm: vector(required(WeightName::AttnNorm(i))?),
                w_qkv,
                qkv_bias,
                head_norms,
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
                        + b.qkv_bias.as_ref().map_or(0, vector_bytes)
                        + b.head_norms
                            .iter()
                            .flatten()
                            .map(vector_bytes)
                            .sum::<usize>()
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
        for name in WeightName::all(&config) {
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
        refuse_unread_tensors(file, &config)?;
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
        // What the CPU's products do not read, it holds as f32 alone.
        let kept = |q: &BlockRows| layout == Layout::InOut || reads_on_cpu(q);
        Self::from_weights(config, device, |name| {
            let gguf_name = name.gguf_name();
            let Ok(info) = file.tensor(&gguf_name) else {
                return Ok(None);
            };
            let dims = weight_dims(info)?;
            let quant = keep_blocks
                .then(|| BlockRows::of_tensor(file, info))
                .flatten()
                .filter(kept);
            // Where the products read a matrix's blocks alone, widening it on the host
            // would be wasted; but matrices held side by side stack their blocks only if
            // all are kept as one kind, else they are widened together.
            let blocks_only = form == MatrixForm::Blocks
                && quant.is_some()
                && name.fused().iter().all(|mate| {
                    file.tensor(&mate.gguf_name())
                        .is_ok_and(|t| BlockForm::of(t.dtype) == BlockForm::of(info.dtype))
                });
            let data = if blocks_only {
                Vec::new()
            } else {
                file.tensor_f32(&gguf_name)?
            };
            Ok(Some(HostTensor { dims, data, quant }))
        })
    }

    /// The bytes of the largest buffer [`Llama::from_gguf`] makes for `file`'s weights on
    /// a wgpu device, which the device must be able to bind: a matrix, or the matrices
    /// held side by side as one, in the file's blocks where all are of one kind the
    /// kernels read, as 16-bit floats where all are of one such type, else as f32 (as
    /// [`Llama::largest_weight_bytes`] finds once loaded). Tensors the file lacks count
    /// as nothing: the load will name them.
    pub fn largest_gpu_weight_bytes(file: &GgufFile<'_>, config: &LlamaConfig) -> u64 {
        WeightName::all(config)
            .filter(|&name| name.fused().first() == Some(&name))
            .filter(|name| name.expected_dims(config).len() == 2)
            .filter_map(|name| {
                let parts = name
                    .fused()
                    .into_iter()
                    .map(|p| file.tensor(&p.gguf_name()).ok());
                Some(gpu_matrix_bytes(&parts.collect::<Option<Vec<_>>>()?))
            })
            .max()
            .unwrap_or(0)
    }

    /// The bytes of the largest buffer holding one of its weights: what
    /// [`Llama::largest_gpu_weight_bytes`] foresees on wgpu.
    pub fn largest_weight_bytes(&self) -> usize {
        let blocks = self.blocks.iter();
        [&self.token_embd, &self.output]
            .into_iter()
            .chain(blocks.flat_map(|b| [&b.w_qkv, &b.wo, &b.w_gate_up, &b.w_down]))
            .map(Matrix::bytes)
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
        max_tree_nodes_on(self.on_wgpu())
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
        let mut cache =
            KvCache::new(&self.config, max_seq_len, &self.device).with_block_ops(self.ops);
        cache.set_step_graphs(self.step_graphs);
        cache
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
            .filter(|_| self.step_padding() == StepPadding::PowerOfTwo)
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

    /// How a verify step pads its nodes: to its step graph's size where steps replay
    /// graphs ([`Llama::forward_ids`]), when the cache has room for the padding.
    pub fn step_padding(&self) -> StepPadding {
        if self.step_graphs && self.ops == BlockOps::Kernels {
            StepPadding::PowerOfTwo
        } else {
            StepPadding::Exact
        }
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
                bias: block.qkv_bias.as_ref(),
                head_norms: block.head_norms.as_ref(),
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

/// Refuses a file with a tensor the forward pass would not read: each is a part of some
/// other model (an output projection's bias, a mixture's router, a second norm), which a
/// model run without it would get wrong without a word. llama.cpp likewise refuses a file
/// whose tensors its graph does not all take. Called once every weight [`WeightName::all`]
/// names is known to be in the file, so the names it builds are bounded by the file's.
fn refuse_unread_tensors(file: &GgufFile<'_>, config: &LlamaConfig) -> Result<()> {
    let read: std::collections::HashSet<String> = WeightName::all(config)
        .map(WeightName::gguf_name)
        .chain([crate::config::ROPE_FREQS.to_owned()])
        .collect();
    match file.tensors().iter().find(|t| !read.contains(&t.name)) {
        None => Ok(()),
        Some(t) => Err(Error::UnsupportedArchitecture {
            arch: file.architecture()?.to_owned(),
            reason: format!(
                "tensor {} is not part of the {} blocks this code runs",
                t.name,
                if config.qkv_bias {
                    "Llama (with q/k/v biases)"
                } else {
                    "Llama"
                }
            ),
        }),
    }
}

/// The table the attention reads RoPE angles from, `[context_len, 2 * head_dim]`: per
/// position, `cos` at both columns of a pair, then `-sin` at the first and `+sin` at the
/// second, with `theta_i = base^(-2i / head_dim) / factor_i` (the file's RoPE frequency
/// factors, else 1), computed in f64 so long positions keep their precision. One table, so
/// one gather per step serves every layer.
fn rope_table(c: &LlamaConfig, device: &Device) -> Tensor<2> {
    let half = c.head_dim / 2;
    let mut table = Vec::with_capacity(c.context_len * 2 * c.head_dim);
    let mut sin = Vec::with_capacity(c.head_dim);
    let thetas: Vec<f64> = (0..half)
        .map(|i| {
            let factor = c.rope_freq_factors.get(i).map_or(1.0, |&f| f64::from(f));
            f64::from(c.rope_theta).powf(-2.0 * i as f64 / c.head_dim as f64) / factor
        })
        .collect();
    for pos in 0..c.context_len {
        sin.clear();
        for &theta in &thetas {
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
    quant: Option<BlockRows>,
    device: &Device,
) -> Matrix {
    Matrix {
        tensor: (!data.is_empty()).then(|| Tensor::from_data(TensorData::new(data, dims), device)),
        layout: Layout::OutIn,
        quant: quant.filter(reads_on_cpu).map(Arc::new),
    }
}

/// Whether this CPU's products read `blocks` ([`crate::cpu_matmul::reads_blocks_of`]).
fn reads_on_cpu(blocks: &BlockRows) -> bool {
    crate::cpu_matmul::reads_blocks_of(blocks.form())
}

/// A matrix's blocks on a wgpu device, as the WGSL kernels read them ([`Layout::Blocks`]).
fn gpu_blocks(blocks: &BlockRows, device: &Device) -> Matrix {
    let words = blocks.gpu_words();
    let rows = blocks.rows();
    let row_words = words.len() / rows.max(1);
    // The words' bits, carried in f32s: kernels bind them as u32 and nothing computes on
    // them as floats.
    let bits = words.into_iter().map(f32::from_bits).collect::<Vec<_>>();
    Matrix {
        tensor: Some(Tensor::from_data(
            TensorData::new(bits, [rows, row_words]),
            device,
        )),
        layout: Layout::Blocks(blocks.form()),
        quant: None,
    }
}

/// The bytes a wgpu device holds `parts` in, side by side (see
/// [`Llama::largest_gpu_weight_bytes`]): the rule [`gpu_blocks`] follows at load, from
/// the tensors' types alone.
fn gpu_matrix_bytes(parts: &[&TensorInfo]) -> u64 {
    let values: u64 = parts.iter().map(|p| p.n_elements()).sum();
    // Rows of whole blocks, of the file's type and of the kernels' 32 values.
    let whole_blocks = parts.iter().all(|p| {
        let block = p.dtype.block_size().max(1);
        p.dims
            .first()
            .is_some_and(|&k| k.is_multiple_of(block) && k.is_multiple_of(BLOCK as u64))
    });
    let first = parts.first().and_then(|p| BlockForm::of(p.dtype));
    let one_form = parts.iter().all(|p| BlockForm::of(p.dtype) == first);
    match first.filter(|_| whole_blocks && one_form) {
        Some(form) => values / BLOCK as u64 * form.block_words() as u64 * 4,
        None => values * 4,
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
mod tests;
