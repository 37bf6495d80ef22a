//! Dequantisation of ggml blocks to f32, and the f16/bf16 conversions it needs.
//!
//! Written from the `block_*` layouts in ggml's `ggml-common.h` and the reference
//! `dequantize_row_*` functions in `ggml-quants.c`; all multi-byte fields are
//! little-endian. This is the CPU path: it loads weights for burn's CPU backend, checks GPU
//! kernels, and gives the tests ground truth. It walks blocks with `chunks_exact` and
//! fixed-size arrays, so no index can go out of bounds whatever the bytes hold.
//!
//! | type | block | bytes | layout | value |
//! |---|---|---|---|---|
//! | Q8_0 | 32 | 34 | d: f16, qs: [i8; 32] | d·q |
//! | Q4_0 | 32 | 18 | d: f16, qs: [u8; 16] | d·(q − 8) |
//! | Q4_1 | 32 | 20 | d: f16, m: f16, qs: [u8; 16] | d·q + m |
//! | Q5_0 | 32 | 22 | d: f16, qh: u32, qs: [u8; 16] | d·(q − 16) |
//! | Q5_1 | 32 | 24 | d, m: f16, qh: u32, qs: [u8; 16] | d·q + m |
//! | IQ4_NL | 32 | 18 | d: f16, qs: [u8; 16] | d·K\[q\] |
//! | Q3_K | 256 | 110 | hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: f16 | d·(sc − 32)·q |
//! | Q4_K | 256 | 144 | d, dmin: f16, scales: [u8; 12], qs: [u8; 128] | d·sc·q − dmin·m |
//! | Q5_K | 256 | 176 | d, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128] | d·sc·q − dmin·m |
//! | Q6_K | 256 | 210 | ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16 | d·sc·(q − 32) |
//! | IQ4_XS | 256 | 136 | d: f16, scales_h: u16, scales_l: [u8; 4], qs: [u8; 128] | d·(sc − 32)·K\[q\] |
//!
//! In the 32-element blocks, byte j's low nibble is element j and its high nibble is
//! element j + 16; Q5's fifth bits are bit j of `qh`. K is IQ4's table of 16 levels
//! ([`IQ4_LEVELS`]).
//!
//! These are the types llama.cpp's presets write, for SmolLM2-135M too: its rows of 576
//! are not whole super-blocks of 256, so a Q4_K_M file holds mostly Q5_0, a Q5_K_M
//! file Q5_1, a Q2_K or Q3_K_M file Q4_0, and the IQ4 files IQ4_NL, beside K-quants for
//! the rows of 1,536.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use crate::gguf::GgmlType;

/// Why a byte slice could not be dequantised; [`crate::gguf::GgufFile::tensor_f32`] turns
/// this into an [`crate::Error`] that names the tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DequantError {
    /// The type has no dequantiser here.
    Unsupported,
    /// The bytes are not exactly `n_elements / block_size` blocks.
    SizeMismatch,
}

/// Whether [`dequantize`] reads `dtype`: [`crate::Llama::check_gguf`] asks before any
/// tensor is read.
pub fn supports(dtype: GgmlType) -> bool {
    use GgmlType::*;
    matches!(
        dtype,
        F32 | F16
            | BF16
            | Q8_0
            | Q4_0
            | Q4_1
            | Q5_0
            | Q5_1
            | IQ4_NL
            | Q3_K
            | Q4_K
            | Q5_K
            | Q6_K
            | IQ4_XS
    )
}

