//! A GGUF v2/v3 reader over a byte slice.
//!
//! The whole file is one `&[u8]` (a `fetch`ed `ArrayBuffer` in the browser, a read or
//! mapped file natively), so the parser needs no `std::fs`, no threads and no `Read`
//! trait, and tensor data is borrowed, never copied, until it is dequantised. Metadata is
//! parsed eagerly into owned [`Value`]s: it is small (the SmolLM2 vocab, 49k strings, is
//! the bulk) and owning it keeps [`Value`] free of lifetimes.
//!
//! The bytes are untrusted. Every read names its field and is bounds-checked; every count
//! is checked against the bytes that remain before anything is allocated; sizes use
//! checked arithmetic; after parsing, each tensor is validated (known type, dims product,
//! whole blocks per row, aligned offset, data inside the file). Any input gives `Ok` or
//! `Err`, never a panic; the unit tests truncate and bit-flip a valid file to check that.
//!
//! Layout (all little-endian), from the spec at
//! <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>:
//!
//! ```text
//! "GGUF" | version u32 | n_tensors u64 | n_kv u64
//! n_kv × (key: string, type: u32, value)
//! n_tensors × (name: string, n_dims: u32, ne[n_dims]: u64, type: u32, offset: u64)
//! padding to general.alignment (default 32)
//! tensor data; each tensor at data_start + offset (offset a multiple of the alignment)
//! string = len u64 + UTF-8 bytes; array = elem type u32 + count u64 + elements
//! ```
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fmt;

use crate::dequant;
use crate::error::{Error, Result};

/// The four bytes every GGUF file starts with.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section when `general.alignment` is absent (`GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most dimensions a tensor may have (`GGML_MAX_DIMS` in ggml.h).
pub const MAX_TENSOR_DIMS: u32 = 4;
/// Longest tensor name, in bytes (llama.cpp rejects names of `GGML_MAX_NAME` = 64 or more).
pub const MAX_TENSOR_NAME_BYTES: u64 = 63;
/// Deepest nesting of arrays in metadata. The spec sets none; real files nest at most one
/// level, and a cap keeps the recursive value parser from exhausting the stack.
pub const MAX_VALUE_DEPTH: usize = 8;

/// The most array elements the metadata may hold in all. An element takes a [`Value`] of
/// 32 bytes however small it is in the file (a u8 array grows 32-fold), so without a cap a
/// file could claim memory far beyond its size; the largest vocabularies with their merges
/// and token types hold about a million.
pub const MAX_ARRAY_ELEMENTS: usize = 1 << 22;

/// Well-known metadata keys (llama.cpp's names, see `gguf-py/gguf/constants.py`).
pub mod keys {
    /// The architecture name that prefixes the model's own keys (`llama`, `qwen2`, …).
    pub const GENERAL_ARCHITECTURE: &str = "general.architecture";
    /// Alignment of the tensor data section; a nonzero power of two.
    pub const GENERAL_ALIGNMENT: &str = "general.alignment";
    /// Human-readable model name.
    pub const GENERAL_NAME: &str = "general.name";
    /// Tokenizer family: `gpt2` (byte-level BPE), `llama` (SentencePiece), …
    pub const TOKENIZER_MODEL: &str = "tokenizer.ggml.model";
    /// Pre-tokenizer variant for BPE tokenizers (`smollm`, `llama-bpe`, `qwen2`, …).
    pub const TOKENIZER_PRE: &str = "tokenizer.ggml.pre";
    /// Token strings, indexed by id.
    pub const TOKENIZER_TOKENS: &str = "tokenizer.ggml.tokens";
    /// BPE merges, as `"left right"` strings in rank order.
    pub const TOKENIZER_MERGES: &str = "tokenizer.ggml.merges";
    /// Per-token type: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub const TOKENIZER_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
    /// End-of-sequence token id.
    pub const TOKENIZER_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
    /// Beginning-of-sequence token id.
    pub const TOKENIZER_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
    /// Whether a prompt starts with the BOS token; absent means it does not, but for a
    /// SentencePiece vocab, where it does (as in llama.cpp).
    pub const TOKENIZER_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
    /// Per-token scores of a SentencePiece vocab, which rank its merges.
    pub const TOKENIZER_SCORES: &str = "tokenizer.ggml.scores";
    /// The id SentencePiece gives what it cannot encode.
    pub const TOKENIZER_UNKNOWN_ID: &str = "tokenizer.ggml.unknown_token_id";
    /// Whether SentencePiece starts a text with a space; absent means it does.
    pub const TOKENIZER_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
    /// Jinja chat template.
    pub const TOKENIZER_CHAT_TEMPLATE: &str = "tokenizer.chat_template";
}

