//! `samd corpus build`: the static corpus, made as the SAM paper made its own: the target
//! model's answers to training prompts (GSM8K train, the self-instruct seeds, HumanEval).
//!
//! No benchmark prompt may enter: a prompt equal to any Spec-Bench dev turn (after
//! whitespace and case folding) is skipped. GSM8K train is disjoint from Spec-Bench's
//! GSM8K test items by construction, so this is a second guard, not the only one.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use samd_draft::corpus::{SEPARATOR, StaticSam};
use samd_engine::check_corpus;
use samd_model::Tokenizer;
use serde_json::Value;

use crate::args::CorpusBuildArgs;
use crate::generate::{Request, decode};
use crate::load::load_model;
use crate::progress::Progress;

/// Runs the subcommand.
pub fn run(args: &CorpusBuildArgs) -> Result<()> {
    let benchmark = benchmark_turns(&args.data.join("specbench-dev.jsonl"))?;
    let prompts = training_prompts(&args.data, args.limit, &benchmark)?;
    if prompts.is_empty() {
        bail!("no training prompts found in {}", args.data.display());
    }
    let (model, tokenizer) = load_model(&args.model)?;
    let stop_ids = tokenizer.stop_ids();

    let mut answers = if args.resume {
        answers_in(&args.out, tokenizer.vocab_hash())?
    } else {
        Vec::new()
    };
    if answers.len() > prompts.len() {
        bail!(
            "{} holds {} answers, more than the {} prompts asked for",
            args.out.display(),
            answers.len(),
            prompts.len()
        );
    }
    if !answers.is_empty() {
        eprintln!(
            "resuming: {} answers kept from {}",
            answers.len(),
            args.out.display()
        );
    }

    let started = Instant::now();
    let done = answers.len();
    let mut progress = Progress::new("corpus", prompts.len() - done);
    let mut tokens = 0usize;
    for (i, prompt) in prompts.iter().enumerate().skip(done) {
        let ids = tokenizer.encode_chat(prompt)?;
        let request = Request {
            prompt_ids: &ids,
            method: args.method,
            tree: args.tree.policy,
            max_tokens: args.max_tokens as usize,
            stop_ids: stop_ids.clone(),
            sampling: None,
            corpus: None,
        };
        let out = decode(model.clone(), &request, |_| Ok(false))?;
        tokens += out.generated_ids.len();
        answers.push(out.generated_ids);
        let rate = tokens as f64 / started.elapsed().as_secs_f64();
        progress.tick(&format!("{tokens} tokens, {rate:.0} tok/s"));
        if (i + 1) % 25 == 0 || i + 1 == prompts.len() {
            write_corpus(&args.out, &answers, &tokenizer)?;
        }
    }
    let size = std::fs::metadata(&args.out).map_or(0, |m| m.len());
    eprintln!(
        "wrote {}: {} answers, {tokens} tokens, {:.1} KB, in {:.0} s",
        args.out.display(),
        answers.len(),
        size as f64 / 1e3,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The answers a corpus file holds, in order: its documents, checked against the model's
/// tokenizer (`vocab_hash`).
fn answers_in(path: &Path, vocab_hash: u64) -> Result<Vec<Vec<u32>>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read corpus {}", path.display()))?;
    let corpus = StaticSam::from_bytes(&bytes)
        .with_context(|| format!("{} is not a valid corpus file", path.display()))?;
    check_corpus(&corpus, vocab_hash)
        .with_context(|| format!("{} does not fit this model", path.display()))?;
    // Every document is followed by the separator, so the last piece is empty.
    let mut docs: Vec<Vec<u32>> = corpus
        .text()
        .split(|&t| t == SEPARATOR)
        .map(<[u32]>::to_vec)
        .collect();
    docs.pop();
    Ok(docs)
}

/// Writes through a temporary file, so that a cut run never leaves half a corpus.
fn write_corpus(path: &Path, answers: &[Vec<u32>], tokenizer: &Tokenizer) -> Result<()> {
    let vocab = u32::try_from(tokenizer.vocab_size()).context("vocabulary beyond u32")?;
    let corpus = StaticSam::build(
        answers.iter().map(Vec::as_slice),
        vocab,
        tokenizer.vocab_hash(),
    )?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, corpus.to_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Lowercased with runs of whitespace collapsed, for the leakage check.
fn normalise(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Every turn of every Spec-Bench dev prompt, normalised.
fn benchmark_turns(path: &Path) -> Result<HashSet<String>> {
    let mut turns = HashSet::new();
    for line in read_jsonl(path)? {
        for turn in line["turns"].as_array().into_iter().flatten() {
            if let Some(t) = turn.as_str() {
                turns.insert(normalise(t));
            }
        }
    }
    Ok(turns)
}

/// Up to `limit` prompts, taken in turn from each source so that a small corpus still
/// covers math, instructions and code.
fn training_prompts(dir: &Path, limit: usize, benchmark: &HashSet<String>) -> Result<Vec<String>> {
    let gsm8k: Vec<String> = read_jsonl(&dir.join("gsm8k-train.jsonl"))?
        .iter()
        .filter_map(|l| l["question"].as_str().map(str::to_owned))
        .collect();
    let instructions: Vec<String> = read_jsonl(&dir.join("selfinstruct-seed-tasks.jsonl"))?
        .iter()
        .filter_map(|l| {
            let instruction = l["instruction"].as_str()?;
            let input = l["instances"][0]["input"].as_str().unwrap_or("");
            Some(if input.is_empty() {
                instruction.to_owned()
            } else {
                format!("{instruction}\n\n{input}")
            })
        })
        .collect();
    let code: Vec<String> = read_jsonl(&dir.join("HumanEval.jsonl.gz"))?
        .iter()
        .filter_map(|l| {
            let prompt = l["prompt"].as_str()?;
            Some(format!(
                "Complete this Python function.\n\n```python\n{prompt}```"
            ))
        })
        .collect();
    let sources = [gsm8k, instructions, code];
    let longest = sources.iter().map(Vec::len).max().unwrap_or(0);
    let interleaved = (0..longest).flat_map(|i| sources.iter().filter_map(move |s| s.get(i)));
    Ok(interleaved
        .filter(|p| !benchmark.contains(&normalise(p)))
        .take(limit)
        .cloned()
        .collect())
}

/// The JSON objects of a JSONL file, gunzipped when its name ends in `.gz`.
fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let text = if path.extension().is_some_and(|e| e == "gz") {
        let mut text = String::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_string(&mut text)
            .with_context(|| format!("gunzipping {}", path.display()))?;
        text
    } else {
        String::from_utf8(raw).with_context(|| format!("{} is not UTF-8", path.display()))?
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: bad JSON", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_build_reads_back_the_answers_it_wrote_in_order() {
        let path =
            std::env::temp_dir().join(format!("samd-resume-{}.samdcorp", std::process::id()));
        let answers: Vec<Vec<u32>> = vec![vec![5, 6, 7], vec![], vec![8]];
        let corpus = StaticSam::build(answers.iter().map(Vec::as_slice), 100, 42).expect("build");
        std::fs::write(&path, corpus.to_bytes()).expect("write");
        assert_eq!(answers_in(&path, 42).expect("read"), answers);
        let other = answers_in(&path, 43).unwrap_err();
        assert!(
            format!("{other:#}").contains("does not fit this model"),
            "{other:#}"
        );
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn benchmark_prompts_are_kept_out() {
        let data = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data"));
        if !data.exists() {
            return;
        }
        let mut benchmark = benchmark_turns(&data.join("specbench-dev.jsonl")).expect("dev");
        let prompts = training_prompts(data, 9, &benchmark).expect("prompts");
        assert_eq!(prompts.len(), 9);
        assert!(
            prompts[2].contains("```python"),
            "sources interleave: {:?}",
            prompts[2]
        );
        // Pretend the first prompt is a benchmark one: it must be skipped.
        benchmark.insert(normalise(&format!("  {}\n", prompts[0].to_uppercase())));
        let kept = training_prompts(data, 9, &benchmark).expect("prompts");
        assert!(!kept.contains(&prompts[0]));
    }
}
