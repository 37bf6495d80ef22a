//! The decode loop: prefill, then draft → verify → accept → compact → update, one tree
//! per step.
//!
//! The loop is pull-based: the caller awaits [`Session::start`] and then
//! [`Session::step`] until an event carries a stop reason. Each call does one forward
//! pass and one readback, so a browser can render between steps, and cancelling is just
//! not calling `step` again (or calling [`Session::cancel`]).
//!
//! Greedy verification keeps the output identical to plain greedy decoding: a draft token
//! is kept only when it equals the model's argmax after its accepted prefix, and the
//! bonus token is that argmax itself.

use samd_draft::Drafter;
use samd_draft::drafter::{DraftReport, NO_PRECEDING};
use samd_draft::tree::{DraftTree, Source};
use web_time::Instant;

use crate::budget::{CostEstimate, TreeBudget};
use crate::{Error, Method, Sampling, Stats, Target, TreePolicy, WarmUp};

/// Options of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate (at least 1).
    pub max_new_tokens: usize,
    /// Ids that end the generation (end of turn, end of text). They are not emitted.
    pub stop_ids: Vec<u32>,
    /// Draw tokens instead of taking the argmax; `None` is greedy decoding.
    pub sampling: Option<Sampling>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StopReason {
    /// The model emitted a stop id.
    Eos,
    /// The token budget is spent.
    MaxTokens,
    /// The context is full.
    Context,
    /// The text reached a stop string (see [`crate::TextStream`]).
    StopString,
    /// The caller cancelled.
    Cancelled,
}

impl StopReason {
    /// The name used in JSON output.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Eos => "eos",
            StopReason::MaxTokens => "max_tokens",
            StopReason::Context => "context",
            StopReason::StopString => "stop_string",
            StopReason::Cancelled => "cancelled",
        }
    }
}

/// What one step produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepEvent {
    /// Tokens committed by this step, in order.
    pub tokens: Vec<u32>,
    /// Where each token came from: a drafter, or the model (the bonus token).
    pub sources: Vec<Source>,
    /// The match lengths and source of the draft (default for the prefill and AR).
    pub draft: DraftReport,
    /// Nodes verified, the root included.
    pub tree_len: usize,
    /// Time spent drafting.
    pub draft_us: u64,
    /// Time of the forward pass and its readback.
    pub verify_us: u64,
    /// Set on the last step of a generation.
    pub stop: Option<StopReason>,
}

/// A generation in progress.
#[derive(Debug)]
struct Run {
    options: GenerateOptions,
    /// The last committed token: the root of the next tree, not yet in the cache.
    root: u32,
    /// The token before `root`, which the drafter learns the root's successors after.
    before_root: u32,
    /// Set while a step is in flight; still set if its future was dropped midway.
    in_step: bool,
}

/// One model and one drafter, generating one request at a time.
pub struct Session<T: Target> {
    target: T,
    drafter: Option<Box<dyn Drafter>>,
    tree: DraftTree,
    run: Option<Run>,
    stats: Stats,
    policy: TreePolicy,
    budget: TreeBudget,
}

impl<T: Target + std::fmt::Debug> std::fmt::Debug for Session<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("target", &self.target)
            .field("drafter", &self.drafter.as_ref().map(|d| d.name()))
            .field("running", &self.run.is_some())
            .finish()
    }
}

/// Prompt tokens per prefill pass by default ([`Target::fill_chunk`]), and on the CPU,
/// where a pass costs by its rows and a longer one would gain nothing.
///
/// Every method prefills in the same passes, Token Recycling too (which reads every
/// position's top-k, a slice of rows at a time: samd-model's `Llama::forward_ids`): a
/// position's K/V can depend on the length of the pass it was computed in (on wgpu a
/// pass of more than 128 nodes takes another attention kernel, with sums in another
/// order), and speculative decoding must continue from plain decoding's bits.
pub const PREFILL_CHUNK: usize = 256;

/// Microseconds since `since`, saturating.
pub(crate) fn micros(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX)
}

impl<T: Target> Session<T> {
    /// A session decoding with `drafter`, or plainly when it is `None`.
    pub fn new(target: T, drafter: Option<Box<dyn Drafter>>) -> Self {
        let mut budget = TreeBudget::default();
        budget.set_cost_shape(target.cost_shape());
        budget.set_step_padding(target.step_padding());
        let mut session = Self {
            target,
            drafter: None,
            tree: DraftTree::new(0),
            run: None,
            stats: Stats::default(),
            policy: TreePolicy::default(),
            budget,
        };
        session.set_drafter(drafter);
        session
    }

    /// Chooses which drafted nodes each step verifies. The default,
    /// [`TreePolicy::Adaptive`], keeps those worth their measured cost: on a GPU a wide
    /// tree costs little more than one node, on a CPU only a few likely nodes pay.
    pub fn set_tree_policy(&mut self, policy: TreePolicy) {
        self.policy = policy;
    }

