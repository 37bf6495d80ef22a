//! What a matrix held in blocks holds: the file's quantised blocks, or its 16-bit
//! floats. On the host that is a [`crate::block_rows::BlockRows`], which the CPU's
//! products read; on wgpu a [`crate::layer_ops::Layout::Blocks`] matrix, which the WGSL
//! kernels read.
//!
//! A file of F16 or BF16 matrices widened to f32 takes twice its size, and every product
//! reads twice the bytes: SmolLM2-135M in F16 is 270 MB, 540 MB as f32. Held in blocks of
//! 32 values without a scale, the products that read quantised blocks read them too
//! (`shaders/blocks_common.wgsl`, and `crate::cpu_matmul` on x86-64), and widen each to
//! the f32 the file's value is, exactly.

use crate::block_rows::{BLOCK, QuantKind};
use crate::dequant::{bf16_to_f32, f16_to_f32, f32_to_f16};
use crate::gguf::GgmlType;

/// A 16-bit float type a file stores weights in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfFloat {
    /// IEEE half precision.
    F16,
    /// bfloat16: the top half of an f32.
    Bf16,
}

impl HalfFloat {
    /// The type of a GGUF tensor of `dtype`, if it is a 16-bit float.
    pub fn of(dtype: GgmlType) -> Option<Self> {
        match dtype {
            GgmlType::F16 => Some(Self::F16),
            GgmlType::BF16 => Some(Self::Bf16),
            _ => None,
        }
    }

    /// The bits of a value of this type near `value`: the nearest for f16, the next
    /// toward zero for bf16 (its top half).
    pub fn nearest(self, value: f32) -> u16 {
        match self {
            Self::F16 => f32_to_f16(value),
            Self::Bf16 => (value.to_bits() >> 16) as u16,
        }
    }

    /// The f32 whose bits `bits` are in this type: what `shaders/blocks_common.wgsl`
    /// computes, and [`crate::dequant`] gives.
    pub fn widen(self, bits: u16) -> f32 {
        match self {
            Self::F16 => f16_to_f32(bits),
            Self::Bf16 => bf16_to_f32(bits),
        }
    }

    /// Whether `bits` are a finite value of this type: neither infinity nor NaN.
    pub fn is_finite(self, bits: u16) -> bool {
        let exponent = match self {
            Self::F16 => 0x7c00,
            Self::Bf16 => 0x7f80,
        };
        bits & exponent != exponent
    }
}

/// What a matrix in blocks holds ([`crate::block_rows::BlockRows`] on the host,
/// [`crate::layer_ops::Layout::Blocks`] on wgpu).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockForm {
    /// The file's quantised blocks.
    Quant(QuantKind),
    /// 16-bit floats, two to a word on wgpu.
    Half(HalfFloat),
}

impl BlockForm {
    /// The form a matrix of GGUF type `dtype` is held in, if it is held in blocks
    /// ([`QuantKind::of`], [`HalfFloat::of`]); the rest are widened to f32.
    pub fn of(dtype: GgmlType) -> Option<Self> {
        QuantKind::of(dtype)
            .map(Self::Quant)
            .or_else(|| HalfFloat::of(dtype).map(Self::Half))
    }

    /// Bytes of codes per block on the host: a quantised block's, or 32 16-bit floats'.
    pub(crate) const fn code_bytes(self) -> usize {
        match self {
            Self::Quant(kind) => kind.quant_bytes(),
            Self::Half(_) => 2 * BLOCK,
        }
    }

    /// Scales per block on the host: none for 16-bit floats.
    pub(crate) const fn scales_per_block(self) -> usize {
        match self {
            Self::Quant(kind) => kind.scales_per_block(),
            Self::Half(_) => 0,
        }
    }

    /// Whether a block has a minimum.
    pub(crate) const fn has_min(self) -> bool {
        match self {
            Self::Quant(kind) => kind.has_min(),
            Self::Half(_) => false,
        }
    }

    /// u32 words per block of [`BLOCK`] values: the scale words, then the codes.
    pub(crate) fn block_words(self) -> usize {
        match self {
            Self::Quant(kind) => kind.gpu_block_words(),
            Self::Half(_) => BLOCK / 2,
        }
    }

    /// Code words per block, as the kernels take them: a quantised block's u32 words of
    /// codes, or pairs of words of 16-bit floats, four values each.
    pub(crate) fn code_words(self) -> usize {
        match self {
            Self::Quant(kind) => kind.gpu_code_words(),
            Self::Half(_) => BLOCK / 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finite_bits_are_those_that_widen_to_finite_values() {
        for half in [HalfFloat::F16, HalfFloat::Bf16] {
            for bits in 0..=u16::MAX {
                let finite = half.widen(bits).is_finite();
                assert_eq!(half.is_finite(bits), finite, "{half:?} {bits:#06x}");
            }
        }
    }

    #[test]
    fn the_nearest_bits_widen_back_to_values_of_the_type() {
        for half in [HalfFloat::F16, HalfFloat::Bf16] {
            for bits in (0..=u16::MAX).filter(|&b| half.is_finite(b)) {
                assert_eq!(half.nearest(half.widen(bits)), bits, "{half:?} {bits:#06x}");
            }
        }
    }
}
