//! The samd decode loop: plain autoregressive decoding and lossless speculative decoding,
//! where each step verifies one draft tree in one batched forward pass.
//!
//! - [`Session`] runs generations over a [`Target`] (the model and its cache) with a
//!   drafter chosen by [`Method`];
//! - [`Stats`] counts what MAT, tokens/s and the time split come from;
//! - [`bench`] runs Spec-Bench prompts through every method (or replays traces) and
//!   aggregates the results.
//!
//! The loop is `async` so that the same code runs natively (under a blocking executor)
//! and in the browser (where readbacks must be awaited).
#![deny(missing_docs)]

pub mod bench;
mod budget;
mod error;
mod method;
mod sampling;
mod session;
mod stats;
mod target;
mod text;

pub use budget::{CostEstimate, CostShape, TreePolicy};
pub use error::Error;
pub use method::{Method, check_corpus};
pub use sampling::Sampling;
pub use session::{GenerateOptions, PREFILL_CHUNK, Session, StepEvent, StopReason};
pub use stats::Stats;
pub use target::{ModelTarget, PendingIds, Reads, Target, Verified, WarmUp, split_columns};
pub use text::TextStream;
