//! Speculative sampling keeps the model's distribution: on a tiny random-weight model
//! with an 8-token vocabulary, the first three tokens drawn by SAM speculation (drafts
//! accepted and rejected at several depths) follow the exact distribution computed from
//! the model's logits, by a chi-square test; and the same test rejects draws made at a
//! wrong temperature, so it has the power to catch a biased sampler.
//!
//! Seeds are fixed, so the outcome is deterministic; the threshold is the 1 - 1e-4
//! quantile, so a correct sampler fails it for about one seed set in 10,000.

use burn::tensor::{Device, read_sync};
use samd_engine::{GenerateOptions, Method, ModelTarget, Sampling, Session, TreePolicy};
use samd_model::{AncestorMask, Llama, LlamaConfig};

const VOCAB: usize = 8;
const DEPTH: usize = 3;
const DRAWS: u64 = 4000;
/// Repeats the model's likeliest token, so that the dynamic automaton drafts it at every
/// step and drafts are often accepted.
const PROMPT: [u32; 8] = [1, 2, 2, 2, 1, 2, 2, 2];

fn model() -> Llama {
    let config = LlamaConfig {
        vocab_size: VOCAB,
        ..LlamaConfig::tiny()
    };
    Llama::random(config, 5, true, &Device::flex()).expect("tiny model")
}

/// The sampling distribution after `prefix`: softmax at `temperature`, cut to the top-p
/// nucleus (the smallest set of most likely tokens whose mass reaches `top_p`).
fn next_distribution(model: &Llama, prefix: &[u32], sampling: &Sampling) -> Vec<f64> {
    let mut cache = model.new_cache(64);
    let positions: Vec<u32> = (0..prefix.len() as u32).collect();
    let logits = model
        .forward(
            &mut cache,
            prefix,
            &positions,
            &AncestorMask::causal(prefix.len()),
        )
        .expect("forward");
    let all = read_sync(logits.read()).expect("readback");
    let last = &all[(prefix.len() - 1) * VOCAB..];
    let t = f64::from(sampling.temperature);
    let max = last.iter().copied().fold(f32::MIN, f32::max);
    let mut p: Vec<f64> = last
        .iter()
        .map(|&l| (f64::from(l - max) / t).exp())
        .collect();
    let z: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= z);
    let mut order: Vec<usize> = (0..VOCAB).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
    let mut mass = 0.0;
    let mut keep = [false; VOCAB];
    for &v in &order {
        keep[v] = true;
        mass += p[v];
        if mass >= f64::from(sampling.top_p) {
            break;
        }
    }
    let kept: f64 = (0..VOCAB).filter(|&v| keep[v]).map(|v| p[v]).sum();
    (0..VOCAB)
        .map(|v| if keep[v] { p[v] / kept } else { 0.0 })
        .collect()
}

/// The exact probability of every sequence of `DEPTH` tokens, indexed in base `VOCAB`.
fn exact(model: &Llama, sampling: &Sampling) -> Vec<f64> {
    let mut probs = vec![1.0; 1];
    for depth in 0..DEPTH {
        let mut next = vec![0.0; probs.len() * VOCAB];
        for (seq, &p) in probs.iter().enumerate() {
            if p == 0.0 {
                continue;
            }
            let mut prefix = PROMPT.to_vec();
            prefix.extend(digits(seq, depth));
            for (v, q) in next_distribution(model, &prefix, sampling)
                .into_iter()
                .enumerate()
            {
                next[seq * VOCAB + v] = p * q;
            }
        }
        probs = next;
    }
    probs
}

fn digits(mut seq: usize, len: usize) -> Vec<u32> {
    let mut out = vec![0; len];
    for d in out.iter_mut().rev() {
        *d = (seq % VOCAB) as u32;
        seq /= VOCAB;
    }
    out
}

