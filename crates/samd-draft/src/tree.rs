//! Draft trees: what one verification step feeds the model, and the greedy acceptance walk.
//!
//! Node 0 is the root: the token already known to be right (the previous step's bonus).
//! Nodes are stored in push order, so a parent always precedes its children; that order
//! is also the order the model sees them in, and the one the ancestor mask is laid out in.
//!
//! ```text
//!        root            depth 0   position past + 0
//!       /    \
//!      a      b          depth 1   position past + 1
//!     / \      \
//!    c   d      e        depth 2   position past + 2
//! ```

use crate::{Error, TokenId};

/// Marks "none" in the parent and sibling arrays.
const NONE: u32 = u32::MAX;

/// Where a token came from, so that the demo can colour it and the stats can credit it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Source {
    /// The model itself: the root, or the bonus token of a step.
    Model,
    /// The dynamic suffix automaton over the prompt and the output.
    DynamicSam,
    /// The static suffix automaton over the corpus.
    StaticSam,
    /// The Token Recycling successor table.
    Recycling,
    /// Prompt lookup (n-gram matching), the peer baseline.
    Lookup,
}

impl Source {
    /// A short stable name, for JSON and the demo's colours: `model`, `dynamic`,
    /// `static`, `recycling` or `lookup`.
    pub fn name(self) -> &'static str {
        match self {
            Source::Model => "model",
            Source::DynamicSam => "dynamic",
            Source::StaticSam => "static",
            Source::Recycling => "recycling",
            Source::Lookup => "lookup",
        }
    }
}

/// A tree of draft tokens rooted at a known-correct token.
///
/// # Example
///
/// ```
/// use samd_draft::tree::{DraftTree, Source};
///
/// let mut tree = DraftTree::new(7);
/// let a = tree.push(0, 8, Source::DynamicSam);
/// tree.push(a, 9, Source::DynamicSam);
/// tree.push(0, 5, Source::Recycling);
/// // The model's argmax after each node: 7 -> 8, 8 -> 9, 9 -> 4, 5 -> 1.
/// let acc = tree.accept(&[8, 9, 4, 1]).unwrap();
/// assert_eq!(acc.path, vec![0, 1, 2]);
/// assert_eq!(acc.bonus, 4);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftTree {
    tokens: Vec<TokenId>,
    /// Parent of each node; `NONE` for the root. Invariant: `parents[i] < i`.
    parents: Vec<u32>,
    /// Depth of each node: the root is 0, and `depths[i] = depths[parents[i]] + 1`.
    depths: Vec<u32>,
    sources: Vec<Source>,
    first_child: Vec<u32>,
    next_sibling: Vec<u32>,
}

/// The outcome of verifying a tree greedily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    /// The accepted root path as node indices, the root first. Its K/V are the ones kept.
    pub path: Vec<usize>,
    /// The model's token after the last accepted node: correct by construction.
    pub bonus: TokenId,
}

impl Acceptance {
    /// Draft tokens accepted, the root and the bonus excluded.
    pub fn n_accepted(&self) -> usize {
        self.path.len() - 1
    }

    /// The tokens this step commits: the accepted draft tokens, then the bonus.
    pub fn committed(&self, tree: &DraftTree) -> Vec<TokenId> {
        let mut out: Vec<TokenId> = self.path[1..].iter().map(|&i| tree.tokens[i]).collect();
        out.push(self.bonus);
        out
    }
}

impl DraftTree {
    /// A tree holding only `root`.
    pub fn new(root: TokenId) -> Self {
        let mut tree = Self {
            tokens: Vec::new(),
            parents: Vec::new(),
            depths: Vec::new(),
            sources: Vec::new(),
            first_child: Vec::new(),
            next_sibling: Vec::new(),
        };
        tree.reset(root);
        tree
    }

    /// Empties the tree down to a new root, keeping the allocations.
    pub fn reset(&mut self, root: TokenId) {
        self.tokens.clear();
        self.parents.clear();
        self.depths.clear();
        self.sources.clear();
        self.first_child.clear();
        self.next_sibling.clear();
        self.tokens.push(root);
        self.parents.push(NONE);
        self.depths.push(0);
        self.sources.push(Source::Model);
        self.first_child.push(NONE);
        self.next_sibling.push(NONE);
    }

