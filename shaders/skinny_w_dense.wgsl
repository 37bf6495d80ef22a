// skinny_matmul.wgsl's weight part for W in f32, in-major ([K, N]) or, with OUT_MAJOR,
// out-major ([N, K]: the tied output head, which is the token embedding, where its file
// type has no block part).
//
// Filled in by samd-model's kernels.rs: out_major.

@group(0) @binding(1) var<storage, read_write> w: array<f32>; // [K, N] or [N, K]

const OUT_MAJOR: bool = {{ out_major }};
const LANES_ALONG_K: bool = OUT_MAJOR;

// W's entry for input k and output column n.
fn w_at(n: u32, k: u32) -> f32 {
    if OUT_MAJOR {
        return w[n * K + k];
    }
    return w[k * N + n];
}

// Lane `lane`'s share of column n's sums for rows m0 .. m0 + rows: every SPLIT-th input.
fn partial_sums(n: u32, lane: u32, m0: u32, rows: u32, t: u32) -> array<f32, {{ tm }}> {
    var acc: array<f32, {{ tm }}>;
    if n >= N {
        return acc;
    }
    // Four weights in flight per lane: their loads overlap, where one at a time each
    // would wait out the memory's latency before the next is issued.
    var k = lane;
    for (; k + 3u * SPLIT < K; k += 4u * SPLIT) {
        let w0 = w_at(n, k);
        let w1 = w_at(n, k + SPLIT);
        let w2 = w_at(n, k + 2u * SPLIT);
        let w3 = w_at(n, k + 3u * SPLIT);
        // Up to TM, not `rows`: a loop of constant length unrolls, so `acc` can stay in
        // registers.
        for (var r = 0u; r < TM; r++) {
            if r < rows {
                let row = m0 + r;
                acc[r] += w0 * x_at(row, k) + w1 * x_at(row, k + SPLIT)
                    + w2 * x_at(row, k + 2u * SPLIT) + w3 * x_at(row, k + 3u * SPLIT);
            }
        }
    }
    for (; k < K; k += SPLIT) {
        let wk = w_at(n, k);
        for (var r = 0u; r < TM; r++) {
            if r < rows {
                acc[r] += wk * x_at(m0 + r, k);
            }
        }
    }
    return acc;
}
