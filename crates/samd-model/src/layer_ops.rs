//! The pieces of a block that have a fused kernel, each beside its reference in burn ops.
//!
//! [`BlockOps::Kernels`] runs our WGSL kernels ([`crate::kernels`]): few launches, wgpu
//! only. [`BlockOps::Reference`] runs burn ops on any backend; it is what the CPU runs,
//! and what the kernels are tested against on wgpu. Both compute the same function up to
//! f32 summation order.

use burn::backend::DispatchDevice;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

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
pub(crate) enum Layout {
    /// `[in, out]`: the block matrices, stored so the reference is `x @ W`.
    InOut,
    /// `[out, in]`: the tied output head, which is the token embedding.
    OutIn,
}

/// Whether a product of `rows` rows takes the skinny matmul kernel: a verify step's few
/// rows do; a prefill's many take burn's matmul.
fn skinny(ops: BlockOps, rows: usize) -> bool {
    ops == BlockOps::Kernels && rows <= SKINNY_MAX_ROWS
}

/// `x @ W` for `x`: `[n, in]`, with `w` laid out as `layout` says.
pub(crate) fn project(ops: BlockOps, x: Tensor<2>, w: &Tensor<2>, layout: Layout) -> Tensor<2> {
    let out_major = layout == Layout::OutIn;
    if skinny(ops, x.dims()[0]) {
        return Tensor::from_dispatch(<burn::backend::Dispatch as BlockKernels>::skinny_matmul(
            &x.into_dispatch(),
            &w.clone().into_dispatch(),
            out_major,
        ));
    }
    if out_major {
        x.matmul(w.clone().transpose())
    } else {
        x.matmul(w.clone())
    }
}

/// The feed-forward's second half: `(silu(gate) * up) @ W_down` for `gate_up`:
/// `[n, 2 * d_ffn]`, gate then up, and `w_down`: `[d_ffn, d_model]`. The kernel folds
/// SwiGLU into the projection's reads, so it costs no launch of its own.
pub(crate) fn swiglu_down(ops: BlockOps, gate_up: Tensor<2>, w_down: &Tensor<2>) -> Tensor<2> {
    let [n, width] = gate_up.dims();
    if skinny(ops, n) {
        return Tensor::from_dispatch(<burn::backend::Dispatch as BlockKernels>::swiglu_matmul(
            &gate_up.into_dispatch(),
            &w_down.clone().into_dispatch(),
        ));
    }
    let d_ffn = width / 2;
    let gate = gate_up.clone().slice([0..n, 0..d_ffn]);
    let up = gate_up.slice([0..n, d_ffn..width]);
    // SiLU written out: five elementwise ops against the eight of burn's `silu` (a
    // sigmoid through log and exp).
    let gate = gate.clone() / gate.neg().exp().add_scalar(1.0);
    (gate * up).matmul(w_down.clone())
}

/// The residual add and the RMSNorm after it: `(x + delta, rms_norm(x + delta))`, where
/// `rms_norm(s) = s / sqrt(mean(s²) + eps) * weight` over the last dim. `x`, `delta`:
/// `[n, d]`.
pub(crate) fn add_rms_norm(
    ops: BlockOps,
    x: Tensor<2>,
    delta: Tensor<2>,
    weight: &Tensor<1>,
    eps: f32,
) -> (Tensor<2>, Tensor<2>) {
    match ops {
        BlockOps::Kernels => {
            let (sum, normed) = <burn::backend::Dispatch as BlockKernels>::add_rms_norm(
                &x.into_dispatch(),
                &delta.into_dispatch(),
                &weight.clone().into_dispatch(),
                eps,
            );
            (Tensor::from_dispatch(sum), Tensor::from_dispatch(normed))
        }
        BlockOps::Reference => {
            let sum = x + delta;
            (sum.clone(), reference_rms_norm(sum, weight, eps))
        }
    }
}

/// The mean is broadcast to `[n, d]` before the rest, so that every elementwise op after
/// the reduction has the output's shape.
fn reference_rms_norm(x: Tensor<2>, weight: &Tensor<1>, eps: f32) -> Tensor<2> {
    let [n, d] = x.dims();
    // [n, 1] -> [n, d]
    let mean_square = x.clone().square().mean_dim(1).expand([n, d]);
    // [n, d] / [n, d] * [1, d]
    x / mean_square.add_scalar(eps).sqrt() * weight.clone().reshape([1, d])
}

