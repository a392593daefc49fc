//! Detection: connection events in, each finished connection's KDD features and the model's
//! verdict out.
//!
//! Live mode (`sensor run`) and offline mode (`sensor replay`) both go through
//! [`Pipeline::process_events`], so a capture replayed gives the verdicts the live sensor gave. The
//! model sits behind an [`Arc`] so that a reload (SIGHUP) swaps it between two connections
//! without copying the trees.
use std::sync::Arc;

use crate::{
    features::{FeatureConfig, FeatureConfigError, FeatureEngine},
    flows::{ConnEvent, ConnectionRecord},
    kdd::KddFeatures,
    model::{Model, Verdict},
};

/// A connection with its features and verdict.
#[derive(Clone, Debug)]
pub struct Scored {
    pub features: KddFeatures,
    pub verdict: Verdict,
    /// Why the verdict is not the model's, for connections outside what it judges.
    pub not_scored: Option<NotScored>,
}

/// Connections the model does not judge: their verdict is normal, with the detectors' scores
/// kept for reference and the combined score 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NotScored {
    /// A datagram to a group address (broadcast, multicast: DHCP, mDNS, NetBIOS, SSDP ...): a
    /// one-to-many announcement, not a conversation between two hosts, which is what the KDD
    /// connection features describe. It stays in the windows of other connections as traffic.
    GroupDestination,
    /// A TCP connection of which the sensor saw one side only, while that side proves the
    /// other exists (the originator acknowledged a SYN-ACK never seen, or the responder sent
    /// data after a SYN-ACK to an originator never seen): a one-sided capture or asymmetric
    /// routing. Half the features (the other side's bytes, its flags) are missing, not zero.
    OneSided,
    /// A tunnel's outer connection (VXLAN, Geneve, GTP-U, Teredo, GRE, ...): its payload is
    /// other connections, whose own records are scored. Its packets and bytes are theirs.
    TunnelCarrier,
    /// A transport the KDD data does not have (SCTP, OSPF, VRRP, PIM, ESP, ...): the model
    /// knows only `tcp`, `udp` and `icmp`. It is not in the feature windows either.
    OtherTransport,
}

impl NotScored {
    /// Whether `rec` is outside what the model judges, and why.
    pub fn of(rec: &ConnectionRecord) -> Option<NotScored> {
        if rec.carries.is_some() {
            Some(NotScored::TunnelCarrier)
        } else if !rec.transport.is_kdd() {
            Some(NotScored::OtherTransport)
        } else if rec.to_group {
            Some(NotScored::GroupDestination)
        } else if crate::features::basic::one_sided(rec) {
            Some(NotScored::OneSided)
        } else {
            None
        }
    }
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

    /// Runs `events` through the feature engine in order and scores the connections that
    /// finished among them, all at once with [`Model::score_batch`] (which walks several rows
    /// through each tree together): one [`Scored`] per `Finished` event, in order. The features
    /// do not depend on how events are cut into batches.
    ///
    /// `Ongoing` events (early verdicts on connections still open) are scored too: the result
    /// has one [`Scored`] per event that has a record ([`ConnEvent::record`]), in order.
    pub fn process_events(&mut self, events: &[ConnEvent]) -> Vec<Scored> {
        let mut scopes = Vec::new();
        let mut features = Vec::new();
        for e in events {
            if let Some(f) = self.engine.on_event(e)
                && let Some(r) = e.record()
            {
                features.push(f);
                scopes.push(NotScored::of(r));
            }
        }
        self.score(features, scopes)
    }

    /// Scores connections known only as records, each as if it began, was answered and
    /// finished when it is its turn ([`FeatureEngine::push`]): for records in the order they
    /// began (tests, benchmarks).
    pub fn process_records(&mut self, recs: &[ConnectionRecord]) -> Vec<Scored> {
        let features: Vec<KddFeatures> = recs.iter().map(|r| self.engine.push(r)).collect();
        self.score(features, recs.iter().map(NotScored::of).collect())
    }

    fn score(&self, features: Vec<KddFeatures>, scopes: Vec<Option<NotScored>>) -> Vec<Scored> {
        let verdicts = self.model.score_batch(&features);
        features
            .into_iter()
            .zip(verdicts)
            .zip(scopes)
            .map(|((features, mut verdict), not_scored)| {
                if not_scored.is_some() {
                    verdict.anomalous = false;
                    verdict.score = 0.0;
                    verdict.detector = crate::model::Detector::None;
                }
                Scored {
                    features,
                    verdict,
                    not_scored,
                }
            })
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
                to_group: false,
                end_reason: EndReason::Rst,
                ip_proto: 6,
                tunnel: None,
                carries: None,
                answer_unix_ns: None,
                final_unix_ns: 1_000_000_000 + i * 10_000_000,
            })
            .collect()
    }

    #[test]
    fn batch_processing_equals_one_by_one_and_overrides_survive_a_swap() {
        let mut one = Pipeline::new(model(), FeatureConfig::default()).unwrap();
        let mut many = Pipeline::new(model(), FeatureConfig::default()).unwrap();
        let rs = recs();
        let a: Vec<Scored> = rs
            .iter()
            .flat_map(|r| one.process_records(std::slice::from_ref(r)))
            .collect();
        let b: Vec<Scored> = rs
            .chunks(64)
            .flat_map(|c| many.process_records(c))
            .collect();
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
