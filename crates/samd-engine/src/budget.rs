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
use samd_draft::tree::DraftTree;
use samd_model::step_graph::StepPadding;

mod acceptance;
mod step_cost;

use acceptance::AcceptanceModel;
pub use step_cost::{CostEstimate, CostShape, StepCost};

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
    use samd_draft::tree::Source;

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
