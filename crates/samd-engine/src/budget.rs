//! The tree budget: which drafted nodes are worth verifying on this device.
//!
//! A node pays when the tokens it is expected to add outweigh what it adds to the step's
//! time. Where a step of 64 nodes costs little more than one (a GPU, at best), nearly
//! every node pays; on a CPU each node adds about a quarter of a one-node step, so only
//! likely drafts do. Both sides are learned while decoding:
//!
//! - [`AcceptanceModel`]: how often a node is accepted once its parent is, by its source,
//!   depth, rank among its siblings and the match it came from;
//! - [`StepCost`]: the time of a one-node step, and of larger steps as `a + b · nodes`,
//!   fitted to recent steps.
//!
//! [`TreeBudget::prune`] keeps the nodes with the highest chance of being reached (a
//! node's chance never exceeds its parent's, so the kept set is a tree) and picks how many
//! to keep by the best expected tokens per unit of time. Pruning only removes candidates,
//! so decoding stays lossless.
//!
//! What is not tried is not measured, so both sides drift back to their priors while
//! unused: a draft that stopped paying, or a batch step that was slow once, gets tried
//! again later.

use samd_draft::drafter::DraftReport;
use samd_draft::tree::{DraftTree, Source};
use samd_model::step_graph::StepPadding;

/// Which nodes each step verifies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TreePolicy {
    /// Every node the drafter proposed. Deterministic, so tests and trace replays use it.
    Full,
    /// The nodes whose expected tokens pay for their measured cost.
    #[default]
    Adaptive,
}

impl TreePolicy {
    /// The name used on the command line and in JSON: `full` or `adaptive`.
    pub fn name(self) -> &'static str {
        match self {
            TreePolicy::Full => "full",
            TreePolicy::Adaptive => "adaptive",
        }
    }

    /// Parses [`TreePolicy::name`].
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "full" => Some(TreePolicy::Full),
            "adaptive" => Some(TreePolicy::Adaptive),
            _ => None,
        }
    }
}

/// Depth buckets: 1, 2, …, `DEPTHS` and deeper.
const DEPTHS: usize = 8;
/// Sibling-rank buckets: 0, 1, …, `RANKS - 1` and later.
const RANKS: usize = 4;
/// Match-length buckets, by `log2(len + 1)`: 0, 1–2, 3–6, 7–14, 15 and longer.
const MATCHES: usize = 5;
/// Draft sources with statistics of their own (see `source_slot`).
const SOURCES: usize = 4;
/// Pseudo-trials behind the prior, so that a bucket follows its data after a few steps.
const PRIOR_TRIALS: f32 = 4.0;
/// Counts are halved past this many trials, so that a bucket follows the request.
const MAX_TRIALS: f32 = 256.0;

fn source_slot(source: Source) -> usize {
    match source {
        Source::DynamicSam => 0,
        Source::StaticSam => 1,
        Source::Recycling => 2,
        _ => 3,
    }
}

fn match_bucket(len: u32) -> usize {
    ((len + 1).ilog2() as usize).min(MATCHES - 1)
}

/// The acceptance rate a node is assumed to have before its bucket has data, given that
/// its parent was accepted.
///
/// Measured on the Spec-Bench dev traces of SmolLM2-135M (`docs/traces`): the text after
/// an earlier occurrence of the matched suffix is right for its first token 34% of the
/// time after a 1–2 token match and 93% after a match of 15 or more, and each next token
/// is likelier than the first. Token Recycling's successors by rank are its template's
/// priors. Without such priors a CPU, where only sure drafts pay, would never try one and
/// so never learn that they are sure.
fn prior_rate(source: usize, depth: usize, rank: usize, matched: usize) -> f32 {
    const FIRST: [f32; MATCHES] = [0.4, 0.35, 0.65, 0.85, 0.93];
    const LATER: [f32; MATCHES] = [0.7, 0.7, 0.8, 0.88, 0.95];
    const RECYCLED: [f32; RANKS] = [0.45, 0.15, 0.07, 0.04];
    let by_match = if depth == 0 { FIRST } else { LATER };
    let rate = if source == source_slot(Source::Recycling) {
        RECYCLED[rank]
    } else {
        by_match[matched]
    };
    // A later sibling is a second guess.
    if rank > 0 && source != source_slot(Source::Recycling) {
        rate * 0.5
    } else {
        rate
    }
}

