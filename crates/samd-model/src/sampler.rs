//! Drawing each node's next token on the device: a temperature, a top-p nucleus, and
//! Gumbel-max.
//!
//! `argmax(l / T + G)`, with `G = -ln(-ln U)` for independent uniform `U`, is an exact
//! draw from `softmax(l / T)`, and needs no sort or cumulative sum (burn's wgpu cumsum is
//! quadratic in the row length). A top-p nucleus first sets the ids outside it to `-inf`:
//! it is `{v : p_v ≥ τ}`, with `τ` the largest threshold whose kept mass reaches top-p,
//! found by 24 rounds of bisection. It equals the sorted-prefix nucleus except within
//! `2⁻²⁴` of `τ`.
//!
//! The noise comes from no generator's state: it is a hash of (seed, step, row, id)
//! ([`Draw::gumbel`]), computed alike on the host and in the kernel. So:
//! - the WGSL kernels and the reference burn ops draw the same ids from the same logits,
//!   which is how the tests hold the kernels to them;
//! - a captured step graph replays a sampling step with fresh noise once its draw buffer
//!   (the step counter among its words) is refilled, as its token ids are;
//! - a generation's draws depend on its seed only, whatever the backend.
//!
//! Two implementations:
//! - `shaders/nucleus.wgsl` (if top-p < 1), then `shaders/top_k.wgsl` ranking the scores
//!   of `top_k_gumbel.wgsl`: the launches of a greedy step's argmax, and one more for a
//!   nucleus, where the burn ops took eight, or about two hundred with a nucleus;
//! - [`reference_sample_ids`]: burn ops, for every backend, with the noise made on the
//!   host.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Backend, DispatchDevice, backend_extension};
use burn::tensor::activation::softmax;
use burn::tensor::{DType, Device, Int, IntDType, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::kernel_check::KernelCheck;
use crate::kernels::{MAX_WORKGROUPS, Shader, WgslKernel, binding, empty_like};
use crate::llama::TokenIds;
use crate::top_k::{TOP_K_CORE, launch_top_k};

/// One sampling step's draw: the distribution, and where in the noise stream it reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    /// Softmax temperature: finite and > 0.
    pub temperature: f32,
    /// Nucleus mass, in (0, 1]; 1 keeps every id.
    pub top_p: f32,
    /// The generation's seed.
    pub seed: u64,
    /// Which of the generation's sampling steps this is: each step needs fresh noise.
    pub step: u32,
}

impl Draw {
    /// Rejects values that draw nothing meaningful.
    pub fn check(&self) -> Result<()> {
        let Self {
            temperature, top_p, ..
        } = *self;
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(Error::InvalidInput {
                what: format!("temperature {temperature}: a draw needs a finite value > 0"),
            });
        }
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(Error::InvalidInput {
                what: format!("top-p {top_p}: a draw needs a value in (0, 1]"),
            });
        }
        Ok(())
    }

    /// Whether a top-p nucleus cuts the distribution.
    pub fn has_nucleus(&self) -> bool {
        self.top_p < 1.0
    }

    /// The draw as the kernels read it: `[temperature bits, top-p bits, seed low word,
    /// seed high word, step, 0, 0, 0]`.
    pub(crate) fn words(&self) -> Vec<i32> {
        let seed = [self.seed as u32, (self.seed >> 32) as u32];
        [
            self.temperature.to_bits(),
            self.top_p.to_bits(),
            seed[0],
            seed[1],
            self.step,
            0,
            0,
            0,
        ]
        .map(|w| w as i32)
        .to_vec()
    }

    /// The Gumbel noise this draw adds to logit `id` of row `row`, as
    /// `shaders/top_k_gumbel.wgsl` computes it: `-ln(-ln u)`, with `u` hashed from
    /// (seed, step, row, id) onto a grid of 2²³ points strictly inside (0, 1).
    pub fn gumbel(&self, row: u32, id: u32) -> f32 {
        let first = pcg4d([id, row, self.step, self.seed as u32]);
        let bits = pcg4d([
            first[0] ^ (self.seed >> 32) as u32,
            first[1],
            first[2],
            first[3],
        ])[0];
        let u = ((bits >> 9) as f32 + 0.5) * (1.0 / 8_388_608.0);
        -(-u.ln()).ln()
    }

    /// This draw's words on `device`, for the kernels.
    pub(crate) fn upload(&self, device: &Device) -> Tensor<1, Int> {
        Tensor::from_data(TensorData::new(self.words(), [8]), (device, DType::I32))
    }
}

