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
// This file is the kernel's core. kernels.rs appends a weight part, which reads W, then one
// input part and one output part, which is what folds a block's other steps into its
// projections, each a launch saved. The weight parts:
// - skinny_w_dense.wgsl: W in f32, in either layout below;
// - skinny_w_blocks.wgsl: W in the GGUF's quantised blocks (Q4_0, Q4_1, Q8_0), a sixth
//   (or a third) of the bytes, widened to f32 as they are read.
// - skinny_w_blocks_staged.wgsl: the same for tiles of many rows, which stage x through
//   shared memory.
// A weight part declares binding 1, sets LANES_ALONG_K, and defines partial_sums(n, lane,
// m0, rows, t): a lane's share of each row's sum for output column n (0 past N; every
// lane calls it, so it may hold barriers). The other parts:
// - skinny_in_rows.wgsl: x as it is, or with GATED a SwiGLU's gate and up side by side
//   ([M, 2K]), so the input is silu(gate) * up;
// - skinny_in_normed.wgsl: x RMS-normed row by row (the norm's weight in binding 3);
// - skinny_out_store.wgsl: y = x · W, or with ACCUMULATE y += x · W (the residual add);
// - skinny_out_qkv.wgsl: the attention's projection, whose keys (RoPE applied) and values
//   go straight into the KV cache.
// An input part defines x_at(row, k) and row_scales(), which scale each row's sums; an
// output part defines write_out(row, n, value, mate), where mate is column n ^ 1's value
// (RoPE rotates such pairs, and COLS is even, so they share a workgroup).
//
// Neighbouring lanes read neighbouring words of W: along the COLS columns of a row for an
// in-major W ([K, N]), along K for an out-major one ([N, K]) and for blocks.
//
// Filled in by samd-model's kernels.rs: k, n, cols, split (cols * split = 256, split a
// power of two), tm (a multiple of ROUND), info_binding, and the parts' own.

// read_write, though x and w are only read: cubecl sub-allocates tensors from shared
// buffers, and wgpu refuses one buffer bound both read-only and read-write in a dispatch.
@group(0) @binding(0) var<storage, read_write> x: array<f32>;   // [M, K], or [M, 2K] if GATED
@group(0) @binding(2) var<storage, read_write> y: array<f32>;   // [M, N], or as the output part says
// x: M, the rows of x.
@group(0) @binding({{ info_binding }}) var<uniform> info: vec4<u32>;

const K: u32 = {{ k }}u;
const N: u32 = {{ n }}u;
const COLS: u32 = {{ cols }}u;
const SPLIT: u32 = {{ split }}u;
const TM: u32 = {{ tm }}u;
const LANES: u32 = 256u;
// Rows the workgroup reduces through shared memory at a time; TM is a multiple of it.
const ROUND: u32 = 8u;

var<workgroup> partial: array<f32, 2048>; // LANES * ROUND

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) group_id: vec3<u32>,
) {
    var col: u32;
    var lane: u32;
    if LANES_ALONG_K {
        col = t / SPLIT;
        lane = t % SPLIT;
    } else {
        col = t % COLS;
        lane = t / COLS;
    }
    let n = group_id.x * COLS + col;
    let m0 = group_id.y * TM;
    let rows = min(TM, info.x - m0);
    let scales = row_scales(m0, rows, t);

    var acc = partial_sums(n, lane, m0, rows, t);

    // The SPLIT partial sums of each column add up as a tree in shared memory, ROUND rows
    // at a time, so that TM can outgrow it.
    let slot = (col * SPLIT + lane) * ROUND;
    let mate = (col ^ 1u) * SPLIT * ROUND;
    for (var r0 = 0u; r0 < TM; r0 += ROUND) {
        if r0 < rows {
            for (var r = 0u; r < ROUND; r++) {
                partial[slot + r] = acc[r0 + r];
            }
            workgroupBarrier();
            for (var stride = SPLIT / 2u; stride > 0u; stride /= 2u) {
                if lane < stride {
                    let other = slot + stride * ROUND;
                    for (var r = 0u; r < ROUND; r++) {
                        partial[slot + r] += partial[other + r];
                    }
                }
                workgroupBarrier();
            }
            if lane == 0u && n < N {
                for (var r = 0u; r < ROUND; r++) {
                    let row = r0 + r;
                    if row < rows {
                        let scale = scales[row];
                        write_out(m0 + row, n, partial[slot + r] * scale, partial[mate + r] * scale);
                    }
                }
            }
            workgroupBarrier();
        }
    }
}
