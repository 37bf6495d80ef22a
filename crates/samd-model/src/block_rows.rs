//! A matrix's rows kept in the file's blocks, for the CPU's products of a few rows, and
//! on their way to the WGSL kernels: quantised blocks, or 16-bit floats.
//!
//! A one-node step on the CPU is bound by reading the weights: SmolLM2-135M's are 540 MB
//! as f32, 92 MB in the file's Q4_1 and Q8_0 blocks, and 270 MB in F16. The few-row
//! products ([`crate::cpu_matmul`]) read the blocks and widen each to f32 in registers,
//! with the operations [`crate::dequant`] does, so that a product over the blocks is bit
//! for bit the product over the dequantised matrix. They do so only where they run
//! AVX2 or wasm's SIMD, and 16-bit floats only with AVX2
//! ([`crate::cpu_matmul::reads_blocks_of`]); elsewhere models keep no blocks.

use crate::block_form::{BlockForm, HalfFloat};
use crate::dequant::{self, f16_to_f32};
use crate::gguf::{GgmlType, GgufFile, TensorInfo};

/// Elements per block, in every type kept here.
pub(crate) const BLOCK: usize = 32;

/// The block forms kept: those whose blocks widen in a few instructions. Files of other
/// types keep them where their values fit ([`QuantKind::of`]); the rest are read as f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantKind {
    /// d·q, 8-bit q.
    Q8_0,
    /// d·(q − 8), 4-bit q.
    Q4_0,
    /// d·q + m, 4-bit q.
    Q4_1,
    /// d·q + m, 5-bit q held in a byte: Q4_1's arithmetic over Q8_0's codes.
    Q5_1,
    /// d·q, 8-bit q, with a d for each 16 values: Q8_0's codes with two scales.
    Q8_16,
}

impl QuantKind {
    /// The kind a GGUF type is kept as, if it is: its own, or one whose blocks hold its
    /// values exactly (Q5_0's and IQ4's codes fit Q8_0's bytes, a Q4_K or Q5_K sub-block
    /// is a Q4_1 or Q5_1 block with f32 scales, and Q3_K's and Q6_K's blocks of 32 are
    /// Q8_16's), so that llama.cpp's presets run on the block kernels too. The rest are
    /// read as f32.
    pub fn of(dtype: GgmlType) -> Option<Self> {
        match dtype {
            GgmlType::Q8_0 | GgmlType::Q5_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => {
                Some(Self::Q8_0)
            }
            GgmlType::Q4_0 => Some(Self::Q4_0),
            GgmlType::Q4_1 | GgmlType::Q4_K => Some(Self::Q4_1),
            GgmlType::Q5_1 | GgmlType::Q5_K => Some(Self::Q5_1),
            GgmlType::Q3_K | GgmlType::Q6_K => Some(Self::Q8_16),
            _ => None,
        }
    }

    /// The kind's name: the GGUF type whose blocks these are, but for Q8_16, which is no
    /// GGUF type's.
    pub fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "Q8_0",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_1 => "Q5_1",
            Self::Q8_16 => "Q8_16",
        }
    }

    /// Bytes of quants per block: a byte per code, or two 4-bit codes a byte.
    pub(crate) const fn quant_bytes(self) -> usize {
        match self {
            Self::Q8_0 | Self::Q5_1 | Self::Q8_16 => 32,
            Self::Q4_0 | Self::Q4_1 => 16,
        }
    }

    /// Scales per block: one, or one for each half (Q8_16).
    pub(crate) const fn scales_per_block(self) -> usize {
        match self {
            Self::Q8_16 => 2,
            _ => 1,
        }
    }

    /// Whether the codes are bytes (signed; Q5_1's are 0 to 31), not nibbles.
    pub(crate) const fn byte_codes(self) -> bool {
        self.quant_bytes() == 32
    }

    /// Whether a block stores a minimum after its scale: `d·q + m`.
    pub(crate) const fn has_min(self) -> bool {
        matches!(self, Self::Q4_1 | Self::Q5_1)
    }

    /// u32 words per block in [`BlockRows::gpu_words`]: d and m (or two d), then the
    /// quants.
    pub(crate) fn gpu_block_words(self) -> usize {
        2 + self.gpu_code_words()
    }

    /// u32 words of quants per block in [`BlockRows::gpu_words`].
    pub(crate) fn gpu_code_words(self) -> usize {
        self.quant_bytes() / 4
    }
}

/// Rows of a matrix each task of [`BlockRows::widen`] widens: a few hundred KB of f32.
#[cfg(not(target_arch = "wasm32"))]
const WIDEN_ROWS_PER_TASK: usize = 64;