/// Dequantises `n_elements` values of type `dtype` stored in `bytes`, in storage order.
///
/// `bytes` must hold exactly the blocks for `n_elements` (a whole number of them).
pub fn dequantize(
    dtype: GgmlType,
    bytes: &[u8],
    n_elements: u64,
) -> Result<Vec<f32>, DequantError> {
    let block = dtype.block_size();
    if !n_elements.is_multiple_of(block) {
        return Err(DequantError::SizeMismatch);
    }
    let need = (n_elements / block)
        .checked_mul(dtype.type_size())
        .ok_or(DequantError::SizeMismatch)?;
    if u64::try_from(bytes.len()).ok() != Some(need) {
        return Err(DequantError::SizeMismatch);
    }
    let n = usize::try_from(n_elements).map_err(|_| DequantError::SizeMismatch)?;
    let mut out = Vec::with_capacity(n);
    match dtype {
        GgmlType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .filter_map(|c| c.try_into().ok())
                .map(f32::from_le_bytes),
        ),
        GgmlType::F16 => half_values(f16_to_f32, bytes, &mut out),
        GgmlType::BF16 => half_values(bf16_to_f32, bytes, &mut out),
        GgmlType::Q8_0 => blocks::<34>(bytes, |b| q8_0(b, &mut out)),
        GgmlType::Q4_0 => blocks::<18>(bytes, |b| q4_0(b, &mut out)),
        GgmlType::Q4_1 => blocks::<20>(bytes, |b| q4_1(b, &mut out)),
        GgmlType::Q5_0 => blocks::<22>(bytes, |b| q5_0(b, &mut out)),
        GgmlType::Q5_1 => blocks::<24>(bytes, |b| q5_1(b, &mut out)),
        GgmlType::IQ4_NL => blocks::<18>(bytes, |b| iq4_nl(b, &mut out)),
        GgmlType::Q3_K => blocks::<110>(bytes, |b| halves(q3_k_blocks(b), &mut out)),
        GgmlType::Q4_K => blocks::<144>(bytes, |b| k_values(q4_k_blocks(b), &mut out)),
        GgmlType::Q5_K => blocks::<176>(bytes, |b| k_values(q5_k_blocks(b), &mut out)),
        GgmlType::Q6_K => blocks::<210>(bytes, |b| halves(q6_k_blocks(b), &mut out)),
        GgmlType::IQ4_XS => blocks::<136>(bytes, |b| iq4_xs(b, &mut out)),
        _ => return Err(DequantError::Unsupported),
    }
    if out.len() != n {
        return Err(DequantError::SizeMismatch);
    }
    Ok(out)
}

/// Calls `f` on each `N`-byte block.
fn blocks<const N: usize>(bytes: &[u8], mut f: impl FnMut(&[u8; N])) {
    for chunk in bytes.chunks_exact(N) {
        if let Ok(block) = <&[u8; N]>::try_from(chunk) {
            f(block);
        }
    }
}

/// The values of blocks with a scale per half ([`q3_k_blocks`], [`q6_k_blocks`]).
fn halves(blocks: impl Iterator<Item = ([f32; 2], [u8; 32])>, out: &mut Vec<f32>) {
    for (d, codes) in blocks {
        q8_16_values(d, &codes, out);
    }
}

/// Splits a fixed-size array into a fixed-size head and tail.
fn split<const N: usize, const H: usize, const T: usize>(a: &[u8; N]) -> (&[u8; H], &[u8; T]) {
    const { assert!(H + T == N) };
    let (h, t) = a.split_at(H);
    // Cannot fail: the lengths are H and N - H = T by the assertion above.
    match (h.try_into(), t.try_into()) {
        (Ok(h), Ok(t)) => (h, t),
        _ => unreachable!("invariant: split lengths are checked at compile time"),
    }
}

fn f16_at(b: &[u8; 2]) -> f32 {
    f16_to_f32(u16::from_le_bytes(*b))
}

fn q8_0(b: &[u8; 34], out: &mut Vec<f32>) {
    let (d, qs) = split::<34, 2, 32>(b);
    q8_0_values(f16_at(d), qs, out);
}

fn q4_0(b: &[u8; 18], out: &mut Vec<f32>) {
    let (d, qs) = split::<18, 2, 16>(b);
    q4_0_values(f16_at(d), qs, out);
}

fn q4_1(b: &[u8; 20], out: &mut Vec<f32>) {
    let (d, rest) = split::<20, 2, 18>(b);
    let (m, qs) = split::<18, 2, 16>(rest);
    q4_1_values(f16_at(d), f16_at(m), qs, out);
}

/// A Q8_0 block's values from its scale `d` and 32 quants: `d·q`. Here and in the two
/// below, the one place these formulas are written: [`crate::block_rows::BlockRows`]
/// widens its blocks with them too, to the same bits.
pub(crate) fn q8_0_values(d: f32, qs: &[u8], out: &mut Vec<f32>) {
    out.extend(qs.iter().map(|&q| d * f32::from(i8::from_le_bytes([q]))));
}

/// A Q4_0 block's values from its scale `d` and 16 bytes of quants: `d·(q − 8)`, the
/// low nibbles first.
pub(crate) fn q4_0_values(d: f32, qs: &[u8], out: &mut Vec<f32>) {
    out.extend(qs.iter().map(|&q| d * f32::from(i16::from(q & 0xf) - 8)));
    out.extend(qs.iter().map(|&q| d * f32::from(i16::from(q >> 4) - 8)));
}

