//! The bench module: aggregation math on hand-made records, the table and JSON, replay on
//! a made-up trace, a whole run against a fake model, and Spec-Bench lines with the real
//! tokenizer (skipped when the model file is absent).

#![allow(clippy::unwrap_used)] // A failed unwrap is a failed test, with its location.

use std::path::PathBuf;

use burn::tensor::read_sync;
use samd_draft::replay::ReplayLimits;
use samd_engine::bench::{
    BenchConfig, BenchError, BenchPrompt, BenchRecord, BenchResult, BenchTrace, CATEGORY_ORDER,
    SimulatedDevice, bench_category, load_prompts, replay_bench, run_bench, select,
    traces_from_jsonl, traces_from_run, traces_to_jsonl,
};
use samd_engine::{Method, Session, TreePolicy};
use samd_model::step_graph::StepPadding;

mod common;
use common::FakeModel;

const VOCAB: u32 = 40;

/// A "model" whose next token depends on the last two, with short cycles so drafts hit.
fn successor(a: u32, b: u32) -> u32 {
    (a + b * 3 + 1) % 11
}

#[allow(clippy::too_many_arguments)]
fn record(
    question_id: u64,
    category: &str,
    method: &str,
    generated: usize,
    steps: usize,
    draft_us: u64,
    verify_us: u64,
    lossless: bool,
) -> BenchRecord {
    BenchRecord {
        question_id,
        category: category.into(),
        method: method.into(),
        prompt_len: 5,
        generated_ids: (0..generated as u32).collect(),
        generated,
        steps,
        step_tokens: generated - 1,
        drafted: steps * 2,
        mat: 0.0,
        tok_s: 0.0,
        time_s: 0.0,
        prefill_us: 10,
        draft_us,
        verify_us,
        stop: Some("max_tokens".into()),
        stop_id: None,
        lossless,
        top_k_ids: Vec::new(),
    }
}

