//! The pieces of a block that have a fused kernel, each beside its reference in burn ops.
//!
//! [`BlockOps::Kernels`] runs our WGSL kernels ([`crate::kernels`]): few launches, wgpu
//! only. [`BlockOps::Reference`] runs burn ops on any backend; it is what the CPU runs,
//! and what the kernels are tested against on wgpu. Both compute the same function up to
//! f32 summation order.

use std::ops::Range;
use std::sync::Arc;

use burn::backend::DispatchDevice;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor};

use crate::block_form::BlockForm;
use crate::block_rows::BlockRows;
use crate::cpu_attention::CpuAttention;
use crate::cpu_kv_store::CpuKvStore;
use crate::cpu_matmul::{CPU_MAX_ROWS, CpuKernels};
use crate::cpu_rms_norm::CpuRmsNorm;
use crate::cpu_swiglu::CpuSwiglu;
use crate::kernels::{BlockKernels, Heads, MAX_WORKGROUPS, SKINNY_MAX_ROWS};
use crate::kv_cache::KvCache;

/// Which implementation of a block's fused pieces a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOps {
    /// Our WGSL kernels: wgpu devices only.
    Kernels,
    /// burn ops: every backend.
    Reference,
}

impl BlockOps {
    /// The kernels on a wgpu device, the reference elsewhere.
    pub fn for_device(device: &Device) -> Self {
        match device.as_dispatch() {
            DispatchDevice::Cube(_) => Self::Kernels,
            _ => Self::Reference,
        }
    }

    /// What a forward of `n` nodes runs: the kernels put nodes on one grid dimension, so
    /// a larger forward takes the reference.
    pub(crate) fn for_nodes(self, n: usize) -> Self {
        if n > MAX_WORKGROUPS {
            Self::Reference
        } else {
            self
        }
    }
}

/// How a projection's weight matrix is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[in, out]`: what the WGSL kernels read, neighbouring lanes along a row's outputs.
    InOut,
    /// `[out, in]`: the tied output head, which is the token embedding, and on the CPU
    /// every matrix: a product of a few rows is then dot products along contiguous rows
    /// ([`few_rows_matmul`](crate::cpu_matmul::few_rows_matmul)), and GGUF stores them so.
    OutIn,
    /// Out-major, in blocks of 32 values (`[out, words per row]`, the words' bits in
    /// f32s): what the WGSL kernels read on wgpu where the file has blocks of a kind they
    /// widen, or 16-bit floats ([`BlockRows::gpu_words`]: a sixth of the bytes of f32 for
    /// Q4_1, half for F16).
    Blocks(BlockForm),
}

impl Layout {
    /// The layout a model's f32 matrices take on `device`.
    pub(crate) fn for_device(device: &Device) -> Self {
        match device.as_dispatch() {
            DispatchDevice::Flex(_) => Self::OutIn,
            _ => Self::InOut,
        }
    }
}

/// A projection's weights, in the layout they are stored in.
#[derive(Debug, Clone)]
pub(crate) struct Matrix {
    /// The weights on the device; `None` on the CPU where the file's blocks alone are
    /// kept (`quant`), which every product then reads.
    pub tensor: Option<Tensor<2>>,
    pub layout: Layout,
    /// The same weights in the file's blocks, on the CPU: what its products of a few rows
    /// read, a sixth of the bytes of f32 for Q4_1, half for F16.
    pub quant: Option<Arc<BlockRows>>,
}

impl Matrix {
    /// The bytes it holds: its tensor (f32s, or the blocks' words) and its host blocks.
    pub fn bytes(&self) -> usize {
        let tensor = self
            .tensor
            .as_ref()
            .map_or(0, |t| 4 * t.dims().iter().product::<usize>());
        tensor + self.quant.as_ref().map_or(0, |q| q.bytes())
    }

    /// Outputs of the projection.
    fn outputs(&self) -> usize {
        let Some(tensor) = &self.tensor else {
            return self.host_blocks().rows();
        };
        let [rows, cols] = tensor.dims();
        match self.layout {
            Layout::InOut => cols,
            Layout::OutIn | Layout::Blocks(_) => rows,
        }
    }

    /// The tensor as a kernel takes it.
    fn dispatch(&self) -> burn::backend::DispatchTensor {
        self.device_tensor().clone().into_dispatch()
    }

