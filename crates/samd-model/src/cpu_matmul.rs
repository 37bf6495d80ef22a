//! Products of a few rows on the CPU: a verify step's projections on burn's CPU backend.
//!
//! burn's CPU backend (flex, through the gemm crate) packs the weights for every product
//! of two or more rows. On the 2-core dev machine a verify step of 2 nodes took 2.7× a
//! step of 1, so almost no draft paid for itself. Here the weights are `[out, in]` (how
//! GGUF stores them, and [`Layout::OutIn`](crate::layer_ops::Layout)), so each output
//! is a dot product along a contiguous row of W, and each row of W is read once per
//! product and multiplied into every row of x while it is in cache. A one-row step is
//! bound by reading the weights, and a few rows read them no more.
//!
//! W comes as f32s or, for quantised models on x86-64 with AVX2 and in wasm, and 16-bit
//! float models on x86-64 with AVX2 ([`reads_blocks_of`]), in the file's blocks
//! ([`BlockRows`]): a sixth of the bytes of f32 for Q4_1, so a one-node step is no
//! longer bound by memory, and half for F16. On x86-64 they are widened to f32 as they
//! are read, so that a product over blocks is bit for bit the product over their
//! dequantised values; wasm, which has no FMA, rounds x to 16-bit integers instead and
//! sums in integers (`integer.rs`).
//!
//! Each row's sums run over the inputs in the same order whatever the number of rows,
//! so a row's result is bit for bit the same in a one-node step as in a tree's.
//!
//! On x86-64 with AVX2, FMA and F16C (checked at run time) the products are intrinsics
//! ([`avx2`]); in wasm, 128-bit SIMD intrinsics (`simd128.rs`); elsewhere the portable
//! loops, for the baseline target.

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Flex, backend_extension};
use burn::tensor::TensorData;
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(any(test, target_arch = "wasm32"))]
mod integer;
#[cfg(target_arch = "wasm32")]
mod simd128;
#[cfg(any(test, target_arch = "wasm32"))]
mod tiled;

use crate::block_form::BlockForm;
use crate::block_rows::{BlockRows, HALF_TYPES, QuantKind, TYPES_OF_EACH_KIND, random_rows};
#[cfg(not(target_arch = "wasm32"))]
use crate::dequant::dequantize;
use crate::gguf::GgmlType;
use crate::kernel_check::KernelCheck;

/// Most rows [`few_rows_matmul`] is for: past a few row groups, gemm's packed kernels,
/// which reuse each weight across a whole tile of rows, do better.
pub const CPU_MAX_ROWS: usize = 16;

/// Inputs each dot product sums at once, and rows of x per pass over a row of W, off
/// wasm: the AVX2 code's sizes, so that the baseline's results are the same sums.
#[cfg(not(target_arch = "wasm32"))]
const LANES: usize = 16;
#[cfg(not(target_arch = "wasm32"))]
const GROUP: usize = 4;

/// Inputs each dot product sums at once in wasm: two 128-bit vectors per row
/// (`simd128.rs`). Wasm has no FMA, so the sums cost more than the weights' reads, and
/// more running sums would not fit the registers of a group of rows.
#[cfg(target_arch = "wasm32")]
const LANES: usize = 8;

/// Least rows of W worth a task of their own on another core.
#[cfg(not(target_arch = "wasm32"))]
const ROWS_PER_TASK: usize = 256;

/// `x · Wᵀ` for `x`: `[m, k]` and `W`: `[n, k]`, row-major slices; `[m, n]` out.
pub fn few_rows_matmul(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    assert!(
        x.len() == m * k && w.len() == k * n,
        "invariant: callers pass whole matrices"
    );
    product(m, n, &|rows, out| {
        dots_into(x, k, &w[rows.start * k..rows.end * k], out)
    })
}

