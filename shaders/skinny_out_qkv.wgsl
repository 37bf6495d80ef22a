// skinny_matmul.wgsl's output part for the attention's projection, whose columns are
// q | k | v: the queries go to y ([M, Q_DIM]), and the keys, with RoPE applied, and the
// values go straight into the KV cache at slots info.y + row, so storing them costs no
// launch of its own. It follows skinny_in_normed.wgsl, which holds binding 3.
//
// RoPE is interleaved (ggml's "normal" mode): pairs (2i, 2i+1) of each head rotate by the
// row's angle, r[c] = k[c]·cos[c] + k[c^1]·sin[c], with sin signed per pair (−, +); k[c^1]
// is the mate the core passes in.
//
// Filled in by samd-model's kernels.rs: q_dim, kv_dim, head_dim and max_seq.

@group(0) @binding(4) var<storage, read_write> rope: array<f32>;  // [M, 2 * HEAD_DIM]: cos | sin
@group(0) @binding(5) var<storage, read_write> cache: array<f32>; // [2, KV_HEADS, MAX_SEQ, HEAD_DIM]

const Q_DIM: u32 = {{ q_dim }}u;
const KV_DIM: u32 = {{ kv_dim }}u;
const HEAD_DIM: u32 = {{ head_dim }}u;
const MAX_SEQ: u32 = {{ max_seq }}u;
// Where the values start in the cache: after every key.
const V_OFFSET: u32 = KV_DIM * MAX_SEQ;

fn write_out(row: u32, n: u32, value: f32, mate: f32) {
    if n < Q_DIM {
        y[row * Q_DIM + n] = value;
        return;
    }
    // kv_head * HEAD_DIM + c, in k or in v
    let column = (n - Q_DIM) % KV_DIM;
    let c = column % HEAD_DIM;
    let slot = ((column / HEAD_DIM) * MAX_SEQ + info.y + row) * HEAD_DIM + c;
    if n < Q_DIM + KV_DIM {
        let angles = row * 2u * HEAD_DIM;
        cache[slot] = value * rope[angles + c] + mate * rope[angles + HEAD_DIM + c];
    } else {
        cache[V_OFFSET + slot] = value;
    }
}
