// dequant_blocks.wgsl's rows part for the whole matrix: output row r is row r.

fn source_row(r: u32) -> u32 {
    return r;
}
