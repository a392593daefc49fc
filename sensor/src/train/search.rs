//! The hyperparameter search by leave-attack-types-out validation, and the choice of the
//! operating point.
//!
//! Forests fitted without a group of attack types are scored on those types' validation rows
//! ([`novel_recall`]): recall on the types a forest was fitted on is near 100% for every
//! configuration and says nothing about the attacks a deployed sensor meets that NSL-KDD does not
//! hold.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    config::TrainConfig,
    evaluate::detector_scores,
    fit::{ForestParams, Splits, TrainError, fit_forest, progress_bar},
    thresholds::{PROFILE_SHARE, choose_thresholds},
};
use crate::dataset::Sample;

/// How many groups of attack types the leave-types-out validation holds out in turn.
pub const NOVELTY_FOLDS: usize = 4;

/// The attack names of `samples` dealt into `k` groups, most frequent first, round robin, so
/// every group holds large and small types. Fold `f`'s forest is fitted without group `f`.
pub fn novelty_folds(samples: &[&Sample], k: usize) -> BTreeMap<String, usize> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in samples.iter().filter(|s| s.is_attack()) {
        *counts.entry(s.label.as_str()).or_default() += 1;
    }
    let mut types: Vec<(&str, usize)> = counts.into_iter().collect();
    types.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    types
        .into_iter()
        .enumerate()
        .map(|(i, (t, _))| (t.to_string(), i % k.max(1)))
        .collect()
}

/// Recall on attack types a forest never saw (leave-types-out validation).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NovelRecall {
    /// Mean over attack types of each type's recall: every type is one new attack to catch,
    /// whatever its row count (neptune alone is two thirds of the attack rows).
    pub macro_recall: f64,
    /// Over all held-out attack rows.
    pub micro_recall: f64,
    /// Per attack type: (rows caught, rows).
    pub per_type: BTreeMap<String, (usize, usize)>,
}

/// Leave-types-out recall on the validation rows `va`. `fold_sup[f]` are the validation scores
/// of the forest fitted without the types of fold `f`, `unsup` the profile's. For each fold the
/// thresholds come from validation normal rows only (`choose_thresholds` at `operating_fpr`),
/// and recall is measured on the validation attacks of that fold's types: the forest meets them
/// as a deployed model meets a new attack.
pub fn novel_recall(
    va: &[&Sample],
    fold_of: &BTreeMap<String, usize>,
    fold_sup: &[Vec<f64>],
    unsup: &[f64],
    target_fpr: f64,
    operating_fpr: f64,
) -> NovelRecall {
    let attack: Vec<bool> = va.iter().map(|s| s.is_attack()).collect();
    let mut per_type: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (f, sup) in fold_sup.iter().enumerate() {
        let t = choose_thresholds(sup, unsup, &attack, target_fpr, operating_fpr);
        for (i, s) in va.iter().enumerate() {
            if fold_of.get(&s.label) == Some(&f) {
                let e = per_type.entry(s.label.clone()).or_default();
                e.0 += usize::from(sup[i] >= t.supervised || unsup[i] >= t.unsupervised);
                e.1 += 1;
            }
        }
    }
    let types = per_type.len().max(1) as f64;
    let (hits, rows) = per_type
        .values()
        .fold((0, 0), |acc, (h, n)| (acc.0 + h, acc.1 + n));
    NovelRecall {
        macro_recall: per_type
            .values()
            .map(|(h, n)| *h as f64 / *n as f64)
            .sum::<f64>()
            / types,
        micro_recall: hits as f64 / rows.max(1) as f64,
        per_type,
    }
}

/// How far below the best leave-types-out recall (mean over attack types, as a fraction) a
/// cheaper configuration or a lower operating false-positive rate may be and still be chosen.
/// Half a point: one row of a type with a handful of validation rows moves the mean by about
/// that much, so smaller differences are noise.
pub const SEARCH_TOLERANCE: f64 = 0.005;

/// One row of the hyperparameter search table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SearchRow {
    pub candidate: String,
    pub params: String,
    /// Leave-types-out recall, mean over attack types (the selection criterion).
    pub novel_macro_recall: f64,
    /// Leave-types-out recall over all held-out attack rows.
    pub novel_micro_recall: f64,
}

/// A maximum tree depth as the search table and the model card write it.
pub(super) fn depth_str(d: Option<usize>) -> String {
    d.map(|d| d.to_string()).unwrap_or_else(|| "none".into())
}

