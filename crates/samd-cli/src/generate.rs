//! `samd generate`: plain autoregressive greedy decoding, streamed or as one JSON object.
//!
//! This is the AR baseline every speculative method is measured against and must match
//! token for token, so it is kept as small as it can be: one forward per token, argmax on
//! the device, and only the argmax ids read back ([`greedy_ar`]). The decoding loop is
//! meant to move into `samd-engine`; then this file keeps only the prompt handling and
//! the output.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::read_sync;
use samd_model::{AncestorMask, Llama};

use crate::args::GenerateArgs;
use crate::load::{LoadTimings, ModelBytes, init_device, timed};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model emitted an end token (EOS or `<|im_end|>`).
    Eos,
    /// `--max-tokens` tokens were generated.
    MaxTokens,
    /// Prompt plus output filled the model's context.
    Context,
}

impl StopReason {
    /// The name used in messages and `--json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Eos => "eos",
            Self::MaxTokens => "max_tokens",
            Self::Context => "context",
        }
    }
}

/// What [`greedy_ar`] produced, with its timings.
#[derive(Debug, Clone)]
pub struct ArOutput {
    /// Generated ids, without the end token that stopped generation (so that decoding
    /// them gives the reply without a trailing `<|im_end|>`).
    pub generated_ids: Vec<u32>,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// Prefill forward over the whole prompt plus the readback of its argmax.
    pub prefill_ms: f64,
    /// All single-token decode steps, streaming callback included.
    pub decode_ms: f64,
    /// Number of single-token forwards after prefill (each yields one token, the end token
    /// included).
    pub decode_steps: usize,
}

impl ArOutput {
    /// Decode throughput: tokens from single-token forwards per second.
    pub fn decode_tok_per_s(&self) -> f64 {
        if self.decode_ms > 0.0 {
            self.decode_steps as f64 / (self.decode_ms / 1e3)
        } else {
            0.0
        }
    }
}

/// Plain autoregressive greedy decoding: prefill the prompt, then one forward per token,
/// each reading back only the argmax id.
///
/// Stops before `max_tokens` generated tokens when the model emits one of `stop_ids`
/// (the end token is not included in the output), or when prompt plus output reach the
/// model's context length. `on_token` sees the whole generated list after each new token,
/// for streaming. The prompt must be non-empty and shorter than the context.
pub fn greedy_ar(
    model: &Llama,
    prompt_ids: &[u32],
    max_tokens: usize,
    stop_ids: &[u32],
    mut on_token: impl FnMut(&[u32]) -> Result<()>,
) -> Result<ArOutput> {
    let context_len = model.config().context_len;
    let n_prompt = prompt_ids.len();
    if n_prompt == 0 || n_prompt >= context_len {
        bail!(
            "prompt of {n_prompt} tokens: need 1 to {} tokens",
            context_len - 1
        );
    }
    // The last generated token is never fed back, so this many slots always suffice.
    let mut cache = model.new_cache(context_len.min(n_prompt + max_tokens));

    let start = Instant::now();
    let positions: Vec<u32> = (0..n_prompt)
        .map(|p| u32::try_from(p).context("prompt position beyond u32"))
        .collect::<Result<_>>()?;
    let logits = model.forward(
        &mut cache,
        prompt_ids,
        &positions,
        &AncestorMask::causal(n_prompt),
    )?;
    cache.compact(&(0..n_prompt).collect::<Vec<_>>())?;
    // One id per prompt position comes back (n_prompt × 4 bytes); only the last is used.
    let ids = read_sync(logits.argmax_ids().read())?;
    let mut next = *ids.last().context("prefill returned no ids")?;
    let prefill_ms = start.elapsed().as_secs_f64() * 1e3;

    let start = Instant::now();
    let mut generated = Vec::new();
    let mut decode_steps = 0;
    let stop_reason = loop {
        if stop_ids.contains(&next) {
            break StopReason::Eos;
        }
        generated.push(next);
        on_token(&generated)?;
        if generated.len() >= max_tokens {
            break StopReason::MaxTokens;
        }
        if n_prompt + generated.len() >= context_len {
            break StopReason::Context;
        }
        let position = u32::try_from(cache.len()).context("position beyond u32")?;
        let logits = model.forward(&mut cache, &[next], &[position], &AncestorMask::causal(1))?;
        cache.compact(&[0])?;
        let ids = read_sync(logits.argmax_ids().read())?;
        next = *ids.first().context("decode step returned no id")?;
        decode_steps += 1;
    };
    Ok(ArOutput {
        generated_ids: generated,
        stop_reason,
        prefill_ms,
        decode_ms: start.elapsed().as_secs_f64() * 1e3,
        decode_steps,
    })
}

