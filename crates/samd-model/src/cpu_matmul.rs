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
//! Each row's sums run over the inputs in the same order whatever the number of rows,
//! so a row's result is bit for bit the same in a one-node step as in a tree's.
//!
//! On x86-64 with AVX2 and FMA (checked at run time) the loops compile with those
//! features, fused multiply-adds included; on wasm with 128-bit SIMD; elsewhere for the
//! baseline target.

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};
use burn::tensor::TensorData;
use std::ops::Range;

#[cfg(target_arch = "x86_64")]
mod avx2;

use crate::quant_rows::{BLOCK, Codec, Q4_0, Q4_1, Q8_0, QuantKind, QuantRow, QuantRows};

/// Most rows [`few_rows_matmul`] is for: past a few row groups, gemm's packed kernels,
/// which reuse each weight across a whole tile of rows, do better.
pub const CPU_MAX_ROWS: usize = 16;

/// Inputs each dot product sums at once: two AVX vectors per row, so that a group's
/// running sums make eight independent chains, enough to keep both FMA units busy
/// (with four, at one vector per row, a group ran at half the speed).
#[cfg(not(target_arch = "wasm32"))]
const LANES: usize = 16;
/// Rows of x multiplied per pass over a row of W.
#[cfg(not(target_arch = "wasm32"))]
const GROUP: usize = 4;

/// Inputs each dot product sums at once, and rows per pass, in wasm: two 128-bit vectors
/// per row, two rows. In V8 the projections of SmolLM2's 30 blocks took 9.5, 15.8, 28
/// and 55 ms for 1, 2, 4 and 8 rows, against 12.4, 49.5, 50.5 and 100 ms with the
/// x86-64 sizes: wasm has no FMA, so the sums cost more than the weights' reads, and
/// more running sums than there are registers spill.
#[cfg(target_arch = "wasm32")]
const LANES: usize = 8;
#[cfg(target_arch = "wasm32")]
const GROUP: usize = 2;

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
        dots_into(x, k, w[rows.start * k..rows.end * k].chunks_exact(k), out)
    })
}

/// `x · Wᵀ` for `x`: `[m, k]` and `W` in quantised blocks; `[m, n]` out, bit for bit
/// [`few_rows_matmul`] over W dequantised.
pub fn few_rows_matmul_quant(x: &[f32], m: usize, w: &QuantRows) -> Vec<f32> {
    let k = w.cols();
    assert!(x.len() == m * k, "invariant: callers pass whole matrices");
    product(m, w.rows(), &|rows, out| match w.kind() {
        QuantKind::Q8_0 => dots_into(x, k, w.rows_in::<Q8_0>(rows), out),
        QuantKind::Q4_0 => dots_into(x, k, w.rows_in::<Q4_0>(rows), out),
        QuantKind::Q4_1 => dots_into(x, k, w.rows_in::<Q4_1>(rows), out),
    })
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

/// `x`'s rows dotted with each row of `w`, into `out` (`[rows of w, m]`), with the
/// fastest code this CPU runs.
fn dots_into<W: Row>(x: &[f32], k: usize, w: impl Iterator<Item = W>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, just checked; nothing else is required.
        #[allow(unsafe_code)]
        return unsafe { avx2::dots_by_row(x, k, w, out) };
    }
    #[cfg(target_arch = "wasm32")]
    dots_simd128(x, k, w, out);
    #[cfg(not(target_arch = "wasm32"))]
    dots_by_row::<Separate, LANES, GROUP, W>(x, k, w, out);
}

/// A row of W as every target's loops read it.
#[cfg(target_arch = "x86_64")]
trait Row: WeightRow + avx2::WeightChunks {}
#[cfg(target_arch = "x86_64")]
impl<T: WeightRow + avx2::WeightChunks> Row for T {}
/// A row of W as every target's loops read it.
#[cfg(not(target_arch = "x86_64"))]
trait Row: WeightRow {}
#[cfg(not(target_arch = "x86_64"))]
impl<T: WeightRow> Row for T {}

/// [`dots_by_row`] compiled with wasm's 128-bit SIMD, so that its loops vectorise four
/// wide. A wasm module has no run-time feature check: an engine without SIMD rejects the
/// whole module, and every browser with WebGPU has had SIMD for years.
#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
fn dots_simd128<W: WeightRow>(x: &[f32], k: usize, w: impl Iterator<Item = W>, out: &mut [f32]) {
    dots_by_row::<Separate, LANES, GROUP, W>(x, k, w, out)
}

