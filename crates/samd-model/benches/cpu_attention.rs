//! The CPU's tree attention ([`samd_model::cpu_attention`]) at SmolLM2's heads (9 query
//! heads over 3 key/value heads of 64 columns), for one layer, by nodes and context.
//!
//! A verify step on the CPU runs it once per layer; each node walks every committed key
//! and its ancestors'. Run: `cargo bench -p samd-model --bench cpu_attention`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use samd_model::cpu_attention::{AttentionShape, tree_attention};
use samd_model::kernels::Heads;

const HEADS: Heads = Heads {
    n_heads: 9,
    n_kv_heads: 3,
    head_dim: 64,
};

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) / 1001.0)
        .collect()
}

fn cpu_attention(c: &mut Criterion) {
    let hd = HEADS.head_dim;
    let mut group = c.benchmark_group("tree attention, one layer");
    group.measurement_time(Duration::from_secs(3));
    for past in [256usize, 1024] {
        for n in [1usize, 4, 16] {
            let max_seq = past + n;
            let row_width = HEADS.q_dim() + 2 * HEADS.kv_dim();
            let queries = values(n * row_width, 1);
            let rope = values(n * 2 * hd, 2);
            let cache = values(2 * HEADS.n_kv_heads * max_seq * hd, 3);
            // A chain: node i sees nodes 0..=i.
            let ancestry: Vec<i32> = (0..n)
                .flat_map(|i| {
                    let row: Vec<i32> = std::iter::once(i as i32 + 1)
                        .chain(0..=i as i32)
                        .chain(std::iter::repeat_n(0, n - 1 - i))
                        .collect();
                    row
                })
                .collect();
            let shape = AttentionShape {
                heads: HEADS,
                n,
                row_width,
                max_seq,
                past,
            };
            group.throughput(Throughput::Elements((n * (past + n)) as u64));
            group.bench_function(BenchmarkId::new(format!("past {past}"), n), |b| {
                b.iter(|| tree_attention(&queries, &rope, &cache, &ancestry, shape))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, cpu_attention);
criterion_main!(benches);
