//! Verify steps captured once as a graph of launches, then replayed.
//!
//! On a GPU a step of this small model was bound by the host: on an H200 each of a
//! step's launches cost about 18 µs to issue through burn, cubecl and wgpu (the pipeline
//! lookup, the bindings, the info uniform, a bind group), more than most of its kernels
//! took to run. cubecl can record a step's launches once, fully resolved, and a replay
//! only re-encodes them ([`Backend::graph_replay`]).
//!
//! A replay reads and writes the buffers the recorded run did, so whatever a step varies
//! lives in buffers refilled before each replay ([`StepInputs`]): the token ids, the
//! positions, the tree mask, the cache slots (which is why the kernels read the slots
//! from a buffer rather than from their uniform), and a sampling step's draw (its noise
//! is keyed by the refilled positions, [`crate::sampler`]).
//!
//! A graph's launch grids and buffer sizes are fixed, so one is captured per node count,
//! rounded up to a power of two ([`padded_nodes`]). Padding nodes see only themselves and
//! no real node sees them, so the real nodes' results are those of an unpadded step.
//! Graphs belong to the [`KvCache`] whose buffers they write ([`StepGraphs`]), and to the
//! model whose weights they read, which they check by id.

use std::collections::HashMap;
use std::fmt;

use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{CubeBackend, CubeTensor};
use burn::backend::{Backend, BackendGraph, Dispatch, backend_extension};
use burn::tensor::{Bytes, DType, Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::kernels::SKINNY_MAX_ROWS;
use crate::llama::{AncestorMask, TokenIds};
use crate::sampler::{Draw, DrawBuffers};

/// Additive mask value for "may not attend". Large and finite rather than `-inf`, so a
/// backend that computes `x - max` never sees `inf - inf`.
const MASKED: f32 = -1.0e9;

/// A step's inputs on the host, checked: what [`StepInputs`] holds on the device.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostStep {
    /// `[n]`: each node's token id.
    pub ids: Vec<i32>,
    /// `[n]`: each node's position.
    pub positions: Vec<i32>,
    /// `[n, n]`, row-major, the additive mask among the new nodes; every node also sees
    /// every committed position.
    ///
    /// ```text
    ///              past (committed)     new nodes (this mask)
    ///            ┌───────────────────┬──────────────────────┐
    ///   node 0   │ 0 0 0 … 0         │ 0 M M M              │
    ///   node 1   │ 0 0 0 … 0         │ 0 0 M M              │   0 = attend
    ///   node 2   │ 0 0 0 … 0         │ 0 0 0 M              │   M = MASKED
    ///   node 3   │ 0 0 0 … 0         │ 0 M M 0              │
    ///            └───────────────────┴──────────────────────┘
    /// ```
    pub tree_mask: Vec<f32>,
    /// `[n, n + 1]`, row-major: each node's ancestors, for the per-node attention kernel.
    /// Row i is the count, depth + 1, then the new nodes that node i sees, root first and
    /// itself last; the rest is 0. With it the kernel walks node i's keys in the order
    /// of their positions, whatever cache slots its ancestors hold, so a node's sums run
    /// as they do when plain decoding reaches the same position ([`ancestry`]).
    pub ancestry: Vec<i32>,
    /// The first new node's cache slot: the committed positions.
    pub past: i32,
    /// A sampling step's draw; `None` for a greedy one.
    pub draw: Option<Draw>,
}

impl HostStep {
    /// A step of `ids` at `positions` whose nodes see each other as `mask` says.
    pub fn new(ids: Vec<i32>, positions: Vec<i32>, mask: &AncestorMask, past: i32) -> Self {
        let n = ids.len();
        let tree_mask = (0..n * n)
            .map(|ij| match mask.allowed(ij / n, ij % n) {
                true => 0.0,
                false => MASKED,
            })
            .collect();
        Self {
            ancestry: ancestry(n, |i, j| mask.allowed(i, j)),
            ids,
            positions,
            tree_mask,
            past,
            draw: None,
        }
    }

    /// This step, drawing its next tokens as `draw` says (`None`: greedy).
    pub fn with_draw(self, draw: Option<Draw>) -> Self {
        Self { draw, ..self }
    }

    /// Nodes.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// `[first new slot, nodes]`, as the kernels read them.
    fn slots(&self) -> Vec<i32> {
        let n = i32::try_from(self.len()).expect("invariant: node counts fit i32");
        vec![self.past, n]
    }

