//! [`super`]'s dot products in wasm's 128-bit SIMD intrinsics: the browser's CPU backend.
//!
//! The portable loops, compiled for wasm with `simd128` enabled, came out as scalar code
//! at opt-level 2 (not one `f32x4` operation in CI's `wasm-dev` build; the release
//! build's compiler did vectorise them), and a one-node step of SmolLM2 in V8 took about
//! 200 ms, 91% of it in those loops. Written with vectors, each row's eight running sums
//! are two registers, and a group of [`GROUP`] rows shares each load of W, whatever the
//! compiler's mood.
//!
//! The arithmetic is the portable loops' (`Separate`: a multiply, then an add, as wasm has
//! no FMA) with [`super::LANES`] sums per row: the same operations lane by lane, and the
//! same sum of the lanes at the end, so that the results equal
//! `dots_by_row::<Separate, 8, _>`'s bit for bit. The native tests check that code;
//! `Engine.checkKernels()` checks, under V8, that a tree's rows get what one-node steps
//! get.
//!
//! Over quantised blocks, [`block_dots`] computes [`integer`](super::integer)'s
//! arithmetic; `Engine.checkKernels()` compares it with the scalar code, bit for bit.
#![allow(unsafe_code)]

use core::arch::wasm32::{
    f32x4_add, f32x4_convert_i32x4, f32x4_extract_lane, f32x4_mul, f32x4_splat,
    i16x8_extend_high_i8x16, i16x8_extend_low_i8x16, i16x8_narrow_i32x4, i16x8_splat, i16x8_sub,
    i32x4_add, i32x4_dot_i16x8, i32x4_extract_lane, i32x4_max, i32x4_shuffle, i32x4_splat,
    i32x4_sub, u8x16_shr, u8x16_splat, u16x8_extend_high_u8x16, u16x8_extend_low_u8x16, v128,
    v128_and, v128_load, v128_load32_splat, v128_store,
};

use super::LANES;
use super::integer::{LEVELS, Rounded, RoundedRow, RoundedRows, SUM_LANES, fold};
use super::tiled::{BlockPacking, PACKED_ROWS, PackedRows};
use crate::block_rows::{BLOCK, Codec, QuantKind, QuantRow};

/// Most rows of x multiplied per pass over a row of W: their eight sums and W's two
/// vectors take 10 of the 16 registers V8 has on x86-64.
const GROUP: usize = 4;

/// `x`'s rows dotted with each row of `w` (`[rows, k]`), into `out` (`[rows of w, m]`):
/// each row of W read once, and dotted with up to [`GROUP`] rows of x at a time.
#[target_feature(enable = "simd128")]
pub(super) fn dots_by_row(x: &[f32], k: usize, w: &[f32], out: &mut [f32]) {
    let rows: Vec<&[f32]> = x.chunks_exact(k).collect();
    let m = rows.len();
    for (wj, out) in w.chunks_exact(k).zip(out.chunks_exact_mut(m)) {
        for (g, group) in rows.chunks(GROUP).enumerate() {
            let out = &mut out[g * GROUP..];
            match *group {
                [a] => dots([a], wj, out),
                [a, b] => dots([a, b], wj, out),
                [a, b, c] => dots([a, b, c], wj, out),
                [a, b, c, d] => dots([a, b, c, d], wj, out),
                _ => unreachable!("invariant: groups of 1 to {GROUP} rows"),
            }
        }
    }
}

