//! Command-line arguments, declared with clap's derive API so the help text and the
//! parsing live in one place.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use samd_engine::bench::StepCosts;
use samd_engine::{Method, Sampling, TreePolicy};

/// The model `scripts/fetch-model.sh` puts in place, relative to the repository root.
pub const DEFAULT_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// samd: SAM speculative decoding for small Llama-family GGUF models.
#[derive(Debug, Parser)]
#[command(name = "samd", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Greedy (argmax) generation, streamed to stdout, with timings on stderr.
    Generate(GenerateArgs),
    /// Run every method on the same prompts and print per-category tables.
    Bench(BenchArgs),
    /// Time one verification step by tree size (1 to 128 nodes) on the chosen device.
    Profile(ProfileArgs),
    /// Print a model file's architecture, config, tensors and load-time breakdown.
    InspectModel(InspectArgs),
    /// Write a copy of a model with only its first layers (a fast model for tests).
    ShrinkModel(ShrinkArgs),
    /// Check that tree steps give plain decoding's logits bit for bit on this machine's
    /// wgpu adapter (with the WGSL kernels against burn's ops) or its CPU.
    CheckKernels(CheckArgs),
    /// Hold the default model's logits and greedy reply on this device to an independent
    /// numpy forward (the fixture of the real-model tests), or another model's to one that
    /// `scripts/make-reference-logits.py MODEL OUT` wrote.
    CheckReference(ReferenceArgs),
    /// Static corpus tools.
    #[command(subcommand)]
    Corpus(CorpusCommand),
}

/// `samd corpus …`.
#[derive(Debug, Subcommand)]
pub enum CorpusCommand {
    /// Generate the model's own answers to training prompts (GSM8K train, self-instruct
    /// seeds, HumanEval) and write them as a static suffix-automaton corpus.
    Build(CorpusBuildArgs),
}

/// The default static corpus, committed and served to the browser demo.
pub const DEFAULT_CORPUS: &str = "web/corpus/default.samdcorp";

/// The static corpus the SAM methods draft from.
#[derive(Debug, Clone, Args)]
pub struct CorpusArgs {
    /// Static corpus file (`samd corpus build` makes one). The default is used when it
    /// exists; a path given explicitly must exist.
    #[arg(long, value_name = "PATH")]
    pub corpus: Option<PathBuf>,
    /// Draft from the prompt and the output only, without a static corpus.
    #[arg(long, conflicts_with = "corpus")]
    pub no_corpus: bool,
}

/// Which drafted nodes each step verifies.
#[derive(Debug, Clone, Copy, Args)]
pub struct TreeArgs {
    /// `adaptive` keeps the drafted nodes worth their measured cost on this device, `full`
    /// every node the drafter proposed.
    #[arg(long = "tree", value_name = "POLICY", default_value = "adaptive",
          value_parser = parse_tree_policy)]
    pub policy: TreePolicy,
}

/// `samd corpus build`.
#[derive(Debug, Args)]
pub struct CorpusBuildArgs {
    /// The folder with gsm8k-train.jsonl, selfinstruct-seed-tasks.jsonl,
    /// HumanEval.jsonl.gz and specbench-dev.jsonl (whose prompts are kept out).
    #[arg(long, value_name = "DIR", default_value = "../shared/data")]
    pub data: PathBuf,
    /// Where to write the corpus (rewritten every 25 prompts, so a cut run leaves one).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CORPUS)]
    pub out: PathBuf,
    /// Prompts to answer, taken in turn from each source.
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub limit: usize,
    /// Keep the answers already in `--out` as the first prompts' answers (prompts come
    /// in the same order at any `--limit`) and answer only the rest: a long build goes
    /// on where a cut one stopped.
    #[arg(long)]
    pub resume: bool,
    /// Most tokens per answer.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,
    /// Decoding method (greedy, so every method writes the same answers).
    #[arg(long, default_value = "ar", value_parser = parse_method)]
    pub method: Method,
    /// Which drafted nodes each step verifies.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Model file and device.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceKind {
    /// burn's CPU backend (flex).
    Cpu,
    /// burn's wgpu backend on native Vulkan (a GPU, or Mesa's lavapipe without one).
    Wgpu,
}

