//! Benchmarks over Spec-Bench prompts: the logic behind `samd bench`.
//!
//! A run decodes every prompt greedily with every method on one [`Session`], so the model
//! loads once, and keeps one record per prompt × method. Plain AR runs first: its ids are
//! the reference for the lossless check (every method must reproduce them) and its decode
//! time is the denominator of every speedup (DESIGN.md, "Measuring").
//!
//! Methods run one after another over all prompts, not interleaved per prompt, because a
//! drafter keeps what it learned from the model across requests (Token Recycling's
//! successor table) and the session cannot hand a drafter back once set. The cost is that
//! a slow drift of the machine's speed biases one method against another; a warm-up
//! generation per method keeps at least shader compilation out of the timings.
//!
//! Replay mode ([`replay_bench`]) needs no model: the AR ids of a run, saved as traces,
//! give every drafter's MAT exactly (approximately for Token Recycling) in seconds.
//!
//! Aggregates are ratios of sums, not means of per-prompt ratios, so long generations
//! weigh more, as they do in wall time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use samd_draft::Drafter;
use samd_draft::corpus::StaticSam;
use samd_draft::drafter::DraftReport;
use samd_draft::replay::{TopK, Trace, replay};
use samd_draft::tree::DraftTree;
use samd_model::Tokenizer;
use serde::{Deserialize, Serialize};

use crate::{GenerateOptions, Method, Session, StopReason, Target};

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

/// What can go wrong in a benchmark.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A JSONL line is not valid JSON of the expected shape.
    #[error("line {line}: {source}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// What serde found.
        #[source]
        source: serde_json::Error,
    },
    /// A JSONL line parsed but cannot be used.
    #[error("line {line}: {what}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// Why.
        what: &'static str,
    },
    /// The prompt of a line could not be formatted or encoded.
    #[error("line {line}: {source}")]
    Tokenize {
        /// 1-based line number.
        line: usize,
        /// The tokenizer's error.
        #[source]
        source: samd_model::Error,
    },
    /// A generation failed.
    #[error("question {question_id}, method {method}: {source}")]
    Generate {
        /// The prompt's id.
        question_id: u64,
        /// The method that was running.
        method: Method,
        /// The engine's error.
        #[source]
        source: crate::Error,
    },
    /// A trace replay failed.
    #[error("question {question_id}, method {method}: {source}")]
    Replay {
        /// The trace's id.
        question_id: u64,
        /// The method replayed.
        method: Method,
        /// The drafter's error.
        #[source]
        source: samd_draft::Error,
    },
    /// A drafter could not be made.
    #[error(transparent)]
    Engine(#[from] crate::Error),
    /// Results could not be written or read as JSON.
    #[error("bench json: {0}")]
    Serde(#[from] serde_json::Error),
}

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

/// How to run a benchmark.
#[derive(Debug, Clone, Default)]
pub struct BenchConfig {
    /// Methods to compare. AR is run first whether listed or not, since every speedup
    /// and the lossless check need it; repeats are dropped.
    pub methods: Vec<Method>,
    /// Most tokens per generation.
    pub max_new_tokens: usize,
    /// Ids that end a generation.
    pub stop_ids: Vec<u32>,
    /// The static corpus for the SAM methods, if any.
    pub corpus: Option<Arc<StaticSam>>,
    /// Runs the first prompt once per method, untimed and with a throwaway drafter,
    /// before that method's timed runs (GPU shader compilation, allocator warm-up).
    pub warmup: bool,
    /// When nonzero, AR also reads back its top `trace_top_k` ids after every position
    /// ([`BenchRecord::top_k_ids`]), so that its traces replay Token Recycling. AR's
    /// timings then include that readback.
    pub trace_top_k: usize,
}

/// `methods` with AR first and repeats dropped.
fn ar_first(methods: &[Method]) -> Vec<Method> {
    let mut out = vec![Method::Ar];
    for &m in methods {
        if !out.contains(&m) {
            out.push(m);
        }
    }
    out
}

/// One prompt decoded by one method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRecord {
    /// The prompt's Spec-Bench id.
    pub question_id: u64,
    /// The prompt's reported category.
    pub category: String,
    /// The method's name ([`Method::name`]).
    pub method: String,
    /// Prompt tokens.
    pub prompt_len: usize,
    /// The generated ids, stop id excluded (empty in replay records, whose ids are the
    /// trace's).
    pub generated_ids: Vec<u32>,
    /// Tokens generated, the prefill's first token included.
    pub generated: usize,
    /// Verification steps after the prefill.
    pub steps: usize,
    /// Tokens those steps produced, counted before the stop rules cut the last one (as
    /// [`crate::Stats::step_tokens`]), so that MAT measures verification alone.
    #[serde(default)]
    pub step_tokens: usize,
    /// Draft nodes proposed, roots excluded.
    pub drafted: usize,
    /// Mean tokens per step, the bonus token included: `step_tokens / steps`.
    pub mat: f64,
    /// Decode tokens/s (prefill excluded); 0 in replay records.
    pub tok_s: f64,
    /// Wall time of the generation, prefill included, in seconds; 0 in replay records.
    pub time_s: f64,
    /// Prefill time in µs.
    pub prefill_us: u64,
    /// Drafting time in µs.
    pub draft_us: u64,
    /// Verification time (forward passes and readbacks) in µs.
    pub verify_us: u64,
    /// Why the generation stopped (`eos`, `max_tokens`, `context`); none in replay.
    pub stop: Option<String>,
    /// Whether `generated_ids` equal AR's for this prompt.
    pub lossless: bool,
    /// AR with [`BenchConfig::trace_top_k`] only: the model's top-k ids after each of the
    /// prompt's and the output's positions but the last, best first, `trace_top_k` each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_k_ids: Vec<u32>,
}

