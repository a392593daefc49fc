//! The tree ensembles: flattened trees, the lockstep walk, path attribution, and the normal
//! profile's isolation normaliser.

use serde::{Deserialize, Serialize};

/// A leaf marker in [`Node::feature`].
pub const LEAF: u32 = u32::MAX;

/// One node of a flattened tree, 16 bytes. Internal: go left when `x[feature] < threshold` (the
/// rule linfa-trees fits with), the right child is `left + 1`. Leaf (`feature == LEAF`): the
/// leaf's value is in `threshold`. Thresholds stay `f64`: byte counts reach 10^9, where `f32`
/// would move a split point past neighbouring values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub feature: u32,
    /// Index of the left child.
    pub left: u32,
    /// Split point, or the value of a leaf.
    pub threshold: f64,
}

impl Node {
    /// A leaf with `value`.
    pub fn leaf(value: f64) -> Node {
        Node {
            feature: LEAF,
            left: 0,
            threshold: value,
        }
    }

    /// An internal node.
    pub fn split(feature: usize, threshold: f64, left: usize) -> Node {
        Node {
            feature: feature as u32,
            left: left as u32,
            threshold,
        }
    }
}

/// A tree as a node array, root at index 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// The leaf value reached by `x` (indexed by model input position).
    #[inline]
    pub fn leaf(&self, x: &[f64]) -> f64 {
        self.nodes[self.leaf_index(x)].threshold
    }

    /// The index of the leaf reached by `x`.
    #[inline]
    pub fn leaf_index(&self, x: &[f64]) -> usize {
        let nodes = &self.nodes[..];
        let mut i = 0usize;
        loop {
            let n = &nodes[i];
            if n.feature == LEAF {
                return i;
            }
            i = n.left as usize + usize::from(x[n.feature as usize] >= n.threshold);
        }
    }

    /// The expectation at each node for path attribution: a leaf's value, and for a split the
    /// mean of its children's (see [`Ensemble::contributions`]). Children come after their
    /// parent (checked by `validate`), so one backward pass fills every node.
    fn node_values(&self) -> Vec<f64> {
        let mut v = vec![0.0; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate().rev() {
            v[i] = if n.feature == LEAF {
                n.threshold
            } else {
                let l = n.left as usize;
                let child = |c: usize| v.get(c).copied().unwrap_or(0.0);
                (child(l) + child(l + 1)) / 2.0
            };
        }
        v
    }

    /// Levels from the root to the deepest leaf (0 for a lone leaf).
    pub fn depth(&self) -> usize {
        let mut depth = vec![0usize; self.nodes.len()];
        let mut max = 0;
        // Children always come after their parent (checked by `validate`).
        for (i, n) in self.nodes.iter().enumerate() {
            if n.feature != LEAF {
                let l = n.left as usize;
                let child = depth[i] + 1;
                for c in [l, l + 1] {
                    if let Some(d) = depth.get_mut(c) {
                        // The deepest way in: a file may give a node two parents.
                        *d = (*d).max(child);
                        max = max.max(child);
                    }
                }
            }
        }
        max
    }

    /// Checks every index, so a corrupted file cannot make scoring loop or index out of bounds:
    /// children point strictly forward, features are within the input width.
    pub(super) fn validate(&self, n_inputs: usize) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("empty tree".into());
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.threshold.is_finite() {
                return Err(format!("node {i}: value not finite"));
            }
            if n.feature == LEAF {
                continue;
            }
            if n.feature as usize >= n_inputs {
                return Err(format!("node {i}: feature {} out of range", n.feature));
            }
            let l = n.left as usize;
            if l <= i || l + 1 >= self.nodes.len() {
                return Err(format!("node {i}: child index {l} out of range"));
            }
            if !n.threshold.is_finite() {
                return Err(format!("node {i}: threshold not finite"));
            }
        }
        Ok(())
    }
}

/// Rows walked together by [`Ensemble::mean_batch`]: 12 measured fastest of 8 to 16 on the
/// committed model (about 25% faster than 8); more lanes spill registers.
const LANES: usize = 12;

/// The fewest rows a lane group walks with copies filling its other lanes (measured:
/// `docs/performance.md`, "The last lane group").
const MIN_PARTIAL_GROUP: usize = 3;

