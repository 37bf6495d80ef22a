// skinny_matmul.wgsl's output part for the attention's projection, whose columns are
// q | k | v: the queries go to y ([M, Q_DIM]), and the keys, with RoPE applied, and the
// values go straight into the KV cache at slots slots[0] + row, so storing them costs no
// launch of its own. It follows skinny_in_normed.wgsl, which holds binding 3, and
// kv_store_common.wgsl, with the cache's layout and RoPE (k[c^1], the RoPE mate, is what
// the core passes in as `mate`), and by qkv_bias.wgsl or qkv_no_bias.wgsl, which define
// with_bias(n, value): column n's output with its bias added, or as it is.

@group(0) @binding(4) var<storage, read_write> rope: array<f32>;  // [M, 2 * HEAD_DIM]: cos | sin
@group(0) @binding(5) var<storage, read_write> cache: array<f32>; // [2, KV_HEADS, MAX_SEQ, HEAD_DIM]
// The first new slot (the committed keys), then the nodes: a buffer, not the uniform, so
// that a replayed step graph reads each step's own (step_graph.rs).
@group(0) @binding(6) var<storage, read_write> slots: array<u32>;

fn write_out(row: u32, n: u32, product: f32, mate_product: f32) {
    let value = with_bias(n, product);
    let mate = with_bias(n ^ 1u, mate_product);
    if n < Q_DIM {
        y[row * Q_DIM + n] = value;
        return;
    }
    // kv_head * HEAD_DIM + c, in k or in v
    let column = (n - Q_DIM) % KV_DIM;
    let slot = slots[0] + row;
    if n < Q_DIM + KV_DIM {
        store_key(row, column, slot, value, mate);
    } else {
        store_value(column, slot, value);
    }
}
