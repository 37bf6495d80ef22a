//! The one error type of `samd-model`.
//!
//! GGUF files and the tokenizer data inside them are untrusted input, so every way they can
//! be wrong is a variant here that carries the values explaining it (the key, the tensor,
//! the offset, the sizes), rather than a panic or a bare string.
//!
//! The GGUF and tokenizer variants come first, the forward pass's after them.

use crate::gguf::GgmlType;

/// Everything that can go wrong while reading a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file does not start with the GGUF magic bytes `GGUF`.
    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The first four bytes of the input (zero-padded if it is shorter).
        found: [u8; 4],
    },
    /// The GGUF version is not 2 or 3 (version 1 used 32-bit counts and is long gone).
    #[error("unsupported GGUF version {version} (supported: 2, 3)")]
    UnsupportedVersion {
        /// The version field as read (little-endian).
        version: u32,
    },
    /// The input ends before a field that the header says is there.
    #[error(
        "GGUF truncated while reading {what} at offset {offset}: need {need} bytes, {have} left"
    )]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Byte offset of the field.
        offset: usize,
        /// Bytes the field needs.
        need: u64,
        /// Bytes left in the input.
        have: usize,
    },
    /// A count in the file cannot possibly fit in the bytes that remain.
    #[error("GGUF {what} count {count} cannot fit in the {have} bytes left at offset {offset}")]
    CountTooLarge {
        /// What is being counted.
        what: &'static str,
        /// The count as read.
        count: u64,
        /// Byte offset of the count.
        offset: usize,
        /// Bytes left in the input.
        have: usize,
    },
    /// A length is above a cap that llama.cpp also enforces.
    #[error("GGUF {what} has length {len} at offset {offset}, above the maximum {max}")]
    TooLong {
        /// What is too long.
        what: &'static str,
        /// The length as read.
        len: u64,
        /// The cap.
        max: u64,
        /// Byte offset of the length.
        offset: usize,
    },
    /// A GGUF string is not UTF-8, which the spec requires.
    #[error("GGUF {what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// What the string is.
        what: &'static str,
        /// Byte offset of the string's bytes.
        offset: usize,
    },
    /// A metadata value type id outside the GGUF spec.
    #[error("unknown GGUF value type {type_id} at offset {offset}")]
    UnknownValueType {
        /// The type id as read.
        type_id: u32,
        /// Byte offset of the type id.
        offset: usize,
    },
    /// More array elements in the metadata than any tokenizer needs: each becomes a value
    /// in memory several times its size in the file.
    #[error(
        "GGUF metadata arrays hold more than {max} elements in all (at offset {offset}); \
         a tokenizer needs a few hundred thousand"
    )]
    TooManyArrayElements {
        /// The cap.
        max: usize,
        /// Byte offset of the array that went past it.
        offset: usize,
    },
    /// Arrays nested deeper than we allow (recursion must stay bounded).
    #[error("GGUF arrays nested deeper than {max} at offset {offset}")]
    NestingTooDeep {
        /// The depth cap.
        max: usize,
        /// Byte offset of the offending array.
        offset: usize,
    },
    /// The same metadata key appears twice.
    #[error("duplicate GGUF metadata key {key:?}")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// The same tensor name appears twice.
    #[error("duplicate GGUF tensor name {name:?}")]
    DuplicateTensor {
        /// The repeated name.
        name: String,
    },
    /// A tensor has more dimensions than ggml supports.
    #[error("tensor {name:?} has {n_dims} dimensions, at most {max} are supported")]
    TooManyDims {
        /// The tensor.
        name: String,
        /// Its dimension count.
        n_dims: u32,
        /// The cap (`GGML_MAX_DIMS`).
        max: u32,
    },
    /// A tensor type id that is not a ggml type (or one ggml has removed).
    #[error("tensor {name:?} has unknown ggml type id {type_id}")]
    UnknownTensorType {
        /// The tensor.
        name: String,
        /// The type id as read.
        type_id: u32,
    },
    /// Size arithmetic on values from the file overflowed.
    #[error("arithmetic overflow computing {what} for {context:?}")]
    Overflow {
        /// The quantity being computed.
        what: &'static str,
        /// The tensor or key it belongs to.
        context: String,
    },
    /// A tensor's rows are not a whole number of quantisation blocks.
    #[error(
        "tensor {name:?} ({dtype}) has ne0 = {ne0}, not a multiple of the block size {block_size}"
    )]
    NotBlockMultiple {
        /// The tensor.
        name: String,
        /// Its type.
        dtype: GgmlType,
        /// Its innermost dimension.
        ne0: u64,
        /// The type's block size.
        block_size: u64,
    },
    /// `general.alignment` is zero or not a power of two.
    #[error("GGUF alignment {alignment} is not a nonzero power of two")]
    BadAlignment {
        /// The alignment as read.
        alignment: u64,
    },
    /// A tensor's data offset is not a multiple of the file's alignment.
    #[error("tensor {name:?} offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        /// The tensor.
        name: String,
        /// Its offset, relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor's data runs past the end of the file.
    #[error("tensor {name:?} data ends at byte {need}, but the file has {have} bytes")]
    TensorOutOfBounds {
        /// The tensor.
        name: String,
        /// Absolute end offset of its data.
        need: u64,
        /// File length.
        have: u64,
    },
    /// A metadata key that the model needs is absent.
    #[error("GGUF metadata has no key {key:?}")]
    MissingKey {
        /// The key.
        key: String,
    },
    /// A metadata value has a different type than the model needs.
    #[error("GGUF metadata key {key:?} is {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What was wanted.
        expected: &'static str,
        /// What the file has (a type name, possibly with the value).
        found: String,
    },
    /// A tensor that the model needs is absent.
    #[error("GGUF has no tensor {name:?}")]
    MissingTensor {
        /// The tensor name.
        name: String,
    },
    /// A tensor's type has no dequantiser here.
    #[error(
        "tensor {name:?} has type {dtype}, which samd cannot dequantise (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS)"
    )]
    UnsupportedType {
        /// The tensor.
        name: String,
        /// Its type.
        dtype: GgmlType,
    },
    /// The GGUF's tokenizer is of a kind samd cannot build.
    #[error("unsupported tokenizer: {what} is {found:?} ({hint})")]
    UnsupportedTokenizer {
        /// The metadata key that decides it.
        what: &'static str,
        /// Its value in the file.
        found: String,
        /// What is supported.
        hint: &'static str,
    },
    /// The tokenizer metadata is inconsistent.
    #[error("invalid tokenizer data in {key:?}: {problem}")]
    InvalidTokenizer {
        /// The metadata key at fault.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The chat template is not one samd knows how to format.
    #[error("unsupported chat template: {reason}")]
    UnsupportedChatTemplate {
        /// Why it is not supported.
        reason: &'static str,
    },
    /// The `tokenizers` crate failed.
    #[error("tokenizer failed while {what}")]
    Tokenizer {
        /// What we asked it to do.
        what: &'static str,
        /// Its error.
        #[source]
        source: tokenizers::Error,
    },
    // ---- forward pass (config.rs, kv_cache.rs, llama.rs) ----
    /// The file is for an architecture (or an architecture variant) that the forward pass
    /// does not implement.
    #[error("unsupported model architecture {arch:?}: {reason}")]
    UnsupportedArchitecture {
        /// `general.architecture` as found in the file.
        arch: String,
        /// What is missing to support it.
        reason: String,
    },
    /// The model configuration read from GGUF metadata is inconsistent.
    #[error("invalid model configuration: {what}")]
    InvalidConfig {
        /// What is wrong.
        what: String,
    },
    /// A caller passed arguments that do not fit together.
    #[error("invalid input: {what}")]
    InvalidInput {
        /// What is wrong.
        what: String,
    },
    /// The KV cache has no room for the new nodes (samd never slides the window).
    #[error("KV cache full: need {need} slots, capacity {capacity}")]
    CacheFull {
        /// Slots needed.
        need: usize,
        /// Slots available.
        capacity: usize,
    },
    /// Reading a tensor back from the device failed.
    #[error("device readback failed: {reason}")]
    Readback {
        /// The backend's message.
        reason: String,
    },
    /// Replaying a captured verify step on the device failed.
    #[error("replaying a captured step failed: {reason}")]
    Replay {
        /// The backend's message.
        reason: String,
    },
    /// A weight holds a value that is not a finite number: a corrupt file (a random or
    /// damaged scale reads as NaN or infinity), which would make every logit NaN.
    #[error(
        "weight {name:?} holds a value that is not a finite number (NaN or infinity): the file is corrupt"
    )]
    NonFiniteWeight {
        /// The tensor's GGUF name.
        name: String,
    },
    /// A row of logits held no number to choose a token by: the model's activations
    /// overflowed f32 to infinity and then NaN (weights far larger than a trained model's).
    #[error(
        "the model's logits are NaN, so no token can be chosen: its activations overflow f32 (are its weights a trained model's?)"
    )]
    NonFiniteLogits,
    /// A weight tensor has a different shape than the configuration implies.
    #[error("weight {name:?} has dims {actual:?}, expected {expected:?}")]
    WeightShape {
        /// The GGUF tensor name.
        name: String,
        /// Dims the configuration implies.
        expected: Vec<usize>,
        /// Dims in the file.
        actual: Vec<usize>,
    },
    /// A weight the model needs is absent.
    #[error("missing weight {name:?}")]
    MissingWeight {
        /// The GGUF tensor name.
        name: String,
    },
    /// A token id is not below the vocab size.
    #[error("token id {token} out of range for vocab size {vocab_size}")]
    TokenOutOfRange {
        /// The token id.
        token: u32,
        /// The vocab size.
        vocab_size: usize,
    },
    /// A position is not below the context length.
    #[error("position {position} out of range for context length {max_positions}")]
    PositionOutOfRange {
        /// The position.
        position: u32,
        /// The context length.
        max_positions: usize,
    },
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