/// Acceptance rates of draft nodes, given that their parent was accepted: counts per
/// bucket, seeded with `PRIOR_TRIALS` pseudo-trials at the prior rate.
///
/// Between steps every bucket drifts back toward its prior, slowly (see
/// [`PRIOR_RETURN`]). A bucket that fell below what pays is no longer verified, so without
/// the drift nothing would show that it got better: Token Recycling's table, say, which
/// is empty at first and fills as the request goes on.
#[derive(Debug, Clone)]
pub struct AcceptanceModel {
    hits: Vec<f32>,
    trials: Vec<f32>,
    /// Each bucket's prior, as hits in `PRIOR_TRIALS` trials.
    prior_hits: Vec<f32>,
}

/// The share of the way back to its prior that each bucket goes per step: a bucket left
/// untried for about 100 steps is half-way back.
const PRIOR_RETURN: f32 = 0.007;

impl Default for AcceptanceModel {
    fn default() -> Self {
        let mut prior_hits = Vec::with_capacity(SOURCES * DEPTHS * RANKS * MATCHES);
        for source in 0..SOURCES {
            for depth in 0..DEPTHS {
                for rank in 0..RANKS {
                    for matched in 0..MATCHES {
                        prior_hits.push(prior_rate(source, depth, rank, matched) * PRIOR_TRIALS);
                    }
                }
            }
        }
        let trials = vec![PRIOR_TRIALS; prior_hits.len()];
        Self {
            hits: prior_hits.clone(),
            trials,
            prior_hits,
        }
    }
}

impl AcceptanceModel {
    /// The bucket of every node but the root (`buckets[0]` is unused), written into
    /// `buckets`. A node's rank counts its elder siblings: drafters push their best guess
    /// under a parent first.
    fn buckets(tree: &DraftTree, report: &DraftReport, buckets: &mut Vec<usize>) {
        buckets.clear();
        buckets.push(0);
        let mut children = vec![0usize; tree.len()];
        for node in 1..tree.len() {
            let parent = tree
                .parent(node)
                .expect("invariant: only the root has no parent");
            let rank = children[parent].min(RANKS - 1);
            children[parent] += 1;
            let source = tree.sources()[node];
            let matched = match source {
                Source::DynamicSam => report.dynamic_match_len,
                Source::StaticSam => report.static_match_len,
                _ => 0,
            };
            let depth = (tree.depths()[node] as usize).min(DEPTHS) - 1;
            buckets.push(
                ((source_slot(source) * DEPTHS + depth) * RANKS + rank) * MATCHES
                    + match_bucket(matched),
            );
        }
    }

    /// The estimated acceptance rate of a bucket.
    fn rate(&self, bucket: usize) -> f32 {
        self.hits[bucket] / self.trials[bucket]
    }

    /// Moves every bucket a step back toward its prior.
    fn drift(&mut self) {
        let keep = 1.0 - PRIOR_RETURN;
        for ((hits, trials), prior) in self
            .hits
            .iter_mut()
            .zip(&mut self.trials)
            .zip(&self.prior_hits)
        {
            *hits = keep * *hits + PRIOR_RETURN * prior;
            *trials = keep * *trials + PRIOR_RETURN * PRIOR_TRIALS;
        }
    }

    /// Counts one verified node whose parent was accepted.
    fn record(&mut self, bucket: usize, accepted: bool) {
        if self.trials[bucket] >= MAX_TRIALS {
            self.trials[bucket] /= 2.0;
            self.hits[bucket] /= 2.0;
        }
        self.trials[bucket] += 1.0;
        self.hits[bucket] += f32::from(u8::from(accepted));
    }
}

/// Decayed least squares of step time on node count: old steps fade, so the fit follows
/// the context as it grows.
#[derive(Debug, Clone, Default)]
struct DecayedLine {
    /// Decayed sums: weight, Σn, Σn², Σt, Σn·t.
    w: f64,
    n: f64,
    nn: f64,
    t: f64,
    nt: f64,
}

impl DecayedLine {
    /// Lets every step so far count a little less.
    fn fade(&mut self) {
        self.w *= COST_DECAY;
        self.n *= COST_DECAY;
        self.nn *= COST_DECAY;
        self.t *= COST_DECAY;
        self.nt *= COST_DECAY;
    }

