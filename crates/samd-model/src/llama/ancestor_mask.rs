//! Which new nodes of a forward see which: a tree's ancestor mask.

use crate::error::{Error, Result};

/// Which new nodes each new node may attend to: itself and its ancestors.
///
/// Row-major `n × n` booleans; `allowed(i, j)` implies `j <= i` because a parent always
/// precedes its children in node order.
///
/// ```text
///  tree:  0 ─ 1 ─ 2        mask (x = attend):   0 1 2 3
///          └─ 3                             0  x . . .
///                                           1  x x . .
///                                           2  x x x .
///                                           3  x . . x
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AncestorMask {
    n: usize,
    /// `bits[i * n + j]`: node i may attend to node j.
    bits: Vec<bool>,
}

impl AncestorMask {
    /// A chain of `n` nodes: the causal mask, as in prefill or a chain draft.
    pub fn causal(n: usize) -> Self {
        let mut bits = vec![false; n * n];
        for i in 0..n {
            for j in 0..=i {
                bits[i * n + j] = true;
            }
        }
        Self { n, bits }
    }

    /// The mask of a tree given each node's parent (`None` for roots). Parents must precede
    /// their children.
    pub fn from_parents(parents: &[Option<usize>]) -> Result<Self> {
        let n = parents.len();
        let mut bits = vec![false; n * n];
        for (i, parent) in parents.iter().enumerate() {
            bits[i * n + i] = true;
            if let Some(p) = *parent {
                if p >= i {
                    return Err(Error::InvalidInput {
                        what: format!("node {i} has parent {p}: parents must precede children"),
                    });
                }
                for j in 0..=p {
                    bits[i * n + j] = bits[p * n + j];
                }
            }
        }
        Ok(Self { n, bits })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the mask has no nodes.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Whether node `i` may attend to node `j`.
    pub fn allowed(&self, i: usize, j: usize) -> bool {
        i < self.n && j < self.n && self.bits[i * self.n + j]
    }
}
