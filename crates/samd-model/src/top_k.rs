//! The top-k ids of each row of the logits, on the device.
//!
//! The decode loop reads back only ids: column 0 of the top-k is the argmax that
//! verification needs, and all k columns feed Token Recycling. Two implementations give
//! the same ids:
//!
//! - [`reference_top_k_ids`], burn ops only, for every backend: k rounds of argmax, each
//!   masking the previous winner. burn's own `topk` panics on wasm (burn #5110). On a GPU
//!   it costs three kernel launches per rank, and a step of this small model is bound by
//!   launches.
//! - `shaders/top_k.wgsl`, our hand-written kernel: one launch, one workgroup per row, or
//!   for a long row two: parts of the row side by side, then a merge of their bests. It
//!   runs on every wgpu device (native Vulkan, Metal, DX12, and WebGPU in the browser),
//!   through burn's backend-extension API.
//!
//! - [`host_top_k`] on burn's CPU backend: one pass over each row, keeping its k best.
//!   The reference's k rounds there were 3k tensor ops over the vocabulary: 0.4–0.7 ms
//!   of a native one-node step of 5–6 ms, more in wasm.
//!
//! [`top_k_ids`] picks the kernel on wgpu for f32 logits, the host pass on the CPU (for
//! every k, so plain decoding's argmax and a tree's column 0 are one computation), and
//! the reference elsewhere. All rank a larger logit first and break ties towards the
//! lower id, as burn's `argmax` does, so they agree exactly; the tests hold them to that
//! on lavapipe and in the browser. The kernel and the host pass never rank a NaN: a row
//! with fewer than k numbers ends in [`NO_ID`], which a readback reports as NaN logits.

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{CubeBackend, CubeTensor, into_contiguous};
use burn::backend::{Backend, DispatchDevice, Flex, backend_extension, ops::IntTensorOps};
use burn::tensor::{DType, Device, Int, IntDType, Tensor, TensorData};

use crate::cpu_matmul;
use crate::error::{Error, Result};
use crate::kernel_check::KernelCheck;
use crate::kernels::{MAX_WORKGROUPS, Shader, WgslKernel, binding, empty_like};
use crate::llama::TokenIds;

/// The id past a row's numbers, where it has fewer than k (NaN is never ranked), as the
/// kernel writes it: `0xffffffff`, which the ids' i32 tensor holds as -1.
pub const NO_ID: u32 = u32::MAX;

/// Largest k the kernel takes: its workgroup keeps `threads × k` candidates in 16 KiB of
/// shared memory (WebGPU's guaranteed minimum), and fewer than 64 threads per row would
/// scan a 49k-wide row too slowly. Larger k falls back to the reference.
pub const KERNEL_MAX_K: usize = 32;

/// The `k` best ids of each row of `logits` (`[rows, vocab]`), best first: `[rows, k]`.
/// `k` is clamped to `1..=vocab`.
pub fn top_k_ids(logits: Tensor<2>, k: usize) -> Tensor<2, Int> {
    let [rows, vocab] = logits.dims();
    let k = k.clamp(1, vocab.max(1));
    let device = logits.device();
    let f32s = logits.dtype() == DType::F32;
    match device.as_dispatch() {
        DispatchDevice::Cube(_) if f32s && k <= KERNEL_MAX_K && rows <= MAX_WORKGROUPS => {
            kernel_top_k_ids(logits, k)
        }
        DispatchDevice::Flex(_) if f32s => {
            let int_dtype = device.settings().int_dtype;
            Tensor::from_dispatch(<burn::backend::Dispatch as CpuTopK>::host_top_k_ids(
                logits.into_dispatch(),
                k,
                int_dtype,
            ))
        }
        _ => reference_top_k_ids(logits, k),
    }
}

/// [`top_k_ids`] by our WGSL kernel, whatever the device; wgpu only.
pub fn kernel_top_k_ids(logits: Tensor<2>, k: usize) -> Tensor<2, Int> {
    let int_dtype = logits.device().settings().int_dtype;
    Tensor::from_dispatch(<burn::backend::Dispatch as TopKOps>::top_k_ids(
        logits.into_dispatch(),
        k,
        int_dtype,
    ))
}

