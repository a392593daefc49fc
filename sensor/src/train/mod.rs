//! Training: candidates fitted on the 70% split, hyperparameters and thresholds chosen on the 15%
//! validation split, metrics reported on the 15% holdout and (report only) on KDDTest+.
//!
//! The choices are made by leave-attack-types-out validation: forests fitted without a group of
//! attack types are scored on those types' validation rows ([`novel_recall`]), because recall on
//! the types a forest was fitted on is near 100% for every configuration and says nothing about
//! the attacks a deployed sensor meets that NSL-KDD does not hold.
//!
//! Candidates: a single decision tree (linfa-trees), a random forest (bagged linfa-trees, each
//! on a bootstrap sample and a random subset of the features), and an isolation forest fitted on
//! normal training rows only (the normal profile, which flags what looks unlike normal traffic,
//! including attack types absent from training). The deployed model is the hybrid: anomalous if
//! either the forest or the normal profile exceeds its threshold.
//!
//! One job per module, each using only those listed before it: `config` (the run's settings),
//! `fit` (trees, forests, the normal profile), `thresholds`, `evaluate` (metrics, ROC),
//! `search` (leave-types-out validation, the operating point), `pipeline` ([`train`], which runs
//! them), `plot` and `card` (the model card's figures and text), and [`cli`] (the `train` and
//! `evaluate` commands). Their public items are re-exported here.

mod card;
pub mod cli;
mod config;
mod evaluate;
mod fit;
mod pipeline;
mod plot;
mod search;
mod thresholds;

pub use card::{CardInputs, model_card};
pub use cli::file_sha256;
pub use config::TrainConfig;
pub use evaluate::{
    Evaluation, detector_scores, evaluate, metrics, roc_auc, roc_curve, training_labels,
};
pub use fit::{
    ForestParams, ProfileParams, TrainError, fit_forest, fit_profile, fit_tree, flatten, matrix,
    reestimate_leaves,
};
pub use pipeline::{SupportEffect, Trained, train};
pub use plot::{
    Figure, PlotError, RECALL_FILE, ROC_FILE, RocCurve, card_figures, recall_svg, roc_svg,
};
pub use search::{
    NOVELTY_FOLDS, NovelRecall, SEARCH_TOLERANCE, SearchRow, novel_recall, novelty_folds,
};
pub use thresholds::{
    PROFILE_SHARE, choose_thresholds, forest_threshold, profile_threshold, threshold_at_fpr,
};
