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
//! The noise comes from no generator's state: it is a hash of (seed, position, id)
//! ([`Draw::gumbel`]), with the position that of the node whose next token is drawn,
//! computed alike on the host and in the kernel. So:
//! - speculative sampling commits the very tokens plain sampling does from the same seed:
//!   the token after a prefix is `argmax(l / T + G(seed, position))` with the logits
//!   of that prefix, whichever step and tree verify it, and a draft token is accepted
//!   exactly when it is that token. The engine's tests hold every method to AR's
//!   tokens under sampling as under greedy decoding; the draws are still exact samples,
//!   since each position's noise is independent of every other's;
//! - the WGSL kernels and the host's sampler draw the same ids from the same logits,
//!   which is how the tests hold the kernels to it;
//! - a captured step graph replays a sampling step with no new buffer: the positions it
//!   reads are refilled already, as are the draw's words;
//! - a generation's draws depend on its seed only, whatever the backend.
//!
//! Two implementations:
//! - `shaders/nucleus.wgsl` (if top-p < 1), then `shaders/top_k.wgsl` ranking the scores
//!   of `top_k_gumbel.wgsl`: the launches of a greedy step's argmax, and one more for a
//!   nucleus, where burn ops took a dozen more, or about 240 more with a nucleus;
//! - [`draw_on_host`], for the CPU backend (whose logits are in memory already) and as
//!   the kernels' reference. It hashes the noise only for the ids that could still win:
//!   no noise exceeds [`NOISE_CEILING`], so an id whose scaled logit trails the best
//!   score by more cannot win.

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Backend, DispatchDevice, backend_extension};
use burn::tensor::{DType, Device, Int, IntDType, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::kernel_check::KernelCheck;
use crate::kernels::{MAX_WORKGROUPS, Shader, WgslKernel, binding, empty_like};
use crate::llama::{TokenIds, floats_read};
use crate::top_k::{TOP_K_CORE, launch_top_k};

/// How a sampling step draws: the distribution, and the seed of its noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Draw {
    /// Softmax temperature: finite and > 0.
    pub temperature: f32,
    /// Nucleus mass, in (0, 1]; 1 keeps every id.
    pub top_p: f32,
    /// The generation's seed.
    pub seed: u64,
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
    /// seed high word]`.
    pub(crate) fn words(&self) -> Vec<i32> {
        [
            self.temperature.to_bits(),
            self.top_p.to_bits(),
            self.seed as u32,
            (self.seed >> 32) as u32,
        ]
        .map(|w| w as i32)
        .to_vec()
    }

    /// The Gumbel noise this draw adds to logit `id` of the node at `position`, as
    /// `shaders/top_k_gumbel.wgsl` computes it: `-ln(-ln u)`, with `u` hashed from
    /// (seed, position, id) onto a grid of 2²³ points strictly inside (0, 1).
    pub fn gumbel(&self, position: u32, id: u32) -> f32 {
        noise_of_bits(pcg4d([id, position, self.seed as u32, (self.seed >> 32) as u32])[0])
    }
}

/// `-ln(-ln u)` for the `u` of 32 hashed bits: the top 23 pick a point of a grid strictly
/// inside (0, 1), exact in f32, so that both logarithms are finite.
fn noise_of_bits(bits: u32) -> f32 {
    let u = ((bits >> 9) as f32 + 0.5) * (1.0 / 8_388_608.0);
    -(-u.ln()).ln()
}

/// No noise is larger: the noise of the grid's top point (about 16.6), with room for a
/// GPU's logarithm rounding otherwise than the host's.
pub const NOISE_CEILING: f32 = 16.7;

/// A draw's inputs on the device: its words ([`Draw::words`]) and each row's position.
/// A step graph's are buffers it refills before each replay.
#[derive(Debug, Clone)]
pub(crate) struct DrawBuffers {
    /// `[4]`.
    pub words: Tensor<1, Int>,
    /// `[rows]`.
    pub positions: Tensor<1, Int>,
}