    fn add(&mut self, n: f64, t: f64) {
        self.w += 1.0;
        self.n += n;
        self.nn += n * n;
        self.t += t;
        self.nt += n * t;
    }

    /// What the steps so far show; `None` before any.
    fn fit(&self) -> Option<Fitted> {
        if self.w == 0.0 {
            return None;
        }
        let mean_n = self.n / self.w;
        let mean_t = self.t / self.w;
        let var = self.nn / self.w - mean_n * mean_n;
        if var < 0.25 {
            return Some(Fitted::Point(mean_n, mean_t));
        }
        let b = ((self.nt / self.w - mean_n * mean_t) / var).max(0.0);
        let (a, b) = line_through(mean_n, mean_t, b);
        Some(Fitted::Line(a, b))
    }
}

/// `(a, b)` of the line of slope `b` through `(n, t)`, its fixed part kept to at least a
/// twentieth of `t`: a step never costs nothing.
fn line_through(n: f64, t: f64, b: f64) -> (f64, f64) {
    ((t - b * n).max(t * 0.05), b)
}

/// A [`DecayedLine`]'s fit.
#[derive(Debug, Clone, Copy)]
enum Fitted {
    /// `t = a + b · n`.
    Line(f64, f64),
    /// Too little spread in `n` to see a slope: the mean step, `(n, t)`.
    Point(f64, f64),
}

impl Fitted {
    /// The time of a step of `n` nodes: the line's, or the point's own time.
    fn at(self, n: f64) -> f64 {
        match self {
            Fitted::Line(a, b) => a + b * n,
            Fitted::Point(_, t) => t,
        }
    }
}

/// How a device's step time grows with the tree, before any step is timed: the tree
/// budget's first guess, which timings then replace. Relative to a one-node step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostShape {
    /// The fixed part of a step of two or more nodes.
    pub batch: f64,
    /// What each node adds to such a step.
    pub per_node: f64,
}

impl CostShape {
    /// A GPU: a step is bound by launches and synchronisation, so nodes are nearly free
    /// (an H200 verified 64 nodes for 1.3–1.6× one with burn's kernels; 4.2× with the
    /// skinny matmul's first, 8-row tiles, since widened). Trees start wide, and the
    /// timings take over within a few steps.
    pub const PARALLEL: Self = Self {
        batch: 1.0,
        per_node: 0.002,
    };
    /// A CPU: each node costs about a quarter of a one-node step (`samd profile --device
    /// cpu` on this project's dev CPU: 1.27× for 2 nodes, 1.52× for 4, 2.98× for 8, with
    /// `cpu_matmul`'s few-row products). A few drafted nodes pay; wide trees do not.
    pub const SERIAL: Self = Self {
        batch: 0.75,
        per_node: 0.28,
    };
    /// The browser's CPU backend: wasm's integer products are bound by their arithmetic,
    /// not by reading the weights, so each node costs about 0.7 of a one-node step
    /// (`node tests/browser/profile-cpu.mjs`, V8 on this project's dev CPU: 1.6× for 2
    /// nodes, 2.3× for 3, 3.1× for 4, 4.6× for 6). Only nearly sure drafts pay; with
    /// [`CostShape::SERIAL`]'s guess a short reply's first steps verified drafts that
    /// could not.
    pub const WASM: Self = Self {
        batch: 0.25,
        per_node: 0.7,
    };
}

/// What a step costs by its node count: a one-node step apart (a matrix-vector product,
/// which devices tend to run on a faster path than any batch: on an H200, 6.4 vs 7.7 ms
/// for 1 vs 2 nodes), and `a + b · nodes` for the rest.
#[derive(Debug, Clone)]
pub struct StepCost {
    single: DecayedLine,
    batch: DecayedLine,
    shape: CostShape,
}

impl Default for StepCost {
    fn default() -> Self {
        Self::new(CostShape::PARALLEL)
    }
}

/// Weight kept by past steps at each new one: about the last 30 steps count.
const COST_DECAY: f64 = 0.97;
/// Steps' worth of weight that the device's [`CostShape`] keeps against batch timings.
/// Without it one slow batch step (the browser's first, say, while the wasm engine
/// compiles the code it needs: twice a one-node step) made every draft look too dear to
/// try, so no later timing ever corrected it.
const PRIOR_STEPS: f64 = 1.0;

