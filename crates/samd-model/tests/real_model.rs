//! Checks against the real SmolLM2-135M-Instruct GGUF (fetched by `scripts/fetch-model.sh`).
//!
//! Each test prints a message and passes when the model file is absent, so the suite runs
//! offline; CI fetches the model first. The reference values come from an independent numpy
//! forward (`scripts/make-reference-logits.py`). The checks run on the CPU and, where a
//! Vulkan adapter exists (lavapipe in CI), on wgpu with our WGSL kernels.

mod common;

use std::path::PathBuf;

use burn::tensor::{Device, read_sync};
use samd_model::gguf::GgufFile;
use samd_model::kernel_check::compare_tree_with_plain_decoding;
use samd_model::reference::Reference;
use samd_model::{AncestorMask, Llama, LlamaConfig, MatrixForm, Tokenizer};

fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn load_bytes() -> Option<Vec<u8>> {
    let path = model_path();
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            eprintln!(
                "skipping: {} not readable ({e}); run scripts/fetch-model.sh",
                path.display()
            );
            None
        }
    }
}

#[test]
fn real_model_config_is_smollm2_135m() {
    let Some(bytes) = load_bytes() else { return };
    let file = GgufFile::parse(&bytes).expect("parse");
    let config = LlamaConfig::from_gguf(&file).expect("config");
    assert_eq!(config, LlamaConfig::smollm2_135m());
}

/// The CPU, then wgpu if there is an adapter.
fn devices() -> Vec<Device> {
    std::iter::once(Device::flex())
        .chain(common::wgpu_device())
        .collect()
}

#[test]
fn real_model_logits_match_numpy_reference_and_greedy_reply_is_paris() {
    let Some(bytes) = load_bytes() else { return };
    let file = GgufFile::parse(&bytes).expect("parse");
    for device in devices() {
        eprintln!("on {device:?}:");
        let model = Llama::from_gguf(&file, &device).expect("load");
        logits_match_numpy_reference_and_greedy_reply_is_paris(&model);
    }
    // The matrices' blocks alone, as wasm holds them: the prompt's products and the
    // embeddings read blocks too (where this CPU's products read them).
    eprintln!("on the CPU, blocks alone:");
    let blocks = Llama::from_gguf_with(&file, &Device::flex(), MatrixForm::Blocks).expect("load");
    logits_match_numpy_reference_and_greedy_reply_is_paris(&blocks);
    // Widened for the prompt's products, the blocks are the very f32s the other form
    // holds: the logits are the same bits.
    let f32s = Llama::from_gguf_with(&file, &Device::flex(), MatrixForm::F32).expect("load");
    assert_eq!(prompt_logits(&blocks), prompt_logits(&f32s));

    // The crate's own tokenizer agrees with the HF tokenizer the fixture was made with.
    let fx = Reference::bundled();
    let tokenizer = Tokenizer::from_gguf(&file).expect("tokenizer");
    let prompt = tokenizer
        .encode_chat("What is the capital of France? Answer in one sentence.")
        .expect("chatml");
    assert_eq!(prompt, fx.prompt_ids);
    let text = tokenizer.decode(&fx.greedy_ids).expect("decode");
    assert_eq!(
        text.trim_end_matches("<|im_end|>"),
        "The capital of France is Paris."
    );
}

/// The prompt as one forward, then greedily, and on the CPU a token at a time too (the
/// one-row products, which on the CPU read the file's quantised blocks where the prompt's
/// read f32s; on lavapipe each step takes seconds, and the kernels have their own check).
fn logits_match_numpy_reference_and_greedy_reply_is_paris(model: &Llama) {
    let fx = Reference::bundled();
    let tolerance = Reference::tolerance(model);
    let got = read_sync(fx.compare(model, !model.on_wgpu())).expect("the comparison runs");
    eprintln!("max abs diff vs numpy reference over the top-20 ids: {got:?}");
    assert!(
        got.prompt_pass <= tolerance,
        "the prompt as one forward: {got:?}"
    );
    assert!(
        got.one_by_one.is_none_or(|d| d <= tolerance),
        "a token at a time: {got:?}"
    );
    assert_eq!(
        got.greedy_ids, fx.greedy_ids,
        "greedy reply differs from the reference {:?}",
        fx.greedy_text
    );
    assert_eq!(fx.greedy_text, "The capital of France is Paris.");
}

