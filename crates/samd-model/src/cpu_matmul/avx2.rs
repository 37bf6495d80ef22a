//! [`super`]'s dot products in AVX2 and FMA intrinsics (and F16C's conversion of
//! halves), for x86-64 CPUs that have them (checked at run time by the caller).
//!
//! The portable loops compiled with these features were fast for one row of x, but for
//! several rows the compiler kept the running sums on the stack, or fell back to scalar
//! code for some row counts (two rows ran slower than four), and widening quantised
//! blocks inside the loop made it worse. Written with vectors, each row's sums stay in
//! two registers, for any count of rows up to [`GROUP`].
//!
//! The arithmetic is the portable loops' with fused multiply-adds (`Fused`, which only
//! the tests compile) and 16 sums per row: the same operations lane by lane, and the
//! same sum of the lanes at the end, so that the results agree bit for bit (a unit test
//! checks it).
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m128i, __m256, _mm_and_si128, _mm_loadl_epi64, _mm_loadu_si128, _mm_set1_epi8,
    _mm_srli_epi16, _mm_srli_si128, _mm256_add_ps, _mm256_castsi256_ps, _mm256_cvtepi8_epi32,
    _mm256_cvtepi32_ps, _mm256_cvtepu8_epi32, _mm256_cvtepu16_epi32, _mm256_cvtph_ps,
    _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_epi32, _mm256_set1_ps,
    _mm256_setzero_ps, _mm256_slli_epi32, _mm256_storeu_ps, _mm256_sub_epi32,
};

use crate::block_form::HalfFloat;
use crate::block_rows::{BLOCK, Codec, HalfCodec, HalfRow, QuantKind, QuantRow};

/// Inputs each dot product sums at once: two vectors of eight, so that a group's
/// running sums make eight independent chains, enough to keep both FMA units busy
/// (with one vector per row, a group ran at half the speed).
const LANES: usize = 16;
/// Most rows of x multiplied per pass over a row of W: their 8 running sums and W's two
/// vectors fill 10 of the 16 registers.
const GROUP: usize = 4;

/// `x`'s rows dotted with each row of `w`, into `out` (`[rows of w, m]`): each row of W
/// read once, and dotted with up to [`GROUP`] rows of x at a time.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dots_by_row<W: WeightChunks>(
    x: &[f32],
    k: usize,
    w: impl Iterator<Item = W>,
    out: &mut [f32],
) {
    let rows: Vec<&[f32]> = x.chunks_exact(k).collect();
    let m = rows.len();
    for (wj, out) in w.zip(out.chunks_exact_mut(m)) {
        for (g, group) in rows.chunks(GROUP).enumerate() {
            let out = &mut out[g * GROUP..];
            // SAFETY: the caller's promise, passed on.
            unsafe {
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
}

/// A row of W whose values come 16 at a time as two vectors.
pub(super) trait WeightChunks: Copy {
    /// Calls `f(start, low, high)` for each whole chunk of 16 values, `start` being its
    /// first value's index, in order; returns the index past the last whole chunk.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    unsafe fn each_chunk(self, f: impl FnMut(usize, __m256, __m256)) -> usize;

    /// The row's value at `i`, for the tail past the whole chunks.
    fn value(self, i: usize) -> f32;

    /// Values in the row.
    fn len(self) -> usize;
}

impl WeightChunks for &[f32] {
    #[inline(always)]
    unsafe fn each_chunk(self, mut f: impl FnMut(usize, __m256, __m256)) -> usize {
        let chunks = self.chunks_exact(LANES);
        let whole = self.len() - chunks.remainder().len();
        for (c, chunk) in chunks.enumerate() {
            // SAFETY: `chunk` holds 16 floats; unaligned loads; AVX by the caller.
            unsafe {
                let p = chunk.as_ptr();
                f(c * LANES, _mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
            }
        }
        whole
    }

    fn value(self, i: usize) -> f32 {
        self[i]
    }

    fn len(self) -> usize {
        <[f32]>::len(self)
    }
}

impl<C: Codec> WeightChunks for QuantRow<'_, C> {
    /// Each block widened in registers, with the scalar code's operations: an exact
    /// integer-to-float conversion, then `d·q` and `+ m` each rounded once.
    #[inline(always)]
    unsafe fn each_chunk(self, mut f: impl FnMut(usize, __m256, __m256)) -> usize {
        for (b, (scales, min, quants)) in self.raw_blocks().enumerate() {
            // SAFETY: `quants` is one whole block (`chunks_exact`); AVX by the caller.
            let [v0, v1, v2, v3] = unsafe { widen::<C>(scales, min, quants) };
            f(b * BLOCK, v0, v1);
            f(b * BLOCK + LANES, v2, v3);
        }
        QuantRow::len(&self)
    }

    fn value(self, _i: usize) -> f32 {
        unreachable!("invariant: rows of whole blocks have no tail")
    }

    fn len(self) -> usize {
        QuantRow::len(&self)
    }
}

impl<H: HalfCodec> WeightChunks for HalfRow<'_, H> {
    /// Each 16-bit float widened exactly, as [`HalfFloat::widen`] does.
    #[inline(always)]
    unsafe fn each_chunk(self, mut f: impl FnMut(usize, __m256, __m256)) -> usize {
        for (c, chunk) in self.bits().chunks_exact(2 * LANES).enumerate() {
            // SAFETY: `chunk` holds 16 halves, 8 for each call; F16C by the caller.
            unsafe {
                let p = chunk.as_ptr();
                f(
                    c * LANES,
                    widen_halves::<H>(p),
                    widen_halves::<H>(p.add(16)),
                );
            }
        }
        HalfRow::len(&self)
    }

    fn value(self, _i: usize) -> f32 {
        unreachable!("invariant: rows of whole blocks have no tail")
    }

    fn len(self) -> usize {
        HalfRow::len(&self)
    }
}

/// Eight 16-bit floats from `p` widened to f32: F16C's conversion, exact for every
/// half (subnormals included), or bfloat16's bits moved to the top of each lane.
///
/// # Safety
/// `p` points at 16 readable bytes; the CPU has AVX2 and F16C.
#[inline(always)]
unsafe fn widen_halves<H: HalfCodec>(p: *const u8) -> __m256 {
    // SAFETY: the caller's promises.
    unsafe {
        let bits = _mm_loadu_si128(p.cast());
        match H::HALF {
            HalfFloat::F16 => _mm256_cvtph_ps(bits),
            HalfFloat::Bf16 => {
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(bits)))
            }
        }
    }
}

