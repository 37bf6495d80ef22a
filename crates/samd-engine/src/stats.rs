//! Counters of one generation: what MAT, tokens/s and the time split are computed from.

/// Counters of one generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens generated, the prefill's first token included.
    pub generated: usize,
    /// Verification steps after the prefill.
    pub steps: usize,
    /// Tokens those steps produced (accepted drafts plus bonus) that the output keeps,
    /// and the stop id that ended it. A last step's tokens past the stop id or the token
    /// budget do not count: MAT then describes the tokens tok/s counts, and trace replay,
    /// which knows the output alone, predicts it exactly.
    pub step_tokens: usize,
    /// Draft nodes proposed, roots excluded.
    pub drafted: usize,
    /// Prefill time: the prompt's forward pass and its readback.
    pub prefill_us: u64,
    /// Time spent drafting.
    pub draft_us: u64,
    /// Time spent in forward passes and their readbacks (one readback per step).
    pub verify_us: u64,
    /// Device readbacks: one per prefill chunk and one per step.
    pub readbacks: usize,
    /// `histogram[n]` counts the steps that committed `n` tokens.
    pub histogram: Vec<u64>,
    /// The stop id that ended the generation, if one did. The output leaves it out, but
    /// a step made it: a trace needs it to replay that step.
    pub stop_id: Option<u32>,
}

impl Stats {
    /// Mean tokens committed per verification step, the bonus token included.
    pub fn mat(&self) -> f64 {
        if self.steps == 0 {
            return 0.0;
        }
        self.step_tokens as f64 / self.steps as f64
    }

    /// Decode speed: tokens after the first over the time of the steps that made them.
    pub fn tokens_per_s(&self) -> f64 {
        let us = self.draft_us + self.verify_us;
        if us == 0 {
            return 0.0;
        }
        self.generated.saturating_sub(1) as f64 * 1e6 / us as f64
    }

    /// Total time, prefill included, in seconds.
    pub fn total_s(&self) -> f64 {
        (self.prefill_us + self.draft_us + self.verify_us) as f64 / 1e6
    }

    pub(crate) fn record_step(&mut self, committed: usize, drafted: usize) {
        self.steps += 1;
        self.step_tokens += committed;
        self.drafted += drafted;
        if self.histogram.len() <= committed {
            self.histogram.resize(committed + 1, 0);
        }
        self.histogram[committed] += 1;
    }
}