/// `a * b + c`, fused where the target has it: without FMA, `f32::mul_add` is a library
/// call.
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
struct Separate;
impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Row by row of W, each row read once from memory (and widened to f32 if it is in
/// blocks) and then, from cache, dotted with every row of x, `G` at a time with `L`
/// running sums each ([`GROUP`] and [`LANES`] on this target), into `out`
/// (`[rows of w, m]`).
#[inline(always)]
fn dots_by_row<F: MulAdd, const L: usize, const G: usize, W: WeightRow>(
    x: &[f32],
    k: usize,
    w: impl Iterator<Item = W>,
    out: &mut [f32],
) {
    let rows: Vec<&[f32]> = x.chunks_exact(k).collect();
    let m = rows.len();
    if let [x] = rows[..] {
        for (wj, out) in w.zip(out.iter_mut()) {
            *out = wj.dot::<L, F>(x);
        }
        return;
    }
    let mut scratch = vec![0.0; if W::WIDENS { k } else { 0 }];
    for (wj, out) in w.zip(out.chunks_exact_mut(m)) {
        let wj = wj.values(&mut scratch);
        for (g, group) in rows.chunks(G).enumerate() {
            let out = &mut out[g * G..];
            if let [row] = group {
                dots::<1, L, F>([row], wj, out, 1);
            } else {
                // A short group is padded to `G` with its first row: on x86-64 the
                // compiler makes fast code of one row and of four, and slow code of some
                // other counts (two rows ran 3× slower than four).
                let padded = std::array::from_fn(|r| *group.get(r).unwrap_or(&group[0]));
                dots::<G, L, F>(padded, wj, out, group.len());
            }
        }
    }
}

/// A row of W as the dot products read it: f32s as they are, or quantised blocks
/// widened to f32. Every kind sums in [`dots`]' order, so that all agree bit for bit.
trait WeightRow: Copy {
    /// Whether [`WeightRow::values`] needs a scratch row.
    const WIDENS: bool;

    /// The dot product with one row of x, as [`dots`] takes it.
    fn dot<const L: usize, F: MulAdd>(self, x: &[f32]) -> f32;

    /// The row's values, in `scratch` if they must be widened there: for products of
    /// several rows of x. Widened inside their dot products, as for one row, the
    /// values took registers from the rows' running sums, which spilled; the scratch
    /// row stays in L1.
    fn values<'s>(self, scratch: &'s mut [f32]) -> &'s [f32]
    where
        Self: 's;
}

impl WeightRow for &[f32] {
    const WIDENS: bool = false;

    #[inline(always)]
    fn dot<const L: usize, F: MulAdd>(self, x: &[f32]) -> f32 {
        let mut out = [0.0];
        dots::<1, L, F>([x], self, &mut out, 1);
        out[0]
    }

    #[inline(always)]
    fn values<'s>(self, _scratch: &'s mut [f32]) -> &'s [f32]
    where
        Self: 's,
    {
        self
    }
}

impl<C: Codec> WeightRow for QuantRow<'_, C> {
    const WIDENS: bool = true;

    /// Each block is widened in registers and summed at once: a one-node step is bound by
    /// reading the weights, and the blocks are a sixth of their f32 bytes.
    #[inline(always)]
    fn dot<const L: usize, F: MulAdd>(self, x: &[f32]) -> f32 {
        const { assert!(BLOCK.is_multiple_of(L)) };
        let x = &x[..self.len()];
        let mut acc = [0.0f32; L];
        self.for_each_block(|b, w| {
            let x: &[f32; BLOCK] = x[b * BLOCK..(b + 1) * BLOCK]
                .try_into()
                .expect("invariant: whole blocks");
            for c in 0..BLOCK / L {
                for l in 0..L {
                    acc[l] = F::mul_add(x[c * L + l], w[c * L + l], acc[l]);
                }
            }
        });
        acc.iter().sum()
    }

    #[inline(always)]
    fn values<'s>(self, scratch: &'s mut [f32]) -> &'s [f32]
    where
        Self: 's,
    {
        self.widen_into(scratch);
        scratch
    }
}

/// The dot products of the first `live` of `R` rows with `wj` (the rest are padding),
/// into `out[0..live]`: `L` running sums per row, added in a fixed order at the end, then
/// the tail of `k % L` inputs.
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

    /// `x · Wᵀ` for `x`: `[m, k]`, at most [`CPU_MAX_ROWS`] rows, and `W` in quantised
    /// blocks.
    fn few_rows_matmul_quant(x: &FloatTensor<Self>, w: &QuantRows) -> FloatTensor<Self>;
}

impl CpuKernels for Flex {
    fn few_rows_matmul(x: &FlexTensor, w: &FlexTensor) -> FlexTensor {
        let (x, w) = (x.to_contiguous(), w.to_contiguous());
        let (m, k) = (x.layout().shape()[0], x.layout().shape()[1]);
        let n = w.layout().shape()[0];
        let y = few_rows_matmul(f32s(&x), m, k, f32s(&w), n);
        FlexTensor::from_data(TensorData::new(y, [m, n]))
    }

    fn few_rows_matmul_quant(x: &FlexTensor, w: &QuantRows) -> FlexTensor {
        let x = x.to_contiguous();
        let m = x.layout().shape()[0];
        let y = few_rows_matmul_quant(f32s(&x), m, w);
        FlexTensor::from_data(TensorData::new(y, [m, w.rows()]))
    }
}

