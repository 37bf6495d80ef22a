//! Checks our WGSL kernels against the reference burn ops on a device, and tree steps
//! against plain decoding, bit for bit, on any device.
//!
//! Native runs use Vulkan through naga; the browser compiles the same WGSL with its own
//! compiler (Chrome's Tint), which is stricter in places naga is not. So the checks are
//! async and live in the library: the native tests run them on lavapipe, and the web
//! engine exposes them (`Engine.checkKernels()`) for the browser tests and for a user's
//! GPU.

use burn::tensor::Device;

use crate::config::LlamaConfig;
use crate::error::Result;
use crate::kv_cache::KvCache;
use crate::layer_ops::BlockOps;
use crate::llama::{AncestorMask, Llama, LogitRows};
use crate::{cpu_attention, cpu_matmul, sampler, top_k};

/// Max abs logit difference allowed between the kernels and the reference ops on one
/// device: both are f32 and differ only in summation order. On lavapipe the f32 scenario
/// came to 9.9e-5 with the per-node attention walking keys by cache slot and 1.07e-4
/// walking them by position (the same sums, added in another order), so 1e-4 left no
/// room for orders; a wrong key or weight moves logits by far more.
pub const LOGIT_TOLERANCE: f32 = 2e-4;

/// What a kernel check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelCheck {
    /// Rows compared (top-k rows, and logit rows of the block check), over all cases.
    pub rows: usize,
    /// The first disagreement, if any: which kernel, case and row.
    pub mismatch: Option<String>,
}

impl KernelCheck {
    /// Whether every kernel agreed with its reference on every row.
    pub fn passed(&self) -> bool {
        self.mismatch.is_none()
    }
}

impl std::fmt::Display for KernelCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.mismatch {
            None => write!(f, "{} rows agree", self.rows),
            Some(what) => write!(f, "{what}"),
        }
    }
}

/// Every kernel on `device` (wgpu): the top-k kernel against a host sort
/// ([`top_k::check_kernel`]), the sampling kernels against the reference ops
/// ([`sampler::check_kernel`]), then the block kernels against the reference ops and
/// tree steps against plain decoding, bit for bit ([`check_block_kernels`]). Stops at
/// the first disagreement.
pub async fn check_kernels(device: &Device) -> Result<KernelCheck> {
    let top_k = top_k::check_kernel(device).await?;
    if !top_k.passed() {
        return Ok(top_k);
    }
    let sampling = sampler::check_kernel(device).await?;
    let rows = top_k.rows + sampling.rows;
    if !sampling.passed() {
        return Ok(KernelCheck { rows, ..sampling });
    }
    let block = check_block_kernels(device).await?;
    Ok(KernelCheck {
        rows: rows + block.rows,
        mismatch: block.mismatch,
    })
}

/// The block kernels on `device` (wgpu), on each of [`check_models`]: against the
/// reference ops over [`verify_scenario`] (their logits within [`LOGIT_TOLERANCE`], their
/// top-8 ids exactly; with blocks, the reference reads them widened by the dequantising
/// kernel), then tree steps against plain decoding ([`compare_tree_with_plain_decoding`]).
pub async fn check_block_kernels(device: &Device) -> Result<KernelCheck> {
    check_each_model(device, &[Comparison::BlockOps, Comparison::TreeSteps]).await
}

/// Tree steps against plain decoding, bit for bit ([`compare_tree_with_plain_decoding`]),
/// on each of [`check_models`] on any device: what the CPU's verify steps are checked by,
/// where there are no kernels to compare with a reference.
pub async fn check_tree_steps(device: &Device) -> Result<KernelCheck> {
    check_each_model(device, &[Comparison::TreeSteps]).await
}

/// The CPU backend's own code: its products over quantised blocks against their
/// reference ([`cpu_matmul::check_block_products`]), its attention in vectors against
/// the portable code ([`cpu_attention::check_vectors`]), then tree steps against plain
/// decoding, bit for bit ([`check_tree_steps`]). Stops at the first disagreement.
pub async fn check_cpu(device: &Device) -> Result<KernelCheck> {
    let mut rows = 0;
    for check in [
        cpu_matmul::check_block_products(),
        cpu_attention::check_vectors(),
    ] {
        rows += check.rows;
        if !check.passed() {
            return Ok(KernelCheck { rows, ..check });
        }
    }
    let steps = check_tree_steps(device).await?;
    Ok(KernelCheck {
        rows: rows + steps.rows,
        ..steps
    })
}

