//! Training: candidates fitted on the 70% split, hyperparameters and thresholds chosen on the 15%
//! validation split, metrics reported on the 15% holdout and (report only) on KDDTest+.
//!
//! Candidates: a single decision tree (linfa-trees), a random forest (bagged linfa-trees, each
//! on a bootstrap sample and a random subset of the features), and an isolation forest fitted on
//! normal training rows only (the normal profile, which flags what looks unlike normal traffic,
//! including attack types absent from training). The deployed model is the hybrid: anomalous if
//! either the forest or the normal profile exceeds its threshold.

use std::{collections::BTreeMap, path::Path, time::Instant};

use indicatif::{ProgressBar, ProgressStyle};
use linfa::prelude::*;
use linfa_trees::{DecisionTree, SplitQuality, TreeNode};
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    dataset::{Sample, SplitMix64, stratified_split},
    kdd::{FLAGS, FeatureSet, PROTOCOLS, SERVICES, VOCABULARY_VERSION},
    model::{
        Ensemble, FORMAT_VERSION, LEAF, Metrics, Model, ModelData, ModelError, Node, NormalProfile,
        Thresholds, TrainingMetadata, Tree, c_factor, combined, hex,
    },
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

/// Binary metrics of verdicts `pred` against truth `attack`, with ROC-AUC over `score`.
pub fn metrics(attack: &[bool], pred: &[bool], score: &[f64]) -> Metrics {
    let mut c = [[0u64; 2]; 2];
    for (&a, &p) in attack.iter().zip(pred) {
        c[usize::from(a)][usize::from(p)] += 1;
    }
    let (tn, fp, fneg, tp) = (
        c[0][0] as f64,
        c[0][1] as f64,
        c[1][0] as f64,
        c[1][1] as f64,
    );
    let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let precision = div(tp, tp + fp);
    let recall = div(tp, tp + fneg);
    Metrics {
        rows: attack.len(),
        accuracy: div(tp + tn, tp + tn + fp + fneg),
        precision,
        recall,
        f1: div(2.0 * precision * recall, precision + recall),
        false_positive_rate: div(fp, fp + tn),
        roc_auc: roc_auc(attack, score),
        confusion: c,
    }
}