    /// The weights on the device, which every matrix but the CPU's blocks alone has.
    fn device_tensor(&self) -> &Tensor<2> {
        self.tensor
            .as_ref()
            .expect("invariant: a matrix without a tensor keeps its blocks on the CPU")
    }

    /// The blocks of a matrix that keeps them alone.
    fn host_blocks(&self) -> &BlockRows {
        self.quant
            .as_ref()
            .expect("invariant: a matrix without a tensor keeps its blocks")
    }
}

/// Whether a product of `rows` rows by `w` takes the skinny matmul kernel. A verify
/// step's few rows do. So do a prefill's many where `w` is in the file's blocks: the
/// staged kernel reads the blocks once per 32 rows (a prompt of 1,000 tokens reads a
/// Q4_1 model's matrices 32 times, 2 GB: about 0.4 ms of an H200's bandwidth), and it
/// folds the norm, RoPE, the K/V store, SwiGLU and the residual adds, where burn's
/// matmul needs the blocks widened to f32 first and each of those steps as launches of
/// its own: five launches per block in place of about twenty. Over f32 weights a
/// prefill takes burn's matmul, which reuses each weight across larger tiles.
fn skinny(ops: BlockOps, rows: usize, w: &Matrix) -> bool {
    ops == BlockOps::Kernels && (rows <= SKINNY_MAX_ROWS || matches!(w.layout, Layout::Blocks(_)))
}

/// The backend our kernels extend.
type Kernels = burn::backend::Dispatch;

/// An RMSNorm's weight, `[d]`, and epsilon: `rms_norm(x) = x / sqrt(mean(x²) + eps) *
/// weight` over each row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Norm<'a> {
    pub weight: &'a Tensor<1>,
    pub eps: f32,
}

/// Widest projection that takes its RMSNorm folded in. Every workgroup of the skinny
/// matmul takes the norm of its rows again: beside the weights of a block's projections
/// that is noise, but the output head has 12,288 workgroups (49,152 columns, 4 each), and
/// folded into it the norm doubled the head's time on lavapipe.
const NORM_FOLD_MAX_COLUMNS: usize = 4096;

/// `rms_norm(x) @ W` for `x`: `[n, in]`. One launch on the skinny path up to
/// [`NORM_FOLD_MAX_COLUMNS`], the norm folded into the product.
pub(crate) fn normed_project(
    ops: BlockOps,
    x: &Tensor<2>,
    norm: Norm<'_>,
    w: &Matrix,
) -> Tensor<2> {
    let rows = x.dims()[0];
    if skinny(ops, rows, w) && w.outputs() <= NORM_FOLD_MAX_COLUMNS {
        return Tensor::from_dispatch(<Kernels as BlockKernels>::normed_skinny_matmul(
            &x.clone().into_dispatch(),
            &norm.weight.clone().into_dispatch(),
            norm.eps,
            &w.dispatch(),
            w.layout,
        ));
    }
    let h = rms_norm(ops, x, norm);
    if skinny(ops, rows, w) {
        return Tensor::from_dispatch(<Kernels as BlockKernels>::skinny_matmul(
            &h.into_dispatch(),
            &w.dispatch(),
            w.layout,
        ));
    }
    matmul(h, w)
}

/// Rows `ids` of `table` (`[vocab, d]`, out-major or in blocks): the token embeddings a
/// step starts from.
pub(crate) fn embed(table: &Matrix, ids: &Tensor<1, Int>) -> Tensor<2> {
    match table.layout {
        Layout::Blocks(form) => {
            Tensor::from_dispatch(<Kernels as BlockKernels>::gather_block_rows(
                &table.dispatch(),
                ids.clone().into_dispatch(),
                form,
            ))
        }
        Layout::OutIn | Layout::InOut => {
            debug_assert_eq!(
                table.layout,
                Layout::OutIn,
                "invariant: embeddings load out-major"
            );
            match &table.tensor {
                Some(tensor) => tensor.clone().select(0, ids.clone()),
                None => Tensor::from_dispatch(<Kernels as CpuKernels>::gather_block_rows(
                    ids.clone().into_dispatch(),
                    table.host_blocks(),
                )),
            }
        }
    }
}

