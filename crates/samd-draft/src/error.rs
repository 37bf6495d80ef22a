//! Errors of the drafter crate.
//!
//! Everything a caller can get wrong (token ids, configs, corpus files, traces) is an
//! `Error`, never a panic: corpus files come from the network in the browser.

/// What went wrong while drafting, loading a corpus or replaying a trace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A token id at or beyond the vocabulary size (or the reserved separator id).
    #[error("token id {token} is outside the vocabulary of {vocab_size} tokens")]
    TokenOutOfVocab {
        /// The offending id.
        token: u32,
        /// The vocabulary size the drafter was built for.
        vocab_size: u32,
    },
    /// The vocabulary size leaves no room for the reserved separator id.
    #[error("vocabulary size {vocab_size} is out of range (1 to {max})")]
    VocabSize {
        /// The size asked for.
        vocab_size: u32,
        /// The largest size supported.
        max: u32,
    },
    /// `draft` was called before any token was committed: a tree needs a root.
    #[error("nothing to draft from: no token has been committed yet")]
    EmptyText,
    /// The text outgrew the automaton's 32-bit positions.
    #[error("text of {len} tokens exceeds the automaton's limit of {max}")]
    TextTooLong {
        /// Tokens in the text, counting the one that did not fit.
        len: u64,
        /// The most tokens an automaton can hold.
        max: u64,
    },
    /// A drafter or tree setting that cannot work.
    #[error("invalid draft config: {what}")]
    Config {
        /// Which setting, and why.
        what: &'static str,
    },
    /// The verifier returned a different number of ids than the tree has nodes.
    #[error("verification gave {got} ids for a tree of {nodes} nodes")]
    VerifyLength {
        /// Ids received.
        got: usize,
        /// Nodes in the tree.
        nodes: usize,
    },
    /// The bytes are not a samd corpus file at all.
    #[error("not a samd corpus file (bad magic bytes)")]
    BadMagic,
    /// A corpus file from another format version.
    #[error("corpus file version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file length disagrees with what its header promises.
    #[error("corpus file is {have} bytes but its header implies {need}")]
    Length {
        /// Bytes the header implies.
        need: u64,
        /// Bytes present.
        have: u64,
    },
    /// The stored checksum does not match the contents.
    #[error("corpus checksum mismatch (stored {stored:#018x}, computed {computed:#018x})")]
    Checksum {
        /// Checksum in the file.
        stored: u64,
        /// Checksum of the bytes read.
        computed: u64,
    },
    /// A field of a corpus file holds an impossible value.
    #[error("corrupt corpus file: {what}")]
    Corrupt {
        /// Which field, and why.
        what: &'static str,
    },
    /// A trace that cannot be replayed.
    #[error("invalid trace: {what}")]
    Trace {
        /// What is wrong with it.
        what: &'static str,
    },
}
