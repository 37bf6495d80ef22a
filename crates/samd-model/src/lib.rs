//! The model half of samd: GGUF files, the tokenizer they carry, and the Llama-family
//! forward pass that verifies draft trees.
#![deny(missing_docs)]

pub mod dequant;
pub mod error;
pub mod gguf;
pub mod gguf_writer;
pub mod tokenizer;

pub use error::{Error, Result};
pub use gguf::GgufFile;
pub use tokenizer::Tokenizer;
