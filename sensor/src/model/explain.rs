//! Explanation: the features that moved a verdict's score most.

use serde::Serialize;

use super::{Detector, Model, Verdict, c_factor};
use crate::kdd::{FEATURE_NAMES, KddFeatures, NUM_FEATURES};

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
    /// by [`Ensemble::contributions`] of the detector that fired: the supervised forest when it
    /// did (alone or with the normal profile), in units of its score (attack probability); the
    /// normal profile when it alone did, in units of log2 of its score (a shorter isolation
    /// path is a positive contribution). Features that pushed towards normal are left out.
    ///
    /// About the cost of scoring the connection once more: meant for alerts and incidents, not
    /// for every connection.
    pub fn explain(&self, f: &KddFeatures, verdict: &Verdict) -> Vec<FeatureContribution> {
        let mut buf = [0f64; NUM_FEATURES];
        let n = self.inputs(f, &mut buf);
        let x = &buf[..n];
        let mut c = [0f64; NUM_FEATURES];
        let c = &mut c[..n];
        match (&self.data.normal_profile, verdict.detector) {
            (Some(p), Detector::Unsupervised) => {
                p.forest.contributions(x, c);
                // log2(score) = -E[h] / c(ψ): a path made shorter is a higher score.
                let norm = c_factor(p.sample_size as f64).max(f64::MIN_POSITIVE);
                for v in c.iter_mut() {
                    *v = -*v / norm;
                }
            }
            _ => {
                self.data.supervised.contributions(x, c);
            }
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
