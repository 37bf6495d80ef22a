//! The real model held to numbers made outside this code: the logits and greedy reply of
//! an independent numpy forward of SmolLM2-135M-Instruct Q4_1 in float64
//! (`tests/fixtures/reference_logits.json`, written by `scripts/make-reference-logits.py`).
//!
//! The kernel checks ([`crate::kernel_check`]) hold each backend's fast code to its own
//! slow reference, bit for bit, and a slip in what both compute would pass them. This
//! compares a whole model with the fixture: natively on every backend (the real-model
//! tests), and in the browser through `Engine.checkReference()`, where the CPU backend
//! rounds x to 16 bits per block and sums in integers (`cpu_matmul`), so its logits sit
//! further from the reference than f32 ones do ([`Reference::tolerance`]).

use serde_json::Value;

use crate::KvCache;
use crate::llama::{AncestorMask, Llama, Logits};
use crate::{Error, Result};

/// The fixture: a ChatML prompt, the reference's top-20 logits at each of its positions,
/// and its greedy reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// The sha256 of the GGUF file the reference ran: the other models' logits differ.
    pub model_sha256: String,
    /// The prompt's ids, tokenized by HF `tokenizers` from the GGUF's vocab and merges.
    pub prompt_ids: Vec<u32>,
    /// Per prompt position, the reference's 20 largest logits with their ids.
    pub positions: Vec<Vec<(u32, f32)>>,
    /// The greedy reply's ids, `<|im_end|>` included.
    pub greedy_ids: Vec<u32>,
    /// The greedy reply's text, without `<|im_end|>`.
    pub greedy_text: String,
}

impl Reference {
    /// The fixture built into this crate.
    pub fn bundled() -> Self {
        Self::parse(include_str!("../tests/fixtures/reference_logits.json"))
            .expect("invariant: the bundled fixture parses")
    }

    /// A fixture in `make-reference-logits.py`'s JSON.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |what: &str| Error::InvalidInput {
            what: format!("reference fixture: {what}"),
        };
        let v: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        let ids = |v: &Value, what: &str| -> Result<Vec<u32>> {
            v.as_array()
                .ok_or_else(|| bad(&format!("{what} is not an array")))?
                .iter()
                .map(|x| {
                    x.as_u64()
                        .and_then(|x| u32::try_from(x).ok())
                        .ok_or_else(|| bad(&format!("{what} holds a non-id")))
                })
                .collect()
        };
        let text = |key: &str| {
            v[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("no {key}")))
        };
        let positions = v["positions"]
            .as_array()
            .ok_or_else(|| bad("no positions"))?
            .iter()
            .map(|p| {
                let logits = p["logits"].as_array().ok_or_else(|| bad("no logits"))?;
                let top = ids(&p["ids"], "a position's ids")?;
                if top.len() != logits.len() {
                    return Err(bad("a position's ids and logits differ in length"));
                }
                top.into_iter()
                    .zip(logits)
                    .map(|(id, l)| {
                        Ok((
                            id,
                            l.as_f64().ok_or_else(|| bad("a non-number logit"))? as f32,
                        ))
                    })
                    .collect()
            })
            .collect::<Result<Vec<_>>>()?;
        let prompt_ids = ids(&v["prompt_ids"], "prompt_ids")?;
        if positions.len() != prompt_ids.len() || prompt_ids.is_empty() {
            return Err(bad("not one row of logits per prompt position"));
        }
        Ok(Self {
            model_sha256: text("model_sha256")?,
            prompt_ids,
            positions,
            greedy_ids: ids(&v["greedy_ids"], "greedy_ids")?,
            greedy_text: text("greedy_text")?,
        })
    }

    /// Largest |logit − reference| a backend may show: 1e-3 for f32 arithmetic (over 30
    /// layers its rounding stays far below: 6.4e-5 on the CPU, 1.5e-5 on lavapipe), 0.02
    /// where x is rounded to 16 bits per block (the browser's CPU backend: 6.7e-3 under
    /// V8, where a 1% error in Q4_1's minimum terms, which the kernel check cannot see
    /// since the vector code and its scalar reference share them, showed 2.7).
    pub fn tolerance(model: &Llama) -> f32 {
        if cfg!(target_arch = "wasm32") && !model.on_wgpu() {
            0.02
        } else {
            1e-3
        }
    }

    /// Runs `model` on the prompt as one forward, then greedily for as many tokens as the
    /// reference's reply (a token per forward, as plain decoding runs), and, with
    /// `token_at_a_time`, runs the prompt a token per forward too (on lavapipe each
    /// forward of the real model takes seconds).
    pub async fn compare(&self, model: &Llama, token_at_a_time: bool) -> Result<Comparison> {
        let vocab = model.config().vocab_size;
        let mut ids =
            (self.prompt_ids.iter()).chain(self.positions.iter().flatten().map(|(id, _)| id));
        if ids.any(|&id| id as usize >= vocab) {
            return Err(Error::InvalidInput {
                what: format!("reference fixture: an id beyond this model's {vocab} tokens"),
            });
        }
        let n = self.prompt_ids.len();
        let mut cache = model.new_cache(n + self.greedy_ids.len());
        let positions: Vec<u32> = (0..n as u32).collect();
        let mask = AncestorMask::causal(n);
        let logits = model.forward(&mut cache, &self.prompt_ids, &positions, &mask)?;
        let next = logits.argmax_ids().read().await?;
        let prompt_pass = self.largest_difference(&logits.read().await?, vocab);
        cache.compact(&(0..n).collect::<Vec<_>>())?;

        let mut greedy_ids = next.last().copied().into_iter().collect::<Vec<_>>();
        while greedy_ids.len() < self.greedy_ids.len() {
            let token = greedy_ids[greedy_ids.len() - 1];
            let position = u32::try_from(cache.len()).expect("invariant: a short cache");
            let step = one_token(model, &mut cache, token, position)?;
            greedy_ids.push(step.argmax_ids().read().await?[0]);
        }

        let one_by_one = if token_at_a_time {
            let mut cache = model.new_cache(n);
            let mut rows = Vec::with_capacity(n * vocab);
            for (&token, &position) in self.prompt_ids.iter().zip(&positions) {
                rows.extend(
                    one_token(model, &mut cache, token, position)?
                        .read()
                        .await?,
                );
            }
            Some(self.largest_difference(&rows, vocab))
        } else {
            None
        };
        Ok(Comparison {
            prompt_pass,
            one_by_one,
            greedy_ids,
        })
    }

    /// The largest |logit − reference| over each position's reference ids, `logits` a
    /// row of `vocab` per prompt position; infinite where a logit is NaN.
    fn largest_difference(&self, logits: &[f32], vocab: usize) -> f32 {
        self.positions
            .iter()
            .zip(logits.chunks_exact(vocab))
            .flat_map(|(top, row)| {
                top.iter()
                    .map(|&(id, want)| (row[id as usize] - want).abs())
            })
            .fold(
                0.0,
                |m, d| if d.is_nan() { f32::INFINITY } else { m.max(d) },
            )
    }
}

