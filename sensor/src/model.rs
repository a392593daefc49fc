//! Scoring: compact tree ensembles (a supervised forest and an isolation-forest normal profile)
//! loaded from a versioned, checksummed model file, and the verdict for one connection.
//!
//! Trees are flattened into node arrays (feature, threshold, child index, leaf value), so scoring
//! is a tight loop over a few cache lines per tree, not a walk over the fitting structures.

use std::{fs, path::Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::kdd::{
    FEATURE_NAMES, FLAGS, FeatureSet, KddFeatures, NUM_FEATURES, PROTOCOLS, SERVICES,
    VOCABULARY_VERSION,
};

/// Version of the model file layout. Bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;
/// First bytes of a model file.
pub const MAGIC: &str = "SENSOR-MODEL";

/// A leaf marker in [`Node::feature`].
pub const LEAF: u32 = u32::MAX;

/// One node of a flattened tree, 16 bytes. Internal: go left when `x[feature] < threshold` (the
/// rule linfa-trees fits with), the right child is `left + 1`. Leaf (`feature == LEAF`): the
/// leaf's value is in `threshold`. Thresholds stay `f64`: byte counts reach 10^9, where `f32`
/// would move a split point past neighbouring values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub feature: u32,
    /// Index of the left child.
    pub left: u32,
    /// Split point, or the value of a leaf.
    pub threshold: f64,
}

impl Node {
    /// A leaf with `value`.
    pub fn leaf(value: f64) -> Node {
        Node {
            feature: LEAF,
            left: 0,
            threshold: value,
        }
    }

    /// An internal node.
    pub fn split(feature: usize, threshold: f64, left: usize) -> Node {
        Node {
            feature: feature as u32,
            left: left as u32,
            threshold,
        }
    }
}

/// A tree as a node array, root at index 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

impl Tree {
    /// The leaf value reached by `x` (indexed by model input position).
    #[inline]
    pub fn leaf(&self, x: &[f64]) -> f64 {
        let nodes = &self.nodes[..];
        let mut i = 0usize;
        loop {
            let n = &nodes[i];
            if n.feature == LEAF {
                return n.threshold;
            }
            i = n.left as usize + usize::from(x[n.feature as usize] >= n.threshold);
        }
    }

    /// The expectation at each node for path attribution: a leaf's value, and for a split the
    /// mean of its children's (see [`Ensemble::contributions`]). Children come after their
    /// parent (checked by `validate`), so one backward pass fills every node.
    fn node_values(&self) -> Vec<f64> {
        let mut v = vec![0.0; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate().rev() {
            v[i] = if n.feature == LEAF {
                n.threshold
            } else {
                let l = n.left as usize;
                let child = |c: usize| v.get(c).copied().unwrap_or(0.0);
                (child(l) + child(l + 1)) / 2.0
            };
        }
        v
    }

    /// Levels from the root to the deepest leaf (0 for a lone leaf).
    pub fn depth(&self) -> usize {
        let mut depth = vec![0usize; self.nodes.len()];
        let mut max = 0;
        // Children always come after their parent (checked by `validate`).
        for (i, n) in self.nodes.iter().enumerate() {
            if n.feature != LEAF {
                let l = n.left as usize;
                let child = depth[i] + 1;
                for c in [l, l + 1] {
                    if let Some(d) = depth.get_mut(c) {
                        // The deepest way in: a file may give a node two parents.
                        *d = (*d).max(child);
                        max = max.max(child);
                    }
                }
            }
        }
        max
    }

    /// Checks every index, so a corrupted file cannot make scoring loop or index out of bounds:
    /// children point strictly forward, features are within the input width.
    fn validate(&self, n_inputs: usize) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("empty tree".into());
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.threshold.is_finite() {
                return Err(format!("node {i}: value not finite"));
            }
            if n.feature == LEAF {
                continue;
            }
            if n.feature as usize >= n_inputs {
                return Err(format!("node {i}: feature {} out of range", n.feature));
            }
            let l = n.left as usize;
            if l <= i || l + 1 >= self.nodes.len() {
                return Err(format!("node {i}: child index {l} out of range"));
            }
            if !n.threshold.is_finite() {
                return Err(format!("node {i}: threshold not finite"));
            }
        }
        Ok(())
    }
}

