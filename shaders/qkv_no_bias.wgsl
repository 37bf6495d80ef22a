// skinny_out_qkv.wgsl without a bias (Llama): each output column as the product gives it.

fn with_bias(n: u32, value: f32) -> f32 {
    return value;
}
