//! A small GGUF writer, for tests and fixtures.
//!
//! samd never writes models; this exists so that tests can build tiny files (a
//! random-weight Llama of a few KB, a malformed header) without the network, and so that
//! the reader is tested by round trips. It writes GGUF v3 with the layout llama.cpp
//! writes: tensor data packed in insertion order, each tensor padded to the alignment.
//! The quantisers are the plain reference ones from ggml-quants.c (`quantize_row_*_ref`).
//!
//! ```
//! use samd_model::gguf::{GgufFile, Value};
//! use samd_model::gguf_writer::GgufWriter;
//!
//! let mut w = GgufWriter::new();
//! w.metadata("general.architecture", Value::String("llama".into()))
//!     .tensor_f32("norm.weight", &[4], &[1.0, 2.0, 3.0, 4.0]);
//! let bytes = w.to_bytes();
//! let file = GgufFile::parse(&bytes).unwrap();
//! assert_eq!(file.architecture().unwrap(), "llama");
//! assert_eq!(file.tensor_f32("norm.weight").unwrap(), [1.0, 2.0, 3.0, 4.0]);
//! ```

use crate::block_form::HalfFloat;
use crate::config::{LlamaConfig, keys};
use crate::dequant::{f16_to_f32, f32_to_f16};
use crate::gguf::{DEFAULT_ALIGNMENT, GgmlType, MAGIC, Value};

/// Builds a GGUF file in memory. Inputs are trusted (they come from test code), so
/// misuse panics, as documented on each method.
#[derive(Debug, Clone)]
pub struct GgufWriter {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl Default for GgufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl GgufWriter {
    /// An empty GGUF v3 file with the default alignment (32).
    pub fn new() -> Self {
        GgufWriter {
            version: 3,
            alignment: DEFAULT_ALIGNMENT,
            metadata: Vec::new(),
            tensors: Vec::new(),
        }
    }

    /// Sets the version field written in the header (to test v2 files or bad versions).
    pub fn version(&mut self, version: u32) -> &mut Self {
        self.version = version;
        self
    }

    /// Sets the data alignment and writes `general.alignment` as a u32. Any value is
    /// accepted so that tests can write invalid files; the data is padded to it only if it
    /// is a nonzero power of two (otherwise to the default).
    pub fn alignment(&mut self, alignment: u32) -> &mut Self {
        self.alignment = u64::from(alignment);
        self.metadata("general.alignment", Value::U32(alignment))
    }

    fn padding_alignment(&self) -> u64 {
        if self.alignment.is_power_of_two() {
            self.alignment
        } else {
            DEFAULT_ALIGNMENT
        }
    }

    /// Adds a metadata entry (duplicates are written as given, to test the reader).
    pub fn metadata(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.push((key.to_owned(), value));
        self
    }

    /// Drops every metadata entry `key`: for crafting a file that lacks one.
    pub fn without_metadata(&mut self, key: &str) -> &mut Self {
        self.metadata.retain(|(k, _)| k != key);
        self
    }

    /// Adds what [`LlamaConfig::from_gguf`] reads for architecture `arch`: `c`'s
    /// hyperparameters, and a vocabulary of `c.vocab_size` placeholder tokens.
    ///
    /// # Panics
    /// If a size of `c` does not fit a u32.
    pub fn llama_config(&mut self, arch: &str, c: &LlamaConfig) -> &mut Self {
        self.metadata("general.architecture", Value::String(arch.into()));
        let sizes = [
            (keys::BLOCK_COUNT, c.n_layers),
            (keys::EMBEDDING_LENGTH, c.d_model),
            (keys::FEED_FORWARD_LENGTH, c.d_ffn),
            (keys::HEAD_COUNT, c.n_heads),
            (keys::HEAD_COUNT_KV, c.n_kv_heads),
            (keys::CONTEXT_LENGTH, c.context_len),
        ];
        for (key, value) in sizes {
            let value = u32::try_from(value).expect("config sizes fit u32");
            self.metadata(&format!("{arch}.{key}"), Value::U32(value));
        }
        self.metadata(&format!("{arch}.{}", keys::RMS_EPS), Value::F32(c.rms_eps));
        self.metadata(
            &format!("{arch}.{}", keys::ROPE_FREQ_BASE),
            Value::F32(c.rope_theta),
        );
        let tokens: Vec<String> = (0..c.vocab_size).map(|i| format!("t{i}")).collect();
        self.metadata_str_array(keys::TOKENIZER_TOKENS, &tokens)
    }

