//! Products over quantised blocks in integer arithmetic: how wasm reads the blocks.
//!
//! In wasm a one-node step of SmolLM2 reads its 540 MB of f32 weights at about the
//! machine's memory bandwidth (58 ms in V8 on the 2-core dev machine, vectorised). The
//! blocks are 92 MB, but widened to f32 exactly, as the AVX2 code does, they cost more
//! arithmetic than they save reads: wasm has no FMA, and each weight takes an extend, a
//! conversion, a multiply and an add before its product. Here x is rounded to 16-bit
//! integers instead, and each block's products are summed in exact integer arithmetic,
//! eight multiply-adds per instruction (`i32x4.dot_i16x8_s`).
//!
//! The price is x's rounding: at most half a step of `max |x| / 32767` in each block of
//! 32, far below the weights' own rounding to 4 or 8 bits. Every row's result depends on
//! that row alone, and the integer sums are exact, so a row comes out the same in a
//! one-node step as in a tree's: speculative output stays plain output.
//!
//! The arithmetic, which `simd128.rs` does in vectors and [`dot`] in scalars:
//! - Each block `b` of a row of x is scaled by `s = max |x| / 32767` and rounded to i16,
//!   ties to even: `xq = round(x · (32767 / max |x|))` ([`round_block`]).
//! - A block's products go to four integer lanes as `i32x4.dot_i16x8_s` pairs them: the
//!   element `e` to lane `e % 8 / 2`, `p[l] = Σ q_e · xq_e`, where `q` is the weight's
//!   code (Q4_0's less 8).
//! - Block after block, `acc[l] += p[l] · (d · s)` in f32, `d` being the block's scale.
//! - The result is `(acc[0] + acc[2]) + (acc[1] + acc[3])`, plus, for Q4_1, each block's
//!   minimum times `s · Σ xq`, summed in four lanes as the blocks' (block `b` in lane
//!   `b % 4`) and folded the same way ([`finish`]).

use crate::block_rows::{BLOCK, BlockRows, Codec, QuantKind, QuantRow};

/// The largest magnitude of a rounded input.
pub(super) const LEVELS: f32 = 32_767.0;

/// Lanes of a block's integer sums: one `i32x4`.
pub(super) const SUM_LANES: usize = 4;

/// Rows of x rounded to i16 per block of [`BLOCK`], with what the products need of each
/// block.
pub(super) struct RoundedRows {
    k: usize,
    /// The rounded values, row after row.
    values: Vec<i16>,
    /// Each block's step `s`, row after row: `x ≈ s · xq`.
    steps: Vec<f32>,
    /// Each block's `s · Σ xq`: what a Q4_1 block's minimum multiplies.
    sums: Vec<f32>,
}

impl RoundedRows {
    /// `x`'s rows of `k` values (a multiple of [`BLOCK`]), rounded with the fastest code
    /// this target has: in wasm `simd128.rs`'s vectors, which round as [`round_block`].
    pub(super) fn new(x: &[f32], k: usize) -> Self {
        #[cfg(target_arch = "wasm32")]
        return Self::with(x, k, super::simd128::round_block);
        #[allow(unreachable_code)]
        Self::with(x, k, round_block)
    }

    /// `x`'s rows rounded block by block with `round`.
    pub(super) fn with(x: &[f32], k: usize, round: BlockRounding) -> Self {
        assert!(
            k.is_multiple_of(BLOCK) && x.len().is_multiple_of(k),
            "invariant: rows of whole blocks"
        );
        let blocks = x.len() / BLOCK;
        let mut values = vec![0; x.len()];
        let mut steps = Vec::with_capacity(blocks);
        let mut sums = Vec::with_capacity(blocks);
        for (block, out) in x.chunks_exact(BLOCK).zip(values.chunks_exact_mut(BLOCK)) {
            let block = block.try_into().expect("invariant: whole blocks");
            let out = out.try_into().expect("invariant: whole blocks");
            let Rounded { step, total } = round(block, out);
            steps.push(step);
            sums.push(step * total as f32);
        }
        Self {
            k,
            values,
            steps,
            sums,
        }
    }

    /// Rows held.
    pub(super) fn len(&self) -> usize {
        self.values.len() / self.k
    }

    /// Row `r`.
    pub(super) fn row(&self, r: usize) -> RoundedRow<'_> {
        let blocks = self.k / BLOCK;
        RoundedRow {
            values: &self.values[r * self.k..][..self.k],
            steps: &self.steps[r * blocks..][..blocks],
            sums: &self.sums[r * blocks..][..blocks],
        }
    }
}

/// One row of [`RoundedRows`].
#[derive(Clone, Copy)]
pub(super) struct RoundedRow<'a> {
    /// The rounded values.
    pub(super) values: &'a [i16],
    /// Each block's step.
    pub(super) steps: &'a [f32],
    /// Each block's `s · Σ xq`.
    pub(super) sums: &'a [f32],
}

/// What rounding a block of x gives besides its values.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rounded {
    /// The block's step `s`: `x ≈ s · xq`; NaN for a block holding a NaN or an infinity,
    /// so that its products are NaN, as they would be in f32.
    pub(super) step: f32,
    /// `Σ xq`.
    pub(super) total: i32,
}

