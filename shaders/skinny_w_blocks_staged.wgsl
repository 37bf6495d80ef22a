// skinny_matmul.wgsl's weight part for W in the GGUF's quantised blocks
// (blocks_common.wgsl, which follows), for tiles of many rows: a tree's nodes.
//
// A lane of skinny_w_blocks.wgsl reads x where its code word's weights sit: k = 4s .. 4s
// + 3 and 16 + 4s .. of a block, so at each load a warp's lanes touch 32 addresses spread
// over eight cache lines, and a tile of 32 rows makes 32 such loads per weight. Here the
// workgroup first copies x into shared memory, CHUNK inputs of SUB rows at a time (which
// `partial`, free between the input part's norm and the core's sums, holds exactly), in
// the order the lanes read it: at one weight index p, lanes with neighbouring words read
// neighbouring slots. An input part's x_at (the norm's weight, SwiGLU) then runs once per
// input per workgroup rather than once per column.
//
// Each lane reads the same code words in the same order, and sums each row the same way,
// as in skinny_w_blocks.wgsl: a row's value does not depend on the tile it is in, which
// is what keeps speculative decoding's output equal to plain decoding's.
//
// Filled in by samd-model's kernels.rs: lane_words (a lane's code words per chunk).

@group(0) @binding(1) var<storage, read_write> w: array<u32>; // [N, K / 32 * BLOCK_WORDS]

const LANES_ALONG_K: bool = true;
// Inputs staged at a time, and rows: SUB * CHUNK fills `partial`.
const CHUNK: u32 = 256u;
const SUB: u32 = 8u;
// A row's code words per chunk, and each lane's share (SPLIT divides CHUNK_WORDS).
const CHUNK_WORDS: u32 = CHUNK / PER_WORD;
const LANE_WORDS: u32 = {{ lane_words }}u;

// The slot of a chunk's input kk of staged row r: by weight index p, then word.
fn stage_slot(r: u32, kk: u32) -> u32 {
    let block = kk / 32u;
    let within = kk % 32u;
    var word: u32;
    var p: u32;
    if FOUR_BIT {
        let low = within % 16u;
        word = block * CODE_WORDS + low / 4u;
        p = low % 4u + 4u * (within / 16u);
    } else {
        word = block * CODE_WORDS + within / PER_WORD;
        p = within % PER_WORD;
    }
    return r * CHUNK + p * CHUNK_WORDS + word;
}

// Lane `lane`'s share of column n's sums for rows m0 .. m0 + rows: every SPLIT-th code
// word, as skinny_w_blocks.wgsl takes them. Every lane of the workgroup calls this (t is
// its index), since all of them stage x.
fn partial_sums(n: u32, lane: u32, m0: u32, rows: u32, t: u32) -> array<f32, {{ tm }}> {
    var acc: array<f32, {{ tm }}>;
    for (var k0 = 0u; k0 < K; k0 += CHUNK) {
        // The lane's words of this chunk, widened once for every row.
        var weights: array<array<f32, {{ per_word }}>, {{ lane_words }}>;
        var live: array<bool, {{ lane_words }}>;
        for (var i = 0u; i < LANE_WORDS; i++) {
            let j = k0 / PER_WORD + lane + i * SPLIT;
            live[i] = n < N && j < CODES;
            if live[i] {
                weights[i] = widen(load_word(n, j));
            }
        }
        for (var sub = 0u; sub < TM; sub += SUB) {
            if sub < rows {
                for (var i = t; i < SUB * CHUNK; i += LANES) {
                    let r = i / CHUNK;
                    let kk = i % CHUNK;
                    var v = 0.0;
                    if sub + r < rows && k0 + kk < K {
                        v = x_at(m0 + sub + r, k0 + kk);
                    }
                    partial[stage_slot(r, kk)] = v;
                }
            }
            workgroupBarrier();
            if sub < rows {
                for (var i = 0u; i < LANE_WORDS; i++) {
                    if live[i] {
                        let word = lane + i * SPLIT;
                        for (var r = 0u; r < SUB; r++) {
                            var sum = 0.0;
                            for (var p = 0u; p < PER_WORD; p++) {
                                sum += weights[i][p] * partial[r * CHUNK + p * CHUNK_WORDS + word];
                            }
                            acc[sub + r] += sum;
                        }
                    }
                }
            }
            workgroupBarrier();
        }
    }
    return acc;
}