/// Whether this CPU's products read blocks ([`few_rows_matmul_blocks`]): on x86-64 with
/// AVX2, FMA and F16C, and in wasm. There a model may keep a matrix's blocks alone
/// ([`crate::MatrixForm::Blocks`]), of the forms [`reads_blocks_of`] takes. Elsewhere the
/// portable loops read W as f32: widening a block inside them left its values spilling
/// from registers (in wasm, where that was tried first, plain decoding went from 44.6 to
/// 18.9 tok/s).
pub fn reads_blocks() -> bool {
    #[cfg(target_arch = "x86_64")]
    return runs_avx2();
    #[cfg(target_arch = "wasm32")]
    return true;
    #[cfg(not(any(target_arch = "x86_64", target_arch = "wasm32")))]
    false
}

/// Whether this CPU's products read blocks of `form`: quantised blocks wherever they
/// read blocks, 16-bit floats only on x86-64. Wasm has neither FMA nor a conversion of
/// halves, so its products are bound by arithmetic, not by reading the weights, and
/// widening halves in them cost more than reading f32 saved: a one-node step of
/// SmolLM2-135M in F16 took 92–113 ms in node, against 55 ms over f32 (BENCHMARKS). It
/// holds them as f32.
pub fn reads_blocks_of(form: BlockForm) -> bool {
    reads_blocks() && (matches!(form, BlockForm::Quant(_)) || cfg!(target_arch = "x86_64"))
}

/// Whether this x86-64 CPU runs [`avx2`]'s code: AVX2 and FMA, and F16C, which every
/// CPU with AVX2 has, for 16-bit floats.
#[cfg(target_arch = "x86_64")]
fn runs_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// `x · Wᵀ` for `x`: `[m, k]` and `W` in blocks; `[m, n]` out. Bit for bit
/// [`few_rows_matmul`] over W dequantised, but in wasm, where x is rounded to 16 bits
/// (`integer.rs`).
///
/// # Panics
/// Unless [`reads_blocks_of`] W's form: models keep blocks only where they are read.
pub fn few_rows_matmul_blocks(x: &[f32], m: usize, w: &BlockRows) -> Vec<f32> {
    let k = w.cols();
    assert!(x.len() == m * k, "invariant: callers pass whole matrices");
    assert!(
        reads_blocks_of(w.form()),
        "invariant: blocks are kept where they are read"
    );
    #[cfg(target_arch = "x86_64")]
    {
        use crate::block_form::HalfFloat;
        use crate::block_rows::{Bf16, F16, Q4_0, Q4_1, Q5_1, Q8_0, Q8_16};
        use BlockForm::{Half, Quant};
        product(m, w.rows(), &|rows, out| {
            // SAFETY: the CPU has AVX2, FMA and F16C ([`reads_blocks`]).
            #[allow(unsafe_code)]
            unsafe {
                match w.form() {
                    Quant(QuantKind::Q8_0) => avx2::dots_by_row(x, k, w.rows_in::<Q8_0>(rows), out),
                    Quant(QuantKind::Q4_0) => avx2::dots_by_row(x, k, w.rows_in::<Q4_0>(rows), out),
                    Quant(QuantKind::Q4_1) => avx2::dots_by_row(x, k, w.rows_in::<Q4_1>(rows), out),
                    Quant(QuantKind::Q5_1) => avx2::dots_by_row(x, k, w.rows_in::<Q5_1>(rows), out),
                    Quant(QuantKind::Q8_16) => {
                        avx2::dots_by_row(x, k, w.rows_in::<Q8_16>(rows), out)
                    }
                    Half(HalfFloat::F16) => {
                        avx2::dots_by_row(x, k, w.half_rows_in::<F16>(rows), out)
                    }
                    Half(HalfFloat::Bf16) => {
                        avx2::dots_by_row(x, k, w.half_rows_in::<Bf16>(rows), out)
                    }
                }
            }
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        use crate::block_rows::{Q4_0, Q4_1, Q5_1, Q8_0, Q8_16};
        let kind = w.quant_kind();
        let rounded = integer::RoundedRows::new(x, k);
        product(m, w.rows(), &|rows, out| match kind {
            QuantKind::Q8_0 => simd128::block_dots(&rounded, w.rows_in::<Q8_0>(rows), out),
            QuantKind::Q4_0 => simd128::block_dots(&rounded, w.rows_in::<Q4_0>(rows), out),
            QuantKind::Q4_1 => simd128::block_dots(&rounded, w.rows_in::<Q4_1>(rows), out),
            QuantKind::Q5_1 => simd128::block_dots(&rounded, w.rows_in::<Q5_1>(rows), out),
            QuantKind::Q8_16 => simd128::block_dots(&rounded, w.rows_in::<Q8_16>(rows), out),
        })
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "wasm32")))]
    unreachable!("invariant: blocks are kept where they are read")
}

