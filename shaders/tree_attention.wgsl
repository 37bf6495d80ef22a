// Tree attention for one verify step: each new node's query against every committed key
// and, among the new nodes, its ancestors and itself.
//
// As burn ops this is two batched matmuls, a scale, a mask, a softmax of four launches
// and the transposes between them; here it is one launch. One workgroup per (query head,
// node) of GROUPS lane groups, each LANES lanes wide: the workgroup walks the keys in
// blocks of GROUPS * LANES, each group taking a chunk of LANES keys, one per lane. A
// group keeps its own running softmax over its chunks (max, sum, and the weighted values,
// each lane owning some columns), and at the end the groups merge theirs. So a decode
// step's few nodes still put several hundred lanes on each head, with no second launch
// to merge chunks.
//
// A node walks only the keys it sees, in the order of their positions: the committed
// ones, then its ancestors root first, then itself, wherever the step put them in the
// cache (binding 3 lists them). So its sums run exactly as they do when plain decoding
// reaches the same position one node at a time, and a node's output does not depend on
// the tree around it: speculative decoding continues from plain decoding's bits.
//
// Its bindings and what it shares with tree_attention_tiled.wgsl come first, from
// attention_common.wgsl. A group that sees no key keeps a sum of 0, so its weight is
// zero when merged; every node sees at least itself.
//
// Filled in by samd-model's kernels.rs: columns_per_lane = ceil(head_dim / LANES) and
// group_values_len = GROUPS * head_dim, besides the common part's.

const COLUMNS_PER_LANE: u32 = {{ columns_per_lane }}u;
// Lanes per group (keys per chunk), and groups per workgroup.
const LANES: u32 = 64u;
const GROUPS: u32 = 4u;
const BLOCK: u32 = LANES * GROUPS;

// [n, n + 1]: per node, the new nodes it sees, counted, then listed root first (itself
// last); step_graph.rs's HostStep::ancestry.
@group(0) @binding(3) var<storage, read_write> ancestry: array<i32>;

var<workgroup> query: array<f32, {{ head_dim }}>;
var<workgroup> scores: array<f32, BLOCK>;
// Each lane's key's cache slot, for the values.
var<workgroup> key_slots: array<u32, BLOCK>;
var<workgroup> shared_seen: u32;
// Each group's running max and sum, then its weighted values, for the merge.
var<workgroup> group_max: array<f32, GROUPS>;
var<workgroup> group_sum: array<f32, GROUPS>;
var<workgroup> group_values: array<f32, {{ group_values_len }}>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) group_id: vec3<u32>,
) {
    let head = group_id.x;
    let node = group_id.y;
    let step = uniform_slots(t);
    let past = step.x;
    let n = step.y;
    let row = node * (n + 1u);
    // The keys it sees: every committed one, and its ancestors and itself. Read by one
    // lane and handed to all: the loop below holds barriers, so its bound is uniform.
    if t == 0u {
        shared_seen = u32(ancestry[row]);
    }
    let keys = past + workgroupUniformLoad(&shared_seen);
    let g = t / LANES;
    let lane = t % LANES;

    for (var c = t; c < HEAD_DIM; c += BLOCK) {
        query[c] = roped_query(node, head, c);
    }
    workgroupBarrier();

    let k_start = (head / GROUP) * MAX_SEQ * HEAD_DIM;
    let v_start = V_OFFSET + k_start;
    var run_max = LOWEST;
    var run_sum = 0.0;
    var acc: array<f32, {{ columns_per_lane }}>;
    // The same number of blocks for every lane: the barriers need uniform control flow.
    for (var block = 0u; block < keys; block += BLOCK) {
        let first = block + g * LANES;
        let key = first + lane;
        var score = LOWEST;
        if key < keys {
            var slot = key;
            if key >= past {
                slot = past + u32(ancestry[row + 1u + key - past]);
            }
            key_slots[t] = slot;
            let k_row = k_start + slot * HEAD_DIM;
            var dot = 0.0;
            for (var c = 0u; c < HEAD_DIM; c++) {
                dot += query[c] * cache[k_row + c];
            }
            score = dot * SCALE;
        }
        scores[t] = score;
        workgroupBarrier();

        if first < keys {
            let in_chunk = min(LANES, keys - first);
            var chunk_max = LOWEST;
            for (var i = 0u; i < in_chunk; i++) {
                chunk_max = max(chunk_max, scores[g * LANES + i]);
            }
            let new_max = max(run_max, chunk_max);
            let rescale = exp(run_max - new_max);
            run_sum *= rescale;
            for (var a = 0u; a < COLUMNS_PER_LANE; a++) {
                acc[a] *= rescale;
            }
            // Four keys' values in flight per lane: their loads overlap, where one at a
            // time each would wait out the memory's latency before the next is issued.
            var i = 0u;
            for (; i + 3u < in_chunk; i += 4u) {
                let s = g * LANES + i;
                let p0 = exp(scores[s] - new_max);
                let p1 = exp(scores[s + 1u] - new_max);
                let p2 = exp(scores[s + 2u] - new_max);
                let p3 = exp(scores[s + 3u] - new_max);
                run_sum += p0 + p1 + p2 + p3;
                let v0 = v_start + key_slots[s] * HEAD_DIM;
                let v1 = v_start + key_slots[s + 1u] * HEAD_DIM;
                let v2 = v_start + key_slots[s + 2u] * HEAD_DIM;
                let v3 = v_start + key_slots[s + 3u] * HEAD_DIM;
                for (var a = 0u; a < COLUMNS_PER_LANE; a++) {
                    let c = lane + a * LANES;
                    if c < HEAD_DIM {
                        acc[a] += p0 * cache[v0 + c] + p1 * cache[v1 + c] + p2 * cache[v2 + c]
                            + p3 * cache[v3 + c];
                    }
                }
            }
            for (; i < in_chunk; i++) {
                let p = exp(scores[g * LANES + i] - new_max);
                run_sum += p;
                let v_row = v_start + key_slots[g * LANES + i] * HEAD_DIM;
                for (var a = 0u; a < COLUMNS_PER_LANE; a++) {
                    let c = lane + a * LANES;
                    if c < HEAD_DIM {
                        acc[a] += p * cache[v_row + c];
                    }
                }
            }
            run_max = new_max;
        }
        workgroupBarrier();
    }

    // Merge the groups: out = Σ exp(max_g - m) · values_g / Σ exp(max_g - m) · sum_g, with
    // m the largest max. A group that saw no key has sum and values 0.
    if lane == 0u {
        group_max[g] = run_max;
        group_sum[g] = run_sum;
    }
    for (var a = 0u; a < COLUMNS_PER_LANE; a++) {
        let c = lane + a * LANES;
        if c < HEAD_DIM {
            group_values[g * HEAD_DIM + c] = acc[a];
        }
    }
    workgroupBarrier();
    if g != 0u {
        return;
    }
    var m = LOWEST;
    for (var h = 0u; h < GROUPS; h++) {
        m = max(m, group_max[h]);
    }
    var total = 0.0;
    var weights: array<f32, GROUPS>;
    for (var h = 0u; h < GROUPS; h++) {
        weights[h] = exp(group_max[h] - m);
        total += weights[h] * group_sum[h];
    }
    let out_row = node * Q_DIM + head * HEAD_DIM;
    for (var a = 0u; a < COLUMNS_PER_LANE; a++) {
        let c = lane + a * LANES;
        if c < HEAD_DIM {
            var value = 0.0;
            for (var h = 0u; h < GROUPS; h++) {
                value += weights[h] * group_values[h * HEAD_DIM + c];
            }
            out[out_row + c] = value / total;
        }
    }
}
