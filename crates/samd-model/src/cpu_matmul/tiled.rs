//! Products of a prompt's many rows over quantised blocks, in integer arithmetic: wasm's
//! prompt passes.
//!
//! In wasm a prompt's pass widened each matrix to f32 for burn's gemm, whose kernel
//! multiplies and adds in f32 (wasm has no FMA): 48 products for 31 instructions, 71% of
//! a prefill's time. Here x is rounded to 16 bits per block, as for a step's few rows
//! (`integer.rs`), and W's rows are packed four at a time ([`PackedRows`]): two inputs of
//! row 0, then of row 1, 2 and 3, so that one `i32x4.dot_i16x8_s` against a pair of x's
//! inputs splat across the lanes adds two products to each of four dot products. Four
//! rows of x against eight of W take 64 products for 22 instructions. The weights are
//! packed once per product (by a transpose in vectors, 1% of a prefill), and each packed
//! weight then meets every row of the pass, 256 in a full one.
//!
//! The arithmetic, which `simd128.rs` does in vectors and [`InBlockOrder`] in scalars
//! (tested against f64 in `integer.rs`, and the vectors against it by the kernel check),
//! for each row of x and row of W:
//! - x's blocks are rounded as [`round_block`](super::integer::round_block) rounds them;
//! - each block's products are summed exactly in integers: `t = Σ q_e · xq_e`;
//! - its share is `t · (d · s)` in f32, plus, for Q4_1, its minimum times `s · Σ xq`;
//!   in Q8_16, each half of the block has its own `t` and `d`, and share;
//! - the shares are added into one f32 from 0, block after block.
//!
//! Every output depends on its row of x alone, not on the other rows of its pass. These
//! are not the few rows' sums (which run in four lanes), so a pass of 16 rows or fewer
//! (a step, or a prompt's short last pass) and a longer one round differently, as burn's
//! gemm and our few rows' products did over f32: plain and speculative decoding run the
//! same passes over a prompt, so their outputs stay the same.

use super::integer::{RoundedRow, ScalarDot, codes};
use crate::block_rows::{BLOCK, BlockRows, Codec, QuantKind, QuantRow};

/// Rows of W packed side by side: the lanes of one vector of sums.
pub(super) const PACKED_ROWS: usize = 4;

/// W's rows, four at a time (zeros past the last row, up to a multiple of `groups_of`
/// groups), as the vector code reads them: for each group and block, the block's 16
/// pairs of codes, each as `[row 0's two, row 1's, row 2's, row 3's]`; and each group's
/// scales (two in Q8_16) and minimums per block, one per row.
#[derive(Debug, PartialEq)]
pub(super) struct PackedRows {
    /// Groups of [`PACKED_ROWS`] rows.
    groups: usize,
    /// Blocks per row.
    blocks: usize,
    /// `[group][block][pair][row][2]`.
    codes: Vec<i16>,
    /// `[group][block][scale][row]`.
    scales: Vec<f32>,
    /// `[group][block][row]`; empty for kinds without minimums.
    mins: Vec<f32>,
}

impl PackedRows {
    /// `w` packed with `P`, its groups padded to a multiple of `groups_of`. A group's
    /// lanes past W's last row repeat that row's codes, with scales (and minimums) of 0.
    pub(super) fn new<P: BlockPacking>(w: &BlockRows, groups_of: usize) -> Self {
        use crate::block_rows::{Q4_0, Q4_1, Q5_1, Q8_0, Q8_16};
        match w.quant_kind() {
            QuantKind::Q8_0 => Self::pack::<P, _>(w.rows_in::<Q8_0>(0..w.rows()), w, groups_of),
            QuantKind::Q4_0 => Self::pack::<P, _>(w.rows_in::<Q4_0>(0..w.rows()), w, groups_of),
            QuantKind::Q4_1 => Self::pack::<P, _>(w.rows_in::<Q4_1>(0..w.rows()), w, groups_of),
            QuantKind::Q5_1 => Self::pack::<P, _>(w.rows_in::<Q5_1>(0..w.rows()), w, groups_of),
            QuantKind::Q8_16 => Self::pack::<P, _>(w.rows_in::<Q8_16>(0..w.rows()), w, groups_of),
        }
    }

