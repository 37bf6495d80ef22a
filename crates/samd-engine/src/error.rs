//! Errors of the decode loop.

/// What went wrong while decoding. The session stays usable after any of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The drafter rejected its input or config.
    #[error(transparent)]
    Draft(#[from] samd_draft::Error),
    /// The model failed (bad ids, device loss, readback).
    #[error(transparent)]
    Model(#[from] samd_model::Error),
    /// The prompt has no tokens.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The prompt leaves no room to generate in the context.
    #[error("the prompt has {len} tokens but the context holds {capacity}")]
    PromptTooLong {
        /// Prompt tokens.
        len: usize,
        /// Positions the model's cache holds.
        capacity: usize,
    },
    /// A generation option that cannot work.
    #[error("invalid option: {what}")]
    Options {
        /// Which option, and why.
        what: &'static str,
    },
    /// A method name that is not one of ours.
    #[error("unknown method {name:?} (expected one of ar, pld, sam, tr, sam+tr)")]
    UnknownMethod {
        /// The name given.
        name: String,
    },
    /// The static corpus was made with another tokenizer.
    #[error(
        "the static corpus was built with another tokenizer (hash {corpus:#x}, model {model:#x})"
    )]
    CorpusTokenizer {
        /// The corpus's tokenizer hash.
        corpus: u64,
        /// The model's tokenizer hash.
        model: u64,
    },
    /// `step` was called with no generation running.
    #[error("no generation is running: call start first")]
    NotStarted,
}