/// `x · Wᵀ` for a prompt's many rows of x (`[m, k]`) and W in quantised blocks, `[m, n]`
/// out, in wasm: `tiled.rs`'s integer products, in place of burn's gemm over W widened to
/// f32.
#[cfg(target_arch = "wasm32")]
pub fn many_rows_matmul_quant(x: &[f32], m: usize, w: &BlockRows) -> Vec<f32> {
    use crate::block_rows::{Q4_0, Q4_1, Q5_1, Q8_0, Q8_16};
    use simd128::{TILE_GROUPS, TILE_ROWS};
    let kind = w.quant_kind();
    let (n, k) = (w.rows(), w.cols());
    assert!(x.len() == m * k, "invariant: callers pass whole matrices");
    // Whole tiles: rows of zeros below x, groups of zeros below W, their outputs dropped.
    let tiled_m = m.div_ceil(TILE_ROWS) * TILE_ROWS;
    let mut padded = Vec::with_capacity(tiled_m * k);
    padded.extend_from_slice(x);
    padded.resize(tiled_m * k, 0.0);
    let rounded = integer::RoundedRows::new(&padded, k);
    let packed = tiled::PackedRows::new::<simd128::Simd128Packing>(w, TILE_GROUPS);
    let tiled_n = packed.groups() * tiled::PACKED_ROWS;
    let mut out = vec![0.0; tiled_m * tiled_n];
    match kind {
        QuantKind::Q8_0 => simd128::tiled_dots::<Q8_0>(&rounded, &packed, &mut out),
        QuantKind::Q4_0 => simd128::tiled_dots::<Q4_0>(&rounded, &packed, &mut out),
        QuantKind::Q4_1 => simd128::tiled_dots::<Q4_1>(&rounded, &packed, &mut out),
        QuantKind::Q5_1 => simd128::tiled_dots::<Q5_1>(&rounded, &packed, &mut out),
        QuantKind::Q8_16 => simd128::tiled_dots::<Q8_16>(&rounded, &packed, &mut out),
    }
    if tiled_n == n {
        out.truncate(m * n);
        return out;
    }
    out.chunks_exact(tiled_n)
        .take(m)
        .flat_map(|row| row[..n].iter().copied())
        .collect()
}

/// That this target's products over blocks ([`few_rows_matmul_blocks`]) compute the
/// arithmetic they specify, bit for bit, on random blocks of each form and 1 to 5 rows of
/// x at once: the product over the dequantised values, but in wasm over quantised blocks
/// the scalar integer code (`integer.rs`). No rows where products read no blocks.
pub fn check_block_products() -> KernelCheck {
    let mut rows = 0;
    let mismatch = if reads_blocks() {
        first_block_mismatch(&mut rows)
    } else {
        None
    };
    KernelCheck { rows, mismatch }
}

