//! Models with pseudo-random weights, for tests and benchmarks: f32, or quantised as
//! SmolLM2's files are.

use burn::tensor::Device;

use super::{HostTensor, Llama, WeightName};
use crate::block_form::HalfFloat;
use crate::block_rows::BlockRows;
use crate::config::LlamaConfig;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::gguf_writer::{half_bytes, q4_1_bytes, q5_1_bytes, q6_k_bytes, q8_0_bytes};

impl Llama {
    /// A model with deterministic pseudo-random weights, for tests. `tied` leaves out
    /// `output.weight`.
    pub fn random(config: LlamaConfig, seed: u64, tied: bool, device: &Device) -> Result<Self> {
        let c = config.clone();
        Self::from_weights(config, device, |name| {
            if tied && name == WeightName::Output {
                return Ok(None);
            }
            Ok(Some(random_weight(&c, name, seed)))
        })
    }

    /// [`Llama::random`] with its matrices quantised as SmolLM2's file has them (the
    /// token embedding in Q8_0, the rest in Q4_1), but for the down projections, in Q5_1
    /// as a Q5_K_M file has them, and the second layer's in Q6_K where its rows are whole
    /// super-blocks of 256, so that the kernel checks cover each kind of block with a
    /// minimum, and with a scale per 16; and for the attention's output projections, in
    /// F16 (the first layer's) and BF16 (the rest), which the kernels read as 16-bit
    /// floats. Each is loaded as [`Llama::from_gguf`] loads such a file. Widths must be
    /// multiples of 32.
    pub fn random_quantized(
        config: LlamaConfig,
        seed: u64,
        tied: bool,
        device: &Device,
    ) -> Result<Self> {
        let c = config.clone();
        Self::from_weights(config, device, |name| {
            if tied && name == WeightName::Output {
                return Ok(None);
            }
            let t = random_weight(&c, name, seed);
            let [cols, rows] = t.dims[..] else {
                return Ok(Some(t));
            };
            let (dtype, bytes) = match name {
                WeightName::AttnOutput(0) => (GgmlType::F16, half_bytes(HalfFloat::F16, &t.data)),
                WeightName::AttnOutput(_) => (GgmlType::BF16, half_bytes(HalfFloat::Bf16, &t.data)),
                WeightName::TokenEmbd => (GgmlType::Q8_0, q8_0_bytes(&t.data)),
                WeightName::FfnDown(1) if cols % 256 == 0 => (GgmlType::Q6_K, q6_k_bytes(&t.data)),
                WeightName::FfnDown(_) => (GgmlType::Q5_1, q5_1_bytes(&t.data)),
                _ => (GgmlType::Q4_1, q4_1_bytes(&t.data)),
            };
            let quant = BlockRows::from_gguf(dtype, &bytes, rows, cols);
            if quant.is_none() {
                return Err(Error::InvalidInput {
                    what: format!("{} is {rows} x {cols}: not whole blocks", name.gguf_name()),
                });
            }
            let data =
                crate::dequant::dequantize(dtype, &bytes, t.data.len() as u64).map_err(|e| {
                    Error::InvalidInput {
                        what: format!("{}: {e:?}", name.gguf_name()),
                    }
                })?;
            Ok(Some(HostTensor {
                dims: t.dims,
                data,
                quant,
            }))
        })
    }
}

/// Deterministic pseudo-random weights (splitmix64 per tensor): norms near 1, biases in
/// [-1, 1), matrices uniform with a `1/sqrt(fan_in)` scale so activations stay O(1)
/// through the layers.
pub(super) fn random_weight(c: &LlamaConfig, name: WeightName, seed: u64) -> HostTensor {
    let dims = name.expected_dims(c);
    let len = dims.iter().product::<usize>();
    let mut state = seed
        ^ name
            .gguf_name()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // uniform in [-1, 1)
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let bias = matches!(
        name,
        WeightName::AttnQBias(_) | WeightName::AttnKBias(_) | WeightName::AttnVBias(_)
    );
    let data = if bias {
        (0..len).map(|_| next()).collect()
    } else if dims.len() == 1 {
        (0..len).map(|_| 1.0 + 0.2 * next()).collect()
    } else {
        let scale = match name {
            WeightName::TokenEmbd => 1.0,
            _ => 1.7 / (dims[0] as f32).sqrt(),
        };
        (0..len).map(|_| scale * next()).collect()
    };
    HostTensor {
        dims,
        data,
        quant: None,
    }
}
