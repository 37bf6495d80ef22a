//! [`super`]'s dot products in wasm's 128-bit SIMD intrinsics: the browser's CPU backend.
//!
//! The portable loops, compiled for wasm with `simd128` enabled, came out as scalar code
//! (not one `f32x4` operation in CI's build), and a one-node step of SmolLM2 in V8 took
//! 194 ms, 91% of it in those loops. Written with vectors, each row's eight running sums
//! are two registers, and a group of [`GROUP`] rows shares each load of W.
//!
//! The arithmetic is the portable loops' (`Separate`: a multiply, then an add, as wasm has
//! no FMA) with [`super::LANES`] sums per row: the same operations lane by lane, and the
//! same sum of the lanes at the end, so that the results equal
//! `dots_by_row::<Separate, 8, _>`'s bit for bit. The native tests check that code; the
//! browser test checks that speculative output equals plain output here.
#![allow(unsafe_code)]

use core::arch::wasm32::{f32x4_add, f32x4_mul, f32x4_splat, v128, v128_load, v128_store};

use super::LANES;

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
