//! The forward against itself and its definitions: trees against chains, compaction, the
//! quantised and f32 forms, the readbacks.

use super::ids::step_ids;
use super::random::random_weight;
use super::*;
use crate::block_form::HalfFloat;
use crate::config::RopeStyle;
use crate::cpu_matmul::max_abs_diff;
use crate::gguf::GgmlType;
use burn::tensor::read_sync;

/// Max abs difference allowed between a tree forward and the equivalent chain forward:
/// both are f32 with different matmul shapes, so summation order differs slightly.
const TREE_TOLERANCE: f32 = 1e-4;

fn cpu() -> Device {
    Device::flex()
}

/// A small deterministic generator for test inputs.
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
}

fn read_logits(logits: Logits) -> Vec<f32> {
    read_sync(logits.read()).expect("read logits")
}

/// Feeds `tokens` as a chain from the cache's current position and commits them all.
fn feed_chain(model: &Llama, cache: &mut KvCache, tokens: &[u32]) -> Logits {
    let past = cache.len() as u32;
    let positions: Vec<u32> = (0..tokens.len() as u32).map(|i| past + i).collect();
    let logits = model
        .forward(
            cache,
            tokens,
            &positions,
            &AncestorMask::causal(tokens.len()),
        )
        .expect("chain forward");
    let all: Vec<usize> = (0..tokens.len()).collect();
    cache.compact(&all).expect("compact chain");
    logits
}

fn random_tree(rng: &mut Lcg, n: usize, vocab: usize) -> (Vec<u32>, Vec<Option<usize>>) {
    let tokens = (0..n).map(|_| rng.below(vocab) as u32).collect();
    let parents = (0..n)
        .map(|i| if i == 0 { None } else { Some(rng.below(i)) })
        .collect();
    (tokens, parents)
}

fn path_to(parents: &[Option<usize>], node: usize) -> Vec<usize> {
    let mut path = vec![node];
    let mut at = node;
    while let Some(p) = parents[at] {
        path.push(p);
        at = p;
    }
    path.reverse();
    path
}

fn depth_positions(parents: &[Option<usize>], past: usize) -> Vec<u32> {
    (0..parents.len())
        .map(|i| (past + path_to(parents, i).len() - 1) as u32)
        .collect()
}

#[test]
fn ancestor_mask_from_parents_matches_diagram() {
    let mask = AncestorMask::from_parents(&[None, Some(0), Some(1), Some(0)]).expect("mask");
    let rows: Vec<Vec<bool>> = (0..4)
        .map(|i| (0..4).map(|j| mask.allowed(i, j)).collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec![true, false, false, false],
            vec![true, true, false, false],
            vec![true, true, true, false],
            vec![true, false, false, true],
        ]
    );
    let chain = AncestorMask::from_parents(&[None, Some(0), Some(1)]).expect("chain");
    assert_eq!(chain, AncestorMask::causal(3));
    assert!(AncestorMask::from_parents(&[None, Some(1)]).is_err());
}

#[test]
fn tree_forward_equals_each_root_to_node_path_as_a_chain() {
    let config = LlamaConfig::tiny();
    let device = cpu();
    for (case, tied) in [(0u64, true), (1, false), (2, true)] {
        let model = Llama::random(config.clone(), 7 + case, tied, &device).expect("model");
        let mut rng = Lcg(case * 1000 + 3);
        let prompt: Vec<u32> = (0..5 + case as usize)
            .map(|_| rng.below(config.vocab_size) as u32)
            .collect();
        let mut cache = model.new_cache(64);
        feed_chain(&model, &mut cache, &prompt);
        let past = cache.len();

        let n = 12;
        let (tokens, parents) = random_tree(&mut rng, n, config.vocab_size);
        let mask = AncestorMask::from_parents(&parents).expect("mask");
        let positions = depth_positions(&parents, past);
        let mut tree_cache = cache.clone();
        let tree = read_logits(
            model
                .forward(&mut tree_cache, &tokens, &positions, &mask)
                .expect("tree forward"),
        );
        let vocab = config.vocab_size;
        for node in 0..n {
            let path: Vec<u32> = path_to(&parents, node).iter().map(|&i| tokens[i]).collect();
            let mut chain_cache = cache.clone();
            let chain = read_logits(feed_chain(&model, &mut chain_cache, &path));
            let last = &chain[(path.len() - 1) * vocab..path.len() * vocab];
            let row = &tree[node * vocab..(node + 1) * vocab];
            let diff = max_abs_diff(last, row);
            assert!(
                diff <= TREE_TOLERANCE,
                "case {case} node {node}: tree vs chain max abs diff {diff}"
            );
        }
    }
}

