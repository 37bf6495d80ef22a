//! Drafters for SAM Decoding (speculative decoding via suffix automata, arXiv 2411.10666).
//!
//! A drafter proposes a [`tree::DraftTree`] of likely next tokens; the model verifies the
//! whole tree in one forward pass and keeps the longest correct path. This crate holds
//! every drafter samd uses, with no ML dependency, so the same code runs natively and in
//! wasm32:
//!
//! - [`sam`]: the suffix automaton and its match state;
//! - [`dynamic`]: the per-request automaton over the prompt and the output;
//! - [`corpus`] and [`wire`]: the static automaton over a corpus, and its file format;
//! - [`drafter`]: the [`Drafter`] trait and the drafters: SAM (the paper's adaptive
//!   combination), prompt lookup (the peer baseline) and Token Recycling;
//! - [`replay`]: replaying drafters against recorded greedy traces, to measure and tune
//!   them without a model.
#![deny(missing_docs)]

pub mod corpus;
pub mod drafter;
pub mod dynamic;
mod error;
mod hash;
pub mod replay;
pub mod sam;
pub mod tree;
#[deny(clippy::indexing_slicing, clippy::unwrap_used)]
pub mod wire;

pub use drafter::Drafter;
pub use error::Error;

/// A token id. Ids are below the vocabulary size; `u32::MAX` is reserved as the corpus
/// document separator.
pub type TokenId = u32;

/// The largest vocabulary supported: every id must stay below the separator.
pub const MAX_VOCAB_SIZE: u32 = u32::MAX - 1;

/// Rejects vocabulary sizes that are zero or collide with the separator.
pub(crate) fn check_vocab_size(vocab_size: u32) -> Result<(), Error> {
    if vocab_size == 0 || vocab_size > MAX_VOCAB_SIZE {
        return Err(Error::VocabSize {
            vocab_size,
            max: MAX_VOCAB_SIZE,
        });
    }
    Ok(())
}

/// Rejects ids at or beyond the vocabulary size.
#[inline]
pub(crate) fn check_token(token: TokenId, vocab_size: u32) -> Result<(), Error> {
    if token >= vocab_size {
        return Err(Error::TokenOutOfVocab { token, vocab_size });
    }
    Ok(())
}