impl DeviceKind {
    /// The name used in messages and in `--json` output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
        }
    }
}

/// `samd check-kernels`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The device to check.
    #[arg(long, value_enum, default_value_t = DeviceKind::Wgpu)]
    pub device: DeviceKind,
}

/// `samd check-reference`.
#[derive(Debug, Args)]
pub struct ReferenceArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// The reference to hold the model to, as `scripts/make-reference-logits.py MODEL OUT`
    /// writes it for MODEL (default: the one built in, for the default model).
    #[arg(long, value_name = "FILE")]
    pub fixture: Option<PathBuf>,
}

/// Options shared by every subcommand that loads a model.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The GGUF model file.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// The device to run the model on.
    #[arg(long, value_enum, default_value_t = DeviceKind::Cpu)]
    pub device: DeviceKind,
    /// On wgpu, issue every verify step's kernels one by one instead of replaying a
    /// captured graph of them: for comparisons.
    #[arg(long)]
    pub no_graphs: bool,
    /// Widen the matrices to f32 at load instead of keeping the file's quantised blocks
    /// alone (on a CPU, beside them, for a prompt's products): for comparisons.
    #[arg(long)]
    pub f32_weights: bool,
}

/// `samd generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The prompt: one user turn, wrapped in the ChatML template unless `--raw`. Turn
    /// markers written in it stay text: only `--raw` reads them as control tokens.
    #[arg(
        required_unless_present = "prompt_file",
        conflicts_with = "prompt_file"
    )]
    pub prompt: Option<String>,
    /// Read the prompt from this file instead (UTF-8).
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Feed the prompt to the model verbatim, without the chat template, with any turn
    /// markers in it (`<|im_start|>`) read as control tokens.
    #[arg(long)]
    pub raw: bool,
    /// Stop after this many generated tokens.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,
    /// Print one JSON object (ids, text, stop reason, timings) instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Decoding method: ar, pld, sam, tr or sam+tr. Every method gives the same greedy text.
    #[arg(long, default_value = "ar", value_parser = parse_method)]
    pub method: Method,
    /// Which drafted nodes each step verifies.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Greedy decoding, or sampling.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Stop when the text contains this string (repeatable); the string is not printed.
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Static corpus.
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// Model file and device.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// clap's parser for [`TreePolicy`].
pub fn parse_tree_policy(s: &str) -> Result<TreePolicy, String> {
    TreePolicy::parse(s).ok_or_else(|| format!("unknown tree policy {s:?}: use adaptive or full"))
}

/// clap's parser for [`Method`], with the engine's error message.
pub fn parse_method(s: &str) -> Result<Method, String> {
    s.parse().map_err(|e: samd_engine::Error| e.to_string())
}

impl GenerateArgs {
    /// The prompt text, from the argument or the file. An empty (or all-whitespace)
    /// prompt is an error here, before the model is read, so the mistake costs nothing.
    pub fn prompt_text(&self) -> Result<String> {
        let text = match (&self.prompt, &self.prompt_file) {
            (Some(text), _) => text.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("reading prompt file {}", path.display()))?,
            (None, None) => bail!("no prompt: give one as an argument or with --prompt-file"),
        };
        if text.trim().is_empty() {
            bail!("empty prompt: nothing to generate from");
        }
        Ok(text)
    }
}