#[test]
fn the_last_row_alone_is_the_last_row_of_all_and_fills_the_same_cache() {
    let config = LlamaConfig::tiny();
    let model = Llama::random(config.clone(), 5, true, &cpu()).expect("model");
    let mut rng = Lcg(11);
    // Both sides of CPU_MAX_ROWS: a few-row product, and burn's matmul (the last row
    // apart, in a product of its own).
    for n in [6, 40] {
        let tokens: Vec<u32> = (0..n)
            .map(|_| rng.below(config.vocab_size) as u32)
            .collect();
        let positions: Vec<u32> = (0..n as u32).collect();
        let mask = AncestorMask::causal(n);
        let (mut all_cache, mut last_cache) = (model.new_cache(64), model.new_cache(64));
        let all = read_logits(
            model
                .forward(&mut all_cache, &tokens, &positions, &mask)
                .expect("forward"),
        );
        let last = read_logits(
            model
                .forward_rows(&mut last_cache, &tokens, &positions, &mask, LogitRows::Last)
                .expect("forward of the last row"),
        );
        let vocab = config.vocab_size;
        assert_eq!(last.len(), vocab, "n {n}: one row");
        assert_eq!(last, all[(n - 1) * vocab..], "n {n}");
        // The next token sees the same cache either way.
        let chain: Vec<usize> = (0..n).collect();
        all_cache.compact(&chain).expect("compact");
        last_cache.compact(&chain).expect("compact");
        let next = [rng.below(vocab) as u32];
        let after_all = read_logits(feed_chain(&model, &mut all_cache, &next));
        let after_last = read_logits(feed_chain(&model, &mut last_cache, &next));
        assert_eq!(after_all, after_last, "n {n}");
    }
}

/// A random model of `config` (tied embeddings) and a prompt pass of `n` random
/// tokens over it: tokens, positions and a causal mask.
fn random_prompt_pass(
    config: LlamaConfig,
    seed: u64,
    n: usize,
) -> (Llama, Vec<u32>, Vec<u32>, AncestorMask) {
    let model = Llama::random(config.clone(), seed, true, &cpu()).expect("model");
    let mut rng = Lcg(seed);
    let tokens = (0..n)
        .map(|_| rng.below(config.vocab_size) as u32)
        .collect();
    (
        model,
        tokens,
        (0..n as u32).collect(),
        AncestorMask::causal(n),
    )
}

/// Past [`HEAD_ROWS`] nodes the head and the ids run a slice of rows at a time; the
/// ids, greedy and drawn, are those of the whole forward's logits.
#[test]
fn ids_of_a_forward_in_head_slices_are_those_of_all_its_logits() {
    let config = LlamaConfig {
        context_len: 512,
        ..LlamaConfig::tiny()
    };
    let n = 2 * HEAD_ROWS + 44;
    let (model, tokens, positions, mask) = random_prompt_pass(config, 5, n);
    let draw = Draw {
        temperature: 0.8,
        top_p: 0.9,
        seed: 7,
    };
    let logits = model
        .forward(&mut model.new_cache(n), &tokens, &positions, &mask)
        .expect("forward");
    for draw in [None, Some(&draw)] {
        let whole = step_ids(&logits, 8, draw.map(|d| (d, &positions[..], None)))
            .expect("ids of all logits");
        let sliced = model
            .forward_ids(&mut model.new_cache(n), &tokens, &positions, &mask, 8, draw)
            .expect("ids in slices");
        assert_eq!(sliced.dims(), [n, 8 + usize::from(draw.is_some())]);
        let [whole, sliced] = [whole, sliced].map(|ids| read_sync(ids.read()).expect("read"));
        assert_eq!(sliced, whole, "drawn: {}", draw.is_some());
    }
}

#[test]
fn ids_from_a_node_on_are_the_last_rows_of_every_nodes_ids() {
    let config = LlamaConfig {
        context_len: 512,
        ..LlamaConfig::tiny()
    };
    let n = HEAD_ROWS + 30;
    let (model, tokens, positions, mask) = random_prompt_pass(config, 6, n);
    let draw = Draw {
        temperature: 0.8,
        top_p: 0.9,
        seed: 9,
    };
    for draw in [None, Some(&draw)] {
        let every = model
            .forward_ids(&mut model.new_cache(n), &tokens, &positions, &mask, 8, draw)
            .expect("every node's ids");
        let width = every.dims()[1];
        let every = read_sync(every.read()).expect("read");
        // Past the row-invariant rows, within them, and the last node alone.
        for first in [20, n - CPU_MAX_ROWS, n - 1] {
            let mut cache = model.new_cache(n);
            let ids = model
                .forward_ids_from(&mut cache, &tokens, &positions, &mask, first, 8, draw)
                .expect("ids from a node on");
            assert_eq!(ids.dims(), [n - first, width]);
            let ids = read_sync(ids.read()).expect("read");
            // The last node's ids are plain decoding's, bit for bit; the others may
            // come from products over other tiles of rows.
            assert_eq!(
                ids[(n - 1 - first) * width..],
                every[(n - 1) * width..],
                "from {first}"
            );
        }
    }
    let err = model.forward_ids_from(
        &mut model.new_cache(n),
        &tokens,
        &positions,
        &mask,
        n,
        8,
        None,
    );
    assert!(err.is_err(), "a first node past the last");
}

