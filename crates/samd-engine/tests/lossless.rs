//! The central invariant on the real model: with greedy decoding, every speculative method
//! produces exactly plain AR's tokens, on Spec-Bench dev prompts from every category.
//!
//! Runs on burn's CPU backend with short outputs, so it fits in CI. It skips (with a
//! message) when the model file is absent; `scripts/test.sh` fetches it first.

use std::path::Path;

use burn::tensor::{Device, read_sync};
use samd_engine::{GenerateOptions, Method, ModelTarget, Session};
use samd_model::{GgufFile, Llama, Tokenizer};

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/SmolLM2-135M-Instruct.Q4_1.gguf"
);
const PROMPTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/data/specbench-dev.jsonl"
);
/// Prompts per category: 6 categories × 4 = 24.
const PER_CATEGORY: usize = 4;
const MAX_NEW_TOKENS: usize = 12;

/// MT-bench's sub-categories count as Spec-Bench's one multi-turn category.
fn category(raw: &str) -> &str {
    match raw {
        "translation" | "summarization" | "qa" | "math_reasoning" | "rag" => raw,
        _ => "multi-turn",
    }
}

/// The shortest first turns of each category, so that CPU prefill stays cheap.
fn prompts() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(PROMPTS).expect("the Spec-Bench dev prompts");
    let mut all: Vec<(String, String)> = text
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let cat = category(v["category"].as_str().expect("a category")).to_string();
            let turn = v["turns"][0].as_str().expect("a first turn").to_string();
            (cat, turn)
        })
        .collect();
    all.sort_by_key(|(cat, turn)| (cat.clone(), turn.len()));
    let mut picked: Vec<(String, String)> = Vec::new();
    for (cat, turn) in all {
        if picked.iter().filter(|(c, _)| *c == cat).count() < PER_CATEGORY {
            picked.push((cat, turn));
        }
    }
    picked
}

#[test]
fn every_method_matches_plain_greedy_decoding_on_the_real_model() {
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
    let stop_ids: Vec<u32> = [Some(tokenizer.eos_id()), tokenizer.im_end_id()]
        .into_iter()
        .flatten()
        .collect();
    let mut session = Session::new(ModelTarget::new(model, 2048), None);
    let prompts = prompts();
    assert_eq!(prompts.len(), 6 * PER_CATEGORY, "every category is covered");

    let mut accepted_drafts = 0;
    for (cat, turn) in &prompts {
        let ids = tokenizer
            .encode(&tokenizer.chat_prompt(turn).expect("ChatML"))
            .expect("encodable");
        let options = GenerateOptions {
            max_new_tokens: MAX_NEW_TOKENS,
            stop_ids: stop_ids.clone(),
        };
        let mut plain = None;
        for method in Method::ALL {
            session.set_drafter(method.drafter(vocab, None).expect("a drafter"));
            let (out, stop) = read_sync(session.generate(&ids, options.clone())).expect("decodes");
            match &plain {
                None => plain = Some((out, stop)),
                Some(expected) => {
                    assert_eq!(
                        (&out, stop),
                        (&expected.0, expected.1),
                        "{method} differs from AR on a {cat} prompt: {turn:?}"
                    );
                    let stats = session.stats();
                    accepted_drafts += stats.generated.saturating_sub(1) - stats.steps;
                }
            }
        }
    }
    // Drafts were really accepted somewhere, so the check above exercised speculation.
    assert!(accepted_drafts > 0);
}