/// The dot products of `R` rows of x with `wj`, into `out[..R]`.
#[inline(always)]
fn dots<const R: usize>(rows: [&[f32]; R], wj: &[f32], out: &mut [f32]) {
    let k = wj.len();
    assert!(
        rows.iter().all(|row| row.len() == k),
        "invariant: rows of x as long as W's"
    );
    let whole = k / LANES * LANES;
    let mut acc = [[f32x4_splat(0.0); 2]; R];
    for start in (0..whole).step_by(LANES) {
        // SAFETY: `start + LANES <= whole <= k`, and every row of x holds `k` floats, as
        // W's does; `v128_load` reads unaligned.
        unsafe {
            let w = wj.as_ptr().add(start);
            let (w0, w1) = (load(w), load(w.add(4)));
            for (acc, row) in acc.iter_mut().zip(rows) {
                let p = row.as_ptr().add(start);
                acc[0] = f32x4_add(f32x4_mul(load(p), w0), acc[0]);
                acc[1] = f32x4_add(f32x4_mul(load(p.add(4)), w1), acc[1]);
            }
        }
    }
    for ((acc, row), out) in acc.iter().zip(rows).zip(out) {
        let mut lanes = [0.0f32; LANES];
        // SAFETY: `lanes` holds eight floats; `v128_store` writes unaligned.
        unsafe {
            v128_store(lanes.as_mut_ptr().cast(), acc[0]);
            v128_store(lanes.as_mut_ptr().add(4).cast(), acc[1]);
        }
        let mut sum = lanes.iter().sum::<f32>();
        for (xi, wi) in row[whole..].iter().zip(&wj[whole..]) {
            sum += xi * wi;
        }
        *out = sum;
    }
}

/// Four floats from `p`.
///
/// # Safety
/// `p` points at four readable floats.
#[inline(always)]
unsafe fn load(p: *const f32) -> v128 {
    // SAFETY: the caller's promise.
    unsafe { v128_load(p.cast()) }
}

/// `x`'s rounded rows dotted with each row of `w`, into `out` (`[rows of w, m]`), as
/// [`integer`](super::integer) specifies: each row of W read once, its blocks' codes
/// widened once for up to [`GROUP`] rows of x.
#[target_feature(enable = "simd128")]
pub(super) fn block_dots<'a, C: Codec>(
    x: &RoundedRows,
    w: impl Iterator<Item = QuantRow<'a, C>>,
    out: &mut [f32],
) {
    let rows: Vec<RoundedRow<'_>> = (0..x.len()).map(|r| x.row(r)).collect();
    let m = rows.len();
    for (wj, out) in w.zip(out.chunks_exact_mut(m)) {
        for (g, group) in rows.chunks(GROUP).enumerate() {
            let out = &mut out[g * GROUP..];
            match *group {
                [a] => block_group([a], wj, out),
                [a, b] => block_group([a, b], wj, out),
                [a, b, c] => block_group([a, b, c], wj, out),
                [a, b, c, d] => block_group([a, b, c, d], wj, out),
                _ => unreachable!("invariant: groups of 1 to {GROUP} rows"),
            }
        }
    }
}

