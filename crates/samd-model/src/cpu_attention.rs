//! Tree attention on the CPU: each node's keys walked in the order of their positions.
//!
//! burn's ops (the reference, [`crate::layer_ops`]) score a step's nodes against every
//! cache slot at once, mask the slots a node may not see, and sum each row in slot order
//! with the backend's lane groups. A tree puts a node's ancestors at the slots of their
//! tree indices, among masked slots, so its sums are grouped differently from those plain
//! decoding makes at the same position, and the last bits differ. Here each node and head
//! walks only its own keys: the committed ones, then its ancestors root first, then
//! itself, from the step's ancestry table (step_graph.rs's `HostStep::ancestry`). A
//! node's output is then bit for bit what a one-node step at its position computes, as
//! with the per-node WGSL kernel on wgpu.

use std::ops::Range;

use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Flex, backend_extension};
use burn::tensor::TensorData;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "wasm32")]
mod simd128;

use crate::cpu_matmul::{f32s, values};
use crate::kernel_check::KernelCheck;
use crate::kernels::Heads;

/// The shapes of one step's attention, and where its nodes' keys begin.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// The attention heads.
    pub heads: Heads,
    /// Nodes in the step.
    pub n: usize,
    /// Columns of a row of `queries`: the queries are its first `q_dim`.
    pub row_width: usize,
    /// Slots per head in the cache tensor.
    pub max_seq: usize,
    /// Committed positions: the first node's slot.
    pub past: usize,
}

/// Each node's attention output, `[n, n_heads * head_dim]`.
///
/// - `queries`: `[n, row_width]`, the queries before RoPE in the first `q_dim` columns;
/// - `rope`: `[n, 2 * head_dim]`, each node's `cos | signed sin` (layer_ops.rs's
///   `rope_rotate`);
/// - `cache`: one layer's `[2, n_kv_heads, max_seq, head_dim]`, keys (RoPE applied) then
///   values, the nodes' own stored at slots `past ..`;
/// - `ancestry`: `[n, n + 1]`, row i node i's count, then its ancestors root first and
///   itself last.
pub fn tree_attention(
    queries: &[f32],
    rope: &[f32],
    cache: &[f32],
    ancestry: &[i32],
    shape: AttentionShape,
) -> Vec<f32> {
    let AttentionShape {
        heads,
        n,
        row_width,
        max_seq,
        past,
    } = shape;
    let hd = heads.head_dim;
    assert!(
        queries.len() == n * row_width
            && rope.len() == n * 2 * hd
            && cache.len() == 2 * heads.n_kv_heads * max_seq * hd
            && ancestry.len() == n * (n + 1)
            && past + n <= max_seq,
        "invariant: callers pass whole tensors"
    );
    // Each node's slots as runs, found once for all its heads.
    let runs: Vec<Vec<Range<usize>>> = ancestry
        .chunks_exact(n + 1)
        .map(|row| {
            let count = usize::try_from(row[0]).expect("invariant: counts are positive");
            let own = row[1..=count].iter().map(|&a| {
                past + usize::try_from(a).expect("invariant: ancestors are node indices")
            });
            slot_runs(past, own)
        })
        .collect();
    let mut out = vec![0.0; n * heads.q_dim()];
    over_cores(&mut out, hd, &|unit, out| {
        let (node, head) = (unit / heads.n_heads, unit % heads.n_heads);
        let query = rotated(
            &queries[node * row_width + head * hd..][..hd],
            &rope[node * 2 * hd..][..2 * hd],
        );
        let kv_head = head / heads.group();
        let plane = |kv: usize| {
            let start = (kv * heads.n_kv_heads + kv_head) * max_seq * hd;
            &cache[start..start + max_seq * hd]
        };
        let keys = KeyList {
            runs: &runs[node],
            head_dim: hd,
        };
        attend_fastest(&query, (plane(0), plane(1)), keys, out);
    });
    out
}

/// The cache slots one node sees, in the order of their positions (the committed slots
/// `0 .. past`, then its ancestors' root first, then its own), as runs of consecutive
/// slots ([`slot_runs`]). Each run is one block of rows of the planes, which the products
/// take a few rows at a time; slot by slot, each key cost a call and the output's sums a
/// load and a store.
#[derive(Clone, Copy)]
struct KeyList<'a> {
    runs: &'a [Range<usize>],
    head_dim: usize,
}

impl<'a> KeyList<'a> {
    fn len(self) -> usize {
        self.runs.iter().map(ExactSizeIterator::len).sum()
    }