/// A Q4_1 block's values from its scale `d`, minimum `m` and 16 bytes of quants:
/// `d·q + m`, the low nibbles first.
pub(crate) fn q4_1_values(d: f32, m: f32, qs: &[u8], out: &mut Vec<f32>) {
    out.extend(qs.iter().map(|&q| d * f32::from(q & 0xf) + m));
    out.extend(qs.iter().map(|&q| d * f32::from(q >> 4) + m));
}

fn q5_0(b: &[u8; 22], out: &mut Vec<f32>) {
    let (d, rest) = split::<22, 2, 20>(b);
    let (qh, qs) = split::<20, 4, 16>(rest);
    let d = f16_at(d);
    out.extend(q5_codes(u32::from_le_bytes(*qh), qs).map(|q| d * f32::from(q - 16)));
}

fn q5_1(b: &[u8; 24], out: &mut Vec<f32>) {
    let (d, rest) = split::<24, 2, 22>(b);
    let (m, rest) = split::<22, 2, 20>(rest);
    let (qh, qs) = split::<20, 4, 16>(rest);
    let mut codes = [0u8; 32];
    for (code, q) in codes.iter_mut().zip(q5_codes(u32::from_le_bytes(*qh), qs)) {
        *code = q.to_le_bytes()[0];
    }
    q5_1_values(f16_at(d), f16_at(m), &codes, out);
}

/// A Q5_1 block's values from its scale `d`, minimum `m` and 32 codes, a byte each:
/// `d·q + m`. [`crate::block_rows::BlockRows`] holds Q5_1 and Q5_K blocks so, and widens
/// them with this too.
pub(crate) fn q5_1_values(d: f32, m: f32, codes: &[u8], out: &mut Vec<f32>) {
    out.extend(codes.iter().map(|&q| d * f32::from(q) + m));
}

/// A Q5 block's 32 codes in order (0 to 31): the nibbles as in Q4 blocks, element `j`'s
/// fifth bit being bit `j` of `qh`.
pub(crate) fn q5_codes(qh: u32, qs: &[u8]) -> impl Iterator<Item = i16> + '_ {
    let low = qs.iter().map(|&q| q & 0xf);
    let high = qs.iter().map(|&q| q >> 4);
    low.chain(high)
        .enumerate()
        .map(move |(j, nibble)| i16::from(nibble) | (((qh >> j) & 1) as i16) << 4)
}

/// IQ4's 16 levels (`kvalues_iq4nl` in ggml-common.h): a 4-bit code picks one, and the
/// block's scale multiplies it.
pub(crate) const IQ4_LEVELS: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// An IQ4 block's 32 levels in order, from its 16 bytes of codes.
pub(crate) fn iq4_levels(qs: &[u8]) -> impl Iterator<Item = i8> + '_ {
    let level = |code: u8| {
        IQ4_LEVELS
            .get(usize::from(code & 0xf))
            .copied()
            .unwrap_or(0)
    };
    qs.iter()
        .map(move |&q| level(q))
        .chain(qs.iter().map(move |&q| level(q >> 4)))
}

fn iq4_nl(b: &[u8; 18], out: &mut Vec<f32>) {
    let (d, qs) = split::<18, 2, 16>(b);
    let d = f16_at(d);
    out.extend(iq4_levels(qs).map(|k| d * f32::from(k)));
}

/// An IQ4_XS super-block's eight scales `d·(sc − 32)` (6 bits each: the low 4 from
/// `scales_l`'s nibbles, the high 2 from `scales_h`), with its codes, 16 bytes per block
/// of 32.
pub(crate) fn iq4_xs_blocks(b: &[u8; 136]) -> impl Iterator<Item = (f32, &[u8])> {
    let (d, rest) = split::<136, 2, 134>(b);
    let (scales_h, rest) = split::<134, 2, 132>(rest);
    let (scales_l, qs) = split::<132, 4, 128>(rest);
    let (d, high) = (f16_at(d), u16::from_le_bytes(*scales_h));
    qs.chunks_exact(16).enumerate().map(move |(j, qs)| {
        let low = scales_l
            .get(j / 2)
            .map_or(0, |s| (s >> (4 * (j % 2))) & 0xf);
        let sc = i16::from(low) | i16::from(((high >> (2 * j)) & 3) as u8) << 4;
        (d * f32::from(sc - 32), qs)
    })
}