    fn pack<'a, P: BlockPacking, C: Codec>(
        rows: impl Iterator<Item = QuantRow<'a, C>>,
        w: &BlockRows,
        groups_of: usize,
    ) -> Self {
        let rows: Vec<QuantRow<'a, C>> = rows.collect();
        let blocks = w.cols() / BLOCK;
        let groups = rows.len().div_ceil(PACKED_ROWS).div_ceil(groups_of) * groups_of;
        let per_block = BLOCK * PACKED_ROWS;
        let mut codes = vec![0; groups * blocks * per_block];
        let halves = C::KIND.scales_per_block();
        let mut scales = vec![0.0; groups * blocks * halves * PACKED_ROWS];
        let mut mins = if C::KIND.has_min() {
            vec![0.0; groups * blocks * PACKED_ROWS]
        } else {
            Vec::new()
        };
        // With no rows there are no groups, and the loop below does not run.
        let last = rows.len().saturating_sub(1);
        for (g, out) in codes
            .chunks_exact_mut((blocks * per_block).max(1))
            .enumerate()
        {
            let mut members: [_; PACKED_ROWS] =
                std::array::from_fn(|lane| rows[(g * PACKED_ROWS + lane).min(last)].raw_blocks());
            for (b, out) in out.chunks_exact_mut(per_block).enumerate() {
                let mut quants: [&[u8]; PACKED_ROWS] = [&[]; PACKED_ROWS];
                for (lane, row_blocks) in members.iter_mut().enumerate() {
                    let (d, m, q) = row_blocks.next().expect("invariant: whole rows");
                    quants[lane] = q;
                    if g * PACKED_ROWS + lane <= last {
                        let block = g * blocks + b;
                        for (h, d) in d.into_iter().take(halves).enumerate() {
                            scales[(block * halves + h) * PACKED_ROWS + lane] = d;
                        }
                        if let Some(min) = mins.get_mut(block * PACKED_ROWS + lane) {
                            *min = m;
                        }
                    }
                }
                P::pack::<C>(quants, out);
            }
        }
        Self {
            groups,
            blocks,
            codes,
            scales,
            mins,
        }
    }

    /// Groups of [`PACKED_ROWS`] rows, padding included.
    pub(super) fn groups(&self) -> usize {
        self.groups
    }

    /// Blocks per row.
    pub(super) fn blocks(&self) -> usize {
        self.blocks
    }

    /// Group `g`'s codes (`[block][pair][row][2]`), its rows' scales
    /// (`[block][scale][row]`), and their minimums (`[block][row]`; empty for kinds
    /// without them).
    #[inline(always)]
    pub(super) fn group(&self, g: usize) -> (&[i16], &[f32], &[f32]) {
        let per_group = self.blocks * PACKED_ROWS;
        let scales = self.scales.len() / self.groups.max(1);
        let mins = self
            .mins
            .get(g * per_group..(g + 1) * per_group)
            .unwrap_or(&[]);
        (
            &self.codes[g * per_group * BLOCK..][..per_group * BLOCK],
            &self.scales[g * scales..][..scales],
            mins,
        )
    }
}

/// How a block of four rows' codes is packed: [`InScalars`], or vector code that packs
/// the same.
pub(super) trait BlockPacking {
    /// The codes of four rows' block (their `quants`) into `out`, `[pair][row][2]`.
    fn pack<C: Codec>(quants: [&[u8]; PACKED_ROWS], out: &mut [i16]);
}

/// [`BlockPacking`] one code at a time: the reference.
pub(super) struct InScalars;

impl BlockPacking for InScalars {
    fn pack<C: Codec>(quants: [&[u8]; PACKED_ROWS], out: &mut [i16]) {
        for (lane, quants) in quants.into_iter().enumerate() {
            for (e, q) in codes::<C>(quants).into_iter().enumerate() {
                out[(e / 2 * PACKED_ROWS + lane) * 2 + e % 2] = q;
            }
        }
    }
}

/// The dot product as [`tiled`](self) specifies it: each block's share added in block
/// order into one sum.
pub(super) struct InBlockOrder;