/// `x @ W` through burn's matmul, or on burn's CPU backend for a few rows through our
/// products, which read the weights once where burn's packs them: over the file's blocks
/// where the matrix has them ([`few_rows_matmul_blocks`](crate::cpu_matmul::few_rows_matmul_blocks)), else
/// over f32 ([`few_rows_matmul`](crate::cpu_matmul::few_rows_matmul)). In wasm, a
/// prompt's pass over blocks without an f32 copy takes our integer products too
/// (`many_rows_matmul_quant`): a 650-token prefill took 4.6 s with burn's gemm over each
/// matrix widened. Natively such a pass widens the matrix to f32, for that product
/// alone, for burn's matmul on every core; so do blocks on wgpu, for the reference ops.
fn matmul(x: Tensor<2>, w: &Matrix) -> Tensor<2> {
    let few = x.dims()[0] <= CPU_MAX_ROWS;
    let prompt_over_blocks = cfg!(target_arch = "wasm32") && w.tensor.is_none();
    match (w.layout, &w.tensor, &w.quant) {
        (Layout::OutIn, _, Some(quant)) if (few || prompt_over_blocks) && on_cpu(&x) => {
            Tensor::from_dispatch(<Kernels as CpuKernels>::matmul_blocks(
                &x.into_dispatch(),
                quant,
            ))
        }
        (Layout::OutIn, Some(tensor), _) if few && on_cpu(&x) => {
            Tensor::from_dispatch(<Kernels as CpuKernels>::few_rows_matmul(
                &x.into_dispatch(),
                &tensor.clone().into_dispatch(),
            ))
        }
        #[cfg(not(target_arch = "wasm32"))]
        (Layout::OutIn, None, Some(quant)) => {
            let dense = Tensor::<2>::from_data(
                burn::tensor::TensorData::new(quant.widen(), [quant.rows(), quant.cols()]),
                &x.device(),
            );
            x.matmul(dense.transpose())
        }
        (Layout::OutIn, _, _) => x.matmul(w.device_tensor().clone().transpose()),
        (Layout::InOut, _, _) => x.matmul(w.device_tensor().clone()),
        (Layout::Blocks(form), _, _) => {
            let dense = <Kernels as BlockKernels>::dequantize_blocks(&w.dispatch(), form);
            x.matmul(Tensor::<2>::from_dispatch(dense).transpose())
        }
    }
}

/// Whether `t` lives on burn's CPU backend.
fn on_cpu<const D: usize>(t: &Tensor<D>) -> bool {
    matches!(t.device().as_dispatch(), DispatchDevice::Flex(_))
}

/// `stream + x @ W` (the residual add after the attention's output projection) for `x`:
/// `[n, in]`. One launch on the skinny path, in place.
pub(crate) fn add_project(ops: BlockOps, stream: Tensor<2>, x: Tensor<2>, w: &Matrix) -> Tensor<2> {
    if skinny(ops, x.dims()[0], w) {
        return add_skinny(stream, x, w, false);
    }
    stream + matmul(x, w)
}

/// `stream + (silu(gate) * up) @ W_down`: the feed-forward's second half and the residual
/// add after it, for `gate_up`: `[n, 2 * d_ffn]`, gate then up. One launch on the skinny
/// path, in place: SwiGLU is folded into the projection's reads. On the CPU SwiGLU is one
/// pass ([`crate::cpu_swiglu`]).
pub(crate) fn add_swiglu_down(
    ops: BlockOps,
    stream: Tensor<2>,
    gate_up: Tensor<2>,
    w_down: &Matrix,
) -> Tensor<2> {
    let [n, width] = gate_up.dims();
    if skinny(ops, n, w_down) {
        return add_skinny(stream, gate_up, w_down, true);
    }
    if on_cpu(&gate_up) {
        let gated = <Kernels as CpuSwiglu>::cpu_swiglu(&gate_up.into_dispatch());
        return stream + matmul(Tensor::from_dispatch(gated), w_down);
    }
    let d_ffn = width / 2;
    let gate = gate_up.clone().slice([0..n, 0..d_ffn]);
    let up = gate_up.slice([0..n, d_ffn..width]);
    // SiLU written out: five elementwise ops against the eight of burn's `silu` (a
    // sigmoid through log and exp).
    let gate = gate.clone() / gate.neg().exp().add_scalar(1.0);
    stream + matmul(gate * up, w_down)
}

