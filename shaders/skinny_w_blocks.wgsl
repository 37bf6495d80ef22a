// skinny_matmul.wgsl's weight part for W in the GGUF's quantised blocks, laid out as
// blocks_common.wgsl (which follows this part) says. A product reads a sixth of the bytes
// of f32 weights (Q4_0, Q4_1) or about a third (Q8_0); on a GPU whose memory is slow
// beside its arithmetic, that is a step's time. Every weight is the f32 of the
// dequantised matrix, so a product differs from one over it only in summation order.

@group(0) @binding(1) var<storage, read_write> w: array<u32>; // [N, K / 32 * BLOCK_WORDS]

const LANES_ALONG_K: bool = true;

// Code word j (from load_word), widened and multiplied into the rows' sums.
fn add_word(acc: ptr<function, array<f32, {{ tm }}>>, word: vec3<u32>, j: u32, m0: u32, rows: u32) {
    let weights = widen(word);
    // Up to TM, not `rows`: a loop of constant length unrolls, so the sums can stay in
    // registers.
    for (var r = 0u; r < TM; r++) {
        if r < rows {
            var sum = 0.0;
            for (var p = 0u; p < PER_WORD; p++) {
                sum += weights[p] * x_at(m0 + r, k_of(j, p));
            }
            (*acc)[r] += sum;
        }
    }
}

// Lane `lane`'s share of column n's sums for rows m0 .. m0 + rows: every SPLIT-th code
// word, two in flight, so that their loads overlap.
fn partial_sums(n: u32, lane: u32, m0: u32, rows: u32, t: u32) -> array<f32, {{ tm }}> {
    var acc: array<f32, {{ tm }}>;
    if n >= N {
        return acc;
    }
    for (var j = lane; j < CODES; j += 2u * SPLIT) {
        let second = j + SPLIT < CODES;
        let a = load_word(n, j);
        var b = vec3<u32>(0u);
        if second {
            b = load_word(n, j + SPLIT);
        }
        add_word(&acc, a, j, m0, rows);
        if second {
            add_word(&acc, b, j + SPLIT, m0, rows);
        }
    }
    return acc;
}
