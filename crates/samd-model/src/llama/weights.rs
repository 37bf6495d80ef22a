//! The model's weights by name, and a weight as it comes off the file.

use crate::block_rows::BlockRows;
use crate::config::{LlamaConfig, RopeStyle};

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
    /// `blk.{i}.attn_q.bias`, where the config has q/k/v biases.
    AttnQBias(usize),
    /// `blk.{i}.attn_k.bias`, likewise.
    AttnKBias(usize),
    /// `blk.{i}.attn_v.bias`, likewise.
    AttnVBias(usize),
    /// `blk.{i}.attn_q_norm.weight`, `[head_dim]`, where the config norms each query
    /// and key head (Qwen3).
    AttnQNorm(usize),
    /// `blk.{i}.attn_k_norm.weight`, likewise.
    AttnKNorm(usize),
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
            Self::AttnQBias(i) => format!("blk.{i}.attn_q.bias"),
            Self::AttnKBias(i) => format!("blk.{i}.attn_k.bias"),
            Self::AttnVBias(i) => format!("blk.{i}.attn_v.bias"),
            Self::AttnQNorm(i) => format!("blk.{i}.attn_q_norm.weight"),
            Self::AttnKNorm(i) => format!("blk.{i}.attn_k_norm.weight"),
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
            Self::AttnQBias(_) => vec![q_dim],
            Self::AttnKBias(_) | Self::AttnVBias(_) => vec![kv_dim],
            Self::AttnQNorm(_) | Self::AttnKNorm(_) => vec![c.head_dim],
            Self::AttnOutput(_) => vec![q_dim, c.d_model],
            Self::FfnGate(_) | Self::FfnUp(_) => vec![c.d_model, c.d_ffn],
            Self::FfnDown(_) => vec![c.d_ffn, c.d_model],
        }
    }

    /// The matrices whose outputs the model holds side by side with this one's, in order
    /// (a block's q, k and v; its gate and up), each one matrix on the device, and
    /// likewise the q, k and v biases, one vector; itself alone for the others.
    pub fn fused(self) -> Vec<Self> {
        match self {
            Self::AttnQ(i) | Self::AttnK(i) | Self::AttnV(i) => {
                vec![Self::AttnQ(i), Self::AttnK(i), Self::AttnV(i)]
            }
            Self::AttnQBias(i) | Self::AttnKBias(i) | Self::AttnVBias(i) => {
                vec![Self::AttnQBias(i), Self::AttnKBias(i), Self::AttnVBias(i)]
            }
            Self::FfnGate(i) | Self::FfnUp(i) => vec![Self::FfnGate(i), Self::FfnUp(i)],
            _ => vec![self],
        }
    }

    /// Every weight of a model of config `c`, `output.weight` and the biases it has
    /// included, made as they are asked for: `n_layers` is a file's claim, and a check of
    /// a file claiming a billion layers must stop at its first missing weight, not build
    /// the list first.
    pub fn all(c: &LlamaConfig) -> impl Iterator<Item = Self> + use<> {
        let (biases, head_norms) = (c.qkv_bias, c.qk_norm);
        let layer = move |i| {
            let bias = [Self::AttnQBias(i), Self::AttnKBias(i), Self::AttnVBias(i)];
            let head_norm = [Self::AttnQNorm(i), Self::AttnKNorm(i)];
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
            .into_iter()
            .chain(bias.into_iter().filter(move |_| biases))
            .chain(head_norm.into_iter().filter(move |_| head_norms))
        };
        [Self::TokenEmbd, Self::Output, Self::OutputNorm]
            .into_iter()
            .chain((0..c.n_layers).flat_map(layer))
    }

    /// Whether RoPE rotates this weight's outputs: the queries' and keys' matrices,
    /// biases and head norms, whose rows a [`RopeStyle::Neox`] model reorders at load.
    pub fn feeds_rope(self) -> bool {
        matches!(
            self,
            Self::AttnQ(_)
                | Self::AttnK(_)
                | Self::AttnQBias(_)
                | Self::AttnKBias(_)
                | Self::AttnQNorm(_)
                | Self::AttnKNorm(_)
        )
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
    /// The file's blocks of a matrix ([`BlockRows`]: quantised, or 16-bit floats), kept
    /// where products read them in place of `data`: the WGSL kernels on wgpu, and the
    /// CPU's products of a few rows with AVX2 and in wasm
    /// ([`crate::cpu_matmul::reads_blocks_of`]). `None` elsewhere and for types not kept.
    pub quant: Option<BlockRows>,
}

impl HostTensor {
    /// The tensor with its rows (its outputs: `dims[1]` rows of `dims[0]` for a matrix,
    /// single values for a vector) reordered so that RoPE's pairs lie adjacent, as the
    /// forward pass rotates them, where `style` pairs the halves of each head of
    /// `head_dim`: row `2i` of a head is its row `i`, row `2i + 1` its row
    /// `i + head_dim / 2`.
    pub fn with_interleaved_rope(self, style: RopeStyle, head_dim: usize) -> Self {
        if style == RopeStyle::Interleaved {
            return self;
        }
        let row_len = if self.dims.len() == 1 {
            1
        } else {
            self.dims[0]
        };
        let rows = self.dims.iter().product::<usize>() / row_len.max(1);
        let half = head_dim / 2;
        let source = |r: usize| {
            let c = r % head_dim;
            r - c + c / 2 + (c % 2) * half
        };
        let order: Vec<usize> = (0..rows).map(source).collect();
        let data = match self.data.is_empty() {
            true => Vec::new(),
            false => order
                .iter()
                .flat_map(|&r| &self.data[r * row_len..][..row_len])
                .copied()
                .collect(),
        };
        Self {
            data,
            quant: self.quant.map(|q| q.gather_rows(&order)),
            dims: self.dims,
        }
    }
}
