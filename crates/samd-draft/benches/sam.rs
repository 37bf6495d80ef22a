//! Drafter benchmarks on real text: per-token update and draft cost at 10k and 1M tokens,
//! static corpus build and load, and prompt lookup's naive search side by side.
//!
//! Text comes from `../shared/data` (GSM8K train), split by a word-level stand-in for a
//! byte-level BPE tokenizer: words with their leading space, single digits, single
//! punctuation marks. The automata only see ids, so any such tokenizer gives the same
//! costs to within the token-length distribution.
//!
//! Run: `cargo bench -p samd-draft --bench sam`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use samd_draft::Drafter;
use samd_draft::corpus::{StaticSam, TreeShape};
use samd_draft::drafter::{LookupConfig, PromptLookup, SamConfig, SamDrafter};
use samd_draft::dynamic::DynamicSam;
use samd_draft::tree::DraftTree;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data");

/// Word-level tokenizer: ids in order of first appearance.
#[derive(Default)]
struct Words {
    ids: HashMap<String, u32>,
}

impl Words {
    fn encode(&mut self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        let mut piece = String::new();
        let mut flush = |piece: &mut String, out: &mut Vec<u32>| {
            if !piece.is_empty() {
                let next = self.ids.len() as u32;
                out.push(*self.ids.entry(std::mem::take(piece)).or_insert(next));
            }
        };
        for c in text.chars() {
            let continues =
                c.is_alphabetic() && piece.chars().last().is_some_and(|p| p.is_alphabetic());
            let after_space = piece == " ";
            if !(continues || after_space && !c.is_whitespace()) {
                flush(&mut piece, &mut out);
            }
            piece.push(c);
            if !c.is_alphabetic() && c != ' ' {
                flush(&mut piece, &mut out);
            }
        }
        flush(&mut piece, &mut out);
        out
    }

    fn vocab_size(&self) -> u32 {
        self.ids.len() as u32 + 1
    }
}

/// GSM8K questions and answers, one document each.
fn gsm8k_docs(words: &mut Words) -> Vec<Vec<u32>> {
    let text = std::fs::read_to_string(format!("{DATA}/gsm8k-train.jsonl"))
        .expect("the GSM8K file from ../shared/data");
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let q = v["question"].as_str().unwrap_or_default();
            let a = v["answer"].as_str().unwrap_or_default();
            words.encode(&format!("{q}\n{a}"))
        })
        .collect()
}

struct Data {
    stream: Vec<u32>,
    docs: Vec<Vec<u32>>,
    /// Spec-Bench prompts: text the corpus has not seen.
    unseen: Vec<u32>,
    vocab_size: u32,
}

/// Every Spec-Bench dev prompt turn, concatenated.
fn specbench(words: &mut Words) -> Vec<u32> {
    let text = std::fs::read_to_string(format!("{DATA}/specbench-dev.jsonl"))
        .expect("the Spec-Bench file from ../shared/data");
    let mut out = Vec::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        for turn in v["turns"].as_array().into_iter().flatten() {
            out.extend(words.encode(turn.as_str().unwrap_or_default()));
        }
    }
    out
}

fn data() -> Data {
    let mut words = Words::default();
    let docs = gsm8k_docs(&mut words);
    let stream: Vec<u32> = docs.concat();
    assert!(
        stream.len() >= 1_000_000,
        "need 1M tokens, got {}",
        stream.len()
    );
    let unseen = specbench(&mut words);
    Data {
        stream,
        docs,
        unseen,
        vocab_size: words.vocab_size(),
    }
}

/// Builds a fresh copy of a primed drafter for each measured batch.
type MakeDrafter<'a> = dyn Fn() -> Box<dyn Drafter> + 'a;

const SIZES: [(&str, usize); 2] = [("10k", 10_000), ("1M", 1_000_000)];
/// Steps measured per iteration of the step benches.
const STEPS: usize = 1_000;

fn extend(c: &mut Criterion, d: &Data) {
    let mut g = c.benchmark_group("draft/extend");
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    for (name, n) in SIZES {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                // As the engine does: room for the prompt and the token budget up front.
                let mut sam = DynamicSam::new();
                sam.reserve(n);
                for &t in &d.stream[..n] {
                    sam.push(t).expect("in range");
                }
                black_box(sam.match_len())
            })
        });
    }
    g.finish();
}

/// One decode step per token: commit it, then draft. The drafter has already seen the
/// first `n - STEPS` tokens.
fn step(c: &mut Criterion, d: &Data) {
    let mut g = c.benchmark_group("draft/step");
    g.sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(STEPS as u64));
    for (name, n) in SIZES {
        let (history, live) = d.stream[..n].split_at(n - STEPS);
        let mut sam = SamDrafter::new(SamConfig::default(), d.vocab_size, None, None).unwrap();
        sam.commit(history).unwrap();
        let mut pld = PromptLookup::new(LookupConfig::default(), d.vocab_size).unwrap();
        pld.commit(history).unwrap();
        let drafters: [(&str, &MakeDrafter); 2] = [
            ("sam", &|| Box::new(sam.clone())),
            ("pld", &|| Box::new(pld.clone())),
        ];
        for (method, make) in drafters {
            g.bench_function(BenchmarkId::new(method, name), |b| {
                let mut tree = DraftTree::new(0);
                // Steady state: no step pays for growing a table, as the engine arranges.
                let setup = || {
                    let mut drafter = make();
                    drafter.reserve(STEPS);
                    drafter
                };
                b.iter_batched(
                    setup,
                    |mut drafter| {
                        for &t in live {
                            drafter.commit(&[t]).unwrap();
                            drafter.draft(&mut tree).unwrap();
                        }
                        drafter
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    g.finish();
}

fn corpus(c: &mut Criterion, d: &Data) {
    let docs: Vec<&[u32]> = d.docs.iter().map(Vec::as_slice).collect();
    let built = StaticSam::build(docs.iter().copied(), d.vocab_size, 0).unwrap();
    let bytes = built.to_bytes();
    let n_tokens = built.text().len();
    println!(
        "corpus: {} documents, {} tokens, {} states; file {} bytes = {:.2} bytes per token",
        d.docs.len(),
        n_tokens,
        built.automaton().n_states(),
        bytes.len(),
        bytes.len() as f64 / n_tokens as f64
    );
    let mut g = c.benchmark_group("corpus");
    g.sample_size(10).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(n_tokens as u64));
    g.bench_function("build", |b| {
        b.iter(|| StaticSam::build(docs.iter().copied(), d.vocab_size, 0).unwrap())
    });
    g.bench_function("load", |b| {
        b.iter(|| StaticSam::from_bytes(&bytes).unwrap())
    });

    // Matching and drafting against the full corpus, on text it has not seen.
    let live = &d.unseen[..STEPS];
    let corpus = Arc::new(built);
    g.throughput(Throughput::Elements(STEPS as u64));
    g.bench_function("match", |b| {
        b.iter(|| {
            let mut m = corpus.matcher_start();
            for &t in live {
                corpus.advance(&mut m, t);
            }
            black_box(m)
        })
    });
    g.bench_function("tree64", |b| {
        let mut tree = DraftTree::new(0);
        let shape = TreeShape::default();
        b.iter(|| {
            let mut m = corpus.matcher_start();
            for &t in live {
                corpus.advance(&mut m, t);
                tree.reset(t);
                corpus.tree(m, shape, &mut tree, 0);
            }
            black_box(tree.len())
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let d = data();
    extend(c, &d);
    step(c, &d);
    corpus(c, &d);
}

criterion_group!(sam, benches);
criterion_main!(sam);