/// ROC-AUC by the rank-sum (Mann-Whitney) statistic, ties counted half.
pub fn roc_auc(attack: &[bool], score: &[f64]) -> f64 {
    let mut v: Vec<(f64, bool)> = score.iter().copied().zip(attack.iter().copied()).collect();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut i) = (0.0, 0);
    let pos = attack.iter().filter(|&&a| a).count() as f64;
    let neg = attack.len() as f64 - pos;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0; // ranks i+1..=j
        rank_sum += avg_rank * v[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    if pos == 0.0 || neg == 0.0 {
        0.5
    } else {
        (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
    }
}

/// ROC points (false-positive rate, true-positive rate) of `score`, at up to ~200 thresholds.
pub fn roc_curve(attack: &[bool], score: &[f64]) -> Vec<(f64, f64)> {
    let mut v: Vec<(f64, bool)> = score.iter().copied().zip(attack.iter().copied()).collect();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pos = attack.iter().filter(|&&a| a).count().max(1) as f64;
    let neg = (attack.len() as f64 - pos).max(1.0);
    let step = (v.len() / 200).max(1);
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut pts = vec![(0.0, 0.0)];
    for (k, (_, a)) in v.iter().enumerate() {
        if *a {
            tp += 1.0
        } else {
            fp += 1.0
        }
        if k % step == 0 || k + 1 == v.len() {
            pts.push((fp / neg, tp / pos));
        }
    }
    pts
}

/// The smallest threshold `t` over `scores` of normal rows such that the fraction of them with
/// score ≥ t is at most `fpr` (so ties never push the rate above the budget).
pub fn threshold_at_fpr(normal_scores: &[f64], fpr: f64) -> f64 {
    let mut s: Vec<f64> = normal_scores.to_vec();
    s.sort_by(|a, b| b.total_cmp(a));
    let allowed = (fpr * s.len() as f64).floor() as usize;
    // Scores strictly above the (allowed+1)-th largest may be flagged.
    match s.get(allowed) {
        Some(&v) => next_up(v),
        None => 0.0,
    }
}

fn next_up(v: f64) -> f64 {
    if v.is_nan() || v == f64::INFINITY {
        v
    } else if v == 0.0 {
        f64::MIN_POSITIVE
    } else if v > 0.0 {
        f64::from_bits(v.to_bits() + 1)
    } else {
        f64::from_bits(v.to_bits() - 1)
    }
}

/// Thresholds for the hybrid on validation data.
///
/// Half the false-positive budget goes to the normal profile (its job is attacks unlike any in
/// training, which validation cannot show, so it gets a fixed share). For the forest, every
/// threshold whose combined false-positive rate stays within the budget is a candidate; among
/// them we take the *highest* one that reaches the best validation recall (within 0.05 points).
/// Spending false-positive budget that buys no validation recall would only add false alarms on
/// traffic unlike the training data.
pub fn choose_thresholds(
    sup: &[f64],
    unsup: &[f64],
    attack: &[bool],
    target_fpr: f64,
) -> Thresholds {
    let normal_u: Vec<f64> = unsup
        .iter()
        .zip(attack)
        .filter(|(_, a)| !**a)
        .map(|(s, _)| *s)
        .collect();
    let t_u = threshold_at_fpr(&normal_u, target_fpr / 2.0);
    let n_normal = attack.iter().filter(|a| !**a).count().max(1) as f64;
    let n_attack = attack.iter().filter(|a| **a).count().max(1) as f64;
    let mut candidates: Vec<f64> = sup.to_vec();
    candidates.push(f64::MAX);
    candidates.sort_by(f64::total_cmp);
    candidates.dedup();
    // (threshold, fpr, recall) for every candidate within the budget.
    let mut ok: Vec<(f64, f64)> = Vec::new();
    for &t in &candidates {
        let (mut fp, mut tp) = (0usize, 0usize);
        for ((s, u), a) in sup.iter().zip(unsup).zip(attack) {
            let hit = *s >= t || *u >= t_u;
            match (hit, a) {
                (true, false) => fp += 1,
                (true, true) => tp += 1,
                _ => {}
            }
        }
        if fp as f64 / n_normal <= target_fpr {
            ok.push((t, tp as f64 / n_attack));
        }
    }
    let best = ok.iter().map(|x| x.1).fold(0.0, f64::max);
    let t_s = ok
        .iter()
        .filter(|x| x.1 >= best - 0.0005)
        .map(|x| x.0)
        .fold(f64::MIN, f64::max)
        .clamp(1e-9, f64::MAX);
    Thresholds {
        supervised: t_s,
        unsupervised: t_u,
        target_fpr,
    }
}

/// Scores of a model's detectors on rows of `x` (in model input order).
pub fn detector_scores(
    sup: &Ensemble,
    profile: Option<&NormalProfile>,
    x: &Array2<f64>,
) -> (Vec<f64>, Vec<f64>) {
    let mut s = Vec::with_capacity(x.nrows());
    let mut u = Vec::with_capacity(x.nrows());
    for row in x.rows() {
        let r = row
            .as_slice()
            .map(<[f64]>::to_vec)
            .unwrap_or_else(|| row.to_vec());
        s.push(sup.mean(&r));
        u.push(profile.map(|p| p.score(&r)).unwrap_or(0.0));
    }
    (s, u)
}

/// Evaluation of a model on labelled samples, with per-category and novel-attack recall.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Evaluation {
    pub data: String,
    pub metrics: Metrics,
    /// Recall per attack category (and the rows in it).
    pub recall_by_category: BTreeMap<String, (f64, usize)>,
    /// Recall over attack types that never occur in the training data.
    pub novel_attack_recall: Option<(f64, usize)>,
    /// Share of flags by each detector among the flagged rows.
    pub flagged_by: BTreeMap<String, usize>,
    #[serde(skip)]
    pub roc: Vec<(f64, f64)>,
}

