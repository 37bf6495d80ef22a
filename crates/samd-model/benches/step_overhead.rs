//! The host-side cost of a verify step, apart from the arithmetic.
//!
//! A decode step of a small model on a GPU is bound by what the host spends per kernel
//! launch (burn's op recording, cubecl's launch, wgpu's validation and
//! encoding), not by the GPU. Here the model is tiny (2 layers, 32 wide), so a step's
//! time is almost all that host cost: run on lavapipe or a real GPU, it compares our WGSL
//! kernels (`BlockOps::Kernels`, few launches) with burn's ops (`BlockOps::Reference`)
//! per step. `samd profile --device wgpu` counts the launches of the real model.
//!
//! Needs a wgpu adapter (Vulkan; lavapipe without a GPU, with `XDG_RUNTIME_DIR` set).
//! Run: `cargo bench -p samd-model --bench step_overhead`.

use std::time::Duration;

use burn::tensor::read_sync;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use samd_model::{AncestorMask, BlockOps, Llama, LlamaConfig};

#[path = "../tests/common/mod.rs"]
mod common;

fn step_overhead(c: &mut Criterion) {
    let Some(device) = common::wgpu_device() else {
        return;
    };
    let model = Llama::random(LlamaConfig::tiny(), 1, true, &device).expect("tiny model");
    let mut group = c.benchmark_group("verify_step_tiny_model_wgpu");
    group.measurement_time(Duration::from_secs(5));
    for ops in [BlockOps::Kernels, BlockOps::Reference] {
        let model = model.clone().with_block_ops(ops);
        for nodes in [1usize, 16] {
            let mut cache = model.new_cache(64);
            let context: Vec<u32> = (0..32).collect();
            let positions: Vec<u32> = (0..32).collect();
            model
                .forward(&mut cache, &context, &positions, &AncestorMask::causal(32))
                .expect("prefill");
            cache.compact(&(0..32).collect::<Vec<_>>()).expect("commit");
            let tokens: Vec<u32> = (0..nodes as u32).collect();
            let positions: Vec<u32> = (0..nodes as u32).map(|i| 32 + i).collect();
            let mask = AncestorMask::causal(nodes);
            group.bench_function(BenchmarkId::new(format!("{ops:?}"), nodes), |b| {
                b.iter(|| {
                    let logits = model
                        .forward(&mut cache, &tokens, &positions, &mask)
                        .expect("step");
                    let ids = read_sync(logits.top_k_ids(8).read()).expect("ids");
                    cache.compact(&[]).expect("drop the step");
                    ids
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, step_overhead);
criterion_main!(benches);