fn iq4_xs(b: &[u8; 136], out: &mut Vec<f32>) {
    for (dl, qs) in iq4_xs_blocks(b) {
        out.extend(iq4_levels(qs).map(|k| dl * f32::from(k)));
    }
}

/// A Q3_K super-block's 16 scales (6 bits, less 32): the low 4 bits of scale `j` are
/// byte `j % 8`'s low (j < 8) or high nibble, the high 2 bits are bits `2·(j / 4)` of
/// byte `8 + j % 4`.
fn q3_k_scales(s: &[u8; 12]) -> [i16; 16] {
    std::array::from_fn(|j| {
        let low = s.get(j % 8).map_or(0, |b| (b >> (4 * (j / 8))) & 0xf);
        let high = s.get(8 + j % 4).map_or(0, |b| (b >> (2 * (j / 4))) & 3);
        i16::from(low | high << 4) - 32
    })
}

/// A Q3_K super-block's eight blocks of 32, in order, as [`q8_16_values`] reads them: the
/// scales of their halves, `d·(sc − 32)` (an f16 times a 6-bit integer, exact in f32), and
/// their codes, −4 to 3 as bytes. Element l of block t takes its two low bits from bits
/// 2·(t % 4) of qs[32·(t / 4) + l], and loses 4 if bit t of hmask[l] is clear.
pub(crate) fn q3_k_blocks(b: &[u8; 110]) -> impl Iterator<Item = ([f32; 2], [u8; 32])> + '_ {
    let (hmask, rest) = split::<110, 32, 78>(b);
    let (qs, rest) = split::<78, 64, 14>(rest);
    let (scales, d) = split::<14, 12, 2>(rest);
    let (d, scales) = (f16_at(d), q3_k_scales(scales));
    (0..8).map(move |t| {
        let qs = qs.chunks_exact(32).nth(t / 4).unwrap_or(&[]);
        let mut codes = [0u8; 32];
        for ((code, &q), &h) in codes.iter_mut().zip(qs).zip(hmask) {
            let low = (q >> (2 * (t % 4))) & 3;
            *code = if (h >> t) & 1 == 0 {
                low.wrapping_sub(4)
            } else {
                low
            };
        }
        let scale = |half: usize| d * f32::from(scales.get(2 * t + half).copied().unwrap_or(0));
        ([scale(0), scale(1)], codes)
    })
}

