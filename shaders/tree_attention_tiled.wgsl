// Tree attention for a forward of many nodes, a prefill's: what tree_attention.wgsl
// computes, with each key read once per tile of QT nodes instead of once per node.
//
// tree_attention.wgsl gives every (head, node) its own workgroup, which then reads every
// key and value it sees from memory: for a 1,000-token prefill that is 500 keys on
// average for each of 9,000 workgroups, and on an H200 the attention took 88 ms of the
// prefill's 143. Here one workgroup takes a head and QT consecutive nodes, and walks the
// keys in tiles of KT: it loads a tile of keys into shared memory, scores every (node,
// key) pair of the tile, updates each node's running softmax, then loads the tile's
// values into the same memory and adds them in. A node's keys are a prefix of the
// cache (committed keys, then new nodes up to itself: a parent precedes its children),
// so the tiles run up to the group's last node.
//
// Its bindings and what it shares with tree_attention.wgsl come first, from
// attention_common.wgsl. Every node sees key 0, so its running max is a real score after
// the first tile.
//
// Filled in by samd-model's kernels.rs: the tile sizes qt (dividing 256) and kt, sized
// so that the tiles fit WebGPU's 16 KiB of shared memory, the tiles' lengths, and
// columns_per_lane = ceil(head_dim / (256 / qt)), besides the common part's.

@group(0) @binding(3) var<storage, read_write> tree_mask: array<f32>; // [n, n], additive

// The additive score of `node` for `key`: 0 for a committed key, the tree mask's entry
// (0, or a large negative number) for a new node's.
fn mask_of(node: u32, key: u32, past: u32, n: u32) -> f32 {
    if key < past {
        return 0.0;
    }
    return tree_mask[node * n + (key - past)];
}

const QT: u32 = {{ qt }}u;
const KT: u32 = {{ kt }}u;
const LANES: u32 = 256u;
// A tile row's stride in shared memory: one float of padding, so that lanes reading the
// same column of different keys hit different banks.
const STRIDE: u32 = HEAD_DIM + 1u;

var<workgroup> q_tile: array<f32, {{ q_tile_len }}>;   // [QT, HEAD_DIM], RoPE applied
var<workgroup> kv_tile: array<f32, {{ kv_tile_len }}>; // [KT, STRIDE]: keys, then values
var<workgroup> probs: array<f32, {{ scores_len }}>;    // [QT, KT]: scores, then weights
var<workgroup> run_max: array<f32, {{ qt }}>;
var<workgroup> run_sum: array<f32, {{ qt }}>;
var<workgroup> rescale: array<f32, {{ qt }}>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) group_id: vec3<u32>,
) {
    let head = group_id.x;
    let n0 = group_id.y * QT;
    let step = uniform_slots(t);
    let past = step.x;
    let n = step.y;
    let keys = past + min(n, n0 + QT);

    for (var i = t; i < QT * HEAD_DIM; i += LANES) {
        let node = n0 + i / HEAD_DIM;
        let c = i % HEAD_DIM;
        var q = 0.0;
        if node < n {
            q = roped_query(node, head, c);
        }
        q_tile[i] = q;
    }
    if t < QT {
        run_max[t] = LOWEST;
        run_sum[t] = 0.0;
    }

    let kv_start = (head / GROUP) * MAX_SEQ * HEAD_DIM;
    // This lane's outputs: node t / (LANES / QT), and every (LANES / QT)-th column from
    // t % (LANES / QT).
    let out_node = t / (LANES / QT);
    let out_first = t % (LANES / QT);
    var acc: array<f32, {{ columns_per_lane }}>;

    // The same number of tiles for every lane: the barriers need uniform control flow.
    for (var k0 = 0u; k0 < keys; k0 += KT) {
        workgroupBarrier();
        for (var i = t; i < KT * HEAD_DIM; i += LANES) {
            let key = k0 + i / HEAD_DIM;
            var v = 0.0;
            if key < keys {
                v = cache[kv_start + key * HEAD_DIM + i % HEAD_DIM];
            }
            kv_tile[(i / HEAD_DIM) * STRIDE + i % HEAD_DIM] = v;
        }
        workgroupBarrier();

        for (var p = t; p < QT * KT; p += LANES) {
            let i = p / KT;
            let j = p % KT;
            let node = n0 + i;
            let key = k0 + j;
            var score = LOWEST;
            if node < n && key < keys {
                var dot = 0.0;
                for (var c = 0u; c < HEAD_DIM; c++) {
                    dot += q_tile[i * HEAD_DIM + c] * kv_tile[j * STRIDE + c];
                }
                score = dot * SCALE + mask_of(node, key, past, n);
            }
            probs[p] = score;
        }
        workgroupBarrier();

        // Each node's running softmax: the tile's max, the old sums' rescale, the weights.
        if t < QT {
            var tile_max = LOWEST;
            for (var j = 0u; j < KT; j++) {
                tile_max = max(tile_max, probs[t * KT + j]);
            }
            let new_max = max(run_max[t], tile_max);
            let factor = exp(run_max[t] - new_max);
            var sum = run_sum[t] * factor;
            for (var j = 0u; j < KT; j++) {
                let w = exp(probs[t * KT + j] - new_max);
                probs[t * KT + j] = w;
                sum += w;
            }
            run_max[t] = new_max;
            run_sum[t] = sum;
            rescale[t] = factor;
        }
        // The values replace the keys: nothing reads the keys after the scores.
        for (var i = t; i < KT * HEAD_DIM; i += LANES) {
            let key = k0 + i / HEAD_DIM;
            var v = 0.0;
            if key < keys {
                v = cache[V_OFFSET + kv_start + key * HEAD_DIM + i % HEAD_DIM];
            }
            kv_tile[(i / HEAD_DIM) * STRIDE + i % HEAD_DIM] = v;
        }
        workgroupBarrier();

        let factor = rescale[out_node];
        for (var a = 0u; a < {{ columns_per_lane }}u; a++) {
            let c = out_first + a * (LANES / QT);
            if c < HEAD_DIM {
                var sum = acc[a] * factor;
                for (var j = 0u; j < KT; j++) {
                    sum += probs[out_node * KT + j] * kv_tile[j * STRIDE + c];
                }
                acc[a] = sum;
            }
        }
    }

    let node = n0 + out_node;
    if node < n {
        for (var a = 0u; a < {{ columns_per_lane }}u; a++) {
            let c = out_first + a * (LANES / QT);
            if c < HEAD_DIM {
                out[node * Q_DIM + head * HEAD_DIM + c] = acc[a] / run_sum[out_node];
            }
        }
    }
}