/// What [`check_each_model`] compares.
#[derive(Debug, Clone, Copy)]
enum Comparison {
    /// [`compare_block_ops`].
    BlockOps,
    /// [`compare_tree_with_plain_decoding`].
    TreeSteps,
}

/// The `comparisons` on each of [`check_models`] in turn, up to the first mismatch.
async fn check_each_model(device: &Device, comparisons: &[Comparison]) -> Result<KernelCheck> {
    let mut rows = 0;
    for (weights, model) in check_models(device)? {
        for comparison in comparisons {
            let check = match comparison {
                Comparison::BlockOps => compare_block_ops(&model).await?,
                Comparison::TreeSteps => compare_tree_with_plain_decoding(&model).await?,
            };
            rows += check.rows;
            if let Some(what) = check.mismatch {
                return Ok(KernelCheck {
                    rows,
                    mismatch: Some(format!("{weights} weights: {what}")),
                });
            }
        }
    }
    Ok(KernelCheck {
        rows,
        mismatch: None,
    })
}

/// Three small random models on `device`: with f32 weights and SmolLM2's head shape
/// (head_dim 64, three query heads per key/value head); quantised as SmolLM2's file is,
/// with Qwen2's q/k/v biases, NEOX RoPE (its q/k rows reordered at load) and
/// Qwen2.5-0.5B's grouping (seven query heads per key/value head); and in f32 with
/// Qwen3's head norms and heads wider than `d_model / heads`. So both kinds of fused
/// projection kernel, the unfused path, and groups of an odd size are checked.
fn check_models(device: &Device) -> Result<[(&'static str, Llama); 3]> {
    let config = LlamaConfig {
        n_layers: 2,
        // Wide enough that every skinny product runs its unrolled loop and its tail.
        d_model: 384,
        d_ffn: 256,
        n_heads: 6,
        n_kv_heads: 2,
        head_dim: 64,
        // Not a multiple of the skinny matmul's columns per workgroup: a partial last one.
        vocab_size: 99,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        context_len: 256,
        rope_freq_factors: Vec::new(),
        rope_style: crate::RopeStyle::Interleaved,
        qkv_bias: false,
        qk_norm: false,
    };
    Ok([
        ("f32", Llama::random(config.clone(), 7, true, device)?),
        (
            "f32, head-normed",
            Llama::random(
                LlamaConfig {
                    rope_style: crate::RopeStyle::Neox,
                    qk_norm: true,
                    d_model: 128,
                    n_heads: 4,
                    ..config.clone()
                },
                7,
                true,
                device,
            )?,
        ),
        (
            "quantised, biased",
            Llama::random_quantized(
                LlamaConfig {
                    rope_style: crate::RopeStyle::Neox,
                    qkv_bias: true,
                    d_model: 448,
                    n_heads: 7,
                    n_kv_heads: 1,
                    ..config
                },
                7,
                true,
                device,
            )?,
        ),
    ])
}

/// [`verify_scenario`] on `model` with the kernels and with the reference ops.
async fn compare_block_ops(model: &Llama) -> Result<KernelCheck> {
    let vocab = model.config().vocab_size;
    let (kernel_logits, kernel_ids) =
        verify_scenario(&model.clone().with_block_ops(BlockOps::Kernels)).await?;
    let (reference_logits, reference_ids) =
        verify_scenario(&model.clone().with_block_ops(BlockOps::Reference)).await?;
    let rows = reference_logits.len() / vocab;
    let worst = kernel_logits
        .iter()
        .zip(&reference_logits)
        .enumerate()
        .map(|(i, (a, b))| (i / vocab, (a - b).abs()))
        .fold(
            (0, 0.0f32),
            |best, (row, diff)| {
                if diff > best.1 { (row, diff) } else { best }
            },
        );
    let mismatch = if kernel_logits.iter().any(|x| x.is_nan()) {
        Some("block kernels gave NaN logits".to_string())
    } else if kernel_logits.len() != reference_logits.len() {
        Some(format!(
            "block kernels gave {} logits, the reference {}",
            kernel_logits.len(),
            reference_logits.len()
        ))
    } else if worst.1 > LOGIT_TOLERANCE {
        Some(format!(
            "block kernels differ from the reference ops by {:e} at logit row {} of {rows}",
            worst.1, worst.0
        ))
    } else if kernel_ids != reference_ids {
        Some("block kernels' top-8 ids differ from the reference ops'".to_string())
    } else {
        None
    };
    Ok(KernelCheck { rows, mismatch })
}

/// The nodes of verify steps of 3, 12 and 40 nodes (one tile of rows, then tiles of 32,
/// the staged kernel's over blocks), each cut to [`Llama::max_tree_nodes`] (on the CPU
/// the last is 16), get, bit for bit, the logits plain decoding gets at the same
/// position, one token per step. This is what keeps speculative decoding's output plain
/// decoding's, near-ties included; on a GPU it also checks that the compiler added up
/// each kernel variant's products alike (fused multiply-adds or not).
pub async fn compare_tree_with_plain_decoding(model: &Llama) -> Result<KernelCheck> {
    let vocab = model.config().vocab_size;
    let mut committed = model.new_cache(128);
    let prompt: Vec<u32> = (0..20).map(|i| (i * 7 + 3) % vocab as u32).collect();
    let positions: Vec<u32> = (0..20).collect();
    let mask = AncestorMask::causal(prompt.len());
    model.forward_rows(&mut committed, &prompt, &positions, &mask, LogitRows::Last)?;
    committed.compact(&(0..prompt.len()).collect::<Vec<_>>())?;
    let past = committed.len() as u32;
    let mut rows = 0;
    for n in [3, 12, 40].map(|n: usize| n.min(model.max_tree_nodes())) {
        // Each node's parent precedes it; the spread gives deep paths and wide fans.
        let parents: Vec<Option<usize>> = (0..n)
            .map(|i| (i > 0).then(|| (i * 2_654_435_761 + n) % i))
            .collect();
        let tokens: Vec<u32> = (0..n).map(|i| ((i * 13 + n) % vocab) as u32).collect();
        let depths = depths(&parents);
        let positions: Vec<u32> = depths.iter().map(|d| past + d).collect();
        let mask = AncestorMask::from_parents(&parents)?;
        let tree = model
            .forward(&mut committed.clone(), &tokens, &positions, &mask)?
            .read()
            .await?;
        // Every node of the small trees; of the large one, the paths to its deepest and
        // its last node (a forward per node checked is what this check costs, and the
        // browser's software WebGPU runs it too).
        let mut checked = vec![n <= SMALL_TREE; n];
        let deepest = (0..n).max_by_key(|&i| depths[i]).unwrap_or(0);
        for mut at in [deepest, n - 1] {
            checked[at] = true;
            while let Some(p) = parents[at] {
                checked[p] = true;
                at = p;
            }
        }
        // Plain decoding's cache after each node checked: its parent's, and its token.
        let mut after: Vec<Option<KvCache>> = Vec::with_capacity(n);
        for i in 0..n {
            if !checked[i] {
                after.push(None);
                continue;
            }
            let mut cache = match parents[i] {
                None => committed.clone(),
                Some(p) => after[p]
                    .clone()
                    .expect("invariant: a checked node's parent is"),
            };
            let one = AncestorMask::causal(1);
            let plain = model.forward(&mut cache, &tokens[i..=i], &positions[i..=i], &one)?;
            let plain = plain.read().await?;
            cache.compact(&[0])?;
            after.push(Some(cache));
            rows += 1;
            let node = &tree[i * vocab..(i + 1) * vocab];
            if node
                .iter()
                .zip(&plain)
                .any(|(a, b)| a.to_bits() != b.to_bits())
            {
                let off = node
                    .iter()
                    .zip(&plain)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                return Ok(KernelCheck {
                    rows,
                    mismatch: Some(format!(
                        "node {i} (depth {}) of a {n}-node tree: logits differ from plain \
                         decoding's by up to {off:e}, not bit for bit",
                        depths[i]
                    )),
                });
            }
        }
    }
    Ok(KernelCheck {
        rows,
        mismatch: None,
    })
}

/// Each node's depth below the root; a parent precedes its children.
fn depths(parents: &[Option<usize>]) -> Vec<u32> {
    let mut depths: Vec<u32> = Vec::with_capacity(parents.len());
    for parent in parents {
        let depth = parent.map_or(0, |p| depths[p] + 1);
        depths.push(depth);
    }
    depths
}

/// Trees up to this many nodes have every node checked against plain decoding.
const SMALL_TREE: usize = 12;

/// One forward of [`verify_scenario`]: tokens, each node's parent, the nodes accepted.
type Step = (Vec<u32>, Vec<Option<usize>>, Vec<usize>);

/// Tokens of the scenario's prefill: more rows than the skinny matmul takes over f32
/// weights (128), so with those burn's matmul and the norm and K/V store kernels run,
/// and with blocks the staged skinny matmul over five tiles of rows; and with both the
/// tiled attention, its last tiles of nodes and keys partial.
const PREFILL: u32 = 130;

/// Nodes of the scenario's chain step: the skinny matmul takes them in tiles of 32 rows,
/// the second one partial, and reduces each tile 8 rows at a time.
const CHAIN: u32 = 40;

/// What a decode loop does to a model, in miniature: a 130-token prefill (the last
/// position's logits only, [`LogitRows::Last`], as the engine prefills without Token
/// Recycling), a 40-token chain of which 12 are accepted, a 6-node tree step whose
/// accepted path is not a prefix (so compaction moves K/V), then one more token. Returns
/// every logit and the top-8 ids of every forward, in order.
pub async fn verify_scenario(model: &Llama) -> Result<(Vec<f32>, Vec<u32>)> {
    let vocab = model.config().vocab_size as u32;
    let mut cache: KvCache = model.new_cache(192);
    let mut logits = Vec::new();
    let mut ids = Vec::new();
    let chain = |n: u32| (0..n as usize).map(|i| i.checked_sub(1)).collect();
    let steps: [Step; 4] = [
        (
            (0..PREFILL).map(|i| (i * 7 + 3) % 97).collect(),
            chain(PREFILL),
            (0..PREFILL as usize).collect(),
        ),
        (
            (0..CHAIN).map(|i| (i * 5 + 1) % 89).collect(),
            chain(CHAIN),
            (0..12).collect(),
        ),
        (
            vec![8, 9, 7, 9, 3, 2],
            vec![None, Some(0), Some(0), Some(2), Some(3), Some(1)],
            vec![0, 2, 3],
        ),
        (vec![62], vec![None], vec![0]),
    ];
    for (tokens, parents, accepted) in steps {
        let tokens: Vec<u32> = tokens.iter().map(|t| t % vocab).collect();
        let parents = &parents[..];
        let past = cache.len() as u32;
        let mask = AncestorMask::from_parents(parents)?;
        let positions: Vec<u32> = depths(parents).iter().map(|d| past + d).collect();
        let rows = if past == 0 {
            LogitRows::Last
        } else {
            LogitRows::All
        };
        let out = model.forward_rows(&mut cache, &tokens, &positions, &mask, rows)?;
        ids.extend(out.top_k_ids(8).read().await?);
        logits.extend(out.read().await?);
        cache.compact(&accepted)?;
    }
    Ok((logits, ids))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::read_sync;

    #[test]
    fn cpu_tree_steps_get_plain_decodings_logits_bit_for_bit() {
        let check = read_sync(check_tree_steps(&Device::flex())).expect("the check runs");
        assert!(check.passed(), "{check}");
        // Both models: every node of trees of 3 and 12 nodes, and two paths of 16.
        assert!(check.rows > 2 * (3 + 12), "{} rows", check.rows);
    }

    #[test]
    fn the_cpu_check_adds_the_vector_codes_checks_to_the_tree_steps() {
        let device = Device::flex();
        let steps = read_sync(check_tree_steps(&device)).expect("the check runs");
        let all = read_sync(check_cpu(&device)).expect("the check runs");
        assert!(all.passed(), "{all}");
        let vectors = crate::cpu_matmul::check_block_products().rows
            + crate::cpu_attention::check_vectors().rows;
        assert_eq!(all.rows, steps.rows + vectors);
    }
}