    /// Each run's rows of `plane` (`[slot, head_dim]`), in order.
    fn blocks(self, plane: &'a [f32]) -> impl Iterator<Item = &'a [f32]> {
        let hd = self.head_dim;
        self.runs
            .iter()
            .map(move |r| &plane[r.start * hd..r.end * hd])
    }
}

/// `0 .. past`, then `own`, as runs of consecutive slots. A node's own slots go on from
/// the committed ones wherever they follow them (every node of a prompt's pass, and of a
/// chain), so most lists are one run.
fn slot_runs(past: usize, own: impl IntoIterator<Item = usize>) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    if past > 0 {
        runs.push(0..past);
    }
    for slot in own {
        match runs.last_mut() {
            Some(run) if run.end == slot => run.end += 1,
            _ => runs.push(slot..slot + 1),
        }
    }
    runs
}

/// `x` rotated by RoPE: `r[d] = x[d]·cos[d] + x[d ^ 1]·sin[d]` with `rope` = `cos |
/// signed sin`, rounded as burn's elementwise ops round it, so that a node's query is
/// the same here as in the reference.
pub(crate) fn rotated(x: &[f32], rope: &[f32]) -> Vec<f32> {
    let hd = x.len();
    let (cos, sin) = rope.split_at(hd);
    (0..hd).map(|d| x[d] * cos[d] + x[d ^ 1] * sin[d]).collect()
}

/// [`attend`] with the widest vectors this CPU has. Every version computes the same
/// bits: Rust never reorders or fuses float operations, and the AVX2 code runs the
/// portable code's lanes side by side ([`avx2`], and `simd128.rs` in wasm).
fn attend_fastest(query: &[f32], planes: (&[f32], &[f32]), keys: KeyList<'_>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(vectors) = avx2::Avx2::detect() {
        return vectors.attend(query, planes, keys, out);
    }
    #[cfg(target_arch = "wasm32")]
    return simd128::attend_simd128(query, planes, keys, out);
    #[allow(unreachable_code)]
    attend(Portable, query, planes, keys, out)
}

/// That the attention with this CPU's widest vectors (AVX2, or wasm's SIMD) computes
/// the portable code's bits, for head widths with and without a tail past the lanes, and
/// key lists with and without committed keys, in runs of one slot and of several.
pub fn check_vectors() -> KernelCheck {
    let mut rows = 0;
    for hd in [64, 44] {
        let lists = [
            (0, vec![0]),
            (5, vec![5, 7, 9]),
            (37, vec![38, 40]),
            (3, vec![5, 6, 7, 8, 9, 10]),
        ];
        for (past, own) in lists {
            let planes = values(2 * (past + 12) * hd, hd as u64);
            let (keys, vals) = planes.split_at(planes.len() / 2);
            let query = values(hd, 3);
            let runs = slot_runs(past, own.iter().copied());
            let list = KeyList {
                runs: &runs,
                head_dim: hd,
            };
            let (mut portable, mut fastest) = (vec![0.0; hd], vec![0.0; hd]);
            attend(Portable, &query, (keys, vals), list, &mut portable);
            attend_fastest(&query, (keys, vals), list, &mut fastest);
            if portable != fastest {
                let what = format!(
                    "the attention in vectors differs from the portable code (head width {hd}, {past} committed keys)"
                );
                return KernelCheck {
                    rows,
                    mismatch: Some(what),
                };
            }
            rows += 1;
        }
    }
    KernelCheck {
        rows,
        mismatch: None,
    }
}

/// Lanes of each running sum over the head: one AVX2 register, two of wasm's.
const LANES: usize = 8;

/// The two products [`attend`] spends its time in.
trait Vectors: Copy {
    /// `out[j] = scale · (query · rows[j])` for each row `j`, `rows` being `out.len()`
    /// rows of `query.len()` values: each dot product in [`LANES`] running sums, added
    /// as [`fold_lanes`] adds them, then the tail of `len % LANES` products in order.
    fn dots(self, query: &[f32], rows: &[f32], scale: f32, out: &mut [f32]);

    /// `acc[d] += weights[j] · rows[j][d]` for each row `j` in order, `rows` being
    /// `weights.len()` rows of `acc.len()` values.
    fn add_rows(self, acc: &mut [f32], weights: &[f32], rows: &[f32]);
}

/// [`Vectors`] in plain loops, which the compiler vectorises as it can.
#[derive(Debug, Clone, Copy)]
struct Portable;

