//! `samd profile`: the cost of one verification step by tree size, on the chosen device.
//!
//! Speculation pays only while verifying N nodes costs little more than verifying one, so
//! this is the number that decides how large drafts should be on a device. Each size is
//! timed as the decode loop runs it: one forward over N nodes against a filled cache, the
//! top-k ids read back, the pending nodes dropped. With `--prefill N` it first times a
//! prefill: N prompt tokens into an empty cache, as one forward, the last token's argmax
//! read back, as the decode loop prefills for methods without Token Recycling; then the
//! same with the top-k ids of the positions Token Recycling learns from.
//!
//! Beside each step's time it prints the host's part: building the forward and handing
//! its kernels to the device, before anything is waited on. On a GPU a step of this
//! small model can be bound by that part alone. On wgpu the timed steps replay a captured
//! graph of their launches, as the decode loop's do (`--no-graphs`: launch by launch);
//! the kernels are counted and timed on a step issued launch by launch.
//!
//! With `--temperature` (and `--top-p`) the steps draw each node's next token on the
//! device, as a sampling decode loop's do, instead of taking the argmax.
//!
//! With `--kernel-times` it also times each kernel on the device, which splits a step
//! into kernel time and the device's idle time between kernels: on a GPU the second is
//! launch overhead, the thing fewer kernels and speculation are there to amortise.

use std::time::Instant;

use anyhow::{Context, Result};
use burn::tensor::read_sync;
use samd_draft::tree::{DraftTree, Source};
use samd_engine::bench::StepCosts;
use samd_engine::{ModelTarget, Reads, Sampling, Target};

use crate::args::ProfileArgs;
use crate::launches::{KernelLaunches, Watch};
use crate::load::load_model;

/// Untimed runs per size first: shader compilation and autotuning happen there.
const WARMUP: usize = 3;

/// Runs the subcommand.
pub fn run(args: &ProfileArgs) -> Result<()> {
    let (model, tokenizer) = load_model(&args.model)?;
    let sampling = args.sampling.sampling()?;

    // A real token stream, repeated to the context length asked for.
    let prompt =
        tokenizer.encode_chat("Explain, step by step, how a hash table handles collisions.")?;
    let ids: Vec<u32> = prompt
        .iter()
        .copied()
        .cycle()
        .take(args.context.max(1))
        .collect();
    let sizes: Vec<usize> = args.sizes.iter().map(|&n| n as usize).collect();
    let max_nodes = sizes.iter().copied().max().unwrap_or(1);
    // Room for the timed steps, and for the commits [`time_compaction`] keeps.
    let commits = 2 * (WARMUP + args.reps as usize + 1);
    let mut target = ModelTarget::new(
        model,
        (ids.len() + max_nodes.max(3) + commits).max(args.prefill),
    );
    if args.prefill > 0 {
        time_prefill(&mut target, &prompt, args, sampling)?;
    }

    let mut tree = DraftTree::new(ids[0]);
    tree.push_chain(0, &ids[1..], Source::Model);
    read_sync(target.verify(&tree, 1, None))?;
    target.commit(&(0..ids.len()).collect::<Vec<_>>())?;

    println!(
        "verify step at context {} on {} (forward + top-{} ids{}, median of {}):",
        target.past_len(),
        args.model.device.name(),
        args.top_k,
        match sampling {
            Some(s) => format!(
                " + a draw at temperature {}, top-p {}",
                s.temperature, s.top_p
            ),
            None => String::new(),
        },
        args.reps
    );
    println!(
        "| nodes | ms per step | × first size | host ms | kernels per step |\n\
         |---|---|---|---|---|"
    );
    let mut first_ms = None;
    let mut first_kernels = Vec::new();
    let mut kernel_times = Vec::new();
    let mut costs = Vec::new();
    for &n in &sizes {
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
        let mode = StepMode {
            reads: Reads::Every { k: args.top_k },
            sampling,
        };
        let step = time_verify(&mut target, &tree, mode, args.reps)?;
        let launches: usize = step.kernels.iter().map(|k| k.count).sum();
        let base = *first_ms.get_or_insert(step.median_ms);
        println!(
            "| {n} | {:.2} | {:.2} | {:.2} | {launches} |",
            step.median_ms,
            step.median_ms / base,
            step.host_ms,
        );
        costs.push(format!("{n}:{:.2}", step.median_ms));
        if first_kernels.is_empty() {
            first_kernels = step.kernels;
        }
        if args.kernel_times {
            kernel_times.push((
                format!("{n}-node step"),
                time_kernels(&mut target, &tree, mode)?,
            ));
        }
    }
    // The curve trace replay simulates this device by, where the sizes make one.
    let costs = costs.join(",");
    if costs.parse::<StepCosts>().is_ok() {
        println!("\nas `samd bench --replay T --step-costs`: {costs}");
    }
    let (commit_ms, commit_kernels) = time_compaction(&mut target, &ids, args.reps)?;
    let launches: usize = commit_kernels.iter().map(|k| k.count).sum();
    println!(
        "\ncommitting a path off the tree's first branch (2 nodes of a 3-node fork, whose \
         keys and values move): {commit_ms:.3} ms on the host, {launches} kernels{}",
        commit_kernels
            .iter()
            .map(|k| format!(" {}× {}", k.count, k.name))
            .collect::<Vec<_>>()
            .join(",")
    );
    if kernel_times.is_empty() {
        println!("\nkernels of a {}-node step, by launches:", sizes[0]);
        for k in first_kernels {
            println!("  {:>5}  {}", k.count, k.name);
        }
    }
    for (what, report) in kernel_times {
        println!("\n{what}: {report}");
    }
    Ok(())
}

