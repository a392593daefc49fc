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

    /// [`Pipeline::process`] for many connections in order: the features one by one (each
    /// window sees the ones before), then the verdicts with [`Model::score_batch`], which walks
    /// several rows through each tree at once. Same results as `process` row by row.
    pub fn process_batch(&mut self, recs: &[ConnectionRecord]) -> Vec<Scored> {
        let features: Vec<KddFeatures> = recs.iter().map(|r| self.engine.push(r)).collect();
        let verdicts = self.model.score_batch(&features);
        features
            .into_iter()
            .zip(verdicts)
            .map(|(features, verdict)| Scored { features, verdict })
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{EndReason, Transport};
    use sensor_common::conn_state::ConnState;

    fn model() -> Arc<Model> {
        let p =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model");
        Arc::new(Model::load(&p).expect("committed model"))
    }

    fn recs() -> Vec<ConnectionRecord> {
        (0..300u64)
            .map(|i| ConnectionRecord {
                start_unix_ns: 1_000_000_000 + i * 10_000_000,
                end_unix_ns: 1_000_000_000 + i * 10_000_000,
                transport: Transport::Tcp,
                ip_version: 4,
                orig_addr: "198.18.1.1".parse().unwrap(),
                orig_port: 40_000 + i as u16,
                resp_addr: "198.18.2.4".parse().unwrap(),
                resp_port: 1 + (i % 100) as u16 * if i < 150 { 0 } else { 1 },
                icmp_type: None,
                icmp_code: None,
                orig_packets: 1,
                resp_packets: 1,
                orig_bytes: 0,
                resp_bytes: 0,
                conn_state: if i % 3 == 0 {
                    ConnState::SF
                } else {
                    ConnState::REJ
                },
                urgent_packets: 0,
                wrong_fragments: 0,
                land: false,
                end_reason: EndReason::Rst,
            })
            .collect()
    }

    #[test]
    fn batch_processing_equals_one_by_one_and_overrides_survive_a_swap() {
        let mut one = Pipeline::new(model(), FeatureConfig::default()).unwrap();
        let mut many = Pipeline::new(model(), FeatureConfig::default()).unwrap();
        let rs = recs();
        let a: Vec<Scored> = rs.iter().map(|r| one.process(r)).collect();
        let b: Vec<Scored> = rs.chunks(64).flat_map(|c| many.process_batch(c)).collect();
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.features, y.features);
            assert_eq!(x.verdict, y.verdict);
        }
        assert!(
            a.iter().any(|s| s.verdict.anomalous),
            "the scan part is flagged"
        );

        let o = ThresholdOverride {
            supervised: Some(0.99),
            unsupervised: None,
        };
        let mut p = Pipeline::new(model(), FeatureConfig::default())
            .unwrap()
            .with_overrides(o);
        assert_eq!(p.model().thresholds().supervised, 0.99);
        let u = p.model().thresholds().unsupervised;
        p.set_model(model());
        assert_eq!(
            p.model().thresholds().supervised,
            0.99,
            "kept across reloads"
        );
        assert_eq!(p.model().thresholds().unsupervised, u);
    }
}
