//! [`super`]'s two products in wasm's 128-bit SIMD intrinsics: the browser's CPU backend.
//!
//! The portable loops compiled for wasm with `simd128` vectorised only in part: with a
//! 530-word prompt, a one-node step of SmolLM2 in V8 spent 18% of its time in them. As in
//! `avx2.rs`, a dot product's eight lanes are two vectors, four keys run side by side,
//! and 32 output columns stay in eight registers across all keys. The operations are the
//! portable code's lane by lane (a multiply, then an add), and the lanes are folded in
//! the same order, so the results agree bit for bit; `Engine.checkKernels()` checks that
//! a tree's nodes get what one-node steps get, and the native tests check the portable
//! code.
#![allow(unsafe_code)]

use core::arch::wasm32::{
    f32x4_add, f32x4_extract_lane, f32x4_mul, f32x4_splat, v128, v128_load, v128_store,
};

use super::{KeyList, LANES, Vectors, attend};

/// [`Vectors`] in wasm's SIMD intrinsics.
#[derive(Debug, Clone, Copy)]
pub(super) struct Simd128;

/// [`attend`] with these vectors, compiled with `simd128`: a wasm module has no run-time
/// feature check, and every browser with WebGPU has had SIMD for years.
#[target_feature(enable = "simd128")]
pub(super) fn attend_simd128(
    query: &[f32],
    planes: (&[f32], &[f32]),
    keys: KeyList<'_>,
    out: &mut [f32],
) {
    attend(Simd128, query, planes, keys, out)
}

impl Vectors for Simd128 {
    #[inline(always)]
    fn dots(self, query: &[f32], rows: &[f32], scale: f32, out: &mut [f32]) {
        let width = query.len();
        let rows = &rows[..out.len() * width];
        let mut j = 0;
        while j + ROWS <= out.len() {
            let sums = dot_rows::<ROWS>(query, rows, j);
            for (o, sum) in out[j..j + ROWS].iter_mut().zip(sums) {
                *o = sum * scale;
            }
            j += ROWS;
        }
        for (j, o) in out.iter_mut().enumerate().skip(j) {
            *o = dot_rows::<1>(query, rows, j)[0] * scale;
        }
    }

    #[inline(always)]
    fn add_rows(self, acc: &mut [f32], weights: &[f32], rows: &[f32]) {
        let width = acc.len();
        let rows = &rows[..weights.len() * width];
        let mut start = 0;
        while start + COLUMNS <= width {
            add_columns::<{ COLUMNS / 4 }>(acc, weights, rows, start);
            start += COLUMNS;
        }
        while start + 4 <= width {
            add_columns::<1>(acc, weights, rows, start);
            start += 4;
        }
        for d in start..width {
            for (j, &w) in weights.iter().enumerate() {
                acc[d] += w * rows[j * width + d];
            }
        }
    }
}

/// Rows [`Vectors::dots`] takes at once: their running sums are independent chains of
/// adds, which the CPU overlaps.
const ROWS: usize = 4;

/// Output columns [`Vectors::add_rows`] holds in registers at once: eight vectors.
const COLUMNS: usize = 32;

/// Four floats from `p`.
///
/// # Safety
/// `p` points at four readable floats.
#[inline(always)]
unsafe fn load(p: *const f32) -> v128 {
    // SAFETY: the caller's promise; `v128_load` reads unaligned.
    unsafe { v128_load(p.cast()) }
}

/// `query` dotted with `R` rows from row `first`, each in two vectors of running sums,
/// then folded as the portable `fold_lanes` folds, then the tail in order.
#[inline(always)]
fn dot_rows<const R: usize>(query: &[f32], rows: &[f32], first: usize) -> [f32; R] {
    let width = query.len();
    let whole = width / LANES * LANES;
    assert!(
        (first + R) * width <= rows.len(),
        "invariant: the rows are within `rows`"
    );
    let row = |r: usize| &rows[(first + r) * width..][..width];
    let mut acc = [[f32x4_splat(0.0); 2]; R];
    for c in (0..whole).step_by(LANES) {
        // SAFETY: `c + LANES <= whole <= width`, the length of `query` and of every row.
        unsafe {
            let q = query.as_ptr().add(c);
            let (q0, q1) = (load(q), load(q.add(4)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let k = row(r).as_ptr().add(c);
                acc[0] = f32x4_add(acc[0], f32x4_mul(q0, load(k)));
                acc[1] = f32x4_add(acc[1], f32x4_mul(q1, load(k.add(4))));
            }
        }
    }
    // A loop, not `array::from_fn`: its closure is compiled without `simd128`, and in a
    // prefill V8's profile showed the intrinsics in it as calls of their own (5% of it).
    let mut sums = [0.0; R];
    for (r, sum) in sums.iter_mut().enumerate() {
        // Lane l plus lane l + 4, then (0 + 2) + (1 + 3).
        let quad = f32x4_add(acc[r][0], acc[r][1]);
        *sum = (f32x4_extract_lane::<0>(quad) + f32x4_extract_lane::<2>(quad))
            + (f32x4_extract_lane::<1>(quad) + f32x4_extract_lane::<3>(quad));
        for (q, k) in query[whole..].iter().zip(&row(r)[whole..]) {
            *sum += q * k;
        }
    }
    sums
}

/// `V` vectors of columns from `start`, held in registers across every row.
#[inline(always)]
fn add_columns<const V: usize>(acc: &mut [f32], weights: &[f32], rows: &[f32], start: usize) {
    let width = acc.len();
    assert!(
        start + V * 4 <= width && rows.len() == weights.len() * width,
        "invariant: the columns are within every row"
    );
    // SAFETY (here and below): columns `start .. start + 4V` are within `acc` and every
    // row, as just asserted.
    let mut sums = [f32x4_splat(0.0); V];
    for (v, sum) in sums.iter_mut().enumerate() {
        *sum = unsafe { load(acc.as_ptr().add(start + v * 4)) };
    }
    for (j, &w) in weights.iter().enumerate() {
        let w = f32x4_splat(w);
        let row = unsafe { rows.as_ptr().add(j * width + start) };
        for (v, sum) in sums.iter_mut().enumerate() {
            *sum = f32x4_add(*sum, f32x4_mul(w, unsafe { load(row.add(v * 4)) }));
        }
    }
    for (v, sum) in sums.iter().enumerate() {
        unsafe { v128_store(acc.as_mut_ptr().add(start + v * 4).cast(), *sum) };
    }
}