/// A set of trees whose leaf values are averaged.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ensemble {
    pub trees: Vec<Tree>,
    /// The form [`Ensemble::mean_batch`] walks, built once on first use (not per batch: the
    /// live agent scores batches of a few hundred rows, where rebuilding cost as much as the
    /// scoring).
    #[serde(skip)]
    walk: std::sync::OnceLock<Option<Vec<WalkTree>>>,
    /// Each tree's node expectations for [`Ensemble::contributions`], built on first use (an
    /// explanation is asked for anomalous connections only).
    #[serde(skip)]
    node_values: std::sync::OnceLock<Vec<Vec<f64>>>,
}

/// Two ensembles are equal when their trees are; the walk form is a cache.
impl PartialEq for Ensemble {
    fn eq(&self, other: &Ensemble) -> bool {
        self.trees == other.trees
    }
}

/// A tree prepared for branch-free lockstep walking: each leaf is rewritten to loop onto itself
/// (`feature` 0, `threshold` NaN, so `x >= threshold` is false for every `x` and `left + 0`
/// is the leaf again), and the leaf values move to `values`. A walk then needs no "is this a leaf?" test,
/// whose outcome the CPU cannot predict, only `depth` steps of load-compare-add.
#[derive(Clone, Debug)]
struct WalkTree {
    nodes: Vec<Node>,
    values: Vec<f64>,
    depth: usize,
    /// One more than the largest feature index a node reads: rows must be at least this wide.
    width: usize,
}

impl WalkTree {
    /// The walk form of `t`, or `None` when a child index is out of range or does not point
    /// forward (a tree that did not come through [`Tree::validate`]); such a tree is walked by
    /// the checked [`Tree::leaf`] instead.
    fn of(t: &Tree) -> Option<WalkTree> {
        let mut nodes = t.nodes.clone();
        let mut values = vec![0.0; nodes.len()];
        let mut width = 1;
        for (i, n) in nodes.iter_mut().enumerate() {
            if n.feature == LEAF {
                values[i] = n.threshold;
                *n = Node {
                    feature: 0,
                    left: i as u32,
                    threshold: f64::NAN,
                };
            } else {
                let l = n.left as usize;
                if l <= i || l + 1 >= t.nodes.len() {
                    return None;
                }
                width = width.max(n.feature as usize + 1);
            }
        }
        Some(WalkTree {
            nodes,
            values,
            depth: t.depth(),
            width,
        })
    }
}

impl Ensemble {
    pub fn new(trees: Vec<Tree>) -> Ensemble {
        Ensemble {
            trees,
            walk: std::sync::OnceLock::new(),
            node_values: std::sync::OnceLock::new(),
        }
    }

    /// Path attribution (Saabas): for each tree, the walk from the root to `x`'s leaf credits
    /// the change of the node expectation at every split to the split's feature; averaged over
    /// the trees. Adds each input's contribution into `out` (one slot per model input, zeroed
    /// first) and returns the bias, the forest's expectation at the roots, so that
    /// `bias + sum(out) == mean(x)` up to rounding.
    ///
    /// The model file keeps no node populations, so a node's expectation is the plain mean of
    /// its two children's (each split taken as even), not Saabas's population-weighted mean:
    /// the attribution still adds up exactly, but the bias is the mean over leaves weighted by
    /// depth rather than the training rows' mean.
    pub fn contributions(&self, x: &[f64], out: &mut [f64]) -> f64 {
        let values = self
            .node_values
            .get_or_init(|| self.trees.iter().map(Tree::node_values).collect());
        out.fill(0.0);
        let mut bias = 0.0;
        for (t, v) in self.trees.iter().zip(values) {
            let mut i = 0usize;
            bias += v[0];
            loop {
                let n = &t.nodes[i];
                if n.feature == LEAF {
                    break;
                }
                let f = n.feature as usize;
                let next = n.left as usize + usize::from(x[f] >= n.threshold);
                if let Some(slot) = out.get_mut(f) {
                    *slot += v[next] - v[i];
                }
                i = next;
            }
        }
        let k = self.trees.len().max(1) as f64;
        for c in out.iter_mut() {
            *c /= k;
        }
        bias / k
    }

    /// The mean leaf value over the trees.
    #[inline]
    pub fn mean(&self, x: &[f64]) -> f64 {
        let sum: f64 = self.trees.iter().map(|t| t.leaf(x)).sum();
        sum / self.trees.len().max(1) as f64
    }

