// RMSNorm for each row of a [rows, D] matrix: y = x / sqrt(mean(x²) + eps) * weight.
//
// Verify steps fold the norm into the projection after it (skinny_in_normed.wgsl); this
// is the norm before the output head, whose thousands of workgroups would each take it
// again, and for a forward of more rows than the skinny matmul takes, a prefill's. As
// burn ops it is a reduction and an elementwise tail of several launches; here it is one.
//
// One workgroup per row: each lane squares a strided slice, the workgroup sums the
// squares as a tree in shared memory, then every lane scales its slice.
//
// Filled in by samd-model's kernels.rs: d, eps and threads (a power of two).

// read_write, though x and weight are only read: cubecl sub-allocates tensors from shared
// buffers, and wgpu refuses one buffer bound both read-only and read-write in a dispatch.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> weight: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

const D: u32 = {{ d }}u;
const EPS: f32 = {{ eps }};
const THREADS: u32 = {{ threads }}u;

var<workgroup> partial: array<f32, {{ threads }}>;

@compute @workgroup_size({{ threads }}, 1, 1)
fn main(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) row: vec3<u32>,
) {
    let start = row.x * D;
    var squares = 0.0;
    for (var i = lane; i < D; i += THREADS) {
        let v = x[start + i];
        squares += v * v;
    }
    partial[lane] = squares;
    workgroupBarrier();
    for (var live = THREADS / 2u; live > 0u; live /= 2u) {
        if lane < live {
            partial[lane] += partial[lane + live];
        }
        workgroupBarrier();
    }
    let rms = sqrt(partial[0] / f32(D) + EPS);
    for (var i = lane; i < D; i += THREADS) {
        y[start + i] = x[start + i] / rms * weight[i];
    }
}
