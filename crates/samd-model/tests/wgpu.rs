//! The wgpu backend, with our kernels and with the reference ops, must agree with the CPU
//! (flex) backend on a tiny random model.
//!
//! Runs on any Vulkan adapter (see [`common::wgpu_device`]). Without an adapter the tests
//! print why and pass.

mod common;

use burn::tensor::{Device, read_sync};
use common::wgpu_device;
use samd_model::kernel_check::{check_kernels, verify_scenario};
use samd_model::{BlockOps, Llama, LlamaConfig};

/// Max abs logit difference allowed between wgpu and CPU. Both are f32; the kernels sum in
/// different orders (tiled matmul, tree reductions), which on O(1) logits of a 2-layer model
/// stays far below this.
const BACKEND_TOLERANCE: f32 = 1e-4;

fn run(model: &Llama) -> (Vec<f32>, Vec<u32>) {
    read_sync(verify_scenario(model)).expect("scenario runs")
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

/// What the browser tests run on WebGPU: the top-k kernel against a host sort, and the
/// block kernels against the reference ops on SmolLM2's head shape.
#[test]
fn wgsl_kernels_agree_with_the_reference_ops() {
    let Some(gpu) = wgpu_device() else { return };
    let check = read_sync(check_kernels(&gpu)).expect("check ran");
    eprintln!("{check}");
    assert!(check.rows > 0);
    assert!(check.passed(), "{check}");
}
