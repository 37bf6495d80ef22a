//! Scenarios that more than one wgpu test binary runs: `#[path]`-included, so each binary
//! compiles only the files it names (tests/common/mod.rs holds the device alone).

use burn::tensor::read_sync;
use samd_model::{AncestorMask, Draw, Llama};

/// Steps replayed from captured graphs ([`samd_model::step_graph`]) give the ids the
/// same steps give launched one by one, step after step: the refilled inputs, the padding
/// to a graph's size and compaction between steps change nothing. Greedy and sampling
/// steps (with and without a nucleus) interleave, each draw with its own seed, so a replay
/// that kept the last draw's words or positions would draw other ids.
pub fn assert_replays_match_launches(replayed: Llama) {
    let mut launched = replayed.clone();
    launched.set_step_graphs(false);
    let prompt = [3u32, 14, 15, 9, 26];
    let prompt_positions: Vec<u32> = (0..prompt.len() as u32).collect();
    let mut caches = [replayed.new_cache(64), launched.new_cache(64)];
    for cache in &mut caches {
        replayed
            .forward(cache, &prompt, &prompt_positions, &AncestorMask::causal(5))
            .expect("prefill");
        cache.compact(&[0, 1, 2, 3, 4]).expect("commit the prompt");
    }
    let draw = |seed: u64, top_p: f32| {
        Some(Draw {
            temperature: 2.0,
            top_p,
            seed,
        })
    };
    // (each node's parent, the nodes accepted, the draw): chains and trees of sizes that
    // share a graph (5 and 6 nodes both replay the 8-node one), sizes seen before, and
    // each way of picking the next token replayed at least once.
    let chain: &[Option<usize>] = &[None, Some(0), Some(1), Some(2), Some(3)];
    let fork: &[Option<usize>] = &[None, Some(0), Some(0)];
    let tree: &[Option<usize>] = &[None, Some(0), Some(0), Some(1), Some(2), Some(4)];
    let steps: [Step; 11] = [
        (&[None], &[0], None),
        (fork, &[0, 2], None),
        (&[None], &[0], None),
        (chain, &[0, 1, 2], None),
        (&[None], &[0], draw(1, 1.0)),
        (chain, &[0, 1], draw(2, 0.9)),
        (fork, &[0, 1], draw(3, 1.0)),
        (tree, &[0, 2, 4, 5], draw(4, 0.9)),
        (&[None], &[0], draw(5, 1.0)),
        (fork, &[0], None),
        (fork, &[0, 2], draw(6, 1.0)),
    ];
    for (step, (parents, accepted, draw)) in steps.into_iter().enumerate() {
        let mask = AncestorMask::from_parents(parents).expect("mask");
        let past = caches[0].len() as u32;
        let tokens: Vec<u32> = (0..parents.len() as u32)
            .map(|i| (7 + 11 * i + past) % 64)
            .collect();
        let positions: Vec<u32> = (0..parents.len())
            .map(|i| past + depth(parents, i))
            .collect();
        let ids: Vec<Vec<u32>> = [&replayed, &launched]
            .into_iter()
            .zip(&mut caches)
            .map(|(model, cache)| {
                let ids = model
                    .forward_ids(cache, &tokens, &positions, &mask, 8, draw.as_ref())
                    .expect("step");
                let drawn = usize::from(draw.is_some());
                assert_eq!(ids.dims(), [parents.len(), drawn + 8]);
                let ids = read_sync(ids.read()).expect("read ids");
                cache.compact(accepted).expect("compact");
                ids
            })
            .collect();
        assert_eq!(ids[0], ids[1], "step {step}: replayed ids differ");
    }
    assert!(
        caches[0].captured_steps() >= 6,
        "greedy steps of 1, 4 and 8 nodes, draws of 1 and 4 and nucleus draws of 8 were \
         captured: {}",
        caches[0].captured_steps()
    );
    assert_eq!(caches[1].captured_steps(), 0);
}

/// A verify step: each node's parent, the nodes accepted, and the draw (`None`: greedy).
type Step<'a> = (&'a [Option<usize>], &'a [usize], Option<Draw>);

/// Node `i`'s depth below the tree's root.
fn depth(parents: &[Option<usize>], mut i: usize) -> u32 {
    let mut d = 0;
    while let Some(p) = parents[i] {
        i = p;
        d += 1;
    }
    d
}
