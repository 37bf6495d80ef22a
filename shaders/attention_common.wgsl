// What both tree attention kernels bind and share; kernels.rs puts it before either
// (tree_attention.wgsl, tree_attention_tiled.wgsl).
//
// Keys `0 .. past` are committed and always visible; key `past + j` is new node j, which
// node i sees if it is i or one of its ancestors. Binding 3 says which, each kernel its
// own way. The query head h reads kv head h / GROUP (grouped-query attention).
//
// Filled in by samd-model's kernels.rs: head_dim, group, q_dim, row_width, max_seq,
// kv_dim and scale.

@group(0) @binding(0) var<storage, read_write> queries: array<f32>;   // [n, ROW_WIDTH], q first
@group(0) @binding(1) var<storage, read_write> rope: array<f32>;      // [n, 2 * HEAD_DIM]: cos | sin
@group(0) @binding(2) var<storage, read_write> cache: array<f32>;     // [2, KV_HEADS, MAX_SEQ, HEAD_DIM]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;       // [n, Q_DIM]
// The committed positions (past), then the new nodes (n): a buffer, not a uniform, so
// that a replayed step graph reads each step's own (step_graph.rs).
@group(0) @binding(5) var<storage, read_write> slots: array<u32>;

// The slots, as every lane of the workgroup sees them. The loops over keys hold barriers,
// so their bounds must be uniform, which a load from read_write storage is not: Chrome's
// compiler refuses such a shader (naga does not check). One lane reads them, and
// workgroupUniformLoad hands them to all as uniform values.
var<workgroup> shared_slots: vec2<u32>;

fn uniform_slots(t: u32) -> vec2<u32> {
    if t == 0u {
        shared_slots = vec2<u32>(slots[0], slots[1]);
    }
    return workgroupUniformLoad(&shared_slots);
}

const HEAD_DIM: u32 = {{ head_dim }}u;
const GROUP: u32 = {{ group }}u;
const Q_DIM: u32 = {{ q_dim }}u;
const ROW_WIDTH: u32 = {{ row_width }}u;
const MAX_SEQ: u32 = {{ max_seq }}u;
const V_OFFSET: u32 = {{ kv_dim }}u * MAX_SEQ;
const SCALE: f32 = {{ scale }};
// Below every score: a running max before the first key, and the score of a lane past
// the last key. Finite, since a const-expression infinity is a shader-creation error, and
// below -3.4e38 the literal is not an f32 (Tint rejects it; naga rounds it).
const LOWEST: f32 = -3.0e38;

// Column c of `node`'s query for `head`, RoPE applied: interleaved pairs (2i, 2i+1)
// rotate by the node's angle, r[c] = q[c]·cos[c] + q[c^1]·sin[c], sin signed per pair.
fn roped_query(node: u32, head: u32, c: u32) -> f32 {
    let row = node * ROW_WIDTH + head * HEAD_DIM;
    let angles = node * 2u * HEAD_DIM;
    return queries[row + c] * rope[angles + c]
        + queries[row + (c ^ 1u)] * rope[angles + HEAD_DIM + c];
}