/// A set of trees whose leaf values are averaged.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ensemble {
    pub trees: Vec<Tree>,
    /// The form [`Ensemble::mean_batch`] walks, built once on first use (not per batch: the
    /// live agent scores batches of a few hundred rows, where rebuilding cost as much as the
    /// scoring).
    #[serde(skip)]
    walk: std::sync::OnceLock<Option<Vec<WalkTree>>>,
    /// Each tree's node expectations for [`Ensemble::contributions`], built on first use (an
    /// explanation is asked for anomalous connections only).
    #[serde(skip)]
    node_values: std::sync::OnceLock<Vec<Vec<f64>>>,
}

/// Two ensembles are equal when their trees are; the walk form is a cache.
impl PartialEq for Ensemble {
    fn eq(&self, other: &Ensemble) -> bool {
        self.trees == other.trees
    }
}

/// A tree prepared for branch-free lockstep walking: each leaf is rewritten to loop onto itself
/// (`feature` 0, `threshold` NaN, so `x >= threshold` is false for every `x` and `left + 0`
/// is the leaf again), and the leaf values move to `values`. A walk then needs no "is this a leaf?" test,
/// whose outcome the CPU cannot predict, only `depth` steps of load-compare-add.
#[derive(Clone, Debug)]
pub(super) struct WalkTree {
    nodes: Vec<Node>,
    values: Vec<f64>,
    depth: usize,
    /// One more than the largest feature index a node reads: rows must be at least this wide.
    pub(super) width: usize,
}

impl WalkTree {
    /// The walk form of `t`, or `None` when a child index is out of range or does not point
    /// forward (a tree that did not come through [`Tree::validate`]); such a tree is walked by
    /// the checked [`Tree::leaf`] instead.
    pub(super) fn of(t: &Tree) -> Option<WalkTree> {
        let mut nodes = t.nodes.clone();
        let mut values = vec![0.0; nodes.len()];
        let mut width = 1;
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.feature == LEAF {
                values[i] = n.threshold;
                *n = Node {
                    feature: 0,
                    left: i as u32,
                    threshold: f64::NAN,
                };
            } else {
                let l = n.left as usize;
                if l <= i || l + 1 >= t.nodes.len() {
                    return None;
                }
                width = width.max(n.feature as usize + 1);
            }
        }
        Some(WalkTree {
            nodes,
            values,
            depth: t.depth(),
            width,
        })
    }
}

impl Ensemble {
    pub fn new(trees: Vec<Tree>) -> Ensemble {
        Ensemble {
            trees,
            walk: std::sync::OnceLock::new(),
            node_values: std::sync::OnceLock::new(),
        }
    }

    /// Path attribution (Saabas): for each tree, the walk from the root to `x`'s leaf credits
    /// the change of the node expectation at every split to the split's feature; averaged over
    /// the trees. Adds each input's contribution into `out` (one slot per model input, zeroed
    /// first) and returns the bias, the forest's expectation at the roots, so that
    /// `bias + sum(out) == mean(x)` up to rounding.
    ///
    /// The model file keeps no node populations, so a node's expectation is the plain mean of
    /// its two children's (each split taken as even), not Saabas's population-weighted mean:
    /// the attribution still adds up exactly, but the bias is the mean over leaves weighted by
    /// depth rather than the training rows' mean.
    pub fn contributions(&self, x: &[f64], out: &mut [f64]) -> f64 {
        self.contributions_of(x, out, |_| true)
    }

    /// [`Ensemble::contributions`] of the trees `include` selects, still over the whole
    /// forest's size: `bias + sum(out)` is the sum of their leaves over the tree count (the
    /// score of a forest whose other trees vote 0, as the attack boxes' rule scores,
    /// `crate::model::AttackSupport`).
    pub fn contributions_of(
        &self,
        x: &[f64],
        out: &mut [f64],
        include: impl Fn(usize) -> bool,
    ) -> f64 {
        let values = self
            .node_values
            .get_or_init(|| self.trees.iter().map(Tree::node_values).collect());
        out.fill(0.0);
        let mut bias = 0.0;
        let trees = self.trees.iter().zip(values).enumerate();
        for (t, v) in trees.filter(|(i, _)| include(*i)).map(|(_, tv)| tv) {
            let mut i = 0usize;
            bias += v[0];
            loop {
                let n = &t.nodes[i];
                if n.feature == LEAF {
                    break;
                }
                let f = n.feature as usize;
                let next = n.left as usize + usize::from(x[f] >= n.threshold);
                if let Some(slot) = out.get_mut(f) {
                    *slot += v[next] - v[i];
                }
                i = next;
            }
        }
        let k = self.trees.len().max(1) as f64;
        for c in out.iter_mut() {
            *c /= k;
        }
        bias / k
    }

