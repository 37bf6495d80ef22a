// The root mean square of D values of x, as every RMSNorm kernel here takes it: each of
// THREADS lanes squares a strided slice, and the workgroup sums the squares as a tree in
// shared memory. Shared by rms_norm.wgsl and head_norm.wgsl, which declare x.
//
// Filled in by samd-model's kernels.rs: d, eps and threads (a power of two).

const D: u32 = {{ d }}u;
const EPS: f32 = {{ eps }};
const THREADS: u32 = {{ threads }}u;

var<workgroup> partial: array<f32, {{ threads }}>;

// sqrt(mean(x[start .. start + D]²) + EPS); every lane of the workgroup calls it.
fn row_rms(lane: u32, start: u32) -> f32 {
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
    return sqrt(partial[0] / f32(D) + EPS);
}
