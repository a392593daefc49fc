//! Scoring: compact tree ensembles (a supervised forest and an isolation-forest normal profile)
//! loaded from a versioned, checksummed model file, and the verdict for one connection.
//!
//! Trees are flattened into node arrays (feature, threshold, child index, leaf value), so scoring
//! is a tight loop over a few cache lines per tree, not a walk over the fitting structures.

mod explain;
mod file;
mod support;
#[cfg(test)]
mod tests;
mod tree;

use serde::{Deserialize, Serialize};

use crate::kdd::{FeatureSet, KddFeatures, NUM_FEATURES};

pub use explain::{FeatureContribution, TOP_FEATURES};
pub use file::{hex, save_data};
pub use support::{AttackSupport, PROFILE_ORDINARY_BELOW, SUPPORT_TOLERANCE, Scale, TreeSupport};
pub use tree::{Ensemble, LEAF, Node, NormalProfile, Tree, c_factor};

/// Version of the model file layout written. Bumped on any incompatible change, and on a
/// change that an older sensor would read without error but judge differently: 2 added the
/// forest's attack boxes ([`ModelData::attack_support`]), which a version-1 sensor would
/// ignore.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest layout this sensor reads (version 1: no attack boxes, every vote counts).
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// First bytes of a model file.
pub const MAGIC: &str = "SENSOR-MODEL";

/// Operating thresholds, chosen on validation data.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Supervised score (the trees' mean attack probability, from training rows at each leaf) at
    /// or above which a connection is anomalous.
    pub supervised: f64,
    /// Normal-profile score at or above which a connection is anomalous.
    pub unsupervised: f64,
    /// The false-positive rate the thresholds were chosen for, on validation data.
    pub target_fpr: f64,
}

/// Binary classification metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    pub rows: usize,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub false_positive_rate: f64,
    pub roc_auc: f64,
    /// [[true negatives, false positives], [false negatives, true positives]].
    pub confusion: [[u64; 2]; 2],
}

/// How the model was made: enough to reproduce and audit it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingMetadata {
    pub data_file: String,
    pub data_sha256: String,
    pub seed: u64,
    pub hyperparameters: serde_json::Value,
    pub validation: ClassificationMetrics,
    pub command: String,
}

/// Everything in a model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelData {
    pub format_version: u32,
    pub vocabulary_version: u32,
    pub feature_set: FeatureSet,
    /// Model inputs, in order; must equal the feature set's names.
    pub feature_names: Vec<String>,
    pub protocols: Vec<String>,
    pub services: Vec<String>,
    pub flags: Vec<String>,
    pub supervised: Ensemble,
    pub normal_profile: Option<NormalProfile>,
    pub thresholds: Thresholds,
    /// The thresholds of a connection whose host window the sensor has not seen at all (its
    /// first connections, a short capture), chosen on validation rows scored that way: the
    /// mean over the cold contexts (`crate::features::cold_contexts`). Averaging narrows the
    /// scores, so at [`Self::thresholds`] that mean does not flag the target share of normal
    /// rows; the cold thresholds are never below [`Self::thresholds`] (the model card says
    /// where they stand). A partly seen window gets thresholds between the two
    /// ([`Model::thresholds_at`]). Absent in older files and after a site baseline replaced
    /// the normal profile: then the cold verdict uses [`Self::thresholds`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_thresholds: Option<Thresholds>,
    /// Where the forest saw attacks: a connection the normal profile finds ordinary is judged
    /// by the forest's votes inside those boxes only ([`AttackSupport`]). Absent in older
    /// files: then every vote counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attack_support: Option<AttackSupport>,
    pub metadata: TrainingMetadata,
}

