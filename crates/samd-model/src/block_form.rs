//! What a matrix the block kernels read holds ([`crate::layer_ops::Layout::Blocks`]):
//! the file's quantised blocks, or its 16-bit floats.
//!
//! A file of F16 or BF16 matrices widened to f32 on the GPU takes twice its size there,
//! and every product reads twice the bytes: SmolLM2-135M in F16 is 270 MB, 540 MB as f32.
//! Held two to a u32 word, in blocks of 32 values without a scale, the same weight parts
//! that read quantised blocks read them (`shaders/blocks_common.wgsl`), and widen each to
//! the f32 the file's value is, exactly.

use crate::dequant::{bf16_to_f32, f16_to_f32, f32_to_f16};
use crate::gguf::GgmlType;
use crate::quant_rows::{BLOCK, QuantKind};

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

    /// The bits of `value` in this type, where `value` is one of its finite values (read
    /// from it, so nothing rounds); `None` for any other value.
    pub fn bits(self, value: f32) -> Option<u16> {
        let bits = self.nearest(value);
        let exact = self.widen(bits).to_bits() == value.to_bits();
        (exact && value.is_finite()).then_some(bits)
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
}

/// What a matrix in [`crate::layer_ops::Layout::Blocks`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockForm {
    /// The file's quantised blocks ([`crate::quant_rows::QuantRows::gpu_words`]).
    Quant(QuantKind),
    /// 16-bit floats, two to a word ([`half_words`]).
    Half(HalfFloat),
}

impl BlockForm {
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

/// `values` as [`BlockForm::Half`] of `half` reads them: value `2i` in the low half of
/// word `i`, `2i + 1` in its high half, as a GGUF file stores them. `None` where a value
/// is not one of `half`'s finite values, or the count is odd.
pub fn half_words(values: &[f32], half: HalfFloat) -> Option<Vec<u32>> {
    if !values.len().is_multiple_of(2) {
        return None;
    }
    // One pass, and one verdict at the end: a loader packs hundreds of millions of values.
    let mut exact = true;
    let mut bits = |value: f32| {
        let bits = half.bits(value);
        exact &= bits.is_some();
        u32::from(bits.unwrap_or(0))
    };
    let words = values
        .chunks_exact(2)
        .map(|pair| bits(pair[0]) | (bits(pair[1]) << 16))
        .collect();
    exact.then_some(words)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_finite_half_float_gives_back_its_bits() {
        for half in [HalfFloat::F16, HalfFloat::Bf16] {
            for bits in 0..=u16::MAX {
                let value = half.widen(bits);
                if value.is_finite() {
                    assert_eq!(half.bits(value), Some(bits), "{half:?} {bits:#06x}");
                }
            }
        }
    }

    #[test]
    fn values_of_no_half_float_are_refused() {
        // 1 + 2^-11 needs 11 bits of mantissa; 2^-25 is below f16's smallest; 65536 is
        // beyond its largest; 1 + 2^-8 needs 8 bits, bf16 has 7.
        for value in [1.0 + 1.0 / 2048.0, 1.0 / 33_554_432.0, 65_536.0, f32::NAN] {
            assert_eq!(HalfFloat::F16.bits(value), None, "{value}");
        }
        assert_eq!(HalfFloat::Bf16.bits(1.0 + 1.0 / 256.0), None);
        assert_eq!(half_words(&[1.0, 2.0, 3.0], HalfFloat::F16), None);
    }

    #[test]
    fn half_words_pack_pairs_low_half_first() {
        let words = half_words(&[1.0, -2.0, 0.5, 65_504.0], HalfFloat::F16).unwrap();
        assert_eq!(words, vec![0xc000_3c00, 0x7bff_3800]);
        let words = half_words(&[1.0, -2.0], HalfFloat::Bf16).unwrap();
        assert_eq!(words, vec![0xc000_3f80]);
    }
}
