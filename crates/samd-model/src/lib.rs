//! The model half of samd: GGUF files, the tokenizer they carry, and the Llama-family
//! forward pass that verifies draft trees.
#![deny(missing_docs)]

pub mod block_form;
pub mod block_rows;
pub mod config;
pub mod cpu_attention;
pub mod cpu_kv_store;
pub mod cpu_matmul;
pub mod cpu_rms_norm;
pub mod cpu_swiglu;
pub mod dequant;
pub mod error;
pub mod gguf;
pub mod gguf_writer;
pub mod kernel_check;
pub mod kernels;
pub mod kv_cache;
pub mod layer_ops;
pub mod llama;
pub mod reference;
pub mod sampler;
pub mod step_graph;
pub mod tokenizer;
pub mod top_k;

pub use config::{LlamaConfig, RopeStyle};
pub use error::{Error, Result};
pub use gguf::GgufFile;
pub use kv_cache::KvCache;
pub use layer_ops::BlockOps;
pub use llama::{
    AncestorMask, HostTensor, Llama, LogitRows, Logits, MAX_TREE_NODES, MatrixForm, TokenIds,
    WeightName, max_tree_nodes_on,
};
pub use sampler::Draw;
pub use tokenizer::Tokenizer;