/// `token` fed at `position` as a one-node step, committed.
fn one_token(model: &Llama, cache: &mut KvCache, token: u32, position: u32) -> Result<Logits> {
    let logits = model.forward(cache, &[token], &[position], &AncestorMask::causal(1))?;
    cache.compact(&[0])?;
    Ok(logits)
}

/// How a model compares with the [`Reference`].
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The largest |logit − reference| over every position's reference top-20, the
    /// prompt run as one forward.
    pub prompt_pass: f32,
    /// The same, the prompt run a token per forward, when asked for.
    pub one_by_one: Option<f32>,
    /// The model's greedy reply, as long as the reference's at most.
    pub greedy_ids: Vec<u32>,
}

impl Comparison {
    /// The larger of the two differences (the prompt's pass alone when it was not run a
    /// token at a time).
    pub fn largest(&self) -> f32 {
        self.one_by_one
            .map_or(self.prompt_pass, |d| d.max(self.prompt_pass))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_fixture_has_a_row_of_top_logits_per_prompt_position() {
        let r = Reference::bundled();
        assert_eq!(r.positions.len(), r.prompt_ids.len());
        assert!(r.positions.iter().all(|top| top.len() == 20));
        assert_eq!(r.greedy_text, "The capital of France is Paris.");
    }

    #[test]
    fn a_malformed_fixture_is_an_error_that_says_what_is_wrong() {
        for (text, what) in [
            ("not json", "reference fixture"),
            ("{}", "no positions"),
            (
                r#"{"positions": [], "prompt_ids": []}"#,
                "one row of logits",
            ),
            (
                r#"{"positions": [{"ids": [1, 2], "logits": [0.5]}], "prompt_ids": [1]}"#,
                "differ in length",
            ),
        ] {
            let err = Reference::parse(text).unwrap_err().to_string();
            assert!(err.contains(what), "{text:?}: {err}");
        }
    }

    #[test]
    fn the_largest_difference_is_over_each_position_s_reference_ids() {
        let r = Reference {
            model_sha256: String::new(),
            prompt_ids: vec![0, 1],
            positions: vec![vec![(0, 1.0)], vec![(2, -1.0)]],
            greedy_ids: Vec::new(),
            greedy_text: String::new(),
        };
        // Rows of 3: the untracked ids may differ by any amount.
        let logits = [1.25, 9.0, 9.0, 9.0, 9.0, -1.5];
        assert_eq!(r.largest_difference(&logits, 3), 0.5);
        let logits = [f32::NAN, 9.0, 9.0, 9.0, 9.0, -1.0];
        assert_eq!(r.largest_difference(&logits, 3), f32::INFINITY);
    }
}