/// Evaluates `model` on `samples`; `train_labels` are the attack names seen in training.
pub fn evaluate(
    model: &Model,
    samples: &[Sample],
    data: &str,
    train_labels: &[String],
) -> Evaluation {
    let verdicts = model.score_batch(&samples.iter().map(|s| s.features).collect::<Vec<_>>());
    let attack: Vec<bool> = samples.iter().map(Sample::is_attack).collect();
    let pred: Vec<bool> = verdicts.iter().map(|v| v.anomalous).collect();
    let score: Vec<f64> = verdicts.iter().map(|v| v.score).collect();
    let mut by_cat: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut novel_hit, mut novel_n) = (0, 0);
    let mut flagged_by = BTreeMap::new();
    for ((s, &p), v) in samples.iter().zip(&pred).zip(&verdicts) {
        if p {
            *flagged_by
                .entry(format!("{:?}", v.detector).to_lowercase())
                .or_insert(0) += 1;
        }
        if !s.is_attack() {
            continue;
        }
        let e = by_cat.entry(s.category().to_string()).or_default();
        e.1 += 1;
        e.0 += usize::from(p);
        if !train_labels.iter().any(|l| l == &s.label) {
            novel_n += 1;
            novel_hit += usize::from(p);
        }
    }
    Evaluation {
        data: data.to_string(),
        metrics: metrics(&attack, &pred, &score),
        recall_by_category: by_cat
            .into_iter()
            .map(|(k, (h, n))| (k, (h as f64 / n.max(1) as f64, n)))
            .collect(),
        novel_attack_recall: (novel_n > 0).then(|| (novel_hit as f64 / novel_n as f64, novel_n)),
        flagged_by,
        roc: roc_curve(&attack, &score),
    }
}

/// SHA-256 of a file, hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    Ok(hex(&Sha256::digest(std::fs::read(path)?)))
}

/// How far below the best validation recall (as a fraction) a cheaper configuration may be and
/// still be chosen by the hyperparameter search.
pub const SEARCH_TOLERANCE: f64 = 0.001;

/// Training configuration.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    pub seed: u64,
    pub target_fpr: f64,
    pub feature_set: FeatureSet,
    /// Trees in the final forest.
    pub trees: usize,
    /// Trees per candidate during the search.
    pub search_trees: usize,
    pub bootstrap_rows: usize,
    pub profile: ProfileParams,
    /// Depths and feature-subset sizes searched.
    pub depths: Vec<Option<usize>>,
    pub features_per_tree: Vec<usize>,
    pub quiet: bool,
}

impl TrainConfig {
    /// The configuration of the committed model.
    pub fn standard(feature_set: FeatureSet) -> TrainConfig {
        let d = feature_set.indices().len();
        TrainConfig {
            seed: 42,
            target_fpr: 0.02,
            feature_set,
            trees: 60,
            search_trees: 16,
            bootstrap_rows: 40_000,
            // 50 isolation trees: the profile is scored on every connection, and at 100 trees
            // it cost as much as the whole 60-tree forest (the live path's throughput target
            // was missed by that margin); path lengths over 50 trees of 256 points are stable
            // enough for a threshold chosen on validation.
            profile: ProfileParams {
                trees: 50,
                sample_size: 256,
            },
            depths: vec![Some(8), Some(14), None],
            features_per_tree: vec![(d as f64).sqrt().ceil() as usize, d / 2, d],
            quiet: false,
        }
    }

    /// A small, fast configuration (smoke tests, CI).
    pub fn quick(feature_set: FeatureSet) -> TrainConfig {
        let d = feature_set.indices().len();
        TrainConfig {
            trees: 8,
            search_trees: 4,
            bootstrap_rows: 5_000,
            profile: ProfileParams {
                trees: 30,
                sample_size: 256,
            },
            depths: vec![Some(8), None],
            features_per_tree: vec![d / 2, d],
            quiet: true,
            ..TrainConfig::standard(feature_set)
        }
    }
}

/// One row of the search or candidate table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchRow {
    pub candidate: String,
    pub params: String,
    /// Validation recall at the target false-positive rate (the selection criterion).
    pub recall_at_target: f64,
    pub fpr: f64,
    pub auc: f64,
}

/// What training produced.
pub struct Trained {
    pub model: Model,
    pub search: Vec<SearchRow>,
    pub candidates: Vec<(String, Evaluation)>,
    pub holdout: Evaluation,
    pub train_labels: Vec<String>,
    pub chosen: ForestParams,
}