impl BenchRecord {
    /// Decode time: drafting plus verification, the time speculative decoding changes.
    pub fn decode_us(&self) -> u64 {
        self.draft_us + self.verify_us
    }
}

/// A prompt × method's progress, reported after each timed generation.
#[derive(Debug, Clone, Copy)]
pub struct BenchProgress<'a> {
    /// Generations finished, this one included.
    pub done: usize,
    /// Generations in all.
    pub total: usize,
    /// What this one measured.
    pub record: &'a BenchRecord,
}

/// One generation of `prompt`, its error tagged with the prompt and method.
async fn generate<T: Target>(
    session: &mut Session<T>,
    prompt: &BenchPrompt,
    method: Method,
    options: &GenerateOptions,
) -> Result<(Vec<u32>, StopReason), BenchError> {
    session
        .generate(&prompt.ids, options.clone())
        .await
        .map_err(|source| BenchError::Generate {
            question_id: prompt.question_id,
            method,
            source,
        })
}

/// Decodes every prompt with every method (AR first) on `session`, whose drafter is
/// replaced; it is left with the last method's. `progress` sees each record as it is
/// made, for a live display. A mismatch with AR is recorded (`lossless: false`), not an
/// error, so one bug does not cost the whole run.
pub async fn run_bench<T: Target>(
    session: &mut Session<T>,
    prompts: &[BenchPrompt],
    config: &BenchConfig,
    mut progress: impl FnMut(BenchProgress<'_>),
) -> Result<BenchResult, BenchError> {
    let methods = ar_first(&config.methods);
    let vocab_size = session.target().vocab_size();
    let options = GenerateOptions {
        max_new_tokens: config.max_new_tokens,
        stop_ids: config.stop_ids.clone(),
        sampling: None,
    };
    let total = prompts.len() * methods.len();
    let mut records = Vec::with_capacity(total);
    let mut ar_ids: Vec<Vec<u32>> = Vec::with_capacity(prompts.len());
    let recorded = Arc::new(Mutex::new(Vec::new()));
    let drafter = |method: Method| -> Result<Option<Box<dyn Drafter>>, BenchError> {
        if method == Method::Ar && config.trace_top_k > 0 {
            return Ok(Some(Box::new(TopKRecorder::new(
                config.trace_top_k,
                recorded.clone(),
            ))));
        }
        Ok(method.drafter(vocab_size, config.corpus.clone())?)
    };
    for &method in &methods {
        if config.warmup
            && let Some(p) = prompts.first()
        {
            session.set_drafter(drafter(method)?);
            generate(session, p, method, &options).await?;
        }
        session.set_drafter(drafter(method)?);
        for (i, p) in prompts.iter().enumerate() {
            let (ids, stop) = generate(session, p, method, &options).await?;
            let mut top_k_ids =
                std::mem::take(&mut *recorded.lock().unwrap_or_else(|e| e.into_inner()));
            // Every position but the last: a generation cut by the token budget never
            // verifies its last token, one ended by EOS does.
            top_k_ids.truncate((p.ids.len() + ids.len() - 1) * config.trace_top_k);
            let lossless = match ar_ids.get(i) {
                Some(reference) => *reference == ids,
                None => true,
            };
            let stats = session.stats();
            let record = BenchRecord {
                question_id: p.question_id,
                category: p.category.clone(),
                method: method.name().to_owned(),
                prompt_len: p.ids.len(),
                generated: stats.generated,
                steps: stats.steps,
                step_tokens: stats.step_tokens,
                drafted: stats.drafted,
                mat: stats.mat(),
                tok_s: stats.tokens_per_s(),
                time_s: stats.total_s(),
                prefill_us: stats.prefill_us,
                draft_us: stats.draft_us,
                verify_us: stats.verify_us,
                stop: Some(stop.name().to_owned()),
                lossless,
                generated_ids: ids,
                top_k_ids,
            };
            if method == Method::Ar {
                ar_ids.push(record.generated_ids.clone());
            }
            records.push(record);
            progress(BenchProgress {
                done: records.len(),
                total,
                record: records.last().expect("invariant: just pushed"),
            });
        }
    }
    Ok(BenchResult::from_records(records))
}

/// Plain AR that keeps the model's top-k ids after every verified position. It drafts
/// nothing (each tree is the root alone), so its output and step count are AR's.
#[derive(Debug)]
struct TopKRecorder {
    k: usize,
    last: Option<u32>,
    /// Rows of the current generation, in position order; shared with [`run_bench`],
    /// which takes them after each generation.
    rows: Arc<Mutex<Vec<u32>>>,
}

impl TopKRecorder {
    fn new(k: usize, rows: Arc<Mutex<Vec<u32>>>) -> Self {
        Self {
            k,
            last: None,
            rows,
        }
    }
}

impl Drafter for TopKRecorder {
    fn name(&self) -> &'static str {
        Method::Ar.name()
    }

    fn reset(&mut self) {
        self.last = None;
        self.rows.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn commit(&mut self, tokens: &[u32]) -> Result<(), samd_draft::Error> {
        if let Some(&t) = tokens.last() {
            self.last = Some(t);
        }
        Ok(())
    }

    fn draft(&mut self, tree: &mut DraftTree) -> Result<DraftReport, samd_draft::Error> {
        tree.reset(self.last.ok_or(samd_draft::Error::EmptyText)?);
        Ok(DraftReport::default())
    }

    fn top_k(&self) -> usize {
        self.k
    }

    /// The prefill observes every prompt position and each step its root: together, every
    /// position but the last, in order.
    fn observe(
        &mut self,
        _tokens: &[u32],
        _preceding: &[u32],
        top_k: &[u32],
    ) -> Result<(), samd_draft::Error> {
        self.rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(top_k);
        Ok(())
    }
}

/// Sums over a set of records of one method, and the figures made from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The category, or `overall`.
    pub category: String,
    /// Prompts counted.
    pub prompts: usize,
    /// Of those, prompts whose output equals AR's.
    pub lossless: usize,
    /// Tokens generated, first tokens included.
    pub generated: usize,
    /// Verification steps.
    pub steps: usize,
    /// Tokens the steps produced, before the stop rules.
    #[serde(default)]
    pub step_tokens: usize,
    /// Draft nodes proposed.
    pub drafted: usize,
    /// Drafting time in µs.
    pub draft_us: u64,
    /// Verification time in µs.
    pub verify_us: u64,
    /// AR's decode time over the prompts that this method also ran, in µs.
    pub ar_decode_us: u64,
    /// Step tokens over steps, as each record's MAT.
    pub mat: f64,
    /// Tokens after the first over decode time; none without timings (replay).
    pub tok_s: Option<f64>,
    /// AR's decode time over this method's, on the same prompts; none without timings.
    pub speedup: Option<f64>,
    /// Drafting's share of decode time; none without timings.
    pub drafter_share: Option<f64>,
}