#[test]
fn compaction_leaves_cache_as_if_only_the_accepted_path_was_fed() {
    let config = LlamaConfig::tiny();
    let device = cpu();
    let model = Llama::random(config.clone(), 11, true, &device).expect("model");
    let mut rng = Lcg(42);
    for round in 0..4 {
        let prompt: Vec<u32> = (0..6)
            .map(|_| rng.below(config.vocab_size) as u32)
            .collect();
        let mut cache = model.new_cache(64);
        feed_chain(&model, &mut cache, &prompt);
        let past = cache.len();
        let (tokens, parents) = random_tree(&mut rng, 10, config.vocab_size);
        let mask = AncestorMask::from_parents(&parents).expect("mask");
        let positions = depth_positions(&parents, past);
        model
            .forward(&mut cache, &tokens, &positions, &mask)
            .expect("tree forward");
        // Accept the path to the last node (round 0: a non-prefix path in general) or
        // to a random node.
        let leaf = if round == 0 { 9 } else { rng.below(10) };
        let accepted = path_to(&parents, leaf);
        cache.compact(&accepted).expect("compact");
        assert_eq!(cache.len(), past + accepted.len());

        let next = [rng.below(config.vocab_size) as u32, 5];
        let got = read_logits(feed_chain(&model, &mut cache, &next));

        let mut reference = model.new_cache(64);
        let fed: Vec<u32> = prompt
            .iter()
            .copied()
            .chain(accepted.iter().map(|&i| tokens[i]))
            .collect();
        feed_chain(&model, &mut reference, &fed);
        let want = read_logits(feed_chain(&model, &mut reference, &next));
        let diff = max_abs_diff(&got, &want);
        assert!(diff <= TREE_TOLERANCE, "round {round}: diff {diff}");
    }
}

#[test]
fn compacting_what_is_no_path_is_an_error_that_changes_nothing() {
    let config = LlamaConfig::tiny();
    let model = Llama::random(config, 3, true, &cpu()).expect("model");
    let mut cache = model.new_cache(16);
    feed_chain(&model, &mut cache, &[1, 2]);
    let parents = [None, Some(0), Some(0), Some(2)];
    let mask = AncestorMask::from_parents(&parents).expect("mask");
    model
        .forward(&mut cache, &[4, 5, 6, 7], &[2, 3, 3, 4], &mask)
        .expect("tree forward");
    for (bad, says) in [
        (&[0, 3, 2][..], "ascend"),
        (&[0, 0][..], "ascend"),
        (&[0, 4][..], "out of range"),
        (&[0, 1, 2, 3, 3][..], "pending"),
    ] {
        let err = cache.compact(bad).expect_err("not a path");
        assert!(err.to_string().contains(says), "{bad:?}: {err}");
        assert_eq!((cache.len(), cache.pending()), (2, 4), "{bad:?}");
    }
    cache.compact(&[0, 2, 3]).expect("a path");
    assert_eq!((cache.len(), cache.pending()), (5, 0));
}

#[test]
fn cache_full_is_an_error_not_a_slide() {
    let config = LlamaConfig::tiny();
    let model = Llama::random(config, 1, true, &cpu()).expect("model");
    let mut cache = model.new_cache(4);
    feed_chain(&model, &mut cache, &[1, 2, 3]);
    let err = model
        .forward(&mut cache, &[4, 5], &[3, 4], &AncestorMask::causal(2))
        .expect_err("overflow");
    assert!(
        matches!(
            err,
            Error::CacheFull {
                need: 5,
                capacity: 4
            }
        ),
        "{err}"
    );
    assert_eq!(cache.len(), 3);
    let err = model
        .forward(&mut cache, &[99], &[3], &AncestorMask::causal(1))
        .expect_err("token range");
    assert!(
        matches!(err, Error::TokenOutOfRange { token: 99, .. }),
        "{err}"
    );
    assert!(
        cache.compact(&[0]).is_err(),
        "nothing pending after an error"
    );
}

#[test]
fn top_k_ids_match_a_host_sort_and_start_with_argmax() {
    let device = cpu();
    let (n, vocab, k) = (5, 40, 8);
    let mut rng = Lcg(9);
    let values: Vec<f32> = (0..n * vocab)
        .map(|_| rng.below(1000) as f32 * 0.01)
        .collect();
    let logits = Logits {
        tensor: Tensor::from_data(TensorData::new(values.clone(), [n, vocab]), &device),
    };
    let top = read_sync(logits.top_k_ids(k).read()).expect("top-k");
    let argmax = read_sync(logits.argmax_ids().read()).expect("argmax");
    for row in 0..n {
        let slice = &values[row * vocab..(row + 1) * vocab];
        let mut order: Vec<usize> = (0..vocab).collect();
        // Descending by value, ties to the lower id.
        order.sort_by(|&a, &b| slice[b].total_cmp(&slice[a]).then(a.cmp(&b)));
        let want: Vec<u32> = order[..k].iter().map(|&i| i as u32).collect();
        assert_eq!(&top[row * k..(row + 1) * k], &want[..], "row {row}");
        assert_eq!(argmax[row], want[0], "row {row}");
    }
}

