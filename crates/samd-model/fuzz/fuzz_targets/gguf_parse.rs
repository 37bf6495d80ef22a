//! Parses arbitrary bytes as GGUF, dequantises every tensor and reads it in blocks, builds
//! the tokenizer, and loads whatever has a valid config as a model on the CPU: any input
//! must give `Ok` or `Err` (or `None`), never a panic, an abort or an out-of-memory.
//!
//! Loading is where metadata sizes allocations (the RoPE table, the matrices), so it is
//! where a file that claims more than it holds would do harm.
#![no_main]

use burn::tensor::Device;
use libfuzzer_sys::fuzz_target;
use samd_model::gguf::GgufFile;
use samd_model::{Llama, LlamaConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::parse(data) else {
        return;
    };
    let _ = file.architecture();
    for info in file.tensors() {
        let _ = file.tensor_f32(&info.name);
        let _ = samd_model::quant_rows::QuantRows::of_tensor(&file, info);
    }
    // Building a tokenizer exercises the metadata getters and the merge validation.
    let _ = samd_model::tokenizer::Tokenizer::from_gguf(&file);
    if LlamaConfig::from_gguf(&file).is_ok() {
        let _ = Llama::from_gguf(&file, &Device::flex());
    }
});