/// [`check_block_products`]'s cases, counting the rows compared into `rows`: the first
/// product that differs from its reference, if any.
fn first_block_mismatch(rows: &mut usize) -> Option<String> {
    let n = 24;
    let read = |dtype: &GgmlType| BlockForm::of(*dtype).is_some_and(reads_blocks_of);
    for dtype in TYPES_OF_EACH_KIND
        .into_iter()
        .chain(HALF_TYPES)
        .filter(read)
    {
        // Seven blocks a row, where Q4_1's minimums take four at once, then three one by
        // one; or a K-quant's super-block.
        let (bytes, w) = random_rows(dtype, n, 224, 5);
        let k = w.cols();
        for m in 1..=5 {
            let mut x = values(m * k, m as u64);
            // A block whose steps are 1, with values halfway between two: they round to
            // the even one.
            x[..8].copy_from_slice(&[32_767.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5]);
            if few_rows_matmul_blocks(&x, m, &w) != block_reference(&x, m, &w, dtype, &bytes) {
                return Some(format!(
                    "the product over {dtype} blocks, {m} rows of x at once, differs from its reference"
                ));
            }
            *rows += m;
        }
        // A prompt's products: a partial tile of x's rows, and of W's (20 rows, not a
        // multiple of eight).
        #[cfg(target_arch = "wasm32")]
        for m in [3, 6] {
            let x = values(m * k, 10 + m as u64);
            let w = BlockRows::from_gguf(dtype, &bytes[..bytes.len() / 6 * 5], 20, k)
                .expect("invariant: whole blocks");
            let packed = tiled::PackedRows::new::<simd128::Simd128Packing>(&w, 2);
            let same_packing = packed == tiled::PackedRows::new::<tiled::InScalars>(&w, 2);
            if !same_packing
                || many_rows_matmul_quant(&x, m, &w)
                    != integer::product_by::<tiled::InBlockOrder>(&x, m, &w)
            {
                return Some(format!(
                    "the product of a prompt's {m} rows over {dtype} blocks differs from its reference"
                ));
            }
            *rows += m;
        }
    }
    None
}

/// What [`few_rows_matmul_blocks`] computes on this target, for `w` made from `bytes` of
/// `dtype`, the plain way.
fn block_reference(x: &[f32], m: usize, w: &BlockRows, dtype: GgmlType, bytes: &[u8]) -> Vec<f32> {
    #[cfg(target_arch = "wasm32")]
    {
        let _ = (dtype, bytes);
        integer::product(x, m, w)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let len = (w.rows() * w.cols()) as u64;
        let dequantised = dequantize(dtype, bytes, len).expect("invariant: whole blocks");
        few_rows_matmul(x, m, w.cols(), &dequantised, w.rows())
    }
}

/// The `[m, n]` product whose outputs `part` computes for a range of W's rows, into
/// `[rows, m]`.
fn product(m: usize, n: usize, part: &PartFn<'_>) -> Vec<f32> {
    // Outputs go to `[n, m]` first, each W row's in one place, then turn to `[m, n]`.
    // Written straight to `[m, n]`, rows of the output lie `4n` bytes apart, and where
    // that is a multiple of 4 KiB (n = 3072, 49152) they all fall in one set of the L1
    // cache and evict each other: eight rows ran 3.4× slower than four.
    let mut transposed = vec![0.0; n * m];
    over_cores(0..n, &mut transposed, m, part);
    if m == 1 {
        return transposed;
    }
    let mut y = vec![0.0; m * n];
    for (j, outs) in transposed.chunks_exact(m).enumerate() {
        for (r, &v) in outs.iter().enumerate() {
            y[r * n + j] = v;
        }
    }
    y
}

