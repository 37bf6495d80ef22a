// Tree attention for one verify step: each new node's query against every committed key
// and, among the new nodes, its ancestors and itself.
//
// As burn ops this is two batched matmuls, a scale, a mask, a softmax of four launches
// and the transposes between them; here it is one launch, or two past one chunk of keys.
// One workgroup per (query head, node, chunk of 64 keys): it ropes the node's query into
// shared memory, each lane scores one key, and the workgroup takes the chunk's softmax
// and its weighted values, each lane owning some columns of the output.
//
// A node's keys are split into chunks so that a decode step, which has few nodes, still
// fills the GPU: one workgroup walking a thousand keys alone took 600 us on an H200.
// With one chunk the workgroup writes the output; with more it writes the chunk's max,
// sum and unnormalised values to `partials`, and attention_combine.wgsl merges them.
//
// Keys `0 .. past` are committed and always visible; key `past + j` is new node j,
// visible as the additive tree mask says (0, or a large negative number). The query
// head h reads kv head h / GROUP (grouped-query attention).
//
// Filled in by samd-model's kernels.rs: head_dim, group, n_heads, q_dim, row_width,
// max_seq, kv_dim, scale and columns_per_lane = ceil(head_dim / 64).

@group(0) @binding(0) var<storage, read_write> queries: array<f32>;   // [n, ROW_WIDTH], q first
@group(0) @binding(1) var<storage, read_write> rope: array<f32>;      // [n, 2 * HEAD_DIM]: cos | sin
@group(0) @binding(2) var<storage, read_write> cache: array<f32>;     // [2, KV_HEADS, MAX_SEQ, HEAD_DIM]
@group(0) @binding(3) var<storage, read_write> tree_mask: array<f32>; // [n, n], additive
@group(0) @binding(4) var<storage, read_write> out: array<f32>;       // [n, Q_DIM]
// [n, N_HEADS, chunks, 2 + HEAD_DIM]: max, sum, values; written only with several chunks.
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;
// x: committed positions (past); y: new nodes (n); z: chunks of keys.
@group(0) @binding(6) var<uniform> info: vec4<u32>;

const HEAD_DIM: u32 = {{ head_dim }}u;
const GROUP: u32 = {{ group }}u;
const N_HEADS: u32 = {{ n_heads }}u;
const Q_DIM: u32 = {{ q_dim }}u;
const ROW_WIDTH: u32 = {{ row_width }}u;
const MAX_SEQ: u32 = {{ max_seq }}u;
const V_OFFSET: u32 = {{ kv_dim }}u * MAX_SEQ;
const SCALE: f32 = {{ scale }};
const COLUMNS_PER_LANE: u32 = {{ columns_per_lane }}u;
// Lanes per workgroup, and keys per chunk.
const LANES: u32 = 64u;
// Below every score: the running max before the first tile, and the score of a lane past
// the last key. Finite, since a const-expression infinity is a shader-creation error, and
// below -3.4e38 the literal is not an f32 (Tint rejects it; naga rounds it).
const LOWEST: f32 = -3.0e38;

var<workgroup> query: array<f32, {{ head_dim }}>;
var<workgroup> scores: array<f32, LANES>;

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) group_id: vec3<u32>,
) {
    let head = group_id.x;
    let node = group_id.y;
    let chunk = group_id.z;
    let past = info.x;
    let n = info.y;
    let chunks = info.z;
    let keys = past + n;

    let q_row = node * ROW_WIDTH + head * HEAD_DIM;
    let angles = node * 2u * HEAD_DIM;
    for (var c = lane; c < HEAD_DIM; c += LANES) {
        query[c] = queries[q_row + c] * rope[angles + c]
            + queries[q_row + (c ^ 1u)] * rope[angles + HEAD_DIM + c];
    }
    workgroupBarrier();

    let k_start = (head / GROUP) * MAX_SEQ * HEAD_DIM;
    let v_start = V_OFFSET + k_start;
    let first = chunk * LANES;
    let key = first + lane;
    var score = LOWEST;
    if key < keys {
        let k_row = k_start + key * HEAD_DIM;
        var dot = 0.0;
        for (var c = 0u; c < HEAD_DIM; c++) {
            dot += query[c] * cache[k_row + c];
        }
        score = dot * SCALE;
        if key >= past {
            score += tree_mask[node * n + (key - past)];
        }
    }
    scores[lane] = score;
    workgroupBarrier();

    var chunk_max = LOWEST;
    for (var t = 0u; t < LANES; t++) {
        chunk_max = max(chunk_max, scores[t]);
    }
    var sum = 0.0;
    var acc: array<f32, {{ columns_per_lane }}>;
    let in_chunk = min(LANES, keys - first);
    for (var t = 0u; t < in_chunk; t++) {
        let p = exp(scores[t] - chunk_max);
        sum += p;
        let v_row = v_start + (first + t) * HEAD_DIM;
        for (var a = 0u; a < COLUMNS_PER_LANE; a++) {
            let c = lane + a * LANES;
            if c < HEAD_DIM {
                acc[a] += p * cache[v_row + c];
            }
        }
    }

    if chunks == 1u {
        let out_row = node * Q_DIM + head * HEAD_DIM;
        for (var a = 0u; a < COLUMNS_PER_LANE; a++) {
            let c = lane + a * LANES;
            if c < HEAD_DIM {
                out[out_row + c] = acc[a] / sum;
            }
        }
        return;
    }
    let at = ((node * N_HEADS + head) * chunks + chunk) * (2u + HEAD_DIM);
    if lane == 0u {
        partials[at] = chunk_max;
        partials[at + 1u] = sum;
    }
    for (var a = 0u; a < COLUMNS_PER_LANE; a++) {
        let c = lane + a * LANES;
        if c < HEAD_DIM {
            partials[at + 2u + c] = acc[a];
        }
    }
}
