//! Our hand-written WGSL kernels for a block's hot spots, and how they plug into burn.
//!
//! On a GPU a verify step of this small model is bound by kernel launches, not by
//! arithmetic (`samd profile` counts them). burn's ops spend several launches on what
//! is one loop in a kernel, so each piece of a block that costs many launches has a
//! kernel in `shaders/`:
//!
//! | kernel | replaces (burn ops) |
//! |---|---|
//! | `skinny_matmul.wgsl` | burn's tiled matmul for products of few rows, with a block's other steps folded in by its parts: the RMSNorm before a projection, SwiGLU, the residual add, and storing K (RoPE applied) and V in the cache; its weight part reads f32 or the GGUF's quantised blocks (`skinny_w_blocks.wgsl`; for a tree's tiles `skinny_w_blocks_staged.wgsl`, x through shared memory) |
//! | `dequant_blocks.wgsl` | the host's dequantisation, for the reference ops (which read f32), and the token embedding's rows of a step |
//! | `tree_attention.wgsl` (`tree_attention_tiled.wgsl` for a prefill's many nodes) | RoPE on the queries, two batched matmuls, scale, mask, softmax |
//! | `rms_norm.wgsl`, `store_kv.wgsl` | the RMSNorm and K/V store of a prefill over f32 weights, whose projections are burn's matmul |
//! | `head_norm.wgsl` | Qwen3's RMSNorm of each query and key head (slices, reshapes, norms and a concatenation), with the K/V store after it |
//! | `compact_kv.wgsl` | committing a step's accepted path when it is not the tree's first nodes: a gather into a new buffer and a slice assignment back |
//!
//! So a block of a verify step is five launches: the q|k|v projection, the attention,
//! the output projection, gate|up and down. Qwen2's biases add none (the projection adds
//! them); Qwen3's head norms need each head whole, so its projection stores no K/V, and
//! one more launch norms the heads and stores the keys and values: six.
//!
//! Matrices stay in the file's blocks where it stores them in a kind the kernels widen
//! ([`Layout::Blocks`]: Q4_0, Q4_1, Q8_0, …): SmolLM2-135M takes 98 MB of device memory
//! instead of 540 MB, and a step reads a sixth of the weight bytes, which on a GPU with
//! slow memory is most of its time. A file's 16-bit floats stay so too, in blocks
//! without a scale ([`crate::block_form`]): half the bytes of f32.
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

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{
    CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::backend::{Backend, Shape, backend_extension};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::{BufferBinding, KernelArguments, MetadataBindingInfo};
use burn::cubecl::{CubeCount, CubeDim};
use burn::tensor::DType;

use crate::block_form::{BlockForm, HalfFloat};
use crate::block_rows::BLOCK;
use crate::config::LlamaConfig;
use crate::layer_ops::Layout;

/// Most workgroups per grid dimension WebGPU guarantees. Kernels put nodes (or rows) on
/// one dimension, so a forward of more nodes than this takes the reference ops.
pub(crate) const MAX_WORKGROUPS: usize = 65_535;

/// A WGSL kernel from files in `shaders/`, with `{{ placeholders }}` that its caller
/// fills.
pub(crate) trait Shader: Send + Sync + 'static {
    /// The files' texts, in order: a kernel's core and the parts it takes.
    const PARTS: &'static [&'static str];
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
        self.params.iter().fold(
            SourceTemplate::new(S::PARTS.concat()),
            |t, (name, value)| t.register(*name, value.clone()),
        )
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.params.clone())
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// `shaders/kv_store_common.wgsl`: where keys and values go in the cache, and RoPE on a
/// key, for every kernel that stores them.
const KV_STORE_COMMON: &str = include_str!("../../../shaders/kv_store_common.wgsl");

/// `shaders/rms_common.wgsl`: the root mean square both norm kernels take of a row.
const RMS_COMMON: &str = include_str!("../../../shaders/rms_common.wgsl");

/// `shaders/rms_norm.wgsl`.
pub(crate) struct RmsNorm;
impl Shader for RmsNorm {
    const PARTS: &'static [&'static str] =
        &[RMS_COMMON, include_str!("../../../shaders/rms_norm.wgsl")];
}

/// `shaders/head_norm.wgsl`.
pub(crate) struct HeadNorm;
impl Shader for HeadNorm {
    const PARTS: &'static [&'static str] = &[
        KV_STORE_COMMON,
        RMS_COMMON,
        include_str!("../../../shaders/head_norm.wgsl"),
    ];
}

