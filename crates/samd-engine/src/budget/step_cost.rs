//! What a verify step costs by its node count on this device: a guess from the device's
//! kind, then a fit to the steps timed.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
