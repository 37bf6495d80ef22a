//! AR generations saved as traces, and drafters replayed over them: every drafter's MAT
//! in seconds, without the model.

use std::collections::HashMap;
use std::sync::Arc;

use samd_draft::Drafter;
use samd_draft::corpus::StaticSam;
use samd_draft::drafter::DraftReport;
use samd_draft::replay::{ReplayLimits, TopK, Trace, TreeCut, replay};
use samd_draft::tree::DraftTree;
use serde::{Deserialize, Serialize};

use samd_model::step_graph::{StepPadding, padded_step_sizes};

use super::{
    BenchError, BenchPrompt, BenchRecord, BenchResult, StepCosts, ar_first, verified_positions,
};
use crate::budget::TreeBudget;
use crate::{Method, TreePolicy};

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
    /// The stop id that ended AR's output, if one did: the step that made it counts in a
    /// run, so replay takes it too. (Traces saved before 2026-12-07 lack it.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_id: Option<u32>,
    /// The model's top-k ids after each position AR verified, when recorded
    /// ([`super::BenchConfig::trace_top_k`]): every position of `tokens` but the last,
    /// and the last too when a stop id followed it.
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
    /// branches), so its replayed MAT is a lower bound either way. The stop id, if any,
    /// ends the replayed tokens.
    pub fn trace(&self) -> Trace {
        let mut tokens = self.tokens.clone();
        tokens.extend(self.stop_id);
        Trace {
            tokens,
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
            // Rows for every position AR verified, or none.
            let rows = verified_positions(tokens.len(), r.stop_id);
            let top_k = (rows > 0 && !r.top_k_ids.is_empty() && r.top_k_ids.len() % rows == 0)
                .then(|| TraceTopK {
                    k: r.top_k_ids.len() / rows,
                    ids: r.top_k_ids.clone(),
                });
            Some(BenchTrace {
                question_id: p.question_id,
                category: p.category.clone(),
                prompt_len: p.ids.len(),
                tokens,
                stop_id: r.stop_id,
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

/// A device that trace replay stands for, by what its verify steps cost.
#[derive(Debug, Clone)]
pub struct SimulatedDevice {
    /// Step times by the nodes a step computes.
    pub costs: StepCosts,
    /// How the device's steps pad their nodes (to their step graph's size on wgpu).
    pub padding: StepPadding,
}

impl SimulatedDevice {
    /// The time of a step that verifies `nodes` nodes, in microseconds.
    pub fn step_micros(&self, nodes: usize) -> f64 {
        self.costs.micros(self.padding.nodes(nodes))
    }
}

/// Replays every method's drafter against `traces` and aggregates the MATs. One drafter
/// per method serves all traces in order, after a warm-up on the first, as in
/// [`super::run_bench`]. AR needs no replay: it makes one token per step. Traces whose
/// output is empty count as prompts with no steps.
///
/// Without `device` there are no timings, and each step verifies the likeliest drafted
/// nodes that fit `limits`, as a run under `--tree full` does ([`TreeBudget::prune`]).
/// With one, each step verifies what the adaptive tree budget keeps, taught the device's
/// step times as a run on it would be (after a warm-up of every padded step size), and
/// the records carry those times: speedups simulated for that device.
pub fn replay_bench(
    traces: &[BenchTrace],
    methods: &[Method],
    vocab_size: u32,
    corpus: Option<Arc<StaticSam>>,
    limits: ReplayLimits,
    device: Option<&SimulatedDevice>,
) -> Result<BenchResult, BenchError> {
    let mut records = Vec::with_capacity(traces.len() * methods.len());
    for method in ar_first(methods) {
        let mut cut = BudgetCut::new(device, limits.max_tree_nodes);
        // The replayed steps, the tokens they made, the nodes they drafted and their
        // simulated time in µs (0 without a device).
        let mut run = |drafter: &mut Option<Box<dyn Drafter>>, t: &BenchTrace| {
            let trace = t.trace();
            // The prefill's token, the output after it and the stop id.
            let made = trace.tokens.len().saturating_sub(trace.prompt_len);
            cut.micros = 0.0;
            let (steps, tokens, drafted) = match drafter {
                Some(d) if made > 0 => replay(d.as_mut(), &trace, limits, &mut cut)
                    .map(|r| (r.steps as usize, r.tokens as usize, r.drafted as usize))
                    .map_err(|source| BenchError::Replay {
                        question_id: t.question_id,
                        method,
                        source,
                    })?,
                _ => {
                    // One-node steps, as AR takes.
                    let steps = made.saturating_sub(1);
                    cut.micros = steps as f64 * device.map_or(0.0, |d| d.step_micros(1));
                    (steps, steps, 0)
                }
            };
            Ok::<_, BenchError>((steps, tokens, drafted, cut.micros.round() as u64))
        };
        if let Some(first) = traces.first() {
            run(&mut method.drafter(vocab_size, corpus.clone())?, first)?;
        }
        let mut drafter = method.drafter(vocab_size, corpus.clone())?;
        for t in traces {
            let generated = t.tokens.len().saturating_sub(t.prompt_len);
            let (steps, step_tokens, drafted, verify_us) = run(&mut drafter, t)?;
            records.push(BenchRecord {
                question_id: t.question_id,
                category: t.category.clone(),
                method: method.name().to_owned(),
                prompt_len: t.prompt_len,
                generated_ids: Vec::new(),
                generated,
                steps,
                // As a run counts them: the output's tokens and the stop id.
                step_tokens,
                drafted,
                mat: if steps == 0 {
                    0.0
                } else {
                    step_tokens as f64 / steps as f64
                },
                tok_s: match verify_us {
                    0 => 0.0,
                    us => generated.saturating_sub(1) as f64 * 1e6 / us as f64,
                },
                time_s: verify_us as f64 / 1e6,
                prefill_us: 0,
                draft_us: 0,
                verify_us,
                stop: None,
                stop_id: None,
                lossless: true,
                top_k_ids: Vec::new(),
            });
        }
    }
    Ok(match device {
        Some(_) => BenchResult::simulated(records),
        None => BenchResult::from_records(records),
    })
}

/// The decode loop's tree budget. Without a simulated device, as under `--tree full`: of
/// a tree larger than a step takes, the nodes likeliest to be reached, as the acceptance
/// it learned ranks them. With one, adaptive, timed by the device's step costs.
#[derive(Debug)]
struct BudgetCut<'a> {
    budget: TreeBudget,
    device: Option<&'a SimulatedDevice>,
    /// Simulated time of the steps learned from.
    micros: f64,
}

impl<'a> BudgetCut<'a> {
    /// A budget that knows `device`'s step costs from the start: a step of every padded
    /// size up to `most` nodes, as `bench`'s warm-up (`Session::warm_up`) teaches it on
    /// wgpu. A run on the CPU warms up nothing and starts from the device's guess instead,
    /// so there the replay knows the costs sooner than the run does.
    fn new(device: Option<&'a SimulatedDevice>, most: usize) -> Self {
        let mut budget = TreeBudget::default();
        if let Some(d) = device {
            budget.set_step_padding(d.padding);
            for nodes in padded_step_sizes(most) {
                budget.observe_cost(nodes, d.step_micros(nodes).round() as u64);
            }
        }
        Self {
            budget,
            device,
            micros: 0.0,
        }
    }
}

impl TreeCut for BudgetCut<'_> {
    fn cut(&mut self, tree: &mut DraftTree, report: &DraftReport, most: usize) {
        let policy = match self.device {
            Some(_) => TreePolicy::Adaptive,
            None => TreePolicy::Full,
        };
        self.budget.prune(tree, report, policy, most);
    }

    fn learn(&mut self, tree: &DraftTree, path: &[usize]) {
        match self.device {
            Some(d) => {
                let us = d.step_micros(tree.len());
                self.micros += us;
                self.budget.learn(tree, path, us.round() as u64);
            }
            None => self.budget.learn_acceptance(tree, path),
        }
    }
}
