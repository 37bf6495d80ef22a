// top_k_gumbel.wgsl's nucleus part for top-p < 1: an id may be drawn if its probability
// reaches the row's threshold, which nucleus.wgsl found. The probability is computed as
// nucleus.wgsl and the reference ops compute it, exp(scaled - max) / sum, so all three
// agree on which ids are kept.

@group(0) @binding(4) var<storage, read_write> nucleus: array<f32>; // [rows, 4]: max, sum, threshold, 0

fn kept(row: u32, scaled: f32) -> bool {
    let at = row * 4u;
    return exp(scaled - nucleus[at]) / nucleus[at + 1u] >= nucleus[at + 2u];
}
