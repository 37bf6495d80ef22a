//! A Qwen2 file held to an independent forward pass: `tests/fixtures/tiny_qwen2.gguf`
//! (random weights, two layers, written by `scripts/make-tiny-qwen2.py` as llama.cpp's
//! converter writes Qwen2) against numpy's float64 forward of it
//! (`tiny_qwen2_reference.json`, by `scripts/make-reference-logits.py`), which adds the
//! q/k/v biases and turns HF's rotate-half RoPE over the rows as stored, where samd
//! reorders them at load and rotates adjacent pairs. No real Qwen2 file can be fetched
//! here; this one has Qwen2's every part at a size fit to commit.
//!
//! Runs on the CPU, in both matrix forms, and on wgpu where there is an adapter (lavapipe
//! in CI), with the kernels and with the reference ops.

mod common;

use burn::tensor::{Device, read_sync};
use common::wgpu_device;
use samd_model::llama::MatrixForm;
use samd_model::reference::Reference;
use samd_model::{BlockOps, GgufFile, Llama, RopeStyle, Tokenizer};

const FILE: &[u8] = include_bytes!("fixtures/tiny_qwen2.gguf");
const REFERENCE: &str = include_str!("fixtures/tiny_qwen2_reference.json");

/// The fixture's user turn: the reference prompt is its ChatML wrapping.
const USER: &str = "What is the capital of France? Answer in one sentence.";

/// Within the f32 tolerance of the real model's check, every prompt position's top-20
/// logits, the prompt run as one forward and a token at a time; and the same greedy reply.
fn assert_matches_the_reference(model: &Llama, what: &str) {
    let reference = Reference::parse(REFERENCE).expect("fixture parses");
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
fn tiny_qwen2_tokenizes_its_prompt_as_hf_tokenizers_does() {
    let file = GgufFile::parse(FILE).expect("parse");
    let tokenizer = Tokenizer::from_gguf(&file).expect("tokenizer");
    let reference = Reference::parse(REFERENCE).expect("fixture parses");
    assert_eq!(
        tokenizer.encode_chat(USER).expect("encode"),
        reference.prompt_ids
    );
    assert_eq!(
        tokenizer.eos_id(),
        tokenizer.token_id("<|im_end|>").expect("im_end")
    );
}

#[test]
fn tiny_qwen2_matches_numpy_on_the_cpu() {
    let file = GgufFile::parse(FILE).expect("parse");
    let config = Llama::check_gguf(&file).expect("a Qwen2 file loads");
    assert_eq!(
        (config.rope_style, config.qkv_bias),
        (RopeStyle::Neox, true)
    );
    for form in [MatrixForm::Blocks, MatrixForm::F32] {
        let model = Llama::from_gguf_with(&file, &Device::flex(), form).expect("load");
        assert_matches_the_reference(&model, &format!("cpu, {form:?}"));
    }
}

#[test]
fn tiny_qwen2_matches_numpy_on_wgpu() {
    let Some(gpu) = wgpu_device() else { return };
    let file = GgufFile::parse(FILE).expect("parse");
    let model = Llama::from_gguf(&file, &gpu).expect("load");
    for ops in [BlockOps::Kernels, BlockOps::Reference] {
        let model = model.clone().with_block_ops(ops);
        assert_matches_the_reference(&model, &format!("wgpu, {ops:?}"));
    }
}