    /// This step with `to - n` nodes after its own, each seeing only itself, at the first
    /// node's token and position: they change none of the real nodes' results.
    pub fn padded(&self, to: usize) -> Self {
        let n = self.len();
        debug_assert!(n > 0 && to >= n, "invariant: padding adds nodes to a step");
        let mut tree_mask = vec![MASKED; to * to];
        for i in 0..to {
            let row = &mut tree_mask[i * to..i * to + to];
            if i < n {
                row[..n].copy_from_slice(&self.tree_mask[i * n..i * n + n]);
            } else {
                row[i] = 0.0;
            }
        }
        let pad = |v: &[i32]| {
            let mut v = v.to_vec();
            v.resize(to, v[0]);
            v
        };
        Self {
            ancestry: ancestry(to, |i, j| tree_mask[i * to + j] == 0.0),
            ids: pad(&self.ids),
            positions: pad(&self.positions),
            tree_mask,
            past: self.past,
            draw: self.draw,
        }
    }

    /// The step's inputs as new device tensors.
    pub fn upload(&self, device: &Device) -> StepInputs {
        let n = self.len();
        let ints = |v: Vec<i32>| {
            let len = v.len();
            Tensor::<1, Int>::from_data(TensorData::new(v, [len]), (device, DType::I32))
        };
        StepInputs {
            ids: ints(self.ids.clone()),
            positions: ints(self.positions.clone()),
            tree_mask: Tensor::from_data(TensorData::new(self.tree_mask.clone(), [n, n]), device),
            ancestry: ints(self.ancestry.clone()),
            slots: ints(self.slots()),
            draw: self.draw.map(|d| ints(d.words())),
        }
    }
}

/// What one forward reads besides the weights and the cache, on the device.
#[derive(Debug, Clone)]
pub(crate) struct StepInputs {
    /// `[n]` token ids.
    pub ids: Tensor<1, Int>,
    /// `[n]` positions.
    pub positions: Tensor<1, Int>,
    /// `[n, n]`, additive.
    pub tree_mask: Tensor<2>,
    /// `[n * (n + 1)]`: [`HostStep::ancestry`].
    pub ancestry: Tensor<1, Int>,
    /// `[2]`: the first new node's cache slot, and `n` ([`crate::layer_ops::Slots`]).
    pub slots: Tensor<1, Int>,
    /// `[4]`: a sampling step's draw, as the kernels read it ([`Draw`]'s words).
    pub draw: Option<Tensor<1, Int>>,
}

impl StepInputs {
    /// A sampling step's draw on the device: its words, and the nodes' positions.
    pub fn draw_buffers(&self) -> Option<DrawBuffers> {
        self.draw.clone().map(|words| DrawBuffers {
            words,
            positions: self.positions.clone(),
        })
    }

    /// Writes `step` into these buffers in place; `step` has as many nodes as they do.
    fn refill(&self, step: &HostStep) {
        let ints = |t: &Tensor<1, Int>, v: Vec<i32>| {
            <Dispatch as GraphInputs>::overwrite_ints(t.clone().into_dispatch(), v);
        };
        ints(&self.ids, step.ids.clone());
        ints(&self.positions, step.positions.clone());
        ints(&self.slots, step.slots());
        ints(&self.ancestry, step.ancestry.clone());
        if let (Some(words), Some(draw)) = (&self.draw, &step.draw) {
            ints(words, draw.words());
        }
        <Dispatch as GraphInputs>::overwrite_floats(
            self.tree_mask.clone().into_dispatch(),
            step.tree_mask.clone(),
        );
    }
}

/// [`HostStep::ancestry`] of `n` nodes, where node i sees new node j if `sees(i, j)`
/// (parents precede their children, so a row's nodes come root first).
fn ancestry(n: usize, sees: impl Fn(usize, usize) -> bool) -> Vec<i32> {
    let index = |j: usize| i32::try_from(j).expect("invariant: node counts fit i32");
    let mut rows = vec![0; n * (n + 1)];
    for (i, row) in rows.chunks_exact_mut(n + 1).enumerate() {
        let mut seen = 0;
        for j in (0..n).filter(|&j| sees(i, j)) {
            seen += 1;
            row[seen] = index(j);
        }
        row[0] = index(seen);
    }
    rows
}