/// pcg4d, from Jarzynski and Olano, "Hash Functions for GPU Rendering" (JCGT 2020): four
/// words in, four well-mixed words out. `shaders/top_k_gumbel.wgsl` has its twin.
fn pcg4d(input: [u32; 4]) -> [u32; 4] {
    let mix = |v: &mut [u32; 4]| {
        v[0] = v[0].wrapping_add(v[1].wrapping_mul(v[3]));
        v[1] = v[1].wrapping_add(v[2].wrapping_mul(v[0]));
        v[2] = v[2].wrapping_add(v[0].wrapping_mul(v[1]));
        v[3] = v[3].wrapping_add(v[1].wrapping_mul(v[2]));
    };
    let mut v = input.map(|x| x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223));
    mix(&mut v);
    v = v.map(|x| x ^ (x >> 16));
    mix(&mut v);
    v
}

/// One id per row of `logits` (`[rows, vocab]`), drawn as `draw` says: `[rows, 1]`. On
/// wgpu the kernels read the draw from `words` ([`Draw::upload`], or a step graph's
/// buffer, refilled before each replay); elsewhere the reference ops read `draw`.
pub(crate) fn sample_ids(logits: Tensor<2>, draw: &Draw, words: Tensor<1, Int>) -> TokenIds {
    let rows = logits.dims()[0];
    let on_wgpu = matches!(logits.device().as_dispatch(), DispatchDevice::Cube(_));
    TokenIds::new(
        if on_wgpu && logits.dtype() == DType::F32 && rows <= MAX_WORKGROUPS {
            kernel_sample_ids(logits, words, draw.has_nucleus())
        } else {
            reference_sample_ids(logits, draw)
        },
    )
}

/// [`sample_ids`] by our WGSL kernels, whatever the device; wgpu only. `nucleus` says
/// whether the draw in `words` has top-p < 1.
pub fn kernel_sample_ids(
    logits: Tensor<2>,
    words: Tensor<1, Int>,
    nucleus: bool,
) -> Tensor<2, Int> {
    let int_dtype = logits.device().settings().int_dtype;
    Tensor::from_dispatch(<burn::backend::Dispatch as SampleOps>::sample_ids(
        logits.into_dispatch(),
        words.into_dispatch(),
        nucleus,
        int_dtype,
    ))
}

/// [`sample_ids`] by burn ops only, with the noise made on the host.
pub fn reference_sample_ids(logits: Tensor<2>, draw: &Draw) -> Tensor<2, Int> {
    let [rows, vocab] = logits.dims();
    let device = logits.device();
    let scaled = logits / draw.temperature;
    let scaled = if draw.has_nucleus() {
        let probs = softmax(scaled.clone(), 1);
        let mut lo = Tensor::<2>::zeros([rows, 1], &device);
        let mut hi = probs.clone().max_dim(1);
        for _ in 0..24 {
            let mid = (lo.clone() + hi.clone()) / 2.0;
            let kept = probs
                .clone()
                .greater_equal(mid.clone().expand([rows, vocab]));
            let mass = probs.clone().mask_fill(kept.bool_not(), 0.0).sum_dim(1);
            let enough = mass.greater_equal_elem(draw.top_p);
            lo = lo.mask_where(enough.clone(), mid.clone());
            hi = mid.mask_where(enough, hi);
        }
        let out = probs.lower(lo.expand([rows, vocab]));
        scaled.mask_fill(out, f32::NEG_INFINITY)
    } else {
        scaled
    };
    let noise = (0..rows as u32)
        .flat_map(|row| (0..vocab as u32).map(move |id| draw.gumbel(row, id)))
        .collect::<Vec<f32>>();
    let noise = Tensor::<2>::from_data(TensorData::new(noise, [rows, vocab]), &device);
    (scaled + noise).argmax(1)
}

/// The backend extension behind [`kernel_sample_ids`].
#[backend_extension(Cube)]
pub trait SampleOps: Backend {
    /// `[rows, vocab]` f32 logits to `[rows, 1]` ids drawn as `words` says
    /// ([`Draw::words`]); `nucleus` when its top-p is below 1.
    fn sample_ids(
        logits: FloatTensor<Self>,
        words: IntTensor<Self>,
        nucleus: bool,
        out_dtype: IntDType,
    ) -> IntTensor<Self>;
}

/// `shaders/nucleus.wgsl`.
struct Nucleus;
impl Shader for Nucleus {
    const PARTS: &'static [&'static str] = &[include_str!("../../../shaders/nucleus.wgsl")];
}

/// Which ids `top_k_gumbel.wgsl` may draw: its nucleus part.
trait NucleusPart: Send + Sync + 'static {
    const PART: &'static str;
}

