// top_k.wgsl's score part for sampling: the logit over the temperature plus Gumbel noise,
// -inf outside the nucleus. The top-1 of these scores is an exact draw from the
// softmax at that temperature, cut to the nucleus (Gumbel-max), in the same launches as
// a greedy step's argmax and with nothing sorted.
//
// The noise is a hash of (seed, position, id), with the position the node's: the draw
// after a given prefix reads the same noise whichever step verifies it, so speculative
// sampling commits the very tokens plain sampling does with the same seed. samd-model's
// sampler.rs computes the same noise on the host, so the reference ops draw the same
// ids. A nucleus part follows this file and defines kept(row, scaled).

// [temperature bits, top-p bits, seed low word, seed high word]
@group(0) @binding(2) var<storage, read_write> draw: array<u32>;
// [rows]: each row's node's position.
@group(0) @binding(3) var<storage, read_write> positions: array<u32>;

// pcg4d, from Jarzynski and Olano, "Hash Functions for GPU Rendering" (JCGT 2020): four
// words in, four well-mixed words out.
fn pcg4d(words: vec4<u32>) -> vec4<u32> {
    var v = words * 1664525u + 1013904223u;
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    v ^= v >> vec4<u32>(16u);
    v.x += v.y * v.w;
    v.y += v.z * v.x;
    v.z += v.x * v.y;
    v.w += v.y * v.z;
    return v;
}

// Gumbel noise for `id` at `position`: -ln(-ln u), with u on a grid of 2^23 points
// strictly inside (0, 1), so that both logarithms are finite. Each value is exact in f32.
fn gumbel(position: u32, id: u32) -> f32 {
    let bits = pcg4d(vec4<u32>(id, position, draw[2], draw[3])).x;
    let u = (f32(bits >> 9u) + 0.5) * (1.0 / 8388608.0);
    return -log(-log(u));
}

fn score(row: u32, id: u32) -> f32 {
    let scaled = src[row * VOCAB + id] / bitcast<f32>(draw[0]);
    if !kept(row, scaled) {
        // -inf from a runtime value, as in top_k.wgsl.
        var neg_inf_bits = 0xff800000u;
        return bitcast<f32>(neg_inf_bits);
    }
    return scaled + gumbel(positions[row], id);
}