/// Runs `part` over W's `rows` and their outputs (`[rows, m]`), split into tasks for
/// every core: one core alone reads the weights at about 30 GB/s on the dev machine, and
/// a one-row product is bound by that.
#[cfg(not(target_arch = "wasm32"))]
fn over_cores(rows: Range<usize>, out: &mut [f32], m: usize, part: &PartFn<'_>) {
    if rows.len() < 2 * ROWS_PER_TASK {
        return part(rows, out);
    }
    let half = rows.len() / 2;
    let (out0, out1) = out.split_at_mut(half * m);
    let mid = rows.start + half;
    rayon::join(
        || over_cores(rows.start..mid, out0, m, part),
        || over_cores(mid..rows.end, out1, m, part),
    );
}

/// Runs `part` over all of W: wasm has no threads to give it.
#[cfg(target_arch = "wasm32")]
fn over_cores(rows: Range<usize>, out: &mut [f32], _m: usize, part: &PartFn<'_>) {
    part(rows, out)
}

/// A product over a range of W's rows into their outputs.
type PartFn<'a> = dyn Fn(Range<usize>, &mut [f32]) + Sync + 'a;

/// `x`'s rows dotted with each row of `w` (`[rows, k]`), into `out` (`[rows of w, m]`),
/// with the fastest code this CPU runs.
fn dots_into(x: &[f32], k: usize, w: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if runs_avx2() {
        // SAFETY: the CPU has AVX2 and FMA, just checked; nothing else is required.
        #[allow(unsafe_code)]
        return unsafe { avx2::dots_by_row(x, k, w.chunks_exact(k), out) };
    }
    #[cfg(target_arch = "wasm32")]
    simd128::dots_by_row(x, k, w, out);
    #[cfg(not(target_arch = "wasm32"))]
    dots_by_row::<Separate, LANES, GROUP>(x, k, w, out);
}

/// `a * b + c`, fused where the target has it: without FMA, `f32::mul_add` is a library
/// call.
#[cfg(not(target_arch = "wasm32"))]
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// One rounding: the FMA instruction. What the AVX2 code computes; here for the test
/// that checks it.
#[cfg(all(test, target_arch = "x86_64"))]
struct Fused;
#[cfg(all(test, target_arch = "x86_64"))]
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// A multiply, then an add.
#[cfg(not(target_arch = "wasm32"))]
struct Separate;
#[cfg(not(target_arch = "wasm32"))]
impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Row by row of W, each row read once from memory and then, from cache, dotted with
/// every row of x, `G` at a time with `L` running sums each ([`GROUP`] and [`LANES`] on
/// this target), into `out` (`[rows of w, m]`). In wasm, `simd128.rs` computes what this
/// does with eight sums, in vectors.
#[cfg(not(target_arch = "wasm32"))]
#[inline(always)]
fn dots_by_row<F: MulAdd, const L: usize, const G: usize>(
    x: &[f32],
    k: usize,
    w: &[f32],
    out: &mut [f32],
) {
    let rows: Vec<&[f32]> = x.chunks_exact(k).collect();
    let m = rows.len();
    for (wj, out) in w.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        for (g, group) in rows.chunks(G).enumerate() {
            let out = &mut out[g * G..];
            if let [row] = group {
                dots::<1, L, F>([row], wj, out, 1);
            } else {
                // A short group is padded to `G` with its first row: compiled for x86-64,
                // this code was fast for one row and for four, and slow for some other
                // counts (two rows ran 3× slower than four).
                let padded = std::array::from_fn(|r| *group.get(r).unwrap_or(&group[0]));
                dots::<G, L, F>(padded, wj, out, group.len());
            }
        }
    }
}