/// Writes into a tensor's own buffer, which a captured graph reads.
#[backend_extension(Cube)]
pub trait GraphInputs: Backend {
    /// `t`, its `i32` contents replaced by `values`, as many as it holds.
    fn overwrite_ints(t: IntTensor<Self>, values: Vec<i32>) -> IntTensor<Self>;
    /// `t`, its `f32` contents replaced by `values`, as many as it holds.
    fn overwrite_floats(t: FloatTensor<Self>, values: Vec<f32>) -> FloatTensor<Self>;
}

impl GraphInputs for CubeBackend {
    fn overwrite_ints(t: CubeTensor, values: Vec<i32>) -> CubeTensor {
        debug_assert_eq!(t.dtype, DType::I32, "invariant: step inputs are i32");
        t.client.write(&t.handle, Bytes::from_elems(values));
        t
    }

    fn overwrite_floats(t: CubeTensor, values: Vec<f32>) -> CubeTensor {
        debug_assert_eq!(t.dtype, DType::F32, "invariant: the tree mask is f32");
        t.client.write(&t.handle, Bytes::from_elems(values));
        t
    }
}

/// The node count a step of `n` nodes is captured and replayed at: the next power of two,
/// so that a handful of graphs serve every tree size. `None` past [`SKINNY_MAX_ROWS`]:
/// a forward that large is a prefill, launched as it comes.
pub(crate) fn padded_nodes(n: usize) -> Option<usize> {
    Some(n.checked_next_power_of_two()?).filter(|&p| p <= SKINNY_MAX_ROWS)
}

/// How many nodes a verify step computes for the nodes it verifies, and so what it costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StepPadding {
    /// As many as it verifies.
    #[default]
    Exact,
    /// Up to the next power of two, the size of the step graph it replays, up to
    /// [`SKINNY_MAX_ROWS`] nodes (wgpu). A step of 5 nodes costs what one of 8 does.
    PowerOfTwo,
}

impl StepPadding {
    /// The nodes a step of `nodes` computes.
    pub fn nodes(self, nodes: usize) -> usize {
        match self {
            StepPadding::Exact => nodes,
            StepPadding::PowerOfTwo => padded_nodes(nodes).unwrap_or(nodes),
        }
    }
}

/// Every node count a verify step of up to `most` nodes is captured at (1, 2, 4, …): one
/// step of each captures every graph such steps replay.
pub fn padded_step_sizes(most: usize) -> Vec<usize> {
    let top = padded_nodes(most.clamp(1, SKINNY_MAX_ROWS))
        .expect("invariant: SKINNY_MAX_ROWS is a power of two");
    std::iter::successors(Some(1), |&n| Some(n * 2))
        .take_while(|&n| n <= top)
        .collect()
}

/// One captured step: the graph, the buffers it reads its inputs from, and the ids it
/// writes.
struct StepGraph {
    graph: BackendGraph<Dispatch>,
    inputs: StepInputs,
    ids: TokenIds,
}

/// How a step picks each node's next token. A graph records one way: a draw launches other
/// kernels than an argmax, and a nucleus one more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Pick {
    Argmax,
    Draw,
    DrawInNucleus,
}

impl Pick {
    fn of(step: &HostStep) -> Self {
        match step.draw {
            None => Self::Argmax,
            Some(d) if d.has_nucleus() => Self::DrawInNucleus,
            Some(_) => Self::Draw,
        }
    }
}

/// The steps captured against one [`KvCache`]'s buffers, by (padded nodes, ids per node,
/// how the next tokens are picked).
/// `None` marks a step whose capture failed (a backend without graphs, say), so that it
/// runs launch by launch without trying again.
#[derive(Default)]
pub(crate) struct StepGraphs {
    /// The model they read the weights of ([`crate::Llama`]'s id).
    model: Option<u64>,
    graphs: HashMap<(usize, usize, Pick), Option<StepGraph>>,
}

impl fmt::Debug for StepGraphs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StepGraphs {{ captured: {} }}", self.captured())
    }
}

impl StepGraphs {
    /// Steps replayed from a graph.
    pub fn captured(&self) -> usize {
        self.graphs.values().filter(|g| g.is_some()).count()
    }