impl Aggregate {
    fn new(category: &str) -> Self {
        Self {
            category: category.to_owned(),
            prompts: 0,
            lossless: 0,
            generated: 0,
            steps: 0,
            step_tokens: 0,
            drafted: 0,
            draft_us: 0,
            verify_us: 0,
            ar_decode_us: 0,
            mat: 0.0,
            tok_s: None,
            speedup: None,
            drafter_share: None,
        }
    }

    fn add(&mut self, r: &BenchRecord, ar_decode_us: Option<u64>) {
        self.prompts += 1;
        self.lossless += usize::from(r.lossless);
        self.generated += r.generated;
        self.steps += r.steps;
        self.step_tokens += r.step_tokens;
        self.drafted += r.drafted;
        self.draft_us += r.draft_us;
        self.verify_us += r.verify_us;
        self.ar_decode_us += ar_decode_us.unwrap_or(0);
    }

    /// Computes the ratios from the sums.
    fn finish(&mut self, tokens_after_first: usize) {
        let decode_us = self.draft_us + self.verify_us;
        self.mat = if self.steps == 0 {
            0.0
        } else {
            self.step_tokens as f64 / self.steps as f64
        };
        let timed = decode_us > 0;
        self.tok_s = timed.then(|| tokens_after_first as f64 * 1e6 / decode_us as f64);
        self.speedup =
            (timed && self.ar_decode_us > 0).then(|| self.ar_decode_us as f64 / decode_us as f64);
        self.drafter_share = timed.then(|| self.draft_us as f64 / decode_us as f64);
    }
}