/// The type of a metadata value, with its GGUF id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the variant names are the spec's
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// The type for a GGUF type id, if the spec defines it.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The GGUF type id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// The fewest bytes a value of this type takes, used to reject impossible counts
    /// before allocating.
    fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }

    /// The spec's lowercase name, for error messages.
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "string",
            Array => "array",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }
}

/// One metadata value. Owned, so that it outlives nothing and needs no lifetime.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // one variant per GGUF value type
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    /// A homogeneous array; `elem_type` is kept so that empty arrays round-trip.
    Array {
        elem_type: ValueType,
        items: Vec<Value>,
    },
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The value's GGUF type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array { .. } => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The value as a signed 128-bit integer, if it is an integer of any width; lets the
    /// typed getters accept whatever integer type a converter chose.
    pub fn as_i128(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(v) => v.into(),
            Value::I8(v) => v.into(),
            Value::U16(v) => v.into(),
            Value::I16(v) => v.into(),
            Value::U32(v) => v.into(),
            Value::I32(v) => v.into(),
            Value::U64(v) => v.into(),
            Value::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The items, if this is an array.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array { items, .. } => Some(items),
            _ => None,
        }
    }

    /// A short description for error messages: the type, plus the value for scalars.
    pub(crate) fn describe(&self) -> String {
        match self {
            Value::String(_) => "string".to_owned(),
            Value::Array { elem_type, items } => {
                format!("array of {} {}", items.len(), elem_type.name())
            }
            Value::Bool(b) => format!("bool {b}"),
            Value::F32(v) => format!("f32 {v}"),
            Value::F64(v) => format!("f64 {v}"),
            other => match other.as_i128() {
                Some(i) => format!("{} {i}", other.value_type().name()),
                None => other.value_type().name().to_owned(),
            },
        }
    }
}

macro_rules! ggml_types {
    ($( $variant:ident = $id:literal, $name:literal, $block:literal, $bytes:literal; )*) => {
        /// A ggml tensor type: how the elements are stored.
        ///
        /// Lists every type ggml defines (ids from `enum ggml_type` in ggml.h), so that a
        /// file with, say, IQ2_XXS tensors parses and is size-checked, and only
        /// dequantising such a tensor fails, with an error that names its type.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(non_camel_case_types, missing_docs)]
        pub enum GgmlType {
            $( $variant = $id, )*
        }

        impl GgmlType {
            /// The type for a ggml type id; `None` for ids ggml never had or has removed.
            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $( $id => Some(GgmlType::$variant), )*
                    _ => None,
                }
            }

            /// ggml's name for the type (`"q4_1"`).
            pub fn name(self) -> &'static str {
                match self {
                    $( GgmlType::$variant => $name, )*
                }
            }

            /// Elements per block (1 for plain types).
            pub fn block_size(self) -> u64 {
                match self {
                    $( GgmlType::$variant => $block, )*
                }
            }

            /// Bytes per block (`type_size` in ggml).
            pub fn type_size(self) -> u64 {
                match self {
                    $( GgmlType::$variant => $bytes, )*
                }
            }
        }
    };
}

