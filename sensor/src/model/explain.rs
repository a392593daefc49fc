//! Explanation: the features that moved a verdict's score most.

use serde::Serialize;

use super::{Detector, Model, Verdict};
use crate::{
    features::{ColdWindow, cold_contexts::COLD_CONTEXT_COUNT},
    kdd::{FEATURE_NAMES, KddFeatures, NUM_FEATURES},
};

/// How many features an explanation names ([`Model::explain`]).
pub const TOP_FEATURES: usize = 3;

/// One input's share of a verdict's score ([`Model::explain`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeatureContribution {
    /// The KDD feature name.
    pub name: &'static str,
    /// Its value for the connection (categorical features: their index in the vocabulary).
    pub value: f64,
    /// Signed contribution to the firing detector's score (see [`Model::explain`]).
    pub contribution: f64,
}

impl Model {
    /// The (up to) [`TOP_FEATURES`] inputs that moved `verdict`'s score most towards anomalous,
    /// by [`Ensemble::contributions`](crate::model::tree::Ensemble::contributions) of the detector that fired: the supervised forest when it
    /// did (alone or with the normal profile), in units of its score (attack probability); the
    /// normal profile when it alone did, in units of log2 of its score (a shorter isolation
    /// path is a positive contribution). Where the attack boxes' rule scored the forest
    /// ([`crate::model::AttackSupport`]), only the votes it kept are attributed, so the
    /// contributions add up to the score that judged. Features that pushed towards normal are
    /// left out.
    ///
    /// About the cost of scoring the connection once more: meant for alerts and incidents, not
    /// for every connection.
    pub fn explain(&self, f: &KddFeatures, verdict: &Verdict) -> Vec<FeatureContribution> {
        self.explain_over(std::slice::from_ref(f), verdict)
    }

    /// [`Model::explain`] of a scored connection: for one in a cold host window (`cold`),
    /// averaged over the contexts its verdict is the mean over ([`ColdWindow::contexts`]), not
    /// on `f`, the mean composition's row it carries.
    pub fn explain_verdict(
        &self,
        f: &KddFeatures,
        cold: Option<&ColdWindow>,
        verdict: &Verdict,
    ) -> Vec<FeatureContribution> {
        match cold {
            Some(c) => {
                let mut rows = Vec::with_capacity(COLD_CONTEXT_COUNT);
                c.contexts(f, &mut rows);
                self.explain_over(&rows, verdict)
            }
            None => self.explain(f, verdict),
        }
    }

    /// [`Model::explain`] of a verdict that is the mean over several rows (the contexts of a
    /// cold host window, `crate::features::ColdWindow`): each input's contribution and value
    /// averaged over `rows`. Contributions add up along each row's tree paths to that row's
    /// score, so their mean adds up to the mean score (the supervised forest's, exactly).
    pub fn explain_over(
        &self,
        rows: &[KddFeatures],
        verdict: &Verdict,
    ) -> Vec<FeatureContribution> {
        let mut buf = [0f64; NUM_FEATURES];
        let mut x = [0f64; NUM_FEATURES];
        let mut one = [0f64; NUM_FEATURES];
        let mut c = [0f64; NUM_FEATURES];
        let mut n = 0;
        for f in rows {
            n = self.inputs(f, &mut buf);
            let one = &mut one[..n];
            match (&self.data.normal_profile, verdict.detector) {
                (Some(p), Detector::Unsupervised) => {
                    p.forest.contributions(&buf[..n], one);
                    // log2(score) = -E[h] / c(ψ): a path made shorter is a higher score.
                    let norm = p.normaliser();
                    for v in one.iter_mut() {
                        *v = -*v / norm;
                    }
                }
                (profile, _) => {
                    let x = &buf[..n];
                    let forest = &self.data.supervised;
                    // Where the attack boxes' rule scored the row, the votes it kept.
                    match (&self.data.attack_support, profile) {
                        (Some(a), Some(p)) if a.applies(p.score(x)) => {
                            let mut kept = vec![false; forest.trees.len()];
                            a.for_each_supported(forest, x, |t, _| kept[t] = true);
                            forest.contributions_of(x, one, |t| kept[t]);
                        }
                        _ => {
                            forest.contributions(x, one);
                        }
                    }
                }
            }
            for j in 0..n {
                x[j] += buf[j];
                c[j] += one[j];
            }
        }
        let k = rows.len().max(1) as f64;
        let (x, c) = (&mut x[..n], &mut c[..n]);
        for j in 0..n {
            x[j] /= k;
            c[j] /= k;
        }
        let mut order: Vec<usize> = (0..n).filter(|&j| c[j] > 0.0).collect();
        order.sort_by(|&a, &b| c[b].total_cmp(&c[a]));
        order
            .into_iter()
            .take(TOP_FEATURES)
            .map(|j| FeatureContribution {
                name: FEATURE_NAMES[self.indices[j]],
                value: x[j],
                contribution: c[j],
            })
            .collect()
    }
}