    /// The mean leaf value over the trees.
    #[inline]
    pub fn mean(&self, x: &[f64]) -> f64 {
        let sum: f64 = self.trees.iter().map(|t| t.leaf(x)).sum();
        sum / self.trees.len().max(1) as f64
    }

    /// [`Ensemble::mean`] of every row of `x` (row-major, `width` inputs per row) into `out`.
    ///
    /// No per-row gathering: the output, and for a batch of two lane groups or more the order
    /// of its rows, are the only allocations.
    pub fn mean_batch(&self, x: &[f64], width: usize, out: &mut Vec<f64>) {
        self.walk_batch(x, width, out, None::<fn(usize, f64, &[u32])>);
    }

    /// [`Ensemble::mean_batch`], calling `then(row, mean, leaves)` for every row as its walk
    /// ends, with the node index of its leaf in each tree: a second look at the leaves (the
    /// attack boxes, `crate::model::AttackSupport`) without walking the trees again, or keeping
    /// every row's leaves (a batch of cold contexts has 32,000 rows).
    pub fn mean_batch_then(
        &self,
        x: &[f64],
        width: usize,
        out: &mut Vec<f64>,
        then: impl FnMut(usize, f64, &[u32]),
    ) {
        self.walk_batch(x, width, out, Some(then));
    }

    fn walk_batch(
        &self,
        x: &[f64],
        width: usize,
        out: &mut Vec<f64>,
        mut then: Option<impl FnMut(usize, f64, &[u32])>,
    ) {
        let n = x.len() / width.max(1);
        let trees = self.trees.len();
        let k_trees = trees.max(1) as f64;
        out.clear();
        out.resize(n, 0.0);
        // The leaves of a group's rows (lane-major), for `then`.
        let mut leaves = vec![0u32; if then.is_some() { LANES * trees } else { 0 }];
        // Groups of LANES rows walk each tree together (a row that reached its leaf stays
        // there): LANES independent chains of dependent loads that the CPU overlaps, where one
        // row at a time waits for every load in turn.
        let walk = self
            .walk
            .get_or_init(|| self.trees.iter().map(WalkTree::of).collect())
            .as_ref()
            .filter(|w| w.iter().all(|t| t.width <= width));
        // Rows too narrow for some tree, or a tree that failed `WalkTree::of`: checked walk.
        // Otherwise the rows walk in lane groups, the last group filled up with copies of its
        // last row (their sums are dropped) when it has at least `MIN_PARTIAL_GROUP` rows: a
        // row walked alone costs several times its share of a group (a batch of 256 rows
        // leaves 4), but a group of one or two real rows costs more than walking them alone.
        let (walk, lanes_end): (&[WalkTree], usize) = match walk {
            Some(w) if n % LANES >= MIN_PARTIAL_GROUP => (w, n),
            Some(w) => (w, n - n % LANES),
            None => (&[], 0),
        };
        // The lanes of a group walk as long as their deepest path: rows that end in the same
        // leaf of the first tree (alike in what it splits on) take similar paths in the
        // others too, so grouping them wastes fewer steps. Each row's sum still adds its trees
        // in order: the scores are the same to the bit.
        let order = path_order(walk.first(), x, width, n, n - n % LANES);
        for start in (0..lanes_end).step_by(LANES) {
            // Lanes `count..` repeat the group's last row.
            let count = LANES.min(lanes_end - start);
            let row_of = |k: usize| {
                let i = start + k.min(count - 1);
                order.as_ref().map_or(i, |o| o[i])
            };
            let rows: [&[f64]; LANES] = std::array::from_fn(|k| {
                let r = row_of(k);
                &x[r * width..(r + 1) * width]
            });
            let mut sums = [0f64; LANES];
            for (ti, t) in walk.iter().enumerate() {
                let nodes = &t.nodes[..];
                let mut idx = [0usize; LANES];
                // At most the tree's depth; fewer once every lane sits on its leaf (a step
                // that moves no lane), as unbounded trees have a few paths far deeper than most.
                for _ in 0..t.depth {
                    let mut moved = false;
                    for k in 0..LANES {
                        // SAFETY: `idx[k]` is 0 or a child index, and `WalkTree::of` checked
                        // every child index (`left + 1`) against the node count; leaves loop
                        // onto themselves. `feature < t.width <= width == rows[k].len()`,
                        // checked where `walk` was taken.
                        let (nd, v) = unsafe {
                            let nd = nodes.get_unchecked(idx[k]);
                            (nd, *rows[k].get_unchecked(nd.feature as usize))
                        };
                        let next = nd.left as usize + usize::from(v >= nd.threshold);
                        moved |= next != idx[k];
                        idx[k] = next;
                    }
                    if !moved {
                        break;
                    }
                }
                for k in 0..LANES {
                    sums[k] += t.values[idx[k]];
                }
                if then.is_some() {
                    for (k, &leaf) in idx.iter().enumerate() {
                        leaves[k * trees + ti] = leaf as u32;
                    }
                }
            }
            for (k, sum) in sums.into_iter().enumerate().take(count) {
                let r = row_of(k);
                if let Some(f) = then.as_mut() {
                    f(r, sum / k_trees, &leaves[k * trees..(k + 1) * trees]);
                }
                out[r] = sum;
            }
        }
        for i in lanes_end..n {
            let r = order.as_ref().map_or(i, |o| o[i]);
            let xr = &x[r * width..(r + 1) * width];
            out[r] = self.trees.iter().map(|t| t.leaf(xr)).sum();
            if let Some(f) = then.as_mut() {
                for (slot, t) in leaves.iter_mut().zip(&self.trees) {
                    *slot = t.leaf_index(xr) as u32;
                }
                f(r, out[r] / k_trees, &leaves[..trees]);
            }
        }
        for v in out.iter_mut() {
            *v /= k_trees;
        }
    }
}