    /// Adds a string array entry (a vocab, merges).
    pub fn metadata_str_array<S: AsRef<str>>(&mut self, key: &str, items: &[S]) -> &mut Self {
        let items = items
            .iter()
            .map(|s| Value::String(s.as_ref().to_owned()))
            .collect();
        self.metadata(
            key,
            Value::Array {
                elem_type: crate::gguf::ValueType::String,
                items,
            },
        )
    }

    /// Drops the tensor `name`: for crafting a file that lacks it, or holds it otherwise.
    pub fn without_tensor(&mut self, name: &str) -> &mut Self {
        self.tensors.retain(|(n, ..)| n != name);
        self
    }

    /// Adds a tensor whose bytes are already in `dtype`'s storage format. Nothing is
    /// checked, so this also writes malformed tensors.
    pub fn tensor_raw(
        &mut self,
        name: &str,
        dims: &[u64],
        dtype: GgmlType,
        bytes: Vec<u8>,
    ) -> &mut Self {
        self.tensors
            .push((name.to_owned(), dims.to_vec(), dtype, bytes));
        self
    }

    /// Adds an f32 tensor. `data` is in storage order (`dims[0]` innermost).
    ///
    /// # Panics
    /// If `data.len()` is not the product of `dims`.
    pub fn tensor_f32(&mut self, name: &str, dims: &[u64], data: &[f32]) -> &mut Self {
        check_len(name, dims, data, 1);
        let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.tensor_raw(name, dims, GgmlType::F32, bytes)
    }

    /// Adds an f16 tensor, rounding each value to nearest even.
    ///
    /// # Panics
    /// If `data.len()` is not the product of `dims`.
    pub fn tensor_f16(&mut self, name: &str, dims: &[u64], data: &[f32]) -> &mut Self {
        check_len(name, dims, data, 1);
        let bytes = half_bytes(HalfFloat::F16, data);
        self.tensor_raw(name, dims, GgmlType::F16, bytes)
    }

    /// Adds a Q8_0 tensor ([`q8_0_bytes`]).
    ///
    /// # Panics
    /// If `data.len()` is not the product of `dims` or `dims[0]` is not a multiple of 32.
    pub fn tensor_q8_0(&mut self, name: &str, dims: &[u64], data: &[f32]) -> &mut Self {
        check_len(name, dims, data, 32);
        self.tensor_raw(name, dims, GgmlType::Q8_0, q8_0_bytes(data))
    }

    /// Adds a Q4_1 tensor ([`q4_1_bytes`]).
    ///
    /// # Panics
    /// If `data.len()` is not the product of `dims` or `dims[0]` is not a multiple of 32.
    pub fn tensor_q4_1(&mut self, name: &str, dims: &[u64], data: &[f32]) -> &mut Self {
        check_len(name, dims, data, 32);
        self.tensor_raw(name, dims, GgmlType::Q4_1, q4_1_bytes(data))
    }

