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

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use samd_draft::Drafter;
use samd_draft::corpus::StaticSam;
use samd_draft::drafter::DraftReport;
use samd_draft::tree::DraftTree;
use serde::{Deserialize, Serialize};

use crate::{GenerateOptions, Method, Session, StopReason, Target};

mod prompts;
mod step_costs;
mod summary;
mod traces;

pub use prompts::{
    BenchPrompt, CATEGORY_ORDER, MT_BENCH_CATEGORIES, bench_category, load_prompts, select,
};
pub use step_costs::StepCosts;
pub use summary::{Aggregate, MethodSummary, Summary};
pub use traces::{
    BenchTrace, SimulatedDevice, TraceTopK, replay_bench, traces_from_jsonl, traces_from_run,
    traces_to_jsonl,
};

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
    /// Tokens those steps produced that the output keeps, and the stop id that ended it
    /// ([`crate::Stats::step_tokens`]).
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
    /// The stop id that ended the generation, if one did (`generated_ids` leave it out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_id: Option<u32>,
    /// Whether `generated_ids` equal AR's for this prompt.
    pub lossless: bool,
    /// AR with [`BenchConfig::trace_top_k`] only: the model's top-k ids after each of the
    /// prompt's and the output's positions, best first, `trace_top_k` each; the output's
    /// last position has a row only when a stop id followed it.
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

/// Of a prompt and its output, `len` tokens, the positions AR verified: every one but the
/// last, since a generation cut by the token budget never verifies its last token; and
/// that one too when a stop id followed it.
fn verified_positions(len: usize, stop_id: Option<u32>) -> usize {
    len - usize::from(stop_id.is_none())
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
            let stats = session.stats();
            let verified = verified_positions(p.ids.len() + ids.len(), stats.stop_id);
            top_k_ids.truncate(verified * config.trace_top_k);
            let lossless = match ar_ids.get(i) {
                Some(reference) => *reference == ids,
                None => true,
            };
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
                stop_id: stats.stop_id,
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

    /// A trace holds a row for every position, whatever the target's prefill would
    /// otherwise read (on the CPU, the prompt's last few).
    fn observes_whole_prompt(&self) -> bool {
        true
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

    /// Aggregates the records of a replay whose times are simulated
    /// ([`replay_bench`]'s with a device).
    pub fn simulated(records: Vec<BenchRecord>) -> Self {
        let mut result = Self::from_records(records);
        result.summary.simulated = true;
        result
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