/// The part of `full` that can be printed after `printed_len` bytes were already printed.
///
/// The tokenizer decodes byte-level BPE with lossy UTF-8, so a multi-byte character split
/// across tokens shows up as trailing U+FFFD until its last byte arrives. Holding back
/// trailing U+FFFD keeps every printed prefix final; whatever is held back at the end is
/// printed then.
fn stable_suffix(full: &str, printed_len: usize) -> &str {
    let stable = full.trim_end_matches('\u{FFFD}');
    stable.get(printed_len..).unwrap_or("")
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

    let prompt = if args.raw {
        text
    } else {
        tokenizer.chat_prompt(&text)?
    };
    let prompt_ids = tokenizer.encode(&prompt)?;
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
    let (model, ms) = timed(|| model_bytes.weights(&file, &device));
    let model = model?;
    load.weights_ms = ms;
    drop(file);
    drop(model_bytes);

    let mut stop_ids = vec![tokenizer.eos_id()];
    stop_ids.extend(tokenizer.im_end_id());
    let mut printed_len = 0;
    let mut stdout = std::io::stdout().lock();
    let out = greedy_ar(
        &model,
        &prompt_ids,
        args.max_tokens as usize,
        &stop_ids,
        |ids| {
            if !args.json {
                let full = tokenizer.decode(ids)?;
                let new = stable_suffix(&full, printed_len);
                stdout.write_all(new.as_bytes())?;
                stdout.flush()?;
                printed_len += new.len();
            }
            Ok(())
        },
    )?;
    let text = tokenizer.decode(&out.generated_ids)?;

    if args.json {
        let report = serde_json::json!({
            "prompt_ids": prompt_ids,
            "generated_ids": out.generated_ids,
            "text": text,
            "stop_reason": out.stop_reason.name(),
            "device": args.model.device.name(),
            "timings": {
                "load": load.to_json(),
                "prefill_ms": out.prefill_ms,
                "prefill_tokens": prompt_ids.len(),
                "decode_ms": out.decode_ms,
                "decode_tokens": out.decode_steps,
                "decode_tok_per_s": out.decode_tok_per_s(),
            },
        });
        writeln!(stdout, "{report}")?;
        return Ok(());
    }
    writeln!(stdout, "{}", text.get(printed_len..).unwrap_or(""))?;
    eprintln!(
        "[{}] load {:.0} ms (device {:.0}, read {:.0}, parse {:.0}, tokenizer {:.0}, \
         weights {:.0}); prefill {} tokens in {:.0} ms; decode {} tokens in {:.0} ms = \
         {:.1} tok/s; stop: {}",
        args.model.device.name(),
        load.total_ms(),
        load.device_ms,
        load.read_ms,
        load.parse_ms,
        load.tokenizer_ms,
        load.weights_ms,
        prompt_ids.len(),
        out.prefill_ms,
        out.decode_steps,
        out.decode_ms,
        out.decode_tok_per_s(),
        out.stop_reason.name()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_suffix_holds_back_split_characters() {
        assert_eq!(stable_suffix("Paris", 0), "Paris");
        assert_eq!(stable_suffix("Paris", 3), "is");
        assert_eq!(stable_suffix("caf\u{FFFD}", 0), "caf");
        assert_eq!(stable_suffix("caf\u{FFFD}", 3), "");
        assert_eq!(stable_suffix("café", 3), "é");
        assert_eq!(stable_suffix("", 0), "");
    }
}
