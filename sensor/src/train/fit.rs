//! Fitting: decision trees and random forests (linfa-trees, flattened into the model's tree
//! layout) on the attack/normal labels, and the isolation forest of the normal profile.

use indicatif::{ProgressBar, ProgressStyle};
use linfa::prelude::*;
use linfa_trees::{DecisionTree, SplitQuality, TreeNode};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::{
    dataset::{Sample, SplitMix64, stratified_split},
    kdd::FeatureSet,
    model::{Ensemble, LEAF, ModelError, Node, NormalProfile, Tree, c_factor},
};

/// Errors of the training pipeline.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("fitting a decision tree failed: {0}")]
    Fit(String),
    #[error("the training split has no {what} rows")]
    NoRows { what: &'static str },
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Forest hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForestParams {
    pub trees: usize,
    /// `None`: grow until pure.
    pub max_depth: Option<usize>,
    /// Features each tree sees (a random subset of the inputs).
    pub features_per_tree: usize,
    /// Rows per bootstrap sample.
    pub bootstrap_rows: usize,
    pub min_weight_leaf: f32,
}

/// Isolation-forest hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileParams {
    pub trees: usize,
    pub sample_size: usize,
}

/// The training file's rows in the three splits (stratified by label), with the model inputs of
/// the fit and validation rows.
pub(super) struct Splits<'a> {
    /// 70%: fitting.
    pub fit: Vec<&'a Sample>,
    /// 15%: hyperparameters and thresholds.
    pub validation: Vec<&'a Sample>,
    /// 15%: reported only.
    pub holdout: Vec<&'a Sample>,
    pub x_fit: Array2<f64>,
    /// 1 for an attack row, 0 for a normal one.
    pub y_fit: Array1<usize>,
    pub x_validation: Array2<f64>,
    pub attack_validation: Vec<bool>,
}