impl Vectors for Portable {
    #[inline(always)]
    fn dots(self, query: &[f32], rows: &[f32], scale: f32, out: &mut [f32]) {
        let whole = query.len() / LANES * LANES;
        for (o, row) in out.iter_mut().zip(rows.chunks_exact(query.len())) {
            let mut acc = [0.0f32; LANES];
            for (cq, cr) in query[..whole]
                .chunks_exact(LANES)
                .zip(row[..whole].chunks_exact(LANES))
            {
                for l in 0..LANES {
                    acc[l] += cq[l] * cr[l];
                }
            }
            let mut sum = fold_lanes(acc);
            for (x, y) in query[whole..].iter().zip(&row[whole..]) {
                sum += x * y;
            }
            *o = sum * scale;
        }
    }

    #[inline(always)]
    fn add_rows(self, acc: &mut [f32], weights: &[f32], rows: &[f32]) {
        for (&w, row) in weights.iter().zip(rows.chunks_exact(acc.len())) {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += w * v;
            }
        }
    }
}

/// Softmax attention of `query` over the keys and values (`[slot, head_dim]` planes) at
/// `list`'s slots, into `out`. Every sum runs over the keys in the list's order, and
/// each dot product over the head in a fixed order, whatever else the step holds.
#[inline(always)]
fn attend<V: Vectors>(
    vectors: V,
    query: &[f32],
    (keys, values): (&[f32], &[f32]),
    list: KeyList<'_>,
    out: &mut [f32],
) {
    let hd = query.len();
    let scale = 1.0 / (hd as f32).sqrt();
    let mut weights = vec![0.0f32; list.len()];
    let mut at = 0;
    for block in list.blocks(keys) {
        let rows = block.len() / hd;
        vectors.dots(query, block, scale, &mut weights[at..at + rows]);
        at += rows;
    }
    // A comparison, not `f32::max`, which wasm has no instruction for: a call into libm
    // per key was 3% of a wasm prefill. The same maximum (NaNs are passed over by both).
    let max = weights
        .iter()
        .fold(f32::NEG_INFINITY, |m, &w| if w > m { w } else { m });
    for w in &mut weights {
        *w = exp_at_most_zero(*w - max);
    }
    let total = lane_sum(&weights);
    out.fill(0.0);
    let mut at = 0;
    for block in list.blocks(values) {
        let rows = block.len() / hd;
        vectors.add_rows(out, &weights[at..at + rows], block);
        at += rows;
    }
    for o in out {
        *o /= total;
    }
}

/// The sum of `x` in [`LANES`] running sums added in a fixed order, then the tail.
#[inline(always)]
fn lane_sum(x: &[f32]) -> f32 {
    lane_sum_of(x, |v| v)
}

/// The sum of `f(v)` over `x` as [`lane_sum`] adds (the RMSNorm's squares,
/// [`crate::cpu_rms_norm`]).
#[inline(always)]
pub(crate) fn lane_sum_of(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let whole = x.len() / LANES * LANES;
    let mut acc = [0.0f32; LANES];
    for chunk in x[..whole].chunks_exact(LANES) {
        for l in 0..LANES {
            acc[l] += f(chunk[l]);
        }
    }
    x[whole..]
        .iter()
        .fold(fold_lanes(acc), |sum, &v| sum + f(v))
}

/// The lanes' sums added pairwise, as a tree: the same order on every target.
#[inline(always)]
fn fold_lanes(acc: [f32; LANES]) -> f32 {
    let quad: [f32; 4] = std::array::from_fn(|l| acc[l] + acc[l + 4]);
    (quad[0] + quad[2]) + (quad[1] + quad[3])
}

/// `e^x` for `x <= 0`, within a few ulps, in plain float operations that vectorise (a
/// call to libm's `expf` per key cost as much as the key's dot products). Cephes' `expf`:
/// `x = n·ln 2 + r` with `|r| <= ln 2 / 2`, a degree-7 polynomial for `e^r`, and `2^n`
/// built in the exponent bits. Below −87 it returns `e^−87` (1.6e-38) in place of less:
/// beside the largest key's weight of 1, either adds nothing to a sum.
#[inline(always)]
pub(crate) fn exp_at_most_zero(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, so that `n · LN2_HI` is exact for the `n` that occur.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    // Not `max`, which would turn a NaN into a number.
    let x = if x < -87.0 { -87.0 } else { x };
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e_r = (p * (r * r) + r) + 1.0;
    // n is in -126 ..= 0, so 2^n is a normal float; its exponent field is n + 127,
    // which adding 2^23 leaves in the low bits (an integer cast would not vectorise, as
    // Rust's saturates).
    let biased = (n + 127.0 + 8_388_608.0).to_bits() & 0x7f_ffff;
    let two_n = f32::from_bits(biased << 23);
    e_r * two_n
}