/// How a block of x is rounded: [`round_block`], or vector code that computes the same.
pub(super) type BlockRounding = fn(&[f32; BLOCK], &mut [i16; BLOCK]) -> Rounded;

/// `block` rounded into `out`: `s = max |x| / 32767`, `xq = round(x / s)` (ties to even,
/// which a vector rounds in one instruction), all zeros for a block that is all zeros
/// or not finite.
pub(super) fn round_block(block: &[f32; BLOCK], out: &mut [i16; BLOCK]) -> Rounded {
    let max = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let finite = block.iter().all(|v| v.is_finite());
    let scale = if finite && max > 0.0 {
        LEVELS / max
    } else {
        0.0
    };
    for (q, &v) in out.iter_mut().zip(block) {
        // Within ±32767 (`as` saturates anyway); a NaN becomes 0.
        *q = (v * scale).round_ties_even() as i16;
    }
    Rounded {
        step: if finite { max / LEVELS } else { f32::NAN },
        total: out.iter().map(|&q| i32::from(q)).sum(),
    }
}

/// `x`'s row dotted with `w`'s row, in scalars: what the vector code computes.
pub(super) fn dot<C: Codec>(x: RoundedRow<'_>, w: QuantRow<'_, C>) -> f32 {
    let mut acc = [0.0f32; SUM_LANES];
    for (b, ([d, d_high], _, quants)) in w.raw_blocks().enumerate() {
        let xq = &x.values[b * BLOCK..][..BLOCK];
        // Each half's sums: they share a scale but in Q8_16.
        let mut p = [[0i32; SUM_LANES]; 2];
        for (e, (&q, &xq)) in codes::<C>(quants).iter().zip(xq).enumerate() {
            p[e / 16][e % 8 / 2] += i32::from(q) * i32::from(xq);
        }
        let step = d * x.steps[b];
        if C::KIND.scales_per_block() == 2 {
            let step_high = d_high * x.steps[b];
            for (acc, (low, high)) in acc.iter_mut().zip(p[0].into_iter().zip(p[1])) {
                *acc += low as f32 * step + high as f32 * step_high;
            }
        } else {
            for (acc, (low, high)) in acc.iter_mut().zip(p[0].into_iter().zip(p[1])) {
                *acc += (low + high) as f32 * step;
            }
        }
    }
    finish(acc, x, w)
}

/// A block's 32 codes, in order: the values `d · q (+ m)` multiplies.
pub(super) fn codes<C: Codec>(quants: &[u8]) -> [i16; BLOCK] {
    std::array::from_fn(|e| match C::KIND {
        QuantKind::Q8_0 | QuantKind::Q5_1 | QuantKind::Q8_16 => i16::from(quants[e] as i8),
        QuantKind::Q4_0 | QuantKind::Q4_1 => {
            let nibble = if e < 16 {
                quants[e] & 0x0f
            } else {
                quants[e - 16] >> 4
            };
            let offset = if C::KIND == QuantKind::Q4_0 { 8 } else { 0 };
            i16::from(nibble) - offset
        }
    })
}

/// A dot product from its lanes' sums: the lanes folded, then the minimums (Q4_1's,
/// Q5_1's).
#[inline(always)]
pub(super) fn finish<C: Codec>(
    acc: [f32; SUM_LANES],
    x: RoundedRow<'_>,
    w: QuantRow<'_, C>,
) -> f32 {
    let sum = fold(acc);
    if !C::KIND.has_min() {
        return sum;
    }
    let mut minimums = [0.0f32; SUM_LANES];
    for (b, ((_, m, _), &s)) in w.raw_blocks().zip(x.sums).enumerate() {
        minimums[b % SUM_LANES] += m * s;
    }
    sum + fold(minimums)
}

/// Four lanes' sums added: `(0 + 2) + (1 + 3)`.
#[inline(always)]
pub(super) fn fold(lanes: [f32; SUM_LANES]) -> f32 {
    (lanes[0] + lanes[2]) + (lanes[1] + lanes[3])
}

/// `x · Wᵀ` for `x`: `[m, k]` and `W` in blocks, `[m, n]` out, one dot product at a time
/// in scalars: the reference the vector code is checked against.
pub(crate) fn product(x: &[f32], m: usize, w: &BlockRows) -> Vec<f32> {
    product_by::<InLanes>(x, m, w)
}

/// A dot product of a rounded row of x with a row of W, in scalars: how one product's
/// arithmetic is specified.
pub(super) trait ScalarDot {
    fn dot<C: Codec>(x: RoundedRow<'_>, w: QuantRow<'_, C>) -> f32;
}

/// [`dot`]: the products of a few rows.
pub(super) struct InLanes;

impl ScalarDot for InLanes {
    fn dot<C: Codec>(x: RoundedRow<'_>, w: QuantRow<'_, C>) -> f32 {
        dot(x, w)
    }
}