/// The rows `0..n` of `x` ordered by the leaf of `first` they reach (see
/// [`Ensemble::mean_batch`]), or `None` where there is nothing to group: no walk form, or fewer
/// than two lane groups (`full` rows).
fn path_order(
    first: Option<&WalkTree>,
    x: &[f64],
    width: usize,
    n: usize,
    full: usize,
) -> Option<Vec<usize>> {
    const MIN_ROWS: usize = 24;
    let t = first.filter(|_| full >= MIN_ROWS)?;
    let mut keyed: Vec<(u32, u32)> = (0..n)
        .map(|r| {
            let row = &x[r * width..(r + 1) * width];
            let mut i = 0usize;
            for _ in 0..t.depth {
                let nd = &t.nodes[i];
                let next = nd.left as usize + usize::from(row[nd.feature as usize] >= nd.threshold);
                if next == i {
                    break; // a leaf (it loops onto itself)
                }
                i = next;
            }
            (i as u32, r as u32)
        })
        .collect();
    keyed.sort_unstable();
    Some(keyed.into_iter().map(|(_, r)| r as usize).collect())
}

/// Average path length of an unsuccessful search in a binary search tree of `n` points: the
/// isolation forest's normaliser `c(n)`.
pub fn c_factor(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n < 2.5 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
    }
}

/// The unsupervised normal profile: an isolation forest fitted on normal traffic only. Leaf
/// values hold the path length (depth plus `c(size)` of the leaf's remaining points).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormalProfile {
    pub forest: Ensemble,
    /// Points per tree (`ψ`), for the normaliser.
    pub sample_size: usize,
    /// Where the profile was learnt (NSL-KDD training rows, or a site baseline).
    pub source: String,
}

impl NormalProfile {
    /// Anomaly score in (0, 1): 2^(−E[h(x)] / c(ψ)); near 1 is anomalous, ≤ 0.5 normal.
    pub fn score(&self, x: &[f64]) -> f64 {
        (2f64).powf(-self.forest.mean(x) / self.normaliser())
    }

    /// [`NormalProfile::score`] of every row of `x` (row-major, `width` inputs per row) into
    /// `out`, through [`Ensemble::mean_batch`].
    pub fn score_batch(&self, x: &[f64], width: usize, out: &mut Vec<f64>) {
        self.forest.mean_batch(x, width, out);
        let c = self.normaliser();
        for p in out.iter_mut() {
            *p = (2f64).powf(-*p / c);
        }
    }

    /// `c(ψ)`, the mean path length the scores are measured against (never 0).
    pub fn normaliser(&self) -> f64 {
        c_factor(self.sample_size as f64).max(f64::MIN_POSITIVE)
    }
}
