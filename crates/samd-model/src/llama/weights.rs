//! The model's weights by name, and a weight as it comes off the file.

use crate::config::LlamaConfig;
use crate::quant_rows::QuantRows;

/// Which of the model's weights; the one place tensor names are spelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightName {
    /// `token_embd.weight`, dims `[d_model, vocab]`.
    TokenEmbd,
    /// `output.weight`, dims `[d_model, vocab]`; optional (tied embeddings).
    Output,
    /// `output_norm.weight`, dims `[d_model]`.
    OutputNorm,
    /// `blk.{i}.attn_norm.weight`.
    AttnNorm(usize),
    /// `blk.{i}.attn_q.weight`.
    AttnQ(usize),
    /// `blk.{i}.attn_k.weight`.
    AttnK(usize),
    /// `blk.{i}.attn_v.weight`.
    AttnV(usize),
    /// `blk.{i}.attn_output.weight`.
    AttnOutput(usize),
    /// `blk.{i}.ffn_norm.weight`.
    FfnNorm(usize),
    /// `blk.{i}.ffn_gate.weight`.
    FfnGate(usize),
    /// `blk.{i}.ffn_up.weight`.
    FfnUp(usize),
    /// `blk.{i}.ffn_down.weight`.
    FfnDown(usize),
}

impl WeightName {
    /// The GGUF tensor name, as llama.cpp writes it.
    pub fn gguf_name(self) -> String {
        match self {
            Self::TokenEmbd => "token_embd.weight".into(),
            Self::Output => "output.weight".into(),
            Self::OutputNorm => "output_norm.weight".into(),
            Self::AttnNorm(i) => format!("blk.{i}.attn_norm.weight"),
            Self::AttnQ(i) => format!("blk.{i}.attn_q.weight"),
            Self::AttnK(i) => format!("blk.{i}.attn_k.weight"),
            Self::AttnV(i) => format!("blk.{i}.attn_v.weight"),
            Self::AttnOutput(i) => format!("blk.{i}.attn_output.weight"),
            Self::FfnNorm(i) => format!("blk.{i}.ffn_norm.weight"),
            Self::FfnGate(i) => format!("blk.{i}.ffn_gate.weight"),
            Self::FfnUp(i) => format!("blk.{i}.ffn_up.weight"),
            Self::FfnDown(i) => format!("blk.{i}.ffn_down.weight"),
        }
    }

    /// The dims the config implies, GGUF order (`ne0`, the innermost, first). A matrix
    /// `[in, out]` here is row-major `[out, in]` in memory.
    pub fn expected_dims(self, c: &LlamaConfig) -> Vec<usize> {
        let q_dim = c.n_heads * c.head_dim;
        let kv_dim = c.n_kv_heads * c.head_dim;
        match self {
            Self::TokenEmbd | Self::Output => vec![c.d_model, c.vocab_size],
            Self::OutputNorm | Self::AttnNorm(_) | Self::FfnNorm(_) => vec![c.d_model],
            Self::AttnQ(_) => vec![c.d_model, q_dim],
            Self::AttnK(_) | Self::AttnV(_) => vec![c.d_model, kv_dim],
            Self::AttnOutput(_) => vec![q_dim, c.d_model],
            Self::FfnGate(_) | Self::FfnUp(_) => vec![c.d_model, c.d_ffn],
            Self::FfnDown(_) => vec![c.d_ffn, c.d_model],
        }
    }

    /// The matrices whose outputs the model holds side by side with this one's, in order
    /// (a block's q, k and v; its gate and up), each one matrix on the device; itself
    /// alone for the others.
    pub fn fused(self) -> Vec<Self> {
        match self {
            Self::AttnQ(i) | Self::AttnK(i) | Self::AttnV(i) => {
                vec![Self::AttnQ(i), Self::AttnK(i), Self::AttnV(i)]
            }
            Self::FfnGate(i) | Self::FfnUp(i) => vec![Self::FfnGate(i), Self::FfnUp(i)],
            _ => vec![self],
        }
    }

    /// Every weight of a model with `n_layers` blocks, `output.weight` included, made as
    /// they are asked for: `n_layers` is a file's claim, and a check of a file claiming a
    /// billion layers must stop at its first missing weight, not build the list first.
    pub fn all(n_layers: usize) -> impl Iterator<Item = Self> {
        let layer = |i| {
            [
                Self::AttnNorm(i),
                Self::AttnQ(i),
                Self::AttnK(i),
                Self::AttnV(i),
                Self::AttnOutput(i),
                Self::FfnNorm(i),
                Self::FfnGate(i),
                Self::FfnUp(i),
                Self::FfnDown(i),
            ]
        };
        [Self::TokenEmbd, Self::Output, Self::OutputNorm]
            .into_iter()
            .chain((0..n_layers).flat_map(layer))
    }
}

/// A dequantised weight on the host: dims in GGUF order (`ne0` first) and f32 data in
/// row-major order with `ne0` innermost.
#[derive(Debug, Clone)]
pub struct HostTensor {
    /// Dims, innermost first.
    pub dims: Vec<usize>,
    /// `dims.iter().product()` values; empty for a matrix on wgpu that comes as its
    /// `quant` blocks alone.
    pub data: Vec<f32>,
    /// The file's quantised blocks of a matrix ([`QuantRows`]), kept where products read
    /// them in place of `data`: the WGSL kernels on wgpu, and the CPU's products of a few
    /// rows with AVX2. `None` elsewhere and for block types not kept.
    pub quant: Option<QuantRows>,
}