/// Why a model file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a sensor model file (no {MAGIC} header)")]
    NotAModel { path: String },
    #[error("{path}: checksum mismatch: the file is corrupted or truncated")]
    Checksum { path: String },
    #[error("{path}: model format version {found}, this sensor reads versions 1 to {expected}")]
    Version {
        path: String,
        found: u32,
        expected: u32,
    },
    #[error("{path}: malformed model: {reason}")]
    Malformed { path: String, reason: String },
    #[error("{path}: model does not match this sensor: {reason}")]
    Mismatch { path: String, reason: String },
}

/// Which detector called a connection anomalous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Detector {
    None,
    Supervised,
    Unsupervised,
    Both,
    /// The volume rule ([`crate::detect::volume`]), not the model: one conversation's packet
    /// rate is a flood's.
    Volume,
    /// Packets no network stack sends (`ConnectionRecord::malformed`: `land`, wrong UDP or
    /// ICMP fragments), not the model, which found the conversation ordinary.
    Malformed,
}

impl Detector {
    /// Its name, as serialised and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Detector::None => "none",
            Detector::Supervised => "supervised",
            Detector::Unsupervised => "unsupervised",
            Detector::Both => "both",
            Detector::Volume => "volume",
            Detector::Malformed => "malformed",
        }
    }

    /// Whether a rule, not the model, flagged the connection: no feature moved the verdict.
    pub fn is_rule(self) -> bool {
        matches!(self, Detector::Volume | Detector::Malformed)
    }
}

/// The verdict on one connection.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub anomalous: bool,
    /// Combined score: the larger of each detector's score over its threshold; ≥ 1 is anomalous.
    pub score: f64,
    pub detector: Detector,
    pub supervised_score: f64,
    pub unsupervised_score: Option<f64>,
    /// The forest's score before the attack boxes' rule ([`AttackSupport`]): the plain mean
    /// of its trees' votes, `supervised_score` wherever the rule did not lower it. An f32, so
    /// that it fits beside the flags and a verdict stays 40 bytes: a cold window's contexts
    /// make vectors of 32,000 verdicts, and 48-byte ones cost the bench's fresh flood 20%
    /// (allocator page faults). It is for reading: `withdrawn_by_attack_boxes` is decided on
    /// the f64 score, and a cold window's mean takes each context's exact score where the rule
    /// did not lower it.
    #[serde(default)]
    pub supervised_score_plain: f32,
    /// The forest alone would have flagged the connection, and the attack boxes' rule left it
    /// normal: a verdict the rule withdrew (`sensor_verdicts_withdrawn_by_attack_boxes_total`),
    /// marked on its record so that a missed attack can be found.
    #[serde(default)]
    pub withdrawn_by_attack_boxes: bool,
}

// A cold window's contexts make vectors of 32,000 verdicts (see `supervised_score_plain`).
const _: () = assert!(std::mem::size_of::<Verdict>() == 40);

impl Verdict {
    /// The verdict as the data files' label column and the rows' `verdict`: `normal` or
    /// `anomaly` (the ARFF files' class names).
    pub fn label(&self) -> &'static str {
        if self.anomalous { "anomaly" } else { "normal" }
    }
}

/// A loaded, validated model.
#[derive(Clone, Debug)]
pub struct Model {
    data: ModelData,
    /// Column indices of the model inputs in a `KddFeatures` row.
    indices: &'static [usize],
}

impl Model {
    pub fn data(&self) -> &ModelData {
        &self.data
    }

    pub fn feature_set(&self) -> FeatureSet {
        self.data.feature_set
    }

    pub fn thresholds(&self) -> Thresholds {
        self.data.thresholds
    }

    /// The thresholds of a cold host window ([`ModelData::cold_thresholds`]), if the model
    /// has them.
    pub fn cold_thresholds(&self) -> Option<Thresholds> {
        self.data.cold_thresholds
    }

