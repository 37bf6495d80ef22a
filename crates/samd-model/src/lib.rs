//! The model half of samd: GGUF files, the tokenizer they carry, and the Llama-family
//! forward pass that verifies draft trees.
#![deny(missing_docs)]
