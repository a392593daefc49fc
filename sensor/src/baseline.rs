//! Site baseline: the model calibrated on the site's own connections.
//!
//! NSL-KDD's normal traffic is a 1998 military network; a site's normal looks different, and
//! both detectors flag some of it: the normal profile (an isolation forest of the training
//! data's normal traffic) because the site's traffic is unlike it, the supervised forest because
//! the site's services and patterns fall where the 1998 data had attacks. `sensor baseline`
//! takes connections recorded at the site (assumed clean) and:
//!
//! * fits a new normal profile on three quarters of them (every fourth connection is held out,
//!   so both parts span the whole recording);
//! * on the held-out quarter, chooses the profile's threshold at half the target
//!   false-positive rate, then raises the forest's threshold, if it must, until the whole model
//!   flags at most the target rate of the held-out connections. The forest's threshold is
//!   never lowered below the trained one: a baseline makes the model fit the site, not more
//!   sensitive than it was validated to be.
//!
//! The features come from the same [`FeatureEngine`] as live scoring, fed the connections'
//! events in the order the live sensor would have seen them
//! ([`crate::features::events_from_records`]), so the windows mean the same thing.
use ndarray::Array2;

use crate::{
    features::{FeatureConfig, FeatureEngine, events_from_records},
    flows::ConnectionRecord,
    model::{Model, ModelError},
    train::{ProfileParams, fit_profile, threshold_at_fpr},
};

/// Fewest connections a baseline is fitted on: below this the held-out part cannot resolve a
/// 1% false-positive rate.
pub const MIN_CONNECTIONS: usize = 100;

/// The share of the target false-positive rate the new profile's threshold takes; the rest is
/// the forest's.
const PROFILE_SHARE: f64 = 0.5;

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

/// What the baseline was fitted on and how the model does on its held-out part.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BaselineReport {
    pub connections: usize,
    /// The first connections, whose host window was not full yet, left out of the fit and the
    /// calibration (0 when fewer than [`MIN_CONNECTIONS`] others would remain).
    pub cold_left_out: usize,
    pub fitted_on: usize,
    pub held_out: usize,
    /// The new profile's threshold, and the forest's (trained, or raised for the site).
    pub threshold: f64,
    pub supervised_threshold: f64,
    pub target_fpr: f64,
    /// Held-out connections the new profile flags (at most half the target by construction).
    pub held_out_flagged_by_profile: f64,
    /// Held-out connections the forest flags at its (possibly raised) threshold.
    pub held_out_flagged_by_forest: f64,
    /// Held-out connections the whole model flags (at most the target).
    pub held_out_flagged_by_model: f64,
    /// Held-out connections the model flagged before the baseline.
    pub held_out_flagged_before: f64,
}

/// The model inputs of `records`, in the order they finished, from the live feature engine,
/// and how many were left out for a cold host window.
///
/// The first connections of a recording see a host window that is not full yet: their
/// host-window features carry the training data's mean composition, which the live sensor
/// does not score them on (it averages over contexts, `ColdWindow::contexts`). They
/// are left out when at least [`MIN_CONNECTIONS`] others remain, so that the profile learns
/// the site's own windows, not that composition.
fn feature_rows(
    model: &Model,
    records: &[ConnectionRecord],
) -> Result<(Vec<Vec<f64>>, usize), BaselineError> {
    let mut engine = FeatureEngine::new(FeatureConfig::default())?;
    let indices = model.feature_set().indices();
    let mut rows = Vec::with_capacity(records.len());
    for e in events_from_records(records) {
        if let Some(f) = engine.on_event(&e) {
            let row: Vec<f64> = indices.iter().map(|&i| f.0[i]).collect();
            rows.push((row, engine.last_cold().is_some()));
        }
    }
    let warm = rows.iter().filter(|(_, cold)| !cold).count();
    if warm >= MIN_CONNECTIONS {
        let left_out = rows.len() - warm;
        Ok((
            rows.into_iter()
                .filter(|(_, cold)| !cold)
                .map(|(r, _)| r)
                .collect(),
            left_out,
        ))
    } else {
        Ok((rows.into_iter().map(|(r, _)| r).collect(), 0))
    }
}