/// Runs `unit` over every (node, head) output of `width` columns in `out`, in parallel
/// on the cores: units are independent, so the split leaves every sum as it is.
#[cfg(not(target_arch = "wasm32"))]
fn over_cores(out: &mut [f32], width: usize, unit: &UnitFn<'_>) {
    use rayon::prelude::*;
    out.par_chunks_exact_mut(width)
        .enumerate()
        .for_each(|(i, out)| unit(i, out));
}

/// Runs `unit` over every output in turn: wasm has no threads to give it.
#[cfg(target_arch = "wasm32")]
fn over_cores(out: &mut [f32], width: usize, unit: &UnitFn<'_>) {
    for (i, out) in out.chunks_exact_mut(width).enumerate() {
        unit(i, out);
    }
}

/// One (node, head)'s attention, by its index `node * n_heads + head`, into its output.
type UnitFn<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// [`tree_attention`] as an operation of burn's CPU backend.
#[backend_extension(Flex)]
pub trait CpuAttention: Backend {
    /// [`tree_attention`] on tensors: `ancestry` is `[n * (n + 1)]` ints and `past` the
    /// committed positions.
    fn cpu_tree_attention(
        queries: &FloatTensor<Self>,
        rope: &FloatTensor<Self>,
        cache: &FloatTensor<Self>,
        ancestry: IntTensor<Self>,
        past: usize,
        heads: Heads,
    ) -> FloatTensor<Self>;
}

