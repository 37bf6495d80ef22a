//! [`super`]'s two products in AVX2 intrinsics, for x86-64 CPUs that have them
//! (checked at run time by [`Avx2::detect`]).
//!
//! The portable loops compiled with AVX2 enabled summed a dot product's eight lanes in
//! four pairs, and kept the output's sums on the stack across keys. Written with vectors,
//! a dot product's lanes are one register, four keys' run side by side, and 32 output
//! columns stay in four registers across all keys: on one layer of SmolLM2 at 1,024
//! positions, 83 µs a node against 158 µs for the portable loops (criterion bench
//! `cpu_attention`). The operations are the portable code's lane by lane (a multiply,
//! then an add: no fused multiply-adds), and the lanes are folded in the same order, so
//! the results agree bit for bit (a unit test checks it).
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m256, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32, _mm_movehl_ps, _mm_shuffle_ps, _mm256_add_ps,
    _mm256_castps256_ps128, _mm256_extractf128_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_ps,
    _mm256_setzero_ps, _mm256_storeu_ps,
};

use super::{KeyList, LANES, Vectors, attend};

/// Proof that this CPU has AVX2: made only by [`Avx2::detect`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Avx2(());

impl Avx2 {
    /// `Some` where the CPU has AVX2.
    pub(super) fn detect() -> Option<Self> {
        std::arch::is_x86_feature_detected!("avx2").then_some(Self(()))
    }

    /// [`attend`] with these vectors, compiled for AVX2.
    pub(super) fn attend(
        self,
        query: &[f32],
        planes: (&[f32], &[f32]),
        keys: KeyList<'_>,
        out: &mut [f32],
    ) {
        // SAFETY: `self` exists, so the CPU has AVX2.
        unsafe { attend_avx2(self, query, planes, keys, out) }
    }
}

/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
unsafe fn attend_avx2(
    vectors: Avx2,
    query: &[f32],
    planes: (&[f32], &[f32]),
    keys: KeyList<'_>,
    out: &mut [f32],
) {
    attend(vectors, query, planes, keys, out)
}

impl Vectors for Avx2 {
    #[inline(always)]
    fn dots(self, query: &[f32], rows: &[f32], scale: f32, out: &mut [f32]) {
        // SAFETY: `self` exists, so the CPU has AVX2.
        unsafe { dots(query, rows, scale, out) }
    }

    #[inline(always)]
    fn add_rows(self, acc: &mut [f32], weights: &[f32], rows: &[f32]) {
        // SAFETY: `self` exists, so the CPU has AVX2.
        unsafe { add_rows(acc, weights, rows) }
    }
}

/// Rows [`dots`] takes at once: their running sums are independent chains of adds, so
/// the CPU overlaps them (one row's chain alone waits on each add in turn).
const ROWS: usize = 4;

/// [`Vectors::dots`]: [`ROWS`] rows at a time, then one by one.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dots(query: &[f32], rows: &[f32], scale: f32, out: &mut [f32]) {
    let width = query.len();
    let rows = &rows[..out.len() * width];
    let mut j = 0;
    while j + ROWS <= out.len() {
        // SAFETY: rows `j .. j + ROWS` are within `rows`.
        let sums = unsafe { dot_rows::<ROWS>(query, rows, j) };
        for (o, sum) in out[j..j + ROWS].iter_mut().zip(sums) {
            *o = sum * scale;
        }
        j += ROWS;
    }
    for (j, o) in out.iter_mut().enumerate().skip(j) {
        // SAFETY: row `j` is within `rows`.
        *o = unsafe { dot_rows::<1>(query, rows, j) }[0] * scale;
    }
}

/// `query` dotted with `R` rows from row `first`, each in one vector of running sums,
/// then folded as the portable `fold_lanes` folds, then the tail in order.
///
/// # Safety
/// The CPU has AVX2, and rows `first .. first + R` of `query.len()` values are within
/// `rows`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn dot_rows<const R: usize>(query: &[f32], rows: &[f32], first: usize) -> [f32; R] {
    let width = query.len();
    let whole = width / LANES * LANES;
    // SAFETY (here and below): the caller's bounds.
    let row = |r: usize| unsafe { rows.as_ptr().add((first + r) * width) };
    let mut acc = [_mm256_setzero_ps(); R];
    for c in (0..whole).step_by(LANES) {
        let q = unsafe { _mm256_loadu_ps(query.as_ptr().add(c)) };
        for (r, acc) in acc.iter_mut().enumerate() {
            let k = unsafe { _mm256_loadu_ps(row(r).add(c)) };
            *acc = _mm256_add_ps(*acc, _mm256_mul_ps(q, k));
        }
    }
    std::array::from_fn(|r| {
        // lane l + lane l + 4, then (0 + 2) + (1 + 3).
        let quad = _mm_add_ps(
            _mm256_castps256_ps128(acc[r]),
            _mm256_extractf128_ps(acc[r], 1),
        );
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        let mut sum = _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)));
        for (d, q) in query.iter().enumerate().skip(whole) {
            sum += q * unsafe { *row(r).add(d) };
        }
        sum
    })
}

/// Output columns [`add_rows`] holds in registers at once: four vectors.
const COLUMNS: usize = 4 * LANES;

/// [`Vectors::add_rows`]: [`COLUMNS`] columns at a time over every row, then one vector's
/// worth at a time, then column by column.
///
/// # Safety
/// The CPU has AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn add_rows(acc: &mut [f32], weights: &[f32], rows: &[f32]) {
    let width = acc.len();
    let rows = &rows[..weights.len() * width];
    let mut start = 0;
    while start + COLUMNS <= width {
        // SAFETY: columns `start .. start + COLUMNS` are within every row and `acc`.
        unsafe { add_columns::<4>(acc, weights, rows, start) };
        start += COLUMNS;
    }
    while start + LANES <= width {
        // SAFETY: columns `start .. start + LANES` are within every row and `acc`.
        unsafe { add_columns::<1>(acc, weights, rows, start) };
        start += LANES;
    }
    for d in start..width {
        for (j, &w) in weights.iter().enumerate() {
            acc[d] += w * rows[j * width + d];
        }
    }
}

/// `V` vectors of columns from `start`, held in registers across every row.
///
/// # Safety
/// The CPU has AVX2, and `start + V * LANES <= acc.len()`, `rows` being
/// `weights.len()` rows of `acc.len()` values.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn add_columns<const V: usize>(
    acc: &mut [f32],
    weights: &[f32],
    rows: &[f32],
    start: usize,
) {
    let width = acc.len();
    // SAFETY (here and below): the caller's bounds.
    let mut sums: [__m256; V] =
        std::array::from_fn(|v| unsafe { _mm256_loadu_ps(acc.as_ptr().add(start + v * LANES)) });
    for (j, &w) in weights.iter().enumerate() {
        let w = _mm256_set1_ps(w);
        let row = unsafe { rows.as_ptr().add(j * width + start) };
        for (v, sum) in sums.iter_mut().enumerate() {
            let values = unsafe { _mm256_loadu_ps(row.add(v * LANES)) };
            *sum = _mm256_add_ps(*sum, _mm256_mul_ps(w, values));
        }
    }
    for (v, sum) in sums.iter().enumerate() {
        unsafe { _mm256_storeu_ps(acc.as_mut_ptr().add(start + v * LANES), *sum) };
    }
}