/// [`BlockKernels::add_skinny_matmul`] on tensors.
fn add_skinny(stream: Tensor<2>, x: Tensor<2>, w: &Matrix, gated: bool) -> Tensor<2> {
    Tensor::from_dispatch(<Kernels as BlockKernels>::add_skinny_matmul(
        stream.into_dispatch(),
        &x.into_dispatch(),
        &w.dispatch(),
        w.layout,
        gated,
    ))
}

/// `rms_norm(x)`, `x`: `[n, d]`: our kernel on wgpu, one pass per row on the CPU
/// ([`crate::cpu_rms_norm`]), burn ops elsewhere (the reference on wgpu).
fn rms_norm(ops: BlockOps, x: &Tensor<2>, norm: Norm<'_>) -> Tensor<2> {
    match ops {
        BlockOps::Kernels => Tensor::from_dispatch(<Kernels as BlockKernels>::rms_norm(
            &x.clone().into_dispatch(),
            &norm.weight.clone().into_dispatch(),
            norm.eps,
        )),
        BlockOps::Reference if on_cpu(x) => {
            Tensor::from_dispatch(<Kernels as CpuRmsNorm>::cpu_rms_norm(
                &x.clone().into_dispatch(),
                &norm.weight.clone().into_dispatch(),
                norm.eps,
            ))
        }
        BlockOps::Reference => reference_rms_norm(x.clone(), norm),
    }
}

/// The mean is broadcast to `[n, d]` before the rest, so that every elementwise op after
/// the reduction has the output's shape.
fn reference_rms_norm(x: Tensor<2>, norm: Norm<'_>) -> Tensor<2> {
    let [n, d] = x.dims();
    // [n, 1] -> [n, d]
    let mean_square = x.clone().square().mean_dim(1).expand([n, d]);
    // [n, d] / [n, d] * [1, d]
    x / mean_square.add_scalar(norm.eps).sqrt() * norm.weight.clone().reshape([1, d])
}

/// Where a step's `n` new nodes go: `[2]` ints on the device, the first new node's cache
/// slot (the committed positions) and `n`. The kernels read it from a buffer, which a
/// replayed step graph ([`crate::step_graph`]) refills each step; the reference ops take
/// the same from the cache.
pub(crate) type Slots = Tensor<1, Int>;

/// A layer's weights for [`project_qkv`]: the attention's norm, `w_qkv`, whose outputs
/// are `q | k | v`, their biases, and the query and key heads' norms, where the model has
/// them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QkvWeights<'a> {
    pub norm: Norm<'a>,
    pub w_qkv: &'a Matrix,
    pub bias: Option<&'a Tensor<1>>,
    pub head_norms: Option<&'a [Tensor<1>; 2]>,
}