/// A `[rows, cols]` matrix in blocks of 32 along each row: quantised blocks, with the
/// scales (and minimums) already widened from f16, each in an array of its own so that
/// a row's quants lie contiguous; or 16-bit floats as the file stores them, without
/// scales.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockRows {
    form: BlockForm,
    rows: usize,
    cols: usize,
    /// [`BlockForm::scales_per_block`] per block.
    scales: Vec<f32>,
    /// Empty for forms without a minimum.
    mins: Vec<f32>,
    /// [`BlockForm::code_bytes`] per block: a quantised block's codes, or a 16-bit
    /// float's two bytes, little-endian, per value.
    quants: Vec<u8>,
}

impl BlockRows {
    /// The rows of a GGUF tensor of type `dtype` and `rows × cols` values (`cols` being
    /// `ne0`), from its bytes; `None` if the type is not kept here or the bytes are not
    /// exactly its blocks (the f32 path reports those). A 16-bit float matrix's rows
    /// must be whole blocks of [`BLOCK`] values too, as the products read them so.
    pub fn from_gguf(dtype: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        let form = BlockForm::of(dtype)?;
        let file_block = usize::try_from(dtype.block_size()).ok()?;
        let file_block_bytes = usize::try_from(dtype.type_size()).ok()?;
        if !cols.is_multiple_of(file_block) || !cols.is_multiple_of(BLOCK) {
            return None;
        }
        let values = rows.checked_mul(cols)?;
        if bytes.len() != (values / file_block).checked_mul(file_block_bytes)? {
            return None;
        }
        let blocks = values / BLOCK;
        let mut m = Self {
            form,
            rows,
            cols,
            scales: Vec::with_capacity(blocks * form.scales_per_block()),
            mins: Vec::with_capacity(if form.has_min() { blocks } else { 0 }),
            quants: Vec::with_capacity(blocks * form.code_bytes()),
        };
        if let BlockForm::Half(_) = form {
            m.quants.extend_from_slice(bytes);
            return Some(m);
        }
        for block in bytes.chunks_exact(file_block_bytes) {
            m.push_file_block(dtype, block);
        }
        Some(m)
    }

    /// Appends one block of the file (`dtype`'s size, checked by the caller) as blocks of
    /// [`BLOCK`] in this matrix's kind. Each value they widen to is the one
    /// [`crate::dequant`] gives for the file's block, to the bit: the scales they take
    /// are its sub-blocks' `d·sc` (an f16 times an integer of at most 8 bits, exact in
    /// f32), and their codes are its levels.
    fn push_file_block(&mut self, dtype: GgmlType, block: &[u8]) {
        let half = |at: usize| f16_to_f32(u16::from_le_bytes([block[at], block[at + 1]]));
        let as_byte = |level: i16| level.to_le_bytes()[0];
        match dtype {
            GgmlType::Q8_0 | GgmlType::Q4_0 => {
                self.scales.push(half(0));
                self.quants.extend_from_slice(&block[2..]);
            }
            GgmlType::Q4_1 => {
                self.scales.push(half(0));
                self.mins.push(half(2));
                self.quants.extend_from_slice(&block[4..]);
            }
            // Five-bit codes less 16 are Q8_0's codes, at the same scale.
            GgmlType::Q5_0 => {
                self.scales.push(half(0));
                let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
                let codes = dequant::q5_codes(qh, &block[6..]);
                self.quants.extend(codes.map(|q| as_byte(q - 16)));
            }
            // IQ4's levels fit Q8_0's codes.
            GgmlType::IQ4_NL => {
                self.scales.push(half(0));
                let levels = dequant::iq4_levels(&block[2..]);
                self.quants.extend(levels.map(|k| k.to_le_bytes()[0]));
            }
            GgmlType::IQ4_XS => {
                let Ok(block) = <&[u8; 136]>::try_from(block) else {
                    return;
                };
                for (dl, qs) in dequant::iq4_xs_blocks(block) {
                    self.scales.push(dl);
                    let levels = dequant::iq4_levels(qs);
                    self.quants.extend(levels.map(|k| k.to_le_bytes()[0]));
                }
            }
            // Each sub-block of 32 is a Q4_1 block.
            GgmlType::Q4_K => {
                if let Ok(block) = <&[u8; 144]>::try_from(block) {
                    self.push_k_sub_blocks(dequant::q4_k_blocks(block));
                }
            }
            // Q5 codes in bytes, with the block's minimum.
            GgmlType::Q5_1 => {
                self.scales.push(half(0));
                self.mins.push(half(2));
                let qh = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
                let codes = dequant::q5_codes(qh, &block[8..]);
                self.quants.extend(codes.map(as_byte));
            }
            // Each sub-block of 32 is a Q5_1 block.
            GgmlType::Q5_K => {
                if let Ok(block) = <&[u8; 176]>::try_from(block) {
                    self.push_k_sub_blocks(dequant::q5_k_blocks(block));
                }
            }
            // Blocks of 32 with a scale per half.
            GgmlType::Q3_K => {
                if let Ok(block) = <&[u8; 110]>::try_from(block) {
                    self.push_halves(dequant::q3_k_blocks(block));
                }
            }
            GgmlType::Q6_K => {
                if let Ok(block) = <&[u8; 210]>::try_from(block) {
                    self.push_halves(dequant::q6_k_blocks(block));
                }
            }
            _ => unreachable!("invariant: BlockForm::of keeps only the types above"),
        }
    }

