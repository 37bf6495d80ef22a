//! The host-side cost of a verify step, apart from the arithmetic.
//!
//! A decode step of a small model on a GPU is bound by what the host spends per kernel
//! launch (burn's op recording, cubecl's launch, wgpu's validation and
//! encoding), not by the GPU. Here the model is tiny in width (32) but has SmolLM2's 30
//! layers, so a step makes as many launches as the real model's and its time is almost
//! all that host cost. Run on lavapipe or a real GPU, it compares per step our WGSL
//! kernels replayed from a captured graph (`replayed`, [`samd_model::step_graph`]), the
//! same kernels launched one by one (`launched`), and burn's ops (`burn_ops`). `samd
//! profile --device wgpu` counts the launches of the real model.
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
    let config = LlamaConfig {
        n_layers: 30,
        ..LlamaConfig::tiny()
    };
    let model = Llama::random(config, 1, true, &device).expect("tiny model");
    let mut group = c.benchmark_group("verify_step_narrow_30_layers_wgpu");
    group.measurement_time(Duration::from_secs(5));
    let runs = [
        ("replayed", BlockOps::Kernels, true),
        ("launched", BlockOps::Kernels, false),
        ("burn_ops", BlockOps::Reference, false),
    ];
    for (name, ops, graphs) in runs {
        let mut model = model.clone().with_block_ops(ops);
        model.set_step_graphs(graphs);
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
            group.bench_function(BenchmarkId::new(name, nodes), |b| {
                b.iter(|| {
                    let ids = model
                        .forward_ids(&mut cache, &tokens, &positions, &mask, 8, None)
                        .expect("step");
                    let ids = read_sync(ids.read()).expect("ids");
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
