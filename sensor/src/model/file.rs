//! The model file: loading, saving, and validation of what it holds.

use std::{fs, path::Path};

use sha2::{Digest, Sha256};

use super::{
    AttackSupport, FORMAT_VERSION, MAGIC, Model, ModelData, ModelError, NormalProfile,
    OLDEST_FORMAT_VERSION,
};
use crate::kdd::{FEATURE_NAMES, FLAGS, PROTOCOLS, SERVICES, VOCABULARY_VERSION};

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
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
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

    /// Sets (or removes) the forest's attack boxes, validated against the forest.
    pub fn set_attack_support(&mut self, support: Option<AttackSupport>) -> Result<(), ModelError> {
        if let Some(a) = &support {
            a.validate(&self.data.supervised, self.indices.len())
                .map_err(|reason| ModelError::Malformed {
                    path: "<memory>".into(),
                    reason,
                })?;
            // A version-1 sensor would read the boxes without error and ignore them.
            self.data.format_version = FORMAT_VERSION;
        }
        self.data.attack_support = support;
        Ok(())
    }

    /// Replaces the normal profile and its threshold (a site baseline).
    pub fn with_normal_profile(
        mut self,
        profile: NormalProfile,
        threshold: f64,
    ) -> Result<Model, ModelError> {
        self.data.normal_profile = Some(profile);
        self.data.thresholds.unsupervised = threshold;
        // The cold threshold was calibrated for the profile replaced; a new profile's cold
        // verdicts are judged at its own threshold.
        if let Some(c) = &mut self.data.cold_thresholds {
            c.unsupervised = threshold;
        }
        validate(&self.data, "<memory>")?;
        Ok(self)
    }
}

/// Writes `data` as a model file.
pub fn save_data(data: &ModelData, path: &Path) -> Result<(), ModelError> {
    let p = path.display().to_string();
    let body = serde_json::to_string(data).map_err(|e| ModelError::Malformed {
        path: p.clone(),
        reason: e.to_string(),
    })?;
    let text = format!(
        "{MAGIC} v{} sha256={}\n{body}",
        data.format_version,
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
    if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&d.format_version) {
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
    if let Some(a) = &d.attack_support {
        a.validate(&d.supervised, n).map_err(malformed)?;
    }
    let t = &d.thresholds;
    if !(t.supervised.is_finite() && t.unsupervised.is_finite() && t.target_fpr.is_finite()) {
        return Err(malformed("thresholds not finite".into()));
    }
    Ok(())
}