/// The eight sub-blocks of 32 of a Q4_K or Q5_K super-block, in order: each one's scale
/// `d·sc`, its minimum `dmin·m` (subtracted: `d·sc·q − dmin·m`) and its codes. Sub-block
/// s takes the low (s even) or high nibbles of 32 bytes of qs, and in Q5_K its fifth bits
/// are bit s of qh's 32 bytes.
fn k_sub_blocks<'a>(
    (d, dmin): (&[u8; 2], &[u8; 2]),
    scales: &[u8; 12],
    qh: Option<&'a [u8; 32]>,
    qs: &'a [u8; 128],
) -> impl Iterator<Item = (f32, f32, impl Iterator<Item = i16> + 'a)> + 'a {
    let (d, dmin) = (f16_at(d), f16_at(dmin));
    let (sc, m) = k4_scales(scales);
    (0..8).map(move |s| {
        let q = qs.chunks_exact(32).nth(s / 2).unwrap_or(&[]);
        let shift = 4 * (s % 2);
        let fifth = move |l: usize| {
            qh.and_then(|qh| qh.get(l))
                .map_or(0, |h| ((h >> s) & 1) << 4)
        };
        let codes = q
            .iter()
            .enumerate()
            .map(move |(l, &q)| i16::from(((q >> shift) & 0xf) | fifth(l)));
        let (sc, m) = (
            sc.get(s).copied().unwrap_or(0),
            m.get(s).copied().unwrap_or(0),
        );
        (d * f32::from(sc), dmin * f32::from(m), codes)
    })
}

/// A Q4_K super-block's sub-blocks, as [`k_sub_blocks`] gives them.
pub(crate) fn q4_k_blocks(
    b: &[u8; 144],
) -> impl Iterator<Item = (f32, f32, impl Iterator<Item = i16> + '_)> {
    let (d, rest) = split::<144, 2, 142>(b);
    let (dmin, rest) = split::<142, 2, 140>(rest);
    let (scales, qs) = split::<140, 12, 128>(rest);
    k_sub_blocks((d, dmin), scales, None, qs)
}

/// A Q5_K super-block's sub-blocks, as [`k_sub_blocks`] gives them.
pub(crate) fn q5_k_blocks(
    b: &[u8; 176],
) -> impl Iterator<Item = (f32, f32, impl Iterator<Item = i16> + '_)> {
    let (d, rest) = split::<176, 2, 174>(b);
    let (dmin, rest) = split::<174, 2, 172>(rest);
    let (scales, rest) = split::<172, 12, 160>(rest);
    let (qh, qs) = split::<160, 32, 128>(rest);
    k_sub_blocks((d, dmin), scales, Some(qh), qs)
}

/// The values of [`k_sub_blocks`]' sub-blocks: `d·sc·q − dmin·m`.
fn k_values<'a>(
    sub_blocks: impl Iterator<Item = (f32, f32, impl Iterator<Item = i16> + 'a)>,
    out: &mut Vec<f32>,
) {
    for (d1, m1, codes) in sub_blocks {
        out.extend(codes.map(|q| d1 * f32::from(q) - m1));
    }
}

/// Unpacks the eight 6-bit (scale, min) pairs of a Q4_K/Q5_K block
/// (`get_scale_min_k4` in ggml-quants.c): pairs 0–3 are the low 6 bits of bytes 0–3 and
/// 4–7; pairs 4–7 take their low 4 bits from bytes 8–11 and their high 2 bits from the
/// top bits of bytes 0–7.
pub(crate) fn k4_scales(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    let [s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11] = *s;
    let sc = [
        s0 & 63,
        s1 & 63,
        s2 & 63,
        s3 & 63,
        (s8 & 0xf) | ((s0 >> 6) << 4),
        (s9 & 0xf) | ((s1 >> 6) << 4),
        (s10 & 0xf) | ((s2 >> 6) << 4),
        (s11 & 0xf) | ((s3 >> 6) << 4),
    ];
    let m = [
        s4 & 63,
        s5 & 63,
        s6 & 63,
        s7 & 63,
        (s8 >> 4) | ((s4 >> 6) << 4),
        (s9 >> 4) | ((s5 >> 6) << 4),
        (s10 >> 4) | ((s6 >> 6) << 4),
        (s11 >> 4) | ((s7 >> 6) << 4),
    ];
    (sc, m)
}

/// A Q6_K super-block's eight blocks of 32, in order, as [`q8_16_values`] reads them: the
/// scales of their halves, `d·sc` (an f16 times an 8-bit integer, exact in f32), and
/// their codes `q − 32` as bytes. Block t is quarter k = t % 4 of half t / 4, whose 128
/// elements use 64 bytes of ql, 32 of qh and 8 scales: element l takes ql's low (k < 2)
/// or high nibble of byte l of the half's first (k even) or second 32, and bits 2k, 2k + 1
/// of qh[l].
pub(crate) fn q6_k_blocks(b: &[u8; 210]) -> impl Iterator<Item = ([f32; 2], [u8; 32])> + '_ {
    let (ql, rest) = split::<210, 128, 82>(b);
    let (qh, rest) = split::<82, 64, 18>(rest);
    let (scales, d) = split::<18, 16, 2>(rest);
    let d = f16_at(d);
    (0..8).map(move |t| {
        let (half, k) = (t / 4, t % 4);
        let ql = ql.chunks_exact(32).nth(2 * half + k % 2).unwrap_or(&[]);
        let qh = qh.chunks_exact(32).nth(half).unwrap_or(&[]);
        let mut codes = [0u8; 32];
        for ((code, &l), &h) in codes.iter_mut().zip(ql).zip(qh) {
            let q = ((l >> (4 * (k / 2))) & 0xf) | (((h >> (2 * k)) & 3) << 4);
            *code = q.wrapping_sub(32);
        }
        let scale = |j: usize| {
            let sc = scales.get(8 * half + 2 * k + j).copied().unwrap_or(0);
            d * f32::from(i8::from_le_bytes([sc]))
        };
        ([scale(0), scale(1)], codes)
    })
}