/// The attention's projection for `n` new nodes: `rms_norm(x) @ w_qkv (+ bias)`, whose
/// columns are `q | k | v`, each query and key head RMS-normed where the model says.
/// Stores the keys (RoPE applied, by each node's `rope` row) and values in `cache`'s
/// pending slots of `layer`, and returns a tensor whose first `q_dim` columns are the
/// queries, before RoPE. One launch on the skinny path; with head norms, two on the
/// kernels (the norms need each head whole, which a projection's lanes never hold).
// The kernel's inputs, as `BlockKernels::skinny_qkv_projection` takes them.
#[allow(clippy::too_many_arguments)]
pub(crate) fn project_qkv(
    ops: BlockOps,
    cache: &mut KvCache,
    layer: usize,
    x: &Tensor<2>,
    weights: QkvWeights<'_>,
    rope: &Tensor<2>,
    slots: &Slots,
    heads: Heads,
) -> Tensor<2> {
    let QkvWeights {
        norm,
        w_qkv,
        bias,
        head_norms,
    } = weights;
    // The fused kernel writes each column as it computes it; a head's norm needs the head.
    if head_norms.is_none() && skinny(ops, x.dims()[0], w_qkv) {
        let (x, norm_weight, w_qkv_tensor) = (
            x.clone().into_dispatch(),
            norm.weight.clone().into_dispatch(),
            w_qkv.dispatch(),
        );
        let bias = bias.map(|b| b.clone().into_dispatch());
        let (rope, slots) = (rope.clone().into_dispatch(), slots.clone().into_dispatch());
        let mut queries = None;
        cache.update_layer(layer, |t| {
            let (eps, layout, t) = (norm.eps, w_qkv.layout, t.into_dispatch());
            let (q, t) = match &bias {
                Some(bias) => <Kernels as BlockKernels>::skinny_biased_qkv_projection(
                    &x,
                    &norm_weight,
                    eps,
                    &w_qkv_tensor,
                    bias,
                    layout,
                    t,
                    &rope,
                    slots,
                    heads,
                ),
                None => <Kernels as BlockKernels>::skinny_qkv_projection(
                    &x,
                    &norm_weight,
                    eps,
                    &w_qkv_tensor,
                    layout,
                    t,
                    &rope,
                    slots,
                    heads,
                ),
            };
            queries = Some(q);
            Tensor::from_dispatch(t)
        });
        return Tensor::from_dispatch(queries.expect("invariant: update_layer runs its closure"));
    }
    let mut qkv = normed_project(ops, x, norm, w_qkv);
    if let Some(bias) = bias {
        qkv = qkv + bias.clone().unsqueeze_dim(0);
    }
    match (ops, head_norms) {
        (BlockOps::Kernels, _) => {
            let (rope, slots) = (rope.clone().into_dispatch(), slots.clone().into_dispatch());
            let qkv = qkv.into_dispatch();
            let mut queries = None;
            cache.update_layer(layer, |t| {
                let t = t.into_dispatch();
                let (q, t) = match head_norms {
                    Some([q_norm, k_norm]) => <Kernels as BlockKernels>::norm_heads_store_kv(
                        qkv,
                        &q_norm.clone().into_dispatch(),
                        &k_norm.clone().into_dispatch(),
                        norm.eps,
                        t,
                        &rope,
                        slots,
                        heads,
                    ),
                    None => {
                        let t = <Kernels as BlockKernels>::store_kv(t, &qkv, &rope, slots, heads);
                        (qkv, t)
                    }
                };
                queries = Some(q);
                Tensor::from_dispatch(t)
            });
            return Tensor::from_dispatch(
                queries.expect("invariant: update_layer runs its closure"),
            );
        }
        (_, Some([q_norm, k_norm])) => {
            qkv = reference_norm_heads(qkv, [q_norm, k_norm], norm.eps, heads);
        }
        (_, None) => {}
    }
    if on_cpu(&qkv) {
        cpu_store_kv(cache, layer, &qkv, rope, heads);
    } else {
        reference_store_kv(cache, layer, &qkv, rope, heads);
    }
    qkv
}

/// `qkv` (`[n, q | k | v]`) with each query head RMS-normed by `weights[0]` and each key
/// head by `weights[1]` (Qwen3): a head a row of [`rms_norm`], whose CPU code sums each
/// row alone, as plain decoding does. The kernels fold it into the K/V store
/// ([`BlockKernels::norm_heads_store_kv`]).
fn reference_norm_heads(
    qkv: Tensor<2>,
    weights: [&Tensor<1>; 2],
    eps: f32,
    heads: Heads,
) -> Tensor<2> {
    let ops = BlockOps::Reference;
    let [n, width] = qkv.dims();
    let (q, kv, d) = (heads.q_dim(), heads.kv_dim(), heads.head_dim);
    let normed = |columns: Range<usize>, weight| {
        let len = columns.len();
        let rows = qkv.clone().slice([0..n, columns]).reshape([n * len / d, d]);
        rms_norm(ops, &rows, Norm { weight, eps }).reshape([n, len])
    };
    let values = qkv.clone().slice([0..n, q + kv..width]);
    Tensor::cat(
        vec![
            normed(0..q, weights[0]),
            normed(q..q + kv, weights[1]),
            values,
        ],
        1,
    )
}

/// Writes the keys (RoPE applied) and values of `qkv`: `[n, q | k | v]` into `cache`'s
/// pending slots of `layer`, on the CPU in one pass and in place
/// ([`crate::cpu_kv_store`]): the bits [`reference_store_kv`] writes.
fn cpu_store_kv(
    cache: &mut KvCache,
    layer: usize,
    qkv: &Tensor<2>,
    rope: &Tensor<2>,
    heads: Heads,
) {
    let (qkv, rope) = (qkv.clone().into_dispatch(), rope.clone().into_dispatch());
    let past = cache.len();
    cache.update_layer(layer, |t| {
        Tensor::from_dispatch(<Kernels as CpuKvStore>::cpu_store_kv(
            t.into_dispatch(),
            &qkv,
            &rope,
            past,
            heads,
        ))
    });
}

