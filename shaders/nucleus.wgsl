// The top-p nucleus of each row of a [rows, vocab] f32 matrix of logits at a temperature:
// the smallest probability threshold τ whose kept mass Σ_{p ≥ τ} p still reaches top-p,
// found by 24 rounds of bisection over [0, max p]. top_k_nucleus.wgsl then keeps the
// ids with p ≥ τ. This equals the sorted-prefix nucleus except for ids within 2^-24 of
// max p of τ, and it needs no sort, which WebGPU has none of.
//
// One workgroup per row: every round is a pass over the row and a sum across the
// workgroup. The reference ops (samd-model's sampler.rs) run the same rounds as burn ops,
// each a few launches; here they are one.
//
// Filled in by samd-model's sampler.rs: vocab.

// read_write, though only read: cubecl sub-allocates tensors from shared buffers, and
// wgpu refuses one buffer bound both read-only and read-write in a dispatch.
@group(0) @binding(0) var<storage, read_write> src: array<f32>; // [rows, VOCAB] logits
// As top_k_gumbel.wgsl's: the temperature and top-p in its first two words.
@group(0) @binding(1) var<storage, read_write> draw: array<u32>;
@group(0) @binding(2) var<storage, read_write> nucleus: array<f32>; // [rows, 4]: max, sum, τ, 0

const VOCAB: u32 = {{ vocab }}u;
const LANES: u32 = 256u;
const ROUNDS: u32 = 24u;

var<workgroup> partial: array<f32, 256>;

// The workgroup's sum (or, with `largest`, its max) of each lane's `value`, seen by every
// lane.
fn across(t: u32, value: f32, largest: bool) -> f32 {
    partial[t] = value;
    workgroupBarrier();
    for (var stride = LANES / 2u; stride > 0u; stride /= 2u) {
        if t < stride {
            if largest {
                partial[t] = max(partial[t], partial[t + stride]);
            } else {
                partial[t] += partial[t + stride];
            }
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(local_invocation_index) t: u32,
    @builtin(workgroup_id) group_id: vec3<u32>,
) {
    let row = group_id.x * VOCAB;
    let temperature = bitcast<f32>(draw[0]);
    let top_p = bitcast<f32>(draw[1]);

    var neg_inf_bits = 0xff800000u;
    var local_max = bitcast<f32>(neg_inf_bits);
    for (var id = t; id < VOCAB; id += LANES) {
        local_max = max(local_max, src[row + id] / temperature);
    }
    let m = across(t, local_max, true);

    var local_sum = 0.0;
    for (var id = t; id < VOCAB; id += LANES) {
        local_sum += exp(src[row + id] / temperature - m);
    }
    let z = across(t, local_sum, false);

    // The most likely id's probability, exp(0) / z, bounds τ from above.
    var lo = 0.0;
    var hi = 1.0 / z;
    for (var halving = 0u; halving < ROUNDS; halving++) {
        let mid = (lo + hi) / 2.0;
        var mass = 0.0;
        for (var id = t; id < VOCAB; id += LANES) {
            let p = exp(src[row + id] / temperature - m) / z;
            if p >= mid {
                mass += p;
            }
        }
        if across(t, mass, false) >= top_p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    if t == 0u {
        let at = group_id.x * 4u;
        nucleus[at] = m;
        nucleus[at + 1u] = z;
        nucleus[at + 2u] = lo;
        nucleus[at + 3u] = 0.0;
    }
}
