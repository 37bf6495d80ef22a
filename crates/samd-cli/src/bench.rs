//! `samd bench`: every method on the same prompts, in one process and one run, so the
//! speedups are side-by-side ratios on the same device. The measuring and the tables are
//! the engine's ([`samd_engine::bench`]); this file loads things and writes the output.

use anyhow::{Context, Result, bail};
use burn::tensor::read_sync;
use samd_draft::replay::ReplayLimits;
use samd_engine::bench::{
    BenchConfig, BenchTrace, SimulatedDevice, load_prompts, replay_bench, run_bench, select,
    traces_from_jsonl, traces_from_run, traces_to_jsonl,
};
use samd_engine::{ModelTarget, Session};
use samd_model::step_graph::StepPadding;

use crate::args::{BenchArgs, DeviceKind};
use crate::load::{ModelBytes, init_device, load_corpus, timed};

/// Runs `samd bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let model_bytes = ModelBytes::read(&args.model.model)?;
    let file = model_bytes.parse()?;
    let tokenizer = model_bytes.tokenizer(&file)?;
    let vocab = u32::try_from(tokenizer.vocab_size()).context("vocabulary beyond u32")?;

    if let Some(path) = &args.replay {
        let jsonl = std::fs::read_to_string(path)
            .with_context(|| format!("reading traces {}", path.display()))?;
        let traces = traces_from_jsonl(&jsonl)?;
        let corpus = load_corpus(&args.corpus, &tokenizer)?;
        let limits = replay_limits(args, &traces)?;
        // Steps pad where they replay step graphs (`Llama::step_padding`).
        let padded = args.model.device == DeviceKind::Wgpu && !args.model.no_graphs;
        let device = args.step_costs.clone().map(|costs| SimulatedDevice {
            costs,
            padding: match padded {
                true => StepPadding::PowerOfTwo,
                false => StepPadding::Exact,
            },
        });
        match &device {
            None => eprintln!(
                "replay: every drafted node that fits verified (as --tree full), at most {} a step on {}",
                limits.max_tree_nodes,
                args.model.device.name()
            ),
            Some(d) => eprintln!(
                "replay: the adaptive tree budget's nodes verified, at most {} a step on {}, \
                 each step timed as {} ms by its {}node count",
                limits.max_tree_nodes,
                args.model.device.name(),
                d.costs,
                if padded { "padded " } else { "" }
            ),
        }
        // Traces saved before stop ids were recorded replay each end-of-turn step short.
        let stopped = traces.iter().filter(|t| t.stop_id.is_some()).count();
        eprintln!(
            "{stopped} of {} traces end at a stop id, whose step replay takes too",
            traces.len()
        );
        let result = replay_bench(
            &traces,
            &args.methods,
            vocab,
            corpus,
            limits,
            device.as_ref(),
        )?;
        println!("{}", result.markdown());
        return write_json(args, &result.to_json()?);
    }

    let jsonl = std::fs::read_to_string(&args.prompts)
        .with_context(|| format!("reading prompts {}", args.prompts.display()))?;
    let mut prompts = load_prompts(&jsonl, &tokenizer)?;
    if args.per_category > 0 {
        prompts = select(&prompts, args.per_category);
    }
    if prompts.is_empty() {
        bail!("no prompts in {}", args.prompts.display());
    }
    let device = init_device(args.model.device)?;
    let model = model_bytes.weights(&file, &device, &args.model)?;
    drop(file);
    let longest = prompts.iter().map(|p| p.ids.len()).max().unwrap_or(0);
    let max_new = args.max_tokens as usize;
    let mut session = Session::new(ModelTarget::new(model, longest + max_new + 1), None);
    // On wgpu, every tree size's pipelines and step graph before any timed step (a
    // method's warm-up generation meets only the sizes its first prompt does), and the
    // tree budget's first step costs.
    let (warm, warm_ms) = timed(|| read_sync(session.warm_up(&args.methods, |_, _| ())));
    let warm = warm?;
    if warm.passes > 0 {
        eprintln!(
            "warm-up: {} passes in {warm_ms:.0} ms, {} step graphs captured; {}",
            warm.passes,
            warm.graphs,
            fitted_cost(&session)
        );
    }
    session.set_tree_policy(args.tree.policy);
    eprintln!("tree policy: {}", args.tree.policy.name());
    let config = BenchConfig {
        methods: args.methods.clone(),
        max_new_tokens: max_new,
        stop_ids: tokenizer.stop_ids(),
        corpus: load_corpus(&args.corpus, &tokenizer)?,
        warmup: true,
        trace_top_k: if args.save_traces.is_some() {
            args.trace_top_k
        } else {
            0
        },
    };
    let result = read_sync(run_bench(&mut session, &prompts, &config, |p| {
        let r = p.record;
        eprintln!(
            "[{}/{}] {:<7} {:<15} q{:<4} {:>4} tokens  MAT {:>5.2}  {:>7.1} tok/s{}",
            p.done,
            p.total,
            r.method,
            r.category,
            r.question_id,
            r.generated,
            r.mat,
            r.tok_s,
            if r.lossless { "" } else { "  MISMATCH" }
        );
    }))?;
    println!("{}", result.markdown());
    eprintln!("{}", fitted_cost(&session));
    if warm.passes > 0 {
        let graphs = session.target().captured_steps();
        eprintln!(
            "step graphs captured during the run: {}",
            graphs - warm.graphs
        );
    }
    if let Some(path) = &args.save_traces {
        let traces = traces_from_run(&prompts, &result.records);
        std::fs::write(path, traces_to_jsonl(&traces)?)
            .with_context(|| format!("writing traces {}", path.display()))?;
    }
    write_json(args, &result.to_json()?)?;
    let mismatches = result.mismatches().count();
    if mismatches > 0 {
        bail!("{mismatches} generations differ from plain AR decoding");
    }
    Ok(())
}

/// The tree budget's step-cost fit, for the log.
fn fitted_cost(session: &Session<ModelTarget>) -> String {
    let cost = session.step_cost();
    format!(
        "fitted step cost: {:.1} ms for one node, {:.1} ms + {:.2} ms per node for more",
        cost.single / 1e3,
        cost.fixed / 1e3,
        cost.per_node / 1e3
    )
}

/// What the run being replayed could verify: the device's cap on a step's nodes, the
/// cache `samd bench` sizes for the longest prompt and `--max-tokens`, whose room cuts
/// the trees near the end of each reply, and the prompt rows its prefill reads.
fn replay_limits(args: &BenchArgs, traces: &[BenchTrace]) -> Result<ReplayLimits> {
    let max_new = args.max_tokens as usize;
    if let Some(t) = traces
        .iter()
        .find(|t| t.tokens.len() - t.prompt_len > max_new)
    {
        bail!(
            "trace of question {} holds {} generated tokens, more than --max-tokens {max_new}: \
             replay with the --max-tokens of the run that recorded it",
            t.question_id,
            t.tokens.len() - t.prompt_len
        );
    }
    let longest = traces.iter().map(|t| t.prompt_len).max().unwrap_or(0);
    Ok(ModelTarget::replay_limits(
        args.model.device == DeviceKind::Wgpu,
        longest + max_new + 1,
    ))
}

fn write_json(args: &BenchArgs, json: &str) -> Result<()> {
    if let Some(path) = &args.json {
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