/// Two categories, two prompts in one, AR and SAM on each.
fn hand_made() -> Vec<BenchRecord> {
    vec![
        record(1, "qa", "ar", 11, 10, 0, 1_000, true),
        record(2, "qa", "ar", 21, 20, 0, 2_000, true),
        record(3, "rag", "ar", 31, 30, 0, 3_000, true),
        record(1, "qa", "sam", 11, 5, 100, 400, true),
        record(2, "qa", "sam", 21, 5, 100, 900, true),
        record(3, "rag", "sam", 31, 10, 500, 1_000, false),
    ]
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn aggregates_are_ratios_of_sums() {
    let result = BenchResult::from_records(hand_made());
    let s = &result.summary;
    assert!(s.timed);
    assert_eq!(s.categories, ["qa", "rag"]);
    assert_eq!(s.methods.len(), 2);
    let ar = &s.methods[0];
    let sam = &s.methods[1];
    assert_eq!((ar.method.as_str(), sam.method.as_str()), ("ar", "sam"));
    assert!(close(ar.overall.mat, 1.0));
    assert_eq!(ar.overall.speedup, Some(1.0));

    let qa = &sam.categories[0];
    assert_eq!((qa.category.as_str(), qa.prompts, qa.steps), ("qa", 2, 10));
    assert!(close(qa.mat, 30.0 / 10.0));
    // AR's 3000 µs over SAM's 1500 µs on the same two prompts.
    assert!(close(qa.speedup.unwrap(), 2.0));
    assert!(close(qa.tok_s.unwrap(), 30.0 * 1e6 / 1_500.0));
    assert!(close(qa.drafter_share.unwrap(), 200.0 / 1_500.0));

    let o = &sam.overall;
    assert!(close(o.mat, 60.0 / 20.0));
    assert!(close(o.speedup.unwrap(), 6_000.0 / 3_000.0));
    assert!(close(o.drafter_share.unwrap(), 700.0 / 3_000.0));
    assert_eq!((o.lossless, o.prompts), (2, 3));
    assert_eq!(result.mismatches().count(), 1);
}

#[test]
fn aggregate_mat_is_step_tokens_over_steps() {
    // Step tokens beyond `generated - 1`: the steps made 3 stop ids, which the output
    // leaves out. The record's MAT and the aggregate's both count them, so they agree.
    let mut r = record(7, "qa", "sam", 5, 2, 10, 100, true);
    r.step_tokens = 7;
    let s = BenchResult::from_records(vec![r]).summary;
    assert!(close(s.methods[0].categories[0].mat, 3.5));
}

#[test]
fn speedup_counts_only_prompts_ar_ran() {
    let mut records = hand_made();
    records.retain(|r| !(r.method == "ar" && r.question_id == 2));
    let s = BenchResult::from_records(records).summary;
    let qa = &s.methods[1].categories[0];
    assert_eq!(qa.ar_decode_us, 1_000);
    assert!(close(qa.speedup.unwrap(), 1_000.0 / 1_500.0));
}

#[test]
fn markdown_names_every_method_and_category() {
    let result = BenchResult::from_records(hand_made());
    let md = result.markdown();
    for needle in [
        "| ar |",
        "| sam |",
        "qa",
        "rag",
        "MAT",
        "tok/s",
        "speedup",
        "drafter %",
    ] {
        assert!(md.contains(needle), "{needle:?} missing from\n{md}");
    }
    assert!(md.contains("2.00"), "qa speedup missing from\n{md}");
    assert!(md.contains("NOT LOSSLESS"), "{md}");
    assert!(md.contains("sam on question 3"), "{md}");
    // Header, separator and one row per method all have the same number of cells.
    let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(table.len(), 4);
    let cells = table[0].matches('|').count();
    assert!(
        table.iter().all(|l| l.matches('|').count() == cells),
        "{md}"
    );
}

#[test]
fn json_round_trips() {
    let result = BenchResult::from_records(hand_made());
    let json = result.to_json().unwrap();
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let first = &value["records"][0];
    for key in [
        "question_id",
        "category",
        "method",
        "generated_ids",
        "steps",
        "mat",
        "tok_s",
        "time_s",
        "lossless",
    ] {
        assert!(first.get(key).is_some(), "record lacks {key}");
    }
    assert_eq!(BenchResult::from_json(&json).unwrap(), result);
}

#[test]
fn bad_json_names_its_line() {
    let err = traces_from_jsonl(
        "{\"question_id\":1,\"category\":\"qa\",\"prompt_len\":1,\"tokens\":[1,2]}\n\n{oops",
    )
    .unwrap_err();
    assert!(matches!(err, BenchError::Json { line: 3, .. }), "{err}");
    assert!(err.to_string().starts_with("line 3:"), "{err}");
    let err = traces_from_jsonl(
        "{\"question_id\":1,\"category\":\"qa\",\"prompt_len\":0,\"tokens\":[1]}",
    )
    .unwrap_err();
    assert!(matches!(err, BenchError::Line { line: 1, .. }), "{err}");
}

#[test]
fn replay_gives_mat_of_at_least_one() {
    let unit: Vec<u32> = (3..15).collect();
    let mut tokens = unit.clone();
    tokens.extend(&unit);
    tokens.extend(&unit);
    let traces = vec![
        BenchTrace {
            question_id: 7,
            category: "qa".into(),
            prompt_len: unit.len(),
            tokens: tokens.clone(),
            stop_id: None,
            top_k: None,
        },
        // Nothing generated: counted, not replayed.
        BenchTrace {
            question_id: 8,
            category: "rag".into(),
            prompt_len: 3,
            tokens: vec![1, 2, 3],
            stop_id: None,
            top_k: None,
        },
    ];
    let jsonl = traces_to_jsonl(&traces).unwrap();
    assert_eq!(traces_from_jsonl(&jsonl).unwrap(), traces);

    let result = replay_bench(
        &traces,
        &[Method::Sam, Method::Pld],
        VOCAB,
        None,
        ReplayLimits::NONE,
        None,
    )
    .unwrap();
    let s = &result.summary;
    assert!(!s.timed);
    let names: Vec<&str> = s.methods.iter().map(|m| m.method.as_str()).collect();
    assert_eq!(names, ["ar", "sam", "pld"]);
    assert!(close(s.methods[0].overall.mat, 1.0));
    for m in &s.methods {
        assert!(m.overall.mat >= 1.0, "{} mat {}", m.method, m.overall.mat);
        assert_eq!(m.overall.speedup, None);
        assert_eq!(m.overall.generated, tokens.len() - unit.len());
    }
    assert!(
        s.methods[1].overall.mat > 3.0,
        "sam should copy the repeats"
    );
    let md = result.markdown();
    assert!(md.contains("trace replay"), "{md}");
    assert!(md.contains("| sam |") && md.contains("| pld |"), "{md}");
    // Replay decodes nothing, so it claims no output equal to AR's.
    assert!(
        !md.contains("2/2") && md.contains("no check of the output"),
        "{md}"
    );
}

#[test]
fn replay_on_step_costs_simulates_a_device() {
    // A text that repeats itself, so that drafts are right and long.
    let unit: Vec<u32> = (3..15).collect();
    let tokens: Vec<u32> = unit.iter().cycle().take(unit.len() * 6).copied().collect();
    let traces = vec![BenchTrace {
        question_id: 7,
        category: "qa".into(),
        prompt_len: unit.len(),
        tokens,
        stop_id: None,
        top_k: None,
    }];
    let replay_on = |costs: &str| {
        let device = SimulatedDevice {
            costs: costs.parse().unwrap(),
            padding: StepPadding::PowerOfTwo,
        };
        let result = replay_bench(
            &traces,
            &[Method::Sam],
            VOCAB,
            None,
            ReplayLimits::NONE,
            Some(&device),
        )
        .unwrap();
        assert!(result.summary.timed && result.summary.simulated);
        let md = result.markdown();
        assert!(md.contains("simulated") && md.contains("no check"), "{md}");
        let [ar, sam] = &result.records[..] else {
            panic!("{:?}", result.records)
        };
        // AR takes one-node steps: 59 after the prefill's token, 10 ms each.
        assert_eq!((ar.steps, ar.verify_us), (59, 590_000));
        assert!(sam.steps < ar.steps);
        // Every step costs at least a one-node step, and at most the largest padded one.
        let (least, most) = (
            sam.steps as f64 * 1e4,
            sam.steps as f64 * device.step_micros(128),
        );
        assert!((least..=most).contains(&(sam.verify_us as f64)), "{sam:?}");
        let nodes = 1.0 + sam.drafted as f64 / sam.steps as f64;
        (result.summary.methods[1].overall.speedup.unwrap(), nodes)
    };
    let (cheap, cheap_nodes) = replay_on("1:10,2:10.5,128:14");
    assert!(cheap > 2.0, "nearly free nodes: {cheap}×");
    // Where a node costs most of a step, the budget verifies fewer of them.
    let (dear, dear_nodes) = replay_on("1:10,2:18,128:650");
    assert!(
        dear_nodes < cheap_nodes,
        "{dear_nodes} against {cheap_nodes}"
    );
    assert!(dear < cheap, "{dear}× against {cheap}×");
}

fn fake_prompt(question_id: u64, category: &str, ids: Vec<u32>) -> BenchPrompt {
    BenchPrompt {
        question_id,
        category: bench_category(category).into(),
        subcategory: category.into(),
        ids,
    }
}

fn fake_prompts() -> Vec<BenchPrompt> {
    vec![
        fake_prompt(1, "writing", vec![1, 2, 3, 4]),
        fake_prompt(2, "qa", vec![5, 6]),
        fake_prompt(3, "qa", vec![7, 8, 9, 7, 8]),
        fake_prompt(4, "coding", vec![9]),
    ]
}

/// Every method on `prompts`, on `model`, verifying every drafted node that fits (as
/// replay does; the fake's timings are noise), AR's top-k recorded for Token Recycling's
/// replay.
fn fake_run(
    model: FakeModel,
    prompts: Vec<BenchPrompt>,
    stop_ids: Vec<u32>,
) -> (Vec<BenchPrompt>, BenchResult, Vec<(usize, usize)>) {
    let mut session = Session::new(model, None);
    session.set_tree_policy(TreePolicy::Full);
    let config = BenchConfig {
        methods: vec![
            Method::Sam,
            Method::Pld,
            Method::Tr,
            Method::SamTr,
            Method::Sam,
        ],
        max_new_tokens: FAKE_RUN_TOKENS,
        stop_ids,
        corpus: None,
        warmup: true,
        trace_top_k: 8,
    };
    let mut seen = Vec::new();
    let result = read_sync(run_bench(&mut session, &prompts, &config, |p| {
        seen.push((p.done, p.total, p.record.method.clone()));
    }))
    .unwrap();
    let runs = prompts.len() * 5;
    assert_eq!(result.records.len(), runs);
    assert_eq!(seen.len(), runs);
    assert_eq!(seen[0], (1, runs, "ar".to_owned()));
    assert_eq!(seen[runs - 1].0, runs);
    assert_eq!(result.mismatches().count(), 0);
    let trees = session.target().trees.clone();
    (prompts, result, trees)
}

const FAKE_RUN_TOKENS: usize = 60;

/// Asserts that replaying the run's AR outputs under `limits` predicts AR's, SAM's and
/// PLD's real steps and MAT exactly, and returns the replay.
fn assert_replay_predicts(
    prompts: &[BenchPrompt],
    result: &BenchResult,
    limits: ReplayLimits,
) -> BenchResult {
    let traces = traces_from_run(prompts, &result.records);
    assert_eq!(traces.len(), prompts.len());
    let replayed = replay_bench(
        &traces,
        &[Method::Sam, Method::Pld, Method::Tr],
        VOCAB,
        None,
        limits,
        None,
    )
    .unwrap();
    for name in ["ar", "sam", "pld"] {
        let real = result.summary.methods.iter().find(|m| m.method == name);
        let rep = replayed.summary.methods.iter().find(|m| m.method == name);
        let (real, rep) = (&real.unwrap().overall, &rep.unwrap().overall);
        assert_eq!((real.steps, real.mat), (rep.steps, rep.mat), "{name}");
    }
    replayed
}

#[test]
fn a_fake_run_is_lossless_and_replays_to_the_same_mat() {
    let (prompts, result, _) = fake_run(
        FakeModel::new(VOCAB, 4096, successor, 3),
        fake_prompts(),
        vec![],
    );
    for r in &result.records {
        assert_eq!(r.generated_ids.len(), FAKE_RUN_TOKENS);
        assert_eq!(r.stop.as_deref(), Some("max_tokens"));
        assert!(r.steps > 0);
    }
    assert_eq!(result.summary.categories, ["multi-turn", "qa"]);
    let sam_mat = result.summary.methods[1].overall.mat;
    assert!(sam_mat > 1.5, "sam mat {sam_mat}");

    let traces = traces_from_run(&prompts, &result.records);
    for t in &traces {
        let top_k = t.top_k.as_ref().expect("AR recorded its top-k");
        assert_eq!(top_k.k, 8);
        assert_eq!(top_k.ids.len(), (t.tokens.len() - 1) * 8);
        // From the prompt's last position on, column 0 is the greedy next token.
        for (q, row) in top_k.ids.chunks(8).enumerate().skip(t.prompt_len - 1) {
            assert_eq!(row[0], t.tokens[q + 1], "position {q}");
        }
    }
    let replayed = assert_replay_predicts(&prompts, &result, ReplayLimits::NONE);
    // With the recorded rows, Token Recycling learns in replay too.
    let tr = replayed.summary.methods.iter().find(|m| m.method == "tr");
    assert!(
        tr.unwrap().overall.mat > 1.5,
        "replayed tr {:?}",
        tr.map(|m| m.overall.mat)
    );
}

#[test]
fn a_capped_fake_run_replays_to_the_same_steps() {
    // As `samd bench` sizes its cache: the longest prompt and the token budget.
    let longest = fake_prompts().iter().map(|p| p.ids.len()).max().unwrap();
    let limits = ReplayLimits {
        max_tree_nodes: 6,
        capacity: longest + FAKE_RUN_TOKENS + 1,
        prompt_rows: 2,
    };
    let mut model = FakeModel::new(VOCAB, limits.capacity, successor, 3);
    model.max_nodes = limits.max_tree_nodes;
    model.recycled = limits.prompt_rows;
    let (prompts, result, trees) = fake_run(model, fake_prompts(), vec![]);
    // The traces hold every position's top-k, though the prefill reads the prompt's
    // last two alone for Token Recycling.
    for t in traces_from_run(&prompts, &result.records) {
        let top_k = t.top_k.expect("AR recorded its top-k");
        assert_eq!(top_k.ids.len(), (t.tokens.len() - 1) * top_k.k);
    }
    // Both cuts bound: trees of the cap, and trees of the room near the end.
    assert!(trees.iter().any(|&(room, nodes)| nodes == 6 && room > 6));
    assert!(trees.iter().any(|&(room, nodes)| nodes == room && room < 6));
    let capped = assert_replay_predicts(&prompts, &result, limits);
    let whole = replay_bench(
        &traces_from_run(&prompts, &result.records),
        &[Method::Sam],
        VOCAB,
        None,
        ReplayLimits::NONE,
        None,
    )
    .unwrap();
    assert!(whole.summary.methods[1].overall.steps < capped.summary.methods[1].overall.steps);
}

#[test]
fn a_fake_run_ended_by_a_stop_id_replays_to_the_same_steps() {
    // The last prompt holds a cycle of the successor, so that its drafts run into the
    // stop id from the first step, and past it.
    let mut prompts = fake_prompts();
    prompts.push(fake_prompt(5, "rag", vec![5, 6, 2, 2, 9, 8, 1, 1]));
    let stop_id = 8;
    let limits = ReplayLimits {
        max_tree_nodes: 6,
        capacity: prompts[4].ids.len() + FAKE_RUN_TOKENS + 1,
        prompt_rows: usize::MAX,
    };
    let mut model = FakeModel::new(VOCAB, limits.capacity, successor, 3);
    model.max_nodes = limits.max_tree_nodes;
    let (prompts, result, _) = fake_run(model, prompts, vec![stop_id]);
    let ar_stops: Vec<Option<u32>> = result
        .records
        .iter()
        .filter(|r| r.method == "ar")
        .map(|r| r.stop_id)
        .collect();
    let s = Some(stop_id);
    assert_eq!(ar_stops, [None, s, s, None, s]);

    let traces = traces_from_run(&prompts, &result.records);
    for t in &traces {
        // AR verified the output's last position too when the stop id followed it.
        let top_k = t.top_k.as_ref().expect("AR recorded its top-k");
        let rows = t.tokens.len() - usize::from(t.stop_id.is_none());
        assert_eq!(top_k.ids.len(), rows * top_k.k);
        if t.stop_id.is_some() {
            assert_eq!(top_k.ids[(rows - 1) * top_k.k], stop_id);
        }
    }
    let replayed = assert_replay_predicts(&prompts, &result, limits);
    // Without the stop ids, SAM's replay misses steps.
    let sam_steps = |r: &BenchResult| -> Vec<usize> {
        let of = r.records.iter().filter(|r| r.method == "sam");
        of.map(|r| r.steps).collect()
    };
    let mut without_stops = traces;
    for t in &mut without_stops {
        t.stop_id = None;
    }
    let old = replay_bench(&without_stops, &[Method::Sam], VOCAB, None, limits, None).unwrap();
    assert_ne!(sam_steps(&old), sam_steps(&replayed));
}

#[test]
fn select_rotates_over_sub_categories() {
    let mut prompts = fake_prompts();
    prompts.insert(1, prompts[0].clone());
    prompts[1].question_id = 10;
    let picked: Vec<u64> = select(&prompts, 2).iter().map(|p| p.question_id).collect();
    // multi-turn: the first writing, then the coding one before the second writing.
    assert_eq!(picked, [1, 2, 3, 4]);
    let picked: Vec<u64> = select(&prompts, 1).iter().map(|p| p.question_id).collect();
    assert_eq!(picked, [1, 2]);
}

fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The real model's bytes and the Spec-Bench dev lines, or `None` (said on stderr) when
/// either is absent.
fn real_inputs() -> Option<(Vec<u8>, String)> {
    let Ok(bytes) = std::fs::read(model_path()) else {
        eprintln!("skipping: {} not readable", model_path().display());
        return None;
    };
    let data =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/specbench-dev.jsonl");
    let Ok(jsonl) = std::fs::read_to_string(&data) else {
        eprintln!("skipping: {} not readable", data.display());
        return None;
    };
    Some((bytes, jsonl))
}

#[test]
fn spec_bench_lines_load_with_the_real_tokenizer() {
    let Some((bytes, jsonl)) = real_inputs() else {
        return;
    };
    let file = samd_model::GgufFile::parse(&bytes).unwrap();
    let tokenizer = samd_model::Tokenizer::from_gguf(&file).unwrap();
    let prompts = load_prompts(&jsonl, &tokenizer).unwrap();
    assert_eq!(
        prompts.len(),
        jsonl.lines().filter(|l| !l.trim().is_empty()).count()
    );
    for c in CATEGORY_ORDER {
        assert!(prompts.iter().any(|p| p.category == c), "no {c} prompt");
    }
    let first = &prompts[0];
    assert_eq!(first.category, "multi-turn");
    let text = tokenizer.decode(&first.ids).unwrap();
    assert!(text.starts_with("<|im_start|>user\n"), "{text}");
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text}");

    let quick = select(&prompts, 2);
    assert_eq!(quick.len(), 2 * CATEGORY_ORDER.len());

    let bad = format!("{}\nnot json", jsonl.lines().next().unwrap());
    let err = load_prompts(&bad, &tokenizer).unwrap_err();
    assert!(err.to_string().starts_with("line 2:"), "{err}");
    let repeated = format!("{0}\n{0}", jsonl.lines().next().unwrap());
    let err = load_prompts(&repeated, &tokenizer).unwrap_err();
    assert!(matches!(err, BenchError::Line { line: 2, .. }), "{err}");
}

