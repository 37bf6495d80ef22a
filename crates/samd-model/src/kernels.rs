//! Our hand-written WGSL kernels for a block's hot spots, and how they plug into burn.
//!
//! On a GPU a verify step of this small model is bound by kernel launches, not by
//! arithmetic (`samd profile` counts them). burn's ops spend several launches on what
//! is one loop in a kernel, so each piece of a block that costs many launches has a
//! kernel in `shaders/`:
//!
//! | kernel | replaces (burn ops) |
//! |---|---|
//! | `add_rms_norm.wgsl` | the residual add, a reduction and the elementwise tail |
//! | `store_kv.wgsl` | RoPE on the keys, two transposes, two slice assignments |
//! | `tree_attention.wgsl` (+ `attention_combine.wgsl` past 64 keys) | RoPE on the queries, two batched matmuls, scale, mask, softmax |
//! | `skinny_matmul.wgsl` | burn's tiled matmul for products of few rows; with SwiGLU folded in, also the elementwise gate |
//!
//! They run on every wgpu device (Vulkan, Metal, DX12 natively, WebGPU in the browser)
//! through burn's backend-extension API. burn's kernel fusion is off: with these kernels
//! it merged nothing that mattered (one launch of 277), and its bookkeeping cost more host
//! time per step than it saved (6.36 ms against 7.24 ms for a one-node step on an H200).
//! [`crate::layer_ops`] chooses between them and the reference burn ops, which every
//! backend runs; the tests hold the two to the same logits on lavapipe and in the
//! browser.
//!
//! Runtime values a kernel needs beyond its buffers (how many nodes, where they go in
//! the cache) travel in a small uniform, so one compiled pipeline serves every step.
//! Sizes fixed for a model (head dim, widths, cache length) are compiled in.

use std::marker::PhantomData;

use burn::backend::tensor::FloatTensor;
use burn::backend::wgpu::{
    CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::backend::{Backend, Shape, backend_extension};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::{BufferBinding, KernelArguments, MetadataBindingInfo};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::DType;

use crate::config::LlamaConfig;

/// Most workgroups per grid dimension WebGPU guarantees. Kernels put nodes (or rows) on
/// one dimension, so a forward of more nodes than this takes the reference ops.
pub(crate) const MAX_WORKGROUPS: usize = 65_535;

/// A WGSL file in `shaders/`, with `{{ placeholders }}` that its caller fills.
pub(crate) trait Shader: Send + Sync + 'static {
    /// The file's text.
    const TEXT: &'static str;
}

/// A [`Shader`] with its placeholders' values: one compiled pipeline per distinct set.
///
/// Generic over the shader so that each kernel keeps its own type name, which is what
/// `samd profile` lists launches by.
pub(crate) struct WgslKernel<S> {
    params: Vec<(&'static str, String)>,
    shader: PhantomData<S>,
}

impl<S: Shader> WgslKernel<S> {
    pub(crate) fn new(params: Vec<(&'static str, String)>) -> Self {
        Self {
            params,
            shader: PhantomData,
        }
    }

    /// Launches the kernel on `client` with `lanes` threads per workgroup over a
    /// `workgroups` grid, binding `buffers` in order and then, if given, `info` as a
    /// `vec4<u32>` uniform.
    pub(crate) fn launch(
        self,
        client: &burn::cubecl::client::Client,
        lanes: u32,
        workgroups: [usize; 3],
        buffers: Vec<BufferBinding>,
        info: Option<[u32; 4]>,
    ) {
        let [x, y, z] = workgroups.map(|w| {
            u32::try_from(w)
                .ok()
                .filter(|&w| w as usize <= MAX_WORKGROUPS)
                .expect("invariant: callers keep grids within MAX_WORKGROUPS")
        });
        let mut args = KernelArguments::new().with_buffers(buffers);
        if let Some([a, b, c, d]) = info {
            let word = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
            args = args.with_info(MetadataBindingInfo::custom(vec![word(a, b), word(c, d)]));
        }
        client.launch(
            Box::new(SourceKernel::new(self, CubeDim::new_1d(lanes))),
            CubeCount::Static(x, y, z),
            args,
        );
    }
}

impl<S: Shader> KernelSource for WgslKernel<S> {
    fn source(&self) -> SourceTemplate {
        self.params
            .iter()
            .fold(SourceTemplate::new(S::TEXT), |t, (name, value)| {
                t.register(*name, value.clone())
            })
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.params.clone())
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// `shaders/add_rms_norm.wgsl`.
pub(crate) struct AddRmsNorm;
impl Shader for AddRmsNorm {
    const TEXT: &'static str = include_str!("../../../shaders/add_rms_norm.wgsl");
}

/// `shaders/store_kv.wgsl`.
pub(crate) struct StoreKv;
impl Shader for StoreKv {
    const TEXT: &'static str = include_str!("../../../shaders/store_kv.wgsl");
}

/// `shaders/skinny_matmul.wgsl`.
pub(crate) struct SkinnyMatmul;
impl Shader for SkinnyMatmul {
    const TEXT: &'static str = include_str!("../../../shaders/skinny_matmul.wgsl");
}

/// `shaders/tree_attention.wgsl`.
pub(crate) struct TreeAttention;
impl Shader for TreeAttention {
    const TEXT: &'static str = include_str!("../../../shaders/tree_attention.wgsl");
}

/// `shaders/attention_combine.wgsl`.
pub(crate) struct AttentionCombine;
impl Shader for AttentionCombine {
    const TEXT: &'static str = include_str!("../../../shaders/attention_combine.wgsl");
}

/// Keys per workgroup of the tree attention (its lanes): a node's keys are split into
/// chunks of this many, each its own workgroup, then merged.
const ATTENTION_CHUNK: usize = 64;

/// The attention shape the kernels compile in; the rest comes from tensor shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Columns per head.
    pub head_dim: usize,
}

impl Heads {
    /// The attention shape of a model.
    pub fn of(config: &LlamaConfig) -> Self {
        Self {
            n_heads: config.n_heads,
            n_kv_heads: config.n_kv_heads,
            head_dim: config.head_dim,
        }
    }

