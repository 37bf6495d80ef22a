// Qwen3's RMSNorm of each query and key head, in place in a projection's rows
// ([rows, WIDTH]: q | k | v, each head D wide): the query heads by q_weight, the key heads
// by k_weight, the values left as they are. One workgroup per head of a row (the key heads
// follow the query heads, so head h of a row starts at h · D), which rms_common.wgsl's
// row_rms sums; then every lane scales its own slice. As burn ops it was a slice, a
// reshape, a norm and a copy back per part.
//
// Filled in by samd-model's kernels.rs: width and q_heads (and rms_common.wgsl's).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> q_weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> k_weight: array<f32>;

const WIDTH: u32 = {{ width }}u;
const Q_HEADS: u32 = {{ q_heads }}u;

@compute @workgroup_size(THREADS, 1, 1)
fn main(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) group: vec3<u32>,
) {
    let head = group.x;
    let start = group.y * WIDTH + head * D;
    let rms = row_rms(lane, start);
    for (var i = lane; i < D; i += THREADS) {
        var weight: f32;
        if head < Q_HEADS {
            weight = q_weight[i];
        } else {
            weight = k_weight[i];
        }
        x[start + i] = x[start + i] / rms * weight;
    }
}