    /// Serialises the file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = self.padding_alignment();
        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            write_str(&mut out, key);
            out.extend(value.value_type().id().to_le_bytes());
            write_value(&mut out, value);
        }
        let mut offset = 0u64;
        for (name, dims, dtype, bytes) in &self.tensors {
            write_str(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(dtype.id().to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset = (offset + bytes.len() as u64).next_multiple_of(align);
        }
        pad(&mut out, align);
        for (_, _, _, bytes) in &self.tensors {
            out.extend(bytes);
            pad(&mut out, align);
        }
        out
    }
}

/// `data` in the 16-bit float type `half`, as a file stores it: each value's
/// [`HalfFloat::nearest`], little-endian.
pub fn half_bytes(half: HalfFloat, data: &[f32]) -> Vec<u8> {
    data.iter()
        .flat_map(|&x| half.nearest(x).to_le_bytes())
        .collect()
}

/// `data` in Q8_0 blocks: per block of 32, `d = max|x| / 127` and `q = round(x / d)`.
/// A last partial block is dropped.
pub fn q8_0_bytes(data: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(data.len() / 32 * 34);
    for block in data.chunks_exact(32) {
        let amax = block.iter().fold(0f32, |a, &x| a.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        bytes.extend(f32_to_f16(d).to_le_bytes());
        bytes.extend(
            block
                .iter()
                .map(|&x| ((x * id).round() as i8).to_le_bytes()[0]),
        );
    }
    bytes
}

/// `data` in Q4_1 blocks: per block of 32, `m = min`, `d = (max − min) / 15` and `q =
/// round((x − m) / d)`, clamped to 15. A last partial block is dropped.
pub fn q4_1_bytes(data: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(data.len() / 32 * 20);
    for block in data.chunks_exact(32) {
        let (min, d, id) = min_and_step(block, 15.0);
        bytes.extend(f32_to_f16(d).to_le_bytes());
        bytes.extend(f32_to_f16(min).to_le_bytes());
        let q = |x: f32| (((x - min) * id + 0.5) as u8).min(15);
        let (lo, hi) = block.split_at(16);
        bytes.extend(lo.iter().zip(hi).map(|(&a, &b)| q(a) | (q(b) << 4)));
    }
    bytes
}

/// `data` in Q5_1 blocks: as [`q4_1_bytes`], with `d = (max − min) / 31`, each code's
/// fifth bit in `qh`. A last partial block is dropped.
pub fn q5_1_bytes(data: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(data.len() / 32 * 24);
    for block in data.chunks_exact(32) {
        let (min, d, id) = min_and_step(block, 31.0);
        let q: Vec<u8> = block
            .iter()
            .map(|&x| (((x - min) * id + 0.5) as u8).min(31))
            .collect();
        let qh = q
            .iter()
            .enumerate()
            .fold(0u32, |qh, (j, &q)| qh | (u32::from(q >> 4) << j));
        bytes.extend(f32_to_f16(d).to_le_bytes());
        bytes.extend(f32_to_f16(min).to_le_bytes());
        bytes.extend(qh.to_le_bytes());
        let (lo, hi) = q.split_at(16);
        bytes.extend(
            lo.iter()
                .zip(hi)
                .map(|(&a, &b)| (a & 0xf) | ((b & 0xf) << 4)),
        );
    }
    bytes
}

/// `data` in Q6_K super-blocks of 256: per 16 values a step `max|x| / 31`, held as an
/// 8-bit multiple `sc` of the super-block's `d = largest step / 127`, and codes
/// `round(x / (d·sc)) + 32`, from 0 to 63. A last partial super-block is dropped.
pub fn q6_k_bytes(data: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(data.len() / 256 * 210);
    for block in data.chunks_exact(256) {
        let steps: Vec<f32> = block
            .chunks_exact(16)
            .map(|s| s.iter().fold(0f32, |a, &x| a.max(x.abs())) / 31.0)
            .collect();
        let d = f16_to_f32(f32_to_f16(
            steps.iter().fold(0f32, |a, &s| a.max(s)) / 127.0,
        ));
        let sc: Vec<i8> = steps
            .iter()
            .map(|&s| {
                if d > 0.0 {
                    (s / d).round().min(127.0) as i8
                } else {
                    0
                }
            })
            .collect();
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for (e, &x) in block.iter().enumerate() {
            let step = d * f32::from(sc[e / 16]);
            let q = if step > 0.0 { (x / step).round() } else { 0.0 };
            let q = (q.clamp(-32.0, 31.0) as i8 + 32) as u8;
            // As dequant::q6_k_blocks reads them back.
            let (half, k, l) = (e / 128, e % 128 / 32, e % 32);
            ql[64 * half + 32 * (k % 2) + l] |= (q & 0xf) << (4 * (k / 2));
            qh[32 * half + l] |= (q >> 4) << (2 * k);
        }
        bytes.extend(ql);
        bytes.extend(qh);
        bytes.extend(sc.iter().map(|s| s.to_le_bytes()[0]));
        bytes.extend(f32_to_f16(d).to_le_bytes());
    }
    bytes
}

/// A block's minimum, the step `d` that spreads it to its maximum in `top` steps, and
/// `1 / d` (0 for a constant block).
fn min_and_step(block: &[f32], top: f32) -> (f32, f32, f32) {
    let min = block.iter().fold(f32::INFINITY, |a, &x| a.min(x));
    let max = block.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
    let d = (max - min) / top;
    (min, d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

fn check_len(name: &str, dims: &[u64], data: &[f32], block: u64) {
    let n: u64 = dims.iter().product();
    assert_eq!(
        n,
        data.len() as u64,
        "tensor {name}: dims {dims:?} do not match {} values",
        data.len()
    );
    assert_eq!(
        dims.first().copied().unwrap_or(1) % block,
        0,
        "tensor {name}: ne0 must be a multiple of {block}"
    );
}

fn pad(out: &mut Vec<u8>, align: u64) {
    let len = (out.len() as u64).next_multiple_of(align) as usize;
    out.resize(len, 0);
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.extend(v.to_le_bytes()),
        Value::I8(v) => out.extend(v.to_le_bytes()),
        Value::U16(v) => out.extend(v.to_le_bytes()),
        Value::I16(v) => out.extend(v.to_le_bytes()),
        Value::U32(v) => out.extend(v.to_le_bytes()),
        Value::I32(v) => out.extend(v.to_le_bytes()),
        Value::F32(v) => out.extend(v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => write_str(out, s),
        Value::Array { elem_type, items } => {
            out.extend(elem_type.id().to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for item in items {
                write_value(out, item);
            }
        }
        Value::U64(v) => out.extend(v.to_le_bytes()),
        Value::I64(v) => out.extend(v.to_le_bytes()),
        Value::F64(v) => out.extend(v.to_le_bytes()),
    }
}

/// A copy of a Llama-family GGUF with only its first `n_layers` blocks: same tokenizer,
/// embedding and output head, same quant types, and `{arch}.block_count` set to match.
///
/// Its text is poorer but still the model's own, and it runs far faster. The browser
/// tests use one, since a software WebGPU adapter (SwiftShader) takes seconds per token
/// on the full model.
pub fn keep_first_layers(file: &crate::GgufFile<'_>, n_layers: u32) -> crate::Result<Vec<u8>> {
    let arch = file.architecture()?.to_owned();
    let block_count = format!("{arch}.block_count");
    let have = file.get_u32(&block_count)?;
    if n_layers == 0 || n_layers > have {
        return Err(crate::Error::InvalidInput {
            what: format!("cannot keep {n_layers} of the model's {have} layers"),
        });
    }
    let mut w = GgufWriter::new();
    for (key, value) in file.metadata_entries() {
        match key {
            k if k == block_count => w.metadata(k, Value::U32(n_layers)),
            // The writer lays out its own data section.
            "general.alignment" => &mut w,
            k => w.metadata(k, value.clone()),
        };
    }
    for info in file.tensors() {
        let layer = info
            .name
            .strip_prefix("blk.")
            .and_then(|rest| rest.split('.').next())
            .and_then(|i| i.parse::<u32>().ok());
        if layer.is_some_and(|i| i >= n_layers) {
            continue;
        }
        let bytes = file.tensor_bytes(&info.name)?.to_vec();
        w.tensor_raw(&info.name, &info.dims, info.dtype, bytes);
    }
    Ok(w.to_bytes())
}