fn bar(len: usize, msg: &str, quiet: bool) -> ProgressBar {
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

/// The full pipeline on the training file's samples.
pub fn train(
    samples: &[Sample],
    data_file: &Path,
    data_sha256: &str,
    cfg: &TrainConfig,
    command: &str,
) -> Result<Trained, TrainError> {
    let split = stratified_split(samples, cfg.seed);
    let pick = |idx: &[usize]| idx.iter().map(|&i| &samples[i]).collect::<Vec<_>>();
    let (tr, va, ho) = (
        pick(&split.train),
        pick(&split.validation),
        pick(&split.holdout),
    );
    let set = cfg.feature_set;
    let (xt, xv) = (matrix(&tr, set), matrix(&va, set));
    let yt: Array1<usize> = tr.iter().map(|s| usize::from(s.is_attack())).collect();
    let av: Vec<bool> = va.iter().map(|s| s.is_attack()).collect();
    let normal_rows: Vec<usize> = (0..tr.len()).filter(|&i| yt[i] == 0).collect();
    if normal_rows.is_empty() {
        return Err(TrainError::NoRows { what: "normal" });
    }
    let started = Instant::now();

    // The normal profile, fitted on normal training rows only.
    let xn = xt.select(ndarray::Axis(0), &normal_rows);
    let profile = fit_profile(
        &xn,
        &cfg.profile,
        cfg.seed,
        "NSL-KDD KDDTrain+ normal rows (70% split)",
    );

    // Hyperparameter search on validation: recall at the target false-positive rate.
    let grid: Vec<ForestParams> = cfg
        .depths
        .iter()
        .flat_map(|&max_depth| {
            cfg.features_per_tree
                .iter()
                .map(move |&features_per_tree| ForestParams {
                    trees: cfg.search_trees,
                    max_depth,
                    features_per_tree,
                    bootstrap_rows: cfg.bootstrap_rows,
                    min_weight_leaf: 1.0,
                })
        })
        .collect();
    let pb = bar(
        grid.len() * cfg.search_trees,
        "hyperparameter search",
        cfg.quiet,
    );
    let mut search = Vec::new();
    let mut recalls = Vec::new();
    for (k, p) in grid.iter().enumerate() {
        let forest = fit_forest(&xt, &yt, p, cfg.seed.wrapping_add(k as u64 + 1), &pb)?;
        let (s, u) = detector_scores(&forest, Some(&profile), &xv);
        let t = choose_thresholds(&s, &u, &av, cfg.target_fpr);
        let pred: Vec<bool> = s
            .iter()
            .zip(&u)
            .map(|(s, u)| *s >= t.supervised || *u >= t.unsupervised)
            .collect();
        let comb: Vec<f64> = s
            .iter()
            .zip(&u)
            .map(|(s, u)| combined(*s, Some(*u), &t))
            .collect();
        let m = metrics(&av, &pred, &comb);
        search.push(SearchRow {
            candidate: "hybrid".into(),
            params: format!(
                "depth={} features={} trees={}",
                depth_str(p.max_depth),
                p.features_per_tree,
                p.trees
            ),
            recall_at_target: m.recall,
            fpr: m.false_positive_rate,
            auc: m.roc_auc,
        });
        recalls.push(m.recall);
    }
    pb.finish_and_clear();
    // The cheapest configuration (the grid runs from shallow and narrow to deep and wide) whose
    // validation recall is within SEARCH_TOLERANCE of the best: deeper trees cost scoring time
    // on every connection and buy nothing measurable here.
    let top = recalls.iter().copied().fold(0.0, f64::max);
    let chosen = ForestParams {
        trees: cfg.trees,
        ..grid
            .iter()
            .zip(&recalls)
            .find(|(_, r)| **r >= top - SEARCH_TOLERANCE)
            .map(|(p, _)| *p)
            .ok_or(TrainError::NoRows { what: "search" })?
    };

    // The final forest with the chosen hyperparameters, thresholds on validation.
    let pb = bar(cfg.trees, "final forest", cfg.quiet);
    let forest = fit_forest(&xt, &yt, &chosen, cfg.seed, &pb)?;
    pb.finish_and_clear();
    let (s, u) = detector_scores(&forest, Some(&profile), &xv);
    let thresholds = choose_thresholds(&s, &u, &av, cfg.target_fpr);
    let mk = |sup: Ensemble,
              prof: Option<NormalProfile>,
              thr: Thresholds,
              val: Metrics,
              hp: serde_json::Value| {
        Model::from_data(ModelData {
            format_version: FORMAT_VERSION,
            vocabulary_version: VOCABULARY_VERSION,
            feature_set: set,
            feature_names: set.names().into_iter().map(String::from).collect(),
            protocols: PROTOCOLS.iter().map(|s| s.to_string()).collect(),
            services: SERVICES.iter().map(|s| s.to_string()).collect(),
            flags: FLAGS.iter().map(|s| s.to_string()).collect(),
            supervised: sup,
            normal_profile: prof,
            thresholds: thr,
            metadata: TrainingMetadata {
                // The file name only: the model must not depend on where the data sat.
                data_file: data_file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                data_sha256: data_sha256.to_string(),
                seed: cfg.seed,
                hyperparameters: hp,
                validation: val,
                command: command.to_string(),
            },
        })
    };
    let train_labels: Vec<String> = {
        let mut l: Vec<String> = tr.iter().map(|s| s.label.clone()).collect();
        l.sort();
        l.dedup();
        l
    };
    let va_owned: Vec<Sample> = va.iter().map(|s| (*s).clone()).collect();
    let ho_owned: Vec<Sample> = ho.iter().map(|s| (*s).clone()).collect();
    let hp = serde_json::json!({ "forest": chosen, "normal_profile": cfg.profile, "target_fpr": cfg.target_fpr });
    let provisional = mk(
        forest.clone(),
        Some(profile.clone()),
        thresholds,
        Metrics::default(),
        hp.clone(),
    )?;
    let validation = evaluate(&provisional, &va_owned, "validation", &train_labels).metrics;
    let model = mk(
        forest.clone(),
        Some(profile.clone()),
        thresholds,
        validation,
        hp,
    )?;

    // Candidates compared on the holdout, each with its own validation-chosen threshold.
    let mut candidates = Vec::new();
    {
        let d = xt.ncols();
        let all_rows: Vec<usize> = (0..xt.nrows()).collect();
        let cols: Vec<usize> = (0..d).collect();
        let (_, mut tree) = fit_tree(&xt, &yt, &all_rows, &cols, chosen.max_depth, 1.0)?;
        reestimate_leaves(&mut tree, &xt, &yt, &all_rows);
        let single = Ensemble::new(vec![tree]);
        let (s1, _) = detector_scores(&single, None, &xv);
        let normal_s1: Vec<f64> = s1
            .iter()
            .zip(&av)
            .filter(|(_, a)| !**a)
            .map(|(s, _)| *s)
            .collect();
        let t1 = Thresholds {
            supervised: threshold_at_fpr(&normal_s1, cfg.target_fpr).max(1e-9),
            unsupervised: f64::MAX,
            target_fpr: cfg.target_fpr,
        };
        let m1 = mk(
            single,
            None,
            t1,
            Metrics::default(),
            serde_json::json!({"max_depth": chosen.max_depth}),
        )?;
        candidates.push((
            "decision tree (linfa-trees)".to_string(),
            evaluate(&m1, &ho_owned, "holdout", &train_labels),
        ));

        let normal_sf: Vec<f64> = s
            .iter()
            .zip(&av)
            .filter(|(_, a)| !**a)
            .map(|(s, _)| *s)
            .collect();
        let tf = Thresholds {
            supervised: threshold_at_fpr(&normal_sf, cfg.target_fpr).max(1e-9),
            unsupervised: f64::MAX,
            target_fpr: cfg.target_fpr,
        };
        let mf = mk(
            forest.clone(),
            None,
            tf,
            Metrics::default(),
            serde_json::json!({}),
        )?;
        candidates.push((
            "random forest".to_string(),
            evaluate(&mf, &ho_owned, "holdout", &train_labels),
        ));

        let normal_u: Vec<f64> = u
            .iter()
            .zip(&av)
            .filter(|(_, a)| !**a)
            .map(|(s, _)| *s)
            .collect();
        let tu = Thresholds {
            supervised: f64::MAX,
            unsupervised: threshold_at_fpr(&normal_u, cfg.target_fpr),
            target_fpr: cfg.target_fpr,
        };
        // The normal profile alone: a supervised part that never fires.
        let never = Ensemble::new(vec![Tree {
            nodes: vec![Node::leaf(0.0)],
        }]);
        let mu = mk(
            never,
            Some(profile.clone()),
            tu,
            Metrics::default(),
            serde_json::json!({}),
        )?;
        candidates.push((
            "isolation forest (normal profile)".to_string(),
            evaluate(&mu, &ho_owned, "holdout", &train_labels),
        ));
    }
    let holdout = evaluate(&model, &ho_owned, "holdout", &train_labels);
    candidates.push((
        "hybrid: forest OR normal profile (deployed)".to_string(),
        holdout.clone(),
    ));
    if !cfg.quiet {
        eprintln!("trained in {:.0} s", started.elapsed().as_secs_f64());
    }
    Ok(Trained {
        model,
        search,
        candidates,
        holdout,
        train_labels,
        chosen,
    })
}

fn depth_str(d: Option<usize>) -> String {
    d.map(|d| d.to_string()).unwrap_or_else(|| "none".into())
}

/// A ROC curve's points and its RGB colour.
pub type Curve<'a> = (&'a [(f64, f64)], [u8; 3]);

