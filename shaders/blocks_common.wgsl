// The GGUF's quantised blocks as the kernels read them: shared by skinny_w_blocks.wgsl (a
// product over the blocks) and dequant_blocks.wgsl (the blocks widened to an f32
// matrix), which each declare `w`, the blocks (array<u32>), and K, a row's weights.
//
// W is out-major ([N, K]), each output's row in blocks of 32 weights along K, w = d·q + m.
// A block is BLOCK_WORDS u32 words: d and m as f32 bits, then the file's quants as they
// are, CODE_WORDS words (samd-model's quant_rows.rs, `QuantRows::gpu_words`, packs them
// so; Q4_0's m is −8d and Q8_0's is 0). Word s of a 4-bit block holds weights 4s .. 4s + 3
// in its low nibbles and 16 + 4s .. in its high ones; word s of an 8-bit block holds
// weights 4s .. 4s + 3 as signed bytes. Blocks with a scale per 16 (Q3_K's and Q6_K's)
// have no m: the second word is the d of weights 16 .. 31.
//
// d·q is exact in f32 (at most 24 significant bits: an f16, or an f16 times a K-quant's
// 6-bit sub-block scale, times a code of at most 8 bits), so d·q + m rounds once, whether
// or not the compiler fuses it: every weight is the f32 that samd-model's dequant.rs gives.
// Q5_1 and Q5_K blocks come as 8-bit blocks with an m.
//
// Filled in by samd-model's kernels.rs: four_bit, scale_per_16, per_word (weights per
// code word: 8 or 4), code_words (per block: 4 or 8).

const FOUR_BIT: bool = {{ four_bit }};
const SCALE_PER_16: bool = {{ scale_per_16 }};
const PER_WORD: u32 = {{ per_word }}u;
const CODE_WORDS: u32 = {{ code_words }}u;
const BLOCK_WORDS: u32 = 2u + CODE_WORDS;
const ROW_WORDS: u32 = K / 32u * BLOCK_WORDS;
// Code words in a row of W.
const CODES: u32 = K / 32u * CODE_WORDS;

// Code word j of row n: its weights' d and m (as bits), and the word.
fn load_word(n: u32, j: u32) -> vec3<u32> {
    let at = n * ROW_WORDS + j / CODE_WORDS * BLOCK_WORDS;
    let word = w[at + 2u + j % CODE_WORDS];
    if SCALE_PER_16 {
        // The half's d, and an m of 0.0.
        return vec3<u32>(w[at + j % CODE_WORDS / 4u], 0u, word);
    }
    return vec3<u32>(w[at], w[at + 1u], word);
}

// The input index, within its row, of weight p of code word j.
fn k_of(j: u32, p: u32) -> u32 {
    let first = j / CODE_WORDS * 32u + j % CODE_WORDS * 4u;
    if FOUR_BIT && p >= 4u {
        return first + 12u + p;
    }
    return first + p;
}

// The weights of a code word from load_word, in the order of k_of.
fn widen(word: vec3<u32>) -> array<f32, {{ per_word }}> {
    let d = bitcast<f32>(word.x);
    let m = bitcast<f32>(word.y);
    var weights: array<f32, {{ per_word }}>;
    for (var p = 0u; p < PER_WORD; p++) {
        var q: f32;
        if FOUR_BIT {
            q = f32((word.z >> (8u * (p % 4u) + 4u * (p / 4u))) & 0xfu);
        } else {
            q = f32(bitcast<i32>(word.z << (24u - 8u * p)) >> 24u);
        }
        weights[p] = d * q + m;
    }
    return weights;
}