/// [`StepCost`]'s estimate, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostEstimate {
    /// A one-node step.
    pub single: f64,
    /// The fixed part of a step of two or more nodes.
    pub fixed: f64,
    /// What each node adds to such a step.
    pub per_node: f64,
}

impl CostEstimate {
    /// The time of a step of `nodes` nodes.
    pub fn step(&self, nodes: usize) -> f64 {
        if nodes <= 1 {
            self.single
        } else {
            self.fixed + self.per_node * nodes as f64
        }
    }
}

impl StepCost {
    /// No timings yet: `shape` is the guess.
    pub fn new(shape: CostShape) -> Self {
        Self {
            single: DecayedLine::default(),
            batch: DecayedLine::default(),
            shape,
        }
    }

    /// Records a step of `nodes` nodes that took `micros`. Every step fades both fits,
    /// so that batch timings grow stale while only one-node steps run.
    pub fn observe(&mut self, nodes: usize, micros: u64) {
        self.single.fade();
        self.batch.fade();
        let line = if nodes <= 1 {
            &mut self.single
        } else {
            &mut self.batch
        };
        line.add(nodes as f64, micros as f64);
    }

    /// The current estimate. Where one side has no timings yet, the shape relates it to
    /// the other.
    ///
    /// Where batch steps have all had about the same size, their slope is unknown. It is
    /// then taken from the one-node step to them, so that what a batch costs beyond one
    /// node is spread over its nodes: a smaller tree then looks cheaper, gets tried, and
    /// its timing shows the slope. Pinning the slope to the shape's instead once put the
    /// whole cost in the fixed part: on an H200, after one 11-node step, every tree looked
    /// as dear as that one, and drafters whose nodes are right less than 80% of the time
    /// (prompt lookup, Token Recycling) were never tried again.
    ///
    /// Batch timings then share the say with the shape's guess, scaled to the one-node
    /// step, by their faded weight against [`PRIOR_STEPS`]: a batch step seen long ago
    /// counts for little, so a draft worth a try gets tried and timed again.
    pub fn estimate(&self) -> CostEstimate {
        let shape = self.shape;
        let single = self.single.fit().map(|fit| fit.at(1.0));
        let share = shape.per_node / shape.batch;
        let (fixed, per_node) = match (self.batch.fit(), single) {
            (Some(Fitted::Line(a, b)), _) => (a, b),
            (Some(Fitted::Point(n, t)), Some(s)) if n > 1.0 => {
                line_through(n, t, ((t - s) / (n - 1.0)).max(0.0))
            }
            (Some(Fitted::Point(n, t)), _) => {
                let a = t / (1.0 + share * n);
                (a, a * share)
            }
            (None, Some(t)) => (t * shape.batch, t * shape.per_node),
            (None, None) => (shape.batch, shape.per_node),
        };
        // Batch timings are weighed against the shape's guess by how recent they are.
        let (fixed, per_node) = match single {
            Some(s) if self.batch.w > 0.0 => {
                let w = self.batch.w / (self.batch.w + PRIOR_STEPS);
                (
                    w * fixed + (1.0 - w) * s * shape.batch,
                    w * per_node + (1.0 - w) * s * shape.per_node,
                )
            }
            _ => (fixed, per_node),
        };
        CostEstimate {
            single: single.unwrap_or(fixed / shape.batch),
            fixed,
            per_node,
        }
    }
}

/// Learns what nodes are worth and prunes each tree to the ones that pay.
#[derive(Debug, Clone, Default)]
pub struct TreeBudget {
    /// The current drafter's acceptance rates.
    acceptance: AcceptanceModel,
    /// The current drafter's name, and the rates of drafters used before it, by name, so
    /// that swapping drafters between requests keeps what each learned.
    drafter: &'static str,
    parked: Vec<(&'static str, AcceptanceModel)>,
    cost: StepCost,
    /// How the device pads a step's nodes, which it computes and pays for.
    padding: StepPadding,
    /// Buckets of the tree being verified, node by node (kept across `prune` and `learn`).
    buckets: Vec<usize>,
    /// Scratch: each node's chance of being reached, and the nodes by that chance.
    reach: Vec<f32>,
    order: Vec<usize>,
}

impl TreeBudget {
    /// Makes the drafter named `name` the current one, with what was learned about its
    /// nodes before; the step cost, a property of the device, is shared.
    pub fn select_drafter(&mut self, name: &'static str) {
        if name == self.drafter {
            return;
        }
        let next = match self.parked.iter().position(|(n, _)| *n == name) {
            Some(i) => self.parked.swap_remove(i).1,
            None => AcceptanceModel::default(),
        };
        let previous = std::mem::replace(&mut self.acceptance, next);
        self.parked.push((self.drafter, previous));
        self.drafter = name;
    }

