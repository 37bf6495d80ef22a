// Rows of a matrix in the GGUF's quantised blocks (blocks_common.wgsl) widened to f32,
// [rows, K]: the whole matrix, out-major, for the reference ops (burn's matmul over f32);
// or the token embedding's rows of a step's tokens, which start the residual stream. One
// lane per code word of an output row.
//
// kernels.rs appends a rows part, which defines source_row(r), the matrix row that output
// row r takes, and then blocks_common.wgsl:
// - dequant_rows_all.wgsl: row r itself;
// - dequant_rows_gathered.wgsl: row ids[r] (binding 2).
//
// Filled in by samd-model's kernels.rs: k, info_binding.

@group(0) @binding(0) var<storage, read_write> w: array<u32>;   // [N, K / 32 * BLOCK_WORDS]
@group(0) @binding(1) var<storage, read_write> out: array<f32>; // [rows, K]
// x: the output's rows, a runtime value so that one pipeline serves every step.
@group(0) @binding({{ info_binding }}) var<uniform> info: vec4<u32>;

const K: u32 = {{ k }}u;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(global_invocation_id) id: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
) {
    // A large vocabulary's rows outnumber one grid dimension's workgroups.
    let index = id.y * groups.x * 256u + id.x;
    if index >= info.x * CODES {
        return;
    }
    let r = index / CODES;
    let j = index % CODES;
    let weights = widen(load_word(source_row(r), j));
    for (var p = 0u; p < PER_WORD; p++) {
        out[r * K + k_of(j, p)] = weights[p];
    }
}
