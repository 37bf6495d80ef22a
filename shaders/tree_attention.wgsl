// Tree attention for one verify step: each new node's query against every committed key
// and, among the new nodes, its ancestors and itself.
//
// As burn ops this is two batched matmuls, a scale, a mask, a softmax of four launches
// and the transposes between them; here it is one launch. One workgroup per (query
// head, node). It ropes the node's query into shared memory, then walks the keys in
// tiles of 64: each lane scores one key, and the workgroup folds the tile into a running
// softmax (the online form: a running max, a running sum, and the weighted values
// rescaled whenever the max grows), each lane owning some columns of the output.
//
// Keys `0 .. past` are committed and always visible; key `past + j` is new node j,
// visible as the additive tree mask says (0, or a large negative number). The query
// head h reads kv head h / GROUP (grouped-query attention).
//
// Filled in by samd-model's kernels.rs: head_dim, group, q_dim, qkv_width, max_seq,
// kv_dim, scale and columns_per_lane = ceil(head_dim / 64).

@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;       // [n, QKV_WIDTH]
@group(0) @binding(1) var<storage, read_write> rope: array<f32>;      // [n, 2 * HEAD_DIM]: cos | sin
@group(0) @binding(2) var<storage, read_write> cache: array<f32>;     // [2, KV_HEADS, MAX_SEQ, HEAD_DIM]
@group(0) @binding(3) var<storage, read_write> tree_mask: array<f32>; // [n, n], additive
@group(0) @binding(4) var<storage, read_write> out: array<f32>;       // [n, Q_DIM]
// x: committed positions (past); y: new nodes (n).
@group(0) @binding(5) var<uniform> info: vec4<u32>;

const HEAD_DIM: u32 = {{ head_dim }}u;
const GROUP: u32 = {{ group }}u;
const Q_DIM: u32 = {{ q_dim }}u;
const QKV_WIDTH: u32 = {{ qkv_width }}u;
const MAX_SEQ: u32 = {{ max_seq }}u;
const V_OFFSET: u32 = {{ kv_dim }}u * MAX_SEQ;
const SCALE: f32 = {{ scale }};
const COLUMNS_PER_LANE: u32 = {{ columns_per_lane }}u;
// Lanes per workgroup, and keys per tile.
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
    let past = info.x;
    let n = info.y;
    let keys = past + n;

    let q_row = node * QKV_WIDTH + head * HEAD_DIM;
    let angles = node * 2u * HEAD_DIM;
    for (var c = lane; c < HEAD_DIM; c += LANES) {
        query[c] = qkv[q_row + c] * rope[angles + c]
            + qkv[q_row + (c ^ 1u)] * rope[angles + HEAD_DIM + c];
    }
    workgroupBarrier();

    let k_start = (head / GROUP) * MAX_SEQ * HEAD_DIM;
    let v_start = V_OFFSET + k_start;
    var running_max = LOWEST;
    var running_sum = 0.0;
    var acc: array<f32, {{ columns_per_lane }}>;
    for (var tile = 0u; tile < keys; tile += LANES) {
        let key = tile + lane;
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

        var tile_max = LOWEST;
        for (var t = 0u; t < LANES; t++) {
            tile_max = max(tile_max, scores[t]);
        }
        let new_max = max(running_max, tile_max);
        let rescale = exp(running_max - new_max);
        running_sum *= rescale;
        for (var a = 0u; a < COLUMNS_PER_LANE; a++) {
            acc[a] *= rescale;
        }
        let in_tile = min(LANES, keys - tile);
        for (var t = 0u; t < in_tile; t++) {
            let p = exp(scores[t] - new_max);
            running_sum += p;
            let v_row = v_start + (tile + t) * HEAD_DIM;
            for (var a = 0u; a < COLUMNS_PER_LANE; a++) {
                let c = lane + a * LANES;
                if c < HEAD_DIM {
                    acc[a] += p * cache[v_row + c];
                }
            }
        }
        running_max = new_max;
        // Every lane has read this tile's scores before the next tile overwrites them.
        workgroupBarrier();
    }

    let out_row = node * Q_DIM + head * HEAD_DIM;
    for (var a = 0u; a < COLUMNS_PER_LANE; a++) {
        let c = lane + a * LANES;
        if c < HEAD_DIM {
            out[out_row + c] = acc[a] / running_sum;
        }
    }
}
