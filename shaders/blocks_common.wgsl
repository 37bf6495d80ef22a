// The GGUF's quantised blocks, and its 16-bit floats, as the kernels read them: shared
// by skinny_w_blocks.wgsl (a product over the blocks) and dequant_blocks.wgsl (the blocks
// widened to an f32 matrix), which each declare `w`, the blocks (array<u32>), and K, a
// row's weights.
//
// W is out-major ([N, K]), each output's row in blocks of 32 weights along K, w = d·q + m.
// A block is BLOCK_WORDS u32 words: d and m as f32 bits, then the file's quants as they
// are, CODE_WORDS words (samd-model's block_rows.rs, `BlockRows::gpu_words`, packs them
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
// A file's 16-bit floats (HALF_FLOAT 1: f16, 2: bf16) come as blocks of 32 without d or
// m: u32 word s of a block holds values 2s (low half) and 2s + 1, as the file stores them
// (samd-model's block_form.rs), and a code word is a pair of them, four values, as an
// 8-bit word holds. (With one u32 a code word, two values, lavapipe summed a tree's rows
// other than its first otherwise than a lone row's, one ulp apart: plain decoding's bits
// were lost.) Each widens to the f32 that samd-model's dequant.rs gives, by integer
// operations, not unpack2x16float, which a driver may flush to zero below f16's normal
// range.
//
// Filled in by samd-model's kernels.rs: four_bit, scale_per_16, half_float (0 for
// quantised blocks), per_word (weights per code word: 8 or 4), code_words (per block:
// 4 or 8).

const FOUR_BIT: bool = {{ four_bit }};
const SCALE_PER_16: bool = {{ scale_per_16 }};
const HALF_FLOAT: u32 = {{ half_float }}u;
const PER_WORD: u32 = {{ per_word }}u;
const CODE_WORDS: u32 = {{ code_words }}u;
// d and m (or two d) lead a quantised block.
const SCALE_WORDS: u32 = select(2u, 0u, HALF_FLOAT != 0u);
// u32 words per code word: two for 16-bit floats, four values, as an 8-bit word has.
const UNIT_WORDS: u32 = select(1u, 2u, HALF_FLOAT != 0u);
const BLOCK_WORDS: u32 = SCALE_WORDS + CODE_WORDS * UNIT_WORDS;
const ROW_WORDS: u32 = K / 32u * BLOCK_WORDS;
// Code words in a row of W.
const CODES: u32 = K / 32u * CODE_WORDS;
// How far along the row a code word's first weight is from the previous word's: a 4-bit
// word's low nibbles are 4 consecutive weights, its high ones 16 further.
const WORD_SPAN: u32 = select(PER_WORD, 4u, FOUR_BIT);

// Code word j of row n: its weights' d and m (as bits), and the word.
fn load_word(n: u32, j: u32) -> vec3<u32> {
    let at = n * ROW_WORDS + j / CODE_WORDS * BLOCK_WORDS;
    let code = at + SCALE_WORDS + j % CODE_WORDS * UNIT_WORDS;
    let word = w[code];
    if HALF_FLOAT != 0u {
        return vec3<u32>(word, w[code + 1u], 0u);
    }
    if SCALE_PER_16 {
        // The half's d, and an m of 0.0.
        return vec3<u32>(w[at + j % CODE_WORDS / 4u], 0u, word);
    }
    return vec3<u32>(w[at], w[at + 1u], word);
}

// The input index, within its row, of weight p of code word j.
fn k_of(j: u32, p: u32) -> u32 {
    let first = j / CODE_WORDS * 32u + j % CODE_WORDS * WORD_SPAN;
    if FOUR_BIT && p >= 4u {
        return first + 12u + p;
    }
    return first + p;
}

// The f32 of the 16-bit float in h's low 16 bits.
fn widen_half(h: u32) -> f32 {
    if HALF_FLOAT == 2u {
        return bitcast<f32>(h << 16u);
    }
    let sign = (h & 0x8000u) << 16u;
    let exp = (h >> 10u) & 0x1fu;
    let mant = h & 0x3ffu;
    if exp == 0u {
        // Zero or subnormal: mant · 2^-24, exact in f32 and within its normal range.
        return bitcast<f32>(sign | bitcast<u32>(f32(mant) * 5.9604644775390625e-8));
    }
    // The load refuses files with infinities or NaNs, so exp is below 31.
    return bitcast<f32>(sign | ((exp + 112u) << 23u) | (mant << 13u));
}

// The weights of a code word from load_word, in the order of k_of.
fn widen(word: vec3<u32>) -> array<f32, {{ per_word }}> {
    let d = bitcast<f32>(word.x);
    let m = bitcast<f32>(word.y);
    var weights: array<f32, {{ per_word }}>;
    if HALF_FLOAT != 0u {
        weights[0] = widen_half(word.x & 0xffffu);
        weights[1] = widen_half(word.x >> 16u);
        weights[2] = widen_half(word.y & 0xffffu);
        weights[3] = widen_half(word.y >> 16u);
        return weights;
    }
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
