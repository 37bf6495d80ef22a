// Qwen3's RMSNorm of each query and key head, and the K/V store after it, in one launch:
// the projection's rows ([rows, WIDTH]: q | k | v, each head D wide) keep their query
// heads, normed in place by q_weight, for the attention; each key head, normed by
// k_weight and rotated, and each value head go into the cache at slots[0] + row, as
// store_kv.wgsl would put them. One workgroup per head of a row (head h of a row starts
// at h · D: the key heads follow the query heads, and the value heads the key heads);
// rms_common.wgsl's row_rms sums a head, then every lane scales its own slice. As burn
// ops the norm was a slice, a reshape, a norm and a copy back per part, and the store a
// launch of its own.
//
// kv_store_common.wgsl comes first, with the cache's layout and RoPE, then rms_common.wgsl.
//
// Filled in by samd-model's kernels.rs: width (and the common parts').

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> q_weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> k_weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> rope: array<f32>;  // [rows, 2 * HEAD_DIM]: cos | sin
@group(0) @binding(4) var<storage, read_write> cache: array<f32>; // [2, KV_HEADS, MAX_SEQ, HEAD_DIM]
// The first slot written (the committed keys), then the rows stored: a buffer, not a
// uniform, so that a replayed step graph reads each step's own (step_graph.rs).
@group(0) @binding(5) var<storage, read_write> slots: array<u32>;

const WIDTH: u32 = {{ width }}u;
const Q_HEADS: u32 = Q_DIM / D;
const KV_HEADS: u32 = KV_DIM / D;

@compute @workgroup_size(THREADS, 1, 1)
fn main(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) group: vec3<u32>,
) {
    let head = group.x;
    let row = group.y;
    let start = row * WIDTH + head * D;
    // Which head is uniform across the workgroup, so row_rms's barriers are reached by all.
    if head < Q_HEADS {
        let rms = row_rms(lane, start);
        for (var i = lane; i < D; i += THREADS) {
            x[start + i] = x[start + i] / rms * q_weight[i];
        }
        return;
    }
    let stores = row < slots[1];
    let slot = slots[0] + row;
    if head < Q_HEADS + KV_HEADS {
        let rms = row_rms(lane, start);
        if !stores {
            return;
        }
        let column = (head - Q_HEADS) * D;
        for (var i = lane; i < D; i += THREADS) {
            // The pair's mate is normed as its own lane norms it, so the rotation reads
            // the values a norm in place and then a store would.
            let k = x[start + i] / rms * k_weight[i];
            let mate = x[start + (i ^ 1u)] / rms * k_weight[i ^ 1u];
            store_key(row, column + i, slot, k, mate);
        }
        return;
    }
    if stores {
        let column = (head - Q_HEADS - KV_HEADS) * D;
        for (var i = lane; i < D; i += THREADS) {
            store_value(column + i, slot, x[start + i]);
        }
    }
}