    /// The fitted step cost.
    pub fn cost(&self) -> CostEstimate {
        self.cost.estimate()
    }

    /// Starts the step-cost fit over from `shape`, the device's guess.
    pub fn set_cost_shape(&mut self, shape: CostShape) {
        self.cost = StepCost::new(shape);
    }

    /// Tells the budget how the device pads a step's nodes (the target's
    /// [`crate::Target::step_padding`]). A padded step costs its padded size, so a tree
    /// cut to 5 nodes pays for 8: the budget prices each size as padded, and so keeps
    /// the likeliest nodes up to the padded size where they pay.
    pub fn set_step_padding(&mut self, padding: StepPadding) {
        self.padding = padding;
    }

    /// Prunes `tree` to at most `most` nodes (the root included) that pay under `policy`,
    /// and remembers their buckets for [`TreeBudget::learn`]. Where the tree is larger
    /// than `most` (what the target verifies at once, or the cache's room left), the
    /// likeliest nodes stay, whatever the drafter's order: a drafter's first nodes are
    /// not always its best, and SAM+TR puts its chains before Token Recycling's guesses.
    pub fn prune(
        &mut self,
        tree: &mut DraftTree,
        report: &DraftReport,
        policy: TreePolicy,
        most: usize,
    ) {
        AcceptanceModel::buckets(tree, report, &mut self.buckets);
        let n = tree.len();
        // Drafted nodes that fit beside the root.
        let fit = most.clamp(1, n) - 1;
        if n == 1 || (policy == TreePolicy::Full && fit + 1 == n) {
            return;
        }
        self.reach.clear();
        self.reach.push(1.0);
        for node in 1..n {
            let parent = tree
                .parent(node)
                .expect("invariant: only the root has no parent");
            let reach = self.reach[parent] * self.acceptance.rate(self.buckets[node]);
            self.reach.push(reach);
        }
        // Most likely first; a child never outranks its parent (ties keep index order).
        self.order.clear();
        self.order.extend(1..n);
        let reach = &self.reach;
        self.order
            .sort_by(|&x, &y| reach[y].total_cmp(&reach[x]).then(x.cmp(&y)));

        let kept = match policy {
            TreePolicy::Full => fit,
            TreePolicy::Adaptive => {
                let cost = self.cost.estimate();
                let (mut best, mut best_rate) = (0, 1.0 / cost.step(1));
                let mut expected = 1.0;
                for (i, &node) in self.order[..fit].iter().enumerate() {
                    expected += f64::from(reach[node]);
                    let rate = expected / cost.step(self.padding.nodes(i + 2));
                    if rate > best_rate {
                        (best, best_rate) = (i + 1, rate);
                    }
                }
                best
            }
        };
        if kept + 1 == n {
            return;
        }
        let mut keep = vec![false; n];
        for &node in &self.order[..kept] {
            keep[node] = true;
        }
        tree.retain(&keep);
        keep[0] = true;
        let mut kept = keep.iter();
        self.buckets.retain(|_| kept.next() == Some(&true));
    }

    /// Learns from a verified step: which nodes were accepted (`path`, root first) and
    /// how long the step took.
    pub fn learn(&mut self, tree: &DraftTree, path: &[usize], verify_us: u64) {
        self.learn_acceptance(tree, path);
        self.cost.observe(self.padding.nodes(tree.len()), verify_us);
    }

    /// Learns what a step of `nodes` nodes costs, from a step that verified nothing
    /// ([`crate::Session::warm_up`]'s).
    pub fn observe_cost(&mut self, nodes: usize, micros: u64) {
        self.cost.observe(nodes, micros);
    }