// Block sizes and byte sizes from the `block_*` structs in ggml-common.h.
ggml_types! {
    F32 = 0, "f32", 1, 4;
    F16 = 1, "f16", 1, 2;
    Q4_0 = 2, "q4_0", 32, 18;
    Q4_1 = 3, "q4_1", 32, 20;
    Q5_0 = 6, "q5_0", 32, 22;
    Q5_1 = 7, "q5_1", 32, 24;
    Q8_0 = 8, "q8_0", 32, 34;
    Q8_1 = 9, "q8_1", 32, 36;
    Q2_K = 10, "q2_K", 256, 84;
    Q3_K = 11, "q3_K", 256, 110;
    Q4_K = 12, "q4_K", 256, 144;
    Q5_K = 13, "q5_K", 256, 176;
    Q6_K = 14, "q6_K", 256, 210;
    Q8_K = 15, "q8_K", 256, 292;
    IQ2_XXS = 16, "iq2_xxs", 256, 66;
    IQ2_XS = 17, "iq2_xs", 256, 74;
    IQ3_XXS = 18, "iq3_xxs", 256, 98;
    IQ1_S = 19, "iq1_s", 256, 50;
    IQ4_NL = 20, "iq4_nl", 32, 18;
    IQ3_S = 21, "iq3_s", 256, 110;
    IQ2_S = 22, "iq2_s", 256, 82;
    IQ4_XS = 23, "iq4_xs", 256, 136;
    I8 = 24, "i8", 1, 1;
    I16 = 25, "i16", 1, 2;
    I32 = 26, "i32", 1, 4;
    I64 = 27, "i64", 1, 8;
    F64 = 28, "f64", 1, 8;
    IQ1_M = 29, "iq1_m", 256, 56;
    BF16 = 30, "bf16", 1, 2;
    TQ1_0 = 34, "tq1_0", 256, 54;
    TQ2_0 = 35, "tq2_0", 256, 66;
    MXFP4 = 39, "mxfp4", 32, 17;
}

impl GgmlType {
    /// The ggml type id.
    pub fn id(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name().to_ascii_uppercase())
    }
}

/// Where a tensor is and what it holds. Validated by [`GgufFile::parse`]: the type is
/// known, `dims[0]` is a whole number of blocks, the element count does not overflow, and
/// `data_offset + offset .. + n_bytes()` lies inside the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name, unique in the file (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in GGUF order: `dims[0]` (ne0) varies fastest, so a matrix with `rows`
    /// rows of `cols` elements has `dims == [cols, rows]`.
    pub dims: Vec<u64>,
    /// Storage type.
    pub dtype: GgmlType,
    /// Byte offset of the data relative to the start of the data section; a multiple of
    /// the file's alignment.
    pub offset: u64,
    /// Element count, the product of `dims` (1 for zero dims).
    n_elements: u64,
    /// Byte size of the data: `n_elements / block_size * type_size`.
    n_bytes: u64,
}

impl TensorInfo {
    /// The number of elements (product of the dims).
    pub fn n_elements(&self) -> u64 {
        self.n_elements
    }

    /// The number of bytes the data takes in the file.
    pub fn n_bytes(&self) -> u64 {
        self.n_bytes
    }
}

/// A parsed GGUF file borrowing its bytes.
pub struct GgufFile<'a> {
    bytes: &'a [u8],
    version: u32,
    /// Metadata in file order.
    metadata: Vec<(String, Value)>,
    /// Key → index into `metadata`.
    metadata_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    /// Name → index into `tensors`.
    tensor_index: HashMap<String, usize>,
    alignment: u64,
    /// Absolute offset of the data section; a multiple of `alignment`.
    data_offset: u64,
}

/// Summarises instead of dumping: the bytes are the whole model.
impl fmt::Debug for GgufFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("len_bytes", &self.bytes.len())
            .field("version", &self.version)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .finish_non_exhaustive()
    }
}

