// y = x · W for a few rows of x: a verify step's projections, where M (the tree's nodes)
// is small and the weights are large.
//
// burn's tiled matmul spends most of a GPU step on these: its tiles are sized for large
// M, so a product of one to a hundred rows runs on a handful of workgroups, each walking
// all of K. Here every workgroup owns COLS output columns for TM rows, and splits K among
// SPLIT lane groups: each lane reads every SPLIT-th weight of its column once, multiplies
// it into TM running sums, and the workgroup adds the SPLIT partial sums as a tree in
// shared memory. Weights are read once per TM rows, so the product runs at memory speed
// for any M up to a few tiles.
//
// With GATED, x is a SwiGLU's gate and up side by side, [M, 2K], and the product is
// silu(gate) * up times W: the feed-forward's down projection takes its input straight
// from the gate|up projection, with no elementwise launch between.
//
// Two weight layouts, chosen so that neighbouring lanes read neighbouring floats:
// - in-major (OUT_MAJOR false), W is [K, N]: lanes run along the COLS columns of a row;
// - out-major (OUT_MAJOR true), W is [N, K] (the tied output head, which is the token
//   embedding): lanes run along K.
//
// Filled in by samd-model's kernels.rs: k, n, cols, split (cols * split = 256, split a
// power of two), tm, partial_len = 256 * tm, out_major and gated.

// read_write, though x and w are only read: cubecl sub-allocates tensors from shared
// buffers, and wgpu refuses one buffer bound both read-only and read-write in a dispatch.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;   // [M, K], or [M, 2K] if GATED
@group(0) @binding(1) var<storage, read_write> w: array<f32>;   // [K, N] or [N, K]
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [M, N]
// x: M, the rows of x.
@group(0) @binding(3) var<uniform> info: vec4<u32>;

const K: u32 = {{ k }}u;
const N: u32 = {{ n }}u;
const COLS: u32 = {{ cols }}u;
const SPLIT: u32 = {{ split }}u;
const TM: u32 = {{ tm }}u;
const OUT_MAJOR: bool = {{ out_major }};
const GATED: bool = {{ gated }};

// Row r's input at column k.
fn x_at(r: u32, k: u32) -> f32 {
    if GATED {
        let gate = x[r * 2u * K + k];
        return gate / (1.0 + exp(-gate)) * x[r * 2u * K + K + k];
    }
    return x[r * K + k];
}

var<workgroup> partial: array<f32, {{ partial_len }}>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) group_id: vec3<u32>,
) {
    var col: u32;
    var lane: u32;
    if OUT_MAJOR {
        col = t / SPLIT;
        lane = t % SPLIT;
    } else {
        col = t % COLS;
        lane = t / COLS;
    }
    let n = group_id.x * COLS + col;
    let m0 = group_id.y * TM;
    let rows = min(TM, info.x - m0);

    var acc: array<f32, {{ tm }}>;
    if n < N {
        for (var k = lane; k < K; k += SPLIT) {
            var wk: f32;
            if OUT_MAJOR {
                wk = w[n * K + k];
            } else {
                wk = w[k * N + n];
            }
            for (var r = 0u; r < rows; r++) {
                acc[r] += wk * x_at(m0 + r, k);
            }
        }
    }
    let slot = (col * SPLIT + lane) * TM;
    for (var r = 0u; r < TM; r++) {
        partial[slot + r] = acc[r];
    }
    workgroupBarrier();

    for (var stride = SPLIT / 2u; stride > 0u; stride /= 2u) {
        if lane < stride {
            let other = slot + stride * TM;
            for (var r = 0u; r < TM; r++) {
                partial[slot + r] += partial[other + r];
            }
        }
        workgroupBarrier();
    }

    if lane == 0u && n < N {
        for (var r = 0u; r < rows; r++) {
            y[(m0 + r) * N + n] = partial[slot + r];
        }
    }
}
