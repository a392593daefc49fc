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
}

impl NotScored {
    /// Whether `rec` is outside what the model judges, and why.
    pub fn of(rec: &ConnectionRecord) -> Option<NotScored> {
        if rec.to_group {
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
    cache: VerdictCache,
    cache_hits: u64,
}

/// The verdicts of recent model inputs, for connections that repeat them exactly: a flood's,
/// a scan's or a sweep's connections differ in nothing the model reads (the same flag, counts
/// and rates, no payload), and the tree walks are four fifths of a connection's cost.
/// Direct-mapped by a hash of the inputs, each slot holding the whole row it answers for, so a
/// hit is exact; connections whose inputs never repeat cost a hash and a compare. Emptied when
/// the model changes.
#[derive(Debug)]
struct VerdictCache {
    /// `SLOTS` rows of the model's input width, and their verdicts.
    rows: Vec<f64>,
    verdicts: Vec<Option<Verdict>>,
    width: usize,
}

impl VerdictCache {
    const SLOTS: usize = 1024;

    fn new(width: usize) -> VerdictCache {
        VerdictCache {
            rows: vec![0.0; Self::SLOTS * width],
            verdicts: vec![None; Self::SLOTS],
            width,
        }
    }

    /// The slot of a row of inputs.
    fn slot(row: &[f64]) -> usize {
        use std::hash::{BuildHasher, Hasher};
        let mut h = rustc_hash::FxBuildHasher.build_hasher();
        for v in row {
            h.write_u64(v.to_bits());
        }
        (h.finish() >> (64 - Self::SLOTS.trailing_zeros())) as usize
    }

    fn get(&self, slot: usize, row: &[f64]) -> Option<Verdict> {
        let stored = &self.rows[slot * self.width..(slot + 1) * self.width];
        // Bit patterns, so that a NaN input (not produced, but not excluded either) matches
        // itself as the trees treat it.
        let same = stored
            .iter()
            .zip(row)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        self.verdicts[slot].filter(|_| same)
    }

    fn put(&mut self, slot: usize, row: &[f64], v: Verdict) {
        self.rows[slot * self.width..(slot + 1) * self.width].copy_from_slice(row);
        self.verdicts[slot] = Some(v);
    }
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
            cache: VerdictCache::new(model.input_width()),
            cache_hits: 0,
            model,
            overrides: ThresholdOverride::default(),
        })
    }

    /// Applies threshold overrides to this and every later model.
    pub fn with_overrides(mut self, overrides: ThresholdOverride) -> Pipeline {
        self.overrides = overrides;
        self.set_model(Arc::clone(&self.model));
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
        let n = events.iter().filter(|e| e.record().is_some()).count();
        let mut scopes = Vec::with_capacity(n);
        let mut features = Vec::with_capacity(n);
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

    fn score(&mut self, features: Vec<KddFeatures>, scopes: Vec<Option<NotScored>>) -> Vec<Scored> {
        let verdicts = self.verdicts(&features);
        let mut out = Vec::with_capacity(features.len());
        for ((features, mut verdict), not_scored) in features.into_iter().zip(verdicts).zip(scopes)
        {
            if not_scored.is_some() {
                verdict.anomalous = false;
                verdict.score = 0.0;
                verdict.detector = crate::model::Detector::None;
            }
            out.push(Scored {
                features,
                verdict,
                not_scored,
            });
        }
        out
    }

    /// The model's verdicts, from the cache where the inputs repeat (within the batch too).
    fn verdicts(&mut self, features: &[KddFeatures]) -> Vec<Verdict> {
        let w = self.model.input_width();
        let mut x = Vec::with_capacity(features.len() * w);
        for f in features {
            self.model.push_inputs(f, &mut x);
        }
        // Per row: its verdict from the cache, or the index of the row to score for it.
        let mut answers: Vec<Result<Verdict, usize>> = Vec::with_capacity(features.len());
        // The rows to score, and for each cache slot the one of them it waits for.
        let mut missed: Vec<(usize, usize)> = Vec::new();
        let mut missed_x = Vec::new();
        let mut waiting = [u32::MAX; VerdictCache::SLOTS];
        for (i, row) in x.chunks_exact(w).enumerate() {
            let slot = VerdictCache::slot(row);
            if let Some(v) = self.cache.get(slot, row) {
                answers.push(Ok(v));
                continue;
            }
            let pending = waiting[slot] as usize;
            if let Some(&(j, _)) = missed.get(pending)
                && x[j * w..(j + 1) * w]
                    .iter()
                    .zip(row)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            {
                answers.push(Err(pending));
                continue;
            }
            waiting[slot] = missed.len() as u32;
            answers.push(Err(missed.len()));
            missed.push((i, slot));
            missed_x.extend_from_slice(row);
        }
        self.cache_hits += (features.len() - missed.len()) as u64;
        let scored = if missed.is_empty() {
            Vec::new()
        } else {
            self.model.score_inputs_batch(&missed_x)
        };
        for (&(i, slot), v) in missed.iter().zip(&scored) {
            self.cache.put(slot, &x[i * w..(i + 1) * w], *v);
        }
        answers
            .into_iter()
            .map(|a| a.unwrap_or_else(|m| scored[m]))
            .collect()
    }

    /// Connections whose verdict came from the cache of repeated inputs.
    pub fn cached_verdicts(&self) -> u64 {
        self.cache_hits
    }

    /// Swaps in a new model; the feature windows carry on.
    pub fn set_model(&mut self, model: Arc<Model>) {
        self.model = apply(model, self.overrides);
        self.cache = VerdictCache::new(self.model.input_width());
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
                answer_unix_ns: None,
                final_unix_ns: 1_000_000_000 + i * 10_000_000,
            })
            .collect()
    }

    #[test]
    fn repeated_inputs_take_their_verdict_from_the_cache_and_it_is_the_models() {
        let m = model();
        let mut p = Pipeline::new(Arc::clone(&m), FeatureConfig::default()).unwrap();
        // A flood: 2,000 attempts 1 ms apart at one port; once its counts saturate (511 in the
        // 2-second window) they differ in nothing the model reads.
        let r0 = recs()[0].clone();
        let rs: Vec<ConnectionRecord> = (0..2000u64)
            .map(|i| ConnectionRecord {
                start_unix_ns: r0.start_unix_ns + i * 1_000_000,
                end_unix_ns: r0.start_unix_ns + i * 1_000_000,
                final_unix_ns: r0.start_unix_ns + i * 1_000_000,
                orig_port: 1024 + i as u16,
                resp_port: 443,
                conn_state: ConnState::S0,
                resp_packets: 0,
                ..r0.clone()
            })
            .collect();
        let scored = p.process_records(&rs);
        assert!(p.cached_verdicts() > 1000, "{}", p.cached_verdicts());
        for s in &scored {
            assert_eq!(s.verdict, m.score(&s.features));
        }
        p.set_model(Arc::clone(&m));
        let before = p.cached_verdicts();
        let again = p.process_records(&rs[..1]);
        assert_eq!(
            p.cached_verdicts(),
            before,
            "a new model starts with an empty cache"
        );
        for s in &again {
            assert_eq!(s.verdict, m.score(&s.features));
        }
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