/// `x · Wᵀ` (`[m, n]` out) with x rounded as [`round_block`] rounds it, each output
/// from `D`'s dot product.
pub(super) fn product_by<D: ScalarDot>(x: &[f32], m: usize, w: &BlockRows) -> Vec<f32> {
    use crate::block_rows::{Q4_0, Q4_1, Q5_1, Q8_0, Q8_16};
    let rounded = RoundedRows::with(x, w.cols(), round_block);
    let n = w.rows();
    let mut y = vec![0.0; m * n];
    for r in 0..m {
        let row = rounded.row(r);
        let out = &mut y[r * n..][..n];
        match w.quant_kind() {
            QuantKind::Q8_0 => fill::<D, _>(out, w.rows_in::<Q8_0>(0..n), row),
            QuantKind::Q4_0 => fill::<D, _>(out, w.rows_in::<Q4_0>(0..n), row),
            QuantKind::Q4_1 => fill::<D, _>(out, w.rows_in::<Q4_1>(0..n), row),
            QuantKind::Q5_1 => fill::<D, _>(out, w.rows_in::<Q5_1>(0..n), row),
            QuantKind::Q8_16 => fill::<D, _>(out, w.rows_in::<Q8_16>(0..n), row),
        }
    }
    y
}

/// Each of `out` from its row of W dotted with `x`.
fn fill<'a, D: ScalarDot, C: Codec>(
    out: &mut [f32],
    w: impl Iterator<Item = QuantRow<'a, C>>,
    x: RoundedRow<'_>,
) {
    for (o, wj) in out.iter_mut().zip(w) {
        *o = D::dot(x, wj);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_rows::{TYPES_OF_EACH_KIND, random_blocks, random_rows};
    use crate::cpu_matmul::{max_abs_diff, values};
    use crate::dequant::dequantize;
    use crate::gguf::GgmlType;

    /// `x · Wᵀ` in f64 over W dequantised.
    fn exact(x: &[f32], m: usize, w: &[f32], k: usize) -> Vec<f32> {
        let n = w.len() / k;
        (0..m * n)
            .map(|i| {
                let (r, j) = (i / n, i % n);
                (0..k)
                    .map(|kk| f64::from(x[r * k + kk]) * f64::from(w[j * k + kk]))
                    .sum::<f64>() as f32
            })
            .collect()
    }

    #[test]
    fn products_are_the_exact_ones_within_the_rounding_of_x() {
        within_the_rounding_of_x::<InLanes>();
        within_the_rounding_of_x::<super::super::tiled::InBlockOrder>();
    }

    /// That `D`'s products are the exact ones over W dequantised, within what rounding
    /// x costs.
    fn within_the_rounding_of_x<D: ScalarDot>() {
        let n = 40;
        for dtype in TYPES_OF_EACH_KIND {
            // Three blocks of 32, or a K-quant's super-block.
            let (bytes, w) = random_rows(dtype, n, 96, 11);
            let k = w.cols();
            let dequantised = dequantize(dtype, &bytes, (n * k) as u64).unwrap();
            for m in [1, 3, 5] {
                let x = values(m * k, m as u64 + 20);
                let want = exact(&x, m, &dequantised, k);
                let scale = want.iter().fold(0.0f32, |s, v| s.max(v.abs()));
                let worst = max_abs_diff(&product_by::<D>(&x, m, &w), &want);
                // Each of k terms is off by at most half a step of x's block times |w|.
                assert!(
                    worst <= 1e-4 * scale,
                    "{dtype}, m {m}: off by {worst} of {scale}"
                );
            }
        }
    }

    #[test]
    fn a_row_comes_out_the_same_alone_or_with_others() {
        let (n, k) = (24, 64);
        let bytes = random_blocks(GgmlType::Q4_1, n * k / BLOCK, 3);
        let w = BlockRows::from_gguf(GgmlType::Q4_1, &bytes, n, k).unwrap();
        let x = values(4 * k, 4);
        let all = product(&x, 4, &w);
        for r in 0..4 {
            assert_eq!(
                product(&x[r * k..][..k], 1, &w),
                all[r * n..][..n],
                "row {r}"
            );
        }
    }

    #[test]
    fn rounding_keeps_the_sign_and_the_largest_value_rounds_ties_to_even_and_flags_non_finite_blocks()
     {
        let mut x = values(64, 9);
        x[5] = -3.0;
        x[40] = f32::NAN;
        let rounded = RoundedRows::new(&x, 64);
        let row = rounded.row(0);
        assert_eq!(row.values[5], -32_767);
        assert!(
            x[..32]
                .iter()
                .zip(row.values)
                .all(|(v, &q)| q == 0 || v.signum() == f32::from(q).signum())
        );
        assert_eq!(row.steps[0], 3.0 / LEVELS);
        assert!(row.steps[1].is_nan() && row.sums[1].is_nan());
        assert_eq!(rounded.len(), 1);

        x[..8].copy_from_slice(&[32_767.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5]);
        let rounded = RoundedRows::new(&x, 64);
        assert_eq!(rounded.row(0).values[..8], [32_767, 0, 2, 2, 0, -2, -2, 4]);
    }
}