    /// The thresholds for a verdict over the cold contexts of a host window of which
    /// `unseen_share` (0 to 1) was not seen: [`Model::thresholds`] at 0, the cold thresholds at
    /// 1, in proportion between.
    pub fn thresholds_at(&self, unseen_share: f64) -> Thresholds {
        let warm = self.data.thresholds;
        let Some(cold) = self.data.cold_thresholds else {
            return warm;
        };
        let k = unseen_share.clamp(0.0, 1.0);
        let mix = |w: f64, c: f64| w + (c - w) * k;
        Thresholds {
            supervised: mix(warm.supervised, cold.supervised),
            unsupervised: mix(warm.unsupervised, cold.unsupervised),
            target_fpr: warm.target_fpr,
        }
    }

    /// Replaces the operating thresholds (an operator's override, a site baseline). The cold
    /// thresholds move with them, each by the same factor, so a cold verdict keeps its
    /// calibrated margin over a warm one.
    pub fn set_thresholds(&mut self, t: Thresholds) {
        let old = self.data.thresholds;
        if let Some(c) = &mut self.data.cold_thresholds {
            let scale = |cold: f64, new: f64, old: f64| {
                if old > 0.0 && old.is_finite() && new.is_finite() {
                    cold * new / old
                } else {
                    new
                }
            };
            c.supervised = scale(c.supervised, t.supervised, old.supervised);
            c.unsupervised = scale(c.unsupervised, t.unsupervised, old.unsupervised);
            c.target_fpr = t.target_fpr;
        }
        self.data.thresholds = t;
    }

    /// The model inputs of one connection, gathered without allocating.
    #[inline]
    fn inputs(&self, f: &KddFeatures, buf: &mut [f64; NUM_FEATURES]) -> usize {
        for (slot, &i) in buf.iter_mut().zip(self.indices) {
            *slot = f.0[i];
        }
        self.indices.len()
    }

    /// The verdict on one connection.
    pub fn score(&self, f: &KddFeatures) -> Verdict {
        let mut buf = [0f64; NUM_FEATURES];
        let n = self.inputs(f, &mut buf);
        self.score_inputs(&buf[..n])
    }

    /// The verdict from model inputs already in model order.
    pub fn score_inputs(&self, x: &[f64]) -> Verdict {
        let u = self.data.normal_profile.as_ref().map(|p| p.score(x));
        let plain = self.data.supervised.mean(x);
        let s = self.supported(x, plain, u);
        verdict(s, plain, u, &self.data.thresholds)
    }

    /// The forest's score of `x` given its plain score `s` and the normal profile's `u`:
    /// [`AttackSupport::score`] where the model has attack boxes and a profile, since the
    /// forest's word alone, outside anything it saw attacks do, is an extrapolation from
    /// 1998's traffic. Never more than `s`; a function of the row alone (no threshold), so
    /// that a cold window's contexts and a site baseline average and calibrate the score that
    /// judges.
    #[inline]
    fn supported(&self, x: &[f64], s: f64, u: Option<f64>) -> f64 {
        match (&self.data.attack_support, u) {
            (Some(a), Some(u)) => a.score(&self.data.supervised, x, s, u, None),
            _ => s,
        }
    }

    /// Verdicts for many connections (see [`Ensemble::mean_batch`]); the same verdicts as
    /// [`Model::score`] row by row.
    pub fn score_batch(&self, rows: &[KddFeatures]) -> Vec<Verdict> {
        let mut x = Vec::with_capacity(rows.len() * self.input_width());
        for f in rows {
            self.push_inputs(f, &mut x);
        }
        self.score_inputs_batch(&x)
    }

