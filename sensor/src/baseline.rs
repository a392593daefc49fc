//! Site baseline: the unsupervised normal profile learnt from the site's own connections.
//!
//! NSL-KDD's normal traffic is a 1998 military network; a site's normal looks different, and
//! a profile fitted on NSL-KDD flags much of it. `sensor baseline` fits the isolation forest on
//! connections recorded at the site (assumed clean) and chooses its threshold on a held-out
//! part of the same recording, at the target false-positive rate; the supervised forest and its
//! threshold stay as trained. The features come from the same [`FeatureEngine`] as live
//! scoring, fed in the order the connections ended, so the windows mean the same thing.
use ndarray::Array2;

use crate::{
    features::{FeatureConfig, FeatureEngine},
    flows::ConnectionRecord,
    model::{Model, ModelError},
    train::{ProfileParams, fit_profile, threshold_at_fpr},
};

/// Fewest connections a baseline is fitted on: below this the held-out part cannot resolve a
/// 1% false-positive rate.
pub const MIN_CONNECTIONS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error(
        "only {found} connections recorded; a baseline needs at least {MIN_CONNECTIONS} (record for longer)"
    )]
    TooFew { found: usize },
    #[error("target false-positive rate must be in (0, 0.5], got {0}")]
    BadTarget(f64),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// What the baseline was fitted on and how it performs on its held-out part.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BaselineReport {
    pub connections: usize,
    pub fitted_on: usize,
    pub held_out: usize,
    pub threshold: f64,
    pub target_fpr: f64,
    /// Held-out connections the new profile flags (≈ the target by construction).
    pub held_out_flagged_by_profile: f64,
    /// Held-out connections the whole model (supervised + new profile) flags.
    pub held_out_flagged_by_model: f64,
    /// Held-out connections the model flagged before the baseline.
    pub held_out_flagged_before: f64,
}

/// Fits a site profile on `records` and returns `model` with it. Every fourth connection (in end
/// order) is held out for the threshold, so both parts span the whole recording.
pub fn fit(
    model: &Model,
    records: &[ConnectionRecord],
    target_fpr: f64,
    seed: u64,
    source: &str,
) -> Result<(Model, BaselineReport), BaselineError> {
    if !(target_fpr > 0.0 && target_fpr <= 0.5) {
        return Err(BaselineError::BadTarget(target_fpr));
    }
    if records.len() < MIN_CONNECTIONS {
        return Err(BaselineError::TooFew {
            found: records.len(),
        });
    }
    let mut order: Vec<&ConnectionRecord> = records.iter().collect();
    order.sort_by_key(|r| r.end_unix_ns);
    let mut engine = FeatureEngine::new(FeatureConfig::default()).expect("default config is valid");
    let indices = model.feature_set().indices();
    let rows: Vec<Vec<f64>> = order
        .iter()
        .map(|r| {
            let f = engine.push(r);
            indices.iter().map(|&i| f.0[i]).collect()
        })
        .collect();
    let (fit_rows, held): (Vec<_>, Vec<_>) = rows.iter().enumerate().partition(|(i, _)| i % 4 != 3);
    let width = indices.len();
    let x = Array2::from_shape_vec(
        (fit_rows.len(), width),
        fit_rows
            .iter()
            .flat_map(|(_, r)| r.iter().copied())
            .collect(),
    )
    .expect("rows have the feature set's width");
    let params = ProfileParams {
        trees: 100,
        sample_size: 256,
    };
    let profile = fit_profile(&x, &params, seed, source);
    let held_scores: Vec<f64> = held.iter().map(|(_, r)| profile.score(r)).collect();
    let threshold = threshold_at_fpr(&held_scores, target_fpr);
    let before: Vec<bool> = held
        .iter()
        .map(|(_, r)| model.score_inputs(r).anomalous)
        .collect();
    let new = model.clone().with_normal_profile(profile, threshold)?;
    let after: Vec<bool> = held
        .iter()
        .map(|(_, r)| new.score_inputs(r).anomalous)
        .collect();
    let frac = |v: &[bool]| v.iter().filter(|b| **b).count() as f64 / v.len().max(1) as f64;
    let report = BaselineReport {
        connections: records.len(),
        fitted_on: fit_rows.len(),
        held_out: held.len(),
        threshold,
        target_fpr,
        held_out_flagged_by_profile: frac(
            &held_scores
                .iter()
                .map(|&s| s >= threshold)
                .collect::<Vec<_>>(),
        ),
        held_out_flagged_by_model: frac(&after),
        held_out_flagged_before: frac(&before),
    };
    Ok((new, report))
}

/// Reads connection records written by `sensor flows` (one JSON object per line), naming the
/// file and line of a bad one.
pub fn read_records(path: &std::path::Path) -> Result<Vec<ConnectionRecord>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| format!("{}:{}: not a connection record: {e}", path.display(), i + 1))
        })
        .collect()
}