/// One method's aggregates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodSummary {
    /// The method's name.
    pub method: String,
    /// One aggregate per category, in [`Summary::categories`] order.
    pub categories: Vec<Aggregate>,
    /// Over all prompts.
    pub overall: Aggregate,
}

/// Aggregates per method and category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Categories: Spec-Bench's in the paper's order, then any others as first seen.
    pub categories: Vec<String>,
    /// Methods in the order first seen in the records (AR first in a run).
    pub methods: Vec<MethodSummary>,
    /// Whether the records carry timings (false for replay).
    pub timed: bool,
}

impl Summary {
    /// Aggregates `records`. A method's speedup counts only prompts that AR also ran.
    pub fn from_records(records: &[BenchRecord]) -> Self {
        let mut categories: Vec<String> = CATEGORY_ORDER
            .iter()
            .filter(|c| records.iter().any(|r| r.category == **c))
            .map(|c| (*c).to_owned())
            .collect();
        let mut methods: Vec<String> = Vec::new();
        for r in records {
            if !categories.contains(&r.category) {
                categories.push(r.category.clone());
            }
            if !methods.contains(&r.method) {
                methods.push(r.method.clone());
            }
        }
        let ar: HashMap<(&str, u64), u64> = records
            .iter()
            .filter(|r| r.method == Method::Ar.name())
            .map(|r| ((r.category.as_str(), r.question_id), r.decode_us()))
            .collect();
        let timed = records.iter().any(|r| r.decode_us() > 0);
        let methods = methods
            .into_iter()
            .map(|method| {
                let mine: Vec<&BenchRecord> =
                    records.iter().filter(|r| r.method == method).collect();
                let aggregate = |category: &str, keep: &dyn Fn(&BenchRecord) -> bool| {
                    let mut agg = Aggregate::new(category);
                    let mut after_first = 0;
                    for r in mine.iter().filter(|r| keep(r)) {
                        agg.add(r, ar.get(&(r.category.as_str(), r.question_id)).copied());
                        after_first += r.generated.saturating_sub(1);
                    }
                    agg.finish(after_first);
                    agg
                };
                MethodSummary {
                    categories: categories
                        .iter()
                        .map(|c| aggregate(c, &|r| r.category == *c))
                        .collect(),
                    overall: aggregate("overall", &|_| true),
                    method,
                }
            })
            .collect();
        Self {
            categories,
            methods,
            timed,
        }
    }