/// A contiguous f32 tensor's values.
fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("invariant: f32 tensors, made contiguous by the caller")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dequant::dequantize;
    use crate::gguf::GgmlType;
    use crate::quant_rows::random_blocks;

    /// Deterministic values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
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
        tiled_rows::<Separate, L, G, _>(x, m, k, w.chunks_exact(k), n)
    }

    /// [`tiled`] over any kind of rows of W, with the multiply-add `F`.
    fn tiled_rows<F: MulAdd, const L: usize, const G: usize, W: WeightRow>(
        x: &[f32],
        m: usize,
        k: usize,
        w: impl Iterator<Item = W>,
        n: usize,
    ) -> Vec<f32> {
        let mut by_w_row = vec![0.0; n * m];
        dots_by_row::<F, L, G, W>(x, k, w, &mut by_w_row);
        (0..m * n).map(|i| by_w_row[(i % n) * m + i / n]).collect()
    }

    const PRODUCTS: [(&str, Product); 3] = [
        ("this target's", few_rows_matmul),
        ("x86-64's tiling", tiled::<16, 4>),
        ("wasm's tiling", tiled::<8, 2>),
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
                let got = product(&x, m, k, &w, n);
                let want = naive(&x, m, k, &w, n);
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
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

    #[test]
    fn a_product_over_blocks_is_the_product_over_their_values() {
        let (k, n) = (96, 600);
        for dtype in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            let bytes = random_blocks(dtype, n * k / BLOCK, 5);
            let w = QuantRows::from_gguf(dtype, &bytes, n, k).unwrap();
            let dequantised = dequantize(dtype, &bytes, (n * k) as u64).unwrap();
            for m in [1, 2, 3, 4, 5, 9, 16] {
                let x = values(m * k, m as u64);
                let want = few_rows_matmul(&x, m, k, &dequantised, n);
                assert_eq!(few_rows_matmul_quant(&x, m, &w), want, "{dtype}, m {m}");
                match w.kind() {
                    QuantKind::Q8_0 => each_tiling_agrees::<Q8_0>(&x, m, &w, &dequantised),
                    QuantKind::Q4_0 => each_tiling_agrees::<Q4_0>(&x, m, &w, &dequantised),
                    QuantKind::Q4_1 => each_tiling_agrees::<Q4_1>(&x, m, &w, &dequantised),
                }
            }
        }
    }

    /// x86-64's and wasm's tilings give the same bits over blocks as over their values.
    fn each_tiling_agrees<C: Codec>(x: &[f32], m: usize, w: &QuantRows, dequantised: &[f32]) {
        let (k, n) = (w.cols(), w.rows());
        let blocks = || w.rows_in::<C>(0..n);
        assert_eq!(
            tiled_rows::<Separate, 16, 4, _>(x, m, k, blocks(), n),
            tiled::<16, 4>(x, m, k, dequantised, n),
            "x86-64's tiling, m {m}"
        );
        assert_eq!(
            tiled_rows::<Separate, 8, 2, _>(x, m, k, blocks(), n),
            tiled::<8, 2>(x, m, k, dequantised, n),
            "wasm's tiling, m {m}"
        );
    }

    /// The AVX2 intrinsics compute what the portable loops with FMA do, bit for bit, over
    /// f32 rows (with a tail) and over each kind of block.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_code_equals_the_portable_code() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return;
        }
        let n = 600;
        for m in 1..=9 {
            let (k, tail_k) = (96, 37);
            let x = values(m * k, m as u64);
            let w = values(k * n, 8);
            let portable = tiled_rows::<Fused, 16, 4, _>(&x, m, k, w.chunks_exact(k), n);
            assert_eq!(few_rows_matmul(&x, m, k, &w, n), portable, "f32, m {m}");
            let (x_tail, w_tail) = (values(m * tail_k, 1), values(tail_k * n, 2));
            assert_eq!(
                few_rows_matmul(&x_tail, m, tail_k, &w_tail, n),
                tiled_rows::<Fused, 16, 4, _>(&x_tail, m, tail_k, w_tail.chunks_exact(tail_k), n),
                "f32 with a tail, m {m}"
            );
            for dtype in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
                let bytes = random_blocks(dtype, n * k / BLOCK, 6);
                let w = QuantRows::from_gguf(dtype, &bytes, n, k).unwrap();
                let portable = match w.kind() {
                    QuantKind::Q8_0 => {
                        tiled_rows::<Fused, 16, 4, _>(&x, m, k, w.rows_in::<Q8_0>(0..n), n)
                    }
                    QuantKind::Q4_0 => {
                        tiled_rows::<Fused, 16, 4, _>(&x, m, k, w.rows_in::<Q4_0>(0..n), n)
                    }
                    QuantKind::Q4_1 => {
                        tiled_rows::<Fused, 16, 4, _>(&x, m, k, w.rows_in::<Q4_1>(0..n), n)
                    }
                };
                assert_eq!(few_rows_matmul_quant(&x, m, &w), portable, "{dtype}, m {m}");
            }
        }
    }
}