/// [`top_k_ids`] by burn ops only: k rounds of argmax, each masking the winner to `-inf`.
pub fn reference_top_k_ids(logits: Tensor<2>, k: usize) -> Tensor<2, Int> {
    if k <= 1 {
        return logits.argmax(1);
    }
    let [rows, vocab] = logits.dims();
    let device = logits.device();
    let vocab_i64 = i64::try_from(vocab).expect("invariant: vocab fits i32 (validated)");
    // [rows, vocab]: each row is 0..vocab.
    let iota = Tensor::<1, Int>::arange(0..vocab_i64, &device)
        .reshape([1, vocab])
        .expand([rows, vocab]);
    let mut scores = logits;
    let mut columns = Vec::with_capacity(k);
    for round in 0..k {
        // [rows, 1]
        let best = scores.clone().argmax(1);
        if round + 1 < k {
            let hit = iota.clone().equal(best.clone().expand([rows, vocab]));
            scores = scores.mask_fill(hit, f32::NEG_INFINITY);
        }
        columns.push(best);
    }
    Tensor::cat(columns, 1)
}

/// The backend extension behind [`kernel_top_k_ids`].
#[backend_extension(Cube)]
pub trait TopKOps: Backend {
    /// `[rows, vocab]` f32 logits to `[rows, k]` ids, best first.
    fn top_k_ids(logits: FloatTensor<Self>, k: usize, out_dtype: IntDType) -> IntTensor<Self>;
}

/// The backend extension behind [`top_k_ids`] on the CPU.
#[backend_extension(Flex)]
pub trait CpuTopK: Backend {
    /// `[rows, vocab]` f32 logits to `[rows, k]` ids, best first, by [`host_top_k`].
    fn host_top_k_ids(logits: FloatTensor<Self>, k: usize, out_dtype: IntDType) -> IntTensor<Self>;
}

impl CpuTopK for Flex {
    fn host_top_k_ids(logits: FlexTensor, k: usize, out_dtype: IntDType) -> FlexTensor {
        let logits = logits.to_contiguous();
        let vocab = logits.layout().shape()[1];
        let ids: Vec<i32> = host_top_k(cpu_matmul::f32s(&logits), vocab, k)
            .into_iter()
            .map(|id| match id {
                NO_ID => -1,
                id => i32::try_from(id).expect("invariant: vocab fits i32 (validated)"),
            })
            .collect();
        let rows = ids.len() / k;
        let ids = FlexTensor::from_data(TensorData::new(ids, [rows, k]));
        if out_dtype == IntDType::I32 {
            ids
        } else {
            Flex::int_cast(ids, out_dtype)
        }
    }
}

/// The `k` best ids of each row of `logits` (rows of `vocab`), best first: a larger
/// logit first (by `total_cmp`), ties to the lower id, NaN never, and [`NO_ID`] past a
/// row's numbers where it has fewer than k. One pass over each row, keeping the best k
/// seen in order; a later id enters only past the worst kept, since on a tie the kept one
/// has the lower id.
pub fn host_top_k(logits: &[f32], vocab: usize, k: usize) -> Vec<u32> {
    assert!(
        k >= 1 && k <= vocab && logits.len().is_multiple_of(vocab),
        "invariant: 1 <= k <= vocab, whole rows"
    );
    let mut ids = Vec::with_capacity(logits.len() / vocab * k);
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    for row in logits.chunks_exact(vocab) {
        best.clear();
        for (id, &v) in (0u32..).zip(row) {
            if v.is_nan() || best.len() == k && v.total_cmp(&best[k - 1].0).is_le() {
                continue;
            }
            let at = best.partition_point(|&(b, _)| b.total_cmp(&v).is_ge());
            best.insert(at, (v, id));
            best.truncate(k);
        }
        ids.extend(best.iter().map(|&(_, id)| id));
        ids.extend(std::iter::repeat_n(NO_ID, k - best.len()));
    }
    ids
}

/// `shaders/top_k.wgsl`, the core of every top-k launch; a score part follows it.
pub(crate) const TOP_K_CORE: &str = include_str!("../../../shaders/top_k.wgsl");

