// dequant_blocks.wgsl's rows part for an embedding's rows: output row r is row ids[r], a
// token id, which the host has checked against the vocabulary.

@group(0) @binding(2) var<storage, read_write> ids: array<i32>; // [ROWS]

fn source_row(r: u32) -> u32 {
    return u32(ids[r]);
}