/// Draws ROC curves (each a colour) into a PNG: white square, axes, diagonal. No text: the model
/// card names the curves.
pub fn roc_png(
    path: &Path,
    curves: &[Curve<'_>],
    marker: Option<(f64, f64)>,
) -> std::io::Result<()> {
    const W: usize = 480;
    const M: usize = 20;
    let mut px = vec![255u8; W * W * 3];
    let put = |x: usize, y: usize, c: [u8; 3], px: &mut Vec<u8>| {
        if x < W && y < W {
            let i = (y * W + x) * 3;
            px[i..i + 3].copy_from_slice(&c);
        }
    };
    let to_px = |fx: f64, fy: f64| {
        let s = (W - 2 * M) as f64;
        (
            M + (fx.clamp(0.0, 1.0) * s) as usize,
            W - M - (fy.clamp(0.0, 1.0) * s) as usize,
        )
    };
    let line = |a: (f64, f64), b: (f64, f64), c: [u8; 3], px: &mut Vec<u8>, thick: bool| {
        let (p, q) = (to_px(a.0, a.1), to_px(b.0, b.1));
        let steps = (p.0.abs_diff(q.0)).max(p.1.abs_diff(q.1)).max(1);
        for k in 0..=steps {
            let t = k as f64 / steps as f64;
            let x = (p.0 as f64 + (q.0 as f64 - p.0 as f64) * t).round() as usize;
            let y = (p.1 as f64 + (q.1 as f64 - p.1 as f64) * t).round() as usize;
            put(x, y, c, px);
            if thick {
                put(x + 1, y, c, px);
                put(x, y + 1, c, px);
            }
        }
    };
    let grey = [190, 190, 190];
    for k in 0..=10 {
        let v = k as f64 / 10.0;
        line((v, 0.0), (v, 1.0), [235, 235, 235], &mut px, false);
        line((0.0, v), (1.0, v), [235, 235, 235], &mut px, false);
    }
    line((0.0, 0.0), (1.0, 1.0), grey, &mut px, false);
    line((0.0, 0.0), (1.0, 0.0), [0, 0, 0], &mut px, false);
    line((0.0, 0.0), (0.0, 1.0), [0, 0, 0], &mut px, false);
    for (pts, c) in curves {
        for w in pts.windows(2) {
            line(w[0], w[1], *c, &mut px, true);
        }
    }
    if let Some((fx, fy)) = marker {
        let (x, y) = to_px(fx, fy);
        for dx in 0..9 {
            for dy in 0..9 {
                put(x + dx - 4.min(x), y + dy - 4.min(y), [220, 0, 0], &mut px);
            }
        }
    }
    let file = std::fs::File::create(path)?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), W as u32, W as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(std::io::Error::other)?;
    w.write_image_data(&px).map_err(std::io::Error::other)?;
    Ok(())
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// A metrics table row.
fn metrics_row(name: &str, m: &Metrics) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} | {:.4} | {} |",
        pct(m.accuracy),
        pct(m.precision),
        pct(m.recall),
        pct(m.f1),
        pct(m.false_positive_rate),
        m.roc_auc,
        m.rows
    )
}

