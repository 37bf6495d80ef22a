//! The central invariant on the real model: with greedy decoding, every speculative method
//! produces exactly plain AR's tokens, on Spec-Bench dev prompts from every category. With
//! sampling too, from the same seed: the noise of each draw is keyed by its position
//! (samd-model's sampler.rs), so the token after a prefix is the same whichever step
//! verifies it.
//!
//! Runs on burn's CPU backend with short outputs, so it fits in CI. It skips (with a
//! message) when the model file is absent; `scripts/test.sh` fetches it first.

use std::path::Path;

use burn::tensor::{Device, read_sync};
use samd_engine::bench::{BenchPrompt, load_prompts};
use samd_engine::{GenerateOptions, Method, ModelTarget, Sampling, Session, TreePolicy};
use samd_model::{GgufFile, Llama, Tokenizer};

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
const PROMPTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/specbench-dev.jsonl"
);
/// Prompts per category under greedy decoding: 6 categories × 4 = 24.
const PER_CATEGORY: usize = 4;
const MAX_NEW_TOKENS: usize = 12;

/// The `per_category` shortest prompts of each category (in tokens), so that CPU prefill
/// stays cheap.
fn prompts(tokenizer: &Tokenizer, per_category: usize) -> Vec<BenchPrompt> {
    let jsonl = std::fs::read_to_string(PROMPTS).expect("the Spec-Bench dev prompts");
    let mut all = load_prompts(&jsonl, tokenizer).expect("valid prompts");
    all.sort_by_key(|p| p.ids.len());
    let mut picked: Vec<BenchPrompt> = Vec::new();
    for p in all {
        if picked.iter().filter(|q| q.category == p.category).count() < per_category {
            picked.push(p);
        }
    }
    picked
}

#[test]
fn every_method_matches_plain_greedy_decoding_on_the_real_model() {
    assert_methods_match_ar(PER_CATEGORY, |_| None);
}

#[test]
fn every_method_matches_plain_sampling_from_the_same_seed_on_the_real_model() {
    // One prompt per category, each with its own seed; every other one draws from a
    // nucleus.
    assert_methods_match_ar(1, |i| {
        let top_p = if i % 2 == 0 { 1.0 } else { 0.9 };
        let sampling = Sampling::new(0.8, top_p, i as u64).expect("valid options");
        Some(sampling.expect("a temperature above 0 samples"))
    });
}

/// Every method's tokens and stop reason equal AR's on the `per_category` shortest dev
/// prompts of each category, with the `i`-th prompt decoded greedily or sampling as
/// `sampling(i)` says.
fn assert_methods_match_ar(per_category: usize, sampling: impl Fn(usize) -> Option<Sampling>) {
    if !Path::new(MODEL).exists() {
        eprintln!("skipped: {MODEL} is absent (run scripts/fetch-model.sh)");
        return;
    }
    let bytes = std::fs::read(MODEL).expect("the model file");
    let file = GgufFile::parse(&bytes).expect("a valid GGUF");
    let tokenizer = Tokenizer::from_gguf(&file).expect("the tokenizer");
    let device = Device::flex();
    let model = Llama::from_gguf(&file, &device).expect("the model");
    let vocab = u32::try_from(tokenizer.vocab_size()).expect("vocab fits u32");
    let stop_ids = tokenizer.stop_ids();
    let mut session = Session::new(ModelTarget::new(model, 2048), None);
    // Every drafted node, up to the 16 a CPU step takes (`Llama::max_tree_nodes`), so
    // that every drafter's trees are verified: on this CPU the adaptive budget would
    // verify little beyond the root.
    session.set_tree_policy(TreePolicy::Full);
    let prompts = prompts(&tokenizer, per_category);
    assert_eq!(prompts.len(), 6 * per_category, "every category is covered");

    let mut accepted_drafts = 0;
    for (i, prompt) in prompts.iter().enumerate() {
        let sampling = sampling(i);
        let options = GenerateOptions {
            max_new_tokens: MAX_NEW_TOKENS,
            stop_ids: stop_ids.clone(),
            sampling,
        };
        let mut plain = None;
        for method in Method::ALL {
            session.set_drafter(method.drafter(vocab, None).expect("a drafter"));
            let (out, stop) =
                read_sync(session.generate(&prompt.ids, options.clone())).expect("decodes");
            match &plain {
                None => plain = Some((out, stop)),
                Some(expected) => {
                    assert_eq!(
                        (&out, stop),
                        (&expected.0, expected.1),
                        "{method} differs from AR on {} prompt {} ({})",
                        prompt.category,
                        prompt.question_id,
                        match sampling {
                            Some(s) => format!("sampling at {}, top-p {}", s.temperature, s.top_p),
                            None => "greedy".into(),
                        }
                    );
                    let stats = session.stats();
                    accepted_drafts += stats.step_tokens - stats.steps;
                }
            }
        }
    }
    // Drafts were really accepted somewhere, so the check above exercised speculation.
    assert!(accepted_drafts > 0);
}