/// Runs one verification of `tree` with every kernel timed on the device and describes
/// where its time went: wall time, device time, the device's idle time between kernels,
/// and each kernel's share.
fn time_kernels(target: &mut ModelTarget, tree: &DraftTree, mode: StepMode) -> Result<String> {
    let watch = Watch::start_timed();
    let t = Instant::now();
    run_observed_step(target, tree, mode)?;
    let wall = t.elapsed();
    target.commit(&[])?;
    let (kernels, times) = watch.finish();
    let Some(times) = times.filter(|t| !t.busy.is_zero()) else {
        return Ok("no device timings (a backend without timestamp queries)".into());
    };
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let mut out = format!(
        "{:.2} ms wall (each kernel timed, so slower than above); kernels {:.2} ms on the \
         device over a span of {:.2} ms, so the device idled {:.2} ms between them{}\n\
         | kernel | launches | device ms | µs each | share |\n|---|---|---|---|---|",
        ms(wall),
        ms(times.busy),
        ms(times.span),
        ms(times.span.saturating_sub(times.busy)),
        if times.unmeasured > 0 {
            format!(" ({} launches unmeasured)", times.unmeasured)
        } else {
            String::new()
        },
    );
    for KernelLaunches {
        name,
        count,
        device,
    } in kernels
    {
        out.push_str(&format!(
            "\n| {name} | {count} | {:.3} | {:.1} | {:.0}% |",
            ms(device),
            ms(device) * 1e3 / count.max(1) as f64,
            100.0 * device.as_secs_f64() / times.busy.as_secs_f64()
        ));
    }
    Ok(out)
}

/// Times `args.prefill` tokens (the prompt, repeated) fed to an empty cache, and counts
/// the prefill's kernel launches.
fn time_prefill(
    target: &mut ModelTarget,
    prompt: &[u32],
    args: &ProfileArgs,
    sampling: Option<Sampling>,
) -> Result<()> {
    let ids: Vec<u32> = prompt.iter().copied().cycle().take(args.prefill).collect();
    let mut chain = DraftTree::new(ids[0]);
    chain.push_chain(0, &ids[1..], Source::Model);
    target.reset();
    let mode = StepMode {
        reads: Reads::From {
            first: chain.len() - 1,
            k: 0,
        },
        sampling,
    };
    let step = time_verify(target, &chain, mode, args.reps)?;
    let launches: usize = step.kernels.iter().map(|k| k.count).sum();
    println!(
        "prefill of {} tokens on {}: {:.1} ms (forward + the last argmax id, median of {}; \
         {launches} kernels, {:.1} ms of it building them on the host)\n",
        args.prefill,
        args.model.device.name(),
        step.median_ms,
        args.reps,
        step.host_ms,
    );
    if args.kernel_times {
        println!("prefill: {}\n", time_kernels(target, &chain, mode)?);
    }
    // What Token Recycling adds: the top-k ids of the prompt's last positions (all of
    // them on wgpu), whose rows of the head the plain prefill skips.
    let learned = target.recycled_prompt_positions().min(chain.len());
    if args.top_k > 0 && learned > 1 {
        let mode = StepMode {
            reads: Reads::From {
                first: chain.len() - learned,
                k: args.top_k,
            },
            sampling,
        };
        let recycled = time_verify(target, &chain, mode, args.reps)?;
        println!(
            "the same prefill as Token Recycling runs it, the top-{} ids of its last {learned} \
             positions read back: {:.1} ms ({:.2}× the plain one)\n",
            args.top_k,
            recycled.median_ms,
            recycled.median_ms / step.median_ms,
        );
    }
    Ok(())
}