/// What `shaders/rms_common.wgsl` compiles in for rows of `d`, and its lanes: enough that
/// each sums a few values, a power of two for the tree sum.
fn rms_params(d: usize, eps: f32) -> (Vec<(&'static str, String)>, usize) {
    let lanes = d.div_ceil(4).next_power_of_two().clamp(32, 256);
    let params = vec![
        ("d", d.to_string()),
        ("eps", float_literal(eps)),
        ("threads", lanes.to_string()),
    ];
    (params, lanes)
}

/// `shaders/store_kv.wgsl`.
pub(crate) struct StoreKv;
impl Shader for StoreKv {
    const PARTS: &'static [&'static str] = &[
        KV_STORE_COMMON,
        include_str!("../../../shaders/store_kv.wgsl"),
    ];
}

/// `shaders/compact_kv.wgsl`.
pub(crate) struct CompactKv;
impl Shader for CompactKv {
    const PARTS: &'static [&'static str] = &[include_str!("../../../shaders/compact_kv.wgsl")];
}

/// How the kernels find a block's weights in the GGUF's quantised blocks.
const BLOCKS_COMMON: &str = include_str!("../../../shaders/blocks_common.wgsl");

/// Which rows `shaders/dequant_blocks.wgsl` widens: its rows part.
pub(crate) trait DequantRows: Send + Sync + 'static {
    /// The part.
    const PART: &'static str;
}

/// The whole matrix.
pub(crate) struct AllRows;
impl DequantRows for AllRows {
    const PART: &'static str = include_str!("../../../shaders/dequant_rows_all.wgsl");
}

/// The rows of some token ids.
pub(crate) struct GatheredRows;
impl DequantRows for GatheredRows {
    const PART: &'static str = include_str!("../../../shaders/dequant_rows_gathered.wgsl");
}

/// `shaders/dequant_blocks.wgsl` with the rows `R`.
pub(crate) struct DequantBlocks<R>(PhantomData<R>);
impl<R: DequantRows> Shader for DequantBlocks<R> {
    const PARTS: &'static [&'static str] = &[
        include_str!("../../../shaders/dequant_blocks.wgsl"),
        R::PART,
        BLOCKS_COMMON,
    ];
}

/// How a skinny product reads W: a weight part of `shaders/skinny_matmul.wgsl`.
pub(crate) trait SkinnyWeights: Send + Sync + 'static {
    /// The part, then what it reads beside it (or nothing).
    const PARTS: [&'static str; 2];
}

/// W in f32: `shaders/skinny_w_dense.wgsl`.
pub(crate) struct DenseWeights;
impl SkinnyWeights for DenseWeights {
    const PARTS: [&'static str; 2] = [include_str!("../../../shaders/skinny_w_dense.wgsl"), ""];
}

/// W in the GGUF's blocks: `shaders/skinny_w_blocks.wgsl`.
pub(crate) struct BlockWeights;
impl SkinnyWeights for BlockWeights {
    const PARTS: [&'static str; 2] = [
        include_str!("../../../shaders/skinny_w_blocks.wgsl"),
        BLOCKS_COMMON,
    ];
}

/// W in the GGUF's blocks, x staged in shared memory: `shaders/skinny_w_blocks_staged.wgsl`,
/// for tiles of more than [`SKINNY_SMALL_TILE`] rows.
pub(crate) struct StagedBlockWeights;
impl SkinnyWeights for StagedBlockWeights {
    const PARTS: [&'static str; 2] = [
        include_str!("../../../shaders/skinny_w_blocks_staged.wgsl"),
        BLOCKS_COMMON,
    ];
}

/// What a skinny product folds in: its input and output parts of
/// `shaders/skinny_matmul.wgsl`.
pub(crate) trait SkinnyFolds: Send + Sync + 'static {
    /// The input part, then the output part.
    const PARTS: [&'static str; 2];
}

/// `x`'s rows as they are (or gated) and `y = (or +=) x · W`.
pub(crate) struct SkinnyMatmul;
impl SkinnyFolds for SkinnyMatmul {
    const PARTS: [&'static str; 2] = [
        include_str!("../../../shaders/skinny_in_rows.wgsl"),
        include_str!("../../../shaders/skinny_out_store.wgsl"),
    ];
}

/// `x`'s rows RMS-normed and `y = x · W`.
pub(crate) struct NormedMatmul;
impl SkinnyFolds for NormedMatmul {
    const PARTS: [&'static str; 2] = [
        include_str!("../../../shaders/skinny_in_normed.wgsl"),
        include_str!("../../../shaders/skinny_out_store.wgsl"),
    ];
}

/// `x`'s rows RMS-normed, the queries to `y` and the keys and values into the KV cache.
pub(crate) struct QkvProjection;
impl SkinnyFolds for QkvProjection {
    const PARTS: [&'static str; 2] = [
        include_str!("../../../shaders/skinny_in_normed.wgsl"),
        concat!(
            include_str!("../../../shaders/kv_store_common.wgsl"),
            include_str!("../../../shaders/skinny_out_qkv.wgsl"),
            include_str!("../../../shaders/qkv_no_bias.wgsl"),
        ),
    ];
}

/// [`QkvProjection`] with a bias added to each of `q | k | v` (Qwen2), in binding 7.
pub(crate) struct BiasedQkvProjection;
impl SkinnyFolds for BiasedQkvProjection {
    const PARTS: [&'static str; 2] = [
        include_str!("../../../shaders/skinny_in_normed.wgsl"),
        concat!(
            include_str!("../../../shaders/kv_store_common.wgsl"),
            include_str!("../../../shaders/skinny_out_qkv.wgsl"),
            include_str!("../../../shaders/qkv_bias.wgsl"),
        ),
    ];
}

/// `shaders/skinny_matmul.wgsl` with the weight part `W` and the folds `F`.
pub(crate) struct Skinny<F, W>(PhantomData<(F, W)>);
impl<F: SkinnyFolds, W: SkinnyWeights> Shader for Skinny<F, W> {
    const PARTS: &'static [&'static str] = &[
        include_str!("../../../shaders/skinny_matmul.wgsl"),
        W::PARTS[0],
        W::PARTS[1],
        F::PARTS[0],
        F::PARTS[1],
    ];
}