/// Every id (top-p 1): `shaders/top_k_all.wgsl`.
struct AllIds;
impl NucleusPart for AllIds {
    const PART: &'static str = include_str!("../../../shaders/top_k_all.wgsl");
}

/// The ids `nucleus.wgsl` kept: `shaders/top_k_nucleus.wgsl`.
struct NucleusIds;
impl NucleusPart for NucleusIds {
    const PART: &'static str = include_str!("../../../shaders/top_k_nucleus.wgsl");
}

/// `shaders/top_k.wgsl` ranking `top_k_gumbel.wgsl`'s scores, over the ids of `N`.
struct GumbelTop<N>(std::marker::PhantomData<N>);
impl<N: NucleusPart> Shader for GumbelTop<N> {
    const PARTS: &'static [&'static str] = &[
        TOP_K_CORE,
        include_str!("../../../shaders/top_k_gumbel.wgsl"),
        N::PART,
    ];
}

impl SampleOps for CubeBackend {
    fn sample_ids(
        logits: CubeTensor,
        words: CubeTensor,
        nucleus: bool,
        out_dtype: IntDType,
    ) -> CubeTensor {
        let (logits, words) = (into_contiguous(logits), into_contiguous(words));
        if !nucleus {
            return launch_top_k::<GumbelTop<AllIds>>(logits, 1, &[&words], out_dtype);
        }
        let (rows, vocab) = (logits.meta.shape()[0], logits.meta.shape()[1]);
        // Per row: the scaled logits' max, the softmax's sum, and the threshold.
        let stats = empty_like(&logits, [rows, 4], DType::F32);
        WgslKernel::<Nucleus>::new(vec![("vocab", vocab.to_string())]).launch(
            &logits.client,
            256,
            [rows, 1, 1],
            vec![binding(&logits), binding(&words), binding(&stats)],
            None,
        );
        launch_top_k::<GumbelTop<NucleusIds>>(logits, 1, &[&words, &stats], out_dtype)
    }
}

/// Runs the kernels and the reference ops on `device` (wgpu) over the same logits and
/// draws, and holds them to the same ids: at the real vocabulary's width (parts and a
/// merge), a width below a workgroup's, with and without a nucleus, at several
/// temperatures and steps. Async, so that it also runs in the browser.
pub async fn check_kernel(device: &Device) -> Result<KernelCheck> {
    let mut checked = 0;
    let cases = [
        (4, 49_152, 1.0, 1.0),
        (4, 49_152, 0.7, 0.9),
        (64, 1_000, 1.5, 0.5),
        (9, 100, 0.3, 1.0),
        (3, 100, 2.0, 0.999),
    ];
    for (case, (rows, vocab, temperature, top_p)) in cases.into_iter().enumerate() {
        let host = spread_logits(rows, vocab, case as u64);
        let logits = Tensor::<2>::from_data(TensorData::new(host, [rows, vocab]), device);
        let draw = Draw {
            temperature,
            top_p,
            seed: 0x5eed_0000_0000_0001 + case as u64,
            step: 3 * case as u32,
        };
        let words = draw.upload(device);
        let kernel = TokenIds::new(kernel_sample_ids(logits.clone(), words, draw.has_nucleus()))
            .read()
            .await?;
        let reference = TokenIds::new(reference_sample_ids(logits, &draw))
            .read()
            .await?;
        if let Some(row) = (0..rows).find(|&r| kernel[r] != reference[r]) {
            return Ok(KernelCheck {
                rows: checked,
                mismatch: Some(format!(
                    "sampling kernel draws {} where the reference draws {} at row {row} of \
                     {rows}×{vocab}, temperature {temperature}, top-p {top_p}",
                    kernel[row], reference[row]
                )),
            });
        }
        checked += rows;
    }
    Ok(KernelCheck {
        rows: checked,
        mismatch: None,
    })
}