/// The fixture's prompt as one forward: a row of logits per position.
fn prompt_logits(model: &Llama) -> Vec<f32> {
    let prompt = Reference::bundled().prompt_ids;
    let mut cache = model.new_cache(64);
    let positions: Vec<u32> = (0..prompt.len() as u32).collect();
    let logits = model
        .forward(
            &mut cache,
            &prompt,
            &positions,
            &AncestorMask::causal(prompt.len()),
        )
        .expect("forward");
    read_sync(logits.read()).expect("read logits")
}

/// On the CPU, with the real weights in their quantised blocks: tree steps give each
/// node the logits plain decoding gives at its position, bit for bit. (On wgpu the
/// kernel check does the same with a small random model; with this one, lavapipe would
/// take minutes.)
#[test]
fn real_model_cpu_tree_steps_get_plain_decodings_logits_bit_for_bit() {
    let Some(bytes) = load_bytes() else { return };
    let file = GgufFile::parse(&bytes).expect("parse");
    let model = Llama::from_gguf(&file, &Device::flex()).expect("load");
    let check = read_sync(compare_tree_with_plain_decoding(&model)).expect("the check runs");
    eprintln!("{check}");
    assert!(check.passed(), "{check}");
}

#[test]
fn real_model_tree_verification_accepts_the_greedy_reply() {
    // Feed the known reply as a draft tree with a wrong sibling at every depth: the argmax
    // at each node on the true path must be the next true token.
    let Some(bytes) = load_bytes() else { return };
    let file = GgufFile::parse(&bytes).expect("parse");
    for device in devices() {
        eprintln!("on {device:?}:");
        let model = Llama::from_gguf(&file, &device).expect("load");
        tree_verification_accepts_the_greedy_reply(&model);
    }
}

fn tree_verification_accepts_the_greedy_reply(model: &Llama) {
    let fx = Reference::bundled();
    let mut cache = model.new_cache(64);
    let positions: Vec<u32> = (0..fx.prompt_ids.len() as u32).collect();
    let mask = AncestorMask::causal(positions.len());
    model
        .forward(&mut cache, &fx.prompt_ids, &positions, &mask)
        .expect("prefill");
    cache
        .compact(&(0..fx.prompt_ids.len()).collect::<Vec<_>>())
        .expect("commit");
    // Tree: true path t0 - t1 - ... with a decoy child (token 0) hanging off every node.
    let reply = &fx.greedy_ids;
    let mut tokens = Vec::new();
    let mut parents = Vec::new();
    let mut path = Vec::new();
    let mut prev: Option<usize> = None;
    for &t in reply {
        if let Some(p) = prev {
            tokens.push(0);
            parents.push(Some(p));
        }
        tokens.push(t);
        parents.push(prev);
        prev = Some(tokens.len() - 1);
        path.push(tokens.len() - 1);
    }
    let depth = |mut i: usize| {
        let mut d = 0;
        while let Some(p) = parents[i] {
            i = p;
            d += 1;
        }
        d
    };
    let past = cache.len() as u32;
    let positions: Vec<u32> = (0..tokens.len()).map(|i| past + depth(i) as u32).collect();
    let mask = AncestorMask::from_parents(&parents).expect("mask");
    let logits = model
        .forward(&mut cache, &tokens, &positions, &mask)
        .expect("tree");
    let ids = read_sync(logits.top_k_ids(8).read()).expect("ids");
    for (step, &node) in path.iter().enumerate().take(path.len() - 1) {
        assert_eq!(
            ids[node * 8],
            reply[step + 1],
            "argmax after the true node at depth {step}"
        );
    }
}