    /// [`Ensemble::mean`] of every row of `x` (row-major, `width` inputs per row) into `out`.
    ///
    /// One allocation for the whole batch, no per-row gathering.
    pub fn mean_batch(&self, x: &[f64], width: usize, out: &mut Vec<f64>) {
        let n = x.len() / width.max(1);
        out.clear();
        out.resize(n, 0.0);
        // Groups of LANES rows walk each tree together (a row that reached its leaf stays
        // there): LANES independent chains of dependent loads that the CPU overlaps, where one
        // row at a time waits for every load in turn. 12 measured fastest of 8 to 16 on the
        // committed model (about 25% faster than 8); more lanes spill registers.
        const LANES: usize = 12;
        let walk = self
            .walk
            .get_or_init(|| self.trees.iter().map(WalkTree::of).collect())
            .as_ref()
            .filter(|w| w.iter().all(|t| t.width <= width));
        // Rows too narrow for some tree, or a tree that failed `WalkTree::of`: checked walk.
        let (walk, full): (&[WalkTree], usize) = match walk {
            Some(w) => (w, n - n % LANES),
            None => (&[], 0),
        };
        for start in (0..full).step_by(LANES) {
            let rows: [&[f64]; LANES] =
                std::array::from_fn(|k| &x[(start + k) * width..(start + k + 1) * width]);
            let mut sums = [0f64; LANES];
            for t in walk {
                let nodes = &t.nodes[..];
                let mut idx = [0usize; LANES];
                // At most the tree's depth; fewer once every lane sits on its leaf (a step
                // that moves no lane), as unbounded trees have a few paths far deeper than most.
                for _ in 0..t.depth {
                    let mut moved = false;
                    for k in 0..LANES {
                        // SAFETY: `idx[k]` is 0 or a child index, and `WalkTree::of` checked
                        // every child index (`left + 1`) against the node count; leaves loop
                        // onto themselves. `feature < t.width <= width == rows[k].len()`,
                        // checked where `walk` was taken.
                        let (nd, v) = unsafe {
                            let nd = nodes.get_unchecked(idx[k]);
                            (nd, *rows[k].get_unchecked(nd.feature as usize))
                        };
                        let next = nd.left as usize + usize::from(v >= nd.threshold);
                        moved |= next != idx[k];
                        idx[k] = next;
                    }
                    if !moved {
                        break;
                    }
                }
                for k in 0..LANES {
                    sums[k] += t.values[idx[k]];
                }
            }
            out[start..start + LANES].copy_from_slice(&sums);
        }
        for (r, acc) in out.iter_mut().enumerate().skip(full) {
            let xr = &x[r * width..(r + 1) * width];
            *acc = self.trees.iter().map(|t| t.leaf(xr)).sum();
        }
        let k = self.trees.len().max(1) as f64;
        for v in out.iter_mut() {
            *v /= k;
        }
    }
}

/// Average path length of an unsuccessful search in a binary search tree of `n` points: the
/// isolation forest's normaliser `c(n)`.
pub fn c_factor(n: f64) -> f64 {
    if n <= 1.0 {
        0.0
    } else if n < 2.5 {
        1.0
    } else {
        2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
    }
}

/// The unsupervised normal profile: an isolation forest fitted on normal traffic only. Leaf
/// values hold the path length (depth plus `c(size)` of the leaf's remaining points).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormalProfile {
    pub forest: Ensemble,
    /// Points per tree (`ψ`), for the normaliser.
    pub sample_size: usize,
    /// Where the profile was learnt (NSL-KDD training rows, or a site baseline).
    pub source: String,
}

impl NormalProfile {
    /// Anomaly score in (0, 1): 2^(−E[h(x)] / c(ψ)); near 1 is anomalous, ≤ 0.5 normal.
    pub fn score(&self, x: &[f64]) -> f64 {
        let c = c_factor(self.sample_size as f64).max(f64::MIN_POSITIVE);
        (2f64).powf(-self.forest.mean(x) / c)
    }
}

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
    #[error("{path}: model format version {found}, this sensor reads {expected}")]
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
}

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

/// A loaded, validated model.
#[derive(Clone, Debug)]
pub struct Model {
    data: ModelData,
    /// Column indices of the model inputs in a `KddFeatures` row.
    indices: &'static [usize],
}

impl Model {
    /// Builds a model from its parts, validating them as [`Model::load`] does.
    pub fn from_data(data: ModelData) -> Result<Model, ModelError> {
        validate(&data, "<memory>")?;
        let indices = data.feature_set.indices();
        Ok(Model { data, indices })
    }

