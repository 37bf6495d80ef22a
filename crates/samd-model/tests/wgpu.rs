//! The wgpu backend, with our kernels and with the reference ops, must agree with the CPU
//! (flex) backend on a tiny random model.
//!
//! Runs on any Vulkan adapter (see [`common::wgpu_device`]). Without an adapter the tests
//! print why and pass.

mod common;

use burn::tensor::{Device, read_sync};
use common::wgpu_device;
use samd_model::{AncestorMask, BlockOps, KvCache, Llama, LlamaConfig};

/// Max abs logit difference allowed between wgpu and CPU. Both are f32; the kernels sum in
/// different orders (tiled matmul, tree reductions), which on O(1) logits of a 2-layer model
/// stays far below this.
const BACKEND_TOLERANCE: f32 = 1e-4;

/// Prefill, then a tree step with compaction of a non-prefix path, then one more token;
/// returns every logit and the top-8 ids of each forward.
fn run(model: &Llama) -> (Vec<f32>, Vec<u32>) {
    let mut cache: KvCache = model.new_cache(32);
    let mut logits = Vec::new();
    let mut ids = Vec::new();
    let mut step = |cache: &mut KvCache, tokens: &[u32], parents: &[Option<usize>]| {
        let past = cache.len() as u32;
        let mask = AncestorMask::from_parents(parents).expect("mask");
        let positions: Vec<u32> = (0..tokens.len())
            .map(|i| {
                let (mut d, mut at) = (0, i);
                while let Some(p) = parents[at] {
                    at = p;
                    d += 1;
                }
                past + d
            })
            .collect();
        let out = model
            .forward(cache, tokens, &positions, &mask)
            .expect("forward");
        ids.extend(read_sync(out.top_k_ids(8).read()).expect("ids"));
        logits.extend(read_sync(out.read()).expect("logits"));
    };
    let prompt = [3, 14, 15, 9, 26, 5, 35];
    let chain: Vec<Option<usize>> = (0..prompt.len()).map(|i| i.checked_sub(1)).collect();
    step(&mut cache, &prompt, &chain);
    cache
        .compact(&(0..prompt.len()).collect::<Vec<_>>())
        .expect("commit");
    let tree = [8, 9, 7, 9, 3, 2];
    let parents = [None, Some(0), Some(0), Some(2), Some(3), Some(1)];
    step(&mut cache, &tree, &parents);
    cache.compact(&[0, 2, 3]).expect("compact");
    step(&mut cache, &[62], &[None]);
    (logits, ids)
}

#[test]
fn wgpu_matches_cpu_on_tiny_random_model() {
    let Some(gpu) = wgpu_device() else { return };
    let config = LlamaConfig::tiny();
    let cpu_model = Llama::random(config.clone(), 5, true, &Device::flex()).expect("cpu model");
    let (cpu_logits, cpu_ids) = run(&cpu_model);
    for ops in [BlockOps::Kernels, BlockOps::Reference] {
        let gpu_model = Llama::random(config.clone(), 5, true, &gpu)
            .expect("gpu model")
            .with_block_ops(ops);
        let (gpu_logits, gpu_ids) = run(&gpu_model);
        let diff = cpu_logits
            .iter()
            .zip(&gpu_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("wgpu ({ops:?}) vs cpu: max abs logit diff {diff:e}");
        assert_eq!(cpu_logits.len(), gpu_logits.len());
        assert!(diff <= BACKEND_TOLERANCE, "{ops:?}: max abs diff {diff}");
        assert_eq!(
            cpu_ids, gpu_ids,
            "{ops:?}: top-8 ids differ between backends"
        );
    }
}

#[test]
fn wgsl_top_k_kernel_equals_the_reference_op_and_a_host_sort() {
    let Some(gpu) = wgpu_device() else { return };
    let check = read_sync(samd_model::top_k::check_kernel(&gpu)).expect("check ran");
    assert!(check.rows > 0);
    assert!(check.passed(), "{check}");
}
