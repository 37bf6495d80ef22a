//! Qwen2 and Qwen3 files held to an independent forward pass:
//! `tests/fixtures/tiny_qwen{2,3}.gguf` (random weights, two layers, written by
//! `scripts/make-tiny-qwen.py` as llama.cpp's converter writes them) against numpy's
//! float64 forward of each (`tiny_qwen*_reference.json`, by
//! `scripts/make-reference-logits.py`), which adds Qwen2's q/k/v biases, norms Qwen3's
//! query and key heads, and turns HF's rotate-half RoPE over the rows as stored, where
//! samd reorders them at load and rotates adjacent pairs. No real Qwen file can be fetched
//! here; these have each model's every part at a size fit to commit.
//!
//! Runs on the CPU, in both matrix forms, and on wgpu where there is an adapter (lavapipe
//! in CI), with the kernels and with the reference ops.

mod common;

use burn::tensor::{Device, read_sync};
use common::wgpu_device;
use samd_model::llama::MatrixForm;
use samd_model::reference::Reference;
use samd_model::{BlockOps, GgufFile, Llama, LlamaConfig, RopeStyle, Tokenizer};

/// A committed file and its numpy reference.
struct Fixture {
    name: &'static str,
    file: &'static [u8],
    reference: &'static str,
    /// What the file's config must say.
    shape: fn(&LlamaConfig) -> bool,
}

const FIXTURES: [Fixture; 2] = [
    Fixture {
        name: "qwen2",
        file: include_bytes!("fixtures/tiny_qwen2.gguf"),
        reference: include_str!("fixtures/tiny_qwen2_reference.json"),
        shape: |c| c.qkv_bias && !c.qk_norm && c.head_dim == c.d_model / c.n_heads,
    },
    Fixture {
        name: "qwen3",
        file: include_bytes!("fixtures/tiny_qwen3.gguf"),
        reference: include_str!("fixtures/tiny_qwen3_reference.json"),
        shape: |c| !c.qkv_bias && c.qk_norm && c.n_heads * c.head_dim == 2 * c.d_model,
    },
];

/// The fixture's user turn: the reference prompt is its ChatML wrapping.
const USER: &str = "What is the capital of France? Answer in one sentence.";

/// Within the f32 tolerance of the real model's check, every prompt position's top-20
/// logits, the prompt run as one forward and a token at a time; and the same greedy reply.
fn assert_matches_the_reference(model: &Llama, reference: &str, what: &str) {
    let reference = Reference::parse(reference).expect("fixture parses");
    let got = read_sync(reference.compare(model, true)).expect("comparison runs");
    eprintln!("{what}: {got:?}");
    assert!(
        got.largest() <= 1e-3,
        "{what}: logits differ from numpy's by {}",
        got.largest()
    );
    assert_eq!(got.greedy_ids, reference.greedy_ids, "{what}");
}

#[test]
fn tiny_qwen_files_tokenize_their_prompt_as_hf_tokenizers_does() {
    for f in &FIXTURES {
        let (name, file, reference) = (f.name, f.file, f.reference);
        let file = GgufFile::parse(file).expect("parse");
        let tokenizer = Tokenizer::from_gguf(&file).expect("tokenizer");
        let reference = Reference::parse(reference).expect("fixture parses");
        let ids = tokenizer.encode_chat(USER).expect("encode");
        assert_eq!(ids, reference.prompt_ids, "{name}");
        let im_end = tokenizer.token_id("<|im_end|>").expect("im_end");
        assert_eq!(tokenizer.eos_id(), im_end, "{name}");
    }
}

#[test]
fn tiny_qwen_files_match_numpy_on_the_cpu() {
    for f in &FIXTURES {
        let (name, file, reference) = (f.name, f.file, f.reference);
        let file = GgufFile::parse(file).expect("parse");
        let config = Llama::check_gguf(&file).expect("the file loads");
        assert_eq!(config.rope_style, RopeStyle::Neox, "{name}");
        assert!((f.shape)(&config), "{name}: {config:?}");
        for form in [MatrixForm::Blocks, MatrixForm::F32] {
            let model = Llama::from_gguf_with(&file, &Device::flex(), form).expect("load");
            assert_matches_the_reference(&model, reference, &format!("{name}, cpu, {form:?}"));
        }
    }
}

#[test]
fn tiny_qwen_files_match_numpy_on_wgpu() {
    let Some(gpu) = wgpu_device() else { return };
    for f in &FIXTURES {
        let (name, file, reference) = (f.name, f.file, f.reference);
        let file = GgufFile::parse(file).expect("parse");
        let model = Llama::from_gguf(&file, &gpu).expect("load");
        for ops in [BlockOps::Kernels, BlockOps::Reference] {
            let model = model.clone().with_block_ops(ops);
            assert_matches_the_reference(&model, reference, &format!("{name}, wgpu, {ops:?}"));
        }
    }
}