    /// A markdown table, one row per method. With timings the category columns are
    /// speedups over AR (the paper's table); without (replay) they are MATs.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let per_category = if self.timed {
            "speedup over AR"
        } else {
            "MAT (trace replay, no timings)"
        };
        let _ = writeln!(
            out,
            "Per category: {per_category}. Then overall MAT, nodes verified per step (the \
             root included), decode tokens/s, speedup over AR, drafting's share of decode \
             time, and prompts whose output equals AR's.\n"
        );
        out.push_str("| method |");
        for c in &self.categories {
            let _ = write!(out, " {c} |");
        }
        out.push_str(" MAT | nodes | tok/s | speedup | drafter % | lossless |\n|---|");
        for _ in &self.categories {
            out.push_str("---|");
        }
        out.push_str("---|---|---|---|---|---|\n");
        let fmt = |v: Option<f64>, digits: usize| match v {
            Some(v) => format!("{v:.digits$}"),
            None => "–".to_owned(),
        };
        for m in &self.methods {
            let _ = write!(out, "| {} |", m.method);
            for agg in &m.categories {
                let v = if self.timed {
                    agg.speedup
                } else {
                    (agg.prompts > 0).then_some(agg.mat)
                };
                let _ = write!(out, " {} |", fmt(v, 2));
            }
            let o = &m.overall;
            let nodes = (o.steps > 0).then(|| 1.0 + o.drafted as f64 / o.steps as f64);
            let _ = writeln!(
                out,
                " {:.2} | {} | {} | {} | {} | {}/{} |",
                o.mat,
                fmt(nodes, 1),
                fmt(o.tok_s, 1),
                fmt(o.speedup, 2),
                fmt(o.drafter_share.map(|s| s * 100.0), 1),
                o.lossless,
                o.prompts
            );
        }
        out
    }
}

/// The records of a run or a replay, and their aggregates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// Aggregates per method and category.
    pub summary: Summary,
    /// One record per prompt × method, in the order they ran.
    pub records: Vec<BenchRecord>,
}

impl BenchResult {
    /// Aggregates `records`.
    pub fn from_records(records: Vec<BenchRecord>) -> Self {
        Self {
            summary: Summary::from_records(&records),
            records,
        }
    }

    /// The records whose output differs from AR's: each one is a correctness bug.
    pub fn mismatches(&self) -> impl Iterator<Item = &BenchRecord> {
        self.records.iter().filter(|r| !r.lossless)
    }

    /// The summary table, followed by a line naming any output that differs from AR's.
    pub fn markdown(&self) -> String {
        let mut out = self.summary.markdown();
        let bad: Vec<String> = self
            .mismatches()
            .map(|r| format!("{} on question {}", r.method, r.question_id))
            .collect();
        if !bad.is_empty() {
            let _ = writeln!(out, "\nNOT LOSSLESS (differs from AR): {}", bad.join(", "));
        }
        out
    }

    /// Pretty JSON of the summary and every record.
    pub fn to_json(&self) -> Result<String, BenchError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Reads what [`BenchResult::to_json`] wrote.
    pub fn from_json(json: &str) -> Result<Self, BenchError> {
        Ok(serde_json::from_str(json)?)
    }
}

/// A recorded AR generation, as saved for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchTrace {
    /// The prompt's Spec-Bench id.
    pub question_id: u64,
    /// The prompt's reported category.
    pub category: String,
    /// How many of `tokens` are the prompt.
    pub prompt_len: usize,
    /// The prompt followed by AR's output.
    pub tokens: Vec<u32>,
    /// The model's top-k ids after each position but the last, when recorded
    /// ([`BenchConfig::trace_top_k`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<TraceTopK>,
}

/// [`BenchTrace::top_k`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceTopK {
    /// Ids per position.
    pub k: usize,
    /// `ids[q * k .. (q + 1) * k]` follow `tokens[..=q]`.
    pub ids: Vec<u32>,
}

impl BenchTrace {
    /// The trace to replay. Without top-k ids Token Recycling learns nothing in replay;
    /// with them it learns from the true path only (a real run also learns from rejected
    /// branches), so its replayed MAT is a lower bound either way.
    pub fn trace(&self) -> Trace {
        Trace {
            tokens: self.tokens.clone(),
            prompt_len: self.prompt_len,
            top_k: self.top_k.as_ref().map(|t| TopK {
                k: t.k,
                ids: t.ids.clone(),
            }),
        }
    }
}

