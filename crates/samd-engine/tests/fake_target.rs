//! The loop's logic against a fake model whose next token is a fixed function of the last
//! two tokens: every method must reproduce plain decoding exactly, and the stop rules and
//! bad inputs must behave.

use burn::tensor::read_sync;
use samd_engine::{
    Error, GenerateOptions, Method, Sampling, Session, StopReason, Target, TreePolicy,
};

mod common;
use common::FakeModel;

const VOCAB: u32 = 50;

/// The "model": a deterministic successor function with repeats, so drafts hit.
fn next(a: u32, b: u32) -> u32 {
    (a * 7 + b * 3 + 1) % 23
}

fn session(method: Method, capacity: usize) -> Session<FakeModel> {
    session_on(method, FakeModel::new(VOCAB, capacity, next, 5))
}

fn session_on(method: Method, target: FakeModel) -> Session<FakeModel> {
    let mut session = Session::new(target, method.drafter(VOCAB, None).unwrap());
    // The fake's timings are noise, so the tree policy would be too.
    session.set_tree_policy(TreePolicy::Full);
    session
}

fn options(max: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens: max,
        stop_ids: vec![],
        sampling: None,
    }
}

/// A target that verifies at most a few nodes gets trees cut to that many, and the
/// output stays plain decoding's.
#[test]
fn trees_are_cut_to_what_the_target_verifies() {
    // No longer than the cut: the prefill verifies the prompt as one chain.
    let prompt = [3, 4, 5];
    let (plain, _) = read_sync(session(Method::Ar, 512).generate(&prompt, options(100))).unwrap();
    for (most, method) in [
        (usize::MAX, Method::SamTr),
        (3, Method::SamTr),
        (3, Method::Pld),
    ] {
        let mut target = FakeModel::new(VOCAB, 512, next, 5);
        target.max_nodes = most;
        let mut s = Session::new(target, method.drafter(VOCAB, None).unwrap());
        s.set_tree_policy(TreePolicy::Full);
        let (out, _) = read_sync(s.generate(&prompt, options(100))).unwrap();
        assert_eq!(out, plain, "{method}, at most {most} nodes");
        let largest = s
            .target()
            .trees
            .iter()
            .map(|&(_, nodes)| nodes)
            .max()
            .unwrap_or(0);
        match most {
            usize::MAX => assert!(largest > 3, "{method} drafts trees of more than 3 nodes"),
            _ => assert!(largest <= most, "{method}: a tree of {largest} nodes"),
        }
    }
}

/// Near the end of the context a tree larger than the cache's room keeps the nodes that
/// fit, where it once lost them all.
#[test]
fn trees_near_the_end_of_the_context_are_cut_to_the_room_left() {
    let prompt = [3, 4, 5];
    let (plain, _) = read_sync(session(Method::Ar, 60).generate(&prompt, options(1000))).unwrap();
    let mut s = session(Method::SamTr, 60);
    let (out, stop) = read_sync(s.generate(&prompt, options(1000))).unwrap();
    assert_eq!(stop, StopReason::Context);
    let common = out.len().min(plain.len());
    assert_eq!(out[..common], plain[..common]);
    let trees = &s.target().trees;
    let late: Vec<_> = trees.iter().filter(|&&(room, _)| room <= 8).collect();
    assert!(!late.is_empty(), "{trees:?}");
    assert!(late.iter().all(|&&(_, nodes)| nodes > 1), "{trees:?}");
}

#[test]
fn every_method_reproduces_plain_decoding() {
    let prompt = [3, 4, 5, 6, 7, 3, 4];
    let (plain, _) = read_sync(session(Method::Ar, 512).generate(&prompt, options(200))).unwrap();
    assert_eq!(plain.len(), 200);
    for method in Method::ALL {
        let mut s = session(method, 512);
        let (out, stop) = read_sync(s.generate(&prompt, options(200))).unwrap();
        assert_eq!(out, plain, "{method}");
        assert_eq!(stop, StopReason::MaxTokens);
        // The fake's text cycles quickly, so text-based drafts must be accepted. Token
        // Recycling keys on one token while the fake looks at two, so it gains less.
        let floor = match method {
            Method::Ar => 1.0,
            Method::Tr => 1.05,
            _ => 2.0,
        };
        assert!(
            s.stats().mat() >= floor,
            "{method}: mat {}",
            s.stats().mat()
        );
        // A second request on the same session gives the same output.
        let (again, _) = read_sync(s.generate(&prompt, options(200))).unwrap();
        assert_eq!(again, plain, "{method}, second run");
    }
}

