//! Llama hyperparameters, read from GGUF metadata and validated once.
//!
//! The forward pass trusts a [`LlamaConfig`] completely (it sizes tensors from it), so every
//! rule it relies on is checked here, in [`LlamaConfig::validate`], and nowhere else. Keys
//! follow llama.cpp's naming (`{arch}.block_count`, `{arch}.attention.head_count`, …); see
//! <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md#llm>. Three architectures
//! are accepted: `llama`, `qwen2` (Llama with q/k/v biases and NEOX RoPE) and `qwen3`
//! (Llama with an RMSNorm on each query and key head, NEOX RoPE, and heads as wide as the
//! file says); other families need code (other norms, other RoPE variants, other blocks),
//! not just other numbers.

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// GGUF metadata keys the config reads. The per-architecture ones are suffixes appended to
/// `{arch}.`, as llama.cpp spells them.
pub mod keys {
    /// The architecture name, e.g. `"llama"`.
    pub const ARCHITECTURE: &str = "general.architecture";
    /// Number of transformer blocks.
    pub const BLOCK_COUNT: &str = "block_count";
    /// Width of the residual stream.
    pub const EMBEDDING_LENGTH: &str = "embedding_length";
    /// Hidden width of the SwiGLU FFN.
    pub const FEED_FORWARD_LENGTH: &str = "feed_forward_length";
    /// Number of query heads.
    pub const HEAD_COUNT: &str = "attention.head_count";
    /// Number of key/value heads (GQA); absent means equal to the query heads.
    pub const HEAD_COUNT_KV: &str = "attention.head_count_kv";
    /// RMSNorm epsilon.
    pub const RMS_EPS: &str = "attention.layer_norm_rms_epsilon";
    /// RoPE base frequency; absent means 10000 (llama.cpp's default).
    pub const ROPE_FREQ_BASE: &str = "rope.freq_base";
    /// RoPE scaling (`linear`, `yarn`, …); absent or `none` means none.
    pub const ROPE_SCALING_TYPE: &str = "rope.scaling.type";
    /// RoPE scaling factor; llama.cpp takes one without a type as linear scaling.
    pub const ROPE_SCALING_FACTOR: &str = "rope.scaling.factor";
    /// Dimensions of a head that RoPE rotates (all, unless partial).
    pub const ROPE_DIMENSION_COUNT: &str = "rope.dimension_count";
    /// Experts per mixture-of-experts layer (Mixtral); absent or 0 means a dense FFN.
    pub const EXPERT_COUNT: &str = "expert_count";
    /// Width of a key head, where it is not `embedding_length / head_count`.
    pub const KEY_LENGTH: &str = "attention.key_length";
    /// Width of a value head, likewise.
    pub const VALUE_LENGTH: &str = "attention.value_length";
    /// Trained context length.
    pub const CONTEXT_LENGTH: &str = "context_length";
    /// The tokenizer's token list; its length is the vocabulary size.
    pub const TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
}

/// The architectures the forward pass implements, as `general.architecture` names them.
pub const SUPPORTED_ARCHS: [&str; 3] = ["llama", "qwen2", "qwen3"];

/// A block's query bias, whose presence in the first block says a Llama file has q/k/v
/// biases (llama.cpp reads them where present; Qwen2 files must have them).
const FIRST_QUERY_BIAS: &str = "blk.0.attn_q.bias";

/// The embedding tensor, whose row count backs up the vocabulary size.
const TOKEN_EMBD: &str = "token_embd.weight";

/// The tensor of per-frequency RoPE factors (Llama 3.1's long-context scaling).
pub(crate) const ROPE_FREQS: &str = "rope_freqs.weight";

/// RoPE base used when the file does not say (llama.cpp's default).
pub const DEFAULT_ROPE_THETA: f32 = 10_000.0;

/// The most positions a model serves here. The RoPE table holds a row per position, and a
/// file may claim any context (2^31 positions would be a table of terabytes), so a longer
/// trained context is cut to this, which is beyond any cache samd allocates.
pub const MAX_CONTEXT_LEN: usize = 32_768;

/// The widest head the attention kernels hold in a workgroup's memory (Gemma's width; the
/// Llama family's are 64 or 128).
pub const MAX_HEAD_DIM: usize = 256;

