//! Moving a verify step's accepted path into place on wgpu (`compact_kv.wgsl`, one launch
//! a layer), captured once as a graph of launches and replayed after, as verify steps are
//! ([`crate::step_graph`]): through burn's launch path each launch cost about 18 µs of
//! host time on an H200, and a replay only re-encodes them.

use std::fmt;

use burn::backend::{Backend, BackendGraph, Dispatch};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::kernels::{BlockKernels, SKINNY_MAX_ROWS};
use crate::step_graph::GraphInputs;

/// Most nodes of a path a captured compaction takes: a padded verify step's. A longer
/// path (never one of a verify step) launches its kernels as it comes.
const CAPTURED_PATH: usize = SKINNY_MAX_ROWS;

/// A cache's compaction graph.
#[derive(Default)]
pub(super) enum Compaction {
    /// Not captured yet.
    #[default]
    Untried,
    /// The backend recorded no graph: launched as it comes, without trying again.
    Uncapturable,
    /// The launches, and the buffer they read the path from.
    Captured(Box<Captured>),
}

/// [`Compaction::Captured`].
pub(super) struct Captured {
    graph: BackendGraph<Dispatch>,
    moves: Tensor<1, Int>,
}

impl fmt::Debug for Compaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compaction::Untried => "Untried",
            Compaction::Uncapturable => "Uncapturable",
            Compaction::Captured(_) => "Captured",
        })
    }
}

/// Moves the nodes of `path` (ascending, not the first ones) from slots `start +
/// path[i]` to `start + i` in every one of `layers`, on the wgpu `device`: replayed from
/// `graph` when it is given and the path fits it, captured into it the first time.
pub(super) fn compact(
    layers: &mut [Tensor<4>],
    start: usize,
    path: &[usize],
    device: &Device,
    graph: Option<&mut Compaction>,
) -> Result<()> {
    let graph = graph.filter(|_| path.len() <= CAPTURED_PATH);
    let Some(graph) = graph else {
        launch(layers, &upload(moves(start, path, 2 + path.len()), device));
        return Ok(());
    };
    let host = moves(start, path, 2 + CAPTURED_PATH);
    match graph {
        Compaction::Captured(captured) => {
            let Captured { graph, moves } = captured.as_ref();
            <Dispatch as GraphInputs>::overwrite_ints(moves.clone().into_dispatch(), host);
            // Safety: the graph writes `layers`, whose buffers stay in place while the
            // cache holds it (a cache's layers are only written in place, and a clone gets
            // its own graph), and reads `moves`, which it owns.
            #[allow(unsafe_code)]
            unsafe { Dispatch::graph_replay(device.as_dispatch(), graph) }.map_err(|e| {
                Error::Replay {
                    reason: e.to_string(),
                }
            })?;
        }
        Compaction::Uncapturable => launch(layers, &upload(host, device)),
        Compaction::Untried => *graph = capture(layers, device, host),
    }
    Ok(())
}

/// Runs the compaction once for real, then records the same launches on the same
/// buffers, as [`crate::step_graph`] captures a step.
fn capture(layers: &mut [Tensor<4>], device: &Device, host: Vec<i32>) -> Compaction {
    let dispatch = device.as_dispatch();
    if Dispatch::graph_prepare(dispatch).is_err() {
        launch(layers, &upload(host, device));
        return Compaction::Uncapturable;
    }
    let moves = upload(host, device);
    launch(layers, &moves);
    if Dispatch::graph_start_capture(dispatch).is_err() {
        // Ends the prepared capture, which routes allocations to the graph's pools.
        let _ = Dispatch::graph_stop_capture(dispatch);
        return Compaction::Uncapturable;
    }
    // Recorded, not run: the real run above already moved this path.
    launch(layers, &moves);
    match Dispatch::graph_stop_capture(dispatch) {
        Ok(graph) => Compaction::Captured(Box::new(Captured { graph, moves })),
        Err(_) => Compaction::Uncapturable,
    }
}

/// One `compact_kv.wgsl` launch per layer, in place.
fn launch(layers: &mut [Tensor<4>], moves: &Tensor<1, Int>) {
    let moves = moves.clone().into_dispatch();
    for layer in layers {
        layer.inplace(|t| {
            Tensor::from_dispatch(<Dispatch as BlockKernels>::compact_kv(
                t.into_dispatch(),
                moves.clone(),
            ))
        });
    }
}

/// `[start, path.len(), path…]` as `compact_kv.wgsl` reads it, padded with zeros to
/// `len` entries.
fn moves(start: usize, path: &[usize], len: usize) -> Vec<i32> {
    let int = |i: usize| i32::try_from(i).expect("invariant: slots fit i32");
    let mut out: Vec<i32> = [start, path.len()]
        .into_iter()
        .chain(path.iter().copied())
        .map(int)
        .collect();
    out.resize(len, 0);
    out
}

fn upload(moves: Vec<i32>, device: &Device) -> Tensor<1, Int> {
    let len = moves.len();
    Tensor::from_data(TensorData::new(moves, [len]), (device, DType::I32))
}
