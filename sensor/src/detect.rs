//! Detection: one finished connection in, its KDD features and the model's verdict out.
//!
//! Live mode (`sensor run`) and offline mode (`sensor replay`) both go through
//! [`Pipeline::process`], so a capture replayed gives the verdicts the live sensor gave. The
//! model sits behind an [`Arc`] so that a reload (SIGHUP) swaps it between two connections
//! without copying the trees.
use std::sync::Arc;

use crate::{
    features::{FeatureConfig, FeatureConfigError, FeatureEngine},
    flows::ConnectionRecord,
    kdd::KddFeatures,
    model::{Model, Verdict},
};

/// A connection with its features and verdict.
#[derive(Clone, Debug)]
pub struct Scored {
    pub features: KddFeatures,
    pub verdict: Verdict,
}

/// Feature engine plus model; see the module docs.
#[derive(Debug)]
pub struct Pipeline {
    engine: FeatureEngine,
    model: Arc<Model>,
    /// Overrides of the model's thresholds (from the configuration), kept across reloads.
    overrides: ThresholdOverride,
}

/// Operator overrides of the model's operating thresholds; `None` keeps the model's own.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ThresholdOverride {
    pub supervised: Option<f64>,
    pub unsupervised: Option<f64>,
}

impl Pipeline {
    pub fn new(model: Arc<Model>, features: FeatureConfig) -> Result<Pipeline, FeatureConfigError> {
        Ok(Pipeline {
            engine: FeatureEngine::new(features)?,
            model,
            overrides: ThresholdOverride::default(),
        })
    }

    /// Applies threshold overrides to this and every later model.
    pub fn with_overrides(mut self, overrides: ThresholdOverride) -> Pipeline {
        self.overrides = overrides;
        self.model = apply(self.model, overrides);
        self
    }

    /// Computes the features of `rec` (adding it to the windows) and scores them.
    pub fn process(&mut self, rec: &ConnectionRecord) -> Scored {
        let features = self.engine.push(rec);
        let verdict = self.model.score(&features);
        Scored { features, verdict }
    }

    /// The features of `rec` (adding it to the windows), not scored yet: for callers that score
    /// many connections at once with [`Model::score_batch`] (replay), which gives the verdicts
    /// [`Pipeline::process`] gives, faster. Scoring must follow in the same order.
    pub fn features(&mut self, rec: &ConnectionRecord) -> KddFeatures {
        self.engine.push(rec)
    }

    /// Swaps in a new model; the feature windows carry on.
    pub fn set_model(&mut self, model: Arc<Model>) {
        self.model = apply(model, self.overrides);
    }

    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    pub fn engine(&self) -> &FeatureEngine {
        &self.engine
    }
}

fn apply(model: Arc<Model>, o: ThresholdOverride) -> Arc<Model> {
    if o == ThresholdOverride::default() {
        return model;
    }
    let mut m = Arc::unwrap_or_clone(model);
    let mut t = m.thresholds();
    if let Some(s) = o.supervised {
        t.supervised = s;
    }
    if let Some(u) = o.unsupervised {
        t.unsupervised = u;
    }
    m.set_thresholds(t);
    Arc::new(m)
}