/// Which dimensions of a head RoPE rotates together, as the file's q/k rows are ordered.
///
/// The forward pass rotates adjacent pairs; a model whose rows pair the halves has them
/// reordered at load ([`crate::Llama::from_weights`]), which leaves every attention score
/// as it was, since queries and keys move alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs `(2i, 2i + 1)` (ggml's "normal" mode): Llama files, whose rows llama.cpp's
    /// converter permutes into this order.
    Interleaved,
    /// Pairs `(i, i + head_dim / 2)` (ggml's NEOX mode, HF's rotate-half): Qwen2 files,
    /// stored in HF's order.
    Neox,
}

/// Hyperparameters of a Llama-family decoder.
///
/// Invariants after [`validate`](Self::validate): every size is nonzero,
/// `n_heads % n_kv_heads == 0`, `head_dim` is even and at most [`MAX_HEAD_DIM`] (and need
/// not be `d_model / n_heads`: Qwen3's heads are wider),
/// `context_len` is at most [`MAX_CONTEXT_LEN`], and `rms_eps`/`rope_theta` are finite and
/// positive.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Hidden width of the SwiGLU FFN.
    pub d_ffn: usize,
    /// Number of query heads.
    pub n_heads: usize,
    /// Number of key/value heads; each serves `n_heads / n_kv_heads` query heads.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// Positions served: the trained context length, cut to [`MAX_CONTEXT_LEN`]. The RoPE
    /// table is built for this many.
    pub context_len: usize,
    /// Per-frequency RoPE divisors, from `rope_freqs.weight` (Llama 3.1 and later, whose
    /// long-context scaling slows the low frequencies): pair `i` turns by
    /// `position · base^(-2i / head_dim) / factor_i`. Empty means 1 for every pair.
    pub rope_freq_factors: Vec<f32>,
    /// How the file's q/k rows pair the dimensions RoPE rotates.
    pub rope_style: RopeStyle,
    /// Whether each block adds biases to its query, key and value projections (Qwen2).
    pub qkv_bias: bool,
    /// Whether each query and key head is RMS-normed, by a weight of `head_dim`, before
    /// RoPE (Qwen3).
    pub qk_norm: bool,
}

impl LlamaConfig {
    /// SmolLM2-135M's shape, for tests and examples that do not read a file.
    pub fn smollm2_135m() -> Self {
        Self {
            n_layers: 30,
            d_model: 576,
            d_ffn: 1536,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            vocab_size: 49152,
            rms_eps: 1e-5,
            rope_theta: 100_000.0,
            context_len: 8192,
            rope_freq_factors: Vec::new(),
            rope_style: RopeStyle::Interleaved,
            qkv_bias: false,
            qk_norm: false,
        }
    }

    /// A tiny config (2 layers, GQA 4:2, head_dim 8) for fast random-weight tests.
    pub fn tiny() -> Self {
        Self {
            n_layers: 2,
            d_model: 32,
            d_ffn: 48,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 8,
            vocab_size: 64,
            rms_eps: 1e-5,
            rope_theta: 10_000.0,
            context_len: 256,
            rope_freq_factors: Vec::new(),
            rope_style: RopeStyle::Interleaved,
            qkv_bias: false,
            qk_norm: false,
        }
    }

    /// [`LlamaConfig::tiny`] with widths of whole blocks of 32, as a quantised model
    /// needs ([`crate::Llama::random_quantized`]).
    pub fn tiny_quantisable() -> Self {
        Self {
            d_model: 64,
            d_ffn: 96,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 16,
            ..Self::tiny()
        }
    }