/// `samd bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Spec-Bench-style prompts (JSONL with `question_id`, `category`, `turns`).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "../shared/data/specbench-dev.jsonl"
    )]
    pub prompts: PathBuf,
    /// Methods to compare, comma-separated; AR always runs first as the baseline.
    #[arg(long, value_delimiter = ',', default_value = "ar,pld,sam,tr,sam+tr",
          value_parser = parse_method)]
    pub methods: Vec<Method>,
    /// Which drafted nodes each step verifies.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Most tokens per generation.
    #[arg(long, value_name = "N", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens: u32,
    /// Prompts per category (0: all).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub per_category: usize,
    /// Write per prompt × method records (ids, steps, MAT, times) here as JSON.
    #[arg(long, value_name = "OUT")]
    pub json: Option<PathBuf>,
    /// Write the AR runs as traces (JSONL) for `--replay`.
    #[arg(long, value_name = "OUT")]
    pub save_traces: Option<PathBuf>,
    /// With `--save-traces`: AR also reads back its top K ids after every position, so
    /// that Token Recycling replays (0: tokens only). AR's timings then include that.
    #[arg(long, value_name = "K", default_value_t = 8)]
    pub trace_top_k: usize,
    /// Replay drafters on recorded AR traces instead of running the model: MAT only, in
    /// seconds on a CPU. Each step verifies the likeliest drafted nodes that a run with
    /// these `--device` and `--max-tokens` would take (as under `--tree full`).
    #[arg(long, value_name = "TRACES")]
    pub replay: Option<PathBuf>,
    /// With `--replay`: stand for a device whose verify step of N nodes takes the given
    /// milliseconds (`nodes:ms` pairs from 1 node up, linear between them: say
    /// `1:6.36,2:7.71,16:12.32,64:26.51`, an H200's by `samd profile --sizes`). Each step
    /// then verifies what the adaptive tree budget keeps on that device (whose steps pad
    /// to powers of two with `--device wgpu`), and the tables give simulated speedups.
    #[arg(long, value_name = "COSTS", requires = "replay")]
    pub step_costs: Option<StepCosts>,
    /// Static corpus.
    #[command(flatten)]
    pub corpus: CorpusArgs,
    /// Model file and device.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// How the next token is picked: greedily, or drawn.
#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// Sampling temperature; 0 decodes greedily. Speculative methods keep the model's
    /// distribution exactly.
    #[arg(long, value_name = "T", default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus (top-p) mass for sampling, in (0, 1].
    #[arg(long, value_name = "P", default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampling draws.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The sampling asked for, checked; `None` for greedy decoding.
    pub fn sampling(&self) -> Result<Option<Sampling>> {
        Ok(Sampling::new(self.temperature, self.top_p, self.seed)?)
    }
}

/// `samd profile`.
#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// Committed positions in the cache before each timed step.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub context: usize,
    /// Timed steps per tree size (the median is printed).
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub reps: u32,
    /// Ids read back per node (8: what Token Recycling needs; 1: argmax only).
    #[arg(long, value_name = "K", default_value_t = 8)]
    pub top_k: usize,
    /// Also time a prefill of N prompt tokens into an empty cache (0: skip). Slow off a
    /// GPU: a 1,000-token prefill takes seconds on a CPU and minutes on lavapipe.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub prefill: usize,
    /// Tree sizes to time, in nodes.
    #[arg(long, value_name = "N,...", value_delimiter = ',',
          default_values_t = [1, 2, 4, 8, 16, 32, 64, 128],
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub sizes: Vec<u32>,
    /// Also time every kernel on the device (wgpu's timestamp queries), for one step of
    /// each size and for the prefill: where a step's time goes, and how long the device
    /// sits idle between kernels.
    #[arg(long)]
    pub kernel_times: bool,
    /// Time sampling steps (each node's next token drawn on the device) instead of
    /// greedy ones.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Model file and device.
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `samd inspect-model`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Model file and device (the device the weights are uploaded to when timing the load).
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `samd shrink-model`.
#[derive(Debug, Args)]
pub struct ShrinkArgs {
    /// The GGUF model to copy.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Blocks to keep, from the first.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub layers: u32,
    /// Where to write the copy.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
}