/// `shaders/top_k.wgsl` ranking the logits themselves.
struct TopK;
impl Shader for TopK {
    const PARTS: &'static [&'static str] = &[
        TOP_K_CORE,
        include_str!("../../../shaders/top_k_logits.wgsl"),
    ];
}

/// Logits per workgroup when a row is split into parts: a few per lane, so that a
/// 49k-wide row spreads over a dozen workgroups.
const TOP_K_SPAN: usize = 4096;

impl TopKOps for CubeBackend {
    fn top_k_ids(logits: CubeTensor, k: usize, out_dtype: IntDType) -> CubeTensor {
        launch_top_k::<TopK>(into_contiguous(logits), k, &[], out_dtype)
    }
}

/// The `k` best ids of each row of `logits` (`[rows, vocab]`, contiguous) by the scores
/// of `S`, `top_k.wgsl` with a score part: `[rows, k]`. `extra` are the score part's
/// bindings, from binding 2 on.
pub(crate) fn launch_top_k<S: Shader>(
    logits: CubeTensor,
    k: usize,
    extra: &[&CubeTensor],
    out_dtype: IntDType,
) -> CubeTensor {
    let (rows, vocab) = (logits.meta.shape()[0], logits.meta.shape()[1]);
    // The most lanes, up to 256, whose candidates fit 16 KiB (8 bytes each); a power of
    // two, for the pairwise merge.
    let fit = (16 * 1024 / 8 / k).min(256);
    let lanes = 1usize << (usize::BITS - 1 - fit.leading_zeros());
    let parts = vocab.div_ceil(TOP_K_SPAN);
    let ids = empty_like(&logits, [rows, k], DType::I32);
    // Mode 0 ranks whole rows; 1, parts of them; 2 merges the parts' candidates.
    let launch = |mode: usize, grid: [usize; 3], src: &CubeTensor, dst: &CubeTensor| {
        let params = vec![
            ("k", k.to_string()),
            ("vocab", vocab.to_string()),
            ("threads", lanes.to_string()),
            ("slots", (lanes * k).to_string()),
            ("mode", mode.to_string()),
            ("parts", parts.to_string()),
            ("span", TOP_K_SPAN.to_string()),
        ];
        let buffers = [src, dst].into_iter().chain(extra.iter().copied());
        WgslKernel::<S>::new(params).launch(
            &logits.client,
            lanes as u32,
            grid,
            buffers.map(binding).collect(),
            None,
        );
    };
    if parts == 1 {
        launch(0, [rows, 1, 1], &logits, &ids);
    } else {
        // Each part's k best, as (value bits, id) pairs.
        let candidates = empty_like(&logits, [rows * parts, 2 * k], DType::F32);
        launch(1, [rows, parts, 1], &logits, &candidates);
        launch(2, [rows, 1, 1], &candidates, &ids);
    }
    if out_dtype == IntDType::I32 {
        ids
    } else {
        CubeBackend::int_cast(ids, out_dtype)
    }
}