    /// Adds `token` under `parent` and returns its index. A sibling with the same token is
    /// reused instead, since verifying it twice would buy nothing.
    ///
    /// # Panics
    ///
    /// If `parent` is not a node of this tree.
    pub fn push(&mut self, parent: usize, token: TokenId, source: Source) -> usize {
        assert!(parent < self.len(), "parent {parent} is not a node");
        if let Some(existing) = self.child(parent, token) {
            return existing;
        }
        let id = self.tokens.len();
        let id32 = u32::try_from(id).expect("invariant: trees hold far fewer than 2^32 nodes");
        self.tokens.push(token);
        self.parents.push(parent as u32);
        self.depths.push(self.depths[parent] + 1);
        self.sources.push(source);
        self.first_child.push(NONE);
        self.next_sibling.push(self.first_child[parent]);
        self.first_child[parent] = id32;
        id
    }

    /// Keeps the root and the nodes marked in `keep`, in their order, and drops the rest.
    /// A node whose parent is dropped goes too, so what is left is always a tree. Used to
    /// verify only the nodes worth their cost (see the engine's tree budget).
    pub fn retain(&mut self, keep: &[bool]) {
        let tokens = std::mem::take(&mut self.tokens);
        let parents = std::mem::take(&mut self.parents);
        let sources = std::mem::take(&mut self.sources);
        // `index[i]`: node `i`'s index in the pruned tree, or NONE when dropped.
        let mut index = vec![NONE; tokens.len()];
        index[0] = 0;
        self.reset(tokens[0]);
        for i in 1..tokens.len() {
            let parent = index[parents[i] as usize];
            if parent != NONE && keep.get(i).copied().unwrap_or(false) {
                let id = self.push(parent as usize, tokens[i], sources[i]);
                index[i] = id as u32;
            }
        }
    }

    /// Adds `tokens` as a path below `parent` and returns the last node (or `parent`).
    pub fn push_chain(&mut self, parent: usize, tokens: &[TokenId], source: Source) -> usize {
        tokens
            .iter()
            .fold(parent, |node, &t| self.push(node, t, source))
    }

    /// The child of `node` carrying `token`, if any.
    pub fn child(&self, node: usize, token: TokenId) -> Option<usize> {
        self.children(node).find(|&c| self.tokens[c] == token)
    }

