// A matrix in the GGUF's quantised blocks (blocks_common.wgsl, which follows) widened to
// f32, out-major ([N, K]): what burn's matmul takes for a prefill's many rows, and what
// the reference ops read. One lane per code word.
//
// Filled in by samd-model's kernels.rs: k, n.

@group(0) @binding(0) var<storage, read_write> w: array<u32>;   // [N, K / 32 * BLOCK_WORDS]
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // [N, K]

const K: u32 = {{ k }}u;
const N: u32 = {{ n }}u;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    // Rows of a large vocabulary outnumber one grid dimension's workgroups.
    let index = id.y * groups.x * 256u + id.x;
    if index >= N * CODES {
        return;
    }
    let n = index / CODES;
    let j = index % CODES;
    let weights = widen(load_word(n, j));
    for (var p = 0u; p < PER_WORD; p++) {
        out[n * K + k_of(j, p)] = weights[p];
    }
}
