// skinny_out_qkv.wgsl's bias (Qwen2's q/k/v biases): added to each output column before
// RoPE turns the keys.

@group(0) @binding(7) var<storage, read_write> bias: array<f32>; // [Q_DIM + 2 * KV_DIM]

fn with_bias(n: u32, value: f32) -> f32 {
    return value + bias[n];
}