#[test]
fn a_model_cut_to_its_first_layers_loads_with_that_many() {
    let bytes = tiny_gguf("llama", None, |_| {});
    let file = GgufFile::parse(&bytes).expect("tiny");
    let cut = crate::gguf_writer::keep_first_layers(&file, 1).expect("cut");
    let cut = GgufFile::parse(&cut).expect("valid");
    assert_eq!(LlamaConfig::from_gguf(&cut).expect("config").n_layers, 1);
    assert!(cut.tensors().iter().all(|t| !t.name.starts_with("blk.1.")));
    assert_eq!(
        cut.tensor_bytes("token_embd.weight").expect("kept"),
        file.tensor_bytes("token_embd.weight").expect("orig")
    );
    Llama::from_gguf(&cut, &cpu()).expect("loads");
    for bad in [0, 3] {
        assert!(crate::gguf_writer::keep_first_layers(&file, bad).is_err());
    }
}

/// A GGUF of the tiny config with `Llama::random`'s weights stored as F32, its
/// metadata changed by `edit` before the tensors are added.
fn tiny_gguf(
    arch: &str,
    extra_tensor: Option<&str>,
    edit: impl FnOnce(&mut crate::gguf_writer::GgufWriter),
) -> Vec<u8> {
    use crate::gguf_writer::GgufWriter;
    let c = LlamaConfig::tiny();
    let mut w = GgufWriter::new();
    w.llama_config(arch, &c);
    for name in WeightName::all(&c) {
        if name == WeightName::Output {
            continue; // tied
        }
        let t = random_weight(&c, name, 5);
        let dims: Vec<u64> = t.dims.iter().map(|&d| d as u64).collect();
        w.tensor_f32(&name.gguf_name(), &dims, &t.data);
    }
    if let Some(extra) = extra_tensor {
        w.tensor_f32(extra, &[c.d_model as u64], &vec![0.0; c.d_model]);
    }
    edit(&mut w);
    w.to_bytes()
}

/// A model's weight bytes are what it holds: its parameters as f32 (a tied head
/// counted once), or, loaded from a file in Q8_0 or F16, its matrices' blocks where the
/// CPU's products read them (36 bytes for 32 values in Q8_0: the codes, and the scale as
/// f32; 64 in F16).
#[test]
fn weight_bytes_are_what_the_model_holds() {
    use crate::gguf_writer::GgufWriter;
    let c = LlamaConfig::tiny_quantisable();
    let (q, kv) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    let layer = c.d_model * (q + 2 * kv) + q * c.d_model + 3 * c.d_model * c.d_ffn;
    let head = c.vocab_size * c.d_model;
    let matrices = head + c.n_layers * layer;
    let norms = (2 * c.n_layers + 1) * c.d_model;
    for (tied, values) in [(true, matrices + norms), (false, matrices + norms + head)] {
        let model = Llama::random(c.clone(), 3, tied, &cpu()).expect("model");
        assert_eq!(model.weight_bytes(), 4 * values, "tied: {tied}");
    }
    for (dtype, bytes_per_block) in [(GgmlType::Q8_0, 36), (GgmlType::F16, 64)] {
        let mut w = GgufWriter::new();
        w.llama_config("llama", &c);
        for name in WeightName::all(&c) {
            if name == WeightName::Output {
                continue; // tied
            }
            let t = random_weight(&c, name, 3);
            let dims: Vec<u64> = t.dims.iter().map(|&d| d as u64).collect();
            match (dims.len(), dtype) {
                (2, GgmlType::Q8_0) => w.tensor_q8_0(&name.gguf_name(), &dims, &t.data),
                (2, _) => w.tensor_f16(&name.gguf_name(), &dims, &t.data),
                _ => w.tensor_f32(&name.gguf_name(), &dims, &t.data),
            };
        }
        let bytes = w.to_bytes();
        let file = GgufFile::parse(&bytes).expect("parse");
        let model = Llama::from_gguf(&file, &cpu()).expect("load");
        let form = crate::block_form::BlockForm::of(dtype).expect("a block form");
        let held = if crate::cpu_matmul::reads_blocks_of(form) {
            matrices / 32 * bytes_per_block
        } else {
            4 * matrices
        };
        assert_eq!(model.weight_bytes(), held + 4 * norms, "{dtype}");
    }
}