/// Runs the WGSL kernel and the reference op on `device` (wgpu) over logits full of ties,
/// and compares both with a sort on the host. The shapes are the real vocabulary, a width
/// that is no multiple of the workgroup and one narrower than it, with k from 1 to
/// [`KERNEL_MAX_K`]. Async, so that it also runs in the browser.
pub async fn check_kernel(device: &Device) -> Result<KernelCheck> {
    let mut checked = 0;
    let cases = [
        (
            3,
            49_152,
            8,
            tied_logits as fn(usize, usize, u64) -> Vec<f32>,
        ),
        (64, 49_152, 1, tied_logits),
        (5, 1_000, 32, tied_logits),
        (7, 100, 2, tied_logits),
        (2, 49_152, 8, rising_logits),
    ];
    for (rows, vocab, k, logits_of) in cases {
        let host = logits_of(rows, vocab, (rows * vocab + k) as u64);
        let logits = Tensor::<2>::from_data(TensorData::new(host.clone(), [rows, vocab]), device);
        let want = sorted_top_k(&host, vocab, k);
        let kernel = TokenIds::new(kernel_top_k_ids(logits.clone(), k))
            .read()
            .await?;
        let reference = TokenIds::new(reference_top_k_ids(logits, k)).read().await?;
        for (name, got) in [("kernel", &kernel), ("reference", &reference)] {
            if let Some(row) = (0..rows).find(|r| got[r * k..][..k] != want[r * k..][..k]) {
                return Ok(KernelCheck {
                    rows: checked,
                    mismatch: Some(format!(
                        "top-k {name} differs from a host sort at row {row} of {rows}×{vocab}, \
                         k={k}: \
                         {:?} vs {:?}",
                        &got[row * k..][..k],
                        &want[row * k..][..k]
                    )),
                });
            }
        }
        checked += rows;
    }
    // Rows without a number: the kernel's NO_ID, which reads back as the NaN error.
    let nan = Tensor::<2>::from_data(TensorData::new(vec![f32::NAN; 200], [2, 100]), device);
    match TokenIds::new(kernel_top_k_ids(nan, 4)).read().await {
        Err(Error::NonFiniteLogits) => checked += 2,
        other => {
            return Ok(KernelCheck {
                rows: checked,
                mismatch: Some(format!(
                    "top-k kernel over NaN logits read back {other:?}, not the NaN error"
                )),
            });
        }
    }
    Ok(KernelCheck {
        rows: checked,
        mismatch: None,
    })
}

/// Logits with many exact ties (8 levels) and some `-inf`: where two top-k
/// implementations most easily differ.
fn tied_logits(rows: usize, vocab: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..rows * vocab)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            match (state >> 33) % 64 {
                0 => f32::NEG_INFINITY,
                r => (r % 8) as f32 * 0.5 - 2.0,
            }
        })
        .collect()
}

/// Distinct logits that grow along each row, so the best are the last ids: in the last
/// part of a row the kernel splits.
fn rising_logits(rows: usize, vocab: usize, _seed: u64) -> Vec<f32> {
    (0..rows * vocab)
        .map(|i| (i % vocab) as f32 * 1e-3)
        .collect()
}

/// Each row's numbers sorted by value descending, then id ascending; the first `k` ids,
/// then [`NO_ID`] where a row has fewer numbers: the definition the kernel and
/// [`host_top_k`] are held to.
fn sorted_top_k(logits: &[f32], vocab: usize, k: usize) -> Vec<u32> {
    logits
        .chunks(vocab)
        .flat_map(|row| {
            let mut ids: Vec<u32> = (0..vocab as u32)
                .filter(|&i| !row[i as usize].is_nan())
                .collect();
            ids.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            ids.into_iter().chain(std::iter::repeat(NO_ID)).take(k)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row of NaN logits (activations that overflowed) has no token: the CPU's ids read
    /// back as the NaN error, as the kernel's do (its check holds it to that), not as an id.
    #[test]
    fn nan_logits_read_back_as_an_error_on_the_cpu() {
        let device = Device::flex();
        let mut row = vec![f32::NAN; 100];
        row[7] = 1.0;
        let logits = Tensor::<2>::from_data(TensorData::new(row, [1, 100]), &device);
        let read = |k| burn::tensor::read_sync(TokenIds::new(top_k_ids(logits.clone(), k)).read());
        assert_eq!(read(1).expect("one number"), [7]);
        assert!(matches!(read(2), Err(Error::NonFiniteLogits)));
    }

    #[test]
    fn the_host_pass_equals_a_full_sort() {
        let vocab = 50;
        let mut special = vec![0.5f32; vocab];
        special[3] = f32::NAN;
        special[7] = -0.0;
        special[9] = 0.0;
        special[11] = f32::INFINITY;
        special[12] = f32::NEG_INFINITY;
        let rows = [
            tied_logits(4, vocab, 7),
            rising_logits(2, vocab, 0),
            special,
            // Two numbers among NaNs: k past them ends in NO_ID.
            (0..vocab)
                .map(|i| [1.0, 2.0].get(i / 20).copied().unwrap_or(f32::NAN))
                .collect(),
        ]
        .concat();
        for k in [1, 3, 8, vocab] {
            assert_eq!(
                host_top_k(&rows, vocab, k),
                sorted_top_k(&rows, vocab, k),
                "k {k}"
            );
        }
    }
}
