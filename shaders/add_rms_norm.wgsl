// The residual add and the RMSNorm after it, for each row of [rows, D] matrices:
// sum = x + delta, y = sum / sqrt(mean(sum²) + eps) * weight. Both are written.
//
// Every norm in the model follows a residual add (the first one's x is zero and its
// delta the token embeddings). As burn ops the pair is an add, a reduction and the
// elementwise tail: several launches where fusion leaves them apart. Here it is one.
//
// One workgroup per row: each lane adds and squares a strided slice, the workgroup sums
// the squares as a tree in shared memory, then every lane scales its slice.
//
// Filled in by samd-model's kernels.rs: d, eps and threads (a power of two).

// read_write, though x, delta and weight are only read: cubecl sub-allocates tensors from
// shared buffers, and wgpu refuses one buffer bound both read-only and read-write in a
// dispatch.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> delta: array<f32>;
@group(0) @binding(2) var<storage, read_write> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> sum: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

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
        let v = x[start + i] + delta[start + i];
        sum[start + i] = v;
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
    // Each lane reads back only the sums it wrote itself.
    for (var i = lane; i < D; i += THREADS) {
        y[start + i] = sum[start + i] / rms * weight[i];
    }
}
