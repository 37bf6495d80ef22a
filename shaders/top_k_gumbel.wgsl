// top_k.wgsl's score part for sampling: the logit over the temperature plus Gumbel noise,
// -inf outside the nucleus. The top-1 of these scores is an exact draw from the
// softmax at that temperature, cut to the nucleus (Gumbel-max), in the same launches as
// a greedy step's argmax and with nothing sorted.
//
// The noise is a hash of (seed, step, row, id), which samd-model's sampler.rs computes
// the same way on the host: the reference ops draw the same ids from it, and a replayed
// step graph draws fresh noise because the step counter is in the draw buffer, which is
// refilled before each replay. A nucleus part follows this file and defines
// kept(row, scaled).

// [temperature bits, top-p bits, seed low word, seed high word, step, 0, 0, 0]
@group(0) @binding(2) var<storage, read_write> draw: array<u32>;

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

// Gumbel noise for `id` in `row`: -ln(-ln u), with u on a grid of 2^23 points strictly
// inside (0, 1), so that both logarithms are finite. Each value is exact in f32.
fn gumbel(row: u32, id: u32) -> f32 {
    let mixed = pcg4d(vec4<u32>(id, row, draw[4], draw[2]));
    let bits = pcg4d(vec4<u32>(mixed.x ^ draw[3], mixed.y, mixed.z, mixed.w)).x;
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
    return scaled + gumbel(row, id);
}