#[test]
fn from_gguf_loads_the_same_model_as_from_weights() {
    let bytes = tiny_gguf("llama", None, |_| {});
    let file = GgufFile::parse(&bytes).expect("parse");
    assert_eq!(
        LlamaConfig::from_gguf(&file).expect("config"),
        LlamaConfig::tiny()
    );
    let device = cpu();
    let loaded = Llama::from_gguf(&file, &device).expect("load");
    let random = Llama::random(LlamaConfig::tiny(), 5, true, &device).expect("random");
    let tokens = [1, 2, 3, 60];
    let run = |m: &Llama| {
        let mut cache = m.new_cache(8);
        read_logits(feed_chain(m, &mut cache, &tokens))
    };
    assert_eq!(run(&loaded), run(&random));
}

/// A Qwen2 file is a Llama with q/k/v biases whose q/k rows pair the halves of each head
/// (NEOX RoPE, HF's order): written so from a model's weights, with each head's rows
/// `2i` and `2i + 1` stored at `i` and `i + head_dim / 2`, it loads as that model, bit
/// for bit, on the CPU. (`tests/fixtures/tiny_qwen2*` hold the same to an independent
/// forward pass.)
#[test]
fn a_qwen2_file_loads_as_the_llama_with_biases_it_reorders() {
    use crate::gguf_writer::GgufWriter;
    let c = LlamaConfig {
        qkv_bias: true,
        ..LlamaConfig::tiny()
    };
    let half = c.head_dim / 2;
    // The file's row r of a head holds the model's row `stored_from(r)`.
    let stored_from = |r: usize| {
        let (head, i) = (r / c.head_dim, r % c.head_dim);
        head * c.head_dim + if i < half { 2 * i } else { 2 * (i - half) + 1 }
    };
    let mut w = GgufWriter::new();
    w.llama_config("qwen2", &c);
    for name in WeightName::all(&c) {
        if name == WeightName::Output {
            continue; // tied
        }
        let t = random_weight(&c, name, 5);
        let row = if t.dims.len() == 1 { 1 } else { t.dims[0] };
        let data: Vec<f32> = match name.feeds_rope() {
            true => (0..t.data.len() / row)
                .flat_map(|r| &t.data[stored_from(r) * row..][..row])
                .copied()
                .collect(),
            false => t.data,
        };
        let dims: Vec<u64> = t.dims.iter().map(|&d| d as u64).collect();
        w.tensor_f32(&name.gguf_name(), &dims, &data);
    }
    let bytes = w.to_bytes();
    let file = GgufFile::parse(&bytes).expect("parse");
    let config = LlamaConfig::from_gguf(&file).expect("config");
    assert_eq!(
        (config.rope_style, config.qkv_bias),
        (RopeStyle::Neox, true)
    );
    let device = cpu();
    let loaded = Llama::from_gguf(&file, &device).expect("load");
    let interleaved = LlamaConfig {
        rope_style: RopeStyle::Interleaved,
        ..config
    };
    let random = Llama::random(interleaved, 5, true, &device).expect("random");
    let unbiased = Llama::random(LlamaConfig::tiny(), 5, true, &device).expect("random");
    let tokens = [1, 2, 3, 60];
    let run = |m: &Llama| {
        let mut cache = m.new_cache(8);
        read_logits(feed_chain(m, &mut cache, &tokens))
    };
    let logits = run(&loaded);
    assert_eq!(logits, run(&random));
    assert_ne!(logits, run(&unbiased), "the biases count");
}

