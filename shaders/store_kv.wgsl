// Writes the new nodes' keys, with RoPE applied, and values into the KV cache, in place.
//
// The projection's output row of node i holds q | k | v | … side by side; this copies
// k (rotated) and v into cache slots slots[0] + i. As burn ops that is RoPE, two transposes
// and two slice assignments; here it is one launch, one lane per (node, kv column).
// kv_store_common.wgsl comes first, with the layout and RoPE.
//
// Filled in by samd-model's kernels.rs: qkv_width.

@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;   // [n, QKV_WIDTH]
@group(0) @binding(1) var<storage, read_write> rope: array<f32>;  // [n, 2 * HEAD_DIM]: cos | sin
@group(0) @binding(2) var<storage, read_write> cache: array<f32>; // [2, KV_HEADS, MAX_SEQ, HEAD_DIM]
// The first slot written (the committed keys), then the nodes: a buffer, not a uniform,
// so that a replayed step graph reads each step's own (step_graph.rs).
@group(0) @binding(3) var<storage, read_write> slots: array<u32>;

const QKV_WIDTH: u32 = {{ qkv_width }}u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    // column: kv_head * HEAD_DIM + c
    let column = id.x;
    let node = id.y;
    if column >= KV_DIM || node >= slots[1] {
        return;
    }
    let row = node * QKV_WIDTH + Q_DIM;
    let slot = slots[0] + node;
    store_key(node, column, slot, qkv[row + column], qkv[row + (column ^ 1u)]);
    store_value(column, slot, qkv[row + KV_DIM + column]);
}