/// [`cpu_store_kv`] in burn ops: the reference on wgpu.
fn reference_store_kv(
    cache: &mut KvCache,
    layer: usize,
    qkv: &Tensor<2>,
    rope: &Tensor<2>,
    heads: Heads,
) {
    let [n, _] = qkv.dims();
    let (q_dim, kv_dim) = (heads.q_dim(), heads.kv_dim());
    let part = |start: usize| {
        qkv.clone().slice([0..n, start..start + kv_dim]).reshape([
            n,
            heads.n_kv_heads,
            heads.head_dim,
        ])
    };
    // [n, n_kv_heads, head_dim] -> [n_kv_heads, n, head_dim]
    let k = rope_rotate(part(q_dim), rope).swap_dims(0, 1);
    let v = part(q_dim + kv_dim).swap_dims(0, 1);
    cache.write(layer, k, v);
}

/// The inputs of one layer's attention over `n` new nodes.
pub(crate) struct AttentionInput<'a> {
    /// `[n, width]`: the queries before RoPE in the first `q_dim` columns, as
    /// [`project_qkv`] returns them.
    pub queries: Tensor<2>,
    /// `[n, 2 * head_dim]`: each node's `cos | signed sin` (see [`rope_rotate`]).
    pub rope: &'a Tensor<2>,
    /// `[n, n]`: 0 where node i sees new node j, a large negative number elsewhere.
    pub tree_mask: &'a Tensor<2>,
    /// The same as lists of each node's ancestors (step_graph.rs's `HostStep::ancestry`).
    pub ancestry: &'a Tensor<1, Int>,
    pub slots: &'a Slots,
    pub heads: Heads,
}

/// The nodes' attention outputs, `[n, n_heads * head_dim]`, over `layer`'s committed
/// slots and the nodes' own (stored by [`project_qkv`]).
pub(crate) fn attend(
    ops: BlockOps,
    cache: &KvCache,
    layer: usize,
    input: AttentionInput<'_>,
) -> Tensor<2> {
    match ops {
        BlockOps::Kernels => Tensor::from_dispatch(<Kernels as BlockKernels>::tree_attention(
            &input.queries.into_dispatch(),
            &input.rope.clone().into_dispatch(),
            &cache.layer(layer).clone().into_dispatch(),
            &input.tree_mask.clone().into_dispatch(),
            input.ancestry.clone().into_dispatch(),
            input.slots.clone().into_dispatch(),
            input.heads,
        )),
        BlockOps::Reference if on_cpu(cache.layer(layer)) => {
            Tensor::from_dispatch(<Kernels as CpuAttention>::cpu_tree_attention(
                &input.queries.into_dispatch(),
                &input.rope.clone().into_dispatch(),
                &cache.layer(layer).clone().into_dispatch(),
                input.ancestry.clone().into_dispatch(),
                cache.len(),
                input.heads,
            ))
        }
        BlockOps::Reference => reference_attend(cache, layer, input),
    }
}

/// GQA never materialises repeated K/V: the query heads of one KV head are folded into
/// the row dimension (`[n_kv_heads, group * n, head_dim]`), so one batched matmul serves
/// all heads.
fn reference_attend(cache: &KvCache, layer: usize, input: AttentionInput<'_>) -> Tensor<2> {
    let AttentionInput {
        queries,
        rope,
        tree_mask,
        heads,
        ..
    } = input;
    let Heads {
        n_heads,
        n_kv_heads,
        head_dim,
    } = heads;
    let [n, _] = queries.dims();
    let (q_dim, group) = (heads.q_dim(), heads.group());
    // [n, heads, head_dim]
    let q = rope_rotate(
        queries
            .slice([0..n, 0..q_dim])
            .reshape([n, n_heads, head_dim]),
        rope,
    );
    let past = cache.len();
    let total = past + n;
    // [1, n_kv_heads, total, head_dim] each
    let (k_all, v_all) = cache.window(layer);
    // [n, n_heads, head_dim] -> [n_heads, n, head_dim] -> [1, n_kv_heads, group * n, head_dim]:
    // query head h uses kv head h / group, so heads are kv-major.
    let q = q
        .swap_dims(0, 1)
        .reshape([1, n_kv_heads, group * n, head_dim]);
    // -> [1, n_kv_heads, group * n, total]
    let scale = 1.0 / (head_dim as f64).sqrt();
    let scores = q.matmul(k_all.swap_dims(2, 3)).mul_scalar(scale);
    // [n, past] ++ [n, n] -> [1, 1, n, total]: committed positions are always visible.
    let mask = if past == 0 {
        tree_mask.clone()
    } else {
        Tensor::cat(
            vec![
                Tensor::zeros([n, past], &tree_mask.device()),
                tree_mask.clone(),
            ],
            1,
        )
    }
    .reshape([1, 1, n, total]);
    // [n_kv_heads, group, n, total] + [1, 1, n, total]
    let scores = scores.reshape([n_kv_heads, group, n, total]) + mask;
    let probs = softmax(scores, 3).reshape([1, n_kv_heads, group * n, total]);
    // -> [1, n_kv_heads, group * n, head_dim] -> [n_heads, n, head_dim] -> [n, q_dim]
    probs
        .matmul(v_all)
        .reshape([n_heads, n, head_dim])
        .swap_dims(0, 1)
        .reshape([n, q_dim])
}

