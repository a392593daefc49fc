//! Where the forest has seen attacks: for each leaf of each tree that votes "attack", the box
//! (per model input, the smallest and the largest value) of the training attack rows that reach
//! it.
//!
//! Why: the training data's normal traffic is 1998's. A connection of a kind it has no normal
//! rows of (a small request and response on an unnamed TCP port, an empty UDP datagram) lands
//! in leaves grown on attack rows that share only some of its values (a `satan` probe's service
//! and size, not its answer), and the forest's vote there is an extrapolation. Where the
//! normal profile finds such a connection ordinary, those votes are not evidence of an attack.
//! So the forest's score of a row the profile scores below
//! [`AttackSupport::profile_ordinary_below`] (0.5, the isolation forest's own line between "as
//! easy to isolate as an average point" and "easier") counts only the votes of leaves whose box
//! holds the row (`Model::score_inputs`). It is a property of the row, not of any threshold:
//! the score a cold window's contexts average, and the one `sensor baseline` calibrates on.
//!
//! Not the forest everywhere: votes outside the boxes are also how the forest catches attack
//! types it was not fitted on, and a row the profile finds unusual keeps every vote
//! (`docs/model.md`, "Where the forest extrapolates", has the variants measured).

use serde::{Deserialize, Serialize};

use super::tree::{Ensemble, LEAF};
use crate::kdd::NUM_FEATURES;

/// How an input is compared with a box.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Not boxed: a category index (protocol, service, flag), whose order means nothing; the
    /// trees split on them already.
    Unboxed,
    /// Compared as `ln(1 + value)`: counts, bytes and durations, which span orders of magnitude.
    Log,
    /// Compared as they are: rates, flags and small counts.
    Linear,
}

impl Scale {
    /// The scale of a KDD feature by name.
    pub fn of(feature: &str) -> Scale {
        match feature {
            "protocol_type" | "service" | "flag" => Scale::Unboxed,
            "duration" | "src_bytes" | "dst_bytes" | "count" | "srv_count" | "dst_host_count"
            | "dst_host_srv_count" | "hot" | "num_failed_logins" | "num_compromised"
            | "num_root" | "num_file_creations" | "num_shells" | "num_access_files"
            | "num_outbound_cmds" => Scale::Log,
            _ => Scale::Linear,
        }
    }

    #[inline]
    fn apply(self, v: f64) -> f64 {
        match self {
            Scale::Log => v.max(0.0).ln_1p(),
            _ => v,
        }
    }
}

/// The attack rows' boxes of one tree's leaves with an attack vote (a value above 0).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TreeSupport {
    /// Per node of the tree: the index of its box, or `u32::MAX` (a split, a leaf without an
    /// attack vote, or one no training attack row reached).
    pub box_of: Vec<u32>,
    /// The boxes' lower bounds, [`AttackSupport::boxed`] values each (the inputs whose scale is
    /// not [`Scale::Unboxed`], in input order), on their scale.
    pub lo: Vec<f32>,
    /// The boxes' upper bounds, laid out as `lo`.
    pub hi: Vec<f32>,
}

/// Per tree of the forest, its leaves' attack boxes, and the rule that uses them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackSupport {
    /// Per model input.
    pub scales: Vec<Scale>,
    /// How far outside a box (on the input's scale) a value may lie and still be inside: 0.1, a
    /// rate 0.1 beyond the extremes or a count about 10% beyond them.
    pub tolerance: f64,
    /// The normal profile's score under which a connection is ordinary to it.
    pub profile_ordinary_below: f64,
    pub trees: Vec<TreeSupport>,
}

/// Default [`AttackSupport::tolerance`].
pub const SUPPORT_TOLERANCE: f64 = 0.1;
/// Slack on the tolerance for the bounds' `f32` rounding: a rate of 0.23 is within 0.1 of a
/// bound of 0.13 whichever way either was rounded.
const ROUNDING_SLACK: f64 = 1e-6;
/// Default [`AttackSupport::profile_ordinary_below`]: an isolation score of 0.5 means a path as
/// long as the average one (`2^-1`).
pub const PROFILE_ORDINARY_BELOW: f64 = 0.5;

