// Where keys and values go in the KV cache, and RoPE on a key: shared by store_kv.wgsl (a
// prefill's store) and skinny_out_qkv.wgsl (a verify step's, folded into the projection),
// which each declare the `rope` and `cache` bindings these functions read and write.
//
// RoPE is interleaved (ggml's "normal" mode): pairs (2i, 2i+1) of each head rotate by the
// node's angle, r[c] = k[c]·cos[c] + k[c^1]·sin[c], with sin signed per pair (−, +).
//
// Filled in by samd-model's kernels.rs: q_dim, kv_dim, head_dim and max_seq.

const Q_DIM: u32 = {{ q_dim }}u;
const KV_DIM: u32 = {{ kv_dim }}u;
const HEAD_DIM: u32 = {{ head_dim }}u;
const MAX_SEQ: u32 = {{ max_seq }}u;
// Where the values start in the cache: after every key.
const V_OFFSET: u32 = KV_DIM * MAX_SEQ;

// The cache index of a key's `column` (kv_head * HEAD_DIM + c) at position `slot`; the
// value's is V_OFFSET further.
fn cache_index(column: u32, slot: u32) -> u32 {
    return ((column / HEAD_DIM) * MAX_SEQ + slot) * HEAD_DIM + column % HEAD_DIM;
}

// Stores node `node`'s key element `k` (its pair's mate `mate`), rotated by the node's
// angles, and value element `v`, at `column` of cache position `slot`.
fn store_key(node: u32, column: u32, slot: u32, k: f32, mate: f32) {
    let c = column % HEAD_DIM;
    let angles = node * 2u * HEAD_DIM;
    cache[cache_index(column, slot)] = k * rope[angles + c] + mate * rope[angles + HEAD_DIM + c];
}

fn store_value(column: u32, slot: u32, v: f32) {
    cache[V_OFFSET + cache_index(column, slot)] = v;
}