/// Logits spread like a language model's (a few far ahead, a long tail), with some
/// `-inf`: distinct rows, deterministic in `seed`.
fn spread_logits(rows: usize, vocab: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    (0..rows * vocab)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let u = (state >> 40) as f32 / (1u64 << 24) as f32;
            match (state >> 33) % 97 {
                0 => f32::NEG_INFINITY,
                // An exponential tail: most ids far below the best few.
                _ => 12.0 * u.powi(6) - 4.0,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draw(seed: u64, step: u32) -> Draw {
        Draw {
            temperature: 1.0,
            top_p: 1.0,
            seed,
            step,
        }
    }

    #[test]
    fn noise_is_finite_and_gumbel_distributed() {
        let d = draw(7, 0);
        let n = 200_000u32;
        let values: Vec<f64> = (0..n).map(|id| f64::from(d.gumbel(id % 13, id))).collect();
        assert!(values.iter().all(|v| v.is_finite()));
        // Gumbel(0, 1): mean γ = 0.5772, variance π²/6 = 1.6449.
        let mean = values.iter().sum::<f64>() / f64::from(n);
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / f64::from(n);
        assert!((mean - 0.5772).abs() < 0.01, "mean {mean}");
        assert!((var - 1.6449).abs() < 0.03, "variance {var}");
    }

    #[test]
    fn every_input_word_changes_the_noise() {
        let base = draw(0x1234_5678_9abc_def0, 5);
        let g = base.gumbel(2, 40);
        let changed = [
            draw(base.seed ^ 1, 5).gumbel(2, 40),
            draw(base.seed ^ (1 << 40), 5).gumbel(2, 40),
            draw(base.seed, 6).gumbel(2, 40),
            base.gumbel(3, 40),
            base.gumbel(2, 41),
        ];
        assert!(changed.iter().all(|&c| c != g), "{g} vs {changed:?}");
        // The temperature and top-p shape the distribution, not the noise.
        let cooler = Draw {
            temperature: 0.5,
            top_p: 0.9,
            ..base
        };
        assert_eq!(cooler.gumbel(2, 40), g);
    }

    #[test]
    fn words_carry_the_draw() {
        let d = Draw {
            temperature: 0.75,
            top_p: 0.5,
            seed: 0xdead_beef_0000_0007,
            step: 9,
        };
        let w: Vec<u32> = d.words().into_iter().map(|w| w as u32).collect();
        assert_eq!(f32::from_bits(w[0]), 0.75);
        assert_eq!(f32::from_bits(w[1]), 0.5);
        assert_eq!((w[2], w[3], w[4]), (7, 0xdead_beef, 9));
    }

    #[test]
    fn bad_draws_are_refused() {
        for (temperature, top_p) in [
            (0.0, 1.0),
            (-1.0, 1.0),
            (f32::NAN, 1.0),
            (1.0, 0.0),
            (1.0, 1.5),
        ] {
            let d = Draw {
                temperature,
                top_p,
                ..draw(0, 0)
            };
            assert!(d.check().is_err(), "{temperature} {top_p}");
        }
        assert!(draw(0, 0).check().is_ok());
    }

    /// On the CPU, the reference's draws follow softmax(l / T) cut to the nucleus.
    #[test]
    fn reference_draws_follow_the_distribution() {
        let device = Device::flex();
        let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0, f32::NEG_INFINITY];
        let (rows, vocab) = (3000, logits.len());
        let host: Vec<f32> = logits.iter().copied().cycle().take(rows * vocab).collect();
        let tensor = Tensor::<2>::from_data(TensorData::new(host, [rows, vocab]), &device);
        for (temperature, top_p) in [(1.0f32, 1.0f32), (0.7, 0.8)] {
            let d = Draw {
                temperature,
                top_p,
                ..draw(11, 2)
            };
            let ids = burn::tensor::read_sync(
                TokenIds::new(reference_sample_ids(tensor.clone(), &d)).read(),
            )
            .expect("read");
            let want = nucleus_softmax(&logits, temperature, top_p);
            let mut counts = vec![0usize; vocab];
            ids.iter().for_each(|&i| counts[i as usize] += 1);
            for (v, (&c, &p)) in counts.iter().zip(&want).enumerate() {
                let expected = p * rows as f64;
                // Five standard deviations of a binomial count.
                let sd = (expected * (1.0 - p)).sqrt().max(0.5);
                assert!(
                    (c as f64 - expected).abs() < 5.0 * sd,
                    "T {temperature} top-p {top_p}: id {v} drawn {c} times, expected {expected:.0}"
                );
            }
        }
    }

    /// softmax(l / T), cut to the smallest most-likely set whose mass reaches `top_p`.
    fn nucleus_softmax(logits: &[f32], temperature: f32, top_p: f32) -> Vec<f64> {
        let max = logits.iter().copied().fold(f32::MIN, f32::max);
        let p: Vec<f64> = logits
            .iter()
            .map(|&l| (f64::from(l - max) / f64::from(temperature)).exp())
            .collect();
        let z: f64 = p.iter().sum();
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let (mut mass, mut keep) = (0.0, vec![false; p.len()]);
        for &v in &order {
            keep[v] = true;
            mass += p[v] / z;
            if mass >= f64::from(top_p) {
                break;
            }
        }
        let kept: f64 = (0..p.len()).filter(|&v| keep[v]).map(|v| p[v]).sum();
        (0..p.len())
            .map(|v| if keep[v] { p[v] / kept } else { 0.0 })
            .collect()
    }
}
