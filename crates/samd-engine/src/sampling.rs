//! Sampling options, and why speculative sampling needs no rejection loop here.
//!
//! The textbook rule for a deterministic drafter tries a node's children in order,
//! accepting child `x` with probability `p(x)` (renormalised after each rejection), and
//! samples the bonus token from what is left. That is the same as drawing one token `y`
//! from `p` at the node and following the child equal to `y`, if there is one, with `y`
//! the bonus token otherwise: child `c_j` is reached with probability
//! `Π_{i<j}(1 - p(c_i)/R_i) · p(c_j)/R_j = p(c_j)` (with `R_i` the mass left before trying
//! `c_i`), and a non-child `y` with `(1 - Σ p(c)) · p(y)/(1 - Σ p(c)) = p(y)`. So a sampling
//! step is the greedy acceptance walk with each node's argmax replaced by a draw, and
//! every committed token is an exact draw from the model given its prefix.

use crate::Error;

/// Temperature sampling with a top-p nucleus.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Softmax temperature, > 0.
    pub temperature: f32,
    /// Nucleus mass, in (0, 1]; 1 keeps the whole vocabulary.
    pub top_p: f32,
    /// Seeds the draws' noise, which is keyed by position: the same seed draws the same
    /// tokens whatever the method ([`samd_model::sampler`]).
    pub seed: u64,
}

impl Sampling {
    /// The sampling for `temperature` (0 means greedy decoding: `None`), checked.
    pub fn new(temperature: f32, top_p: f32, seed: u64) -> Result<Option<Self>, Error> {
        check_values(temperature, top_p)?;
        Ok((temperature > 0.0).then_some(Self {
            temperature,
            top_p,
            seed,
        }))
    }

    /// Rejects values no draw can use. The fields are public, so the session checks
    /// again whatever it is handed.
    pub fn check(&self) -> Result<(), Error> {
        if self.temperature == 0.0 {
            return Err(Error::Options {
                what: "a temperature of 0 is greedy decoding: pass no sampling",
            });
        }
        check_values(self.temperature, self.top_p)
    }
}

fn check_values(temperature: f32, top_p: f32) -> Result<(), Error> {
    if temperature.is_nan() || temperature < 0.0 || temperature.is_infinite() {
        return Err(Error::Options {
            what: "the temperature must be a finite number ≥ 0",
        });
    }
    if top_p.is_nan() || top_p <= 0.0 || top_p > 1.0 {
        return Err(Error::Options {
            what: "top-p must be in (0, 1]",
        });
    }
    Ok(())
}