    /// Appends a K-quant super-block's sub-blocks of 32 as blocks of this matrix's kind
    /// (Q4_1 or Q5_1): `d·sc·q − dmin·m` is `d'·q + m'`, with `m' = −dmin·m`. Q4_1's
    /// codes are repacked as its nibbles (element i low, element i + 16 high).
    fn push_k_sub_blocks<'a>(
        &mut self,
        sub_blocks: impl Iterator<Item = (f32, f32, impl Iterator<Item = i16> + 'a)>,
    ) {
        for (d, m, codes) in sub_blocks {
            self.scales.push(d);
            self.mins.push(-m);
            let mut code = [0u8; BLOCK];
            for (c, q) in code.iter_mut().zip(codes) {
                *c = q.to_le_bytes()[0];
            }
            if matches!(self.form, BlockForm::Quant(kind) if kind.byte_codes()) {
                self.quants.extend_from_slice(&code);
            } else {
                let (low, high) = code.split_at(BLOCK / 2);
                self.quants
                    .extend(low.iter().zip(high).map(|(&l, &h)| l | (h << 4)));
            }
        }
    }

    /// Appends blocks of 32 byte codes with a scale per half: Q8_16's.
    fn push_halves(&mut self, blocks: impl Iterator<Item = ([f32; 2], [u8; BLOCK])>) {
        for (scales, codes) in blocks {
            self.scales.extend(scales);
            self.quants.extend_from_slice(&codes);
        }
    }

    /// The blocks of a matrix in `file`; `None` for tensors that are not matrices of a
    /// kept type, whose bytes are not exactly their blocks, or whose rows are not.
    pub fn of_tensor(file: &GgufFile<'_>, info: &TensorInfo) -> Option<Self> {
        let [cols, rows] = info.dims[..] else {
            return None;
        };
        let (cols, rows) = (usize::try_from(cols).ok()?, usize::try_from(rows).ok()?);
        Self::from_gguf(info.dtype, file.tensor_bytes(&info.name).ok()?, rows, cols)
    }

    /// Matrices of one form and width stacked row-wise (as a block's q, k and v
    /// projections are); `None` if they differ.
    pub fn stack(parts: Vec<Self>) -> Option<Self> {
        let (first, rest) = parts.split_first()?;
        if rest
            .iter()
            .any(|p| p.form != first.form || p.cols != first.cols)
        {
            return None;
        }
        Some(Self {
            form: first.form,
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            scales: parts
                .iter()
                .flat_map(|p| p.scales.iter().copied())
                .collect(),
            mins: parts.iter().flat_map(|p| p.mins.iter().copied()).collect(),
            quants: parts
                .iter()
                .flat_map(|p| p.quants.iter().copied())
                .collect(),
        })
    }

    /// Whether every scale and minimum, or every 16-bit float, is a finite number: a
    /// corrupt file's (a random or damaged f16) may read as NaN or infinity.
    pub fn is_finite(&self) -> bool {
        let scales = self.scales.iter().chain(&self.mins).all(|x| x.is_finite());
        scales
            && match self.form {
                BlockForm::Quant(_) => true,
                BlockForm::Half(half) => self
                    .quants
                    .chunks_exact(2)
                    .all(|b| half.is_finite(u16::from_le_bytes([b[0], b[1]]))),
            }
    }

