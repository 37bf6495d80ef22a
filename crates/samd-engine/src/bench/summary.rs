//! What a run's records add up to: per method and category, MAT, tokens/s and speedup
//! over AR, as tables.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::BenchRecord;
use super::prompts::CATEGORY_ORDER;
use crate::Method;

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
    /// Whether those timings are simulated, by a trace replay on given step costs, not
    /// measured ([`super::replay_bench`]).
    #[serde(default)]
    pub simulated: bool,
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
            simulated: false,
        }
    }

    /// A markdown table, one row per method. With timings the category columns are
    /// speedups over AR (the paper's table); without (replay) they are MATs.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let replayed = "no check of the output (replay decodes nothing)";
        let (per_category, lossless) = match (self.timed, self.simulated) {
            (true, false) => ("speedup over AR", "prompts whose output equals AR's"),
            (true, true) => (
                "speedup over AR, simulated (trace replay on the given step costs)",
                replayed,
            ),
            (false, _) => ("MAT (trace replay, no timings)", replayed),
        };
        // A replay times no drafting, and checks no output.
        let measured = self.timed && !self.simulated;
        let _ = writeln!(
            out,
            "Per category: {per_category}. Then overall MAT, nodes verified per step (the \
             root included), decode tokens/s, speedup over AR, drafting's share of decode \
             time, and {lossless}.\n"
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
            let lossless = if measured {
                format!("{}/{}", o.lossless, o.prompts)
            } else {
                "–".to_owned()
            };
            let _ = writeln!(
                out,
                " {:.2} | {} | {} | {} | {} | {lossless} |",
                o.mat,
                fmt(nodes, 1),
                fmt(o.tok_s, 1),
                fmt(o.speedup, 2),
                fmt(o.drafter_share.filter(|_| measured).map(|s| s * 100.0), 1),
            );
        }
        out
    }
}
