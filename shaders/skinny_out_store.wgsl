// skinny_matmul.wgsl's output part for y = x · W, or with ACCUMULATE y += x · W: the
// residual stream takes a projection's output in place, so the residual add costs no
// launch of its own.
//
// Filled in by samd-model's kernels.rs: accumulate.

const ACCUMULATE: bool = {{ accumulate }};

fn write_out(row: u32, n: u32, value: f32, mate: f32) {
    let at = row * N + n;
    if ACCUMULATE {
        y[at] += value;
    } else {
        y[at] = value;
    }
}
