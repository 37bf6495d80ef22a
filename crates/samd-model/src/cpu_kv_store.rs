//! The new nodes' keys (RoPE applied) and values written into a layer's cache on the CPU,
//! in place: one pass over the step's rows of `q | k | v`.
//!
//! In burn ops it was the keys' and values' slices, RoPE's eight operations, two
//! transposes and two slice assignments: in wasm 7.6% of a decode step (V8's profile,
//! `tests/browser/profile-cpu.mjs`). A key is rotated as the attention rotates a query
//! ([`rotated`]), `x[d]·cos[d] + x[d ^ 1]·sin[d]`, the same operations in the same order
//! as burn's `x * cos + swapped * sin`, so the cache holds the same bits as before.

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Flex, backend_extension};

use crate::cpu_attention::rotated;
use crate::cpu_matmul::f32s;
use crate::kernels::Heads;

/// Where a step's keys and values come from and go.
#[derive(Debug, Clone, Copy)]
pub struct StoreShape {
    /// The attention heads.
    pub heads: Heads,
    /// Columns of a row of `q | k | v`.
    pub row_width: usize,
    /// Slots per head in the cache.
    pub max_seq: usize,
    /// The first new node's slot: the committed positions.
    pub past: usize,
}

/// Writes the keys and values of `qkv` (`[n, row_width]`, `q | k | v`) into `cache`
/// (`[2, n_kv_heads, max_seq, head_dim]`, keys then values) at slots `past ..`, each
/// key rotated by its node's `rope` row (`cos | signed sin`, `[n, 2 * head_dim]`).
pub fn store_kv(cache: &mut [f32], qkv: &[f32], rope: &[f32], shape: StoreShape) {
    let StoreShape {
        heads,
        row_width,
        max_seq,
        past,
    } = shape;
    let (hd, kv_heads) = (heads.head_dim, heads.n_kv_heads);
    let n = qkv.len() / row_width;
    assert!(
        qkv.len() == n * row_width
            && row_width >= heads.q_dim() + 2 * heads.kv_dim()
            && rope.len() == n * 2 * hd
            && cache.len() == 2 * kv_heads * max_seq * hd
            && past + n <= max_seq,
        "invariant: callers pass whole tensors, and the cache has room"
    );
    for (i, (row, angles)) in qkv
        .chunks_exact(row_width)
        .zip(rope.chunks_exact(2 * hd))
        .enumerate()
    {
        for h in 0..kv_heads {
            let key = &row[heads.q_dim() + h * hd..][..hd];
            let value = &row[heads.q_dim() + heads.kv_dim() + h * hd..][..hd];
            let slot = |kv: usize| ((kv * kv_heads + h) * max_seq + past + i) * hd;
            cache[slot(0)..][..hd].copy_from_slice(&rotated(key, angles));
            cache[slot(1)..][..hd].copy_from_slice(value);
        }
    }
}

/// [`store_kv`] as an operation of burn's CPU backend.
#[backend_extension(Flex)]
pub trait CpuKvStore: Backend {
    /// `cache` with the step's keys and values written at slots `past ..`: `qkv` is
    /// `[n, q | k | v]` and `rope` `[n, 2 * head_dim]`. In place when the cache is held
    /// once (the KV cache's layers are).
    fn cpu_store_kv(
        cache: FloatTensor<Self>,
        qkv: &FloatTensor<Self>,
        rope: &FloatTensor<Self>,
        past: usize,
        heads: Heads,
    ) -> FloatTensor<Self>;
}

impl CpuKvStore for Flex {
    fn cpu_store_kv(
        cache: FlexTensor,
        qkv: &FlexTensor,
        rope: &FlexTensor,
        past: usize,
        heads: Heads,
    ) -> FlexTensor {
        let (qkv, rope) = (qkv.to_contiguous(), rope.to_contiguous());
        let mut cache = if cache.is_contiguous() && cache.layout().start_offset() == 0 {
            cache
        } else {
            cache.to_contiguous()
        };
        let shape = StoreShape {
            heads,
            row_width: qkv.layout().shape()[1],
            max_seq: cache.layout().shape()[2],
            past,
        };
        store_kv(cache.storage_mut::<f32>(), f32s(&qkv), f32s(&rope), shape);
        cache
    }
}