    /// Rows `order[0]`, `order[1]`, … of this matrix, in that order: each row's blocks
    /// move whole, as a row's quants, scales and minimums lie contiguous.
    pub fn gather_rows(&self, order: &[usize]) -> Self {
        fn gather<T: Copy>(values: &[T], rows: usize, order: &[usize]) -> Vec<T> {
            let per_row = values.len() / rows.max(1);
            order
                .iter()
                .flat_map(|&r| &values[r * per_row..][..per_row])
                .copied()
                .collect()
        }
        Self {
            form: self.form,
            rows: order.len(),
            cols: self.cols,
            scales: gather(&self.scales, self.rows, order),
            mins: gather(&self.mins, self.rows, order),
            quants: gather(&self.quants, self.rows, order),
        }
    }

    /// The blocks as the WGSL kernels read them (`shaders/blocks_common.wgsl`): row by
    /// row, each block as [`BlockForm::block_words`] u32 words. A quantised block is `d`
    /// and `m` as f32 bits, then the file's quants as they are. Every kind is
    /// `w = d·q + m` there: Q4_0's `d·(q − 8)` is `d·q + (−8d)`, exactly, and Q8_0's `m`
    /// is 0; Q8_16 has its second half's `d` in place of `m`. 16-bit floats are two to a
    /// word, the first in the low half, as the file stores them. Only copies and exact
    /// products: the kernels widen each weight to the f32 [`crate::dequant`] gives.
    pub fn gpu_words(&self) -> Vec<u32> {
        let le_words = |bytes: &[u8]| {
            bytes
                .chunks_exact(4)
                .map(|q| u32::from_le_bytes([q[0], q[1], q[2], q[3]]))
                .collect::<Vec<_>>()
        };
        let BlockForm::Quant(kind) = self.form else {
            return le_words(&self.quants);
        };
        let quant_bytes = kind.quant_bytes();
        let blocks = self.quants.len() / quant_bytes;
        let mut words = Vec::with_capacity(blocks * kind.gpu_block_words());
        for (b, quants) in self.quants.chunks_exact(quant_bytes).enumerate() {
            let d = self.scales[b * kind.scales_per_block()];
            let m = match kind {
                QuantKind::Q4_1 | QuantKind::Q5_1 => self.mins[b],
                QuantKind::Q4_0 => -8.0 * d,
                QuantKind::Q8_0 => 0.0,
                QuantKind::Q8_16 => self.scales[2 * b + 1],
            };
            words.extend([d.to_bits(), m.to_bits()]);
            words.extend(le_words(quants));
        }
        words
    }

    /// The matrix widened to f32, `[rows, cols]` row-major, each value the one
    /// [`crate::dequant`] gives: a native prompt's pass over a model held in blocks alone
    /// widens each matrix it multiplies (wasm's read the blocks). On every core: on one,
    /// a 1,000-token prefill took 3–4% longer (BENCHMARKS).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn widen(&self) -> Vec<f32> {
        use rayon::prelude::{IndexedParallelIterator, ParallelIterator, ParallelSliceMut};
        let mut values = vec![0.0; self.rows * self.cols];
        values
            .par_chunks_mut(self.cols.max(1) * WIDEN_ROWS_PER_TASK)
            .enumerate()
            .for_each(|(task, chunk)| {
                let mut row = Vec::with_capacity(self.cols);
                for (i, out) in chunk.chunks_exact_mut(self.cols).enumerate() {
                    row.clear();
                    self.widen_row(task * WIDEN_ROWS_PER_TASK + i, &mut row);
                    out.copy_from_slice(&row);
                }
            });
        values
    }

    /// Row `r` widened to f32 onto `out`, each value the one [`crate::dequant`] gives.
    ///
    /// # Panics
    /// If `r` is past the rows.
    pub fn widen_row(&self, r: usize, out: &mut Vec<f32>) {
        assert!(r < self.rows, "invariant: rows in the matrix");
        let per_row = self.cols / BLOCK;
        let quant_bytes = self.form.code_bytes();
        let kind = match self.form {
            BlockForm::Quant(kind) => kind,
            BlockForm::Half(half) => {
                let codes = &self.quants[r * per_row * quant_bytes..][..per_row * quant_bytes];
                match half {
                    HalfFloat::F16 => dequant::half_values(f16_to_f32, codes, out),
                    HalfFloat::Bf16 => dequant::half_values(dequant::bf16_to_f32, codes, out),
                }
                return;
            }
        };
        let per_block = kind.scales_per_block();
        for b in r * per_row..(r + 1) * per_row {
            let quants = &self.quants[b * quant_bytes..][..quant_bytes];
            let d = &self.scales[b * per_block..][..per_block];
            match kind {
                QuantKind::Q8_0 => dequant::q8_0_values(d[0], quants, out),
                QuantKind::Q4_0 => dequant::q4_0_values(d[0], quants, out),
                QuantKind::Q4_1 => dequant::q4_1_values(d[0], self.mins[b], quants, out),
                QuantKind::Q5_1 => dequant::q5_1_values(d[0], self.mins[b], quants, out),
                QuantKind::Q8_16 => dequant::q8_16_values([d[0], d[1]], quants, out),
            }
        }
    }

    /// The bytes the blocks take: codes, and scales and minimums as f32.
    pub fn bytes(&self) -> usize {
        self.quants.len() + 4 * (self.scales.len() + self.mins.len())
    }

    /// What the blocks are.
    pub fn form(&self) -> BlockForm {
        self.form
    }

    /// The kind of the quantised blocks, for the products that read no others (wasm's
    /// integer products).
    ///
    /// # Panics
    /// If the matrix holds 16-bit floats.
    #[cfg(any(test, target_arch = "wasm32"))]
    pub(crate) fn quant_kind(&self) -> QuantKind {
        match self.form {
            BlockForm::Quant(kind) => kind,
            BlockForm::Half(_) => unreachable!("invariant: integer products read quantised blocks"),
        }
    }

    /// Rows of the matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.cols
    }
}