/// A cursor over the input that names every field it reads.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Array elements the metadata may still hold (see [`MAX_ARRAY_ELEMENTS`]).
    elements_left: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8]> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n));
        match end.and_then(|end| Some((end, self.bytes.get(self.pos..end)?))) {
            Some((end, out)) => {
                self.pos = end;
                Ok(out)
            }
            None => Err(Error::Truncated {
                what,
                offset: self.pos,
                need: n,
                have: self.remaining(),
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let slice = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8> {
        Ok(u8::from_le_bytes(self.array(what)?))
    }
    fn u16(&mut self, what: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Reads a length-prefixed UTF-8 string, checking the length against what is left
    /// before allocating.
    fn string(&mut self, what: &'static str, max: Option<u64>) -> Result<String> {
        let len_offset = self.pos;
        let len = self.u64(what)?;
        if let Some(max) = max
            && len > max
        {
            return Err(Error::TooLong {
                what,
                len,
                max,
                offset: len_offset,
            });
        }
        let offset = self.pos;
        let raw = self.take(len, what)?;
        match std::str::from_utf8(raw) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(Error::InvalidUtf8 { what, offset }),
        }
    }

    /// Checks that `count` items of at least `min_size` bytes each can fit in what is left.
    fn check_count(
        &self,
        what: &'static str,
        count: u64,
        min_size: u64,
        offset: usize,
    ) -> Result<usize> {
        let too_large = || Error::CountTooLarge {
            what,
            count,
            offset,
            have: self.remaining(),
        };
        let need = count.checked_mul(min_size).ok_or_else(too_large)?;
        let have = u64::try_from(self.remaining()).map_err(|_| too_large())?;
        if need > have {
            return Err(too_large());
        }
        usize::try_from(count).map_err(|_| too_large())
    }

    fn value_type(&mut self, what: &'static str) -> Result<ValueType> {
        let offset = self.pos;
        let type_id = self.u32(what)?;
        ValueType::from_id(type_id).ok_or(Error::UnknownValueType { type_id, offset })
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.u8("u8 value")?),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array("i8 value")?)),
            ValueType::U16 => Value::U16(self.u16("u16 value")?),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array("i16 value")?)),
            ValueType::U32 => Value::U32(self.u32("u32 value")?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array("i32 value")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array("f32 value")?)),
            // llama.cpp reads bools as a byte and treats nonzero as true.
            ValueType::Bool => Value::Bool(self.u8("bool value")? != 0),
            ValueType::String => Value::String(self.string("string value", None)?),
            ValueType::U64 => Value::U64(self.u64("u64 value")?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array("i64 value")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array("f64 value")?)),
            ValueType::Array => {
                let offset = self.pos;
                if depth >= MAX_VALUE_DEPTH {
                    return Err(Error::NestingTooDeep {
                        max: MAX_VALUE_DEPTH,
                        offset,
                    });
                }
                let elem_type = self.value_type("array element type")?;
                let count_offset = self.pos;
                let count = self.u64("array length")?;
                let n =
                    self.check_count("array element", count, elem_type.min_size(), count_offset)?;
                self.elements_left =
                    self.elements_left
                        .checked_sub(n)
                        .ok_or(Error::TooManyArrayElements {
                            max: MAX_ARRAY_ELEMENTS,
                            offset: count_offset,
                        })?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem_type, depth + 1)?);
                }
                Value::Array { elem_type, items }
            }
        })
    }
}

fn overflow(what: &'static str, context: &str) -> Error {
    Error::Overflow {
        what,
        context: context.to_owned(),
    }
}

impl<'a> GgufFile<'a> {
    /// Parses and validates a GGUF file. Tensor data is not touched until asked for, so
    /// this is fast (it is dominated by the vocab strings).
    pub fn parse(bytes: &'a [u8]) -> Result<GgufFile<'a>> {
        let mut r = Reader {
            bytes,
            pos: 0,
            elements_left: MAX_ARRAY_ELEMENTS,
        };

        let mut found = [0u8; 4];
        for (dst, src) in found.iter_mut().zip(bytes) {
            *dst = *src;
        }
        if found != MAGIC {
            return Err(Error::BadMagic { found });
        }
        r.take(4, "magic")?;
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::UnsupportedVersion { version });
        }
        let n_tensors_offset = r.pos;
        let n_tensors = r.u64("tensor count")?;
        let n_kv_offset = r.pos;
        let n_kv = r.u64("metadata count")?;
        // Smallest KV: empty key (8) + type (4) + u8 (1). Smallest tensor info: empty name
        // (8) + n_dims (4) + type (4) + offset (8).
        let n_kv = r.check_count("metadata", n_kv, 13, n_kv_offset)?;
        let n_tensors = r.check_count("tensor info", n_tensors, 24, n_tensors_offset)?;