/// What a timed step reads back, and how it picks each node's next token.
#[derive(Debug, Clone, Copy)]
struct StepMode {
    reads: Reads,
    sampling: Option<Sampling>,
}

/// One tree size's timings.
struct StepTimes {
    /// Median wall time of a step, ms.
    median_ms: f64,
    /// Median time of the step's host half ([`ModelTarget::launch`]), ms.
    host_ms: f64,
    /// The kernels of one more step, by launches.
    kernels: Vec<KernelLaunches>,
}

/// Times `reps` verifications of `tree` as `mode` says, after [`WARMUP`] untimed
/// ones, then counts the kernels of one more. Each verification's nodes are dropped, so
/// the cache ends as it began.
fn time_verify(
    target: &mut ModelTarget,
    tree: &DraftTree,
    mode: StepMode,
    reps: u32,
) -> Result<StepTimes> {
    let mut times = Vec::with_capacity(reps as usize);
    let mut host = Vec::with_capacity(reps as usize);
    for rep in 0..WARMUP + reps as usize {
        let t = Instant::now();
        let pending = target.launch(tree, mode.reads, mode.sampling)?;
        let launched = t.elapsed();
        read_sync(target.finish(pending))?;
        target.commit(&[])?;
        if rep >= WARMUP {
            times.push(t.elapsed().as_secs_f64() * 1e3);
            host.push(launched.as_secs_f64() * 1e3);
        }
    }
    let watch = Watch::start();
    run_observed_step(target, tree, mode)?;
    target.commit(&[])?;
    let (kernels, _) = watch.finish();
    Ok(StepTimes {
        median_ms: median(&mut times),
        host_ms: median(&mut host),
        kernels,
    })
}

/// Times `reps` commits of a path that is not the tree's first nodes, after [`WARMUP`]
/// untimed ones: a fork of two children, of which the second is accepted, so that its
/// keys and values move into place. Returns the median host time in ms (issuing the
/// moves, on wgpu replayed from a graph unless `--no-graphs`; the device's copies are
/// left to run) and the kernels of one more, launched one by one. Each commit keeps two
/// positions.
fn time_compaction(
    target: &mut ModelTarget,
    ids: &[u32],
    reps: u32,
) -> Result<(f64, Vec<KernelLaunches>)> {
    let mut fork = DraftTree::new(ids[0]);
    fork.push(0, ids[1 % ids.len()], Source::Model);
    fork.push(0, ids[2 % ids.len()] ^ 1, Source::Model);
    let mode = StepMode {
        reads: Reads::Every { k: 0 },
        sampling: None,
    };
    let mut host = Vec::with_capacity(reps as usize);
    for rep in 0..WARMUP + reps as usize {
        run_step(target, &fork, mode)?;
        let t = Instant::now();
        target.commit(&[0, 2])?;
        if rep >= WARMUP {
            host.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    run_step(target, &fork, mode)?;
    let watch = Watch::start();
    launched_one_by_one(target, |target| target.commit(&[0, 2]))?;
    let (kernels, _) = watch.finish();
    Ok((median(&mut host), kernels))
}

/// One verification of `tree`, its ids read back; the nodes stay pending.
fn run_step(target: &mut ModelTarget, tree: &DraftTree, mode: StepMode) -> Result<()> {
    let pending = target.launch(tree, mode.reads, mode.sampling)?;
    read_sync(target.finish(pending))?;
    Ok(())
}

/// [`run_step`] issuing its kernels one by one ([`launched_one_by_one`]).
fn run_observed_step(target: &mut ModelTarget, tree: &DraftTree, mode: StepMode) -> Result<()> {
    launched_one_by_one(target, |target| run_step(target, tree, mode))
}

/// Runs `work` with step graphs off, so that the launch observer sees each kernel: a
/// replayed graph (a verify step's, or a commit's) re-encodes its recorded launches past
/// the launch path.
fn launched_one_by_one<R>(target: &mut ModelTarget, work: impl FnOnce(&mut ModelTarget) -> R) -> R {
    let graphs = target.model().step_graphs();
    target.set_step_graphs(false);
    let out = work(target);
    target.set_step_graphs(graphs);
    out
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}
