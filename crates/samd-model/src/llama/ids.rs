//! What a forward leaves on the device, logits and the ids taken from them, and how the
//! ids come back to the host: one small readback per step.

use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::sampler::{self, Draw, DrawBuffers};

/// Logits of the last forward, on the device: `[n_nodes, vocab]`.
#[derive(Debug, Clone)]
pub struct Logits {
    pub(super) tensor: Tensor<2>,
}

impl Logits {
    /// The raw tensor, `[n_nodes, vocab]`.
    pub fn tensor(&self) -> &Tensor<2> {
        &self.tensor
    }

    /// Number of nodes (rows).
    pub fn n_nodes(&self) -> usize {
        self.tensor.dims()[0]
    }

    /// The argmax id of each node, computed on the device: `[n_nodes, 1]`.
    ///
    /// The top-1 of [`crate::top_k`]: on wgpu its kernel, since burn's `argmax` over a
    /// 49k-wide row cost about 2 ms more per step on an H200 (prompt lookup's one-node
    /// steps, which read the argmax, ran at 7.7 ms where AR's, reading the top-8 through
    /// the kernel, ran at 5.7 ms); elsewhere burn's `argmax`.
    pub fn argmax_ids(&self) -> TokenIds {
        self.top_k_ids(1)
    }

    /// The `k` best ids of each node, best first, computed on the device: `[n_nodes, k]`.
    /// Column 0 is the argmax, so one readback serves both verification and Token Recycling.
    /// On wgpu this is one launch of our WGSL kernel ([`crate::top_k`]).
    pub fn top_k_ids(&self, k: usize) -> TokenIds {
        TokenIds::new(crate::top_k::top_k_ids(self.tensor.clone(), k))
    }

    /// One id per node drawn as `draw` says, on the device: `[n_nodes, 1]`, with node
    /// `i` at `positions[i]` ([`crate::sampler`]: Gumbel-max over a top-p nucleus, the
    /// noise hashed from the draw's seed and the node's position).
    pub fn sample_ids(&self, draw: &Draw, positions: &[u32]) -> Result<TokenIds> {
        draw.check()?;
        if positions.len() != self.n_nodes() {
            return Err(Error::InvalidInput {
                what: format!(
                    "{} positions for {} rows of logits",
                    positions.len(),
                    self.n_nodes()
                ),
            });
        }
        sampler::sample_ids(self.tensor.clone(), draw, positions, None)
    }

    /// Reads the logits back (tests and debugging; the decode loop reads ids only).
    pub async fn read(self) -> Result<Vec<f32>> {
        floats_read(self.tensor.into_data_async().await)
    }
}

/// The f32 values of a readback, or an error that says why there are none.
pub(crate) fn floats_read(
    data: std::result::Result<TensorData, impl std::fmt::Display>,
) -> Result<Vec<f32>> {
    let data = data.map_err(|e| Error::Readback {
        reason: e.to_string(),
    })?;
    data.try_into_vec_as::<f32>().map_err(|e| Error::Readback {
        reason: format!("{e:?}"),
    })
}

/// What a verify step reads back per node: its next token (the argmax, or a draw with
/// `draw`: how, at which positions, and those on the device if they are there already)
/// and, when `k > 1` or sampling with `k > 0`, its `k` best ids; one readback holds both.
pub(super) fn step_ids(
    logits: &Logits,
    k: usize,
    draw: Option<(&Draw, &[u32], Option<DrawBuffers>)>,
) -> Result<TokenIds> {
    Ok(match draw {
        None if k <= 1 => logits.argmax_ids(),
        None => logits.top_k_ids(k),
        Some((draw, positions, on_device)) => {
            let draws = sampler::sample_ids(logits.tensor.clone(), draw, positions, on_device)?;
            match k {
                0 => draws,
                k => draws.join(logits.top_k_ids(k)),
            }
        }
    })
}

/// Token ids on the device, `[n_nodes, k]`, waiting to be read back.
#[derive(Debug, Clone)]
pub struct TokenIds {
    tensor: Tensor<2, Int>,
    /// The rows read back: the first `rows` of `tensor`, whose other rows are a padded
    /// step's padding ([`crate::step_graph`]).
    rows: usize,
}

impl TokenIds {
    /// Ids computed elsewhere in this crate ([`crate::top_k`]), to be read back the same way.
    pub(crate) fn new(tensor: Tensor<2, Int>) -> Self {
        let rows = tensor.dims()[0];
        Self { tensor, rows }
    }

    /// These ids' first `rows` rows, cut on the host when read.
    pub(crate) fn first_rows(self, rows: usize) -> Self {
        debug_assert!(rows <= self.rows, "invariant: a cut keeps fewer rows");
        Self { rows, ..self }
    }

    /// `[n_nodes, k]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.tensor.dims()[1]]
    }

    /// `[n_nodes, k + k2]`: these columns, then `other`'s, so that both come back in one
    /// readback.
    pub fn join(self, other: TokenIds) -> TokenIds {
        debug_assert_eq!(
            self.rows, other.rows,
            "invariant: joined ids share their rows"
        );
        TokenIds::new(Tensor::cat(vec![self.tensor, other.tensor], 1)).first_rows(self.rows)
    }

    /// Ids computed a slice of rows at a time, one slice under the other.
    pub(super) fn stacked(slices: Vec<TokenIds>) -> TokenIds {
        debug_assert!(
            slices.iter().all(|s| s.rows == s.tensor.dims()[0]),
            "invariant: slices have no padding rows"
        );
        TokenIds::new(Tensor::cat(
            slices.into_iter().map(|s| s.tensor).collect(),
            0,
        ))
    }

    /// Reads the ids back, row-major. Async because synchronous reads panic in the browser.
    pub async fn read(self) -> Result<Vec<u32>> {
        let kept = self.rows * self.tensor.dims()[1];
        let data = self
            .tensor
            .into_data_async()
            .await
            .map_err(|e| Error::Readback {
                reason: e.to_string(),
            })?;
        let ids = data.try_into_vec_as::<i64>().map_err(|e| Error::Readback {
            reason: format!("{e:?}"),
        })?;
        ids.into_iter()
            .take(kept)
            .map(|id| match id {
                // `top_k::NO_ID` as the i32 ids hold it: the row had no number left.
                -1 => Err(Error::NonFiniteLogits),
                _ => u32::try_from(id).map_err(|_| Error::Readback {
                    reason: format!("token id {id} read back out of range"),
                }),
            })
            .collect()
    }
}