/// A block's 32 values as four vectors, from its scales (of its first and second 16
/// values), minimum and quants.
///
/// # Safety
/// `quants` holds the block's quants (16 or 32 bytes); the CPU has AVX2.
#[inline(always)]
unsafe fn widen<C: Codec>([scale, scale_high]: [f32; 2], min: f32, quants: &[u8]) -> [__m256; 4] {
    // SAFETY: the caller's promises; every load reads inside `quants`.
    unsafe {
        let d = _mm256_set1_ps(scale);
        let p = quants.as_ptr();
        match C::KIND {
            QuantKind::Q8_0 | QuantKind::Q5_1 | QuantKind::Q8_16 => {
                let m = _mm256_set1_ps(min);
                let d_high = _mm256_set1_ps(scale_high);
                // Written out, not `array::map`: `map` is not inlined, and would not
                // compile with this function's features.
                let value = |d: __m256, at: usize| {
                    let q = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(load8(p.add(at))));
                    if C::KIND == QuantKind::Q5_1 {
                        _mm256_add_ps(_mm256_mul_ps(d, q), m)
                    } else {
                        _mm256_mul_ps(d, q)
                    }
                };
                [
                    value(d, 0),
                    value(d, 8),
                    value(d_high, 16),
                    value(d_high, 24),
                ]
            }
            QuantKind::Q4_0 | QuantKind::Q4_1 => {
                let bytes = _mm_loadu_si128(p.cast());
                let mask = _mm_set1_epi8(0x0f);
                let low = _mm_and_si128(bytes, mask);
                let high = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
                let m = _mm256_set1_ps(min);
                let eight = _mm256_set1_epi32(8);
                let value = |q: __m128i| {
                    let q = _mm256_cvtepu8_epi32(q);
                    if C::KIND == QuantKind::Q4_0 {
                        _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(q, eight)))
                    } else {
                        _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(q)), m)
                    }
                };
                [
                    value(low),
                    value(_mm_srli_si128(low, 8)),
                    value(high),
                    value(_mm_srli_si128(high, 8)),
                ]
            }
        }
    }
}

/// Eight bytes from `p` into the low half of a vector.
///
/// # Safety
/// `p` points at 8 readable bytes; the CPU has SSE2.
#[inline(always)]
unsafe fn load8(p: *const u8) -> __m128i {
    // SAFETY: the caller's promise.
    unsafe { _mm_loadl_epi64(p.cast()) }
}

/// The dot products of `R` rows of x with `wj`, into `out[..R]`.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[inline(always)]
unsafe fn dots<const R: usize, W: WeightChunks>(rows: [&[f32]; R], wj: W, out: &mut [f32]) {
    let k = wj.len();
    assert!(
        rows.iter().all(|row| row.len() == k),
        "invariant: rows of x as long as W's"
    );
    // SAFETY: AVX by the caller; every load reads 16 floats inside a row of x, as long
    // as W's, at a chunk W says is whole.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        let whole = wj.each_chunk(|start, w0, w1| {
            for (acc, row) in acc.iter_mut().zip(rows) {
                let p = row.as_ptr().add(start);
                acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(p), w0, acc[0]);
                acc[1] = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(8)), w1, acc[1]);
            }
        });
        for ((acc, row), out) in acc.iter().zip(rows).zip(out) {
            let mut lanes = [0.0f32; LANES];
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), acc[1]);
            let mut sum = lanes.iter().sum::<f32>();
            for (i, &xi) in row.iter().enumerate().skip(whole) {
                sum = xi.mul_add(wj.value(i), sum);
            }
            *out = sum;
        }
    }
}