/// `shaders/tree_attention.wgsl`.
pub(crate) struct TreeAttention;
impl Shader for TreeAttention {
    const PARTS: &'static [&'static str] = &[
        include_str!("../../../shaders/attention_common.wgsl"),
        include_str!("../../../shaders/tree_attention.wgsl"),
    ];
}

/// `shaders/tree_attention_tiled.wgsl`.
pub(crate) struct TreeAttentionTiled;
impl Shader for TreeAttentionTiled {
    const PARTS: &'static [&'static str] = &[
        include_str!("../../../shaders/attention_common.wgsl"),
        include_str!("../../../shaders/tree_attention_tiled.wgsl"),
    ];
}

/// Most nodes a forward's attention takes one workgroup per (head, node) for; more take
/// `tree_attention_tiled.wgsl`, which reads each key once per tile of nodes. A verify
/// step has few nodes and needs the workgroups; a prefill has many and needs the reuse.
const ATTENTION_PER_NODE_MAX: usize = crate::llama::MAX_TREE_NODES;

/// The tiled attention's (nodes, keys) per tile for `head_dim`, or `None` where its tiles
/// would not fit WebGPU's guaranteed 16 KiB of shared memory.
fn attention_tiles(head_dim: usize) -> Option<(usize, usize)> {
    [(16, 32), (8, 16)].into_iter().find(|&(qt, kt)| {
        let floats = qt * head_dim + kt * (head_dim + 1) + qt * kt + 3 * qt;
        floats * 4 <= 16 * 1024
    })
}

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
    pub fn q_dim(self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of all key (or value) heads.
    pub fn kv_dim(self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Query heads per key/value head.
    pub fn group(self) -> usize {
        self.n_heads / self.n_kv_heads
    }
}

/// The kernels as backend operations.
///
/// Shapes (`n` nodes): `rope` is `[n, 2 * head_dim]`, the nodes' cos then signed sin;
/// `cache` is one layer's `[2, n_kv_heads, max_seq, head_dim]`, keys then values;
/// `tree_mask` is `[n, n]`, additive; `slots` is `[2]` ints on the device, the first new
/// node's cache slot (the committed positions) and `n`: where the nodes' keys go, read by
/// the kernels from a buffer so that a replayed step graph ([`crate::step_graph`]) takes
/// each step's own. The skinny products over f32 weights take [`SKINNY_MAX_ROWS`] rows
/// at most.
#[backend_extension(Cube)]
pub trait BlockKernels: Backend {
    /// `rms_norm(x) * weight`, row by row; `x`: `[rows, d]`, `weight`: `[d]`.
    fn rms_norm(x: &FloatTensor<Self>, weight: &FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;

    /// `qkv` (`[n, q | k | v]`) with each query head RMS-normed by `q_weight` (Qwen3),
    /// in place when `qkv` is not shared, and `cache` with the nodes' key heads, each
    /// RMS-normed by `k_weight` and rotated, and values in `slots`, in place when it is
    /// not shared: [`BlockKernels::store_kv`] after a norm of every head, in one launch.
    /// The weights are `[head_dim]`; `qkv`'s key columns are left as they were.
    // One argument per binding the kernel reads, and its compiled-in shape.
    #[allow(clippy::too_many_arguments)]
    fn norm_heads_store_kv(
        qkv: FloatTensor<Self>,
        q_weight: &FloatTensor<Self>,
        k_weight: &FloatTensor<Self>,
        eps: f32,
        cache: FloatTensor<Self>,
        rope: &FloatTensor<Self>,
        slots: IntTensor<Self>,
        heads: Heads,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// `cache` with the nodes' keys (RoPE applied) and values, from `qkv`'s columns
    /// `q_dim ..` (`[n, q + k + v]`), in `slots`; in place when `cache` is not shared.
    fn store_kv(
        cache: FloatTensor<Self>,
        qkv: &FloatTensor<Self>,
        rope: &FloatTensor<Self>,
        slots: IntTensor<Self>,
        heads: Heads,
    ) -> FloatTensor<Self>;

    /// `cache` with a verify step's accepted path moved into place, in place when
    /// `cache` is not shared: `moves` is `[2 + path]` ints, the committed positions, the
    /// path's length, then its node indices, ascending; node `path[i]`'s keys and values
    /// go from slot `start + path[i]` to `start + i`.
    fn compact_kv(cache: FloatTensor<Self>, moves: IntTensor<Self>) -> FloatTensor<Self>;

    /// `stream + x · W` for `x`: `[m, k]` and `W`: `[k, n]`, or with `gated` `stream +
    /// (silu(gate) * up) · W` for `x`: `[m, 2k]`, gate then up; in place when `stream`
    /// is not shared.
    fn add_skinny_matmul(
        stream: FloatTensor<Self>,
        x: &FloatTensor<Self>,
        w: &FloatTensor<Self>,
        layout: Layout,
        gated: bool,
    ) -> FloatTensor<Self>;

    /// `x · W` for `x`: `[m, k]` and `W` in `layout`.
    fn skinny_matmul(
        x: &FloatTensor<Self>,
        w: &FloatTensor<Self>,
        layout: Layout,
    ) -> FloatTensor<Self>;

    /// `rms_norm(x) * norm_weight · W` for `x`: `[m, k]` and `W` in `layout`.
    fn normed_skinny_matmul(
        x: &FloatTensor<Self>,
        norm_weight: &FloatTensor<Self>,
        eps: f32,
        w: &FloatTensor<Self>,
        layout: Layout,
    ) -> FloatTensor<Self>;

    /// The attention's projection of `rms_norm(x) * norm_weight` by `w_qkv`, whose outputs
    /// are `q | k | v`, in `layout`. Returns the queries, `[n, q_dim]`, and `cache` with
    /// the keys (RoPE applied) and values in `slots`, in place when it is not shared.
    // One argument per binding the kernel reads, and its compiled-in shape.
    #[allow(clippy::too_many_arguments)]
    fn skinny_qkv_projection(
        x: &FloatTensor<Self>,
        norm_weight: &FloatTensor<Self>,
        eps: f32,
        w_qkv: &FloatTensor<Self>,
        layout: Layout,
        cache: FloatTensor<Self>,
        rope: &FloatTensor<Self>,
        slots: IntTensor<Self>,
        heads: Heads,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// [`BlockKernels::skinny_qkv_projection`] with `bias`, `[q_dim + 2 * kv_dim]`, added
    /// to its outputs before RoPE (Qwen2).
    #[allow(clippy::too_many_arguments)]
    fn skinny_biased_qkv_projection(
        x: &FloatTensor<Self>,
        norm_weight: &FloatTensor<Self>,
        eps: f32,
        w_qkv: &FloatTensor<Self>,
        bias: &FloatTensor<Self>,
        layout: Layout,
        cache: FloatTensor<Self>,
        rope: &FloatTensor<Self>,
        slots: IntTensor<Self>,
        heads: Heads,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// Each node's attention output, `[n, n_heads * head_dim]`, over cache slots
    /// `0 .. past + n` (the nodes' own keys already stored there, `past` the first of
    /// `slots`); the queries are the first `q_dim` columns of `queries`. The nodes see
    /// each other as `tree_mask` says, and `ancestry` lists the same (step_graph.rs's
    /// `HostStep::ancestry`) for the per-node kernel.
    fn tree_attention(
        queries: &FloatTensor<Self>,
        rope: &FloatTensor<Self>,
        cache: &FloatTensor<Self>,
        tree_mask: &FloatTensor<Self>,
        ancestry: IntTensor<Self>,
        slots: IntTensor<Self>,
        heads: Heads,
    ) -> FloatTensor<Self>;

    /// `blocks`, a matrix in [`Layout::Blocks`] of `form`, widened to f32, `[n, k]`: for
    /// burn's matmul and the reference ops, which read f32.
    fn dequantize_blocks(blocks: &FloatTensor<Self>, form: BlockForm) -> FloatTensor<Self>;

    /// Rows `ids` (`[m]`, each below its rows) of `blocks`, a matrix in
    /// [`Layout::Blocks`] of `form`, widened to f32, `[m, k]`: a step's token embeddings.
    fn gather_block_rows(
        blocks: &FloatTensor<Self>,
        ids: IntTensor<Self>,
        form: BlockForm,
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

/// `value` as a u32 for a kernel's uniform; every caller's value is a row count, far below
/// `u32::MAX`.
fn info_word(value: usize) -> u32 {
    u32::try_from(value).expect("invariant: row counts fit u32")
}

/// Most rows a skinny product over f32 weights takes ([`BlockKernels::add_skinny_matmul`]
/// and the rest): it reads the weights once per tile of rows ([`skinny_tile_rows`]), so
/// past a few tiles burn's tiled matmul, which reuses each weight across a larger tile,
/// reads less. Over the file's blocks, a sixth of the bytes, it takes any number of
/// rows (`layer_ops::skinny`).
pub(crate) const SKINNY_MAX_ROWS: usize = 128;

/// Rows of x each workgroup of the skinny matmul multiplies at once, for a product of
/// `m` rows: 8 for a decode step's one to eight, else 32, so that a tree's rows read the
/// weights a quarter as often. Each lane keeps a running sum per row of its tile, so a
/// larger tile costs registers; on the H200 a 64-row product took 8 times a one-row one
/// with tiles of 8.
fn skinny_tile_rows(m: usize) -> usize {
    if m <= SKINNY_SMALL_TILE {
        SKINNY_SMALL_TILE
    } else {
        32
    }
}

/// Rows of a decode step's tile ([`skinny_tile_rows`]).
const SKINNY_SMALL_TILE: usize = 8;

/// Inputs `skinny_w_blocks_staged.wgsl` stages per row at a time (its `CHUNK`).
const STAGED_CHUNK: usize = 256;

/// `(k, n)` of a product by `w` stored in `layout`: its inputs and outputs.
fn product_shape(w: &CubeTensor, layout: Layout) -> (usize, usize) {
    let (rows, cols) = (w.meta.shape()[0], w.meta.shape()[1]);
    match layout {
        Layout::InOut => (rows, cols),
        Layout::OutIn => (cols, rows),
        Layout::Blocks(form) => (cols / form.block_words() * BLOCK, rows),
    }
}

/// What `shaders/blocks_common.wgsl` compiles in for blocks of `form`.
fn block_params(form: BlockForm) -> [(&'static str, String); 5] {
    let code_words = form.code_words();
    let (four_bit, scale_per_16, half_float) = match form {
        BlockForm::Quant(kind) => (!kind.byte_codes(), kind.scales_per_block() == 2, 0),
        BlockForm::Half(HalfFloat::F16) => (false, false, 1),
        BlockForm::Half(HalfFloat::Bf16) => (false, false, 2),
    };
    [
        ("four_bit", four_bit.to_string()),
        ("scale_per_16", scale_per_16.to_string()),
        ("half_float", half_float.to_string()),
        ("per_word", (BLOCK / code_words).to_string()),
        ("code_words", code_words.to_string()),
    ]
}

/// One launch of `skinny_matmul.wgsl` with the folds `F` and the weight part `layout`
/// needs: `x · W` over `m` rows into `y`'s `n` columns, binding `extra` after x, W and y.
/// `x`: `[m, k]` (`[m, 2k]` when gated, as `params` says).
fn launch_skinny<F: SkinnyFolds>(
    x: &CubeTensor,
    w: &CubeTensor,
    layout: Layout,
    y: &CubeTensor,
    extra: Vec<BufferBinding>,
    mut params: Vec<(&'static str, String)>,
) {
    let m = x.meta.shape()[0];
    let (k, n) = product_shape(w, layout);
    // Neighbouring lanes read neighbouring words: along a row's columns for an in-major
    // W (eight floats, one 32-byte sector), else along K.
    let (cols, split) = match layout {
        Layout::InOut | Layout::Blocks(_) => (8, 32),
        Layout::OutIn => (4, 64),
    };
    let tile_rows = skinny_tile_rows(m);
    let mut buffers = vec![binding(x), binding(w), binding(y)];
    buffers.extend(extra);
    params.extend([
        ("k", k.to_string()),
        ("n", n.to_string()),
        ("cols", cols.to_string()),
        ("split", split.to_string()),
        ("tm", tile_rows.to_string()),
        ("info_binding", buffers.len().to_string()),
    ]);
    let grid = [n.div_ceil(cols), m.div_ceil(tile_rows), 1];
    let info = Some([info_word(m), 0, 0, 0]);
    match layout {
        // A decode step's few rows read x where the weights sit; a tree's tiles stage it.
        Layout::Blocks(form) if tile_rows > SKINNY_SMALL_TILE => {
            let per_word = BLOCK / form.code_words();
            params.extend(block_params(form));
            params.push(("lane_words", (STAGED_CHUNK / per_word / split).to_string()));
            WgslKernel::<Skinny<F, StagedBlockWeights>>::new(params)
                .launch(&x.client, 256, grid, buffers, info);
        }
        Layout::Blocks(form) => {
            params.extend(block_params(form));
            WgslKernel::<Skinny<F, BlockWeights>>::new(params)
                .launch(&x.client, 256, grid, buffers, info);
        }
        Layout::InOut | Layout::OutIn => {
            params.push(("out_major", (layout == Layout::OutIn).to_string()));
            WgslKernel::<Skinny<F, DenseWeights>>::new(params)
                .launch(&x.client, 256, grid, buffers, info);
        }
    }
}

/// `t` itself when a kernel may write it in place (no other tensor shares its buffer),
/// else a contiguous copy.
fn writable(t: CubeTensor) -> CubeTensor {
    if t.can_mut() && t.is_contiguous() {
        t
    } else {
        into_contiguous(t.copy())
    }
}

/// What a kernel that reads or writes K/V in `cache` compiles in: where q, k and v sit
/// in a projection's row, a head's width, and the cache's length.
fn cache_shape(heads: Heads, cache: &CubeTensor) -> Vec<(&'static str, String)> {
    vec![
        ("q_dim", heads.q_dim().to_string()),
        ("kv_dim", heads.kv_dim().to_string()),
        ("head_dim", heads.head_dim.to_string()),
        ("max_seq", cache.meta.shape()[2].to_string()),
    ]
}

/// `value` as a WGSL float literal: `{:?}` keeps a decimal point or an exponent.
fn float_literal(value: f32) -> String {
    format!("{value:?}")
}

/// Both [`BlockKernels`] projections of `q | k | v`: `w` is the matrix, the bias if any,
/// and the matrix's layout.
#[allow(clippy::too_many_arguments)]
fn qkv_projection(
    x: &CubeTensor,
    norm_weight: &CubeTensor,
    eps: f32,
    (w_qkv, bias, layout): (&CubeTensor, Option<&CubeTensor>, Layout),
    cache: CubeTensor,
    rope: &CubeTensor,
    slots: CubeTensor,
    heads: Heads,
) -> (CubeTensor, CubeTensor) {
    let cache = writable(cache);
    let x = into_contiguous(x.clone());
    let w_qkv = into_contiguous(w_qkv.clone());
    let norm_weight = into_contiguous(norm_weight.clone());
    let rope = into_contiguous(rope.clone());
    let slots = into_contiguous(slots);
    let queries = empty_like(&x, [x.meta.shape()[0], heads.q_dim()], DType::F32);
    let mut params = cache_shape(heads, &cache);
    params.push(("eps", float_literal(eps)));
    let mut bindings = vec![
        binding(&norm_weight),
        binding(&rope),
        binding(&cache),
        binding(&slots),
    ];
    match bias {
        Some(bias) => {
            bindings.push(binding(&into_contiguous(bias.clone())));
            launch_skinny::<BiasedQkvProjection>(&x, &w_qkv, layout, &queries, bindings, params);
        }
        None => launch_skinny::<QkvProjection>(&x, &w_qkv, layout, &queries, bindings, params),
    }
    (queries, cache)
}

impl BlockKernels for CubeBackend {
    fn add_skinny_matmul(
        stream: CubeTensor,
        x: &CubeTensor,
        w: &CubeTensor,
        layout: Layout,
        gated: bool,
    ) -> CubeTensor {
        let stream = writable(stream);
        let x = into_contiguous(x.clone());
        let w = into_contiguous(w.clone());
        launch_skinny::<SkinnyMatmul>(
            &x,
            &w,
            layout,
            &stream,
            vec![],
            vec![("gated", gated.to_string()), ("accumulate", "true".into())],
        );
        stream
    }

    fn skinny_matmul(x: &CubeTensor, w: &CubeTensor, layout: Layout) -> CubeTensor {
        let x = into_contiguous(x.clone());
        let w = into_contiguous(w.clone());
        let (_, n) = product_shape(&w, layout);
        let y = empty_like(&x, [x.meta.shape()[0], n], DType::F32);
        launch_skinny::<SkinnyMatmul>(
            &x,
            &w,
            layout,
            &y,
            vec![],
            vec![("gated", "false".into()), ("accumulate", "false".into())],
        );
        y
    }

    fn normed_skinny_matmul(
        x: &CubeTensor,
        norm_weight: &CubeTensor,
        eps: f32,
        w: &CubeTensor,
        layout: Layout,
    ) -> CubeTensor {
        let x = into_contiguous(x.clone());
        let w = into_contiguous(w.clone());
        let norm_weight = into_contiguous(norm_weight.clone());
        let (_, n) = product_shape(&w, layout);
        let y = empty_like(&x, [x.meta.shape()[0], n], DType::F32);
        launch_skinny::<NormedMatmul>(
            &x,
            &w,
            layout,
            &y,
            vec![binding(&norm_weight)],
            vec![("eps", float_literal(eps)), ("accumulate", "false".into())],
        );
        y
    }

    fn skinny_qkv_projection(
        x: &CubeTensor,
        norm_weight: &CubeTensor,
        eps: f32,
        w_qkv: &CubeTensor,
        layout: Layout,
        cache: CubeTensor,
        rope: &CubeTensor,
        slots: CubeTensor,
        heads: Heads,
    ) -> (CubeTensor, CubeTensor) {
        let w = (w_qkv, None, layout);
        qkv_projection(x, norm_weight, eps, w, cache, rope, slots, heads)
    }

    fn skinny_biased_qkv_projection(
        x: &CubeTensor,
        norm_weight: &CubeTensor,
        eps: f32,
        w_qkv: &CubeTensor,
        bias: &CubeTensor,
        layout: Layout,
        cache: CubeTensor,
        rope: &CubeTensor,
        slots: CubeTensor,
        heads: Heads,
    ) -> (CubeTensor, CubeTensor) {
        let w = (w_qkv, Some(bias), layout);
        qkv_projection(x, norm_weight, eps, w, cache, rope, slots, heads)
    }

    fn rms_norm(x: &CubeTensor, weight: &CubeTensor, eps: f32) -> CubeTensor {
        let x = into_contiguous(x.clone());
        let weight = into_contiguous(weight.clone());
        let (rows, d) = (x.meta.shape()[0], x.meta.shape()[1]);
        let (params, lanes) = rms_params(d, eps);
        let y = empty_like(&x, [rows, d], DType::F32);
        WgslKernel::<RmsNorm>::new(params).launch(
            &x.client,
            lanes as u32,
            [rows, 1, 1],
            vec![binding(&x), binding(&weight), binding(&y)],
            None,
        );
        y
    }

    fn norm_heads_store_kv(
        qkv: CubeTensor,
        q_weight: &CubeTensor,
        k_weight: &CubeTensor,
        eps: f32,
        cache: CubeTensor,
        rope: &CubeTensor,
        slots: CubeTensor,
        heads: Heads,
    ) -> (CubeTensor, CubeTensor) {
        let (qkv, cache) = (writable(qkv), writable(cache));
        let [q_weight, k_weight, rope, slots] =
            [q_weight.clone(), k_weight.clone(), rope.clone(), slots].map(into_contiguous);
        let (rows, width) = (qkv.meta.shape()[0], qkv.meta.shape()[1]);
        let (mut params, lanes) = rms_params(heads.head_dim, eps);
        params.extend(cache_shape(heads, &cache));
        params.push(("width", width.to_string()));
        WgslKernel::<HeadNorm>::new(params).launch(
            &qkv.client,
            lanes as u32,
            [heads.n_heads + 2 * heads.n_kv_heads, rows, 1],
            vec![
                binding(&qkv),
                binding(&q_weight),
                binding(&k_weight),
                binding(&rope),
                binding(&cache),
                binding(&slots),
            ],
            None,
        );
        (qkv, cache)
    }

    fn store_kv(
        cache: CubeTensor,
        qkv: &CubeTensor,
        rope: &CubeTensor,
        slots: CubeTensor,
        heads: Heads,
    ) -> CubeTensor {
        let cache = writable(cache);
        let qkv = into_contiguous(qkv.clone());
        let rope = into_contiguous(rope.clone());
        let slots = into_contiguous(slots);
        let (n, width) = (qkv.meta.shape()[0], qkv.meta.shape()[1]);
        let mut params = cache_shape(heads, &cache);
        params.push(("qkv_width", width.to_string()));
        WgslKernel::<StoreKv>::new(params).launch(
            &cache.client,
            64,
            [heads.kv_dim().div_ceil(64), n, 1],
            vec![
                binding(&qkv),
                binding(&rope),
                binding(&cache),
                binding(&slots),
            ],
            None,
        );
        cache
    }

    fn compact_kv(cache: CubeTensor, moves: CubeTensor) -> CubeTensor {
        let cache = writable(cache);
        let moves = into_contiguous(moves);
        let [_, kv_heads, max_seq, head_dim] = cache.meta.shape()[..] else {
            unreachable!("invariant: a cache layer is [2, kv_heads, max_seq, head_dim]")
        };
        let kv_dim = kv_heads * head_dim;
        let params = vec![
            ("kv_dim", kv_dim.to_string()),
            ("head_dim", head_dim.to_string()),
            ("max_seq", max_seq.to_string()),
        ];
        WgslKernel::<CompactKv>::new(params).launch(
            &cache.client,
            64,
            [kv_dim.div_ceil(64), 2, 1],
            vec![binding(&cache), binding(&moves)],
            None,
        );
        cache
    }

    fn tree_attention(
        queries: &CubeTensor,
        rope: &CubeTensor,
        cache: &CubeTensor,
        tree_mask: &CubeTensor,
        ancestry: CubeTensor,
        slots: CubeTensor,
        heads: Heads,
    ) -> CubeTensor {
        let queries = into_contiguous(queries.clone());
        let rope = into_contiguous(rope.clone());
        let cache = into_contiguous(cache.clone());
        let slots = into_contiguous(slots);
        let (n, width) = (queries.meta.shape()[0], queries.meta.shape()[1]);
        let out = empty_like(&queries, [n, heads.q_dim()], DType::F32);
        let scale = 1.0 / (heads.head_dim as f32).sqrt();
        let mut params = cache_shape(heads, &cache);
        params.extend([
            ("group", heads.group().to_string()),
            ("row_width", width.to_string()),
            ("scale", float_literal(scale)),
        ]);
        // Binding 3 is what says which new nodes each node sees: the tiled kernel reads
        // the mask, the per-node one each node's ancestors.
        let buffers = |who_sees: &CubeTensor| {
            vec![
                binding(&queries),
                binding(&rope),
                binding(&cache),
                binding(who_sees),
                binding(&out),
                binding(&slots),
            ]
        };
        match attention_tiles(heads.head_dim) {
            Some((qt, kt)) if n > ATTENTION_PER_NODE_MAX => {
                params.extend([
                    ("qt", qt.to_string()),
                    ("kt", kt.to_string()),
                    ("q_tile_len", (qt * heads.head_dim).to_string()),
                    ("kv_tile_len", (kt * (heads.head_dim + 1)).to_string()),
                    ("scores_len", (qt * kt).to_string()),
                    (
                        "columns_per_lane",
                        heads.head_dim.div_ceil(256 / qt).to_string(),
                    ),
                ]);
                WgslKernel::<TreeAttentionTiled>::new(params).launch(
                    &queries.client,
                    256,
                    [heads.n_heads, n.div_ceil(qt), 1],
                    buffers(&into_contiguous(tree_mask.clone())),
                    None,
                );
            }
            _ => {
                params.extend([
                    ("columns_per_lane", heads.head_dim.div_ceil(64).to_string()),
                    ("group_values_len", (4 * heads.head_dim).to_string()),
                ]);
                WgslKernel::<TreeAttention>::new(params).launch(
                    &queries.client,
                    256,
                    [heads.n_heads, n, 1],
                    buffers(&into_contiguous(ancestry)),
                    None,
                );
            }
        }
        out
    }

    fn dequantize_blocks(blocks: &CubeTensor, form: BlockForm) -> CubeTensor {
        let blocks = into_contiguous(blocks.clone());
        let rows = blocks.meta.shape()[0];
        launch_dequant::<AllRows>(&blocks, form, rows, vec![])
    }

    fn gather_block_rows(blocks: &CubeTensor, ids: CubeTensor, form: BlockForm) -> CubeTensor {
        let blocks = into_contiguous(blocks.clone());
        let ids = into_contiguous(ids);
        let rows = ids.meta.shape()[0];
        launch_dequant::<GatheredRows>(&blocks, form, rows, vec![binding(&ids)])
    }
}

/// One launch of `dequant_blocks.wgsl` with the rows `R`: `rows` rows of `blocks`, a
/// matrix in [`Layout::Blocks`] of `form`, widened into a new `[rows, k]` tensor, binding
/// `extra` after the blocks and the output.
fn launch_dequant<R: DequantRows>(
    blocks: &CubeTensor,
    form: BlockForm,
    rows: usize,
    extra: Vec<BufferBinding>,
) -> CubeTensor {
    let (k, _) = product_shape(blocks, Layout::Blocks(form));
    let out = empty_like(blocks, [rows, k], DType::F32);
    // One lane per code word, in rows of MAX_WORKGROUPS workgroups.
    let lanes = rows * (k / BLOCK) * form.code_words();
    let groups = lanes.div_ceil(256);
    let mut buffers = vec![binding(blocks), binding(&out)];
    buffers.extend(extra);
    let mut params = vec![
        ("k", k.to_string()),
        ("info_binding", buffers.len().to_string()),
    ];
    params.extend(block_params(form));
    WgslKernel::<DequantBlocks<R>>::new(params).launch(
        &blocks.client,
        256,
        [
            groups.min(MAX_WORKGROUPS),
            groups.div_ceil(MAX_WORKGROUPS),
            1,
        ],
        buffers,
        Some([info_word(rows), 0, 0, 0]),
    );
    out
}