    /// The children of `node`, newest first.
    pub fn children(&self, node: usize) -> impl Iterator<Item = usize> + '_ {
        let mut c = self.first_child[node];
        std::iter::from_fn(move || {
            (c != NONE).then(|| {
                let here = c as usize;
                c = self.next_sibling[here];
                here
            })
        })
    }

    /// Number of nodes, the root included (so never zero).
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Always false: a tree has its root. Present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The root token.
    pub fn root(&self) -> TokenId {
        self.tokens[0]
    }

    /// Token of each node.
    pub fn tokens(&self) -> &[TokenId] {
        &self.tokens
    }

    /// Parent of each node, `None` for the root.
    pub fn parent(&self, node: usize) -> Option<usize> {
        let p = self.parents[node];
        (p != NONE).then_some(p as usize)
    }

    /// Depth of each node: its position offset from the root's position.
    pub fn depths(&self) -> &[u32] {
        &self.depths
    }

    /// Where each node's token came from.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The deepest node's depth.
    pub fn max_depth(&self) -> u32 {
        self.depths.iter().copied().max().unwrap_or(0)
    }

    /// Absolute positions of the nodes when the root sits at `past_len`.
    pub fn positions(&self, past_len: u32) -> Vec<u32> {
        self.depths.iter().map(|&d| past_len + d).collect()
    }

    /// The tree-attention mask, row-major `[len, len]`: `mask[i * len + j]` is true when
    /// node `j` is node `i` or one of its ancestors, i.e. when `i` may attend to `j`.
    pub fn ancestor_mask(&self) -> Vec<bool> {
        let n = self.len();
        let mut mask = vec![false; n * n];
        for i in 0..n {
            // Parents precede children, so the parent's row is complete: copy it.
            if let Some(p) = self.parent(i) {
                let (done, rest) = mask.split_at_mut(i * n);
                rest[..n].copy_from_slice(&done[p * n..p * n + n]);
            }
            mask[i * n + i] = true;
        }
        mask
    }

    /// Greedy acceptance: `verified[i]` is the model's argmax after node `i`'s prefix. A
    /// child is accepted when its token equals its parent's argmax; the walk keeps the
    /// longest accepted root path, and the bonus is the argmax after its last node.
    pub fn accept(&self, verified: &[TokenId]) -> Result<Acceptance, Error> {
        if verified.len() != self.len() {
            return Err(Error::VerifyLength {
                got: verified.len(),
                nodes: self.len(),
            });
        }
        let mut path = vec![0];
        let mut node = 0;
        while let Some(next) = self.child(node, verified[node]) {
            path.push(next);
            node = next;
        }
        Ok(Acceptance {
            path,
            bonus: verified[node],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Random trees as parent lists (parent < index) with tokens from a small alphabet.
    fn arb_tree() -> impl Strategy<Value = DraftTree> {
        (1usize..40)
            .prop_flat_map(|n| {
                let parents: Vec<_> = (1..n).map(|i| 0..i).collect();
                (parents, prop::collection::vec(0u32..4, n - 1), 0u32..4)
            })
            .prop_map(|(parents, tokens, root)| {
                let mut tree = DraftTree::new(root);
                let mut ids = vec![0usize];
                for (p, t) in parents.into_iter().zip(tokens) {
                    // `p` indexes pushed nodes; dedup may map it to an earlier node.
                    let parent = ids[p.min(ids.len() - 1)];
                    ids.push(tree.push(parent, t, Source::DynamicSam));
                }
                tree
            })
    }

    /// Brute force: the longest root path whose every step matches the parent's argmax.
    fn brute_accept(tree: &DraftTree, verified: &[TokenId]) -> Vec<usize> {
        let mut best = vec![0];
        for leaf in 0..tree.len() {
            let mut path = vec![leaf];
            let mut n = leaf;
            while let Some(p) = tree.parent(n) {
                path.push(p);
                n = p;
            }
            path.reverse();
            let ok = path
                .windows(2)
                .all(|w| tree.tokens()[w[1]] == verified[w[0]]);
            if ok && path.len() > best.len() {
                best = path;
            }
        }
        best
    }

    proptest! {
        #[test]
        fn retaining_equals_building_only_the_kept_nodes(
            tree in arb_tree(),
            keep in prop::collection::vec(any::<bool>(), 40),
        ) {
            let mut cut = tree.clone();
            cut.retain(&keep);
            // Kept: marked, with every ancestor kept.
            let mut kept = vec![true; tree.len()];
            let mut rebuilt = DraftTree::new(tree.root());
            let mut index = vec![0usize; tree.len()];
            for i in 1..tree.len() {
                let parent = tree.parent(i).unwrap();
                kept[i] = keep[i] && kept[parent];
                if kept[i] {
                    index[i] = rebuilt.push(index[parent], tree.tokens()[i], tree.sources()[i]);
                }
            }
            prop_assert_eq!(cut.len(), kept.iter().filter(|&&k| k).count());
            prop_assert_eq!(cut.tokens(), rebuilt.tokens());
            prop_assert_eq!(cut.sources(), rebuilt.sources());
            prop_assert_eq!(cut.depths(), rebuilt.depths());
            for i in 0..cut.len() {
                prop_assert_eq!(cut.parent(i), rebuilt.parent(i));
                let a: Vec<usize> = cut.children(i).collect();
                let b: Vec<usize> = rebuilt.children(i).collect();
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn acceptance_matches_brute_force(
            tree in arb_tree(),
            seed in prop::collection::vec(0u32..4, 40),
        ) {
            let verified = &seed[..tree.len()];
            let acc = tree.accept(verified).unwrap();
            let brute = brute_accept(&tree, verified);
            prop_assert_eq!(acc.path.len(), brute.len());
            // Siblings have distinct tokens, so the accepted path is unique.
            prop_assert_eq!(&acc.path, &brute);
            prop_assert_eq!(acc.bonus, verified[*acc.path.last().unwrap()]);
        }

        #[test]
        fn mask_rows_are_ancestor_sets(tree in arb_tree()) {
            let n = tree.len();
            let mask = tree.ancestor_mask();
            for i in 0..n {
                let mut anc = vec![false; n];
                let mut k = Some(i);
                while let Some(x) = k {
                    anc[x] = true;
                    k = tree.parent(x);
                }
                prop_assert_eq!(&mask[i * n..(i + 1) * n], &anc[..]);
                let count = anc.iter().filter(|&&a| a).count() as u32;
                prop_assert_eq!(tree.depths()[i] + 1, count);
            }
        }
    }

    #[test]
    fn duplicate_siblings_are_merged() {
        let mut tree = DraftTree::new(1);
        let a = tree.push(0, 2, Source::DynamicSam);
        let b = tree.push(0, 2, Source::Recycling);
        assert_eq!(a, b);
        assert_eq!(tree.len(), 2);
        assert_eq!(tree.sources()[a], Source::DynamicSam);
    }

    #[test]
    fn wrong_verify_length_is_an_error() {
        let tree = DraftTree::new(1);
        assert_eq!(
            tree.accept(&[1, 2]),
            Err(Error::VerifyLength { got: 2, nodes: 1 })
        );
    }

    #[test]
    fn root_only_tree_yields_the_bonus() {
        let tree = DraftTree::new(3);
        let acc = tree.accept(&[9]).unwrap();
        assert_eq!(acc.committed(&tree), vec![9]);
        assert_eq!(tree.positions(10), vec![10]);
    }
}