/// Replay on the real model: a CPU run of SAM and prompt lookup under `--tree full`, its
/// trees cut to the 16 nodes a CPU step takes and its outputs ended by stop ids or the
/// token budget, and the replay of its AR traces under the CPU's limits take the same
/// steps and make the same tokens on every prompt, so their MATs are equal.
#[test]
fn replay_predicts_a_real_cpu_run_step_for_step() {
    let Some((bytes, jsonl)) = real_inputs() else {
        return;
    };
    let file = samd_model::GgufFile::parse(&bytes).unwrap();
    let tokenizer = samd_model::Tokenizer::from_gguf(&file).unwrap();
    let model = samd_model::Llama::from_gguf(&file, &burn::tensor::Device::flex()).unwrap();
    // A reply that ends on the end-of-turn id, then the shortest dev prompts (cheap
    // prefills), whose replies the budget cuts.
    let mut dev = load_prompts(&jsonl, &tokenizer).unwrap();
    dev.sort_by_key(|p| p.ids.len());
    let question = "What is the capital of France? Answer in one sentence.";
    let mut prompts = vec![BenchPrompt {
        question_id: 0,
        category: "qa".into(),
        subcategory: "qa".into(),
        ids: tokenizer.encode_chat(question).unwrap(),
    }];
    prompts.extend(dev.into_iter().take(4));
    let max_new_tokens = 40;
    let capacity = prompts.iter().map(|p| p.ids.len()).max().unwrap() + max_new_tokens + 1;
    let mut session = Session::new(samd_engine::ModelTarget::new(model, capacity), None);
    session.set_tree_policy(TreePolicy::Full);
    let config = BenchConfig {
        methods: vec![Method::Sam, Method::Pld],
        max_new_tokens,
        stop_ids: tokenizer.stop_ids(),
        corpus: None,
        warmup: true,
        trace_top_k: 0,
    };
    let result = read_sync(run_bench(&mut session, &prompts, &config, |_| {})).unwrap();
    assert_eq!(result.mismatches().count(), 0);
    let stops: Vec<Option<&str>> = result.records.iter().map(|r| r.stop.as_deref()).collect();
    assert!(stops.contains(&Some("eos")) && stops.contains(&Some("max_tokens")));

    let traces = traces_from_run(&prompts, &result.records);
    let limits = samd_engine::ModelTarget::replay_limits(false, capacity);
    let vocab = u32::try_from(tokenizer.vocab_size()).unwrap();
    let replayed = replay_bench(&traces, &config.methods, vocab, None, limits, None).unwrap();
    let steps = |r: &BenchResult| -> Vec<(u64, String, usize, usize)> {
        let of = r.records.iter();
        of.map(|r| (r.question_id, r.method.clone(), r.steps, r.step_tokens))
            .collect()
    };
    assert_eq!(steps(&replayed), steps(&result));
}