    /// What a step costs on this device, as fitted to the steps so far.
    pub fn step_cost(&self) -> CostEstimate {
        self.budget.cost()
    }

    /// The counters of the current (or last) generation.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The target, for inspection.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// Swaps the drafter, for the next generation, and hands back the previous one: what
    /// it learned (Token Recycling's table) is worth keeping for a later request.
    pub fn set_drafter(&mut self, drafter: Option<Box<dyn Drafter>>) -> Option<Box<dyn Drafter>> {
        self.budget
            .select_drafter(drafter.as_ref().map_or("ar", |d| d.name()));
        self.run = None;
        std::mem::replace(&mut self.drafter, drafter)
    }

    /// Ends the current generation; the next one starts afresh.
    pub fn cancel(&mut self) {
        self.run = None;
    }

    /// Top-k ids per node the drafter wants read back (0: none).
    fn top_k(&self) -> usize {
        self.drafter.as_ref().map_or(0, |d| d.top_k())
    }

    /// Starts a generation: checks the inputs, resets the cache and the drafter, and runs
    /// the prompt. The event carries the first generated token.
    pub async fn start(
        &mut self,
        prompt: &[u32],
        options: GenerateOptions,
    ) -> Result<StepEvent, Error> {
        self.run = None;
        if prompt.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        if options.max_new_tokens == 0 {
            return Err(Error::Options {
                what: "the token budget must be at least 1",
            });
        }
        if let Some(s) = &options.sampling {
            s.check()?;
        }
        let capacity = self.target.capacity();
        if prompt.len() >= capacity {
            return Err(Error::PromptTooLong {
                len: prompt.len(),
                capacity,
            });
        }
        let vocab_size = self.target.vocab_size();
        if let Some(&bad) = prompt.iter().find(|&&t| t >= vocab_size) {
            return Err(samd_draft::Error::TokenOutOfVocab {
                token: bad,
                vocab_size,
            }
            .into());
        }
        self.target.reset();
        self.stats = Stats {
            prompt_tokens: prompt.len(),
            ..Stats::default()
        };
        let k = self.top_k();
        let sampling = options.sampling;
        if let Some(s) = sampling {
            self.target.seed(s.seed);
        }
        if let Some(d) = &mut self.drafter {
            d.reset();
            d.reserve(prompt.len() + options.max_new_tokens);
            d.commit(prompt)?;
        }

        let t = Instant::now();
        let mut first = 0;
        let chunk_len = self.target.fill_chunk();
        // Token Recycling learns the top-k of the prompt's last positions
        // ([`Target::recycled_prompt_positions`]); every pass reads its last row, the next
        // token after the last pass's being the first generated.
        let learned_from = if k > 0 {
            let rows = match &self.drafter {
                Some(d) if d.observes_whole_prompt() => usize::MAX,
                _ => self.target.recycled_prompt_positions(),
            };
            prompt.len().saturating_sub(rows)
        } else {
            prompt.len()
        };
        for (i, chunk) in prompt.chunks(chunk_len).enumerate() {
            let start = i * chunk_len;
            self.tree.reset(chunk[0]);
            self.tree.push_chain(0, &chunk[1..], Source::Model);
            let read_from = learned_from.clamp(start, start + chunk.len() - 1) - start;
            let read_k = if start + chunk.len() > learned_from {
                k
            } else {
                0
            };
            let verified = self
                .target
                .fill(&self.tree, read_from, read_k, sampling)
                .await?;
            first = *verified.next.last().ok_or(Error::Options {
                what: "a prefill chunk of no tokens",
            })?;
            self.stats.readbacks += 1;
            let chain: Vec<usize> = (0..chunk.len()).collect();
            self.target.commit(&chain)?;
            if read_k > 0
                && let Some(d) = &mut self.drafter
            {
                let rows = start + read_from..start + chunk.len();
                let preceding: Vec<u32> = rows
                    .clone()
                    .map(|p| p.checked_sub(1).map_or(NO_PRECEDING, |q| prompt[q]))
                    .collect();
                d.observe(&prompt[rows], &preceding, &verified.top_k)?;
            }
        }
        self.stats.prefill_us = micros(t);
        self.run = Some(Run {
            options,
            root: first,
            before_root: prompt[prompt.len() - 1],
            in_step: false,
        });
        let event = StepEvent {
            tokens: vec![first],
            sources: vec![Source::Model],
            draft: DraftReport::default(),
            tree_len: prompt.len(),
            draft_us: 0,
            verify_us: 0,
            stop: None,
        };
        self.finish(event)
    }