    /// Reads and validates the config of a GGUF model.
    ///
    /// Refuses architectures other than [`SUPPORTED_ARCHS`], and files with a variant the
    /// forward pass would silently get wrong ([`refuse_unimplemented_variants`]).
    pub fn from_gguf(file: &GgufFile<'_>) -> Result<Self> {
        let arch = file.architecture()?;
        let (rope_style, qkv_bias, qk_norm) = match arch {
            "llama" => (
                RopeStyle::Interleaved,
                file.tensors().iter().any(|t| t.name == FIRST_QUERY_BIAS),
                false,
            ),
            "qwen2" => (RopeStyle::Neox, true, false),
            "qwen3" => (RopeStyle::Neox, false, true),
            _ => {
                return Err(Error::UnsupportedArchitecture {
                    arch: arch.to_owned(),
                    reason: format!(
                        "only {SUPPORTED_ARCHS:?} are implemented (other families need other \
                         norms, RoPE variants or blocks)"
                    ),
                });
            }
        };
        refuse_unimplemented_variants(file, arch)?;
        let key = |suffix: &str| format!("{arch}.{suffix}");
        let size = |suffix: &str| -> Result<usize> {
            let k = key(suffix);
            let v = file.get_u32(&k)?;
            usize::try_from(v).map_err(|_| Error::InvalidConfig {
                what: format!("{k} = {v} does not fit usize"),
            })
        };
        let n_heads = size(keys::HEAD_COUNT)?;
        let n_kv_heads = match file.get_u32_opt(&key(keys::HEAD_COUNT_KV))? {
            Some(v) => usize::try_from(v).map_err(|_| Error::InvalidConfig {
                what: format!("{} = {v} does not fit usize", key(keys::HEAD_COUNT_KV)),
            })?,
            None => n_heads,
        };
        let d_model = size(keys::EMBEDDING_LENGTH)?;
        if n_heads == 0 {
            return Err(invalid(format!("{} is zero", key(keys::HEAD_COUNT))));
        }
        // A head's width is the key width where the file gives one (Qwen3's heads are
        // wider than d_model / heads); the value width must then be the same.
        let head_dim = match file.get_u32_opt(&key(keys::KEY_LENGTH))? {
            Some(width) => usize::try_from(width).map_err(|_| Error::InvalidConfig {
                what: format!("{} = {width} does not fit usize", key(keys::KEY_LENGTH)),
            })?,
            None => d_model / n_heads,
        };
        let embd = file.tensor(TOKEN_EMBD)?;
        // Prefer the token list (what the tokenizer will produce); fall back to the
        // embedding's row count (ne1).
        let vocab_size = match file.get_array(keys::TOKENIZER_TOKENS) {
            Ok(tokens) => tokens.len(),
            Err(_) => embd
                .dims
                .get(1)
                .and_then(|&d| usize::try_from(d).ok())
                .ok_or_else(|| invalid(format!("{TOKEN_EMBD} has no row dimension")))?,
        };
        let config = Self {
            n_layers: size(keys::BLOCK_COUNT)?,
            d_model,
            d_ffn: size(keys::FEED_FORWARD_LENGTH)?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            rms_eps: file.get_f32(&key(keys::RMS_EPS))?,
            rope_theta: file
                .get_f32_opt(&key(keys::ROPE_FREQ_BASE))?
                .unwrap_or(DEFAULT_ROPE_THETA),
            context_len: size(keys::CONTEXT_LENGTH)?.min(MAX_CONTEXT_LEN),
            rope_freq_factors: match file.tensor(ROPE_FREQS) {
                Ok(_) => file.tensor_f32(ROPE_FREQS)?,
                Err(_) => Vec::new(),
            },
            rope_style,
            qkv_bias,
            qk_norm,
        };
        config.validate()?;
        Ok(config)
    }