    /// Loads and checks a model file: header, checksum, format and vocabulary versions, feature
    /// names and order, vocabularies, and every tree's indices.
    pub fn load(path: &Path) -> Result<Model, ModelError> {
        let p = path.display().to_string();
        let bytes = fs::read(path).map_err(|source| ModelError::Io {
            path: p.clone(),
            source,
        })?;
        let text =
            std::str::from_utf8(&bytes).map_err(|_| ModelError::NotAModel { path: p.clone() })?;
        let (header, body) = text
            .split_once('\n')
            .ok_or(ModelError::NotAModel { path: p.clone() })?;
        let mut parts = header.split_whitespace();
        if parts.next() != Some(MAGIC) {
            return Err(ModelError::NotAModel { path: p });
        }
        let version: u32 = parts
            .next()
            .and_then(|v| v.strip_prefix('v'))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ModelError::Malformed {
                path: p.clone(),
                reason: "bad header".into(),
            })?;
        if version != FORMAT_VERSION {
            return Err(ModelError::Version {
                path: p,
                found: version,
                expected: FORMAT_VERSION,
            });
        }
        let sum = parts
            .next()
            .and_then(|s| s.strip_prefix("sha256="))
            .ok_or_else(|| ModelError::Malformed {
                path: p.clone(),
                reason: "no checksum in header".into(),
            })?;
        if hex(&Sha256::digest(body.as_bytes())) != sum {
            return Err(ModelError::Checksum { path: p });
        }
        let data: ModelData = serde_json::from_str(body).map_err(|e| ModelError::Malformed {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        validate(&data, &p)?;
        let indices = data.feature_set.indices();
        Ok(Model { data, indices })
    }

    /// Writes the model file (header with format version and SHA-256 of the body, then JSON).
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        save_data(&self.data, path)
    }

    pub fn data(&self) -> &ModelData {
        &self.data
    }

    pub fn feature_set(&self) -> FeatureSet {
        self.data.feature_set
    }

    pub fn thresholds(&self) -> Thresholds {
        self.data.thresholds
    }

    /// Replaces the operating thresholds (an operator's override).
    pub fn set_thresholds(&mut self, t: Thresholds) {
        self.data.thresholds = t;
    }

