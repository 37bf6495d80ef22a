// skinny_matmul.wgsl's input part for RMSNorm(x) = x / sqrt(mean(x²) + eps) * weight, row
// by row: the norm before a projection costs no launch of its own. The weight multiplies
// each input as it is read; the row's 1 / rms, a sum over all of K, scales the finished
// sums.
//
// Every workgroup takes the norm of its own rows (K floats each, against the K * COLS
// weights it reads), so no workgroup waits on another.
//
// Filled in by samd-model's kernels.rs: eps.

@group(0) @binding(3) var<storage, read_write> norm_weight: array<f32>; // [K]

const EPS: f32 = {{ eps }};

// Row r's input at column k, but for the row's scale.
fn x_at(r: u32, k: u32) -> f32 {
    return x[r * K + k] * norm_weight[k];
}

// Each of rows m0 .. m0 + rows: 1 / sqrt(mean(x²) + eps). Every lane sums the squares of a
// strided slice, and the workgroup adds them as a tree in `partial`, ROUND rows at a
// time; `partial` is free again when this returns.
fn row_scales(m0: u32, rows: u32, t: u32) -> array<f32, {{ tm }}> {
    var squares: array<f32, {{ tm }}>;
    for (var r = 0u; r < TM; r++) {
        if r < rows {
            for (var k = t; k < K; k += LANES) {
                let v = x[(m0 + r) * K + k];
                squares[r] += v * v;
            }
        }
    }
    var scales: array<f32, {{ tm }}>;
    for (var r0 = 0u; r0 < TM; r0 += ROUND) {
        if r0 < rows {
            for (var r = 0u; r < ROUND; r++) {
                partial[t * ROUND + r] = squares[r0 + r];
            }
            workgroupBarrier();
            for (var live = LANES / 2u; live > 0u; live /= 2u) {
                if t < live {
                    for (var r = 0u; r < ROUND; r++) {
                        partial[t * ROUND + r] += partial[(t + live) * ROUND + r];
                    }
                }
                workgroupBarrier();
            }
            for (var r = 0u; r < ROUND; r++) {
                scales[r0 + r] = 1.0 / sqrt(partial[r] / f32(K) + EPS);
            }
            workgroupBarrier();
        }
    }
    return scales;
}
