//! `samd profile`: the cost of one verification step by tree size, on the chosen device.
//!
//! Speculation pays only while verifying N nodes costs little more than verifying one, so
//! this is the number that decides how large drafts should be on a device. Each size is
//! timed as the decode loop runs it: one forward over N nodes against a filled cache, the
//! top-k ids read back, the pending nodes dropped. With `--prefill N` it first times a
//! prefill: N prompt tokens into an empty cache, as one forward, the argmax ids read back.

use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::read_sync;
use samd_draft::tree::{DraftTree, Source};
use samd_engine::{ModelTarget, Target};

use crate::args::ProfileArgs;
use crate::launches::Watch;
use crate::load::load_model;

/// Tree sizes timed, in nodes.
const SIZES: [usize; 8] = [1, 2, 4, 8, 16, 32, 64, 128];
/// Untimed runs per size first: shader compilation and autotuning happen there.
const WARMUP: usize = 3;

/// Runs the subcommand.
pub fn run(args: &ProfileArgs) -> Result<()> {
    let (model, tokenizer) = load_model(&args.model)?;

    // A real token stream, repeated to the context length asked for.
    let text =
        tokenizer.chat_prompt("Explain, step by step, how a hash table handles collisions.")?;
    let prompt = tokenizer.encode(&text)?;
    let ids: Vec<u32> = prompt
        .iter()
        .copied()
        .cycle()
        .take(args.context.max(1))
        .collect();
    let max_nodes = SIZES[SIZES.len() - 1];
    let mut target = ModelTarget::new(model, (ids.len() + max_nodes).max(args.prefill));
    if args.prefill > 0 {
        time_prefill(&mut target, &prompt, args)?;
    }

    let mut tree = DraftTree::new(ids[0]);
    tree.push_chain(0, &ids[1..], Source::Model);
    read_sync(target.verify(&tree, 1, None))?;
    target.commit(&(0..ids.len()).collect::<Vec<_>>())?;

    println!(
        "verify step at context {} on {} (forward + top-{} ids, median of {}):",
        target.past_len(),
        args.model.device.name(),
        args.top_k,
        args.reps
    );
    println!("| nodes | ms per step | × one node | kernels per step |\n|---|---|---|---|");
    let mut one_node_ms = None;
    let mut one_node_kernels = Vec::new();
    for n in SIZES {
        tree.reset(ids[0]);
        tree.push_chain(0, &ids[1..n.min(ids.len())], Source::Model);
        while tree.len() < n {
            // Contexts shorter than the tree: widen it with siblings of the root's child.
            tree.push(
                0,
                u32::try_from(tree.len()).context("node count")?,
                Source::Model,
            );
        }
        let (median, kernels) = time_verify(&mut target, &tree, args.top_k, args.reps)?;
        let launches: usize = kernels.iter().map(|(_, count)| count).sum();
        let base = *one_node_ms.get_or_insert(median);
        println!("| {n} | {median:.2} | {:.2} | {launches} |", median / base);
        if n == 1 {
            one_node_kernels = kernels;
        }
    }
    if !one_node_kernels.is_empty() {
        println!("\nkernels of a one-node step, by launches:");
        for (name, count) in one_node_kernels {
            println!("  {count:>5}  {name}");
        }
    }
    Ok(())
}

/// Times `args.prefill` tokens (the prompt, repeated) fed to an empty cache, and counts
/// the prefill's kernel launches.
fn time_prefill(target: &mut ModelTarget, prompt: &[u32], args: &ProfileArgs) -> Result<()> {
    let ids: Vec<u32> = prompt.iter().copied().cycle().take(args.prefill).collect();
    let mut chain = DraftTree::new(ids[0]);
    chain.push_chain(0, &ids[1..], Source::Model);
    target.reset();
    let (median, kernels) = time_verify(target, &chain, 1, args.reps)?;
    let launches: usize = kernels.iter().map(|(_, count)| count).sum();
    println!(
        "prefill of {} tokens on {}: {median:.1} ms (forward + argmax ids, median of {}; \
         {launches} kernels)\n",
        args.prefill,
        args.model.device.name(),
        args.reps
    );
    Ok(())
}

/// The median time in ms of `reps` verifications of `tree` with `k` ids read back per
/// node, after [`WARMUP`] untimed ones, then the kernels of one more, by launches. Each
/// verification's nodes are dropped, so the cache ends as it began.
fn time_verify(
    target: &mut ModelTarget,
    tree: &DraftTree,
    k: usize,
    reps: u32,
) -> Result<(f64, Vec<(String, usize)>)> {
    let mut times = Vec::with_capacity(reps as usize);
    for rep in 0..WARMUP + reps as usize {
        let t = Instant::now();
        read_sync(target.verify(tree, k, None))?;
        target.commit(&[])?;
        if rep >= WARMUP {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let watch = Watch::start();
    read_sync(target.verify(tree, k, None))?;
    target.commit(&[])?;
    let kernels = watch.finish();
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], kernels))
}
