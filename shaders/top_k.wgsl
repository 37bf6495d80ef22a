// The k best ids of each row of a [rows, vocab] f32 matrix, best first.
//
// Token Recycling needs the top-k ids of every tree node each step, and verification needs
// the argmax, which is column 0. One or two launches replace k rounds of argmax + mask,
// and only the ids ever leave the GPU.
//
// A workgroup scans items: each lane keeps its own sorted top-k of a strided slice in
// registers, then the workgroup merges the lists pairwise in shared memory, halving the
// live lists each round, and lane 0 writes the k best. One workgroup walking a whole
// 49k-wide row took 200 us on an H200, so a long row is split in two passes (MODE):
// - 0, whole rows: one workgroup per row scans the logits and writes ids;
// - 1, parts: one workgroup per (row, part of SPAN logits) writes its k best as
//   candidates, (value bits, id) pairs;
// - 2, merge: one workgroup per row scans the PARTS * K candidates and writes ids.
//
// Order: a larger value first; equal values go to the lower id, as burn's argmax does.
// NaN never wins. Rows must have at least k entries.
//
// What is ranked comes from a score part appended to this file, which defines
// score(row, id) and its own bindings past binding 1:
// - top_k_logits.wgsl: the logit itself (the argmax and Token Recycling's top-k);
// - top_k_gumbel.wgsl: the logit over a temperature plus Gumbel noise, so that the top-1
//   is a draw (samd-model's sampler.rs), followed by top_k_all.wgsl or, for a top-p
//   nucleus, top_k_nucleus.wgsl.
// The merge (MODE 2) ranks the parts' candidates as they are.
//
// Filled in by samd-model's top_k.rs: k, vocab, threads (a power of two),
// slots = threads * k, mode, parts and span, besides the score part's.

// read_write, though only read: cubecl sub-allocates tensors from shared buffers, and
// wgpu refuses one buffer bound both read-only and read-write in a dispatch.
@group(0) @binding(0) var<storage, read_write> src: array<f32>; // logits, or candidates
@group(0) @binding(1) var<storage, read_write> dst: array<u32>; // ids, or candidates

const K: u32 = {{ k }}u;
const VOCAB: u32 = {{ vocab }}u;
const THREADS: u32 = {{ threads }}u;
const MODE: u32 = {{ mode }}u;
const PARTS: u32 = {{ parts }}u;
const SPAN: u32 = {{ span }}u;
// No id: loses every comparison it can lose.
const NO_ID: u32 = 0xffffffffu;

var<workgroup> shared_values: array<f32, {{ slots }}>;
var<workgroup> shared_ids: array<u32, {{ slots }}>;

// Whether (value a, id i) ranks before (value b, id j).
fn ranks_before(a: f32, i: u32, b: f32, j: u32) -> bool {
    return a > b || (a == b && i < j);
}

@compute @workgroup_size({{ threads }}, 1, 1)
fn main(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) group_id: vec3<u32>,
) {
    let row = group_id.x;
    let part = group_id.y;
    var begin = 0u;
    var end = VOCAB;
    if MODE == 1u {
        begin = part * SPAN;
        end = min(begin + SPAN, VOCAB);
    } else if MODE == 2u {
        end = PARTS * K;
    }

    // This lane's top-k, sorted, in registers.
    var values: array<f32, {{ k }}>;
    var best: array<u32, {{ k }}>;
    // -inf, from a runtime value: WGSL makes a const-expression that evaluates to an
    // infinity a shader-creation error (Chrome's Tint enforces it; naga does not).
    var neg_inf_bits = 0xff800000u;
    let neg_inf = bitcast<f32>(neg_inf_bits);
    for (var s = 0u; s < K; s++) {
        values[s] = neg_inf;
        best[s] = NO_ID;
    }
    for (var item = begin + lane; item < end; item += THREADS) {
        var x: f32;
        var i = item;
        if MODE == 2u {
            let at = (row * PARTS * K + item) * 2u;
            x = src[at];
            i = bitcast<u32>(src[at + 1u]);
        } else {
            x = score(row, item);
        }
        // `x != x` is NaN: never ranked.
        if x != x || !ranks_before(x, i, values[K - 1u], best[K - 1u]) {
            continue;
        }
        // Insertion into the sorted list, dropping its last entry.
        var s = K - 1u;
        while s > 0u && ranks_before(x, i, values[s - 1u], best[s - 1u]) {
            values[s] = values[s - 1u];
            best[s] = best[s - 1u];
            s -= 1u;
        }
        values[s] = x;
        best[s] = i;
    }
    for (var s = 0u; s < K; s++) {
        shared_values[lane * K + s] = values[s];
        shared_ids[lane * K + s] = best[s];
    }
    workgroupBarrier();

    // Each round, list t merges list t + width into itself. Only lists below `width` are
    // written and only lists t and t + width are read by lane t, so no two threads touch
    // the same list within a round.
    for (var width = THREADS / 2u; width > 0u; width /= 2u) {
        if lane < width {
            let a = lane * K;
            let b = (lane + width) * K;
            var ia = 0u;
            var ib = 0u;
            // At most k are taken in all, so neither index passes its list's end while
            // it is read.
            for (var s = 0u; s < K; s++) {
                if ranks_before(shared_values[a + ia], shared_ids[a + ia],
                                shared_values[b + ib], shared_ids[b + ib]) {
                    values[s] = shared_values[a + ia];
                    best[s] = shared_ids[a + ia];
                    ia += 1u;
                } else {
                    values[s] = shared_values[b + ib];
                    best[s] = shared_ids[b + ib];
                    ib += 1u;
                }
            }
            for (var s = 0u; s < K; s++) {
                shared_values[a + s] = values[s];
                shared_ids[a + s] = best[s];
            }
        }
        workgroupBarrier();
    }

    if lane == 0u {
        for (var s = 0u; s < K; s++) {
            if MODE == 1u {
                let at = ((row * PARTS + part) * K + s) * 2u;
                dst[at] = bitcast<u32>(shared_values[s]);
                dst[at + 1u] = shared_ids[s];
            } else {
                dst[row * K + s] = shared_ids[s];
            }
        }
    }
}
