//! The values that cross into JavaScript: requests in, events out (camelCase fields, as
//! `web/worker.js` documents them).

use samd_draft::drafter::DraftReport;
use samd_engine::{Sampling, StepEvent, StopReason};
use samd_model::gguf::keys;
use samd_model::{GgufFile, LlamaConfig};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, WebError};
use crate::warm_up::WarmUpInfo;
use crate::{Loaded, Run};

/// A generation request.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateRequest {
    /// The user's text.
    pub prompt: String,
    /// `ar`, `pld`, `sam`, `tr` or `sam+tr`.
    pub method: String,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Use the prompt verbatim instead of wrapping it as a ChatML user turn.
    #[serde(default)]
    pub raw: bool,
    /// 0 for greedy decoding.
    #[serde(default)]
    pub temperature: f64,
    /// Nucleus mass, in (0, 1].
    #[serde(default = "one")]
    pub top_p: f64,
    /// Sampling seed.
    #[serde(default)]
    pub seed: u64,
    /// Strings that end the generation; the text stops right before the first.
    #[serde(default)]
    pub stop: Vec<String>,
}

fn one() -> f64 {
    1.0
}

impl GenerateRequest {
    /// Rejects options that cannot work, before anything runs.
    pub fn sampling(&self) -> Result<Option<Sampling>, WebError> {
        if self.max_tokens == 0 {
            return Err(WebError::new(
                ErrorKind::Options,
                "the token budget must be at least 1",
            ));
        }
        Ok(Sampling::new(
            self.temperature as f32,
            self.top_p as f32,
            self.seed,
        )?)
    }
}

/// What was loaded.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadedInfo {
    /// The model.
    pub model: ModelInfo,
    /// Tokens in the static corpus, if one was loaded.
    pub corpus_tokens: Option<usize>,
    /// Why the static corpus asked for was passed over, where the load allowed that: it
    /// was built with another model's tokenizer.
    pub corpus_skipped: Option<String>,
    /// Whether the model came from the Cache Storage rather than the network.
    pub from_cache: bool,
    /// Wall time of the whole load, the warm-up's included.
    pub load_ms: f64,
    /// What the warm-up ran, if one did.
    pub warm_up: Option<WarmUpInfo>,
}

/// A model's identity and shape.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    /// `general.name`, or the file name.
    pub name: String,
    /// `general.architecture`.
    pub architecture: String,
    /// Transformer blocks.
    pub layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Context length.
    pub context: usize,
}

impl ModelInfo {
    /// Reads the names from `file` and the shape from `config`.
    pub fn new(file: &GgufFile<'_>, config: &LlamaConfig, url: &str) -> Self {
        let file_name = url.rsplit('/').next().unwrap_or(url);
        Self {
            name: file
                .get_str(keys::GENERAL_NAME)
                .map_or_else(|_| file_name.to_owned(), str::to_owned),
            architecture: file.architecture().unwrap_or("unknown").to_owned(),
            layers: config.n_layers,
            hidden: config.d_model,
            vocab: config.vocab_size,
            context: config.context_len,
        }
    }
}

/// One step, as the page renders it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    /// Tokens committed by the step.
    pub tokens: Vec<u32>,
    /// Text that became final with them.
    pub text: String,
    /// The same text cut per token (`pieces[i]` became final with `tokens[i]`; a
    /// character split across tokens lands on its last one), for per-token colouring.
    pub pieces: Vec<String>,
    /// Each token's source: `model`, `dynamic`, `static`, `recycling` or `lookup`.
    pub sources: Vec<&'static str>,
    /// Match length in the dynamic automaton.
    pub dynamic_match: u32,
    /// Match length in the static automaton.
    pub static_match: u32,
    /// Nodes verified.
    pub tree_len: usize,
    /// Drafting time.
    pub draft_us: f64,
    /// Forward pass and readback time.
    pub verify_us: f64,
    /// Milliseconds since the generation started, when the step ended.
    pub at_ms: f64,
    /// Why the generation ended, on its last step.
    pub stop: Option<&'static str>,
    /// The whole text, on the last step.
    pub full_text: Option<String>,
    /// The counters, on the last step.
    pub stats: Option<StatsView>,
}

/// A generation's counters.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsView {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated: usize,
    /// Verification steps after the prefill.
    pub steps: usize,
    /// Mean tokens per step.
    pub mat: f64,
    /// Decode speed after the first token.
    pub tokens_per_s: f64,
    /// Prefill time.
    pub prefill_ms: f64,
    /// Drafting time.
    pub draft_ms: f64,
    /// Forward and readback time.
    pub verify_ms: f64,
    /// Wall time since the request.
    pub total_ms: f64,
    /// Device readbacks: one per prefill chunk and one per step.
    pub readbacks: usize,
    /// `histogram[n]` counts the steps that committed `n` tokens.
    pub histogram: Vec<u64>,
}

impl StepView {
    pub(crate) fn new(event: &StepEvent, run: &mut Run, loaded: &Loaded) -> Result<Self, WebError> {
        let mut pieces = event
            .tokens
            .iter()
            .map(|&id| run.text.push(&loaded.tokenizer, &[id]))
            .collect::<Result<Vec<_>, _>>()?;
        let stop = event
            .stop
            .map(StopReason::name)
            .or_else(|| run.text.stopped().then_some(StopReason::StopString.name()));
        let last = stop.is_some();
        if last {
            let rest = run.text.finish(&loaded.tokenizer)?;
            match pieces.last_mut() {
                Some(piece) => piece.push_str(&rest),
                None if !rest.is_empty() => pieces.push(rest),
                None => {}
            }
        }
        let mut view = Self {
            tokens: event.tokens.clone(),
            text: pieces.concat(),
            pieces,
            sources: event.sources.iter().map(|&s| s.name()).collect(),
            dynamic_match: event.draft.dynamic_match_len,
            static_match: event.draft.static_match_len,
            tree_len: event.tree_len,
            draft_us: event.draft_us as f64,
            verify_us: event.verify_us as f64,
            at_ms: run.started.elapsed().as_secs_f64() * 1e3,
            stop,
            full_text: None,
            stats: None,
        };
        if last {
            view.finish(run, loaded);
        }
        Ok(view)
    }

    /// The last event of a cancelled generation: no tokens, the held-back text.
    pub(crate) fn cancelled(run: &mut Run, loaded: &Loaded) -> Result<Self, WebError> {
        let event = StepEvent {
            tokens: Vec::new(),
            sources: Vec::new(),
            draft: DraftReport::default(),
            tree_len: 0,
            draft_us: 0,
            verify_us: 0,
            stop: Some(StopReason::Cancelled),
        };
        Self::new(&event, run, loaded)
    }

    fn finish(&mut self, run: &Run, loaded: &Loaded) {
        let stats = loaded.session.stats();
        // What was handed out: cut before a stop string, unlike a decode of every id.
        self.full_text = Some(run.text.text().to_owned());
        self.stats = Some(StatsView {
            prompt_tokens: stats.prompt_tokens,
            generated: stats.generated,
            steps: stats.steps,
            mat: stats.mat(),
            tokens_per_s: stats.tokens_per_s(),
            prefill_ms: stats.prefill_us as f64 / 1e3,
            draft_ms: stats.draft_us as f64 / 1e3,
            verify_ms: stats.verify_us as f64 / 1e3,
            total_ms: run.started.elapsed().as_secs_f64() * 1e3,
            readbacks: stats.readbacks,
            histogram: stats.histogram.clone(),
        });
    }
}