impl CpuAttention for Flex {
    fn cpu_tree_attention(
        queries: &FlexTensor,
        rope: &FlexTensor,
        cache: &FlexTensor,
        ancestry: IntTensor<Flex>,
        past: usize,
        heads: Heads,
    ) -> FlexTensor {
        let (queries, rope, cache) = (
            queries.to_contiguous(),
            rope.to_contiguous(),
            cache.to_contiguous(),
        );
        let ancestry = ancestry.to_contiguous();
        let [n, row_width] = [queries.layout().shape()[0], queries.layout().shape()[1]];
        let shape = AttentionShape {
            heads,
            n,
            row_width,
            max_seq: cache.layout().shape()[2],
            past,
        };
        let out = tree_attention(
            f32s(&queries),
            f32s(&rope),
            f32s(&cache),
            ancestry
                .as_slice::<i32>()
                .expect("invariant: the ancestry is uploaded as i32"),
            shape,
        );
        FlexTensor::from_data(TensorData::new(out, [n, heads.q_dim()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_matmul::max_abs_diff;
    use crate::llama::AncestorMask;
    use crate::step_graph::HostStep;

    /// A step's inputs: its shape, queries, RoPE rows, one layer's cache and ancestry.
    struct Case {
        shape: AttentionShape,
        queries: Vec<f32>,
        rope: Vec<f32>,
        cache: Vec<f32>,
        ancestry: Vec<i32>,
    }

    impl Case {
        /// Random values for a tree of `parents` after `past` committed positions, with
        /// three query heads per key/value head of `head_dim` columns.
        fn tree(parents: &[Option<usize>], past: usize, head_dim: usize, seed: u64) -> Self {
            let heads = Heads {
                n_heads: 6,
                n_kv_heads: 2,
                head_dim,
            };
            let n = parents.len();
            let mask = AncestorMask::from_parents(parents).expect("a tree");
            let ancestry = HostStep::new(vec![0; n], vec![0; n], &mask, 0).ancestry;
            let shape = AttentionShape {
                heads,
                n,
                row_width: heads.q_dim() + 2 * heads.kv_dim(),
                max_seq: past + n + 3,
                past,
            };
            Self {
                queries: values(n * shape.row_width, seed),
                rope: values(n * 2 * head_dim, seed + 1),
                // Keys and values in [-4, 4): scores spread enough that the softmax
                // weights differ by orders of magnitude.
                cache: values(2 * heads.n_kv_heads * shape.max_seq * head_dim, seed + 2)
                    .into_iter()
                    .map(|v| 4.0 * v)
                    .collect(),
                ancestry,
                shape,
            }
        }

        fn run(&self) -> Vec<f32> {
            tree_attention(
                &self.queries,
                &self.rope,
                &self.cache,
                &self.ancestry,
                self.shape,
            )
        }

        /// The cache slots node `i` sees, in position order.
        fn slots(&self, i: usize) -> Vec<usize> {
            let row = &self.ancestry[i * (self.shape.n + 1)..];
            let own = row[1..=row[0] as usize].iter();
            (0..self.shape.past)
                .chain(own.map(|&a| self.shape.past + a as usize))
                .collect()
        }

        /// Row `slot` of head `kv_head`'s keys (`kv` 0) or values (1).
        fn row(&self, kv: usize, kv_head: usize, slot: usize) -> &[f32] {
            let AttentionShape { heads, max_seq, .. } = self.shape;
            let hd = heads.head_dim;
            &self.cache[((kv * heads.n_kv_heads + kv_head) * max_seq + slot) * hd..][..hd]
        }
    }

    /// Parents that give a deep path and wide fans.
    fn random_parents(n: usize) -> Vec<Option<usize>> {
        (0..n)
            .map(|i| (i > 0).then(|| (i * 2_654_435_761 + n) % i))
            .collect()
    }

    /// Softmax attention in f64, from the definition.
    fn naive(case: &Case) -> Vec<f32> {
        let AttentionShape {
            heads,
            n,
            row_width,
            ..
        } = case.shape;
        let hd = heads.head_dim;
        let mut out = Vec::with_capacity(n * heads.q_dim());
        for i in 0..n {
            for h in 0..heads.n_heads {
                let q = rotated(
                    &case.queries[i * row_width + h * hd..][..hd],
                    &case.rope[i * 2 * hd..][..2 * hd],
                );
                let kv_head = h / heads.group();
                let slots = case.slots(i);
                let scores: Vec<f64> = slots
                    .iter()
                    .map(|&s| {
                        let k = case.row(0, kv_head, s);
                        let dot: f64 = q
                            .iter()
                            .zip(k)
                            .map(|(a, b)| f64::from(*a) * f64::from(*b))
                            .sum();
                        dot / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                for d in 0..hd {
                    let sum: f64 = slots
                        .iter()
                        .zip(&weights)
                        .map(|(&s, w)| w * f64::from(case.row(1, kv_head, s)[d]))
                        .sum();
                    out.push((sum / total) as f32);
                }
            }
        }
        out
    }

    // Head widths: SmolLM2's, and one that leaves a tail past the last vector of 8 and
    // past the last group of 32 columns.
    const HEAD_DIMS: [usize; 2] = [64, 44];

    #[test]
    fn matches_attention_from_the_definition() {
        for hd in HEAD_DIMS {
            let case = Case::tree(&random_parents(9), 13, hd, 1);
            let worst = max_abs_diff(&case.run(), &naive(&case));
            assert!(worst < 1e-5, "head_dim {hd}: off by {worst}");
        }
    }

    /// Node i of a tree gets the bits a one-node step gets where plain decoding put its
    /// ancestors: in the slots after the committed ones, in order.
    #[test]
    fn a_node_gets_the_same_bits_alone_as_in_a_tree() {
        for hd in HEAD_DIMS {
            let tree = Case::tree(&random_parents(12), 21, hd, 2);
            let heads = tree.shape.heads;
            let all = tree.run();
            for i in 0..tree.shape.n {
                let slots = tree.slots(i);
                let past = slots.len() - 1;
                let mut cache = Vec::new();
                for kv in 0..2 {
                    for kv_head in 0..heads.n_kv_heads {
                        for &s in &slots {
                            cache.extend_from_slice(tree.row(kv, kv_head, s));
                        }
                    }
                }
                let row_width = tree.shape.row_width;
                let alone = Case {
                    shape: AttentionShape {
                        n: 1,
                        max_seq: past + 1,
                        past,
                        ..tree.shape
                    },
                    queries: tree.queries[i * row_width..][..row_width].to_vec(),
                    rope: tree.rope[i * 2 * hd..][..2 * hd].to_vec(),
                    cache,
                    ancestry: vec![1, 0],
                }
                .run();
                assert_eq!(alone, all[i * heads.q_dim()..][..heads.q_dim()], "node {i}");
            }
        }
    }

    #[test]
    fn the_fastest_vectors_compute_the_portable_codes_bits() {
        let check = check_vectors();
        assert!(check.passed(), "{check}");
        assert_eq!(check.rows, 8);
    }

    #[test]
    fn exp_is_within_a_few_ulps_and_keeps_nan() {
        let mut worst = 0.0f64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let want = f64::from(x).exp();
            worst = worst.max((f64::from(exp_at_most_zero(x)) - want).abs() / want);
        }
        // f32's epsilon is 1.2e-7: a few ulps.
        assert!(worst < 2e-7, "relative error {worst}");
        assert_eq!(exp_at_most_zero(0.0), 1.0);
        assert_eq!(exp_at_most_zero(-1000.0), exp_at_most_zero(-87.0));
        assert!(exp_at_most_zero(f32::NAN).is_nan());
    }
}