/// The inputs of one layer's attention over `n` new nodes.
pub(crate) struct AttentionInput<'a> {
    /// `[n, width]`: the projection's output, `q | k | v | q swapped | k swapped` (see
    /// `Block::w_qkv` in llama.rs).
    pub qkv: Tensor<2>,
    /// `[n, 2 * head_dim]`: each node's `cos | signed sin` (see [`rope_rotate`]).
    pub rope: &'a Tensor<2>,
    /// `[n, n]`: 0 where node i sees new node j, a large negative number elsewhere.
    pub tree_mask: &'a Tensor<2>,
    pub heads: Heads,
}

/// Stores the nodes' keys and values in `cache` (pending slots `len .. len + n` of
/// `layer`), then returns their attention outputs, `[n, n_heads * head_dim]`.
pub(crate) fn attend(
    ops: BlockOps,
    cache: &mut KvCache,
    layer: usize,
    input: AttentionInput<'_>,
) -> Tensor<2> {
    match ops {
        BlockOps::Kernels => kernel_attend(cache, layer, input),
        BlockOps::Reference => reference_attend(cache, layer, input),
    }
}

/// Two launches: `store_kv.wgsl` writes the nodes' K/V into the cache in place, then
/// `tree_attention.wgsl` reads them back with everything committed.
fn kernel_attend(cache: &mut KvCache, layer: usize, input: AttentionInput<'_>) -> Tensor<2> {
    type Kernels = burn::backend::Dispatch;
    let past = cache.len();
    let qkv = input.qkv.into_dispatch();
    let rope = input.rope.clone().into_dispatch();
    cache.update_layer(layer, |t| {
        Tensor::from_dispatch(<Kernels as BlockKernels>::store_kv(
            t.into_dispatch(),
            &qkv,
            &rope,
            past,
            input.heads,
        ))
    });
    Tensor::from_dispatch(<Kernels as BlockKernels>::tree_attention(
        &qkv,
        &rope,
        &cache.layer(layer).clone().into_dispatch(),
        &input.tree_mask.clone().into_dispatch(),
        past,
        input.heads,
    ))
}

/// GQA never materialises repeated K/V: the query heads of one KV head are folded into
/// the row dimension (`[n_kv_heads, group * n, head_dim]`), so one batched matmul serves
/// all heads.
fn reference_attend(cache: &mut KvCache, layer: usize, input: AttentionInput<'_>) -> Tensor<2> {
    let AttentionInput {
        qkv,
        rope,
        tree_mask,
        heads,
    } = input;
    let Heads {
        n_heads,
        n_kv_heads,
        head_dim,
    } = heads;
    let [n, _] = qkv.dims();
    let (q_dim, kv_dim, group) = (heads.q_dim(), heads.kv_dim(), heads.group());
    let part = |start: usize, width: usize, heads: usize| {
        qkv.clone()
            .slice([0..n, start..start + width])
            .reshape([n, heads, head_dim])
    };
    // [n, 1, head_dim]: broadcast over heads.
    let cos = rope
        .clone()
        .slice([0..n, 0..head_dim])
        .reshape([n, 1, head_dim]);
    let sin = rope
        .clone()
        .slice([0..n, head_dim..2 * head_dim])
        .reshape([n, 1, head_dim]);
    // [n, heads, head_dim]
    let q = rope_rotate(
        part(0, q_dim, n_heads),
        part(q_dim + 2 * kv_dim, q_dim, n_heads),
        &cos,
        &sin,
    );
    let k = rope_rotate(
        part(q_dim, kv_dim, n_kv_heads),
        part(2 * q_dim + 2 * kv_dim, kv_dim, n_kv_heads),
        &cos,
        &sin,
    );
    let v = part(q_dim + kv_dim, kv_dim, n_kv_heads);
    let past = cache.len();
    let total = past + n;
    // [1, n_kv_heads, total, head_dim] each
    let (k_all, v_all) = cache.write_and_window(layer, k.swap_dims(0, 1), v.swap_dims(0, 1));
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
/// `swapped` is `x` with each pair's entries exchanged; the projection computes it in the
/// same matmul as `x`, so RoPE is two products and a sum with no gather. `x`, `swapped`:
/// `[n, heads, head_dim]`; `cos`, `sin`: `[n, 1, head_dim]` (signed sin).
fn rope_rotate(x: Tensor<3>, swapped: Tensor<3>, cos: &Tensor<3>, sin: &Tensor<3>) -> Tensor<3> {
    x * cos.clone() + swapped * sin.clone()
}