    /// Runs one verification step.
    pub async fn step(&mut self) -> Result<StepEvent, Error> {
        let run = self.run.as_mut().ok_or(Error::NotStarted)?;
        if run.in_step {
            // The previous step's future was dropped midway: its cache writes are pending
            // and its tokens unknown. Only a fresh start is safe.
            self.run = None;
            return Err(Error::NotStarted);
        }
        run.in_step = true;
        let (root, before_root) = (run.root, run.before_root);
        let sampling = run.options.sampling;
        let k = self.top_k();

        let t = Instant::now();
        let draft = match &mut self.drafter {
            Some(d) => d.draft(&mut self.tree)?,
            None => {
                self.tree.reset(root);
                DraftReport::default()
            }
        };
        // The tree must fit what the target verifies at once and the cache's room; near
        // the end of the context a large tree keeps its likeliest nodes.
        let room = self.target.capacity() - self.target.past_len();
        let most = self.target.max_tree_nodes().min(room);
        self.budget.prune(&mut self.tree, &draft, self.policy, most);
        let draft_us = micros(t);

        let t = Instant::now();
        let verified = self.target.verify(&self.tree, k, sampling).await?;
        self.stats.readbacks += 1;
        // Under sampling `next` holds draws, and the same walk is lossless (see
        // `sampling`'s module docs).
        let acc = self.tree.accept(&verified.next)?;
        self.target.commit(&acc.path)?;
        let verify_us = micros(t);
        self.budget.learn(&self.tree, &acc.path, verify_us);
        if k > 0
            && let Some(d) = &mut self.drafter
        {
            let tokens = self.tree.tokens();
            let preceding: Vec<u32> = (0..tokens.len())
                .map(|i| self.tree.parent(i).map_or(before_root, |p| tokens[p]))
                .collect();
            d.observe(tokens, &preceding, &verified.top_k)?;
        }

        let mut sources: Vec<Source> = acc.path[1..]
            .iter()
            .map(|&i| self.tree.sources()[i])
            .collect();
        sources.push(Source::Model);
        self.stats.draft_us += draft_us;
        self.stats.verify_us += verify_us;
        let event = StepEvent {
            tokens: acc.committed(&self.tree),
            sources,
            draft,
            tree_len: self.tree.len(),
            draft_us,
            verify_us,
            stop: None,
        };
        let event = self.finish(event)?;
        // The step counts what the output keeps and the stop id that ended it: tokens
        // verified past a stop id or the token budget are thrown away.
        let kept = event.tokens.len() + usize::from(event.stop == Some(StopReason::Eos));
        self.stats.record_step(kept, self.tree.len() - 1);
        Ok(event)
    }

    /// Readies the target for `methods` ([`Target::warm_up`]), and seeds the tree
    /// budget's step-cost fit with the warm-up's timings, so that the first request's
    /// trees are cut by what each size costs on this device rather than by a guess.
    pub async fn warm_up(
        &mut self,
        methods: &[Method],
        progress: impl FnMut(usize, usize),
    ) -> Result<WarmUp, Error> {
        self.run = None;
        let warm = self.target.warm_up(methods, progress).await?;
        for &(nodes, us) in &warm.timings {
            self.budget.observe_cost(nodes, us);
        }
        Ok(warm)
    }

    /// Runs a whole generation and returns the generated ids and why it stopped.
    pub async fn generate(
        &mut self,
        prompt: &[u32],
        options: GenerateOptions,
    ) -> Result<(Vec<u32>, StopReason), Error> {
        let mut event = self.start(prompt, options).await?;
        let mut out = Vec::new();
        loop {
            out.extend_from_slice(&event.tokens);
            if let Some(stop) = event.stop {
                return Ok((out, stop));
            }
            event = self.step().await?;
        }
    }

    /// Applies the stop rules to a step's tokens, commits them to the drafter, and ends
    /// the run when a rule fires.
    fn finish(&mut self, mut event: StepEvent) -> Result<StepEvent, Error> {
        let run = self
            .run
            .as_mut()
            .expect("invariant: finish runs inside a generation");
        run.in_step = false;
        // A stop id counts only within the token budget: plain decoding, which makes a
        // token a step, stops at the budget before it would verify one beyond it.
        let left = run.options.max_new_tokens - self.stats.generated;
        if let Some(at) = event
            .tokens
            .iter()
            .take(left)
            .position(|t| run.options.stop_ids.contains(t))
        {
            self.stats.stop_id = Some(event.tokens[at]);
            event.tokens.truncate(at);
            event.sources.truncate(at);
            event.stop = Some(StopReason::Eos);
        } else if event.tokens.len() >= left {
            event.tokens.truncate(left);
            event.sources.truncate(left);
            event.stop = Some(StopReason::MaxTokens);
        }
        // The next step needs a slot for its root at least.
        if event.stop.is_none() && self.target.past_len() + 1 >= self.target.capacity() {
            event.stop = Some(StopReason::Context);
        }
        self.stats.generated += event.tokens.len();
        if let [.., before, last] = event.tokens[..] {
            (run.before_root, run.root) = (before, last);
        } else if let [last] = event.tokens[..] {
            (run.before_root, run.root) = (run.root, last);
        }
        if event.stop.is_some() {
            self.run = None;
        } else if let Some(d) = &mut self.drafter {
            d.commit(&event.tokens)?;
        }
        Ok(event)
    }
}