impl AttackSupport {
    /// The boxes of `forest`'s leaves with an attack vote over the attack rows of `x`
    /// (row-major, `scales.len()` inputs per row) with `attack[r]`.
    pub fn fit(forest: &Ensemble, scales: &[Scale], x: &[f64], attack: &[bool]) -> AttackSupport {
        let width = scales.len();
        let k = boxed_count(scales);
        let mut buf = [0f64; NUM_FEATURES];
        let trees = forest
            .trees
            .iter()
            .map(|t| {
                let mut box_of = vec![u32::MAX; t.nodes.len()];
                let (mut lo, mut hi) = (Vec::new(), Vec::new());
                for (row, _) in x.chunks_exact(width).zip(attack).filter(|(_, a)| **a) {
                    let leaf = t.leaf_index(row);
                    if t.nodes[leaf].threshold <= 0.0 || k == 0 {
                        continue; // no attack vote to support, or nothing to box
                    }
                    if box_of[leaf] == u32::MAX {
                        box_of[leaf] = (lo.len() / k) as u32;
                        lo.resize(lo.len() + k, f32::INFINITY);
                        hi.resize(hi.len() + k, f32::NEG_INFINITY);
                    }
                    let b = box_of[leaf] as usize * k;
                    let scaled = scale_row(scales, row, &mut buf);
                    for (j, &v) in scaled.iter().enumerate() {
                        lo[b + j] = lo[b + j].min(v as f32);
                        hi[b + j] = hi[b + j].max(v as f32);
                    }
                }
                TreeSupport { box_of, lo, hi }
            })
            .collect();
        AttackSupport {
            scales: scales.to_vec(),
            tolerance: SUPPORT_TOLERANCE,
            profile_ordinary_below: PROFILE_ORDINARY_BELOW,
            trees,
        }
    }

    /// How many inputs are boxed (each box's length).
    pub fn boxed(&self) -> usize {
        boxed_count(&self.scales)
    }

    /// Whether the rule applies to a row the normal profile scored `u`.
    #[inline]
    pub fn applies(&self, u: f64) -> bool {
        u < self.profile_ordinary_below
    }

    /// Attack-voting leaves with a box, over all trees.
    pub fn box_count(&self) -> usize {
        let k = self.boxed().max(1);
        self.trees.iter().map(|t| t.lo.len() / k).sum()
    }

    /// The forest's score of `x` under the rule, given its plain score `s` (the mean vote) and
    /// the normal profile's score `u`: where the profile finds `x` ordinary, the mean of only
    /// the supported votes; else `s`. Rows no tree votes "attack" for are 0 either way and skip
    /// the second look. `leaves`: `x`'s leaf in each tree, when the walk that scored it kept
    /// them.
    #[inline]
    pub fn score(
        &self,
        forest: &Ensemble,
        x: &[f64],
        s: f64,
        u: f64,
        leaves: Option<&[u32]>,
    ) -> f64 {
        if s > 0.0 && self.applies(u) {
            self.supported_mean_at(forest, x, leaves)
        } else {
            s
        }
    }

    /// The forest's mean vote on `x` counting only the leaves whose attack box holds `x`.
    pub fn supported_mean(&self, forest: &Ensemble, x: &[f64]) -> f64 {
        self.supported_mean_at(forest, x, None)
    }

    /// [`AttackSupport::supported_mean`] given `x`'s leaf in each tree if known (from
    /// [`Ensemble::mean_batch_then`]), else found by walking the trees.
    pub fn supported_mean_at(&self, forest: &Ensemble, x: &[f64], leaves: Option<&[u32]>) -> f64 {
        let mut sum = 0.0;
        self.for_each_supported_at(forest, x, leaves, |_, vote| sum += vote);
        sum / forest.trees.len().max(1) as f64
    }

