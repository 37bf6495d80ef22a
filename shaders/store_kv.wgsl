// Writes the new nodes' keys, with RoPE applied, and values into the KV cache, in place.
//
// The projection's output row of node i holds q | k | v | … side by side; this copies
// k (rotated) and v into cache slots start + i. As burn ops that is RoPE, two transposes
// and two slice assignments; here it is one launch, one lane per (node, kv column).
//
// RoPE is interleaved (ggml's "normal" mode): pairs (2i, 2i+1) of each head rotate by the
// node's angle, r[c] = k[c]·cos[c] + k[c^1]·sin[c], with sin signed per pair (−, +).
//
// Filled in by samd-model's kernels.rs: q_dim, kv_dim, head_dim, qkv_width and max_seq.

@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;   // [n, QKV_WIDTH]
@group(0) @binding(1) var<storage, read_write> rope: array<f32>;  // [n, 2 * HEAD_DIM]: cos | sin
@group(0) @binding(2) var<storage, read_write> cache: array<f32>; // [2, KV_HEADS, MAX_SEQ, HEAD_DIM]
// x: first slot written; y: nodes.
@group(0) @binding(3) var<uniform> info: vec4<u32>;

const Q_DIM: u32 = {{ q_dim }}u;
const KV_DIM: u32 = {{ kv_dim }}u;
const HEAD_DIM: u32 = {{ head_dim }}u;
const QKV_WIDTH: u32 = {{ qkv_width }}u;
const MAX_SEQ: u32 = {{ max_seq }}u;
// Where the values start in the cache: after every key.
const V_OFFSET: u32 = KV_DIM * MAX_SEQ;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    // column: kv_head * HEAD_DIM + c
    let column = id.x;
    let node = id.y;
    if column >= KV_DIM || node >= info.y {
        return;
    }
    let head = column / HEAD_DIM;
    let c = column % HEAD_DIM;
    let row = node * QKV_WIDTH + Q_DIM;
    let angles = node * 2u * HEAD_DIM;
    let slot = (head * MAX_SEQ + info.x + node) * HEAD_DIM + c;
    cache[slot] = qkv[row + column] * rope[angles + c]
        + qkv[row + (column ^ 1u)] * rope[angles + HEAD_DIM + c];
    cache[V_OFFSET + slot] = qkv[row + KV_DIM + column];
}