/// A block of 32 byte codes with a scale for each half (a Q3_K or Q6_K block of 32):
/// `d·q`. [`crate::block_rows::BlockRows`] holds such blocks, and widens them with this.
pub(crate) fn q8_16_values(d: [f32; 2], qs: &[u8], out: &mut Vec<f32>) {
    let ([d_low, d_high], (low, high)) = (d, qs.split_at(qs.len().min(16)));
    q8_0_values(d_low, low, out);
    q8_0_values(d_high, high, out);
}

/// 16-bit floats from their little-endian `bytes`, each widened by `widen`, onto `out`:
/// one loop over the values in place, which the compiler vectorises (a prompt's pass over
/// an F16 model widens every matrix).
pub(crate) fn half_values(widen: impl Fn(u16) -> f32, bytes: &[u8], out: &mut Vec<f32>) {
    let (pairs, _) = bytes.as_chunks::<2>();
    let start = out.len();
    out.resize(start + pairs.len(), 0.0);
    for (value, &pair) in out.iter_mut().skip(start).zip(pairs) {
        *value = widen(u16::from_le_bytes(pair));
    }
}

/// IEEE 754 half precision to single, exactly (every f16 is an f32). Without branches,
/// so that loops over many vectorise (a prompt's pass over an F16 model widens every
/// matrix): the exponent and mantissa move to f32's places, and a product by 2^112, the
/// difference of the two biases, rescales normal and subnormal values alike, exactly.
/// Infinities and NaNs take f32's top exponent instead.
pub fn f16_to_f32(h: u16) -> f32 {
    let h = u32::from(h);
    let magnitude = (h & 0x7fff) << 13;
    let sign = (h & 0x8000) << 16;
    let rescaled = (f32::from_bits(magnitude) * f32::from_bits(0x7780_0000)).to_bits();
    let bits = if h & 0x7c00 == 0x7c00 {
        magnitude | 0x7f80_0000
    } else {
        rescaled
    };
    f32::from_bits(bits | sign)
}

/// Single precision to half, rounding to nearest even (as ggml's `GGML_FP32_TO_FP16`).
/// Overflow gives ±infinity; NaN stays NaN.
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let mant = bits & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if mant != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 31 {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        // Subnormal: k · 2^-24 with k = m >> (14 - e), where m has the implicit bit.
        let m = mant | 0x80_0000;
        let shift = (14 - e) as u32;
        let mut k = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let half = 1 << (shift - 1);
        if rem > half || (rem == half && k & 1 == 1) {
            k += 1;
        }
        return sign | k as u16;
    }
    let mut h = ((e as u32) << 10) | (mant >> 13);
    let rem = mant & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && h & 1 == 1) {
        // May carry into the exponent, up to infinity: that is the right rounding.
        h += 1;
    }
    sign | h as u16
}