    /// Calls `f` with the index and the vote of every tree whose leaf for `x` has an attack vote
    /// and a box that holds `x`.
    pub fn for_each_supported(&self, forest: &Ensemble, x: &[f64], f: impl FnMut(usize, f64)) {
        self.for_each_supported_at(forest, x, None, f);
    }

    fn for_each_supported_at(
        &self,
        forest: &Ensemble,
        x: &[f64],
        leaves: Option<&[u32]>,
        mut f: impl FnMut(usize, f64),
    ) {
        let k = self.boxed();
        let mut buf = [0f64; NUM_FEATURES];
        let scaled = scale_row(&self.scales, x, &mut buf);
        let tol = self.tolerance + ROUNDING_SLACK;
        for (i, (t, s)) in forest.trees.iter().zip(&self.trees).enumerate() {
            let leaf = match leaves.and_then(|l| l.get(i)) {
                Some(&l) => l as usize,
                None => t.leaf_index(x),
            };
            match (s.box_of.get(leaf), t.nodes.get(leaf)) {
                (Some(&b), Some(node)) if b != u32::MAX && node.threshold > 0.0 => {
                    let b = b as usize * k;
                    let (lo, hi) = (&s.lo[b..b + k], &s.hi[b..b + k]);
                    let inside = scaled
                        .iter()
                        .zip(lo.iter().zip(hi))
                        .all(|(&v, (&l, &h))| v >= f64::from(l) - tol && v <= f64::from(h) + tol);
                    if inside {
                        f(i, node.threshold);
                    }
                }
                _ => {}
            }
        }
    }

    /// Checks the boxes against the forest, so that a corrupted file cannot index out of bounds
    /// or make the supported score exceed the forest's.
    pub(super) fn validate(&self, forest: &Ensemble, n_inputs: usize) -> Result<(), String> {
        if self.scales.len() != n_inputs {
            return Err(format!(
                "attack support has {} scales for {n_inputs} inputs",
                self.scales.len()
            ));
        }
        if self.trees.len() != forest.trees.len() {
            return Err("attack support and forest differ in tree count".into());
        }
        if !(self.tolerance.is_finite() && self.profile_ordinary_below.is_finite()) {
            return Err("attack support: parameters not finite".into());
        }
        let k = self.boxed();
        for (i, (s, t)) in self.trees.iter().zip(&forest.trees).enumerate() {
            let boxes = s.lo.len() / k.max(1);
            if s.box_of.len() != t.nodes.len()
                || s.lo.len() != s.hi.len()
                || s.lo.len() != boxes * k
            {
                return Err(format!("attack support of tree {i}: sizes do not match"));
            }
            for (n, &b) in t.nodes.iter().zip(&s.box_of) {
                if b != u32::MAX && (n.feature != LEAF || b as usize >= boxes) {
                    return Err(format!(
                        "attack support of tree {i}: box index out of range"
                    ));
                }
                if n.feature == LEAF && !(0.0..=1.0).contains(&n.threshold) {
                    return Err(format!(
                        "tree {i}: a leaf's attack probability outside [0, 1]"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// How many of `scales` are boxed.
fn boxed_count(scales: &[Scale]) -> usize {
    scales.iter().filter(|s| **s != Scale::Unboxed).count()
}

/// The boxed inputs of `row`, on their scales, in `buf`'s first slots (a model has at most
/// [`NUM_FEATURES`] inputs).
#[inline]
fn scale_row<'a>(scales: &[Scale], row: &[f64], buf: &'a mut [f64; NUM_FEATURES]) -> &'a [f64] {
    let mut k = 0;
    for (s, &v) in scales.iter().zip(row) {
        if *s != Scale::Unboxed && k < NUM_FEATURES {
            buf[k] = s.apply(v);
            k += 1;
        }
    }
    &buf[..k]
}
