//! Spec-Bench prompts: reading the JSONL, the categories it reports, and picking a few
//! per category.

use std::collections::HashMap;

use samd_model::Tokenizer;
use serde::Deserialize;

use super::BenchError;

/// The MT-bench sub-categories that Spec-Bench keeps separate and reports as one.
pub const MT_BENCH_CATEGORIES: [&str; 8] = [
    "writing",
    "roleplay",
    "reasoning",
    "math",
    "coding",
    "extraction",
    "stem",
    "humanities",
];

/// Spec-Bench's reported categories, in the order of the paper's tables.
pub const CATEGORY_ORDER: [&str; 6] = [
    "multi-turn",
    "translation",
    "summarization",
    "qa",
    "math_reasoning",
    "rag",
];

/// The reported category of a Spec-Bench category: the MT-bench ones become
/// `multi-turn`, the others stay as they are.
pub fn bench_category(spec_bench: &str) -> &str {
    if MT_BENCH_CATEGORIES.contains(&spec_bench) {
        "multi-turn"
    } else {
        spec_bench
    }
}

/// One benchmark prompt, ready to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchPrompt {
    /// Spec-Bench's `question_id`, unique within a file.
    pub question_id: u64,
    /// The reported category (see [`bench_category`]).
    pub category: String,
    /// The category as written in the file (`writing`, `rag`, …).
    pub subcategory: String,
    /// The first turn as a ChatML prompt, encoded.
    pub ids: Vec<u32>,
}

/// One Spec-Bench line; fields we do not use are ignored.
#[derive(Deserialize)]
struct SpecBenchLine {
    question_id: u64,
    category: String,
    turns: Vec<String>,
}

/// Reads Spec-Bench JSONL: each line's first turn, wrapped with the chat template and
/// encoded. Only the first turn is used because the second one depends on the model's
/// first answer, which differs across models. Blank lines are skipped.
pub fn load_prompts(jsonl: &str, tokenizer: &Tokenizer) -> Result<Vec<BenchPrompt>, BenchError> {
    let mut prompts = Vec::new();
    let mut seen = HashMap::new();
    for (i, line) in jsonl.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let parsed: SpecBenchLine =
            serde_json::from_str(line).map_err(|source| BenchError::Json {
                line: line_no,
                source,
            })?;
        // Records are paired with AR's by id, so a repeated id would pair wrongly.
        if seen.insert(parsed.question_id, line_no).is_some() {
            return Err(BenchError::Line {
                line: line_no,
                what: "repeated question_id",
            });
        }
        let first = parsed.turns.into_iter().next().ok_or(BenchError::Line {
            line: line_no,
            what: "no turns",
        })?;
        let ids = tokenizer
            .encode_chat(&first)
            .map_err(|source| BenchError::Tokenize {
                line: line_no,
                source,
            })?;
        prompts.push(BenchPrompt {
            question_id: parsed.question_id,
            category: bench_category(&parsed.category).to_owned(),
            subcategory: parsed.category,
            ids,
        });
    }
    Ok(prompts)
}

/// Keeps at most `per_category` prompts of each category, in their original order, for
/// quick runs. Within a category the picks rotate over its sub-categories, so that three
/// multi-turn prompts are not all `writing`; for a category with one sub-category this is
/// simply its first `per_category` prompts.
pub fn select(prompts: &[BenchPrompt], per_category: usize) -> Vec<BenchPrompt> {
    // Rank of each prompt within its sub-category: pick by (rank, sub-category order).
    let mut sub_seen: HashMap<&str, usize> = HashMap::new();
    let mut sub_order: HashMap<&str, usize> = HashMap::new();
    let mut ranked: Vec<(usize, usize, usize)> = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let n_subs = sub_order.len();
        let order = *sub_order.entry(&p.subcategory).or_insert(n_subs);
        let rank = sub_seen.entry(&p.subcategory).or_insert(0);
        ranked.push((*rank, order, i));
        *rank += 1;
    }
    ranked.sort_unstable();
    let mut taken: HashMap<&str, usize> = HashMap::new();
    let mut keep = vec![false; prompts.len()];
    for (_, _, i) in ranked {
        let n = taken.entry(&prompts[i].category).or_insert(0);
        if *n < per_category {
            *n += 1;
            keep[i] = true;
        }
    }
    prompts
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(p, _)| p.clone())
        .collect()
}