/// What the search chose.
pub(super) struct Choice {
    /// One row per configuration, in order of scoring cost.
    pub table: Vec<SearchRow>,
    /// The forest configuration, with the search's (smaller) number of trees.
    pub forest: ForestParams,
    /// The normal profile: an index into `TrainConfig::profile_sizes`.
    pub profile: usize,
    /// Validation scores of the chosen configuration's forests, one per fold, each fitted
    /// without that fold's attack types.
    pub fold_scores: Vec<Vec<f64>>,
}

/// The hyperparameter search by leave-types-out validation: recall on attack types the forest
/// was not fitted on, since what the sensor must do on a real network is catch attacks that are
/// not in NSL-KDD. `profile_scores[p]` are the validation scores of the normal profile of
/// sample size `cfg.profile_sizes[p]`. Of the configurations within [`SEARCH_TOLERANCE`] of the
/// best, the cheapest to score is chosen.
pub(super) fn search(
    split: &Splits<'_>,
    fold_of: &BTreeMap<String, usize>,
    profile_scores: &[Vec<f64>],
    cfg: &TrainConfig,
) -> Result<Choice, TrainError> {
    let grid = forest_grid(cfg);
    let mut fold_scores = leave_types_out_scores(split, fold_of, &grid, cfg)?;
    let (table, order): (Vec<SearchRow>, Vec<(usize, usize)>) =
        search_table(split, fold_of, &fold_scores, profile_scores, cfg)
            .into_iter()
            .unzip();
    let recalls: Vec<f64> = table.iter().map(|r| r.novel_macro_recall).collect();
    let (k, profile) = first_within_tolerance(&recalls)
        .map(|i| order[i])
        .ok_or(TrainError::NoRows { what: "search" })?;
    Ok(Choice {
        table,
        forest: grid[k],
        profile,
        fold_scores: fold_scores.swap_remove(k),
    })
}

/// The forest configurations searched: every depth with every feature-subset size.
fn forest_grid(cfg: &TrainConfig) -> Vec<ForestParams> {
    cfg.depths
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
        .collect()
}

/// `[k][f]`: validation scores of configuration `k` of `grid` fitted without fold `f`'s types.
fn leave_types_out_scores(
    split: &Splits<'_>,
    fold_of: &BTreeMap<String, usize>,
    grid: &[ForestParams],
    cfg: &TrainConfig,
) -> Result<Vec<Vec<Vec<f64>>>, TrainError> {
    let pb = progress_bar(
        grid.len() * NOVELTY_FOLDS * cfg.search_trees,
        "hyperparameter search",
        cfg.quiet,
    );
    let mut scores = Vec::new();
    for (k, p) in grid.iter().enumerate() {
        let mut per_fold = Vec::new();
        for f in 0..NOVELTY_FOLDS {
            let keep: Vec<usize> = (0..split.fit.len())
                .filter(|&i| fold_of.get(&split.fit[i].label) != Some(&f))
                .collect();
            let (xk, yk) = (
                split.x_fit.select(ndarray::Axis(0), &keep),
                split.y_fit.select(ndarray::Axis(0), &keep),
            );
            let seed = cfg.seed.wrapping_add((k * NOVELTY_FOLDS + f) as u64 + 1);
            let forest = fit_forest(&xk, &yk, p, seed, &pb)?;
            per_fold.push(detector_scores(&forest, None, &split.x_validation).0);
        }
        scores.push(per_fold);
    }
    pb.finish_and_clear();
    Ok(scores)
}

/// The search table, rows in order of scoring cost (depth, then profile size, then features per
/// tree), each with its configuration: an index into the forest grid and one into the profiles.
fn search_table(
    split: &Splits<'_>,
    fold_of: &BTreeMap<String, usize>,
    fold_scores: &[Vec<Vec<f64>>],
    profile_scores: &[Vec<f64>],
    cfg: &TrainConfig,
) -> Vec<(SearchRow, (usize, usize))> {
    let mut rows = Vec::new();
    for (di, &depth) in cfg.depths.iter().enumerate() {
        for (pi, &psi) in cfg.profile_sizes.iter().enumerate() {
            for (fi, &features) in cfg.features_per_tree.iter().enumerate() {
                let k = di * cfg.features_per_tree.len() + fi;
                let nr = novel_recall(
                    &split.validation,
                    fold_of,
                    &fold_scores[k],
                    &profile_scores[pi],
                    cfg.target_fpr,
                    cfg.target_fpr,
                );
                let row = SearchRow {
                    candidate: "hybrid".into(),
                    params: format!(
                        "depth={} features={} profile={psi}",
                        depth_str(depth),
                        features,
                    ),
                    novel_macro_recall: nr.macro_recall,
                    novel_micro_recall: nr.micro_recall,
                };
                rows.push((row, (k, pi)));
            }
        }
    }
    rows
}

