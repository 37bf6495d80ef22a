//! Parses arbitrary bytes as GGUF, dequantises every tensor and reads it in blocks, builds
//! the tokenizer, sizes what a GPU would hold, loads whatever has a valid config as a
//! model on the CPU, and runs two tokens through what loads: any input must give `Ok` or
//! `Err` (or `None`), never a panic, an abort or an out-of-memory, and a model that loads
//! must run (to ids, or to the error that says its logits are NaN).
//!
//! Loading is where metadata sizes allocations (the RoPE table, the matrices), so it is
//! where a file that claims more than it holds would do harm; the forward is where odd
//! but valid shapes (heads, widths that are no multiple of a block or a lane) meet the CPU
//! kernels.
#![no_main]

use burn::tensor::{Device, try_read_sync};
use libfuzzer_sys::fuzz_target;
use samd_model::gguf::GgufFile;
use samd_model::{AncestorMask, Llama};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::parse(data) else {
        return;
    };
    let _ = file.architecture();
    for info in file.tensors() {
        let _ = file.tensor_f32(&info.name);
        let _ = samd_model::block_rows::BlockRows::of_tensor(&file, info);
    }
    // Building a tokenizer exercises the metadata getters and the merge validation.
    let _ = samd_model::tokenizer::Tokenizer::from_gguf(&file);
    // What the page checks against the WebGPU binding limit, before any load.
    if let Ok(config) = Llama::check_gguf(&file) {
        let _ = Llama::largest_gpu_weight_bytes(&file, &config);
    }
    let Ok(model) = Llama::from_gguf(&file, &Device::flex()) else {
        return;
    };
    let last = u32::try_from(model.config().vocab_size - 1).expect("validated: fits i32");
    let mut cache = model.new_cache(4);
    let logits = model
        .forward(&mut cache, &[0, last], &[0, 1], &AncestorMask::causal(2))
        .expect("a model that loads runs two tokens");
    match try_read_sync(model.read_ids(logits.argmax_ids())).expect("the CPU reads synchronously") {
        Ok(ids) => assert_eq!(ids.len(), 2),
        // Finite weights large enough to overflow f32 give NaN logits, reported as such.
        Err(samd_model::Error::NonFiniteLogits) => {}
        Err(e) => panic!("ids read back: {e}"),
    }
});