/// bfloat16 to single: bf16 is the top half of an f32.
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// Blocks of every type samd reads as blocks, with the values the `gguf` package
    /// dequantises them to (`scripts/make-dequant-fixture.py`): three blocks of each.
    pub(crate) fn gguf_package_blocks() -> Vec<(GgmlType, Vec<u8>, Vec<f32>)> {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/dequant_blocks.json")).unwrap();
        let fixture = fixture.as_object().unwrap();
        fixture
            .iter()
            .map(|(name, case)| {
                let dtype = (0..64)
                    .filter_map(GgmlType::from_id)
                    .find(|t| t.name().eq_ignore_ascii_case(name))
                    .unwrap();
                let hex = case["bytes"].as_str().unwrap();
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect();
                let values = case["values"].as_array().unwrap();
                let values = values.iter().map(|v| v.as_f64().unwrap() as f32).collect();
                (dtype, bytes, values)
            })
            .collect()
    }

    /// Every block type against the `gguf` package's dequantisers: the same values, to
    /// the bit.
    #[test]
    fn blocks_match_the_gguf_package() {
        let cases = gguf_package_blocks();
        assert_eq!(cases.len(), 11, "every type samd reads as blocks");
        for (dtype, bytes, want) in cases {
            let got = dequantize(dtype, &bytes, want.len() as u64).unwrap();
            let differ = got
                .iter()
                .zip(&want)
                .position(|(g, w)| g.to_bits() != w.to_bits());
            assert_eq!(differ, None, "{dtype}: first difference at {differ:?}");
        }
    }

    /// The test writer's Q5_1 blocks read back within half a step of what was written.
    #[test]
    fn q5_1_bytes_read_back_within_half_a_step() {
        let data: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 40.0)
            .collect();
        let got = dequantize(GgmlType::Q5_1, &crate::gguf_writer::q5_1_bytes(&data), 96).unwrap();
        for (block, got) in data.chunks(32).zip(got.chunks(32)) {
            let (lo, hi) = block
                .iter()
                .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
            let step = (hi - lo) / 31.0;
            for (x, y) in block.iter().zip(got) {
                assert!((x - y).abs() <= step * 0.51 + 1e-3, "{x} read back as {y}");
            }
        }
    }

    /// The test writer's Q6_K blocks read back within half a step of what was written,
    /// where each 16's largest value is within twice every other's (so no code is
    /// clamped).
    #[test]
    fn q6_k_bytes_read_back_within_half_a_step() {
        let data: Vec<f32> = (0..512)
            .map(|i| (i as f32 * 0.7).sin() * (1.0 + (i / 16 % 3) as f32 * 0.25))
            .collect();
        let got = dequantize(GgmlType::Q6_K, &crate::gguf_writer::q6_k_bytes(&data), 512).unwrap();
        for (block, got) in data.chunks(16).zip(got.chunks(16)) {
            let step = block.iter().fold(0f32, |a, &x| a.max(x.abs())) / 31.0;
            for (x, y) in block.iter().zip(got) {
                assert!((x - y).abs() <= step * 0.55, "{x} read back as {y}");
            }
        }
    }

    /// `supports` names exactly the types `dequantize` reads: one block of zeros of each.
    #[test]
    fn supports_is_what_dequantize_reads() {
        for dtype in (0..64).filter_map(GgmlType::from_id) {
            let bytes = vec![0; dtype.type_size() as usize];
            let read = dequantize(dtype, &bytes, dtype.block_size());
            assert_eq!(supports(dtype), read.is_ok(), "{dtype}: {read:?}");
        }
    }

    #[test]
    fn f16_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
    }

    /// Every f16 against the textbook formula in f64, and back through `f32_to_f16`.
    #[test]
    fn f16_exhaustive_against_formula_and_round_trip() {
        for h in 0..=u16::MAX {
            let exp = i32::from((h >> 10) & 0x1f);
            let mant = f64::from(h & 0x3ff);
            let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
            let x = f16_to_f32(h);
            if exp == 31 {
                assert_eq!(x.is_nan(), mant != 0.0, "{h:#06x}");
                assert!(f32_to_f16(x) == h || mant != 0.0);
                continue;
            }
            let want = if exp == 0 {
                sign * mant * 2f64.powi(-24)
            } else {
                sign * (1.0 + mant / 1024.0) * 2f64.powi(exp - 15)
            };
            assert_eq!(f64::from(x), want, "{h:#06x}");
            assert_eq!(f32_to_f16(x), h, "{h:#06x}");
        }
    }

    #[test]
    fn f32_to_f16_rounds_to_nearest_even() {
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0).
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        // 1 + 3·2^-11 is halfway between 1 + 2^-10 and 1 + 2^-9: ties to even (up).
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(1e-9), 0);
        assert_eq!(f32_to_f16(3.0 * 2f32.powi(-26)), 0x0001); // 0.75 ulp rounds up
    }

    #[test]
    fn bf16_is_the_top_half() {
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(bf16_to_f32(0xc040), -3.0);
    }

    #[test]
    fn plain_types() {
        let f32s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert_eq!(dequantize(GgmlType::F32, &f32s, 2).unwrap(), [1.5, -2.0]);
        assert_eq!(
            dequantize(GgmlType::F16, &[0x00, 0x3c, 0x00, 0xc0], 2).unwrap(),
            [1.0, -2.0]
        );
        assert_eq!(dequantize(GgmlType::BF16, &[0x80, 0x3f], 1).unwrap(), [1.0]);
    }

    #[test]
    fn q8_0_block() {
        let mut b = vec![0x00, 0x38]; // d = 0.5
        b.extend((0..32).map(|i: i8| (i - 16).to_le_bytes()[0]));
        let got = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        let want: Vec<f32> = (0..32).map(|i| 0.5 * (i as f32 - 16.0)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn q4_0_block() {
        let mut b = vec![0x00, 0x40]; // d = 2
        // byte j: low nibble j (element j), high nibble 15 - j (element j + 16)
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let got = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        let mut want: Vec<f32> = (0..16).map(|j| 2.0 * (j as f32 - 8.0)).collect();
        want.extend((0..16).map(|j| 2.0 * ((15 - j) as f32 - 8.0)));
        assert_eq!(got, want);
    }

    #[test]
    fn q4_1_block() {
        let mut b = vec![0x00, 0x34, 0x00, 0xbc]; // d = 0.25, m = -1
        b.extend((0..16u8).map(|j| j | (3 << 4)));
        let got = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        let mut want: Vec<f32> = (0..16).map(|j| 0.25 * j as f32 - 1.0).collect();
        want.extend([0.25 * 3.0 - 1.0; 16]);
        assert_eq!(got, want);
    }

    #[test]
    fn q4_k_block() {
        // d = 1, dmin = 0.5. Sub-block j has scale j + 1 and min 2j (j < 4), and for j ≥ 4
        // scale 40 + j and min 50 + j, which need the high 2 bits.
        let mut scales = [0u8; 12];
        let sc: [u8; 8] = [1, 2, 3, 4, 44, 45, 46, 47];
        let mn: [u8; 8] = [0, 2, 4, 6, 54, 55, 56, 57];
        for j in 0..4 {
            scales[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            scales[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
            scales[j + 8] = (sc[j + 4] & 0xf) | ((mn[j + 4] & 0xf) << 4);
        }
        assert_eq!(k4_scales(&scales), (sc, mn));
        let mut b = vec![0x00, 0x3c, 0x00, 0x38];
        b.extend(scales);
        // qs byte at chunk c, position l: low nibble (l % 16), high nibble (15 - l % 16).
        for _c in 0..4 {
            b.extend((0..32u8).map(|l| (l % 16) | ((15 - l % 16) << 4)));
        }
        let got = dequantize(GgmlType::Q4_K, &b, 256).unwrap();
        let mut want = Vec::new();
        for c in 0..4 {
            for l in 0..32 {
                want.push(f32::from(sc[2 * c]) * (l % 16) as f32 - 0.5 * f32::from(mn[2 * c]));
            }
            for l in 0..32 {
                want.push(
                    f32::from(sc[2 * c + 1]) * (15 - l % 16) as f32
                        - 0.5 * f32::from(mn[2 * c + 1]),
                );
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn q6_k_block() {
        // Pick every 6-bit q independently: element e = 128·n + 32·k + l has
        // q = (e * 7) % 64, and scale s[8n + 2k + l/16] = (idx as i8) - 8.
        let q = |e: usize| ((e * 7) % 64) as u8;
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for n in 0..2 {
            for k in 0..4 {
                for l in 0..32 {
                    let v = q(128 * n + 32 * k + l);
                    let byte = 64 * n + l + if k % 2 == 1 { 32 } else { 0 };
                    ql[byte] |= if k >= 2 { (v & 0xf) << 4 } else { v & 0xf };
                    qh[32 * n + l] |= (v >> 4) << (2 * k);
                }
            }
        }
        let scales: Vec<u8> = (0..16).map(|i: i8| (i - 8).to_le_bytes()[0]).collect();
        let mut b = Vec::new();
        b.extend(ql);
        b.extend(qh);
        b.extend(&scales);
        b.extend([0x00, 0x38]); // d = 0.5
        let got = dequantize(GgmlType::Q6_K, &b, 256).unwrap();
        for (e, &got) in got.iter().enumerate() {
            let (n, k, l) = (e / 128, (e % 128) / 32, e % 32);
            let s = (8 * n + 2 * k + l / 16) as f32 - 8.0;
            let want = 0.5 * s * (f32::from(q(e)) - 32.0);
            assert_eq!(got, want, "element {e}");
        }
    }

    #[test]
    fn wrong_sizes_and_types_are_errors() {
        assert_eq!(
            dequantize(GgmlType::Q8_0, &[0; 33], 32),
            Err(DequantError::SizeMismatch)
        );
        assert_eq!(
            dequantize(GgmlType::Q8_0, &[0; 34], 31),
            Err(DequantError::SizeMismatch)
        );
        assert_eq!(
            dequantize(GgmlType::F32, &[0; 4], u64::MAX),
            Err(DequantError::SizeMismatch)
        );
        assert_eq!(
            dequantize(GgmlType::Q2_K, &[0; 84], 256),
            Err(DequantError::Unsupported)
        );
    }
}