/// The dot products of the first `live` of `R` rows with `wj` (the rest are padding),
/// into `out[0..live]`: `L` running sums per row, added in a fixed order at the end, then
/// the tail of `k % L` inputs.
#[cfg(not(target_arch = "wasm32"))]
#[inline(always)]
fn dots<const R: usize, const L: usize, F: MulAdd>(
    rows: [&[f32]; R],
    wj: &[f32],
    out: &mut [f32],
    live: usize,
) {
    let k = wj.len();
    let chunks = k / L;
    // Cut to whole chunks up front, so that the loop's slicing needs no bounds checks.
    let whole = chunks * L;
    let w_whole = &wj[..whole];
    let x_whole: [&[f32]; R] = std::array::from_fn(|r| &rows[r][..whole]);
    let mut acc = [[0.0f32; L]; R];
    for c in 0..chunks {
        let span = c * L..(c + 1) * L;
        let w: &[f32; L] = w_whole[span.clone()]
            .try_into()
            .expect("invariant: L inputs");
        for r in 0..R {
            let x: &[f32; L] = x_whole[r][span.clone()]
                .try_into()
                .expect("invariant: L inputs");
            for l in 0..L {
                acc[r][l] = F::mul_add(x[l], w[l], acc[r][l]);
            }
        }
    }
    for r in 0..live {
        let mut sum = acc[r].iter().sum::<f32>();
        for kk in whole..k {
            sum = F::mul_add(rows[r][kk], wj[kk], sum);
        }
        out[r] = sum;
    }
}

/// [`few_rows_matmul`] as an operation of burn's CPU backend.
#[backend_extension(Flex)]
pub trait CpuKernels: Backend {
    /// `x · Wᵀ` for `x`: `[m, k]`, at most [`CPU_MAX_ROWS`] rows, and `W`: `[n, k]`.
    fn few_rows_matmul(x: &FloatTensor<Self>, w: &FloatTensor<Self>) -> FloatTensor<Self>;

    /// `x · Wᵀ` for `x`: `[m, k]` and `W` in blocks: at most [`CPU_MAX_ROWS`] rows by
    /// [`few_rows_matmul_blocks`], and in wasm more (a prompt's pass) by
    /// `many_rows_matmul_quant`.
    fn matmul_blocks(x: &FloatTensor<Self>, w: &BlockRows) -> FloatTensor<Self>;

    /// Rows `ids` (`[m]`, each below its rows) of `table`, widened to f32, `[m, k]`: a
    /// step's token embeddings where the model keeps the table's blocks alone.
    fn gather_block_rows(ids: IntTensor<Self>, table: &BlockRows) -> FloatTensor<Self>;
}

impl CpuKernels for Flex {
    fn few_rows_matmul(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
        let (x, w) = (x.to_contiguous(), w.to_contiguous());
        let (m, k) = (x.layout().shape()[0], x.layout().shape()[1]);
        let n = w.layout().shape()[0];
        let y = few_rows_matmul(f32s(&x), m, k, f32s(&w), n);
        FlexTensor::from_data(TensorData::new(y, [m, n]))
    }

    fn matmul_blocks(x: &FlexTensor, w: &BlockRows) -> FlexTensor {
        let x = x.to_contiguous();
        let m = x.layout().shape()[0];
        #[cfg(target_arch = "wasm32")]
        let y = if m > CPU_MAX_ROWS {
            many_rows_matmul_quant(f32s(&x), m, w)
        } else {
            few_rows_matmul_blocks(f32s(&x), m, w)
        };
        #[cfg(not(target_arch = "wasm32"))]
        let y = few_rows_matmul_blocks(f32s(&x), m, w);
        FlexTensor::from_data(TensorData::new(y, [m, w.rows()]))
    }

    fn gather_block_rows(ids: FlexTensor, table: &BlockRows) -> FlexTensor {
        let ids = ids.to_contiguous();
        let ids = ids
            .as_slice::<i32>()
            .expect("invariant: token ids are uploaded as i32");
        let mut rows = Vec::with_capacity(ids.len() * table.cols());
        for &id in ids {
            let id = usize::try_from(id).expect("invariant: ids are checked against the vocab");
            table.widen_row(id, &mut rows);
        }
        FlexTensor::from_data(TensorData::new(rows, [ids.len(), table.cols()]))
    }
}

/// A contiguous f32 tensor's values.
pub(crate) fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("invariant: f32 tensors, made contiguous by the caller")
}