#[test]
fn pruning_trees_to_their_cost_keeps_the_output() {
    let prompt = [3, 4, 5, 6, 7, 3, 4];
    let (plain, _) = read_sync(session(Method::Ar, 512).generate(&prompt, options(200))).unwrap();
    for method in Method::ALL {
        let mut s = session(method, 512);
        s.set_tree_policy(TreePolicy::Adaptive);
        for run in 0..3 {
            let (out, _) = read_sync(s.generate(&prompt, options(200))).unwrap();
            assert_eq!(out, plain, "{method}, run {run}");
        }
    }
}

#[test]
fn a_drafter_handed_back_keeps_what_it_learned() {
    let prompt = [3, 4, 5, 6, 7, 3, 4];
    let mut s = session(Method::Tr, 512);
    read_sync(s.generate(&prompt, options(100))).unwrap();
    let cold = s.stats().mat();
    // A plain request in between, as the demo's race runs them.
    let tr = s.set_drafter(None);
    assert!(tr.is_some());
    read_sync(s.generate(&prompt, options(100))).unwrap();
    assert!(
        s.set_drafter(tr).is_none(),
        "the plain session had no drafter"
    );
    read_sync(s.generate(&prompt, options(100))).unwrap();
    let warm = s.stats().mat();
    assert!(warm > cold, "warm MAT {warm} vs cold {cold}");
}

/// Where rows cost a share of a pass (the CPU), Token Recycling reads the top-k of the
/// prompt's last positions alone, across passes; the output does not change.
#[test]
fn token_recycling_learns_from_the_prompt_positions_the_target_allows() {
    // Three passes of PREFILL_CHUNK (256): 256, 256 and 88 tokens.
    let prompt: Vec<u32> = (0..600).map(|i| (i * 7 % 23) as u32).collect();
    let mut every = session(Method::Tr, 1024);
    let (all_rows, _) = read_sync(every.generate(&prompt, options(1))).unwrap();
    assert_eq!(
        every.target().top_k_rows,
        600,
        "every prompt row, by default"
    );

    for (recycled, rows) in [(1, 1), (100, 100)] {
        let mut target = FakeModel::new(VOCAB, 1024, next, 5);
        target.recycled = recycled;
        let mut last = session_on(Method::Tr, target);
        let (out, _) = read_sync(last.generate(&prompt, options(1))).unwrap();
        assert_eq!(
            last.target().top_k_rows,
            rows,
            "the last {recycled} positions (the last pass holds 88)"
        );
        assert_eq!(out, all_rows);

        // Through a whole generation, the output stays plain decoding's.
        let (plain, _) =
            read_sync(session(Method::Ar, 1024).generate(&prompt, options(100))).unwrap();
        let (tr, _) = read_sync(last.generate(&prompt, options(100))).unwrap();
        assert_eq!(tr, plain);
    }
}

#[test]
fn stops_at_a_stop_id_without_emitting_it() {
    let prompt = [3, 4];
    let (plain, _) = read_sync(session(Method::Ar, 512).generate(&prompt, options(50))).unwrap();
    let stop_id = plain[10];
    let first = plain.iter().position(|&t| t == stop_id).unwrap();
    for method in Method::ALL {
        let opts = GenerateOptions {
            max_new_tokens: 50,
            stop_ids: vec![stop_id],
            sampling: None,
        };
        let mut s = session(method, 512);
        let (out, stop) = read_sync(s.generate(&prompt, opts)).unwrap();
        assert_eq!(stop, StopReason::Eos, "{method}");
        assert_eq!(out, plain[..first], "{method}");
        assert_eq!(s.stats().stop_id, Some(stop_id), "{method}");
    }
}

/// Whether a step of `method` on `prompt` verifies, in one path, a token within the
/// first `budget` and the one after them.
fn a_step_spans(method: Method, prompt: &[u32], budget: usize) -> bool {
    let mut s = session(method, 512);
    let mut event = read_sync(s.start(prompt, options(4 * budget))).unwrap();
    let mut made = event.tokens.len();
    while event.stop.is_none() {
        event = read_sync(s.step()).unwrap();
        if made < budget && made + event.tokens.len() > budget {
            return true;
        }
        made += event.tokens.len();
    }
    false
}

