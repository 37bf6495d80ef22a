//! `samd generate`: greedy decoding with any method, streamed or as one JSON object.
//!
//! The decoding itself is the engine's ([`samd_engine::Session`]); this file keeps the
//! prompt handling and the output. Every method's greedy output equals plain AR's, so
//! `--method` changes the speed and the stats, never the text.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::tensor::read_sync;
use samd_draft::corpus::StaticSam;
use samd_engine::{
    GenerateOptions, Method, ModelTarget, Sampling, Session, Stats, StopReason, TextStream,
    TreePolicy,
};
use samd_model::Llama;

use crate::args::GenerateArgs;
use crate::load::{LoadTimings, ModelBytes, init_device, load_corpus, timed};

/// What a generation produced, with the engine's counters.
#[derive(Debug, Clone)]
pub struct Output {
    /// Generated ids, the stopping end token excluded.
    pub generated_ids: Vec<u32>,
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// Counters: prefill and step times, steps, MAT.
    pub stats: Stats,
}

/// What to decode and how.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The prompt's ids.
    pub prompt_ids: &'a [u32],
    /// Decoding method.
    pub method: Method,
    /// Which drafted nodes each step verifies.
    pub tree: TreePolicy,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Ids that end the generation.
    pub stop_ids: Vec<u32>,
    /// `None` decodes greedily.
    pub sampling: Option<Sampling>,
    /// The static corpus of the SAM methods.
    pub corpus: Option<Arc<StaticSam>>,
}

/// Decodes `request` on the engine, calling `on_tokens` with each step's new ids (for
/// streaming). `on_tokens` returns true to stop there (a stop string appeared).
pub fn decode(
    model: Llama,
    request: &Request<'_>,
    mut on_tokens: impl FnMut(&[u32]) -> Result<bool>,
) -> Result<Output> {
    let vocab = u32::try_from(model.config().vocab_size).context("vocabulary beyond u32")?;
    // The last generated token is never fed back, so this many slots always suffice.
    let capacity = request.prompt_ids.len() + request.max_tokens + 1;
    let mut session = Session::new(
        ModelTarget::new(model, capacity),
        request.method.drafter(vocab, request.corpus.clone())?,
    );
    session.set_tree_policy(request.tree);
    let options = GenerateOptions {
        max_new_tokens: request.max_tokens,
        stop_ids: request.stop_ids.clone(),
        sampling: request.sampling,
    };
    let mut generated = Vec::new();
    let mut event = read_sync(session.start(request.prompt_ids, options))?;
    let stop_reason = loop {
        generated.extend_from_slice(&event.tokens);
        if on_tokens(&event.tokens)? {
            session.cancel();
            break StopReason::StopString;
        }
        if let Some(stop) = event.stop {
            break stop;
        }
        event = read_sync(session.step())?;
    };
    Ok(Output {
        generated_ids: generated,
        stop_reason,
        stats: session.stats().clone(),
    })
}

/// Time of the steps after the prefill, in milliseconds.
fn decode_ms(stats: &Stats) -> f64 {
    (stats.draft_us + stats.verify_us) as f64 / 1e3
}

/// Runs the subcommand.
pub fn run(args: &GenerateArgs) -> Result<()> {
    let text = args.prompt_text()?;
    let mut load = LoadTimings::default();
    let (device, ms) = timed(|| init_device(args.model.device));
    let device = device?;
    load.device_ms = ms;
    let (model_bytes, ms) = timed(|| ModelBytes::read(&args.model.model));
    let model_bytes = model_bytes?;
    load.read_ms = ms;
    let (file, ms) = timed(|| model_bytes.parse());
    let file = file?;
    load.parse_ms = ms;
    let config = model_bytes.config(&file)?;
    let (tokenizer, ms) = timed(|| model_bytes.tokenizer(&file));
    let tokenizer = tokenizer?;
    load.tokenizer_ms = ms;

    let prompt_ids = if args.raw {
        tokenizer.encode_prompt(&text)?
    } else {
        tokenizer.encode_chat(&text)?
    };
    if prompt_ids.is_empty() {
        bail!("empty prompt: it encodes to no tokens");
    }
    if prompt_ids.len() >= config.context_len {
        bail!(
            "prompt too long: {} tokens, but the model's context holds {} (prompt and \
             output together)",
            prompt_ids.len(),
            config.context_len
        );
    }
    // Checked above, before the slowest stage.
    let (model, ms) = timed(|| model_bytes.weights(&file, &device, &args.model));
    let model = model?;
    load.weights_ms = ms;
    drop(file);
    drop(model_bytes);

    let stop_ids = tokenizer.stop_ids();
    let request = Request {
        prompt_ids: &prompt_ids,
        method: args.method,
        tree: args.tree.policy,
        max_tokens: args.max_tokens as usize,
        stop_ids,
        sampling: args.sampling.sampling()?,
        corpus: load_corpus(&args.corpus, &tokenizer)?,
    };
    let mut stream = TextStream::with_stops(args.stop.iter().cloned());
    let mut stdout = std::io::stdout().lock();
    let out = decode(model, &request, |ids| {
        let delta = stream.push(&tokenizer, ids)?;
        if !args.json {
            stdout.write_all(delta.as_bytes())?;
            stdout.flush()?;
        }
        Ok(stream.stopped())
    })?;
    let rest = stream.finish(&tokenizer)?;
    let text = stream.text();

    if args.json {
        let report = serde_json::json!({
            "prompt_ids": prompt_ids,
            "generated_ids": out.generated_ids,
            "text": text,
            "stop_reason": out.stop_reason.name(),
            "device": args.model.device.name(),
            "method": args.method.name(),
            "steps": out.stats.steps,
            "mat": out.stats.mat(),
            "timings": {
                "load": load.to_json(),
                "prefill_ms": out.stats.prefill_us as f64 / 1e3,
                "prefill_tokens": prompt_ids.len(),
                "decode_ms": decode_ms(&out.stats),
                "decode_tokens": out.stats.generated.saturating_sub(1),
                "decode_tok_per_s": out.stats.tokens_per_s(),
                "draft_ms": out.stats.draft_us as f64 / 1e3,
            },
        });
        writeln!(stdout, "{report}")?;
        return Ok(());
    }
    writeln!(stdout, "{rest}")?;
    eprintln!(
        "[{} {}] load {:.0} ms (device {:.0}, read {:.0}, parse {:.0}, tokenizer {:.0}, \
         weights {:.0}); prefill {} tokens in {:.0} ms; decode {} tokens in {:.0} ms = \
         {:.1} tok/s, {} steps, MAT {:.2}; stop: {}",
        args.model.device.name(),
        args.method.name(),
        load.total_ms(),
        load.device_ms,
        load.read_ms,
        load.parse_ms,
        load.tokenizer_ms,
        load.weights_ms,
        prompt_ids.len(),
        out.stats.prefill_us as f64 / 1e3,
        out.stats.generated.saturating_sub(1),
        decode_ms(&out.stats),
        out.stats.tokens_per_s(),
        out.stats.steps,
        out.stats.mat(),
        out.stop_reason.name()
    );
    Ok(())
}