/// Deterministic values in [-1, 1): inputs for the CPU code's tests and checks.
pub(crate) fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The largest difference between `a` and `b`, of equal lengths: for the tests.
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `x · Wᵀ` in f64, one product at a time.
    fn naive(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
        let mut y = vec![0.0f64; m * n];
        for r in 0..m {
            for j in 0..n {
                for kk in 0..k {
                    y[r * n + j] += f64::from(x[r * k + kk]) * f64::from(w[j * k + kk]);
                }
            }
        }
        y.into_iter().map(|v| v as f32).collect()
    }

    /// A product as [`few_rows_matmul`] computes it.
    type Product = fn(&[f32], usize, usize, &[f32], usize) -> Vec<f32>;

    /// [`dots_by_row`] with `L` sums and groups of `G` rows, `[m, n]` out: so that every
    /// target's tiling is tested here, wasm's included.
    fn tiled<const L: usize, const G: usize>(
        x: &[f32],
        m: usize,
        k: usize,
        w: &[f32],
        n: usize,
    ) -> Vec<f32> {
        tiled_with::<Separate, L, G>(x, m, k, w, n)
    }

    /// [`tiled`] with the multiply-add `F`.
    fn tiled_with<F: MulAdd, const L: usize, const G: usize>(
        x: &[f32],
        m: usize,
        k: usize,
        w: &[f32],
        n: usize,
    ) -> Vec<f32> {
        let mut by_w_row = vec![0.0; n * m];
        dots_by_row::<F, L, G>(x, k, w, &mut by_w_row);
        (0..m * n).map(|i| by_w_row[(i % n) * m + i / n]).collect()
    }

    const PRODUCTS: [(&str, Product); 3] = [
        ("this target's", few_rows_matmul),
        ("the baseline's tiling", tiled::<16, 4>),
        ("wasm's sums", tiled::<8, 4>),
    ];

    #[test]
    fn matches_a_naive_product_for_every_group_size() {
        // An input width that leaves a tail past the last lane group, and enough rows of
        // W to be split across cores.
        let (k, n) = (37, 600);
        for (name, product) in PRODUCTS {
            for m in [1, 2, 3, 4, 5, 7, 9, 16] {
                let x = values(m * k, m as u64);
                let w = values(k * n, 99);
                let worst = max_abs_diff(&product(&x, m, k, &w, n), &naive(&x, m, k, &w, n));
                assert!(worst < 1e-4, "{name}, m {m}: off by {worst}");
            }
        }
    }

    #[test]
    fn a_row_comes_out_the_same_alone_or_with_others() {
        let (k, n) = (64, 600);
        let w = values(k * n, 3);
        let x = values(6 * k, 4);
        for (name, product) in PRODUCTS {
            let all = product(&x, 6, k, &w, n);
            for r in 0..6 {
                let alone = product(&x[r * k..][..k], 1, k, &w, n);
                assert_eq!(alone, all[r * n..][..n], "{name}, row {r}");
            }
        }
    }

    /// The AVX2 intrinsics compute what the portable loops with FMA do, bit for bit,
    /// with and without a tail past the last chunk of 16; and over blocks, quantised or
    /// 16-bit floats, they compute their products over the dequantised values.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_code_equals_the_portable_code_and_reads_blocks_exactly() {
        if !runs_avx2() {
            return;
        }
        let n = 600;
        for m in [1, 2, 3, 4, 5, 7, 9, 16] {
            for k in [96, 37] {
                let x = values(m * k, m as u64);
                let w = values(k * n, 8);
                let portable = tiled_with::<Fused, 16, 4>(&x, m, k, &w, n);
                assert_eq!(few_rows_matmul(&x, m, k, &w, n), portable, "k {k}, m {m}");
            }
        }
        let check = check_block_products();
        assert!(check.passed(), "{check}");
        assert_eq!(check.rows, 120);
    }
}