    /// Width of all query heads.
    pub(crate) fn q_dim(self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all key (or value) heads.
    pub(crate) fn kv_dim(self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Query heads per key/value head.
    pub(crate) fn group(self) -> usize {
        self.n_heads / self.n_kv_heads
    }
}

/// The kernels as backend operations.
///
/// Shapes (`n` nodes): `qkv` is the projection's output `[n, width]` with q, k and v as
/// its first columns; `rope` is `[n, 2 * head_dim]`, the nodes' cos then signed sin;
/// `cache` is one layer's `[2, n_kv_heads, max_seq, head_dim]`, keys then values;
/// `tree_mask` is `[n, n]`, additive.
#[backend_extension(Cube)]
pub trait BlockKernels: Backend {
    /// `(x + delta, rms_norm(x + delta) * weight)`, row by row; `x`, `delta`: `[rows, d]`,
    /// `weight`: `[d]`.
    fn add_rms_norm(
        x: &FloatTensor<Self>,
        delta: &FloatTensor<Self>,
        weight: &FloatTensor<Self>,
        eps: f32,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `cache` with the nodes' keys (RoPE applied) and values in slots `start ..
    /// start + n`; in place when `cache` is not shared.
    fn store_kv(
        cache: FloatTensor<Self>,
        qkv: &FloatTensor<Self>,
        rope: &FloatTensor<Self>,
        start: usize,
        heads: Heads,
    ) -> FloatTensor<Self>;

    /// `x · W` for `x`: `[m, k]` and `W`: `[k, n]`, or `[n, k]` when `out_major`: a
    /// product of few rows ([`SKINNY_MAX_ROWS`] at most).
    fn skinny_matmul(
        x: &FloatTensor<Self>,
        w: &FloatTensor<Self>,
        out_major: bool,
    ) -> FloatTensor<Self>;

    /// `(silu(gate) * up) · W` for `gate_up`: `[m, 2k]` (gate, then up) and `W`: `[k, n]`:
    /// the feed-forward's down projection with SwiGLU folded in, for few rows
    /// ([`SKINNY_MAX_ROWS`] at most).
    fn swiglu_matmul(gate_up: &FloatTensor<Self>, w: &FloatTensor<Self>) -> FloatTensor<Self>;

    /// Each node's attention output, `[n, n_heads * head_dim]`, over cache slots
    /// `0 .. past + n` (the nodes' own keys already stored there).
    fn tree_attention(
        qkv: &FloatTensor<Self>,
        rope: &FloatTensor<Self>,
        cache: &FloatTensor<Self>,
        tree_mask: &FloatTensor<Self>,
        past: usize,
        heads: Heads,
    ) -> FloatTensor<Self>;
}

/// A new contiguous `dtype` tensor of `shape` on `like`'s device, contents undefined: a
/// kernel's output.
pub(crate) fn empty_like(like: &CubeTensor, shape: [usize; 2], dtype: DType) -> CubeTensor {
    let buffer = like.client.empty(shape[0] * shape[1] * dtype.size());
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        Shape::from(shape),
        buffer,
        dtype,
    )
}

/// `t`'s buffer, to bind to a kernel.
pub(crate) fn binding(t: &CubeTensor) -> BufferBinding {
    t.handle.clone().binding()
}

/// `value` as a u32 for a kernel's uniform; every caller's value is a cache slot or a node
/// count, far below `u32::MAX`.
fn info_word(value: usize) -> u32 {
    u32::try_from(value).expect("invariant: slots and node counts fit u32")
}

/// Most rows [`BlockKernels::skinny_matmul`] takes: it reads the weights once per
/// [`SKINNY_TILE_ROWS`] rows, so past a few tiles burn's tiled matmul, which reuses each
/// weight across a whole tile of rows, reads less.
pub(crate) const SKINNY_MAX_ROWS: usize = 128;
/// Rows of x each workgroup of the skinny matmul multiplies at once.
const SKINNY_TILE_ROWS: usize = 8;

/// One launch of `skinny_matmul.wgsl`: [`BlockKernels::skinny_matmul`], or with `gated`
/// [`BlockKernels::swiglu_matmul`] (`x` is then `[m, 2k]`, gate then up).
fn skinny_matmul(x: &CubeTensor, w: &CubeTensor, out_major: bool, gated: bool) -> CubeTensor {
    let x = into_contiguous(x.clone());
    let w = into_contiguous(w.clone());
    let (m, x_cols) = (x.meta.shape()[0], x.meta.shape()[1]);
    let k = if gated { x_cols / 2 } else { x_cols };
    let (w_rows, w_cols) = (w.meta.shape()[0], w.meta.shape()[1]);
    let n = if out_major { w_rows } else { w_cols };
    // Neighbouring lanes read neighbouring floats: along K for an out-major W, else
    // along a row's columns (eight, one 32-byte sector).
    let (cols, split) = if out_major { (4, 64) } else { (8, 32) };
    let y = empty_like(&x, [m, n], DType::F32);
    WgslKernel::<SkinnyMatmul>::new(vec![
        ("k", k.to_string()),
        ("n", n.to_string()),
        ("cols", cols.to_string()),
        ("split", split.to_string()),
        ("tm", SKINNY_TILE_ROWS.to_string()),
        ("partial_len", (256 * SKINNY_TILE_ROWS).to_string()),
        ("out_major", out_major.to_string()),
        ("gated", gated.to_string()),
    ])
    .launch(
        &x.client,
        256,
        [n.div_ceil(cols), m.div_ceil(SKINNY_TILE_ROWS), 1],
        vec![binding(&x), binding(&w), binding(&y)],
        Some([info_word(m), 0, 0, 0]),
    );
    y
}

impl BlockKernels for CubeBackend {
    fn skinny_matmul(x: &CubeTensor, w: &CubeTensor, out_major: bool) -> CubeTensor {
        skinny_matmul(x, w, out_major, false)
    }

    fn swiglu_matmul(gate_up: &CubeTensor, w: &CubeTensor) -> CubeTensor {
        skinny_matmul(gate_up, w, false, true)
    }

    fn add_rms_norm(
        x: &CubeTensor,
        delta: &CubeTensor,
        weight: &CubeTensor,
        eps: f32,
    ) -> (CubeTensor, CubeTensor) {
        let x = into_contiguous(x.clone());
        let delta = into_contiguous(delta.clone());
        let weight = into_contiguous(weight.clone());
        let (rows, d) = (x.meta.shape()[0], x.meta.shape()[1]);
        // Enough lanes that each sums a few values; a power of two for the tree sum.
        let lanes = d.div_ceil(4).next_power_of_two().clamp(32, 256);
        let sum = empty_like(&x, [rows, d], DType::F32);
        let y = empty_like(&x, [rows, d], DType::F32);
        WgslKernel::<AddRmsNorm>::new(vec![
            ("d", d.to_string()),
            // `{:?}` keeps a decimal point or exponent: a WGSL float literal.
            ("eps", format!("{eps:?}")),
            ("threads", lanes.to_string()),
        ])
        .launch(
            &x.client,
            lanes as u32,
            [rows, 1, 1],
            vec![
                binding(&x),
                binding(&delta),
                binding(&weight),
                binding(&sum),
                binding(&y),
            ],
            None,
        );
        (sum, y)
    }

    fn store_kv(
        cache: CubeTensor,
        qkv: &CubeTensor,
        rope: &CubeTensor,
        start: usize,
        heads: Heads,
    ) -> CubeTensor {
        // In place, as burn's own slice assignment does, unless another tensor shares
        // the buffer.
        let cache = if cache.can_mut() && cache.is_contiguous() {
            cache
        } else {
            into_contiguous(cache.copy())
        };
        let qkv = into_contiguous(qkv.clone());
        let rope = into_contiguous(rope.clone());
        let (n, width) = (qkv.meta.shape()[0], qkv.meta.shape()[1]);
        let max_seq = cache.meta.shape()[2];
        WgslKernel::<StoreKv>::new(vec![
            ("q_dim", heads.q_dim().to_string()),
            ("kv_dim", heads.kv_dim().to_string()),
            ("head_dim", heads.head_dim.to_string()),
            ("qkv_width", width.to_string()),
            ("max_seq", max_seq.to_string()),
        ])
        .launch(
            &cache.client,
            64,
            [heads.kv_dim().div_ceil(64), n, 1],
            vec![binding(&qkv), binding(&rope), binding(&cache)],
            Some([info_word(start), info_word(n), 0, 0]),
        );
        cache
    }

    fn tree_attention(
        qkv: &CubeTensor,
        rope: &CubeTensor,
        cache: &CubeTensor,
        tree_mask: &CubeTensor,
        past: usize,
        heads: Heads,
    ) -> CubeTensor {
        let qkv = into_contiguous(qkv.clone());
        let rope = into_contiguous(rope.clone());
        let cache = into_contiguous(cache.clone());
        let tree_mask = into_contiguous(tree_mask.clone());
        let (n, width) = (qkv.meta.shape()[0], qkv.meta.shape()[1]);
        let max_seq = cache.meta.shape()[2];
        let chunks = (past + n).div_ceil(ATTENTION_CHUNK);
        let out = empty_like(&qkv, [n, heads.q_dim()], DType::F32);
        // Per (node, head, chunk): max, sum and the unnormalised values. Bound even when
        // unused (one chunk), so at least one row.
        let partial_rows = if chunks > 1 {
            n * heads.n_heads * chunks
        } else {
            1
        };
        let partials = empty_like(&qkv, [partial_rows, 2 + heads.head_dim], DType::F32);
        let scale = 1.0 / (heads.head_dim as f32).sqrt();
        let columns_per_lane = heads.head_dim.div_ceil(64).to_string();
        WgslKernel::<TreeAttention>::new(vec![
            ("head_dim", heads.head_dim.to_string()),
            ("group", heads.group().to_string()),
            ("n_heads", heads.n_heads.to_string()),
            ("q_dim", heads.q_dim().to_string()),
            ("kv_dim", heads.kv_dim().to_string()),
            ("qkv_width", width.to_string()),
            ("max_seq", max_seq.to_string()),
            ("scale", format!("{scale:?}")),
            ("columns_per_lane", columns_per_lane.clone()),
        ])
        .launch(
            &qkv.client,
            64,
            [heads.n_heads, n, chunks],
            vec![
                binding(&qkv),
                binding(&rope),
                binding(&cache),
                binding(&tree_mask),
                binding(&out),
                binding(&partials),
            ],
            Some([info_word(past), info_word(n), info_word(chunks), 0]),
        );
        if chunks > 1 {
            WgslKernel::<AttentionCombine>::new(vec![
                ("head_dim", heads.head_dim.to_string()),
                ("n_heads", heads.n_heads.to_string()),
                ("q_dim", heads.q_dim().to_string()),
                ("columns_per_lane", columns_per_lane),
            ])
            .launch(
                &qkv.client,
                64,
                [heads.n_heads, n, 1],
                vec![binding(&partials), binding(&out)],
                Some([0, 0, info_word(chunks), 0]),
            );
        }
        out
    }
}