/// Interleaved RoPE (ggml "normal" mode): rotates pairs `(2i, 2i+1)` of each head by
/// `pos * theta_i`:
///
/// ```text
/// r[2i]     = x[2i]·cos − x[2i+1]·sin   = x[2i]·cos     + swapped[2i]·(−sin)
/// r[2i + 1] = x[2i]·sin + x[2i+1]·cos   = x[2i+1]·cos   + swapped[2i+1]·sin
/// ```
///
/// where `swapped` is `x` with each pair's entries exchanged. `x`: `[n, heads,
/// head_dim]`; `rope`: `[n, 2 * head_dim]`, each node's `cos | signed sin`.
fn rope_rotate(x: Tensor<3>, rope: &Tensor<2>) -> Tensor<3> {
    let [n, heads, head_dim] = x.dims();
    // [n, 1, head_dim]: broadcast over heads.
    let cos = rope
        .clone()
        .slice([0..n, 0..head_dim])
        .reshape([n, 1, head_dim]);
    let sin = rope
        .clone()
        .slice([0..n, head_dim..2 * head_dim])
        .reshape([n, 1, head_dim]);
    let swapped = x
        .clone()
        .reshape([n, heads, head_dim / 2, 2])
        .flip([3])
        .reshape([n, heads, head_dim]);
    x * cos + swapped * sin
}

#[cfg(test)]
mod tests {
    use burn::tensor::TensorData;

    use super::*;
    use crate::config::LlamaConfig;
    use crate::cpu_matmul::values;

    /// Both K/V stores over the same steps: a first of 3 nodes, committed, then 2 more.
    #[test]
    fn the_cpu_store_writes_the_bits_the_reference_ops_write() {
        let config = LlamaConfig::smollm2_135m();
        let heads = Heads::of(&config);
        let device = Device::flex();
        let width = heads.q_dim() + 2 * heads.kv_dim();
        let (mut ours, mut reference) = (
            KvCache::new(&config, 8, &device),
            KvCache::new(&config, 8, &device),
        );
        for (step, n) in [3, 2].into_iter().enumerate() {
            let tensor = |len: usize, cols: usize, seed: u64| {
                Tensor::<2>::from_data(
                    TensorData::new(values(len * cols, seed), [len, cols]),
                    &device,
                )
            };
            let qkv = tensor(n, width, 10 + step as u64);
            let rope = tensor(n, 2 * heads.head_dim, 20 + step as u64);
            for cache in [&mut ours, &mut reference] {
                cache.reserve(n).expect("room");
            }
            cpu_store_kv(&mut ours, 1, &qkv, &rope, heads);
            reference_store_kv(&mut reference, 1, &qkv, &rope, heads);
            let read = |c: &KvCache| c.layer(1).to_data().try_to_vec::<f32>().expect("f32");
            let written = read(&ours);
            let filled = written.iter().filter(|&&v| v != 0.0).count();
            assert_eq!(filled, 2 * (3 + n * step) * heads.kv_dim(), "step {step}");
            assert_eq!(written, read(&reference), "step {step}");
            for cache in [&mut ours, &mut reference] {
                cache.compact(&(0..n).collect::<Vec<_>>()).expect("commit");
            }
        }
    }
}