impl ScalarDot for InBlockOrder {
    fn dot<C: Codec>(x: RoundedRow<'_>, w: QuantRow<'_, C>) -> f32 {
        let mut acc = 0.0f32;
        for (b, (d, m, quants)) in w.raw_blocks().enumerate() {
            let xq = &x.values[b * BLOCK..][..BLOCK];
            let codes = codes::<C>(quants);
            let total = |values: std::ops::Range<usize>| -> i32 {
                values.map(|e| i32::from(codes[e]) * i32::from(xq[e])).sum()
            };
            if C::KIND.scales_per_block() == 2 {
                for (half, d) in [0..BLOCK / 2, BLOCK / 2..BLOCK].into_iter().zip(d) {
                    acc += total(half) as f32 * (d * x.steps[b]);
                }
                continue;
            }
            let share = total(0..BLOCK) as f32 * (d[0] * x.steps[b]);
            acc += if C::KIND.has_min() {
                share + m * x.sums[b]
            } else {
                share
            };
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_rows::random_blocks;
    use crate::gguf::GgmlType;

    #[test]
    fn packing_puts_each_code_scale_and_minimum_in_its_lane() {
        let (n, k) = (6, 64);
        let dtype = GgmlType::Q4_1;
        let bytes = random_blocks(dtype, n * k / BLOCK, 2);
        let w = BlockRows::from_gguf(dtype, &bytes, n, k).unwrap();
        let packed = PackedRows::new::<InScalars>(&w, 2);
        assert_eq!((packed.groups(), packed.blocks()), (2, 2));
        let rows: Vec<_> = w.rows_in::<crate::block_rows::Q4_1>(0..n).collect();
        let pair_at = |b: usize, e: usize, lane: usize| {
            b * BLOCK * PACKED_ROWS + (e / 2 * PACKED_ROWS + lane) * 2 + e % 2
        };
        for (j, row) in rows.iter().enumerate() {
            let (g, lane) = (j / PACKED_ROWS, j % PACKED_ROWS);
            let (codes_g, scales, mins) = packed.group(g);
            for (b, (d, m, quants)) in row.raw_blocks().enumerate() {
                let at = b * PACKED_ROWS + lane;
                assert_eq!((scales[at], mins[at]), (d[0], m), "row {j}, block {b}");
                let want = codes::<crate::block_rows::Q4_1>(quants);
                for (e, &q) in want.iter().enumerate() {
                    assert_eq!(codes_g[pair_at(b, e, lane)], q, "row {j}, block {b}");
                }
            }
        }
        // Lanes 2 and 3 of the second group are past the last row: they repeat its codes,
        // with scales and minimums of 0.
        let (codes_g, scales, mins) = packed.group(1);
        for b in 0..2 {
            for lane in 2..PACKED_ROWS {
                assert_eq!(scales[b * PACKED_ROWS + lane], 0.0);
                assert_eq!(mins[b * PACKED_ROWS + lane], 0.0);
                for e in 0..BLOCK {
                    assert_eq!(codes_g[pair_at(b, e, lane)], codes_g[pair_at(b, e, 1)]);
                }
            }
        }
    }

    #[test]
    fn packing_puts_each_half_blocks_scale_in_its_lane() {
        let n = 5;
        let (_, w) = crate::block_rows::random_rows(GgmlType::Q6_K, n, 256, 3);
        let packed = PackedRows::new::<InScalars>(&w, 1);
        let rows: Vec<_> = w.rows_in::<crate::block_rows::Q8_16>(0..n).collect();
        for (j, row) in rows.iter().enumerate() {
            let (g, lane) = (j / PACKED_ROWS, j % PACKED_ROWS);
            let (_, scales, mins) = packed.group(g);
            assert!(mins.is_empty());
            for (b, (d, _, _)) in row.raw_blocks().enumerate() {
                for (h, d) in d.into_iter().enumerate() {
                    let at = (b * 2 + h) * PACKED_ROWS + lane;
                    assert_eq!(scales[at], d, "row {j}, block {b}, half {h}");
                }
            }
        }
        let (_, scales, _) = packed.group(1);
        assert!(scales.chunks_exact(PACKED_ROWS).all(|s| s[1..] == [0.0; 3]));
    }
}