#[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
pub(crate) use reading::{Codec, Q4_0, Q4_1, Q5_1, Q8_0, Q8_16, QuantRow};
#[cfg(target_arch = "x86_64")]
pub(crate) use reading_halves::{Bf16, F16, HalfCodec, HalfRow};

/// Rows as the products that read blocks read them: AVX2's and wasm's.
#[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
mod reading {
    use std::marker::PhantomData;
    use std::ops::Range;

    use super::{BLOCK, BlockForm, BlockRows, QuantKind};

    /// A block type, for code compiled once per type.
    pub(crate) trait Codec: Copy + Send + Sync + 'static {
        /// The kind this codec reads.
        const KIND: QuantKind;
    }

    /// [`QuantKind::Q8_0`]'s codec.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Q8_0;
    /// [`QuantKind::Q4_0`]'s codec.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Q4_0;
    /// [`QuantKind::Q4_1`]'s codec.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Q4_1;

    /// [`QuantKind::Q5_1`]'s codec.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Q5_1;

    /// [`QuantKind::Q8_16`]'s codec.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Q8_16;

    impl Codec for Q8_0 {
        const KIND: QuantKind = QuantKind::Q8_0;
    }

    impl Codec for Q4_0 {
        const KIND: QuantKind = QuantKind::Q4_0;
    }

    impl Codec for Q4_1 {
        const KIND: QuantKind = QuantKind::Q4_1;
    }

    impl Codec for Q5_1 {
        const KIND: QuantKind = QuantKind::Q5_1;
    }

    impl Codec for Q8_16 {
        const KIND: QuantKind = QuantKind::Q8_16;
    }

    impl BlockRows {
        /// The rows in `range`, read with `C`.
        ///
        /// # Panics
        /// If `C` is not this matrix's kind, or the range is past its rows.
        pub(crate) fn rows_in<C: Codec>(
            &self,
            range: Range<usize>,
        ) -> impl Iterator<Item = QuantRow<'_, C>> {
            self.check_read(BlockForm::Quant(C::KIND), &range);
            let per_row = self.cols / BLOCK;
            let quant_bytes = C::KIND.quant_bytes();
            let per_block = C::KIND.scales_per_block();
            range.map(move |j| {
                let blocks = j * per_row..(j + 1) * per_row;
                QuantRow {
                    scales: &self.scales[blocks.start * per_block..blocks.end * per_block],
                    mins: if C::KIND.has_min() {
                        &self.mins[blocks.clone()]
                    } else {
                        &[]
                    },
                    quants: &self.quants[blocks.start * quant_bytes..blocks.end * quant_bytes],
                    codec: PhantomData,
                }
            })
        }

        /// That rows in `range` may be read as `form`.
        pub(super) fn check_read(&self, form: BlockForm, range: &Range<usize>) {
            assert_eq!(form, self.form, "invariant: rows read with their codec");
            assert!(range.end <= self.rows, "invariant: rows in the matrix");
        }
    }

    /// One row of a [`BlockRows`].
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct QuantRow<'a, C> {
        /// [`QuantKind::scales_per_block`] per block.
        scales: &'a [f32],
        mins: &'a [f32],
        quants: &'a [u8],
        codec: PhantomData<C>,
    }

    impl<'a, C: Codec> QuantRow<'a, C> {
        /// Values in the row.
        pub(crate) fn len(&self) -> usize {
            self.quants.len() / C::KIND.quant_bytes() * BLOCK
        }

        /// The row's blocks' minimums: none for kinds without them.
        #[cfg(target_arch = "wasm32")]
        #[inline(always)]
        pub(crate) fn mins(&self) -> &'a [f32] {
            self.mins
        }

        /// The row's blocks in order: each one's scales (of its first and second 16
        /// values: the same but in Q8_16), minimum (0 for kinds without one) and quants.
        /// Walked by iterators, so that a loop over them has no bounds checks.
        #[inline(always)]
        pub(crate) fn raw_blocks(&self) -> impl Iterator<Item = ([f32; 2], f32, &[u8])> {
            // Kinds without a minimum have none stored: theirs read as 0.
            let mins = self.mins.iter().copied().chain(std::iter::repeat(0.0));
            let quants = self.quants.chunks_exact(C::KIND.quant_bytes());
            let per_block = C::KIND.scales_per_block();
            self.scales
                .chunks_exact(per_block)
                .zip(mins)
                .zip(quants)
                .map(move |((scales, min), quants)| {
                    ([scales[0], scales[per_block - 1]], min, quants)
                })
        }
    }
}

