// Merges tree_attention.wgsl's per-chunk softmaxes into each node's attention output:
// with m the largest chunk max, out = Σ exp(max_c - m) · values_c / Σ exp(max_c - m) · sum_c.
//
// One workgroup per (query head, node); each lane owns some columns and walks the
// chunks. A chunk whose keys are all masked has a max far below a visible key's, so its
// weight underflows to zero; every node sees at least itself.
//
// Filled in by samd-model's kernels.rs: head_dim, n_heads, q_dim and
// columns_per_lane = ceil(head_dim / 64).

@group(0) @binding(0) var<storage, read_write> partials: array<f32>; // [n, N_HEADS, chunks, 2 + HEAD_DIM]
@group(0) @binding(1) var<storage, read_write> out: array<f32>;      // [n, Q_DIM]
// z: chunks per (node, head).
@group(0) @binding(2) var<uniform> info: vec4<u32>;

const HEAD_DIM: u32 = {{ head_dim }}u;
const N_HEADS: u32 = {{ n_heads }}u;
const Q_DIM: u32 = {{ q_dim }}u;
const COLUMNS_PER_LANE: u32 = {{ columns_per_lane }}u;
const LANES: u32 = 64u;
const LOWEST: f32 = -3.0e38;

@compute @workgroup_size(64, 1, 1)
fn main(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) group_id: vec3<u32>,
) {
    let head = group_id.x;
    let node = group_id.y;
    let chunks = info.z;
    let stride = 2u + HEAD_DIM;
    let base = (node * N_HEADS + head) * chunks * stride;

    var m = LOWEST;
    for (var c = 0u; c < chunks; c++) {
        m = max(m, partials[base + c * stride]);
    }
    var sum = 0.0;
    var acc: array<f32, {{ columns_per_lane }}>;
    for (var c = 0u; c < chunks; c++) {
        let at = base + c * stride;
        let weight = exp(partials[at] - m);
        sum += weight * partials[at + 1u];
        for (var a = 0u; a < COLUMNS_PER_LANE; a++) {
            let col = lane + a * LANES;
            if col < HEAD_DIM {
                acc[a] += weight * partials[at + 2u + col];
            }
        }
    }

    let out_row = node * Q_DIM + head * HEAD_DIM;
    for (var a = 0u; a < COLUMNS_PER_LANE; a++) {
        let col = lane + a * LANES;
        if col < HEAD_DIM {
            out[out_row + col] = acc[a] / sum;
        }
    }
}