    /// The verdict of the mean of several verdicts' detector scores: the expected score over
    /// contexts the sensor could not see (a cold host window of which `unseen_share` was not
    /// seen, `crate::features`), judged at [`Model::thresholds_at`] that share. `None` for an
    /// empty set.
    pub fn mean_verdict(&self, verdicts: &[Verdict], unseen_share: f64) -> Option<Verdict> {
        if verdicts.is_empty() {
            return None;
        }
        let n = verdicts.len() as f64;
        let s = verdicts.iter().map(|v| v.supervised_score).sum::<f64>() / n;
        // A context the rule did not lower has its exact score here, not the f32 copy.
        let plain = verdicts
            .iter()
            .map(|v| {
                if v.supervised_score as f32 == v.supervised_score_plain {
                    v.supervised_score
                } else {
                    f64::from(v.supervised_score_plain)
                }
            })
            .sum::<f64>()
            / n;
        let u = verdicts
            .iter()
            .map(|v| v.unsupervised_score)
            .sum::<Option<f64>>()
            .map(|u| u / n);
        Some(verdict(s, plain, u, &self.thresholds_at(unseen_share)))
    }

    /// How many inputs the model reads per connection.
    pub fn input_width(&self) -> usize {
        self.indices.len()
    }

    /// Appends the model inputs of one connection to `x` (in model order).
    #[inline]
    pub fn push_inputs(&self, f: &KddFeatures, x: &mut Vec<f64>) {
        x.extend(self.indices.iter().map(|&i| f.0[i]));
    }

    /// Verdicts for rows of model inputs ([`Model::push_inputs`], row-major).
    pub fn score_inputs_batch(&self, x: &[f64]) -> Vec<Verdict> {
        let width = self.input_width();
        let (mut s, mut u) = (Vec::new(), Vec::new());
        let profile = self.data.normal_profile.as_ref();
        if let Some(p) = profile {
            p.score_batch(x, width, &mut u);
        }
        let forest = &self.data.supervised;
        // The rows the attack boxes' rule lowered, with their supported score.
        let mut supported = Vec::new();
        match (&self.data.attack_support, profile) {
            // `Model::supported`, at each row's leaves as its walk ends.
            (Some(a), Some(_)) => {
                forest.mean_batch_then(x, width, &mut s, |r, mean, leaves| {
                    let row = &x[r * width..(r + 1) * width];
                    let v = a.score(forest, row, mean, u[r], Some(leaves));
                    if v != mean {
                        supported.push((r, v));
                    }
                });
            }
            _ => forest.mean_batch(x, width, &mut s),
        }
        let t = &self.data.thresholds;
        let u_of = |i: usize| profile.map(|_| u[i]);
        let mut out: Vec<Verdict> = s
            .iter()
            .enumerate()
            .map(|(i, &s)| verdict(s, s, u_of(i), t))
            .collect();
        for (r, v) in supported {
            out[r] = verdict(v, s[r], u_of(r), t);
        }
        out
    }
}

/// The verdict from the detectors' scores: the forest's `s` (after the attack boxes' rule) and
/// `plain` (before it), the normal profile's `u`.
fn verdict(s: f64, plain: f64, u: Option<f64>, t: &Thresholds) -> Verdict {
    let s_hit = s >= t.supervised;
    let u_hit = u.is_some_and(|u| u >= t.unsupervised);
    let detector = match (s_hit, u_hit) {
        (true, true) => Detector::Both,
        (true, false) => Detector::Supervised,
        (false, true) => Detector::Unsupervised,
        (false, false) => Detector::None,
    };
    Verdict {
        anomalous: s_hit || u_hit,
        score: combined(s, u, t),
        detector,
        supervised_score: s,
        unsupervised_score: u,
        supervised_score_plain: plain as f32,
        withdrawn_by_attack_boxes: !(s_hit || u_hit) && plain >= t.supervised && s < plain,
    }
}

/// The combined score: each detector's score over its threshold, the larger one. A connection is
/// anomalous exactly when this is ≥ 1, so ROC curves over it describe the combined verdict.
pub fn combined(s: f64, u: Option<f64>, t: &Thresholds) -> f64 {
    let a = if t.supervised > 0.0 {
        s / t.supervised
    } else {
        f64::INFINITY
    };
    let b = match u {
        Some(u) if t.unsupervised > 0.0 => u / t.unsupervised,
        _ => 0.0,
    };
    a.max(b)
}