const METRICS_HEADER: &str = "| model | accuracy | precision | recall | F1 | FPR | ROC-AUC | rows |\n|---|---|---|---|---|---|---|---|";

/// Everything the model card reports.
pub struct CardInputs<'a> {
    pub trained: &'a Trained,
    pub train_file: &'a Path,
    pub train_sha256: &'a str,
    /// KDDTest+ evaluation of the deployed model (flow features), if the file was there.
    pub test: Option<&'a Evaluation>,
    /// KDDTest+ evaluation of the same pipeline on all 41 features, for comparison.
    pub test_all: Option<&'a Evaluation>,
    pub test_sha256: Option<&'a str>,
    pub model_file: &'a str,
    pub command: &'a str,
    pub seconds: f64,
}

/// The model card (Markdown).
pub fn model_card(c: &CardInputs<'_>) -> String {
    let t = c.trained;
    let th = t.model.thresholds();
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line(&format!("# Model card: `{}`", c.model_file));
    line("");
    line(
        "Binary classifier for KDD'99 connection records (normal / attack), as scored live by the sensor.",
    );
    line("Generated by `sensor train`; every number below was measured by that run.");
    line("");
    line("## Data");
    let train_name = c
        .train_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    line(&format!(
        "- Training file: `{train_name}` (SHA-256 `{}`), NSL-KDD (Tavallaee et al., 2009).",
        c.train_sha256
    ));
    line(&format!(
        "- Split: stratified by label (normal and each attack name), seed {}: 70% fit, 15% validation (hyperparameters and thresholds), 15% holdout (report only).",
        t.model.data().metadata.seed
    ));
    line(&format!(
        "- Features: the `{:?}` set ({} inputs): {}.",
        t.model.feature_set(),
        t.model.data().feature_names.len(),
        t.model.data().feature_names.join(", ")
    ));
    line(
        "- Categorical inputs (protocol_type, service, flag) are indices into the versioned vocabularies of `sensor::kdd` (stored in the model file and checked at load).",
    );
    if let (Some(_), Some(sha)) = (c.test, c.test_sha256) {
        line(&format!(
            "- Test file: KDDTest+ (SHA-256 `{sha}`), never used for fitting, search or thresholds."
        ));
    }
    line("");
    line("## Candidates (15% holdout, thresholds chosen on validation)");
    line("");
    line(METRICS_HEADER);
    for (name, e) in &t.candidates {
        line(&metrics_row(name, &e.metrics));
    }
    line("");
    line("## Hyperparameter search (validation split)");
    line("");
    line(&format!(
        "Criterion: recall of the hybrid at the target false-positive rate ({}), each candidate with its own thresholds; the cheapest configuration (shallowest, then fewest features per tree) within {} of the best recall is chosen, since deeper trees cost scoring time on every connection.",
        pct(th.target_fpr),
        pct(SEARCH_TOLERANCE)
    ));
    line("");
    line("| candidate | parameters | recall at target | FPR | ROC-AUC |");
    line("|---|---|---|---|---|");
    for r in &t.search {
        line(&format!(
            "| {} | {} | {} | {} | {:.4} |",
            r.candidate,
            r.params,
            pct(r.recall_at_target),
            pct(r.fpr),
            r.auc
        ));
    }
    line("");
    line(&format!(
        "Chosen: {} trees, max depth {}, {} features per tree, {} rows per bootstrap sample; normal profile: isolation forest, {} trees of {} normal rows.",
        t.chosen.trees,
        depth_str(t.chosen.max_depth),
        t.chosen.features_per_tree,
        t.chosen.bootstrap_rows,
        t.model
            .data()
            .normal_profile
            .as_ref()
            .map(|p| p.forest.trees.len())
            .unwrap_or(0),
        t.model
            .data()
            .normal_profile
            .as_ref()
            .map(|p| p.sample_size)
            .unwrap_or(0)
    ));
    line("");
    line("## Thresholds");
    line("");
    line(&format!(
        "A connection is anomalous when the forest's mean attack probability is at least {:.4} OR the normal profile's isolation score is at least {:.4}.",
        th.supervised, th.unsupervised
    ));
    line(&format!(
        "Both were chosen on the validation split for a target false-positive rate of {}: half of that budget goes to the normal profile (the detector for attacks unlike any in training); for the forest, the highest threshold that reaches the best validation recall within the remaining budget (budget that buys no validation recall would only add false alarms elsewhere). The target is below the 4% ceiling on purpose: validation rows come from the same distribution as the training rows, and new traffic (KDDTest+, a real network) raises the false-positive rate of any threshold chosen that way.",
        pct(th.target_fpr)
    ));
    line("");
    line("## Results");
    line("");
    line(METRICS_HEADER);
    line(&metrics_row(
        "deployed model, 15% holdout",
        &t.holdout.metrics,
    ));
    if let Some(e) = c.test {
        line(&metrics_row(
            &format!(
                "deployed model ({:?} features), KDDTest+",
                t.model.feature_set()
            ),
            &e.metrics,
        ));
    }
    if let Some(e) = c.test_all {
        line(&metrics_row(
            "same pipeline on all 41 features, KDDTest+",
            &e.metrics,
        ));
    }
    line("");
    if let Some(e) = c.test {
        let cm = e.metrics.confusion;
        line(&format!(
            "KDDTest+ confusion matrix (rows: truth normal/attack; columns: verdict normal/attack): [[{}, {}], [{}, {}]].",
            cm[0][0], cm[0][1], cm[1][0], cm[1][1]
        ));
        line("");
        line("Recall per attack category on KDDTest+:");
        line("");
        line("| category | recall | rows |");
        line("|---|---|---|");
        for (k, (r, n)) in &e.recall_by_category {
            line(&format!("| {k} | {} | {n} |", pct(*r)));
        }
        if let Some((r, n)) = e.novel_attack_recall {
            line(&format!(
                "| attack types absent from training | {} | {n} |",
                pct(r)
            ));
        }
        line("");
        line(&format!(
            "Flags by detector on KDDTest+: {:?}.",
            e.flagged_by
        ));
        line("");
        line(
            "References on KDDTest+: scikit-learn random forest on the 28 flow features 78.7% accuracy; Tavallaee et al. 2009 best (NBTree, 41 features) 82.02%; RNN-IDS (Yin et al. 2017) 83.28%. The issue's target for this model is at least 86% accuracy at a false-positive rate of at most 4% with the flow features.",
        );
        line("");
    }
    line("![ROC curves](roc.png)");
    line("");
    line(
        "`roc.png`: ROC of the combined score (each detector's score over its threshold, the larger one) on KDDTest+ (blue) and on the holdout (green); grey diagonal is chance; the red square is the operating point on KDDTest+.",
    );
    line("");
    line("## Reproduce");
    line("");
    line(&format!("```\n{}\n```", c.command));
    line("");
    line(&format!(
        "Same seed, same data: the same model file, byte for byte (a test checks this on a smaller configuration). Training took {:.0} s on the 2-core development VM.",
        c.seconds
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_and_thresholds_on_a_known_case() {
        let attack = [false, false, false, false, true, true];
        let score = [0.1, 0.2, 0.3, 0.9, 0.8, 0.95];
        // Pairs (attack > normal): 0.8 beats 3 of 4, 0.95 beats 4 of 4 -> 7/8.
        assert!((roc_auc(&attack, &score) - 0.875).abs() < 1e-12);
        let normal = [0.1, 0.2, 0.3, 0.9];
        let t = threshold_at_fpr(&normal, 0.25);
        assert!(
            t > 0.3 && t <= 0.9,
            "one of four normal rows may be flagged: {t}"
        );
        assert_eq!(normal.iter().filter(|&&s| s >= t).count(), 1);
        let t0 = threshold_at_fpr(&normal, 0.0);
        assert!(t0 > 0.9);
    }

    #[test]
    fn hybrid_thresholds_respect_the_budget() {
        let mut rng = SplitMix64(3);
        let n = 2000;
        let attack: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
        let sup: Vec<f64> = attack
            .iter()
            .map(|&a| {
                if a {
                    0.5 + rng.unit() * 0.5
                } else {
                    rng.unit() * 0.7
                }
            })
            .collect();
        let uns: Vec<f64> = (0..n).map(|_| rng.unit()).collect();
        let t = choose_thresholds(&sup, &uns, &attack, 0.04);
        let normals = attack.iter().filter(|a| !**a).count() as f64;
        let fp = (0..n)
            .filter(|&i| !attack[i] && (sup[i] >= t.supervised || uns[i] >= t.unsupervised))
            .count() as f64;
        assert!(fp / normals <= 0.04 + 1e-12, "{}", fp / normals);
        // The forest's threshold is the highest with the best recall in budget: a lower one
        // either breaks the budget or gains (almost) no recall.
        let count = |ts: f64, want_attack: bool| {
            (0..n)
                .filter(|&i| attack[i] == want_attack && (sup[i] >= ts || uns[i] >= t.unsupervised))
                .count() as f64
        };
        let attacks = n as f64 - normals;
        for lower in [t.supervised - 0.01, t.supervised - 0.05, t.supervised - 0.2] {
            let in_budget = count(lower, false) / normals <= 0.04;
            let gain = (count(lower, true) - count(t.supervised, true)) / attacks;
            assert!(
                !in_budget || gain <= 0.0005,
                "threshold {lower} gains {gain} within budget"
            );
        }
        // And a clearly separable case keeps the threshold high.
        let sep_sup: Vec<f64> = attack.iter().map(|&a| if a { 0.9 } else { 0.1 }).collect();
        let t2 = choose_thresholds(&sep_sup, &uns, &attack, 0.04);
        assert!(
            t2.supervised > 0.1 && t2.supervised <= 0.9,
            "{}",
            t2.supervised
        );
        assert!(
            t2.supervised >= 0.9 - 1e-9,
            "highest threshold with full recall: {}",
            t2.supervised
        );
    }
}