impl DrawBuffers {
    /// `draw`'s words and `positions` as new tensors on `device`.
    pub fn upload(draw: &Draw, positions: &[u32], device: &Device) -> Self {
        let ints = |v: Vec<i32>| {
            let len = v.len();
            Tensor::from_data(TensorData::new(v, [len]), (device, DType::I32))
        };
        Self {
            words: ints(draw.words()),
            positions: ints(positions.iter().map(|&p| p as i32).collect()),
        }
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

/// One id per row of `logits` (`[rows, vocab]`), drawn as `draw` says: `[rows, 1]`.
/// Row `r` is the node at `positions[r]`. On wgpu the kernels read the draw from
/// `on_device` (uploaded here if `None`); elsewhere the logits are read where they lie,
/// in memory, and drawn from on the host ([`draw_on_host`]).
pub(crate) fn sample_ids(
    logits: Tensor<2>,
    draw: &Draw,
    positions: &[u32],
    on_device: Option<DrawBuffers>,
) -> Result<TokenIds> {
    let [rows, vocab] = logits.dims();
    debug_assert_eq!(rows, positions.len(), "invariant: a position per row");
    let device = logits.device();
    let on_wgpu = matches!(device.as_dispatch(), DispatchDevice::Cube(_));
    if on_wgpu && logits.dtype() == DType::F32 && rows <= MAX_WORKGROUPS {
        let buffers = on_device.unwrap_or_else(|| DrawBuffers::upload(draw, positions, &device));
        return Ok(TokenIds::new(kernel_sample_ids(
            logits,
            &buffers,
            draw.has_nucleus(),
        )));
    }
    let unread = || Error::Readback {
        reason: "the logits of a backend without a sampling kernel could not be read \
                 synchronously"
            .into(),
    };
    let host =
        floats_read(burn::tensor::try_read_sync(logits.into_data_async()).ok_or_else(unread)?)?;
    let ids = draw_on_host(&host, vocab, draw, positions)
        .into_iter()
        .map(|id| id as i32)
        .collect::<Vec<_>>();
    Ok(TokenIds::new(Tensor::from_data(
        TensorData::new(ids, [rows, 1]),
        (&device, DType::I32),
    )))
}

/// [`sample_ids`] by our WGSL kernels, whatever the device; wgpu only. `nucleus` says
/// whether the draw has top-p < 1.
pub(crate) fn kernel_sample_ids(
    logits: Tensor<2>,
    buffers: &DrawBuffers,
    nucleus: bool,
) -> Tensor<2, Int> {
    let int_dtype = logits.device().settings().int_dtype;
    Tensor::from_dispatch(<burn::backend::Dispatch as SampleOps>::sample_ids(
        logits.into_dispatch(),
        buffers.words.clone().into_dispatch(),
        buffers.positions.clone().into_dispatch(),
        nucleus,
        int_dtype,
    ))
}

/// One id per row of `logits` (`[rows, vocab]`, row-major), drawn as `draw` says, row `r`
/// being the node at `positions[r]`: what the kernels draw, up to rounding, computed on
/// the host. Ties go to the lower id, and NaN is never drawn, as in the kernels.
pub fn draw_on_host(logits: &[f32], vocab: usize, draw: &Draw, positions: &[u32]) -> Vec<u32> {
    logits
        .chunks_exact(vocab)
        .zip(positions)
        .map(|(row, &position)| draw_row(row, draw, position))
        .collect()
}

/// [`draw_on_host`] for one row.
fn draw_row(row: &[f32], draw: &Draw, position: u32) -> u32 {
    let scaled: Vec<f32> = row.iter().map(|&l| l / draw.temperature).collect();
    let nucleus = draw
        .has_nucleus()
        .then(|| HostNucleus::of(&scaled, draw.top_p));
    let drawable = |s: f32| !s.is_nan() && nucleus.as_ref().is_none_or(|n| n.keeps(s));
    // The best score so far, (score, id); the likeliest drawable id's first, so that most
    // ids fall below it by more than any noise.
    let Some(likeliest) = (0..scaled.len())
        .filter(|&v| drawable(scaled[v]))
        .reduce(|a, v| if scaled[v] > scaled[a] { v } else { a })
    else {
        return 0;
    };
    let score = |v: usize| scaled[v] + draw.gumbel(position, v as u32);
    let mut best = (score(likeliest), likeliest);
    for (v, &s) in scaled.iter().enumerate() {
        if s + NOISE_CEILING < best.0 || !drawable(s) {
            continue;
        }
        let candidate = score(v);
        if candidate > best.0 || (candidate == best.0 && v < best.1) {
            best = (candidate, v);
        }
    }
    best.1 as u32
}

/// A row's top-p nucleus, as `nucleus.wgsl` finds it: the scaled logits' max, the
/// softmax's sum, and the threshold after 24 rounds of bisection.
struct HostNucleus {
    max: f32,
    sum: f32,
    threshold: f32,
}

impl HostNucleus {
    fn of(scaled: &[f32], top_p: f32) -> Self {
        let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f32> = scaled.iter().map(|&s| (s - max).exp()).collect();
        let sum: f32 = weights.iter().sum();
        // Each round keeps only the probabilities between its bounds: the ones above the
        // upper bound are in every later round's mass, the ones below the lower in none.
        let mut between: Vec<f32> = weights.into_iter().map(|w| w / sum).collect();
        let (mut lo, mut hi, mut above) = (0.0f32, 1.0 / sum, 0.0f32);
        for _ in 0..24 {
            let mid = (lo + hi) / 2.0;
            let reaching: f32 = between.iter().filter(|&&p| p >= mid).sum();
            if above + reaching >= top_p {
                lo = mid;
                between.retain(|&p| p >= mid);
            } else {
                hi = mid;
                above += reaching;
                between.retain(|&p| p < mid);
            }
        }
        Self {
            max,
            sum,
            threshold: lo,
        }
    }

    /// Whether the id of scaled logit `s` is in the nucleus.
    fn keeps(&self, s: f32) -> bool {
        (s - self.max).exp() / self.sum >= self.threshold
    }
}

/// The backend extension behind [`kernel_sample_ids`].
#[backend_extension(Cube)]
pub trait SampleOps: Backend {
    /// `[rows, vocab]` f32 logits to `[rows, 1]` ids drawn as `words` says
    /// ([`Draw::words`]), row `r` at `positions[r]`; `nucleus` when its top-p is below 1.
    fn sample_ids(
        logits: FloatTensor<Self>,
        words: IntTensor<Self>,
        positions: IntTensor<Self>,
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
        positions: CubeTensor,
        nucleus: bool,
        out_dtype: IntDType,
    ) -> CubeTensor {
        let [logits, words, positions] = [logits, words, positions].map(into_contiguous);
        if !nucleus {
            return launch_top_k::<GumbelTop<AllIds>>(logits, 1, &[&words, &positions], out_dtype);
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
        launch_top_k::<GumbelTop<NucleusIds>>(logits, 1, &[&words, &positions, &stats], out_dtype)
    }
}

/// Runs the kernels on `device` (wgpu) and [`draw_on_host`] over the same logits and
/// draws, and holds them to the same ids: at the real vocabulary's width (parts and a
/// merge), a width below a workgroup's, with and without a nucleus, at several
/// temperatures, with rows at positions out of order. Async, so that it also runs in
/// the browser.
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
        let logits = Tensor::<2>::from_data(TensorData::new(host.clone(), [rows, vocab]), device);
        let draw = Draw {
            temperature,
            top_p,
            seed: 0x5eed_0000_0000_0001 + case as u64,
        };
        // Rows at positions out of order, some shared: as a tree's nodes are.
        let positions: Vec<u32> = (0..rows as u32).map(|r| 40 + (r * 7) % 5).collect();
        let buffers = DrawBuffers::upload(&draw, &positions, device);
        let kernel = kernel_sample_ids(logits.clone(), &buffers, draw.has_nucleus());
        let kernel = TokenIds::new(kernel).read().await?;
        let reference = draw_on_host(&host, vocab, &draw, &positions);
        if let Some(row) = (0..rows).find(|&r| kernel[r] != reference[r]) {
            return Ok(KernelCheck {
                rows: checked,
                mismatch: Some(format!(
                    "sampling kernel draws {} where the host draws {} at row {row} of \
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

    fn draw(seed: u64) -> Draw {
        Draw {
            temperature: 1.0,
            top_p: 1.0,
            seed,
        }
    }

    #[test]
    fn noise_is_finite_and_gumbel_distributed() {
        let d = draw(7);
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
        let base = draw(0x1234_5678_9abc_def0);
        let g = base.gumbel(2, 40);
        let changed = [
            draw(base.seed ^ 1).gumbel(2, 40),
            draw(base.seed ^ (1 << 40)).gumbel(2, 40),
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
        };
        let w: Vec<u32> = d.words().into_iter().map(|w| w as u32).collect();
        assert_eq!(f32::from_bits(w[0]), 0.75);
        assert_eq!(f32::from_bits(w[1]), 0.5);
        assert_eq!((w[2], w[3]), (7, 0xdead_beef));
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
                ..draw(0)
            };
            assert!(d.check().is_err(), "{temperature} {top_p}");
        }
        assert!(draw(0).check().is_ok());
    }

    /// The host's draws follow softmax(l / T) cut to the nucleus: one draw per position,
    /// as a generation makes them.
    #[test]
    fn host_draws_follow_the_distribution() {
        let logits = [2.0f32, 1.0, 0.5, 0.0, -1.0, f32::NEG_INFINITY];
        let (rows, vocab) = (3000, logits.len());
        let host: Vec<f32> = logits.iter().copied().cycle().take(rows * vocab).collect();
        let positions: Vec<u32> = (0..rows as u32).collect();
        for (temperature, top_p) in [(1.0f32, 1.0f32), (0.7, 0.8)] {
            let d = Draw {
                temperature,
                top_p,
                ..draw(11)
            };
            let ids = draw_on_host(&host, vocab, &d, &positions);
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

    /// Skipping the ids that trail by more than any noise changes no draw: the host's
    /// draws equal the argmax of every id's score, nucleus and all.
    #[test]
    fn skipping_hopeless_ids_changes_no_draw() {
        let (rows, vocab) = (200, 3_000);
        let logits = spread_logits(rows, vocab, 3);
        let positions: Vec<u32> = (0..rows as u32).map(|r| r * 3).collect();
        for (temperature, top_p) in [(1.0, 1.0), (0.5, 1.0), (2.0, 0.9), (0.8, 0.5)] {
            let d = Draw {
                temperature,
                top_p,
                ..draw(5)
            };
            let every_id = logits
                .chunks_exact(vocab)
                .zip(&positions)
                .map(|(row, &position)| {
                    let scaled: Vec<f32> = row.iter().map(|&l| l / temperature).collect();
                    let nucleus = d.has_nucleus().then(|| HostNucleus::of(&scaled, top_p));
                    (0..vocab)
                        .filter(|&v| nucleus.as_ref().is_none_or(|n| n.keeps(scaled[v])))
                        .map(|v| (scaled[v] + d.gumbel(position, v as u32), v))
                        .reduce(|a, b| if b.0 > a.0 { b } else { a })
                        .expect("a kept id")
                        .1 as u32
                })
                .collect::<Vec<_>>();
            let drawn = draw_on_host(&logits, vocab, &d, &positions);
            assert_eq!(drawn, every_id, "T {temperature} top-p {top_p}");
            // The noise decides: the draws are not just each row's argmax.
            let argmax = logits
                .chunks_exact(vocab)
                .map(|row| (0..vocab).fold(0, |a, v| if row[v] > row[a] { v } else { a }) as u32);
            assert!(drawn.iter().zip(argmax).any(|(&d, a)| d != a));
        }
    }

    #[test]
    fn no_noise_exceeds_the_ceiling() {
        assert!(noise_of_bits(u32::MAX) < NOISE_CEILING);
        assert!(noise_of_bits(u32::MAX) > NOISE_CEILING - 0.2);
        assert!(noise_of_bits(0).is_finite());
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