/// Other architectures are refused by name, and so is a file with a tensor the forward
/// pass would not read (an output bias, a router), or with some of a block's q/k/v biases
/// but not all.
#[test]
fn from_gguf_rejects_other_architectures_and_tensors_it_would_not_read() {
    let bytes = tiny_gguf("gemma", None, |_| {});
    let file = GgufFile::parse(&bytes).expect("parse");
    let err = LlamaConfig::from_gguf(&file).expect_err("gemma");
    assert!(
        matches!(err, Error::UnsupportedArchitecture { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("gemma"), "{err}");

    for unread in ["blk.0.attn_output.bias", "blk.1.ffn_gate_inp.weight"] {
        let bytes = tiny_gguf("llama", Some(unread), |_| {});
        let file = GgufFile::parse(&bytes).expect("parse");
        for err in [
            Llama::from_gguf(&file, &cpu()).expect_err(unread),
            Llama::check_gguf(&file).expect_err(unread),
        ] {
            assert!(
                matches!(err, Error::UnsupportedArchitecture { .. }),
                "{err}"
            );
            assert!(err.to_string().contains(unread), "{err}");
        }
    }

    // A query bias says the file has biases; the key's is then missing.
    let bytes = tiny_gguf("llama", Some("blk.0.attn_q.bias"), |_| {});
    let file = GgufFile::parse(&bytes).expect("parse");
    let err = Llama::from_gguf(&file, &cpu()).expect_err("bias");
    assert!(err.to_string().contains("blk.0.attn_k.bias"), "{err}");

    let bytes = tiny_gguf("llama", None, |w| {
        w.without_metadata("llama.attention.head_count");
    });
    let file = GgufFile::parse(&bytes).expect("parse");
    let err = LlamaConfig::from_gguf(&file).expect_err("missing key");
    assert!(
        err.to_string().contains("llama.attention.head_count"),
        "{err}"
    );
}

/// A Llama file asking for what the forward pass does not do is refused by name, where
/// it would otherwise load and give wrong logits; values that restate the defaults pass.
#[test]
fn from_gguf_refuses_llama_variants_it_would_get_wrong() {
    use crate::gguf::Value;
    type Edit = fn(&mut crate::gguf_writer::GgufWriter);
    let refused: [(&str, Edit); 6] = [
        ("llama.rope.scaling.type = \"linear\"", |w| {
            w.metadata("llama.rope.scaling.type", Value::String("linear".into()));
        }),
        ("llama.rope.scaling.type = \"yarn\"", |w| {
            w.metadata("llama.rope.scaling.type", Value::String("yarn".into()));
        }),
        ("llama.rope.scaling.factor = 4", |w| {
            w.metadata("llama.rope.scaling.factor", Value::F32(4.0));
        }),
        ("llama.expert_count = 8", |w| {
            w.metadata("llama.expert_count", Value::U32(8));
        }),
        ("llama.attention.value_length = 4", |w| {
            w.metadata("llama.attention.value_length", Value::U32(4));
        }),
        ("llama.rope.dimension_count = 4", |w| {
            w.metadata("llama.rope.dimension_count", Value::U32(4));
        }),
    ];
    for (what, edit) in refused {
        let bytes = tiny_gguf("llama", None, edit);
        let file = GgufFile::parse(&bytes).expect("parse");
        let err = Llama::from_gguf(&file, &cpu()).expect_err(what);
        assert!(
            matches!(err, Error::UnsupportedArchitecture { .. }),
            "{what}: {err}"
        );
        assert!(err.to_string().contains(what), "{what}: {err}");
    }
    let defaults: [Edit; 2] = [
        |w| {
            w.metadata("llama.rope.scaling.type", Value::String("none".into()))
                .metadata("llama.rope.scaling.factor", Value::F32(1.0))
                .metadata("llama.expert_count", Value::U32(0));
        },
        |w| {
            let width = LlamaConfig::tiny().head_dim as u32;
            for key in ["key_length", "value_length"] {
                w.metadata(&format!("llama.attention.{key}"), Value::U32(width));
            }
            w.metadata("llama.rope.dimension_count", Value::U32(width));
        },
    ];
    for edit in defaults {
        let bytes = tiny_gguf("llama", None, edit);
        let file = GgufFile::parse(&bytes).expect("parse");
        assert_eq!(
            LlamaConfig::from_gguf(&file).expect("defaults restated"),
            LlamaConfig::tiny()
        );
    }
}

/// RoPE frequency factors divide each pair's angle: with every factor 2, positions 0, 2
/// and 4 turn as 0, 1 and 2 do without factors (exactly: halving is exact), so the two
/// models give the same logits bit for bit, and other positions do not.
#[test]
fn rope_frequency_factors_divide_the_angles() {
    let device = cpu();
    let plain = Llama::random(LlamaConfig::tiny(), 7, true, &device).expect("model");
    let halved = LlamaConfig {
        rope_freq_factors: vec![2.0; LlamaConfig::tiny().head_dim / 2],
        ..LlamaConfig::tiny()
    };
    let halved = Llama::random(halved, 7, true, &device).expect("model");
    let run = |m: &Llama, positions: &[u32]| {
        let mut cache = m.new_cache(8);
        let logits = m
            .forward(&mut cache, &[3, 9, 27], positions, &AncestorMask::causal(3))
            .expect("forward");
        read_logits(logits)
    };
    assert_eq!(run(&halved, &[0, 2, 4]), run(&plain, &[0, 1, 2]));
    assert_ne!(run(&halved, &[0, 1, 2]), run(&plain, &[0, 1, 2]));
}

/// A file's `rope_freqs.weight` becomes the config's factors; one of the wrong length, or
/// with a factor that is not positive, is refused by name.
#[test]
fn from_gguf_reads_rope_frequency_factors_and_refuses_bad_ones() {
    let pairs = LlamaConfig::tiny().head_dim / 2;
    let with_factors = |factors: Vec<f32>| {
        tiny_gguf("llama", None, move |w| {
            w.tensor_f32("rope_freqs.weight", &[factors.len() as u64], &factors);
        })
    };
    let factors: Vec<f32> = (1..=pairs).map(|i| i as f32).collect();
    let bytes = with_factors(factors.clone());
    let file = GgufFile::parse(&bytes).expect("parse");
    let config = LlamaConfig::from_gguf(&file).expect("config");
    assert_eq!(config.rope_freq_factors, factors);
    Llama::from_gguf(&file, &cpu()).expect("load");

    let mut bad = vec![vec![1.0; pairs + 1], vec![1.0; pairs], vec![1.0; pairs]];
    bad[1][0] = 0.0;
    bad[2][pairs - 1] = f32::NAN;
    for factors in bad {
        let bytes = with_factors(factors.clone());
        let file = GgufFile::parse(&bytes).expect("parse");
        let err = LlamaConfig::from_gguf(&file).expect_err("bad factors");
        assert!(
            matches!(err, Error::InvalidConfig { .. })
                && err.to_string().contains("rope_freqs.weight"),
            "{factors:?}: {err}"
        );
    }
}

/// What the load would refuse, the check finds without reading a weight: a missing
/// weight, one of other dims, one of a type samd cannot read.
#[test]
fn check_gguf_finds_what_the_load_refuses() {
    let c = LlamaConfig::tiny();
    let good = tiny_gguf("llama", None, |_| {});
    let file = GgufFile::parse(&good).expect("parse");
    assert_eq!(Llama::check_gguf(&file).expect("check"), c);

    let last = "blk.1.ffn_down.weight";
    type Edit = fn(&mut crate::gguf_writer::GgufWriter);
    let cases: [(&str, Edit); 3] = [
        ("missing weight", |w| {
            w.without_tensor("blk.1.ffn_down.weight");
        }),
        ("has dims", |w| {
            let c = LlamaConfig::tiny();
            w.without_tensor("blk.1.ffn_down.weight").tensor_f32(
                "blk.1.ffn_down.weight",
                &[c.d_model as u64, c.d_ffn as u64],
                &vec![0.0; c.d_ffn * c.d_model],
            );
        }),
        ("cannot dequantise", |w| {
            let c = LlamaConfig::tiny();
            w.without_tensor("blk.1.ffn_down.weight").tensor_raw(
                "blk.1.ffn_down.weight",
                &[c.d_ffn as u64, c.d_model as u64],
                GgmlType::F64,
                vec![0; c.d_ffn * c.d_model * 8],
            );
        }),
    ];
    for (says, edit) in cases {
        let bytes = tiny_gguf("llama", None, edit);
        let file = GgufFile::parse(&bytes).expect("parse");
        let checked = Llama::check_gguf(&file).expect_err(says).to_string();
        assert!(
            checked.contains(last) && checked.contains(says),
            "{checked}"
        );
        let loaded = Llama::from_gguf(&file, &cpu()).expect_err(says);
        assert_eq!(loaded.to_string(), checked);
    }
}

/// A model as llama.cpp's presets write one (Q5_0 and Q8_0 side by side in q|k|v,
/// IQ4_NL, Q4_K, IQ4_XS, Q5_1, Q5_K, Q3_K, Q6_K), held in blocks of other kinds, gives
/// the logits of the same file dequantised to f32, bit for bit, in a prompt's pass:
/// more rows than [`CPU_MAX_ROWS`] take burn's matmul, over each matrix widened from
/// the blocks in one model and dequantised from the file in the other. (A step's few
/// rows read the blocks in both; `cpu_matmul::check_block_products` holds that code
/// to the dequantised values for each kind.)
#[test]
fn other_types_held_as_blocks_give_the_f32_models_logits() {
    use crate::gguf_writer::GgufWriter;
    let c = LlamaConfig {
        d_model: 256,
        d_ffn: 256,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        n_layers: 3,
        ..LlamaConfig::tiny()
    };
    let mut w = GgufWriter::new();
    w.llama_config("llama", &c);
    for (seed, name) in (0u64..).zip(WeightName::all(&c)) {
        let dims = name.expected_dims(&c);
        if let [len] = dims[..] {
            w.tensor_f32(&name.gguf_name(), &[len as u64], &vec![1.0; len]);
            continue;
        }
        let dtype = match name {
            WeightName::Output => continue, // tied
            WeightName::TokenEmbd | WeightName::AttnQ(_) | WeightName::AttnK(_) => GgmlType::Q5_0,
            WeightName::AttnV(_) => GgmlType::Q8_0,
            WeightName::AttnOutput(0) => GgmlType::IQ4_NL,
            WeightName::AttnOutput(1) => GgmlType::Q5_1,
            WeightName::AttnOutput(_) => GgmlType::Q3_K,
            WeightName::FfnGate(0) | WeightName::FfnUp(0) => GgmlType::Q4_K,
            WeightName::FfnGate(1) | WeightName::FfnUp(1) => GgmlType::F16,
            WeightName::FfnGate(_) | WeightName::FfnUp(_) => GgmlType::BF16,
            WeightName::FfnDown(0) => GgmlType::IQ4_XS,
            WeightName::FfnDown(1) => GgmlType::Q5_K,
            WeightName::FfnDown(_) => GgmlType::Q6_K,
            _ => unreachable!("{name:?} is a vector, written above"),
        };
        let blocks = dims[0] * dims[1] / dtype.block_size() as usize;
        let bytes = crate::block_rows::random_blocks(dtype, blocks, seed);
        let dims: Vec<u64> = dims.iter().map(|&d| d as u64).collect();
        w.tensor_raw(&name.gguf_name(), &dims, dtype, bytes);
    }
    let bytes = w.to_bytes();
    let file = GgufFile::parse(&bytes).expect("parse");
    let tokens: Vec<u32> = (0..CPU_MAX_ROWS as u32 + 4).map(|i| i * 7 % 64).collect();
    let run = |form| {
        let model = Llama::from_gguf_with(&file, &cpu(), form).expect("load");
        let mut cache = model.new_cache(tokens.len());
        read_logits(feed_chain(&model, &mut cache, &tokens))
    };
    let (blocks, f32s) = (run(MatrixForm::Blocks), run(MatrixForm::F32));
    assert!(blocks.iter().all(|x| x.is_finite()));
    assert_eq!(blocks, f32s);
}

/// A weight that reads as NaN or infinity (a damaged scale in a block, a float) is
/// refused at load, by name: run, it would make every logit NaN.
#[test]
fn a_weight_that_is_not_a_finite_number_is_refused_by_name() {
    use crate::gguf_writer::{GgufWriter, half_bytes, q8_0_bytes};
    let c = LlamaConfig::tiny_quantisable();
    let file = |damaged: WeightName, value: [u8; 2]| {
        let mut w = GgufWriter::new();
        w.llama_config("llama", &c);
        for name in WeightName::all(&c).filter(|&n| n != WeightName::Output) {
            let t = random_weight(&c, name, 3);
            let dims: Vec<u64> = t.dims.iter().map(|&d| d as u64).collect();
            // Matrices in Q8_0 but the attention's outputs, in F16; vectors in F32.
            let (dtype, mut bytes) = match (dims.len(), name) {
                (2, WeightName::AttnOutput(_)) => {
                    (GgmlType::F16, half_bytes(HalfFloat::F16, &t.data))
                }
                (2, _) => (GgmlType::Q8_0, q8_0_bytes(&t.data)),
                _ => (
                    GgmlType::F32,
                    t.data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
            };
            if name == damaged {
                // The last block's scale (an f16), the first f16, or the first float's
                // top half.
                let at = match dtype {
                    GgmlType::Q8_0 => bytes.len() - 34,
                    GgmlType::F16 => 0,
                    _ => 2,
                };
                bytes[at..at + 2].copy_from_slice(&value);
            }
            w.tensor_raw(&name.gguf_name(), &dims, dtype, bytes);
        }
        w.to_bytes()
    };
    let (nan, infinity) = ([0x00, 0x7e], [0x80, 0x7f]);
    for (damaged, value) in [
        (WeightName::FfnDown(1), nan),
        (WeightName::AttnQ(0), [0x00, 0x7c]),
        (WeightName::AttnOutput(1), [0x00, 0xfc]),
        (WeightName::AttnNorm(1), infinity),
    ] {
        let bytes = file(damaged, value);
        let file = GgufFile::parse(&bytes).expect("parse");
        for form in [MatrixForm::Blocks, MatrixForm::F32] {
            let err = Llama::from_gguf_with(&file, &cpu(), form).expect_err("damaged");
            assert!(
                matches!(&err, Error::NonFiniteWeight { name } if *name == damaged.gguf_name()),
                "{err}"
            );
        }
    }
}

/// A file may claim any number of layers: the load ends at the first one it lacks.
#[test]
fn a_file_claiming_more_layers_than_it_holds_is_an_error() {
    use crate::gguf::Value;
    let bytes = tiny_gguf("llama", None, |w| {
        w.without_metadata("llama.block_count")
            .metadata("llama.block_count", Value::U32(u32::MAX));
    });
    let file = GgufFile::parse(&bytes).expect("parse");
    let err = Llama::from_gguf(&file, &cpu()).expect_err("layers");
    assert!(err.to_string().contains("blk.2."), "{err}");
}

/// A file may claim any context; the RoPE table is built for the positions served,
/// not for 2^31 (which would be terabytes, and a crash rather than an error).
#[test]
fn a_file_claiming_a_huge_context_loads_with_the_positions_served() {
    use crate::config::MAX_CONTEXT_LEN;
    use crate::gguf::Value;
    let bytes = tiny_gguf("llama", None, |w| {
        w.without_metadata("llama.context_length")
            .metadata("llama.context_length", Value::U32(i32::MAX as u32));
    });
    let file = GgufFile::parse(&bytes).expect("parse");
    let model = Llama::from_gguf(&file, &cpu()).expect("loads");
    assert_eq!(model.config().context_len, MAX_CONTEXT_LEN);
    let mut cache = model.new_cache(4);
    read_logits(feed_chain(&model, &mut cache, &[1, 2, 3]));
}