/// 16-bit float rows as the products that read them read them: AVX2's. Wasm holds 16-bit
/// floats as f32 ([`crate::cpu_matmul::reads_blocks_of`]).
#[cfg(target_arch = "x86_64")]
mod reading_halves {
    use std::marker::PhantomData;
    use std::ops::Range;

    use super::{BlockForm, BlockRows, HalfFloat};

    /// A 16-bit float type, for code compiled once per type.
    pub(crate) trait HalfCodec: Copy + Send + Sync + 'static {
        /// The type this codec reads.
        const HALF: HalfFloat;
    }

    /// [`HalfFloat::F16`]'s codec.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct F16;

    /// [`HalfFloat::Bf16`]'s codec.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Bf16;

    impl HalfCodec for F16 {
        const HALF: HalfFloat = HalfFloat::F16;
    }

    impl HalfCodec for Bf16 {
        const HALF: HalfFloat = HalfFloat::Bf16;
    }

    impl BlockRows {
        /// The rows in `range` of a matrix of 16-bit floats, read with `H`.
        ///
        /// # Panics
        /// If `H` is not this matrix's type, or the range is past its rows.
        pub(crate) fn half_rows_in<H: HalfCodec>(
            &self,
            range: Range<usize>,
        ) -> impl Iterator<Item = HalfRow<'_, H>> {
            self.check_read(BlockForm::Half(H::HALF), &range);
            let row_bytes = 2 * self.cols;
            range.map(move |j| HalfRow {
                bits: &self.quants[j * row_bytes..(j + 1) * row_bytes],
                codec: PhantomData,
            })
        }
    }

    /// One row of a [`BlockRows`] of 16-bit floats: their bytes, little-endian.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct HalfRow<'a, H> {
        bits: &'a [u8],
        codec: PhantomData<H>,
    }

    impl<'a, H: HalfCodec> HalfRow<'a, H> {
        /// Values in the row.
        pub(crate) fn len(&self) -> usize {
            self.bits.len() / 2
        }

        /// The row's bytes: value `i` in bytes `2i` and `2i + 1`, little-endian.
        #[inline(always)]
        pub(crate) fn bits(&self) -> &'a [u8] {
            self.bits
        }
    }
}

/// A file type in each kind's own layout, and Q3_K, whose codes reach Q8_16 another way:
/// the types the checks and tests of every kind's products run over.
pub(crate) const TYPES_OF_EACH_KIND: [GgmlType; 6] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_1,
    GgmlType::Q6_K,
    GgmlType::Q3_K,
];

/// The 16-bit float types, which the checks and tests of the products run over too.
pub(crate) const HALF_TYPES: [GgmlType; 2] = [GgmlType::F16, GgmlType::BF16];

/// `rows` rows of `dtype` in [`random_blocks`], as wide as the least multiple of its
/// block from `min_cols` up: the file's bytes, and the rows held from them.
pub(crate) fn random_rows(
    dtype: GgmlType,
    rows: usize,
    min_cols: usize,
    seed: u64,
) -> (Vec<u8>, BlockRows) {
    let block = usize::try_from(dtype.block_size()).expect("invariant: blocks of 32 or 256");
    let cols = min_cols.next_multiple_of(block);
    let bytes = random_blocks(dtype, rows * cols / block, seed);
    let held = BlockRows::from_gguf(dtype, &bytes, rows, cols).expect("invariant: whole blocks");
    (bytes, held)
}