/// Fits a site profile on `records`, calibrates both thresholds on the held-out part, and
/// returns `model` with them; see the module docs.
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
    let (rows, cold_left_out) = feature_rows(model, records)?;
    let (fit_rows, held): (Vec<_>, Vec<_>) = rows.iter().enumerate().partition(|(i, _)| i % 4 != 3);
    let width = model.feature_set().indices().len();
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
    let held: Vec<&Vec<f64>> = held.into_iter().map(|(_, r)| r).collect();
    let unsup: Vec<f64> = held.iter().map(|r| profile.score(r)).collect();
    let threshold = threshold_at_fpr(&unsup, PROFILE_SHARE * target_fpr);
    // The forest's scores with the site profile in place: where the profile finds a connection
    // ordinary, the forest's verdict counts only the votes its training attacks support
    // (`crate::model::AttackSupport`), and which connections those are is the site profile's say.
    let mut new = model.clone().with_normal_profile(profile, threshold)?;
    let sup: Vec<f64> = held
        .iter()
        .map(|r| new.score_inputs(r).supervised_score)
        .collect();
    // The forest flags what the profile does not, within the rest of the budget.
    let forest_only: Vec<f64> = sup
        .iter()
        .zip(&unsup)
        .filter(|(_, u)| **u < threshold)
        .map(|(s, _)| *s)
        .collect();
    let profile_flags = unsup.len() - forest_only.len();
    let budget = (target_fpr * held.len() as f64 + 1e-9).floor() as usize;
    let forest_rate = budget.saturating_sub(profile_flags) as f64 / forest_only.len().max(1) as f64;
    let trained = model.thresholds().supervised;
    let supervised_threshold = threshold_at_fpr(&forest_only, forest_rate).max(trained);
    let before: Vec<bool> = held
        .iter()
        .map(|r| model.score_inputs(r).anomalous)
        .collect();
    let mut t = new.thresholds();
    t.supervised = supervised_threshold;
    new.set_thresholds(t);
    let after: Vec<bool> = held.iter().map(|r| new.score_inputs(r).anomalous).collect();
    let frac = |v: &mut dyn Iterator<Item = bool>, n: usize| {
        v.filter(|b| *b).count() as f64 / n.max(1) as f64
    };
    let n = held.len();
    let report = BaselineReport {
        connections: records.len(),
        cold_left_out,
        fitted_on: fit_rows.len(),
        held_out: n,
        threshold,
        supervised_threshold,
        target_fpr,
        held_out_flagged_by_profile: frac(&mut unsup.iter().map(|&u| u >= threshold), n),
        held_out_flagged_by_forest: frac(&mut sup.iter().map(|&s| s >= supervised_threshold), n),
        held_out_flagged_by_model: frac(&mut after.iter().copied(), n),
        held_out_flagged_before: frac(&mut before.iter().copied(), n),
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
    use std::net::IpAddr;
    use std::path::Path;

    fn rec(i: u64, port: u16, state: ConnState, bytes: (u64, u64)) -> ConnectionRecord {
        let t = 1_700_000_000_000_000_000 + i * 300_000_000;
        ConnectionRecord {
            end_unix_ns: t + 2_000_000,
            orig_packets: 5,
            resp_packets: 5,
            orig_bytes: bytes.0,
            resp_bytes: bytes.1,
            conn_state: state,
            end_reason: EndReason::Fin,
            final_unix_ns: t + 2_000_000,
            ..ConnectionRecord::new(
                Transport::Tcp,
                (
                    "198.18.1.1".parse::<IpAddr>().unwrap(),
                    40_000 + (i % 20_000) as u16,
                ),
                ("198.18.2.1".parse::<IpAddr>().unwrap(), port),
                t,
            )
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
        // The first 254 saw a cold host window (the 255th fills it): left out, 546 remain.
        assert_eq!(report.cold_left_out, 254);
        assert_eq!(report.fitted_on + report.held_out, 546);
        assert_eq!(report.held_out, 136);
        assert!(report.held_out_flagged_by_profile <= 0.005, "{report:?}");
        assert!(report.held_out_flagged_by_model <= 0.01, "{report:?}");
        let p = new.data().normal_profile.as_ref().unwrap();
        assert_eq!(p.source, "test site");
        assert_eq!(new.thresholds().unsupervised, report.threshold);
        assert!(
            new.thresholds().supervised >= model.thresholds().supervised,
            "the forest's threshold is never lowered"
        );
        assert_eq!(new.thresholds().supervised, report.supervised_threshold);
        // Typical site connections after the baseline (past the cold window, where each is
        // scored on its own features): scored normal by the profile.
        let mut engine = FeatureEngine::new(FeatureConfig::default()).unwrap();
        let mut scores = Vec::new();
        for e in events_from_records(&site) {
            if let Some(f) = engine.on_event(&e)
                && engine.last_cold().is_none()
            {
                scores.push(new.score(&f).unwrap_unsupervised());
            }
        }
        assert_eq!(scores.len(), 546);
        let over = scores.iter().filter(|&&s| s >= report.threshold).count();
        assert!(
            over <= 11,
            "{over} of 546 site connections over the threshold"
        );
        // Same seed, same records: the same profile.
        let (again, _) = fit(&model, &site, 0.01, 7, "test site").unwrap();
        assert_eq!(again.data(), new.data());
    }

    #[test]
    fn a_site_whose_traffic_the_forest_flags_gets_the_forest_raised_to_its_target() {
        // The site: a one-way UDP datagram to an unnamed privileged port every 5 s (a
        // syslog-like feed), which the 1998 data knows as probes.
        let site: Vec<ConnectionRecord> = (0..800)
            .map(|i| {
                let t = 1_700_000_000_000_000_000 + i * 5_000_000_000;
                ConnectionRecord {
                    start_unix_ns: t,
                    end_unix_ns: t + 1_000_000,
                    final_unix_ns: t + 1_000_000,
                    transport: Transport::Udp,
                    resp_packets: 0,
                    ..rec(i, 600, ConnState::S0, (300, 0))
                }
            })
            .collect();
        // A model whose forest flags most of this site: the committed forest with its
        // threshold at the site's 30th percentile (how much the committed model itself flags
        // such a feed depends on its operating point).
        let mut model = committed_model();
        let mut engine = FeatureEngine::new(FeatureConfig::default()).unwrap();
        let mut forest: Vec<f64> = events_from_records(&site)
            .iter()
            .filter_map(|e| engine.on_event(e))
            .map(|f| model.score(&f).supervised_score)
            .collect();
        forest.sort_by(f64::total_cmp);
        let mut t = model.thresholds();
        t.supervised = forest[forest.len() * 3 / 10];
        model.set_thresholds(t);
        let (new, report) = fit(&model, &site, 0.01, 7, "syslog site").unwrap();
        assert!(
            report.held_out_flagged_before > 0.5,
            "the trained model flags this site: {report:?}"
        );
        assert!(report.held_out_flagged_by_model <= 0.01, "{report:?}");
        assert!(
            report.supervised_threshold > model.thresholds().supervised,
            "{report:?}"
        );
        assert_eq!(new.thresholds().supervised, report.supervised_threshold);
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