#[test]
fn a_stop_id_just_past_the_budget_stops_at_the_budget_as_plain_decoding_does() {
    // A prompt that holds the output's cycle (88 tokens), so that the first steps' drafts
    // run from within the budget to the stop id just past it.
    let (cycle, _) = read_sync(session(Method::Ar, 512).generate(&[3, 4], options(100))).unwrap();
    let prompt = [&[3, 4], &cycle[..]].concat();
    let (plain, _) = read_sync(session(Method::Ar, 512).generate(&prompt, options(20))).unwrap();
    let budget = 5;
    let stop_id = plain[budget];
    assert!(!plain[..budget].contains(&stop_id), "pick another budget");
    assert!(
        Method::ALL
            .iter()
            .any(|&m| a_step_spans(m, &prompt, budget))
    );
    for method in Method::ALL {
        let mut s = session(method, 512);
        let opts = GenerateOptions {
            max_new_tokens: budget,
            stop_ids: vec![stop_id],
            sampling: None,
        };
        let (out, stop) = read_sync(s.generate(&prompt, opts)).unwrap();
        assert_eq!(stop, StopReason::MaxTokens, "{method}");
        assert_eq!(out, plain[..budget], "{method}");
        assert_eq!(s.stats().stop_id, None, "{method}");
    }
}

#[test]
fn stops_at_the_end_of_the_context() {
    for method in Method::ALL {
        let mut s = session(method, 40);
        let (out, stop) = read_sync(s.generate(&[1, 2, 3], options(1000))).unwrap();
        assert_eq!(stop, StopReason::Context, "{method}");
        assert!(s.target().past_len() < 40);
        assert!(out.len() >= 30, "{method}: {}", out.len());
    }
}

#[test]
fn bad_requests_are_errors_and_the_session_stays_usable() {
    let mut s = session(Method::SamTr, 16);
    assert!(matches!(
        read_sync(s.start(&[], options(5))),
        Err(Error::EmptyPrompt)
    ));
    assert!(matches!(
        read_sync(s.start(&[1; 16], options(5))),
        Err(Error::PromptTooLong {
            len: 16,
            capacity: 16
        })
    ));
    assert!(matches!(
        read_sync(s.start(&[1, 2], options(0))),
        Err(Error::Options { .. })
    ));
    assert!(matches!(
        read_sync(s.start(&[1, VOCAB], options(5))),
        Err(Error::Draft(_))
    ));
    for (temperature, top_p) in [(f32::NAN, 1.0), (-1.0, 1.0), (0.0, 1.0), (1.0, 0.0)] {
        let bad = GenerateOptions {
            sampling: Some(Sampling {
                temperature,
                top_p,
                seed: 0,
            }),
            ..options(5)
        };
        assert!(
            matches!(read_sync(s.start(&[1, 2], bad)), Err(Error::Options { .. })),
            "temperature {temperature}, top-p {top_p}"
        );
    }
    assert!(matches!(read_sync(s.step()), Err(Error::NotStarted)));
    let (out, _) = read_sync(s.generate(&[1, 2], options(5))).unwrap();
    assert_eq!(out.len(), 5);
}

#[test]
fn a_cancelled_step_forces_a_fresh_start() {
    let mut s = session(Method::Sam, 512);
    read_sync(s.start(&[1, 2, 3], options(50))).unwrap();
    // Drop a step future before it completes: poll it zero times.
    drop(s.step());
    s.cancel();
    assert!(matches!(read_sync(s.step()), Err(Error::NotStarted)));
    let (out, _) = read_sync(s.generate(&[1, 2, 3], options(10))).unwrap();
    assert_eq!(out.len(), 10);
}

#[test]
fn unknown_methods_are_named() {
    assert!(matches!(
        Method::parse_list("ar,foo"),
        Err(Error::UnknownMethod { name }) if name == "foo"
    ));
    assert_eq!(
        Method::parse_list("ar,sam+tr").unwrap(),
        vec![Method::Ar, Method::SamTr]
    );
}