    /// The ids of `step` (already padded to a graph's size) over `k` ids per node, by
    /// replaying its graph. The first step of a size runs `run` as usual, then records
    /// the same launches for the next. `run` is the step itself (the forward and its
    /// ids) on inputs on the device.
    pub fn run(
        &mut self,
        model: u64,
        device: &Device,
        step: &HostStep,
        k: usize,
        mut run: impl FnMut(&StepInputs) -> Result<TokenIds>,
    ) -> Result<TokenIds> {
        if self.model != Some(model) {
            self.graphs.clear();
            self.model = Some(model);
        }
        let key = (step.len(), k, Pick::of(step));
        match self.graphs.get(&key) {
            Some(Some(captured)) => {
                captured.inputs.refill(step);
                // Safety: every buffer the graph touches stays alive and in place while it
                // may replay: the inputs and ids are its own, the weights are the model's
                // (checked by id above), and the KV cache owns these graphs and writes its
                // layers in place only (`KvCache` drops them where it cannot).
                #[allow(unsafe_code)]
                unsafe { Dispatch::graph_replay(device.as_dispatch(), &captured.graph) }.map_err(
                    |e| Error::Replay {
                        reason: e.to_string(),
                    },
                )?;
                Ok(captured.ids.clone())
            }
            Some(None) => run(&step.upload(device)),
            None => {
                let (ids, captured) = capture(device, step, &mut run)?;
                self.graphs.insert(key, captured);
                Ok(ids)
            }
        }
    }
}

/// Runs the step once for real, which also leaves the memory pools holding every buffer
/// it takes, then records the same launches on the same inputs. Returns the real run's
/// ids, and the graph if the backend recorded one.
fn capture(
    device: &Device,
    step: &HostStep,
    run: &mut impl FnMut(&StepInputs) -> Result<TokenIds>,
) -> Result<(TokenIds, Option<StepGraph>)> {
    let dispatch = device.as_dispatch();
    if Dispatch::graph_prepare(dispatch).is_err() {
        return Ok((run(&step.upload(device))?, None));
    }
    let inputs = step.upload(device);
    let ids = run(&inputs)?;
    if Dispatch::graph_start_capture(dispatch).is_err() {
        // Ends the prepared capture, which routes allocations to the graph's pools.
        let _ = Dispatch::graph_stop_capture(dispatch);
        return Ok((ids, None));
    }
    // Recorded, not run: the real run above already wrote this step's keys and values.
    // Stopped whatever the recorded run gave, so that the capture never outlives it.
    let graph_ids = run(&inputs);
    let captured = match (graph_ids, Dispatch::graph_stop_capture(dispatch)) {
        (Ok(ids), Ok(graph)) => Some(StepGraph { graph, inputs, ids }),
        _ => None,
    };
    Ok((ids, captured))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The diagram's tree on [`HostStep::tree_mask`]: node 3 is node 0's child.
    #[test]
    fn ancestry_lists_each_nodes_path_root_first_and_padding_sees_itself() {
        let parents = [None, Some(0), Some(1), Some(0)];
        let mask = AncestorMask::from_parents(&parents).expect("mask");
        let step = HostStep::new(vec![5; 4], vec![9, 10, 11, 10], &mask, 9);
        #[rustfmt::skip]
        let rows = [
            1, 0, 0, 0, 0,
            2, 0, 1, 0, 0,
            3, 0, 1, 2, 0,
            2, 0, 3, 0, 0,
        ];
        assert_eq!(step.ancestry, rows);
        let padded = step.padded(6);
        #[rustfmt::skip]
        let rows = [
            1, 0, 0, 0, 0, 0, 0,
            2, 0, 1, 0, 0, 0, 0,
            3, 0, 1, 2, 0, 0, 0,
            2, 0, 3, 0, 0, 0, 0,
            1, 4, 0, 0, 0, 0, 0,
            1, 5, 0, 0, 0, 0, 0,
        ];
        assert_eq!(padded.ancestry, rows);
    }

    #[test]
    fn the_step_sizes_cover_every_padding_up_to_the_largest_step() {
        assert_eq!(padded_step_sizes(0), [1]);
        assert_eq!(padded_step_sizes(1), [1]);
        assert_eq!(padded_step_sizes(5), [1, 2, 4, 8]);
        assert_eq!(padded_step_sizes(100).last(), Some(&128));
        assert_eq!(padded_step_sizes(usize::MAX).last(), Some(&SKINNY_MAX_ROWS));
        for n in 1..=SKINNY_MAX_ROWS {
            let padded = padded_nodes(n).expect("a verify step's size");
            assert!(padded_step_sizes(SKINNY_MAX_ROWS).contains(&padded), "{n}");
        }
    }
}
