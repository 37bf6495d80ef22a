//! The CPU's products of a few rows, over f32 weights and over the file's quantised
//! blocks, on the real model's matrices.
//!
//! A one-node step on the CPU is bound by these products' reads of the weights; the
//! blocks are a sixth of the bytes (Q4_1) and a quarter (Q8_0), but each must be widened
//! to f32 before it is used. Needs `models/SmolLM2-135M-Instruct.Q4_1.gguf`
//! (`scripts/fetch-model.sh`), or the file `SAMD_BENCH_MODEL` names (a Q4_K_M file's down
//! projections are Q6_K, held as Q8_16). Run: `cargo bench -p samd-model --bench
//! few_rows`.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use samd_model::GgufFile;
use samd_model::block_rows::BlockRows;
use samd_model::cpu_matmul::{few_rows_matmul, few_rows_matmul_blocks};

/// The matrices timed: a block's widest and deepest projections, and the tied head.
const TENSORS: [&str; 3] = [
    "blk.0.ffn_up.weight",
    "blk.0.ffn_down.weight",
    "token_embd.weight",
];

fn few_rows(c: &mut Criterion) {
    let path = std::env::var_os("SAMD_BENCH_MODEL").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
        },
        PathBuf::from,
    );
    let Ok(bytes) = std::fs::read(&path) else {
        eprintln!(
            "skipped: no model at {} (scripts/fetch-model.sh)",
            path.display()
        );
        return;
    };
    let file = GgufFile::parse(&bytes).expect("the model parses");
    for name in TENSORS {
        let info = file.tensor(name).expect("the tensor is in the model");
        let (k, n) = (info.dims[0] as usize, info.dims[1] as usize);
        let values = file.tensor_f32(name).expect("the tensor dequantises");
        let raw = file.tensor_bytes(name).expect("the tensor's bytes");
        let blocks = BlockRows::from_gguf(info.dtype, raw, n, k).expect("a kept block type");
        let mut group = c.benchmark_group(format!("{name} ({}, {k}x{n})", info.dtype));
        group.measurement_time(Duration::from_secs(3));
        for m in [1usize, 2, 4, 8, 16] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i % 97) as f32 - 48.0) / 48.0)
                .collect();
            group.throughput(Throughput::Elements((m * k * n) as u64));
            group.bench_function(BenchmarkId::new("f32", m), |b| {
                b.iter(|| few_rows_matmul(&x, m, k, &values, n))
            });
            group.bench_function(BenchmarkId::new("blocks", m), |b| {
                b.iter(|| few_rows_matmul_blocks(&x, m, &blocks))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, few_rows);
criterion_main!(benches);