    /// Replaces the normal profile and its threshold (a site baseline).
    pub fn with_normal_profile(
        mut self,
        profile: NormalProfile,
        threshold: f64,
    ) -> Result<Model, ModelError> {
        self.data.normal_profile = Some(profile);
        self.data.thresholds.unsupervised = threshold;
        validate(&self.data, "<memory>")?;
        Ok(self)
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

    /// The verdict from model inputs already in model order.
    pub fn score_inputs(&self, x: &[f64]) -> Verdict {
        let s = self.data.supervised.mean(x);
        let u = self.data.normal_profile.as_ref().map(|p| p.score(x));
        verdict(s, u, &self.data.thresholds)
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
        self.data.supervised.mean_batch(x, width, &mut s);
        let c = self.data.normal_profile.as_ref().map(|p| {
            p.forest.mean_batch(x, width, &mut u);
            c_factor(p.sample_size as f64).max(f64::MIN_POSITIVE)
        });
        let t = &self.data.thresholds;
        s.iter()
            .enumerate()
            .map(|(i, &s)| {
                let u = c.map(|c| (2f64).powf(-u[i] / c));
                verdict(s, u, t)
            })
            .collect()
    }
}

/// The verdict from the detectors' scores.
fn verdict(s: f64, u: Option<f64>, t: &Thresholds) -> Verdict {
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

/// Writes `data` as a model file.
pub fn save_data(data: &ModelData, path: &Path) -> Result<(), ModelError> {
    let p = path.display().to_string();
    let body = serde_json::to_string(data).map_err(|e| ModelError::Malformed {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    let text = format!(
        "{MAGIC} v{FORMAT_VERSION} sha256={}\n{body}",
        hex(&Sha256::digest(body.as_bytes()))
    );
    fs::write(path, text).map_err(|source| ModelError::Io { path: p, source })
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn validate(d: &ModelData, path: &str) -> Result<(), ModelError> {
    let mismatch = |reason: String| ModelError::Mismatch {
        path: path.into(),
        reason,
    };
    if d.format_version != FORMAT_VERSION {
        return Err(ModelError::Version {
            path: path.into(),
            found: d.format_version,
            expected: FORMAT_VERSION,
        });
    }
    if d.vocabulary_version != VOCABULARY_VERSION {
        return Err(mismatch(format!(
            "vocabulary version {} (this sensor: {VOCABULARY_VERSION})",
            d.vocabulary_version
        )));
    }
    let names = d.feature_set.names();
    if d.feature_names != names {
        return Err(mismatch(format!(
            "feature names/order differ from the {:?} set",
            d.feature_set
        )));
    }
    let same =
        |a: &[String], b: &[&str]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y);
    if !same(&d.protocols, &PROTOCOLS) || !same(&d.services, &SERVICES) || !same(&d.flags, &FLAGS) {
        return Err(mismatch("vocabularies differ".into()));
    }
    let n = names.len();
    debug_assert!(n <= FEATURE_NAMES.len());
    let malformed = |reason: String| ModelError::Malformed {
        path: path.into(),
        reason,
    };
    if d.supervised.trees.is_empty() {
        return Err(malformed("no supervised trees".into()));
    }
    for (i, t) in d.supervised.trees.iter().enumerate() {
        t.validate(n)
            .map_err(|r| malformed(format!("supervised tree {i}: {r}")))?;
    }
    if let Some(p) = &d.normal_profile {
        if p.forest.trees.is_empty() || p.sample_size < 2 {
            return Err(malformed("empty normal profile".into()));
        }
        for (i, t) in p.forest.trees.iter().enumerate() {
            t.validate(n)
                .map_err(|r| malformed(format!("normal-profile tree {i}: {r}")))?;
        }
    }
    let t = &d.thresholds;
    if !(t.supervised.is_finite() && t.unsupervised.is_finite() && t.target_fpr.is_finite()) {
        return Err(malformed("thresholds not finite".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stump(feature: u32, threshold: f64) -> Tree {
        Tree {
            nodes: vec![
                Node::split(feature as usize, threshold, 1),
                Node::leaf(0.0),
                Node::leaf(1.0),
            ],
        }
    }

    #[test]
    fn trees_follow_the_linfa_rule_and_reject_bad_indices() {
        let t = stump(1, 5.0);
        assert_eq!(t.leaf(&[0.0, 4.9]), 0.0);
        assert_eq!(t.leaf(&[0.0, 5.0]), 1.0, "equal goes right, as in linfa");
        assert!(t.validate(2).is_ok());
        assert!(t.validate(1).is_err(), "feature out of range");
        let mut bad = t.clone();
        bad.nodes[0].left = 0;
        assert!(bad.validate(2).is_err(), "a child pointing back would loop");
    }

    #[test]
    fn batch_scoring_equals_row_by_row_including_the_tail() {
        // Two trees of different depths; 29 rows: two groups in lockstep and a tail of 5.
        let deep = Tree {
            nodes: vec![
                Node::split(0, 5.0, 1),
                Node::leaf(0.25),
                Node::split(1, 2.0, 3),
                Node::leaf(0.5),
                Node::leaf(1.0),
            ],
        };
        let e = Ensemble::new(vec![stump(1, 1.0), deep]);
        assert_eq!(e.trees[1].depth(), 2);
        let rows: Vec<[f64; 2]> = (0..29).map(|i| [(i % 13) as f64, (i % 4) as f64]).collect();
        let flat: Vec<f64> = rows.iter().flatten().copied().collect();
        let mut out = Vec::new();
        e.mean_batch(&flat, 2, &mut out);
        let expected: Vec<f64> = rows.iter().map(|r| e.mean(r)).collect();
        assert_eq!(out, expected);
        assert!(out.contains(&0.125) && out.contains(&1.0), "{out:?}");
    }

    #[test]
    fn the_unchecked_walk_refuses_trees_it_cannot_prove_in_bounds() {
        let mut bad = stump(1, 1.0);
        bad.nodes[0].left = 2; // right child would be node 3 of 3
        assert!(WalkTree::of(&bad).is_none());
        let mut back = stump(1, 1.0);
        back.nodes[0].left = 0;
        assert!(WalkTree::of(&back).is_none(), "a child pointing back");
        assert_eq!(WalkTree::of(&stump(1, 1.0)).map(|w| w.width), Some(2));
    }

    #[test]
    fn depth_counts_the_deepest_way_into_a_node_with_two_parents() {
        // Node 3 is unreachable but valid on file; it also points at node 4, which the root
        // reaches at depth 2. A depth taken from the last parent would say 2, and the lockstep
        // walk would stop on node 4 (an internal node) for rows that go 0 -> 2 -> 4 -> 6/7.
        let t = Tree {
            nodes: vec![
                Node::split(0, 1.0, 1),
                Node::leaf(0.1),
                Node::split(0, 2.0, 4),
                Node::split(0, 3.0, 4),
                Node::split(0, 4.0, 6),
                Node::leaf(0.2),
                Node::leaf(0.3),
                Node::leaf(0.4),
            ],
        };
        assert!(t.validate(1).is_ok());
        assert_eq!(t.depth(), 3);
        let e = Ensemble::new(vec![t]);
        let rows: Vec<f64> = (0..24).map(|i| (i % 6) as f64).collect();
        let mut out = Vec::new();
        e.mean_batch(&rows, 1, &mut out);
        let expected: Vec<f64> = rows.iter().map(|&x| e.mean(&[x])).collect();
        assert_eq!(out, expected);
    }

    #[test]
    #[should_panic(expected = "index out of bounds")]
    fn rows_narrower_than_a_tree_take_the_checked_walk() {
        // The tree reads feature 1; rows of width 1 must not be read past their end.
        let e = Ensemble::new(vec![stump(1, 1.0)]);
        let mut out = Vec::new();
        e.mean_batch(&[0.0; 24], 1, &mut out);
    }

    #[test]
    fn isolation_normaliser_matches_the_paper() {
        assert!((c_factor(256.0) - 10.244).abs() < 0.01);
        assert_eq!(c_factor(1.0), 0.0);
    }

    #[test]
    fn path_attribution_of_a_hand_built_forest_is_exact() {
        // Tree A: x0 < 5 -> 0.2; else x1 < 2 -> 0.4, else 1.0. Node expectations: the split on
        // x1 is (0.4 + 1.0) / 2 = 0.7, the root (0.2 + 0.7) / 2 = 0.45.
        let a = Tree {
            nodes: vec![
                Node::split(0, 5.0, 1),
                Node::leaf(0.2),
                Node::split(1, 2.0, 3),
                Node::leaf(0.4),
                Node::leaf(1.0),
            ],
        };
        // Tree B: x1 < 1 -> 0.0, else 0.6; root 0.3.
        let b = Tree {
            nodes: vec![Node::split(1, 1.0, 1), Node::leaf(0.0), Node::leaf(0.6)],
        };
        let forest = Ensemble::new(vec![a, b]);
        let x = [6.0, 3.0, 100.0];
        let mut c = [9.0; 3];
        let bias = forest.contributions(&x, &mut c);
        // A: x0 moved 0.45 -> 0.7, x1 0.7 -> 1.0; B: x1 moved 0.3 -> 0.6. Averaged over two.
        assert!((bias - 0.375).abs() < 1e-12, "{bias}");
        assert!((c[0] - 0.125).abs() < 1e-12, "{c:?}");
        assert!((c[1] - 0.3).abs() < 1e-12, "{c:?}");
        assert_eq!(c[2], 0.0, "a feature no split reads contributes nothing");
        assert!((bias + c.iter().sum::<f64>() - forest.mean(&x)).abs() < 1e-12);
        // Left of every split: the contributions are negative and still add up.
        let x = [0.0, 0.0, 0.0];
        let bias = forest.contributions(&x, &mut c);
        assert!((bias + c.iter().sum::<f64>() - forest.mean(&x)).abs() < 1e-12);
        assert!(c[0] < 0.0 && c[1] < 0.0, "{c:?}");
    }

    #[test]
    fn path_attribution_adds_up_on_the_committed_model() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model");
        let m = Model::load(&p).expect("committed model");
        let w = m.input_width();
        let mut c = vec![0.0; w];
        for seed in 0..50u64 {
            // Inputs spread over the ranges the features take (rates, counts, bytes).
            let x: Vec<f64> = (0..w as u64)
                .map(|j| {
                    let h = (seed * 31 + j * 17 + 7).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
                    (h % 1000) as f64 / [1000.0, 2.0, 0.01][(j % 3) as usize]
                })
                .collect();
            for forest in [
                &m.data.supervised,
                &m.data.normal_profile.as_ref().unwrap().forest,
            ] {
                let bias = forest.contributions(&x, &mut c);
                let mean = forest.mean(&x);
                let sum = bias + c.iter().sum::<f64>();
                assert!(
                    (sum - mean).abs() < 1e-9 * mean.abs().max(1.0),
                    "{sum} vs {mean}"
                );
            }
        }
    }
}