    /// Number of query heads sharing one key/value head.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads.max(1)
    }

    /// Checks every invariant the forward pass relies on.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("n_layers", self.n_layers),
            ("d_model", self.d_model),
            ("d_ffn", self.d_ffn),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("context_len", self.context_len),
        ];
        for (what, value) in sizes {
            if value == 0 {
                return Err(invalid(format!("{what} is zero")));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(invalid(format!(
                "n_heads ({}) is not a multiple of n_kv_heads ({})",
                self.n_heads, self.n_kv_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(invalid(format!(
                "head_dim ({}) is odd: RoPE rotates pairs",
                self.head_dim
            )));
        }
        if self.head_dim > MAX_HEAD_DIM {
            return Err(invalid(format!(
                "head_dim ({}) exceeds {MAX_HEAD_DIM}, the widest head the attention kernels hold",
                self.head_dim
            )));
        }
        if self.context_len > MAX_CONTEXT_LEN {
            return Err(invalid(format!(
                "context_len ({}) exceeds {MAX_CONTEXT_LEN}, the most positions served",
                self.context_len
            )));
        }
        if self.n_heads.checked_mul(self.head_dim).is_none() {
            return Err(invalid(format!(
                "n_heads ({}) * head_dim ({}) overflows",
                self.n_heads, self.head_dim
            )));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            return Err(invalid(format!(
                "rms_eps ({}) is not positive",
                self.rms_eps
            )));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(invalid(format!(
                "rope_theta ({}) is not positive",
                self.rope_theta
            )));
        }
        let pairs = self.head_dim / 2;
        if !self.rope_freq_factors.is_empty() && self.rope_freq_factors.len() != pairs {
            return Err(invalid(format!(
                "{ROPE_FREQS} holds {} factors, but a head of {} turns {pairs} pairs",
                self.rope_freq_factors.len(),
                self.head_dim
            )));
        }
        if let Some(f) = self
            .rope_freq_factors
            .iter()
            .find(|f| !(f.is_finite() && **f > 0.0))
        {
            return Err(invalid(format!(
                "{ROPE_FREQS} holds a factor of {f}, not a positive number"
            )));
        }
        // Token ids travel as i32 on the device.
        if i32::try_from(self.vocab_size).is_err() {
            return Err(invalid("vocab_size exceeds i32".to_string()));
        }
        Ok(())
    }
}

/// Refuses a file that asks for what the forward pass does not do, where it would
/// otherwise run and give wrong logits without a word: a scaled, partial or YaRN RoPE, a
/// mixture of experts (Mixtral is `llama` in GGUF), and values or RoPE over another width
/// than the keys'. Tensors it would not read (an output bias, say) are refused by
/// [`crate::Llama::check_gguf`].
/// A value that only restates the default (a scaling type `none`, a factor of 1) passes.
fn refuse_unimplemented_variants(file: &GgufFile<'_>, arch: &str) -> Result<()> {
    let refuse = |reason: String| {
        Err(Error::UnsupportedArchitecture {
            arch: arch.to_owned(),
            reason,
        })
    };
    let key = |suffix: &str| format!("{arch}.{suffix}");
    let scaling = key(keys::ROPE_SCALING_TYPE);
    if file.metadata(&scaling).is_some() {
        let kind = file.get_str(&scaling)?;
        if kind != "none" {
            return refuse(format!(
                "{scaling} = {kind:?}: only unscaled RoPE is implemented"
            ));
        }
    }
    let factor = key(keys::ROPE_SCALING_FACTOR);
    if let Some(f) = file.get_f32_opt(&factor)? {
        // llama.cpp reads 0 as "not set", and a factor without a type as linear scaling.
        if f != 0.0 && f != 1.0 && file.metadata(&scaling).is_none() {
            return refuse(format!("{factor} = {f}: scaled RoPE is not implemented"));
        }
    }
    if let Some(n) = file
        .get_u32_opt(&key(keys::EXPERT_COUNT))?
        .filter(|&n| n > 0)
    {
        return refuse(format!(
            "{} = {n}: mixtures of experts are not implemented",
            key(keys::EXPERT_COUNT)
        ));
    }
    // A head's width: the key width where given, else d_model / heads.
    let width = match file.get_u32_opt(&key(keys::KEY_LENGTH))? {
        Some(width) => width,
        None => match (
            file.get_u32_opt(&key(keys::EMBEDDING_LENGTH))?,
            file.get_u32_opt(&key(keys::HEAD_COUNT))?,
        ) {
            (Some(d), Some(h)) if h > 0 => d / h,
            // The config's own checks name a missing or zero size.
            _ => return Ok(()),
        },
    };
    for (suffix, what) in [
        (keys::VALUE_LENGTH, "a value width"),
        (keys::ROPE_DIMENSION_COUNT, "RoPE over a width"),
    ] {
        let k = key(suffix);
        if let Some(n) = file.get_u32_opt(&k)?.filter(|&n| n != width) {
            return refuse(format!(
                "{k} = {n}: {what} other than the key width ({width}) is not implemented"
            ));
        }
    }
    Ok(())
}

fn invalid(what: String) -> Error {
    Error::InvalidConfig { what }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_builtin_shapes_validate() {
        LlamaConfig::smollm2_135m().validate().expect("smollm2");
        LlamaConfig::tiny().validate().expect("tiny");
    }

    #[test]
    fn config_rejects_bad_gqa_and_odd_head_dim() {
        let mut c = LlamaConfig::tiny();
        c.n_kv_heads = 3;
        assert!(matches!(c.validate(), Err(Error::InvalidConfig { .. })));
        let mut c = LlamaConfig::tiny();
        c.head_dim = 7;
        c.n_heads = 4;
        c.d_model = 28;
        let err = c.validate().expect_err("odd head_dim");
        assert!(err.to_string().contains("odd"), "{err}");
        let mut c = LlamaConfig::tiny();
        c.n_layers = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn config_rejects_heads_wider_than_the_kernels_and_contexts_beyond_the_table() {
        let mut c = LlamaConfig::tiny();
        (c.n_heads, c.n_kv_heads, c.head_dim, c.d_model) = (1, 1, 512, 512);
        let err = c.validate().expect_err("head_dim 512");
        assert!(err.to_string().contains("head_dim (512)"), "{err}");
        let mut c = LlamaConfig::tiny();
        c.context_len = MAX_CONTEXT_LEN + 1;
        let err = c.validate().expect_err("context");
        assert!(err.to_string().contains("context_len"), "{err}");
    }
}