/// Traces from a run's AR records: each prompt followed by AR's output. Prompts without
/// an AR record are skipped.
pub fn traces_from_run(prompts: &[BenchPrompt], records: &[BenchRecord]) -> Vec<BenchTrace> {
    let ar: HashMap<u64, &BenchRecord> = records
        .iter()
        .filter(|r| r.method == Method::Ar.name())
        .map(|r| (r.question_id, r))
        .collect();
    prompts
        .iter()
        .filter_map(|p| {
            let r = ar.get(&p.question_id)?;
            let mut tokens = p.ids.clone();
            tokens.extend_from_slice(&r.generated_ids);
            // Rows for every position but the last, or none.
            let rows = tokens.len() - 1;
            let top_k =
                (!r.top_k_ids.is_empty() && r.top_k_ids.len() % rows == 0).then(|| TraceTopK {
                    k: r.top_k_ids.len() / rows,
                    ids: r.top_k_ids.clone(),
                });
            Some(BenchTrace {
                question_id: p.question_id,
                category: p.category.clone(),
                prompt_len: p.ids.len(),
                tokens,
                top_k,
            })
        })
        .collect()
}

/// Traces as JSONL, one per line.
pub fn traces_to_jsonl(traces: &[BenchTrace]) -> Result<String, BenchError> {
    let mut out = String::new();
    for t in traces {
        out.push_str(&serde_json::to_string(t)?);
        out.push('\n');
    }
    Ok(out)
}

/// Reads what [`traces_to_jsonl`] wrote; errors name the line. Blank lines are skipped.
pub fn traces_from_jsonl(jsonl: &str) -> Result<Vec<BenchTrace>, BenchError> {
    let mut traces = Vec::new();
    for (i, line) in jsonl.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let t: BenchTrace = serde_json::from_str(line).map_err(|source| BenchError::Json {
            line: line_no,
            source,
        })?;
        if t.prompt_len == 0 || t.prompt_len > t.tokens.len() {
            return Err(BenchError::Line {
                line: line_no,
                what: "prompt_len must be in 1..=tokens.len()",
            });
        }
        traces.push(t);
    }
    Ok(traces)
}

/// Replays every method's drafter against `traces` and aggregates the MATs (no
/// timings). One drafter per method serves all traces in order, as in [`run_bench`].
/// AR needs no replay: it makes one token per step. Traces whose output is empty count
/// as prompts with no steps.
pub fn replay_bench(
    traces: &[BenchTrace],
    methods: &[Method],
    vocab_size: u32,
    corpus: Option<Arc<StaticSam>>,
) -> Result<BenchResult, BenchError> {
    let mut records = Vec::with_capacity(traces.len() * methods.len());
    for method in ar_first(methods) {
        let mut drafter = method.drafter(vocab_size, corpus.clone())?;
        for t in traces {
            let generated = t.tokens.len().saturating_sub(t.prompt_len);
            let (steps, drafted) = match &mut drafter {
                Some(d) if generated > 0 => {
                    let report =
                        replay(d.as_mut(), &t.trace()).map_err(|source| BenchError::Replay {
                            question_id: t.question_id,
                            method,
                            source,
                        })?;
                    (report.steps as usize, report.drafted as usize)
                }
                _ => (generated.saturating_sub(1), 0),
            };
            records.push(BenchRecord {
                question_id: t.question_id,
                category: t.category.clone(),
                method: method.name().to_owned(),
                prompt_len: t.prompt_len,
                generated_ids: Vec::new(),
                generated,
                steps,
                // A trace has no stop rules to cut a step: every step's tokens count.
                step_tokens: generated.saturating_sub(1),
                drafted,
                mat: if steps == 0 {
                    0.0
                } else {
                    (generated - 1) as f64 / steps as f64
                },
                tok_s: 0.0,
                time_s: 0.0,
                prefill_us: 0,
                draft_us: 0,
                verify_us: 0,
                stop: None,
                lossless: true,
                top_k_ids: Vec::new(),
            });
        }
    }
    Ok(BenchResult::from_records(records))
}