impl<'a> Splits<'a> {
    pub fn new(samples: &'a [Sample], seed: u64, set: FeatureSet) -> Splits<'a> {
        let split = stratified_split(samples, seed);
        let pick = |idx: &[usize]| idx.iter().map(|&i| &samples[i]).collect::<Vec<_>>();
        let (fit, validation) = (pick(&split.train), pick(&split.validation));
        Splits {
            x_fit: matrix(&fit, set),
            y_fit: fit.iter().map(|s| usize::from(s.is_attack())).collect(),
            x_validation: matrix(&validation, set),
            attack_validation: validation.iter().map(|s| s.is_attack()).collect(),
            holdout: pick(&split.holdout),
            fit,
            validation,
        }
    }

    /// The fit rows of normal traffic.
    pub fn normal_fit_rows(&self) -> Vec<usize> {
        (0..self.fit.len())
            .filter(|&i| self.y_fit[i] == 0)
            .collect()
    }
}

/// Model inputs of samples as a matrix (rows × feature-set width).
pub fn matrix(samples: &[&Sample], set: FeatureSet) -> Array2<f64> {
    let idx = set.indices();
    let mut x = Array2::zeros((samples.len(), idx.len()));
    for (r, s) in samples.iter().enumerate() {
        for (c, &i) in idx.iter().enumerate() {
            x[[r, c]] = s.features.0[i];
        }
    }
    x
}

/// Flattens a fitted linfa tree; `columns[j]` is the model input of the tree's feature `j`.
pub fn flatten(root: &TreeNode<f64, usize>, columns: &[usize]) -> Tree {
    let leaf = Node::leaf;
    let mut nodes = vec![leaf(0.0)];
    let mut queue = vec![(root, 0usize)];
    while let Some((n, i)) = queue.pop() {
        match (n.prediction(), n.children().as_slice()) {
            (None, [Some(l), Some(r)]) => {
                let (f, thr, _) = n.split();
                let left = nodes.len();
                nodes.push(leaf(0.0));
                nodes.push(leaf(0.0));
                nodes[i] = Node::split(columns[f], thr, left);
                // Right pushed first, so the left subtree is laid out next: depth-first,
                // left-first order keeps a path's nodes close together in memory.
                queue.push((r, left + 1));
                queue.push((l, left));
            }
            (p, _) => nodes[i] = leaf(p.unwrap_or(0) as f64),
        }
    }
    Tree { nodes }
}

/// Fits one decision tree on rows `rows` and columns `cols` of `x`.
pub fn fit_tree(
    x: &Array2<f64>,
    y: &Array1<usize>,
    rows: &[usize],
    cols: &[usize],
    max_depth: Option<usize>,
    min_weight_leaf: f32,
) -> Result<(DecisionTree<f64, usize>, Tree), TrainError> {
    let sub = x
        .select(ndarray::Axis(0), rows)
        .select(ndarray::Axis(1), cols);
    let ys = y.select(ndarray::Axis(0), rows);
    // Attack rows weigh a hair more than normal ones, so the two classes never tie at a node:
    // linfa breaks such ties (and prunes on them) in hash-map order, which differs from run to
    // run, and training must be reproducible.
    let weights: Array1<f32> = ys
        .iter()
        .map(|&c| if c == 1 { 1.0 + 1.0 / 65_536.0 } else { 1.0 })
        .collect();
    let ds = linfa::Dataset::new(sub, ys).with_weights(weights);
    let tree = DecisionTree::params()
        .split_quality(SplitQuality::Gini)
        .max_depth(max_depth)
        .min_weight_leaf(min_weight_leaf)
        .fit(&ds)
        .map_err(|e| TrainError::Fit(e.to_string()))?;
    let flat = flatten(tree.root_node(), cols);
    Ok((tree, flat))
}

/// Sets every leaf of `tree` to the fraction of attack rows among `rows` of `x` that reach it.
///
/// Two reasons: a forest of such leaves averages class probabilities rather than votes (a finer
/// score to threshold), and linfa breaks ties between equally frequent classes at a leaf in hash
/// map order, which differs between runs; re-estimated leaves make training reproducible.
pub fn reestimate_leaves(tree: &mut Tree, x: &Array2<f64>, y: &Array1<usize>, rows: &[usize]) {
    let mut counts = vec![(0u32, 0u32); tree.nodes.len()];
    for &r in rows {
        let row = x.row(r);
        let mut i = 0usize;
        while tree.nodes[i].feature != LEAF {
            let n = tree.nodes[i];
            i = n.left as usize + usize::from(row[n.feature as usize] >= n.threshold);
        }
        counts[i].0 += y[r] as u32;
        counts[i].1 += 1;
    }
    for (n, (attack, total)) in tree.nodes.iter_mut().zip(counts) {
        if n.feature == LEAF && total > 0 {
            n.threshold = f64::from(attack) / f64::from(total);
        }
    }
}

/// A random forest: tree `t` uses a bootstrap sample and a feature subset drawn from a generator
/// seeded with `(seed, t)`, so the result depends on the seed only (not on thread timing).
pub fn fit_forest(
    x: &Array2<f64>,
    y: &Array1<usize>,
    p: &ForestParams,
    seed: u64,
    progress: &ProgressBar,
) -> Result<Ensemble, TrainError> {
    let n = x.nrows();
    let d = x.ncols();
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(p.trees.max(1));
    let fit_one = |t: usize| -> Result<Tree, TrainError> {
        let mut rng = SplitMix64(seed ^ (t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let rows: Vec<usize> = (0..p.bootstrap_rows.min(n)).map(|_| rng.below(n)).collect();
        let mut cols: Vec<usize> = (0..d).collect();
        rng.shuffle(&mut cols);
        cols.truncate(p.features_per_tree.clamp(1, d));
        cols.sort_unstable();
        let (_, mut flat) = fit_tree(x, y, &rows, &cols, p.max_depth, p.min_weight_leaf)?;
        reestimate_leaves(&mut flat, x, y, &rows);
        progress.inc(1);
        Ok(flat)
    };
    let mut trees: Vec<Option<Tree>> = vec![None; p.trees];
    std::thread::scope(|s| -> Result<(), TrainError> {
        let chunks: Vec<Vec<usize>> = (0..threads)
            .map(|k| (k..p.trees).step_by(threads).collect())
            .collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|ts| {
                s.spawn(move || {
                    ts.into_iter()
                        .map(|t| fit_one(t).map(|tr| (t, tr)))
                        .collect::<Result<Vec<_>, _>>()
                })
            })
            .collect();
        for h in handles {
            for (t, tr) in h
                .join()
                .map_err(|_| TrainError::Fit("a training thread panicked".into()))??
            {
                trees[t] = Some(tr);
            }
        }
        Ok(())
    })?;
    Ok(Ensemble::new(trees.into_iter().flatten().collect()))
}

/// An isolation forest on `x` (normal rows only). Split points are drawn uniformly in
/// `ln(1 + value)` space and stored back as raw thresholds: the byte counts span nine orders
/// of magnitude, and a uniform split in raw space would only ever separate the largest values.
pub fn fit_profile(x: &Array2<f64>, p: &ProfileParams, seed: u64, source: &str) -> NormalProfile {
    let n = x.nrows();
    let psi = p.sample_size.min(n).max(2);
    let limit = (psi as f64).log2().ceil() as usize;
    let mut trees = Vec::with_capacity(p.trees);
    for t in 0..p.trees {
        let mut rng =
            SplitMix64(seed ^ 0x150_f0e5 ^ (t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut idx: Vec<usize> = (0..n).collect();
        // Partial Fisher-Yates: the first psi indices are a uniform sample without replacement.
        for i in 0..psi {
            let j = i + rng.below(n - i);
            idx.swap(i, j);
        }
        idx.truncate(psi);
        let leaf = Node::leaf;
        let mut nodes = vec![leaf(0.0)];
        let mut stack = vec![(idx, 0usize, 0usize)];
        while let Some((pts, i, depth)) = stack.pop() {
            let split = if pts.len() > 1 && depth < limit {
                let candidates: Vec<(usize, f64, f64)> = (0..x.ncols())
                    .filter_map(|c| {
                        let (lo, hi) = pts.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &r| {
                            (lo.min(x[[r, c]]), hi.max(x[[r, c]]))
                        });
                        (hi > lo).then_some((c, lo, hi))
                    })
                    .collect();
                (!candidates.is_empty()).then(|| {
                    let (c, lo, hi) = candidates[rng.below(candidates.len())];
                    let (a, b) = (lo.max(0.0).ln_1p(), hi.max(0.0).ln_1p());
                    let mut thr = (a + rng.unit() * (b - a)).exp_m1();
                    if !(thr > lo && thr <= hi) {
                        thr = lo + (hi - lo) * 0.5;
                    }
                    (c, thr)
                })
            } else {
                None
            };
            match split {
                Some((c, thr)) => {
                    let (l, r): (Vec<usize>, Vec<usize>) =
                        pts.iter().partition(|&&row| x[[row, c]] < thr);
                    let left = nodes.len();
                    nodes.push(leaf(0.0));
                    nodes.push(leaf(0.0));
                    nodes[i] = Node::split(c, thr, left);
                    stack.push((r, left + 1, depth + 1));
                    stack.push((l, left, depth + 1));
                }
                None => nodes[i] = leaf(depth as f64 + c_factor(pts.len() as f64)),
            }
        }
        trees.push(Tree { nodes });
    }
    NormalProfile {
        forest: Ensemble::new(trees),
        sample_size: psi,
        source: source.to_string(),
    }
}

/// A progress bar on stderr for `len` trees, hidden when `quiet`.
pub(super) fn progress_bar(len: usize, msg: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg:28} [{bar:30}] {pos}/{len} {elapsed}") {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(msg.to_string());
    b
}
