//! SwiGLU on the CPU in one pass: `silu(gate) · up` for each row of a block's gate and
//! up projections, side by side.
//!
//! Written in burn ops it was five elementwise operations, each a new tensor, and a call
//! to libm's `expf` per value: in wasm about 3% of a decode step and 5% of a prompt's
//! prefill (V8's profile, `tests/browser/profile-cpu.mjs`). Here the exponential is the
//! attention's ([`exp_at_most_zero`]), whose argument is never positive: `σ(x)` is
//! `1 / (1 + e^−x)` for `x ≥ 0` and `e^x / (1 + e^x)` below.

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};
use burn::tensor::TensorData;

use crate::cpu_attention::exp_at_most_zero;
use crate::cpu_matmul::f32s;

/// `[n, d]` out of `gate_up`, `[n, 2d]` (each row `gate | up`): `silu(gate) · up`.
pub fn swiglu(gate_up: &[f32], width: usize) -> Vec<f32> {
    assert!(
        width.is_multiple_of(2) && gate_up.len().is_multiple_of(width),
        "invariant: rows of gate | up"
    );
    #[cfg(target_arch = "wasm32")]
    return swiglu_simd128(gate_up, width);
    #[cfg(not(target_arch = "wasm32"))]
    swiglu_rows(gate_up, width)
}

/// [`swiglu_rows`] compiled with wasm's SIMD, which its loop's arithmetic vectorises to.
#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
fn swiglu_simd128(gate_up: &[f32], width: usize) -> Vec<f32> {
    swiglu_rows(gate_up, width)
}

/// [`swiglu`]'s loop.
#[inline(always)]
fn swiglu_rows(gate_up: &[f32], width: usize) -> Vec<f32> {
    let d = width / 2;
    let mut out = vec![0.0; gate_up.len() / 2];
    for (row, out) in gate_up.chunks_exact(width).zip(out.chunks_exact_mut(d)) {
        let (gate, up) = row.split_at(d);
        for i in 0..d {
            out[i] = silu(gate[i]) * up[i];
        }
    }
    out
}

/// `x · σ(x)`, `σ` the logistic function.
#[inline(always)]
fn silu(x: f32) -> f32 {
    let e = exp_at_most_zero(-x.abs());
    let sigmoid = if x >= 0.0 {
        1.0 / (1.0 + e)
    } else {
        e / (1.0 + e)
    };
    x * sigmoid
}

/// [`swiglu`] as an operation of burn's CPU backend.
#[backend_extension(Flex)]
pub trait CpuSwiglu: Backend {
    /// `silu(gate) · up` for `gate_up`: `[n, 2d]`, each row `gate | up`; `[n, d]` out.
    fn cpu_swiglu(gate_up: &FloatTensor<Self>) -> FloatTensor<Self>;
}

impl CpuSwiglu for Flex {
    fn cpu_swiglu(gate_up: &FlexTensor) -> FlexTensor {
        let gate_up = gate_up.to_contiguous();
        let [n, width] = [gate_up.layout().shape()[0], gate_up.layout().shape()[1]];
        let out = swiglu(f32s(&gate_up), width);
        FlexTensor::from_data(TensorData::new(out, [n, width / 2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_matmul::values;

    #[test]
    fn matches_silu_times_up_in_f64() {
        // Values across the range a block's projections give, the tails included.
        let mut gate_up: Vec<f32> = values(3 * 64, 5).iter().map(|v| v * 30.0).collect();
        gate_up[..6].copy_from_slice(&[0.0, -0.0, 100.0, -100.0, 1e-30, -1e-30]);
        let out = swiglu(&gate_up, 64);
        assert_eq!(out.len(), 3 * 32);
        for (r, row) in gate_up.chunks_exact(64).enumerate() {
            for i in 0..32 {
                let (g, u) = (f64::from(row[i]), f64::from(row[32 + i]));
                let want = g / (1.0 + (-g).exp()) * u;
                let got = f64::from(out[r * 32 + i]);
                let tolerance = 4.0 * f64::from(f32::EPSILON) * want.abs() + 1e-30;
                assert!(
                    (got - want).abs() <= tolerance,
                    "row {r}, {i}: {got} against {want}"
                );
            }
        }
    }

    #[test]
    fn a_nan_stays_a_nan() {
        let out = swiglu(&[f32::NAN, 1.0, 2.0, f32::NAN], 4);
        assert!(out[0].is_nan() && out[1].is_nan());
    }
}