/// Blocks of `dtype` (a type [`BlockForm::of`] keeps; a 16-bit float's block is one
/// value) with every byte pseudo-random, scales and minimums kept to modest f16s, and
/// 16-bit floats to finite values under 2: for the tests, and the check of the CPU's
/// block products.
pub(crate) fn random_blocks(dtype: GgmlType, blocks: usize, seed: u64) -> Vec<u8> {
    use GgmlType::{
        BF16, F16, IQ4_NL, IQ4_XS, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0,
    };
    // Where each block's f16 scale (and minimum) lie: first, or last in Q3_K and Q6_K;
    // and the bits of their high bytes kept. f16 exponent bits 0b00xxx: magnitudes
    // under 2^-8. A 16-bit float's top exponent bit clear: under 2, subnormals included.
    let (halves, high_bits) = match dtype {
        Q8_0 | Q4_0 | Q5_0 | IQ4_NL | IQ4_XS => (0..2, 0x8f),
        Q4_1 | Q5_1 | Q4_K | Q5_K => (0..4, 0x8f),
        Q3_K => (108..110, 0x8f),
        Q6_K => (208..210, 0x8f),
        F16 | BF16 => (0..2, 0xbf),
        _ => panic!("{dtype} is not a type kept in blocks"),
    };
    let size = usize::try_from(dtype.type_size()).unwrap();
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (s >> 33) as u8
    };
    (0..blocks)
        .flat_map(|_| {
            let mut block: Vec<u8> = (0..size).map(|_| next()).collect();
            for half in block[halves.clone()].chunks_exact_mut(2) {
                half[1] &= high_bits;
            }
            block
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files of other types kept in a kind's blocks widen to the values their own
    /// blocks dequantise to, bit for bit: three blocks of each (or three rows of one
    /// super-block), from the `gguf` package's fixture.
    #[test]
    fn other_types_kept_as_blocks_widen_to_their_own_values() {
        let mut kept = Vec::new();
        for (dtype, bytes, values) in crate::dequant::tests::gguf_package_blocks() {
            let Some(kind) = QuantKind::of(dtype) else {
                continue;
            };
            let cols = dtype.block_size() as usize;
            let rows = BlockRows::from_gguf(dtype, &bytes, values.len() / cols, cols).unwrap();
            assert_eq!(rows.form, BlockForm::Quant(kind));
            let differ = rows
                .widen()
                .iter()
                .zip(&values)
                .position(|(g, w)| g.to_bits() != w.to_bits());
            assert_eq!(differ, None, "{dtype}: first difference at {differ:?}");
            kept.push(dtype);
        }
        use GgmlType::*;
        assert_eq!(
            kept.len(),
            [
                Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS
            ]
            .len()
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn rows_hold_each_blocks_scale_minimum_and_quants() {
        let (rows, cols) = (3, 64);
        // The kinds that hold their file's quants as they are (Q5_1's are repacked).
        for dtype in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1] {
            let bytes = random_blocks(dtype, rows * cols / BLOCK, 7);
            let packed = BlockRows::from_gguf(dtype, &bytes, rows, cols).unwrap();
            let got: Vec<([f32; 2], f32, Vec<u8>)> = match packed.form() {
                BlockForm::Quant(QuantKind::Q8_0) => blocks_of::<Q8_0>(&packed),
                BlockForm::Quant(QuantKind::Q4_0) => blocks_of::<Q4_0>(&packed),
                BlockForm::Quant(QuantKind::Q4_1) => blocks_of::<Q4_1>(&packed),
                _ => unreachable!("not among the types above"),
            };
            let size = dtype.type_size() as usize;
            let half = |b: &[u8]| f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            // One scale a block: both halves read it.
            let want: Vec<([f32; 2], f32, Vec<u8>)> = bytes
                .chunks_exact(size)
                .map(|b| match dtype {
                    GgmlType::Q4_1 => ([half(b); 2], half(&b[2..]), b[4..].to_vec()),
                    _ => ([half(b); 2], 0.0, b[2..].to_vec()),
                })
                .collect();
            assert_eq!(got, want, "{dtype}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn blocks_of<C: Codec>(packed: &BlockRows) -> Vec<([f32; 2], f32, Vec<u8>)> {
        packed
            .rows_in::<C>(0..packed.rows())
            .flat_map(|row| {
                row.raw_blocks()
                    .map(|(d, m, q)| (d, m, q.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn a_widened_row_is_that_row_dequantised_bit_for_bit() {
        let rows = 5;
        for dtype in TYPES_OF_EACH_KIND.into_iter().chain(HALF_TYPES) {
            let (bytes, packed) = random_rows(dtype, rows, 96, 9);
            let cols = packed.cols();
            let all = crate::dequant::dequantize(dtype, &bytes, (rows * cols) as u64).unwrap();
            for r in [3, 0, 4] {
                let mut widened = vec![-1.0];
                packed.widen_row(r, &mut widened);
                let want = &all[r * cols..][..cols];
                let same = widened[1..]
                    .iter()
                    .zip(want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same && widened.len() == cols + 1, "{dtype}, row {r}");
            }
        }
    }

    #[test]
    fn a_widened_matrix_is_the_matrix_dequantised_bit_for_bit() {
        // Rows for two whole tasks of the parallel widening and part of a third.
        let rows = 2 * WIDEN_ROWS_PER_TASK + 7;
        for dtype in TYPES_OF_EACH_KIND.into_iter().chain(HALF_TYPES) {
            let (bytes, packed) = random_rows(dtype, rows, 64, 4);
            let cols = packed.cols();
            let all = crate::dequant::dequantize(dtype, &bytes, (rows * cols) as u64).unwrap();
            let widened = packed.widen();
            let same = widened.len() == all.len()
                && widened
                    .iter()
                    .zip(&all)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{dtype}");
        }
    }

    /// 16-bit floats are held as the file stores them: the kernels' words are its bytes,
    /// rows move whole, and a value that is no finite number is found.
    #[test]
    fn half_rows_hold_the_files_bits() {
        let (rows, cols) = (3, 64);
        for dtype in HALF_TYPES {
            let mut bytes = random_blocks(dtype, rows * cols, 5);
            let held = BlockRows::from_gguf(dtype, &bytes, rows, cols).unwrap();
            let words: Vec<u32> = bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            assert_eq!(held.gpu_words(), words, "{dtype}");
            assert_eq!(held.bytes(), bytes.len());
            let swapped = held.gather_rows(&[2, 0]);
            let mut want = Vec::new();
            held.widen_row(2, &mut want);
            held.widen_row(0, &mut want);
            assert_eq!(swapped.widen(), want, "{dtype}");
            assert!(held.is_finite());
            // The last value's exponent, all ones: an infinity or a NaN.
            bytes[2 * rows * cols - 1] |= 0x7f;
            bytes[2 * rows * cols - 2] |= 0x80;
            let damaged = BlockRows::from_gguf(dtype, &bytes, rows, cols).unwrap();
            assert!(!damaged.is_finite(), "{dtype}");
        }
    }

    #[test]
    fn stacked_parts_are_their_rows_in_order() {
        let dtype = GgmlType::Q4_1;
        let a = random_blocks(dtype, 2 * 2, 1);
        let b = random_blocks(dtype, 3 * 2, 2);
        let stacked = BlockRows::stack(vec![
            BlockRows::from_gguf(dtype, &a, 2, 64).unwrap(),
            BlockRows::from_gguf(dtype, &b, 3, 64).unwrap(),
        ])
        .unwrap();
        let whole = BlockRows::from_gguf(dtype, &[a, b].concat(), 5, 64).unwrap();
        assert_eq!(stacked, whole);
    }

    #[test]
    fn unkept_types_and_wrong_sizes_are_refused() {
        let bytes = random_blocks(GgmlType::Q8_0, 4, 3);
        assert!(BlockRows::from_gguf(GgmlType::F32, &bytes, 1, 34).is_none());
        // 16-bit floats in rows that are not whole blocks of 32.
        assert!(BlockRows::from_gguf(GgmlType::F16, &bytes[..64], 2, 16).is_none());
        assert!(BlockRows::from_gguf(GgmlType::F16, &bytes[..64], 1, 32).is_some());
        assert!(BlockRows::from_gguf(GgmlType::Q6_K, &bytes, 1, 128).is_none());
        assert!(BlockRows::from_gguf(GgmlType::Q8_0, &bytes[1..], 2, 64).is_none());
        assert!(BlockRows::from_gguf(GgmlType::Q8_0, &bytes, 3, 64).is_none());
        assert!(BlockRows::from_gguf(GgmlType::Q8_0, &bytes, 4, 33).is_none());
        let mixed = vec![
            BlockRows::from_gguf(GgmlType::Q8_0, &bytes, 2, 64).unwrap(),
            BlockRows::from_gguf(GgmlType::Q8_0, &bytes, 4, 32).unwrap(),
        ];
        assert!(BlockRows::stack(mixed).is_none());
    }
}
