//! A prompt longer than one prefill pass is run in several; the greedy continuation must
//! equal a single full forward pass over the same text, and every method, Token Recycling
//! too, must prefill in the same passes (a position's K/V can depend on its pass's
//! length, and speculative decoding continues from plain decoding's).

#[path = "../../samd-model/tests/common/mod.rs"]
mod model_common;

use burn::tensor::{Device, read_sync};
use samd_engine::{GenerateOptions, Method, ModelTarget, PREFILL_CHUNK, Session, TreePolicy};
use samd_model::{AncestorMask, Llama, LlamaConfig};

/// The greedy next token after `text`, from one causal forward pass over all of it.
fn next_in_one_pass(model: &Llama, text: &[u32]) -> u32 {
    let mut cache = model.new_cache(text.len());
    let positions: Vec<u32> = (0..text.len() as u32).collect();
    let logits = model
        .forward(
            &mut cache,
            text,
            &positions,
            &AncestorMask::causal(text.len()),
        )
        .expect("forward");
    let ids = read_sync(model.read_ids(logits.argmax_ids())).expect("readback");
    *ids.last().expect("one id per position")
}

#[test]
fn chunked_prefill_equals_one_pass() {
    // On the CPU every prefill pass takes at most PREFILL_CHUNK tokens.
    assert_prefill_equals_one_pass(&Device::flex(), 3);
}

#[test]
fn wgpu_prefills_in_one_pass() {
    let Some(gpu) = model_common::wgpu_device() else {
        return;
    };
    // A pass on wgpu takes up to 1,024 tokens; with Token Recycling the head's logits
    // are computed 128 rows at a time.
    assert_prefill_equals_one_pass(&gpu, 1);
}

/// A prompt of 600 tokens on `device`, decoded with AR and with SAM+TR (which reads every
/// position's top-k), each prefilled in `passes`, gives the tokens one causal pass over
/// the whole text gives.
fn assert_prefill_equals_one_pass(device: &Device, passes: usize) {
    let config = LlamaConfig {
        context_len: 1024,
        ..LlamaConfig::tiny()
    };
    let model = Llama::random(config, 3, true, device).expect("tiny model");
    // Pseudo-random ids, so that nothing repeats by accident.
    let prompt: Vec<u32> = (0..(2 * PREFILL_CHUNK + 88) as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) % 64)
        .collect();
    const NEW: usize = 5;

    let mut expected = Vec::new();
    let mut text = prompt.clone();
    for _ in 0..NEW {
        let next = next_in_one_pass(&model, &text);
        expected.push(next);
        text.push(next);
    }

    for method in [Method::Ar, Method::SamTr] {
        let drafter = method.drafter(64, None).expect("drafter");
        let mut session = Session::new(ModelTarget::new(model.clone(), 1024), drafter);
        session.set_tree_policy(TreePolicy::Full);
        let options = GenerateOptions {
            max_new_tokens: NEW,
            stop_ids: vec![],
            sampling: None,
        };
        let (out, _) = read_sync(session.generate(&prompt, options)).expect("generate");
        assert_eq!(out, expected, "{method}");
        // One readback per prefill pass and one per step.
        let stats = session.stats();
        assert_eq!(stats.readbacks, passes + stats.steps, "{method}");
    }
}
