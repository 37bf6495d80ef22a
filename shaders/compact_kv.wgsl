// Commits a verify step's accepted path in the KV cache, in place: the keys and values of
// the path's nodes, written past the committed slots by the step, move to the slots right
// after them. As burn ops that is a gather into a new buffer and a slice assignment back,
// two launches a layer; here it is one.
//
// Path node moves[2 + i] sits in slot start + moves[2 + i] and goes to slot start + i,
// for i in 0 .. moves[1], start = moves[0]. A lane moves one column of keys or values for
// every node, in path order. In place is safe so: the path's node indices ascend (a
// node's parent precedes it), so node i of the path has index at least i, and its source
// slot is never a destination of an earlier node of the path, nor its destination the
// source of a later one.
//
// Filled in by samd-model's kernels.rs: kv_dim, head_dim and max_seq.

@group(0) @binding(0) var<storage, read_write> cache: array<f32>; // [2, KV_HEADS, MAX_SEQ, HEAD_DIM]
@group(0) @binding(1) var<storage, read_write> moves: array<u32>; // start, count, the path

const KV_DIM: u32 = {{ kv_dim }}u;
const HEAD_DIM: u32 = {{ head_dim }}u;
const MAX_SEQ: u32 = {{ max_seq }}u;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    // column: kv_head * HEAD_DIM + c; id.y: 0 for keys, 1 for values.
    let column = id.x;
    if column >= KV_DIM {
        return;
    }
    let base = id.y * KV_DIM * MAX_SEQ + (column / HEAD_DIM) * MAX_SEQ * HEAD_DIM
        + column % HEAD_DIM;
    let start = moves[0];
    let count = moves[1];
    for (var i = 0u; i < count; i++) {
        let src_slot = start + moves[2u + i];
        let dst_slot = start + i;
        if src_slot != dst_slot {
            cache[base + dst_slot * HEAD_DIM] = cache[base + src_slot * HEAD_DIM];
        }
    }
}