    /// Learns which nodes were accepted (`path`, root first), without a timing: what
    /// replay, which times nothing, teaches the budget.
    pub fn learn_acceptance(&mut self, tree: &DraftTree, path: &[usize]) {
        debug_assert_eq!(self.buckets.len(), tree.len(), "learn follows prune");
        self.acceptance.drift();
        let mut on_path = vec![false; tree.len()];
        for &node in path {
            on_path[node] = true;
        }
        for node in 1..tree.len() {
            let parent = tree
                .parent(node)
                .expect("invariant: only the root has no parent");
            if on_path[parent] {
                self.acceptance.record(self.buckets[node], on_path[node]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(len: usize, source: Source) -> DraftTree {
        let mut tree = DraftTree::new(0);
        let tokens: Vec<u32> = (1..=len as u32).collect();
        tree.push_chain(0, &tokens, source);
        tree
    }

    fn report(dynamic: u32) -> DraftReport {
        DraftReport {
            dynamic_match_len: dynamic,
            ..DraftReport::default()
        }
    }

    /// Teaches `budget` a device where a step costs `a + b · nodes` µs (`single` for one
    /// node), on dynamic-SAM chains of 12 whose step `i` is right for `accepted(i)` tokens.
    fn teach(
        budget: &mut TreeBudget,
        single: u64,
        a: u64,
        b: u64,
        accepted: impl Fn(usize) -> usize,
    ) {
        for step in 0..240 {
            let mut tree = chain(12, Source::DynamicSam);
            budget.prune(&mut tree, &report(8), TreePolicy::Full, usize::MAX);
            let path: Vec<usize> = (0..=accepted(step)).collect();
            // The tree's size varies in practice; here the cost line is probed directly.
            budget.learn(&tree, &path, a + b * 13);
            let nodes = 2 + step % 12;
            budget.cost.observe(nodes, a + b * nodes as u64);
            budget.cost.observe(1, single);
        }
    }

    #[test]
    fn the_step_cost_fit_recovers_a_line_and_the_single_step() {
        let mut cost = StepCost::default();
        for i in 0..100 {
            let n = 1 + i % 17;
            let t = if n == 1 {
                19_000
            } else {
                40_000 + 3_500 * n as u64
            };
            cost.observe(n, t);
        }
        let e = cost.estimate();
        assert!((e.single - 19_000.0).abs() < 1.0, "{e:?}");
        // Recent timings outweigh the shape's guess about thirty to one.
        assert!((e.fixed / 40_000.0 - 1.0).abs() < 0.05, "{e:?}");
        assert!((e.per_node / 3_500.0 - 1.0).abs() < 0.05, "{e:?}");
    }

    #[test]
    fn one_batch_size_seen_spreads_its_cost_over_its_nodes() {
        // The H200 after its kernels: one node 6.4 ms, 2 nodes 7.7, 16 nodes 12.3. After
        // one-node steps and a single 11-node step, a short prompt-lookup chain whose
        // first token is right 40% of the time must still look worth a try.
        let mut budget = TreeBudget::default();
        for _ in 0..20 {
            budget.cost.observe(1, 6_400);
        }
        budget.cost.observe(11, 10_500);
        let e = budget.cost();
        assert!(e.step(2) < 7_000.0, "{e:?}");
        // One step's timing shares the say with the GPU shape's guess.
        assert!((8_000.0..10_500.0).contains(&e.step(11)), "{e:?}");
        let mut tree = chain(10, Source::Lookup);
        budget.prune(
            &mut tree,
            &DraftReport::default(),
            TreePolicy::Adaptive,
            usize::MAX,
        );
        assert!(tree.len() > 1, "the chain's first node is tried");
    }

    /// A budget on a CPU-like device, before any timing.
    fn cpu_budget() -> TreeBudget {
        let mut budget = TreeBudget::default();
        budget.set_cost_shape(CostShape::SERIAL);
        budget
    }

    /// A one-node draft from `source`, pruned by `budget`.
    fn pruned_single(budget: &mut TreeBudget, source: Source, report: &DraftReport) -> DraftTree {
        let mut tree = chain(1, source);
        budget.prune(&mut tree, report, TreePolicy::Adaptive, usize::MAX);
        tree
    }

    #[test]
    fn a_slow_first_batch_step_is_forgotten() {
        // The browser's CPU backend: one node 21 ms, and a first 2-node step of 43 ms
        // while the wasm engine compiled its code (later ones take about 25 ms).
        let mut budget = cpu_budget();
        // A match of 4: its first token is right about two times in three.
        let sure = |budget: &mut TreeBudget| {
            pruned_single(budget, Source::DynamicSam, &report(4)).len() > 1
        };
        budget.cost.observe(1, 21_000);
        budget.cost.observe(2, 43_000);
        assert!(!sure(&mut budget), "right after it, a batch looks dear");
        let steps_until_tried = (1..100).find(|_| {
            budget.cost.observe(1, 21_000);
            sure(&mut budget)
        });
        assert!(
            steps_until_tried.is_some_and(|n| n < 40),
            "the draft is tried again: {steps_until_tried:?}"
        );
    }

    #[test]
    fn a_draft_that_stopped_paying_is_tried_again_later() {
        // A CPU where a 2-node step costs 1.35 one-node steps: a node pays above 35%.
        let mut budget = cpu_budget();
        let tried = |budget: &mut TreeBudget| {
            let tree = pruned_single(budget, Source::Recycling, &DraftReport::default());
            let tried = tree.len() > 1;
            budget.learn(&tree, &[0], if tried { 27_000 } else { 20_000 });
            tried
        };
        // An empty recycling table's guesses are all wrong, until they stop being tried.
        let failures = (0..100).take_while(|_| tried(&mut budget)).count();
        assert!((1..20).contains(&failures), "{failures} failures");
        let steps_until_tried = (1..1_000).find(|_| tried(&mut budget));
        assert!(
            steps_until_tried.is_some_and(|n| n < 300),
            "the prior's pull brings it back: {steps_until_tried:?}"
        );
    }

    #[test]
    fn without_data_batch_nodes_are_assumed_cheap() {
        let mut cost = StepCost::default();
        for _ in 0..10 {
            cost.observe(1, 50_000);
        }
        let e = cost.estimate();
        assert!(e.step(64) < 1.2 * e.step(1), "{e:?}");
        let mut cost = StepCost::default();
        for _ in 0..10 {
            cost.observe(8, 50_000);
        }
        let e = cost.estimate();
        assert!(e.per_node / e.fixed < 0.01, "{e:?}");
        assert!(e.single <= 50_000.0, "{e:?}");
    }

    #[test]
    fn expensive_nodes_are_cut_to_the_likely_ones() {
        // A CPU-like device (each node a fifth of a step), chains right for 3 tokens.
        let mut budget = TreeBudget::default();
        teach(&mut budget, 24_000, 20_000, 4_000, |_| 3);
        let mut tree = chain(12, Source::DynamicSam);
        budget.prune(&mut tree, &report(8), TreePolicy::Adaptive, usize::MAX);
        assert_eq!(tree.len(), 4, "the root and the three likely tokens");
    }

    #[test]
    fn how_much_of_a_tree_pays_depends_on_the_device() {
        // Chains right for 0 to 12 tokens, evenly: deeper nodes are ever less likely.
        let prune = |a, b| {
            let mut budget = TreeBudget::default();
            teach(&mut budget, a + b, a, b, |step| step % 13);
            let mut tree = chain(12, Source::DynamicSam);
            budget.prune(&mut tree, &report(8), TreePolicy::Adaptive, usize::MAX);
            tree.len()
        };
        let cpu = prune(20_000, 4_000);
        assert!(
            (4..13).contains(&cpu),
            "a CPU keeps only the likelier half: {cpu}"
        );
        assert_eq!(prune(50_000, 50), 13, "a GPU keeps the whole chain");
    }

    #[test]
    fn a_padded_step_is_filled_to_its_padded_size() {
        // Chains right for 0 to 12 tokens, evenly, on a device where nodes cost a
        // tenth of a step: unpadded, the budget keeps a count that is no power of two.
        let prune = |padding| {
            let mut budget = TreeBudget::default();
            teach(&mut budget, 22_000, 20_000, 2_000, |step| step % 13);
            budget.set_step_padding(padding);
            let mut tree = chain(12, Source::DynamicSam);
            budget.prune(&mut tree, &report(8), TreePolicy::Adaptive, usize::MAX);
            tree.len()
        };
        let exact = prune(StepPadding::Exact);
        assert!(!exact.is_power_of_two(), "{exact} nodes");
        // A step of `exact` nodes would pay for the next power of two: the budget keeps
        // that many, or, where the likelier nodes alone pay better, the power below.
        let padded = prune(StepPadding::PowerOfTwo);
        assert!(padded.is_power_of_two(), "{padded} nodes");
    }

    #[test]
    fn a_costly_batch_step_is_worth_only_long_drafts() {
        // The dev CPU: one node 19 ms, a batch 45 ms plus 3.5 ms a node.
        let prune = |right: usize| {
            let mut budget = TreeBudget::default();
            teach(&mut budget, 19_000, 45_000, 3_500, |_| right);
            let mut tree = chain(12, Source::DynamicSam);
            budget.prune(&mut tree, &report(8), TreePolicy::Adaptive, usize::MAX);
            tree.len()
        };
        assert_eq!(prune(1), 1, "two tokens in 52 ms lose to one in 19");
        assert_eq!(prune(6), 7, "seven tokens in 69.5 ms win");
    }

    #[test]
    fn before_any_timing_the_device_shape_decides() {
        // A short match: its chain is likely to yield about two tokens.
        let prune = |shape| {
            let mut budget = TreeBudget::default();
            budget.set_cost_shape(shape);
            let mut tree = chain(6, Source::DynamicSam);
            budget.prune(&mut tree, &report(3), TreePolicy::Adaptive, usize::MAX);
            tree.len()
        };
        let (gpu, cpu) = (prune(CostShape::PARALLEL), prune(CostShape::SERIAL));
        assert_eq!(gpu, 7, "a GPU tries the whole chain");
        assert!(
            (2..gpu).contains(&cpu),
            "a CPU, where each node costs a quarter step, tries a part: {cpu} nodes"
        );
        assert_eq!(
            prune(CostShape::WASM),
            1,
            "wasm, where each node costs most of a step, tries none of it"
        );
        // A long match's chain is nearly sure: wasm tries it too.
        let mut budget = TreeBudget::default();
        budget.set_cost_shape(CostShape::WASM);
        let mut tree = chain(6, Source::DynamicSam);
        budget.prune(&mut tree, &report(20), TreePolicy::Adaptive, usize::MAX);
        assert!(tree.len() > 1, "wasm tries a sure draft");
    }

    #[test]
    fn the_full_policy_keeps_everything() {
        let mut budget = TreeBudget::default();
        teach(&mut budget, 24_000, 20_000, 4_000, |_| 0);
        let mut tree = chain(12, Source::DynamicSam);
        budget.prune(&mut tree, &report(8), TreePolicy::Full, usize::MAX);
        assert_eq!(tree.len(), 13);
    }

    #[test]
    fn a_tree_over_the_cap_keeps_its_likeliest_nodes() {
        // A drafter's first guesses, always wrong, then a chain that is always right: a
        // cut by the drafter's order would keep the guesses.
        let tree = || {
            let mut tree = DraftTree::new(0);
            tree.push_chain(0, &[50, 51, 52], Source::Recycling);
            tree.push_chain(0, &[1, 2, 3, 4], Source::DynamicSam);
            tree
        };
        let mut budget = TreeBudget::default();
        for _ in 0..100 {
            let mut taught = tree();
            budget.prune(&mut taught, &report(8), TreePolicy::Full, usize::MAX);
            budget.learn(&taught, &[0, 4, 5, 6, 7], 30_000);
            budget.cost.observe(1, 20_000);
        }
        for policy in [TreePolicy::Full, TreePolicy::Adaptive] {
            let mut cut = tree();
            budget.prune(&mut cut, &report(8), policy, 4);
            assert_eq!(cut.tokens(), &[0, 1, 2, 3], "{policy:?}");
            assert_eq!(budget.buckets.len(), 4, "{policy:?}");
        }
    }

    #[test]
    fn pruning_keeps_a_tree_and_the_buckets_follow_it() {
        let mut budget = TreeBudget::default();
        teach(&mut budget, 24_000, 20_000, 4_000, |_| 2);
        let mut tree = chain(6, Source::DynamicSam);
        tree.push(0, 50, Source::Recycling);
        tree.push(1, 51, Source::Recycling);
        budget.prune(&mut tree, &report(8), TreePolicy::Adaptive, usize::MAX);
        assert_eq!(budget.buckets.len(), tree.len());
        for node in 1..tree.len() {
            assert!(tree.parent(node).unwrap() < node);
        }
        // Learning from the pruned tree must not index past it.
        budget.learn(&tree, &[0], 25_000);
    }
}