/// The dot products of `R` rounded rows of x with `wj`, into `out[..R]`.
#[inline(always)]
fn block_group<const R: usize, C: Codec>(
    rows: [RoundedRow<'_>; R],
    wj: QuantRow<'_, C>,
    out: &mut [f32],
) {
    let k = wj.len();
    assert!(
        rows.iter().all(|row| row.values.len() == k),
        "invariant: rows of x as long as W's"
    );
    let mut acc = [f32x4_splat(0.0); R];
    for (b, ([d, d_high], _, quants)) in wj.raw_blocks().enumerate() {
        // SAFETY: `quants` is one whole block (`chunks_exact`).
        let [c0, c1, c2, c3] = unsafe { codes::<C>(quants) };
        for (acc, row) in acc.iter_mut().zip(rows) {
            // Each half's sums. SAFETY: block `b` is within the row, as long as W's
            // (asserted above).
            let (low, high) = unsafe {
                let x = row.values.as_ptr().add(b * BLOCK);
                let dot = |c: v128, at: usize| i32x4_dot_i16x8(c, v128_load(x.add(at).cast()));
                (
                    i32x4_add(dot(c0, 0), dot(c1, 8)),
                    i32x4_add(dot(c2, 16), dot(c3, 24)),
                )
            };
            let step = f32x4_splat(d * row.steps[b]);
            let share = if C::KIND.scales_per_block() == 2 {
                let step_high = f32x4_splat(d_high * row.steps[b]);
                f32x4_add(
                    f32x4_mul(f32x4_convert_i32x4(low), step),
                    f32x4_mul(f32x4_convert_i32x4(high), step_high),
                )
            } else {
                f32x4_mul(f32x4_convert_i32x4(i32x4_add(low, high)), step)
            };
            *acc = f32x4_add(*acc, share);
        }
    }
    for ((acc, row), out) in acc.iter().zip(rows).zip(out) {
        let sum = fold(lanes(*acc));
        *out = if C::KIND.has_min() {
            sum + fold(minimums(wj.mins(), row.sums))
        } else {
            sum
        };
    }
}

/// A vector's four floats.
#[inline(always)]
fn lanes(v: v128) -> [f32; SUM_LANES] {
    [
        f32x4_extract_lane::<0>(v),
        f32x4_extract_lane::<1>(v),
        f32x4_extract_lane::<2>(v),
        f32x4_extract_lane::<3>(v),
    ]
}

/// The blocks' minimums (Q4_1's, Q5_1's) times x's `s · Σ xq`, block `b`'s in lane `b % 4`, as
/// [`finish`](super::integer::finish) sums them: a vector of four blocks at a time, then
/// the last blocks one by one.
#[inline(always)]
fn minimums(mins: &[f32], sums: &[f32]) -> [f32; SUM_LANES] {
    assert_eq!(
        mins.len(),
        sums.len(),
        "invariant: a minimum per block of x"
    );
    let whole = mins.len() / SUM_LANES * SUM_LANES;
    let mut acc = f32x4_splat(0.0);
    for b in (0..whole).step_by(SUM_LANES) {
        // SAFETY: `b + 4 <= whole <=` both lengths.
        acc = unsafe {
            let (m, s) = (load(mins.as_ptr().add(b)), load(sums.as_ptr().add(b)));
            f32x4_add(acc, f32x4_mul(m, s))
        };
    }
    let mut lanes = lanes(acc);
    for (b, (m, s)) in mins.iter().zip(sums).enumerate().skip(whole) {
        lanes[b % SUM_LANES] += m * s;
    }
    lanes
}

/// A block's 32 codes as four vectors of eight i16s, in order.
///
/// # Safety
/// `quants` holds the block's quants (16 or 32 bytes).
#[inline(always)]
unsafe fn codes<C: Codec>(quants: &[u8]) -> [v128; 4] {
    // SAFETY: the caller's promise; every load reads inside `quants`.
    unsafe {
        let p = quants.as_ptr();
        match C::KIND {
            QuantKind::Q8_0 | QuantKind::Q5_1 | QuantKind::Q8_16 => {
                let (low, high) = (v128_load(p.cast()), v128_load(p.add(16).cast()));
                [
                    i16x8_extend_low_i8x16(low),
                    i16x8_extend_high_i8x16(low),
                    i16x8_extend_low_i8x16(high),
                    i16x8_extend_high_i8x16(high),
                ]
            }
            QuantKind::Q4_0 | QuantKind::Q4_1 => {
                let bytes = v128_load(p.cast());
                let low = v128_and(bytes, u8x16_splat(0x0f));
                let high = u8x16_shr(bytes, 4);
                let [c0, c1, c2, c3] = [
                    u16x8_extend_low_u8x16(low),
                    u16x8_extend_high_u8x16(low),
                    u16x8_extend_low_u8x16(high),
                    u16x8_extend_high_u8x16(high),
                ];
                if C::KIND == QuantKind::Q4_0 {
                    // Written out, not `array::map`, which might not be inlined.
                    let eight = i16x8_splat(8);
                    [
                        i16x8_sub(c0, eight),
                        i16x8_sub(c1, eight),
                        i16x8_sub(c2, eight),
                        i16x8_sub(c3, eight),
                    ]
                } else {
                    [c0, c1, c2, c3]
                }
            }
        }
    }
}

/// [`integer::round_block`](super::integer::round_block) in vectors: `RoundedRows::new`'s
/// rounding in wasm, where the scalar code's `fmaxf` and `roundf` were calls into libm,
/// 7% of a one-node step.
///
/// - The largest magnitude is the largest of the values' bits with the sign cleared,
///   compared as integers (which order non-negative floats as their values), and a NaN
///   or an infinity is any such bits from the infinity's up.
/// - `y + 1.5 · 2²³` leaves `y` rounded to an integer, ties to even, in the low bits of
///   the sum, for `|y| < 2²²`; here `|y| <= 32767` and a bit.
#[target_feature(enable = "simd128")]
pub(super) fn round_block(block: &[f32; BLOCK], out: &mut [i16; BLOCK]) -> Rounded {
    let p = block.as_ptr();
    // SAFETY (here and below): `block` holds `BLOCK` floats, `out` as many i16s.
    let mut top = unsafe { magnitude(p) };
    for i in 1..BLOCK / 4 {
        top = i32x4_max(top, unsafe { magnitude(p.add(4 * i)) });
    }
    top = i32x4_max(top, i32x4_shuffle::<2, 3, 0, 1>(top, top));
    top = i32x4_max(top, i32x4_shuffle::<1, 0, 3, 2>(top, top));
    let top = i32x4_extract_lane::<0>(top);
    if top == 0 || top >= INFINITY_BITS {
        *out = [0; BLOCK];
        let step = if top == 0 { 0.0 } else { f32::NAN };
        return Rounded { step, total: 0 };
    }
    let max = f32::from_bits(top as u32);
    let scale = f32x4_splat(LEVELS / max);
    let mut total = i32x4_splat(0);
    for i in 0..BLOCK / 8 {
        let (a, b) = unsafe {
            (
                rounded(p.add(8 * i), scale),
                rounded(p.add(8 * i + 4), scale),
            )
        };
        total = i32x4_add(total, i32x4_add(a, b));
        unsafe { v128_store(out.as_mut_ptr().add(8 * i).cast(), i16x8_narrow_i32x4(a, b)) };
    }
    total = i32x4_add(total, i32x4_shuffle::<2, 3, 0, 1>(total, total));
    total = i32x4_add(total, i32x4_shuffle::<1, 0, 3, 2>(total, total));
    Rounded {
        step: max / LEVELS,
        total: i32x4_extract_lane::<0>(total),
    }
}

/// The bits of f32's infinity, as an i32: magnitudes' bits from here up are not finite.
const INFINITY_BITS: i32 = 0x7f80_0000;

/// `1.5 · 2²³`: adding it rounds a float of magnitude under 2²² to an integer, ties to
/// even, held in the sum's low bits.
const ROUNDER: f32 = 12_582_912.0;

/// The bits of four floats from `p`, their signs cleared.
///
/// # Safety
/// `p` points at four readable floats.
#[inline(always)]
unsafe fn magnitude(p: *const f32) -> v128 {
    // SAFETY: the caller's promise.
    v128_and(unsafe { load(p) }, i32x4_splat(i32::MAX))
}

/// Four floats from `p` times `scale`, rounded to i32s, ties to even.
///
/// # Safety
/// `p` points at four readable floats, and their products with `scale` are finite and
/// under 2²² in magnitude.
#[inline(always)]
unsafe fn rounded(p: *const f32, scale: v128) -> v128 {
    let rounder = f32x4_splat(ROUNDER);
    // SAFETY: the caller's promise.
    let y = f32x4_add(f32x4_mul(unsafe { load(p) }, scale), rounder);
    i32x4_sub(y, rounder)
}

/// Rows of x a tile of [`tiled_dots`] takes.
pub(super) const TILE_ROWS: usize = 4;

/// Groups of W's packed rows a tile of [`tiled_dots`] takes: eight rows.
pub(super) const TILE_GROUPS: usize = 2;

/// `x`'s rows (a multiple of [`TILE_ROWS`]) dotted with each of `w`'s (its groups a
/// multiple of [`TILE_GROUPS`]), into `out` (`[rows of x, 4 · groups]`), as
/// [`tiled`](super::tiled) specifies: a tile of four rows of x and eight of W at a time,
/// each block's integer sums in eight vectors, a row of x and four of W each.
///
/// W's tile (a few KB) stays in the first-level cache while every tile of x passes it.
#[target_feature(enable = "simd128")]
pub(super) fn tiled_dots<C: Codec>(x: &RoundedRows, w: &PackedRows, out: &mut [f32]) {
    let (m, n) = (x.len(), w.groups() * PACKED_ROWS);
    assert!(
        m.is_multiple_of(TILE_ROWS) && w.groups().is_multiple_of(TILE_GROUPS) && out.len() == m * n,
        "invariant: whole tiles"
    );
    for g in (0..w.groups()).step_by(TILE_GROUPS) {
        for r in (0..m).step_by(TILE_ROWS) {
            let rows = [x.row(r), x.row(r + 1), x.row(r + 2), x.row(r + 3)];
            let sums = tile::<C>(rows, w, g);
            for (i, sums) in sums.iter().enumerate() {
                for (v, &sum) in sums.iter().enumerate() {
                    let at = (r + i) * n + (g + v) * PACKED_ROWS;
                    // SAFETY: row `r + i` of out holds columns `at .. at + 4` (asserted).
                    unsafe { v128_store(out.as_mut_ptr().add(at).cast(), sum) };
                }
            }
        }
    }
}

/// One tile's dot products: four rows of x against groups `g` and `g + 1` of W, each
/// vector four rows of W.
#[inline(always)]
fn tile<C: Codec>(
    rows: [RoundedRow<'_>; TILE_ROWS],
    w: &PackedRows,
    g: usize,
) -> [[v128; TILE_GROUPS]; TILE_ROWS] {
    let blocks = w.blocks();
    let groups = [w.group(g), w.group(g + 1)];
    // Q8_16's halves each take their own sums and scale: as two blocks of 16.
    let halves = C::KIND.scales_per_block();
    assert!(
        rows.iter()
            .all(|row| row.values.len() == blocks * BLOCK && row.steps.len() == blocks)
            && groups.iter().all(|(codes, scales, mins)| {
                codes.len() == blocks * BLOCK * PACKED_ROWS
                    && scales.len() == blocks * halves * PACKED_ROWS
                    && (mins.len() == blocks * PACKED_ROWS || !C::KIND.has_min())
            }),
        "invariant: rows of x as long as W's"
    );
    let [(codes0, scales0, mins0), (codes1, scales1, mins1)] = groups;
    let mut acc = [[f32x4_splat(0.0); TILE_GROUPS]; TILE_ROWS];
    let pairs = BLOCK / 2 / halves;
    for (b, h) in (0..blocks).flat_map(|b| (0..halves).map(move |h| (b, h))) {
        let mut sums = [[i32x4_splat(0); TILE_GROUPS]; TILE_ROWS];
        for pair in h * pairs..(h + 1) * pairs {
            // SAFETY: each group's block `b` holds 16 pairs of eight i16s, and each row
            // of x holds block `b`'s 32 values (asserted above).
            unsafe {
                let at = (b * BLOCK / 2 + pair) * 8;
                let w0 = v128_load(codes0.as_ptr().add(at).cast());
                let w1 = v128_load(codes1.as_ptr().add(at).cast());
                for i in 0..TILE_ROWS {
                    let x = rows[i].values.as_ptr().add(b * BLOCK + 2 * pair);
                    let xs = v128_load32_splat(x.cast());
                    sums[i][0] = i32x4_add(sums[i][0], i32x4_dot_i16x8(w0, xs));
                    sums[i][1] = i32x4_add(sums[i][1], i32x4_dot_i16x8(w1, xs));
                }
            }
        }
        // SAFETY: each group holds four scales per block and half, and four minimums per
        // block for kinds with them (asserted above).
        let (d, mins) = unsafe {
            let at = (b * halves + h) * PACKED_ROWS;
            let d = [
                load(scales0.as_ptr().add(at)),
                load(scales1.as_ptr().add(at)),
            ];
            let mins = if C::KIND.has_min() {
                let at = b * PACKED_ROWS;
                [load(mins0.as_ptr().add(at)), load(mins1.as_ptr().add(at))]
            } else {
                [f32x4_splat(0.0); TILE_GROUPS]
            };
            (d, mins)
        };
        for i in 0..TILE_ROWS {
            let step = f32x4_splat(rows[i].steps[b]);
            let sum = f32x4_splat(rows[i].sums[b]);
            for v in 0..TILE_GROUPS {
                let share = f32x4_mul(f32x4_convert_i32x4(sums[i][v]), f32x4_mul(d[v], step));
                let share = if C::KIND.has_min() {
                    f32x4_add(share, f32x4_mul(mins[v], sum))
                } else {
                    share
                };
                acc[i][v] = f32x4_add(acc[i][v], share);
            }
        }
    }
    acc
}

/// [`BlockPacking`] in vectors: each row's codes widened as the few rows' products
/// widen them, then a 4 × 4 transpose of their pairs for each quarter of the block.
pub(super) struct Simd128Packing;

impl BlockPacking for Simd128Packing {
    fn pack<C: Codec>(quants: [&[u8]; PACKED_ROWS], out: &mut [i16]) {
        pack_block::<C>(quants, out);
    }
}

#[target_feature(enable = "simd128")]
fn pack_block<C: Codec>(quants: [&[u8]; PACKED_ROWS], out: &mut [i16]) {
    assert!(
        out.len() == BLOCK * PACKED_ROWS && quants.iter().all(|q| q.len() == C::KIND.quant_bytes()),
        "invariant: one block of four rows"
    );
    // SAFETY: each row's quants are one whole block (asserted above).
    let [r0, r1, r2, r3] = unsafe {
        [
            codes::<C>(quants[0]),
            codes::<C>(quants[1]),
            codes::<C>(quants[2]),
            codes::<C>(quants[3]),
        ]
    };
    for q in 0..4 {
        // Pairs 4q .. 4q + 4 of each row, as i32 lanes, transposed: out vector l holds
        // pair 4q + l of rows 0 to 3.
        let (a, b) = (
            i32x4_shuffle::<0, 4, 1, 5>(r0[q], r1[q]),
            i32x4_shuffle::<2, 6, 3, 7>(r0[q], r1[q]),
        );
        let (c, d) = (
            i32x4_shuffle::<0, 4, 1, 5>(r2[q], r3[q]),
            i32x4_shuffle::<2, 6, 3, 7>(r2[q], r3[q]),
        );
        let pairs = [
            i32x4_shuffle::<0, 1, 4, 5>(a, c),
            i32x4_shuffle::<2, 3, 6, 7>(a, c),
            i32x4_shuffle::<0, 1, 4, 5>(b, d),
            i32x4_shuffle::<2, 3, 6, 7>(b, d),
        ];
        for (l, pair) in pairs.into_iter().enumerate() {
            // SAFETY: `out` holds 16 vectors of eight i16s (asserted above).
            unsafe { v128_store(out.as_mut_ptr().add((4 * q + l) * 8).cast(), pair) };
        }
    }
}
