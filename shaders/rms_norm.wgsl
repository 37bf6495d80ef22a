// RMSNorm for each row of a [rows, D] matrix: y = x / sqrt(mean(x²) + eps) * weight.
//
// Verify steps fold the norm into the projection after it (skinny_in_normed.wgsl); this
// is the norm before the output head, whose thousands of workgroups would each take it
// again, and for a forward of more rows than the skinny matmul takes, a prefill's. As
// burn ops it is a reduction and an elementwise tail of several launches; here it is one.
//
// One workgroup per row, which rms_common.wgsl's row_rms sums; then every lane scales
// its slice.

// read_write, though x and weight are only read: cubecl sub-allocates tensors from shared
// buffers, and wgpu refuses one buffer bound both read-only and read-write in a dispatch.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(THREADS, 1, 1)
fn main(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) row: vec3<u32>,
) {
    let start = row.x * D;
    let rms = row_rms(lane, start);
    for (var i = lane; i < D; i += THREADS) {
        y[start + i] = x[start + i] / rms * weight[i];
    }
}
