//! `ModelTarget::warm_up` on wgpu (lavapipe): it captures the step graph of every size a
//! verify step pads to, for every method's readback, so that no later generation
//! captures one; and it leaves no trace in what the model then generates.

#[path = "../../samd-model/tests/common/mod.rs"]
mod model_common;

use burn::tensor::{Device, read_sync};
use samd_engine::{GenerateOptions, Method, ModelTarget, Session, Target, TreePolicy};
use samd_model::step_graph::padded_step_sizes;
use samd_model::{Llama, LlamaConfig};

const CAPACITY: usize = 256;

fn tiny_model(device: &Device) -> Llama {
    Llama::random(LlamaConfig::tiny(), 11, true, device).expect("tiny model")
}

/// A prompt that repeats itself, so that SAM and Token Recycling draft trees of many sizes.
fn prompt() -> Vec<u32> {
    (0..96u32).map(|i| (i * 7 % 23) + (i / 40)).collect()
}

/// Greedy outputs of AR, SAM and SAM+TR (every drafted node verified) over `target`, and
/// the step graphs its cache holds after them.
fn generate_all(target: ModelTarget) -> (Vec<Vec<u32>>, usize) {
    let mut session = Session::new(target, None);
    session.set_tree_policy(TreePolicy::Full);
    let mut outputs = Vec::new();
    for method in [Method::Ar, Method::Sam, Method::SamTr] {
        let vocab = session.target().vocab_size();
        session.set_drafter(method.drafter(vocab, None).expect("drafter"));
        let options = GenerateOptions {
            max_new_tokens: 40,
            stop_ids: vec![],
            sampling: None,
        };
        let (out, _) = read_sync(session.generate(&prompt(), options)).expect("generate");
        outputs.push(out);
    }
    (outputs, session.target().captured_steps())
}

#[test]
fn a_warm_up_captures_every_step_size_and_changes_no_output() {
    let Some(gpu) = model_common::wgpu_device() else {
        return;
    };
    let model = tiny_model(&gpu);
    let (cold_outputs, cold_graphs) = generate_all(ModelTarget::new(model.clone(), CAPACITY));

    let mut warm = ModelTarget::new(model, CAPACITY);
    let mut seen = Vec::new();
    let done = read_sync(warm.warm_up(&Method::ALL, |done, total| seen.push((done, total))))
        .expect("warm-up");
    let sizes = padded_step_sizes(warm.max_tree_nodes()).len();
    // Argmax alone (AR, PLD, SAM) and with Token Recycling's top-k: a prompt pass and
    // two steps of each size for both, the second timed.
    assert_eq!(done.passes, 2 * (1 + 2 * sizes));
    assert_eq!(done.graphs, 2 * sizes);
    let mut timed: Vec<usize> = done.timings.iter().map(|&(n, _)| n).collect();
    timed.dedup();
    assert_eq!(
        timed.len(),
        2 * sizes,
        "every size timed, for both readbacks"
    );
    assert_eq!(seen.last(), Some(&(done.passes, done.passes)));
    assert_eq!(seen.len(), done.passes);
    assert_eq!(warm.past_len(), 0, "the warm-up's passes are forgotten");

    let (warm_outputs, warm_graphs) = generate_all(warm);
    assert_eq!(warm_outputs, cold_outputs);
    assert_eq!(warm_graphs, done.graphs, "nothing left to capture");
    assert!(
        cold_graphs > 2,
        "the generations verified trees of several sizes ({cold_graphs} graphs)"
    );
}

#[test]
fn on_the_cpu_a_warm_up_does_nothing() {
    let mut target = ModelTarget::new(tiny_model(&Device::flex()), CAPACITY);
    let done =
        read_sync(target.warm_up(&Method::ALL, |_, _| panic!("no passes"))).expect("warm-up");
    assert_eq!((done.passes, done.graphs), (0, 0));
}

#[test]
fn a_sessions_warm_up_gives_the_tree_budget_its_timings() {
    let Some(gpu) = model_common::wgpu_device() else {
        return;
    };
    let mut session = Session::new(ModelTarget::new(tiny_model(&gpu), CAPACITY), None);
    let guess = session.step_cost();
    let done = read_sync(session.warm_up(&Method::ALL, |_, _| ())).expect("warm-up");
    let single: Vec<f64> = done
        .timings
        .iter()
        .filter(|&&(n, _)| n == 1)
        .map(|&(_, us)| us as f64)
        .collect();
    let (least, most) = single
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    let cost = session.step_cost();
    assert_ne!(cost, guess);
    assert!(
        (least..=most).contains(&cost.single),
        "a one-node step costs what the warm-up's took: {cost:?}, {single:?}"
    );
}