/// Counts of each `DEPTH`-token sequence over `DRAWS` generations, and the fraction of
/// steps that accepted at least one draft token.
fn draw(model: &Llama, method: Method, sampling: Sampling) -> (Vec<u64>, f64) {
    let drafter = method.drafter(VOCAB as u32, None).expect("drafter");
    let mut session = Session::new(ModelTarget::new(model.clone(), 64), drafter);
    // Every drafted node: on a CPU the adaptive budget would verify almost none, and the
    // test is about how drafts are accepted.
    session.set_tree_policy(TreePolicy::Full);
    let mut counts = vec![0; VOCAB.pow(DEPTH as u32)];
    let (mut steps, mut accepting) = (0, 0);
    for seed in 0..DRAWS {
        let options = GenerateOptions {
            max_new_tokens: DEPTH,
            stop_ids: vec![],
            sampling: Some(Sampling { seed, ..sampling }),
        };
        let mut event = read_sync(session.start(&PROMPT, options)).expect("start");
        let mut out = Vec::new();
        loop {
            out.extend_from_slice(&event.tokens);
            if event.stop.is_some() {
                break;
            }
            event = read_sync(session.step()).expect("step");
            steps += 1;
            accepting += usize::from(event.tokens.len() > 1);
        }
        let index = out.iter().fold(0, |acc, &t| acc * VOCAB + t as usize);
        counts[index] += 1;
    }
    (counts, accepting as f64 / steps.max(1) as f64)
}

/// Pearson's statistic over cells expecting at least 5 draws (the rest pooled), with its
/// degrees of freedom.
fn chi_square(counts: &[u64], probs: &[f64]) -> (f64, usize) {
    let n = DRAWS as f64;
    let (mut stat, mut cells) = (0.0, 0);
    let (mut pooled_obs, mut pooled_exp) = (0.0, 0.0);
    for (&c, &p) in counts.iter().zip(probs) {
        let e = p * n;
        if e >= 5.0 {
            stat += (c as f64 - e).powi(2) / e;
            cells += 1;
        } else {
            pooled_obs += c as f64;
            pooled_exp += e;
        }
    }
    if pooled_exp > 0.0 {
        stat += (pooled_obs - pooled_exp).powi(2) / pooled_exp.max(1e-9);
        cells += 1;
    }
    (stat, cells - 1)
}

/// The chi-square quantile at 1 - 1e-4 (Wilson–Hilferty).
fn critical(dof: usize) -> f64 {
    let k = dof as f64;
    let z = 3.719;
    k * (1.0 - 2.0 / (9.0 * k) + z * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

#[test]
fn speculative_sampling_draws_from_the_model_distribution() {
    let model = model();
    for (temperature, top_p) in [(4.0, 1.0), (8.0, 0.75)] {
        let sampling = Sampling::new(temperature, top_p, 0)
            .expect("valid")
            .expect("sampling");
        let probs = exact(&model, &sampling);
        let (counts, accepting) = draw(&model, Method::Sam, sampling);
        let (stat, dof) = chi_square(&counts, &probs);
        eprintln!(
            "T={temperature} top_p={top_p}: chi2 {stat:.1} on {dof} dof (critical {:.1}); \
             {:.0}% of steps accepted a draft",
            critical(dof),
            accepting * 100.0
        );
        assert!(
            accepting > 0.1,
            "drafts were almost never accepted, so the test would not exercise acceptance"
        );
        assert!(
            stat < critical(dof),
            "speculative sampling is biased: chi2 {stat:.1}"
        );
    }

    // Power: plain draws at a 25% lower temperature are told apart.
    let warm = Sampling::new(4.0, 1.0, 0)
        .expect("valid")
        .expect("sampling");
    let cold = Sampling::new(3.0, 1.0, 0)
        .expect("valid")
        .expect("sampling");
    let (counts, _) = draw(&model, Method::Ar, cold);
    let (stat, dof) = chi_square(&counts, &exact(&model, &warm));
    eprintln!("T=3 draws against T=4: chi2 {stat:.1} on {dof} dof");
    assert!(
        stat > critical(dof),
        "the test cannot tell T=3 from T=4: chi2 {stat:.1}"
    );
}

#[test]
fn bad_sampling_options_are_refused() {
    assert!(Sampling::new(-0.1, 1.0, 0).is_err());
    assert!(Sampling::new(f32::NAN, 1.0, 0).is_err());
    assert!(Sampling::new(f32::INFINITY, 1.0, 0).is_err());
    assert!(Sampling::new(1.0, 0.0, 0).is_err());
    assert!(Sampling::new(1.0, 1.5, 0).is_err());
    assert_eq!(Sampling::new(0.0, 1.0, 0).expect("greedy"), None);
}
