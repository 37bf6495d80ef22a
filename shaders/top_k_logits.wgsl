// top_k.wgsl's score part for the top-k of the logits: each logit as it is.

fn score(row: u32, id: u32) -> f32 {
    return src[row * VOCAB + id];
}
