//! Parses arbitrary bytes as GGUF, dequantises every tensor and reads it in blocks: any
//! input must give `Ok` or `Err` (or `None`), never a panic, an abort or an out-of-memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use samd_model::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = GgufFile::parse(data) {
        let _ = file.architecture();
        for info in file.tensors() {
            let _ = file.tensor_f32(&info.name);
            let _ = samd_model::quant_rows::QuantRows::of_tensor(&file, info);
        }
        // Building a tokenizer exercises the metadata getters and the merge validation.
        let _ = samd_model::tokenizer::Tokenizer::from_gguf(&file);
    }
});