/// The first of `recalls` (in order of preference) within [`SEARCH_TOLERANCE`] of the best.
fn first_within_tolerance(recalls: &[f64]) -> Option<usize> {
    let best = recalls.iter().copied().fold(0.0, f64::max);
    recalls.iter().position(|&r| r >= best - SEARCH_TOLERANCE)
}

/// Leave-types-out recall of the chosen configuration at each operating point: combined
/// validation false-positive rates from the profile's share of the target to the whole of it.
pub(super) fn operating_points(
    validation: &[&Sample],
    fold_of: &BTreeMap<String, usize>,
    choice: &Choice,
    profile_scores: &[f64],
    cfg: &TrainConfig,
) -> Vec<(f64, NovelRecall)> {
    let share = cfg.target_fpr * PROFILE_SHARE;
    let steps = cfg.operating_steps.max(1);
    (0..=steps)
        .map(|i| {
            let fpr = share + (cfg.target_fpr - share) * i as f64 / steps as f64;
            let nr = novel_recall(
                validation,
                fold_of,
                &choice.fold_scores,
                profile_scores,
                cfg.target_fpr,
                fpr,
            );
            (fpr, nr)
        })
        .collect()
}

/// The operating point: how much of the budget the forest spends. The lowest combined
/// validation false-positive rate whose leave-types-out recall is within [`SEARCH_TOLERANCE`] of
/// the best: budget that buys no recall on unseen types only adds false alarms.
pub(super) fn operating_fpr(points: &[(f64, NovelRecall)], target_fpr: f64) -> f64 {
    let recalls: Vec<f64> = points.iter().map(|o| o.1.macro_recall).collect();
    first_within_tolerance(&recalls).map_or(target_fpr, |i| points[i].0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(label: &str) -> Sample {
        Sample {
            features: crate::kdd::KddFeatures([0.0; crate::kdd::NUM_FEATURES]),
            label: label.to_string(),
            difficulty: None,
        }
    }

    #[test]
    fn novelty_folds_deal_every_attack_type_once_largest_first() {
        let mut v = Vec::new();
        for (label, n) in [
            ("normal", 50),
            ("a", 40),
            ("b", 30),
            ("c", 20),
            ("d", 10),
            ("e", 5),
        ] {
            v.extend((0..n).map(|_| sample(label)));
        }
        let refs: Vec<&Sample> = v.iter().collect();
        let folds = novelty_folds(&refs, 2);
        assert_eq!(folds.len(), 5, "normal is never held out: {folds:?}");
        assert!(!folds.contains_key("normal"));
        // Largest first, round robin: a, c, e in fold 0; b, d in fold 1.
        assert_eq!(["a", "b", "c", "d", "e"].map(|k| folds[k]), [0, 1, 0, 1, 0]);
    }

    #[test]
    fn novel_recall_counts_only_held_out_types_with_their_fold_scores() {
        let mut va = Vec::new();
        va.extend((0..100).map(|_| sample("normal")));
        va.extend((0..4).map(|_| sample("a")));
        va.extend((0..2).map(|_| sample("b")));
        let refs: Vec<&Sample> = va.iter().collect();
        let folds: BTreeMap<String, usize> = [("a".to_string(), 0), ("b".to_string(), 1)].into();
        // Normal rows score 0.0..0.99; fold 0's forest gives "a" 0.995 on two rows and 0.0 on
        // two; fold 1's gives "b" 0.0. Fold 0 also scores "b" high, which must not count.
        let base: Vec<f64> = (0..100).map(|i| i as f64 / 100.0).collect();
        let mut f0 = base.clone();
        f0.extend([0.995, 0.995, 0.0, 0.0, 1.0, 1.0]);
        let mut f1 = base.clone();
        f1.extend([1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        let unsup = vec![0.0; va.len()];
        let nr = novel_recall(&refs, &folds, &[f0, f1], &unsup, 0.04, 0.04);
        assert_eq!(nr.per_type["a"], (2, 4));
        assert_eq!(nr.per_type["b"], (0, 2));
        assert!(
            (nr.macro_recall - 0.25).abs() < 1e-12,
            "{}",
            nr.macro_recall
        );
        assert!((nr.micro_recall - 2.0 / 6.0).abs() < 1e-12);
    }
}