        let mut metadata = Vec::with_capacity(n_kv);
        let mut metadata_index = HashMap::with_capacity(n_kv);
        for _ in 0..n_kv {
            let key = r.string("metadata key", None)?;
            let ty = r.value_type("metadata value type")?;
            let value = r.value(ty, 0)?;
            if metadata_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(Error::DuplicateKey { key });
            }
            metadata.push((key, value));
        }

        let tensors_offset = r.pos;
        let _ = r.check_count("tensor info", n_tensors as u64, 24, tensors_offset)?;
        let mut raw_tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = r.string("tensor name", Some(MAX_TENSOR_NAME_BYTES))?;
            let n_dims = r.u32("tensor dimension count")?;
            if n_dims > MAX_TENSOR_DIMS {
                return Err(Error::TooManyDims {
                    name,
                    n_dims,
                    max: MAX_TENSOR_DIMS,
                });
            }
            let mut dims = Vec::with_capacity(MAX_TENSOR_DIMS as usize);
            for _ in 0..n_dims {
                dims.push(r.u64("tensor dimension")?);
            }
            let type_id = r.u32("tensor type")?;
            let offset = r.u64("tensor offset")?;
            raw_tensors.push((name, dims, type_id, offset));
        }

        let mut file = GgufFile {
            bytes,
            version,
            metadata,
            metadata_index,
            tensors: Vec::with_capacity(n_tensors),
            tensor_index: HashMap::with_capacity(n_tensors),
            alignment: DEFAULT_ALIGNMENT,
            data_offset: 0,
        };
        if file.metadata(keys::GENERAL_ALIGNMENT).is_some() {
            let alignment = u64::from(file.get_u32(keys::GENERAL_ALIGNMENT)?);
            if alignment == 0 || !alignment.is_power_of_two() {
                return Err(Error::BadAlignment { alignment });
            }
            file.alignment = alignment;
        }
        let end_of_infos = u64::try_from(r.pos).map_err(|_| overflow("data offset", "header"))?;
        file.data_offset = end_of_infos
            .checked_next_multiple_of(file.alignment)
            .ok_or_else(|| overflow("data offset", "header"))?;

        for (name, dims, type_id, offset) in raw_tensors {
            let info = file.validate_tensor(name, dims, type_id, offset)?;
            if file.tensor_index.contains_key(&info.name) {
                return Err(Error::DuplicateTensor { name: info.name });
            }
            file.tensor_index
                .insert(info.name.clone(), file.tensors.len());
            file.tensors.push(info);
        }
        Ok(file)
    }

    fn validate_tensor(
        &self,
        name: String,
        dims: Vec<u64>,
        type_id: u32,
        offset: u64,
    ) -> Result<TensorInfo> {
        let Some(dtype) = GgmlType::from_id(type_id) else {
            return Err(Error::UnknownTensorType { name, type_id });
        };
        let mut n_elements: u64 = 1;
        for &d in &dims {
            n_elements = match n_elements.checked_mul(d) {
                Some(n) => n,
                None => return Err(overflow("element count", &name)),
            };
        }
        let ne0 = dims.first().copied().unwrap_or(1);
        let block_size = dtype.block_size();
        if !ne0.is_multiple_of(block_size) {
            return Err(Error::NotBlockMultiple {
                name,
                dtype,
                ne0,
                block_size,
            });
        }
        let n_bytes = match (n_elements / block_size).checked_mul(dtype.type_size()) {
            Some(n) => n,
            None => return Err(overflow("byte size", &name)),
        };
        if !offset.is_multiple_of(self.alignment) {
            return Err(Error::MisalignedTensor {
                name,
                offset,
                alignment: self.alignment,
            });
        }
        let end = match self
            .data_offset
            .checked_add(offset)
            .and_then(|start| start.checked_add(n_bytes))
        {
            Some(end) => end,
            None => return Err(overflow("data end", &name)),
        };
        let have = u64::try_from(self.bytes.len()).map_err(|_| overflow("file length", &name))?;
        if end > have {
            return Err(Error::TensorOutOfBounds {
                name,
                need: end,
                have,
            });
        }
        Ok(TensorInfo {
            name,
            dims,
            dtype,
            offset,
            n_elements,
            n_bytes,
        })
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The data section's alignment (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute byte offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata in file order, for inspection tools.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value stored under `key`, if any.
    pub fn metadata(&self, key: &str) -> Option<&Value> {
        let i = *self.metadata_index.get(key)?;
        self.metadata.get(i).map(|(_, v)| v)
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.metadata(key).ok_or_else(|| Error::MissingKey {
            key: key.to_owned(),
        })
    }

    fn wrong_type(key: &str, expected: &'static str, found: &Value) -> Error {
        Error::WrongType {
            key: key.to_owned(),
            expected,
            found: found.describe(),
        }
    }

    /// `key` as a `u32`. Any integer type is accepted if the value fits, because
    /// converters differ in which width they write (`block_count` is u32 in some files,
    /// i32 or u64 in others).
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        let v = self.require(key)?;
        v.as_i128()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| Self::wrong_type(key, "an integer in u32 range", v))
    }

    /// `key` as a `u32`, or `None` when absent (the caller states the default).
    pub fn get_u32_opt(&self, key: &str) -> Result<Option<u32>> {
        match self.metadata(key) {
            None => Ok(None),
            Some(_) => self.get_u32(key).map(Some),
        }
    }

    /// `key` as an `f32`. F32 and F64 values are accepted, and integers too (some
    /// converters write `rope.freq_base` as an integer).
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        let v = self.require(key)?;
        match *v {
            Value::F32(x) => Ok(x),
            #[allow(clippy::cast_possible_truncation)]
            Value::F64(x) => Ok(x as f32),
            _ => match v.as_i128() {
                #[allow(clippy::cast_precision_loss)]
                Some(i) => Ok(i as f32),
                None => Err(Self::wrong_type(key, "a number", v)),
            },
        }
    }

    /// `key` as an `f32`, or `None` when absent (the caller states the default).
    pub fn get_f32_opt(&self, key: &str) -> Result<Option<f32>> {
        match self.metadata(key) {
            None => Ok(None),
            Some(_) => self.get_f32(key).map(Some),
        }
    }

    /// `key` as a string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str()
            .ok_or_else(|| Self::wrong_type(key, "a string", v))
    }

    /// `key` as an array of any element type.
    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        let v = self.require(key)?;
        v.as_array()
            .ok_or_else(|| Self::wrong_type(key, "an array", v))
    }

    /// `key` as an array of strings (the vocab, the merges).
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.require(key)?;
        match v {
            Value::Array {
                elem_type: ValueType::String,
                items,
            } => Ok(items.iter().filter_map(Value::as_str).collect()),
            _ => Err(Self::wrong_type(key, "an array of strings", v)),
        }
    }

    /// `general.architecture`, which prefixes the model's own keys (`llama.block_count`).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str(keys::GENERAL_ARCHITECTURE)
    }

    /// All tensors in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor_index
            .get(name)
            .and_then(|&i| self.tensors.get(i))
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_owned(),
            })
    }

    /// The raw bytes of a tensor, in its storage type, for uploading quantised blocks to
    /// a GPU as they are.
    pub fn tensor_bytes(&self, name: &str) -> Result<&'a [u8]> {
        let info = self.tensor(name)?;
        self.bytes_of(info)
    }

    fn bytes_of(&self, info: &TensorInfo) -> Result<&'a [u8]> {
        // Checked in `validate_tensor`; recomputed here so that no index can panic.
        let oob = || Error::TensorOutOfBounds {
            name: info.name.clone(),
            need: u64::MAX,
            have: self.bytes.len() as u64,
        };
        let start = self.data_offset.checked_add(info.offset).ok_or_else(oob)?;
        let end = start.checked_add(info.n_bytes).ok_or_else(oob)?;
        let start = usize::try_from(start).map_err(|_| oob())?;
        let end = usize::try_from(end).map_err(|_| oob())?;
        self.bytes.get(start..end).ok_or_else(oob)
    }

    /// A tensor dequantised to f32, in storage order: row-major over the GGUF dims with
    /// `dims[0]` (ne0) innermost, so a `[cols, rows]` matrix comes out as `rows × cols`.
    pub fn tensor_f32(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.tensor(name)?;
        let bytes = self.bytes_of(info)?;
        dequant::dequantize(info.dtype, bytes, info.n_elements).map_err(|e| match e {
            dequant::DequantError::Unsupported => Error::UnsupportedType {
                name: info.name.clone(),
                dtype: info.dtype,
            },
            dequant::DequantError::SizeMismatch => Error::TensorOutOfBounds {
                name: info.name.clone(),
                need: info.n_bytes,
                have: bytes.len() as u64,
            },
        })
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests;
