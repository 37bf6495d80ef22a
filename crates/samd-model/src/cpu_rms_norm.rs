//! RMSNorm on the CPU in one pass per row: `x / sqrt(mean(x²) + eps) · weight`.
//!
//! In burn ops it was seven operations (square, mean, expand, the epsilon, sqrt, a
//! division and the weight), each a new tensor: in wasm 7.6% of a decode step
//! (V8's profile, `tests/browser/profile-cpu.mjs`), for two norms per layer. Each row's
//! sum of squares runs in the attention's eight running sums in a fixed order
//! ([`lane_sum_of`]), so a row's result does not depend on the rows beside it: a tree's
//! nodes get what one-node steps get.

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};
use burn::tensor::TensorData;

use crate::cpu_attention::lane_sum_of;
use crate::cpu_matmul::f32s;

/// `rms_norm(x) · weight` for each row of `x` (rows of `weight.len()` values).
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let d = weight.len();
    assert!(
        d > 0 && x.len().is_multiple_of(d),
        "invariant: whole rows as wide as the weight"
    );
    #[cfg(target_arch = "wasm32")]
    return rms_norm_simd128(x, weight, eps);
    #[cfg(not(target_arch = "wasm32"))]
    rms_norm_rows(x, weight, eps)
}

/// [`rms_norm_rows`] compiled with wasm's SIMD, which its loops vectorise to.
#[cfg(target_arch = "wasm32")]
#[target_feature(enable = "simd128")]
fn rms_norm_simd128(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    rms_norm_rows(x, weight, eps)
}

/// [`rms_norm`]'s loops.
#[inline(always)]
fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let d = weight.len();
    let mut out = vec![0.0; x.len()];
    for (row, out) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let rms = (lane_sum_of(row, |v| v * v) / d as f32 + eps).sqrt();
        for ((o, &v), &w) in out.iter_mut().zip(row).zip(weight) {
            *o = v / rms * w;
        }
    }
    out
}

/// [`rms_norm`] as an operation of burn's CPU backend.
#[backend_extension(Flex)]
pub trait CpuRmsNorm: Backend {
    /// `rms_norm(x) · weight` for `x`: `[n, d]` and `weight`: `[d]`.
    fn cpu_rms_norm(
        x: &FloatTensor<Self>,
        weight: &FloatTensor<Self>,
        eps: f32,
    ) -> FloatTensor<Self>;
}

impl CpuRmsNorm for Flex {
    fn cpu_rms_norm(x: &FlexTensor, weight: &FlexTensor, eps: f32) -> FlexTensor {
        let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
        let shape = [x.layout().shape()[0], x.layout().shape()[1]];
        let out = rms_norm(f32s(&x), f32s(&weight), eps);
        FlexTensor::from_data(TensorData::new(out, shape))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_matmul::values;

    #[test]
    fn matches_the_definition_in_f64() {
        // Rows as wide as SmolLM2's (576) and with a tail past the lanes (44).
        for d in [576, 44] {
            let x: Vec<f32> = values(3 * d, 7).iter().map(|v| v * 20.0).collect();
            let weight = values(d, 8);
            let eps = 1e-5;
            let out = rms_norm(&x, &weight, eps);
            for (r, row) in x.chunks_exact(d).enumerate() {
                let mean: f64 = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / d as f64;
                let rms = (mean + f64::from(eps)).sqrt();
                for i in 0..d {
                    let want = f64::from(row[i]) / rms * f64::from(weight[i]);
                    let got = f64::from(out[r * d + i]);
                    let tolerance = 8.0 * f64::from(f32::EPSILON) * want.abs() + 1e-30;
                    assert!(
                        (got - want).abs() <= tolerance,
                        "row {r}, {i}: {got} against {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_row_comes_out_the_same_alone_and_among_others() {
        let d = 64;
        let x = values(5 * d, 3);
        let weight = values(d, 4);
        let all = rms_norm(&x, &weight, 1e-6);
        for r in 0..5 {
            assert_eq!(
                rms_norm(&x[r * d..][..d], &weight, 1e-6),
                &all[r * d..][..d],
                "row {r}"
            );
        }
    }
}
