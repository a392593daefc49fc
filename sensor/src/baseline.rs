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
    #[error("feature engine settings")]
    Features(#[from] crate::features::FeatureConfigError),
    #[error("building the feature matrix")]
    Shape(#[from] ndarray::ShapeError),
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
    let mut engine = FeatureEngine::new(FeatureConfig::default())?;
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
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{EndReason, Transport};
    use sensor_common::conn_state::ConnState;
    use std::path::Path;

    fn rec(i: u64, port: u16, state: ConnState, bytes: (u64, u64)) -> ConnectionRecord {
        let t = 1_700_000_000_000_000_000 + i * 300_000_000;
        ConnectionRecord {
            start_unix_ns: t,
            end_unix_ns: t + 2_000_000,
            transport: Transport::Tcp,
            ip_version: 4,
            orig_addr: "198.18.1.1".parse().unwrap(),
            orig_port: 40_000 + (i % 20_000) as u16,
            resp_addr: "198.18.2.1".parse().unwrap(),
            resp_port: port,
            icmp_type: None,
            icmp_code: None,
            orig_packets: 5,
            resp_packets: 5,
            orig_bytes: bytes.0,
            resp_bytes: bytes.1,
            conn_state: state,
            urgent_packets: 0,
            wrong_fragments: 0,
            land: false,
            to_group: false,
            end_reason: EndReason::Fin,
            ip_proto: 6,
            tunnel: None,
            carries: None,
            answer_unix_ns: None,
            final_unix_ns: t + 2_000_000,
        }
    }

    trait Unsup {
        fn unwrap_unsupervised(&self) -> f64;
    }
    impl Unsup for crate::model::Verdict {
        fn unwrap_unsupervised(&self) -> f64 {
            self.unsupervised_score.expect("a profile is present")
        }
    }

    fn committed_model() -> Model {
        Model::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model"))
            .expect("committed model")
    }

    #[test]
    fn site_profile_meets_its_target_on_held_out_site_traffic_and_is_reproducible() {
        let model = committed_model();
        // The site: small HTTP requests and large downloads, one connection every 300 ms.
        let site: Vec<ConnectionRecord> = (0..800)
            .map(|i| {
                let bytes = if i % 3 == 0 {
                    (300 + i % 100, 1_000_000 + 997 * (i % 1000))
                } else {
                    (100 + i % 100, 1_000 + 13 * (i % 77))
                };
                rec(i, 80, ConnState::SF, bytes)
            })
            .collect();
        let (new, report) = fit(&model, &site, 0.01, 7, "test site").unwrap();
        assert_eq!(report.connections, 800);
        assert_eq!(report.fitted_on + report.held_out, 800);
        assert_eq!(report.held_out, 200);
        assert!(report.held_out_flagged_by_profile <= 0.01, "{report:?}");
        let p = new.data().normal_profile.as_ref().unwrap();
        assert_eq!(p.source, "test site");
        assert_eq!(new.thresholds().unsupervised, report.threshold);
        assert_eq!(
            new.thresholds().supervised,
            model.thresholds().supervised,
            "the supervised threshold stays as trained"
        );
        // Typical site connections after the baseline: scored normal by the profile.
        let mut engine = FeatureEngine::new(FeatureConfig::default()).unwrap();
        let scores: Vec<f64> = site
            .iter()
            .map(|r| new.score(&engine.push(r)).unwrap_unsupervised())
            .collect();
        let over = scores.iter().filter(|&&s| s >= report.threshold).count();
        assert!(
            over <= 16,
            "{over} of 800 site connections over the threshold"
        );
        // Same seed, same records: the same profile.
        let (again, _) = fit(&model, &site, 0.01, 7, "test site").unwrap();
        assert_eq!(again.data(), new.data());
    }

    #[test]
    fn too_few_connections_or_a_bad_target_are_refused() {
        let model = committed_model();
        let few: Vec<_> = (0..10).map(|i| rec(i, 80, ConnState::SF, (1, 1))).collect();
        let e = fit(&model, &few, 0.01, 1, "t").unwrap_err();
        assert!(e.to_string().contains("only 10 connections"), "{e}");
        let many: Vec<_> = (0..200)
            .map(|i| rec(i, 80, ConnState::SF, (1, 1)))
            .collect();
        assert!(matches!(
            fit(&model, &many, 0.0, 1, "t"),
            Err(BaselineError::BadTarget(_))
        ));
    }

    #[test]
    fn record_files_name_the_bad_line() {
        let dir = std::env::temp_dir().join(format!("baseline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("recs.jsonl");
        let good = serde_json::to_string(&rec(1, 80, ConnState::SF, (1, 1))).unwrap();
        std::fs::write(&p, format!("{good}\n\n{good}\n{{\"nope\": 1}}\n")).unwrap();
        let e = read_records(&p).unwrap_err();
        assert!(e.contains("recs.jsonl:4:"), "{e}");
        std::fs::write(&p, format!("{good}\n{good}\n")).unwrap();
        assert_eq!(read_records(&p).unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
