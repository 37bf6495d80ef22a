//! Greedy decoding of one ChatML prompt, one forward per token, with timings.
//!
//! ```text
//! cargo run --release -p samd-model --example greedy -- [MODEL.gguf] [MAX_NEW] [cpu|wgpu] [PROMPT]
//! ```
//!
//! Measures the plain autoregressive baseline on the chosen device: prefill time, then decode
//! tokens/s with one small id readback per token. It does not stop at `<|im_end|>` unless the
//! model emits it; pass a larger MAX_NEW for a longer timing run. Environment:
//! `SAMD_CACHE_LEN` (cache capacity), `SAMD_TOP_K` (ids per node in the verify timings).

use std::time::Instant;

use burn::tensor::{Device, read_sync};
use samd_model::{AncestorMask, GgufFile, Llama, Tokenizer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .unwrap_or_else(|| "models/SmolLM2-135M-Instruct.Q4_1.gguf".into());
    let max_new: usize = args.next().map_or(Ok(64), |s| s.parse())?;
    let device = match args.next().as_deref() {
        None | Some("cpu") => Device::flex(),
        Some("wgpu") => Device::wgpu_options().init()?,
        Some(other) => return Err(format!("unknown device {other:?}: use cpu or wgpu").into()),
    };
    let user = args
        .next()
        .unwrap_or_else(|| "What is the capital of France? Answer in one sentence.".into());

    let bytes = std::fs::read(&path)?;
    let t = Instant::now();
    let file = GgufFile::parse(&bytes)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let model = Llama::from_gguf(&file, &device)?;
    println!("loaded {path} in {:.2} s", t.elapsed().as_secs_f64());

    let prompt = tokenizer.encode(&tokenizer.chat_prompt(&user)?)?;
    // SAMD_CACHE_LEN sizes the cache like a real session would (default: just enough), to
    // check that per-step cost does not grow with capacity.
    let capacity = match std::env::var("SAMD_CACHE_LEN") {
        Ok(s) => s.parse()?,
        Err(_) => prompt.len() + max_new + 1,
    };
    let mut cache = model.new_cache(capacity);
    let positions: Vec<u32> = (0..prompt.len() as u32).collect();
    let t = Instant::now();
    let logits = model.forward(
        &mut cache,
        &prompt,
        &positions,
        &AncestorMask::causal(prompt.len()),
    )?;
    cache.compact(&(0..prompt.len()).collect::<Vec<_>>())?;
    let ids = read_sync(logits.argmax_ids().read())?;
    let prefill_s = t.elapsed().as_secs_f64();
    let mut next = *ids.last().ok_or("empty prompt")?;
    let mut out = vec![next];
    let t = Instant::now();
    while out.len() < max_new && Some(next) != tokenizer.im_end_id() {
        let pos = [cache.len() as u32];
        let logits = model.forward(&mut cache, &[next], &pos, &AncestorMask::causal(1))?;
        cache.compact(&[0])?;
        next = read_sync(logits.argmax_ids().read())?[0];
        out.push(next);
    }
    let decode_s = t.elapsed().as_secs_f64();
    let steps = out.len() - 1;
    println!(
        "prefill {} tokens in {:.3} s; decoded {steps} tokens in {:.3} s = {:.1} tok/s",
        prompt.len(),
        prefill_s,
        decode_s,
        steps as f64 / decode_s.max(1e-9)
    );
    println!("reply: {:?}", tokenizer.decode(&out)?);

    // Cost of one verify step against the current context, by tree size: what a draft of
    // N nodes costs relative to one plain decode step (N = 1). The nodes are a chain; the
    // pending slots are dropped afterwards.
    let len = cache.len();
    // SAMD_TOP_K: ids per node read back (8 = Token Recycling's table; 1 = argmax only).
    let k: usize = std::env::var("SAMD_TOP_K").map_or(Ok(8), |s| s.parse())?;
    for n in [1usize, 4, 16, 32, 64] {
        if cache.capacity() < len + n {
            break;
        }
        let tokens = vec![next; n];
        let positions: Vec<u32> = (0..n as u32).map(|i| len as u32 + i).collect();
        let reps = 5;
        let t = Instant::now();
        for _ in 0..reps {
            let logits =
                model.forward(&mut cache, &tokens, &positions, &AncestorMask::causal(n))?;
            read_sync(logits.top_k_ids(k).read())?;
            cache.truncate(len);
        }
        println!(
            "verify {n:>2} nodes at context {len}: {:.2} ms/step (forward + top-{k} ids)",
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
    }
    Ok(())
}
