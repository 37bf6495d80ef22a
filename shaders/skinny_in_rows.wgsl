// skinny_matmul.wgsl's input part for x as it is, or with GATED for silu(gate) * up, where
// x is [M, 2K], gate then up: the feed-forward's down projection takes its input straight
// from the gate|up projection, with no elementwise launch between.
//
// Filled in by samd-model's kernels.rs: gated.

const GATED: bool = {{ gated }};

// Row r's input at column k.
fn x_at(r: u32, k: u32) -> f32 {
    if GATED {
        let gate = x[r * 2u * K + k];
        return gate / (1.0 + exp(-gate)) * x[r * 2u * K + K + k];
    }
    return x[r * K + k];
}

// Rows need no scaling.
fn row_scales(m0: u32, rows: u32, t: u32) -> array<f32, {{ tm }}> {
    var ones: array<f32, {{ tm }}>;
    for (var r = 0u; r < TM; r++) {
        ones[r] = 1.0;
    }
    return ones;
}
