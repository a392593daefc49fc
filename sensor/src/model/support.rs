//! Where the forest has seen attacks: for each leaf of each tree that votes "attack", the box
//! (per model input, the smallest and the largest value) of the training attack rows that reach
//! it.
//!
//! Why: the training data's normal traffic is 1998's. A connection of a kind it has no normal
//! rows of (a small request and response on an unnamed TCP port, an empty UDP datagram) lands
//! in leaves grown on attack rows that share only some of its values (a `satan` probe's service
//! and size, not its answer), and the forest's vote there is an extrapolation. Where the
//! normal profile finds such a connection ordinary, those votes are not evidence of an attack.
//! So the forest's score of a connection that reaches its threshold while the profile scores
//! it below [`AttackSupport::profile_ordinary_below`] (0.5, the isolation forest's own line
//! between "as easy to isolate as an average point" and "easier") is recomputed counting only
//! the votes of leaves whose box holds the connection (`Model::score_inputs`).
//!
//! Not the forest everywhere: votes outside the boxes are also how the forest catches attack
//! types it was not fitted on, and dropping all of them cost KDDTest+ 2.4 to 4.2 points of
//! accuracy, below the floor (`docs/model.md`, "Where the forest extrapolates"). A connection
//! the profile finds unusual keeps every vote.

use serde::{Deserialize, Serialize};

use super::tree::{Ensemble, LEAF};

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

/// The attack rows' boxes of one tree's attack-voting leaves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TreeSupport {
    /// Per node of the tree: the index of its box, or `u32::MAX` (not an attack-voting leaf, or
    /// one no training attack row reached).
    pub box_of: Vec<u32>,
    /// Boxes, `boxed` values each (the inputs whose scale is not [`Scale::Unboxed`], in input
    /// order), on their scale.
    pub lo: Vec<f32>,
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
/// Default [`AttackSupport::profile_ordinary_below`]: an isolation score of 0.5 means a path as
/// long as the average one (`2^-1`).
pub const PROFILE_ORDINARY_BELOW: f64 = 0.5;

impl AttackSupport {
    /// The boxes of `forest`'s attack-voting leaves over the attack rows of `x` (row-major,
    /// `scales.len()` inputs per row) with `attack[r]`.
    pub fn fit(forest: &Ensemble, scales: &[Scale], x: &[f64], attack: &[bool]) -> AttackSupport {
        let width = scales.len();
        let boxed: Vec<usize> = (0..width)
            .filter(|&i| scales[i] != Scale::Unboxed)
            .collect();
        let k = boxed.len();
        let trees = forest
            .trees
            .iter()
            .map(|t| {
                let mut box_of = vec![u32::MAX; t.nodes.len()];
                let (mut lo, mut hi) = (Vec::new(), Vec::new());
                for (row, _) in x.chunks_exact(width).zip(attack).filter(|(_, a)| **a) {
                    let leaf = t.leaf_index(row);
                    if t.nodes[leaf].threshold <= 0.0 {
                        continue; // a leaf that votes "normal": nothing to support
                    }
                    if box_of[leaf] == u32::MAX {
                        box_of[leaf] = (lo.len() / k.max(1)) as u32;
                        lo.resize(lo.len() + k, f32::INFINITY);
                        hi.resize(hi.len() + k, f32::NEG_INFINITY);
                    }
                    let b = box_of[leaf] as usize * k;
                    for (j, &i) in boxed.iter().enumerate() {
                        let v = scales[i].apply(row[i]) as f32;
                        lo[b + j] = lo[b + j].min(v);
                        hi[b + j] = hi[b + j].max(v);
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

    /// The forest's mean vote on `x` counting only the leaves whose attack box holds `x`.
    pub fn supported_mean(&self, forest: &Ensemble, x: &[f64]) -> f64 {
        let k = self.scales.iter().filter(|s| **s != Scale::Unboxed).count();
        let tol = self.tolerance as f32;
        let mut sum = 0.0;
        for (t, s) in forest.trees.iter().zip(&self.trees) {
            let leaf = t.leaf_index(x);
            let value = t.nodes[leaf].threshold;
            let Some(&b) = s.box_of.get(leaf) else {
                continue;
            };
            if value <= 0.0 || b == u32::MAX {
                continue;
            }
            let b = b as usize * k;
            let inside = self
                .scales
                .iter()
                .zip(x)
                .filter(|(sc, _)| **sc != Scale::Unboxed)
                .enumerate()
                .all(|(j, (sc, &v))| {
                    let v = sc.apply(v) as f32;
                    v >= s.lo[b + j] - tol && v <= s.hi[b + j] + tol
                });
            if inside {
                sum += value;
            }
        }
        sum / forest.trees.len().max(1) as f64
    }

    /// Checks the boxes against the forest, so that a corrupted file cannot index out of bounds.
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
        let k = self.scales.iter().filter(|s| **s != Scale::Unboxed).count();
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
            }
        }
        Ok(())
    }
}
