//! Detection: connection events in, each finished connection's KDD features and the model's
//! verdict out.
//!
//! Live mode (`sensor run`) and offline mode (`sensor replay`) both go through
//! [`Pipeline::process_events`], so a capture replayed gives the verdicts the live sensor gave. The
//! model sits behind an [`Arc`] so that a reload (SIGHUP) swaps it between two connections
//! without copying the trees.
use std::sync::Arc;

use sensor_common::conn_state::ConnState;

pub mod checks;
pub mod held;
pub mod logins;
pub mod volume;

pub use checks::{CheckHit, ChecksConfig, RoutineChecks};
pub use held::HeldRequests;
pub use logins::LoginRates;
pub use volume::{TargetRates, TargetVerdict, VolumeConfig, VolumeHit, VolumeScope};

use crate::{
    features::{ColdWindow, FeatureConfig, FeatureConfigError, FeatureEngine},
    flows::{ConnEvent, ConnectionRecord, EndReason, Transport},
    kdd::KddFeatures,
    model::{Model, Verdict},
    suppress::Suppressions,
};

/// A connection with its features and verdict.
#[derive(Clone, Debug)]
pub struct Scored {
    pub features: KddFeatures,
    pub verdict: Verdict,
    /// Why the verdict is not the model's, for connections outside what it judges.
    pub not_scored: Option<NotScored>,
    /// The operator's rule that silences this anomalous connection ([`crate::suppress`]): it
    /// is recorded and counted as scored, but writes no alert and feeds no incident.
    pub suppressed_by: Option<Arc<str>>,
    /// The cold host window its verdict is the mean over (`None` for a full window, and for
    /// connections not scored): `features` hold the mean composition's row.
    pub cold: Option<ColdWindow>,
    /// What the volume rule found, where it flagged the connection (detector `volume`).
    pub volume: Option<VolumeHit>,
    /// The volume rule could not judge it yet ([`TargetVerdict::pending`]): its host gets a
    /// flood's rate of new UDP conversations, at most one answered, too few judged to tell.
    pub volume_pending: bool,
    /// The model flagged it, and the routine-check rule withdrew the verdict ([`checks`]): the
    /// same exchange with the same service, repeated at a schedule's pace.
    pub routine_check: Option<CheckHit>,
}

impl Scored {
    /// The features that moved its verdict most ([`Model::explain_verdict`]).
    /// None for a rule's verdict (volume, malformed), which no feature moved.
    pub fn explain(&self, model: &Model) -> Vec<crate::model::FeatureContribution> {
        if self.verdict.detector.is_rule() {
            return Vec::new();
        }
        model.explain_verdict(&self.features, self.cold.as_ref(), &self.verdict)
    }
}

/// Whether `rec` (TCP) is the middle or the end of a connection whose start was not seen: the
/// originator's SYN is missing, and the packets prove the connection existed: payload (a TCP
/// stack sends data only on an established connection), or the responder acknowledged without
/// resetting (a host answers a segment of a connection it does not have with RST, RFC 9293
/// 3.10.7.1, so FIN, NULL, Xmas, ACK and Maimon probes get a RST or nothing).
fn start_not_seen(rec: &ConnectionRecord) -> bool {
    use sensor_common::flow::history::{ACK, RST};
    let h = rec.history;
    let data = rec.orig_bytes + rec.resp_bytes > 0;
    let acknowledged = h.resp & ACK != 0 && h.resp & RST == 0;
    !h.is_empty() && !rec.tcp_start_seen() && (data || acknowledged)
}

/// Whether `rec` (TCP) holds nothing but answers to a start the sensor did not see: no SYN from
/// the originator, no payload, and every packet a SYN-ACK or a RST. What sends those is a host
/// answering (a SYN-ACK answers a SYN, a RST answers a segment of a connection it does not
/// have): backscatter of a spoofed flood elsewhere, the tail of a connection that outlived its
/// idle timeout, a capture that began between a SYN and its answer. The record's originator
/// is then the side that answered, not one that acted; the packets that acted were not seen.
/// Probes (SYN, FIN, NULL, Xmas, ACK, Maimon scans) each carry a packet of neither kind and
/// are still scored.
fn answers_only(rec: &ConnectionRecord) -> bool {
    use sensor_common::flow::history::{NON_SYN, RST, SYN_ACK};
    let h = rec.history;
    let answers = |bits: u8| {
        bits & !(SYN_ACK | RST | NON_SYN) == 0
        // A packet without SYN that set no other bit is a RST here only if RST is set (else a
        // NULL probe).
        && (bits & NON_SYN == 0 || bits & RST != 0)
    };
    !h.is_empty()
        && !rec.tcp_start_seen()
        && rec.orig_bytes + rec.resp_bytes == 0
        && answers(h.orig)
        && answers(h.resp)
}

/// Whether `rec` is IPv6 neighbour discovery or multicast listener signalling (ICMPv6 router
/// and neighbour solicitations and advertisements, MLD queries and reports): the link's own
/// control plane, IPv6's counterparts of ARP and IGMP. The training data has no rows for
/// either (ARP is not IP; IGMP is neither tcp, udp nor icmp, so IPv4's is `other_transport`
/// here), and unicast neighbour solicitations and advertisements run every few seconds
/// between neighbours on any IPv6 link (RFC 4861 reachability confirmation). Redirects keep
/// their data counterpart (`red_i`) and are scored.
fn link_control(rec: &ConnectionRecord) -> bool {
    rec.transport == Transport::Icmp
        && rec.ip_version == 6
        && matches!(rec.icmp_type, Some(130..=136 | 143))
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
    /// IPv6 neighbour discovery and multicast listener messages (`link_control` in the
    /// source): the link's control plane, the counterparts of ARP and IGMP, which the data has
    /// no rows for. It stays in the windows of other connections as traffic.
    LinkControl,
    /// A TCP connection of which the sensor saw one side only, while that side proves the
    /// other exists (the originator acknowledged a SYN-ACK never seen, or the responder sent
    /// data after a SYN-ACK to an originator never seen): a one-sided capture or asymmetric
    /// routing. Half the features (the other side's bytes, its flags) are missing, not zero.
    OneSided,
    /// A TCP connection picked up mid-stream: its start (the originator's SYN) was not seen,
    /// because it began before the sensor watched or outlived its idle timeout, and its packets
    /// prove it existed (data, or an acknowledgement from the responder). Its duration, bytes
    /// and state describe a fragment, not the connection the features are about. Probes
    /// without a handshake (FIN, NULL, Xmas, ACK scans) prove nothing of the kind and are still
    /// scored.
    StartNotSeen,
    /// A TCP connection whose packets are all answers (SYN-ACKs, RSTs) to a start not seen,
    /// without payload: backscatter, or the tail of a connection that outlived its idle timeout
    /// (`answers_only`). The side it calls the originator is the one that answered.
    AnswersOnly,
    /// An established TCP connection whose end was not seen: still open when observation ended
    /// (the sensor stopped, the capture ended), or silent past its idle timeout with neither
    /// FIN nor RST from one side at least (an interactive session left idle, which may well go
    /// on: what follows is picked up as `StartNotSeen`). Its state (`S1`, `S2`, `S3`), duration
    /// and bytes describe a fragment; the 1998 data has almost no such records, and the model
    /// scores an idle SSH session's near its threshold. Attempts that were never answered are
    /// still scored.
    EndNotSeen,
    /// A tunnel's outer connection (VXLAN, Geneve, GTP-U, Teredo, GRE, ...): its payload is
    /// other connections, whose own records are scored. Its packets and bytes are theirs.
    TunnelCarrier,
    /// A transport the KDD data does not have (SCTP, OSPF, VRRP, PIM, ESP, ...): the model
    /// knows only `tcp`, `udp` and `icmp`. It is not in the feature windows either.
    OtherTransport,
}

impl NotScored {
    /// Every reason, in the order of [`NotScored::index`].
    pub const ALL: [NotScored; 8] = [
        NotScored::GroupDestination,
        NotScored::LinkControl,
        NotScored::OneSided,
        NotScored::StartNotSeen,
        NotScored::AnswersOnly,
        NotScored::EndNotSeen,
        NotScored::TunnelCarrier,
        NotScored::OtherTransport,
    ];

    /// The reason's name, as in JSON and in the metrics' `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            NotScored::GroupDestination => "group_destination",
            NotScored::LinkControl => "link_control",
            NotScored::OneSided => "one_sided",
            NotScored::StartNotSeen => "start_not_seen",
            NotScored::AnswersOnly => "answers_only",
            NotScored::EndNotSeen => "end_not_seen",
            NotScored::TunnelCarrier => "tunnel_carrier",
            NotScored::OtherTransport => "other_transport",
        }
    }

    /// Position in [`NotScored::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether `rec` is outside what the model judges, and why.
    pub fn of(rec: &ConnectionRecord) -> Option<NotScored> {
        if rec.carries.is_some() {
            Some(NotScored::TunnelCarrier)
        } else if !rec.transport.is_kdd() {
            Some(NotScored::OtherTransport)
        } else if rec.to_group {
            Some(NotScored::GroupDestination)
        } else if link_control(rec) {
            Some(NotScored::LinkControl)
        } else if crate::features::basic::one_sided(rec) {
            Some(NotScored::OneSided)
        } else if rec.transport == Transport::Tcp && start_not_seen(rec) {
            Some(NotScored::StartNotSeen)
        } else if rec.transport == Transport::Tcp && answers_only(rec) {
            Some(NotScored::AnswersOnly)
        } else if rec.transport == Transport::Tcp
            && matches!(rec.end_reason, EndReason::Shutdown | EndReason::Idle)
            && matches!(
                rec.conn_state,
                ConnState::S1 | ConnState::S2 | ConnState::S3
            )
        {
            Some(NotScored::EndNotSeen)
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
    /// The operator's suppressions, swapped whole on reload like the model.
    suppressions: Arc<Suppressions>,
    /// The rule that flags a conversation by its packet rate ([`volume`]).
    volume: VolumeConfig,
    /// New UDP conversations per target, and TCP attempts that never completed per service,
    /// for the rule's second half ([`TargetRates`]).
    targets: TargetRates,
    /// Short login sessions per source and login service ([`logins`]): password guessing.
    logins: LoginRates,
    /// Held requests per source and service ([`held`]): slow attacks.
    held: HeldRequests,
    /// The routine-check rule's settings and the flagged exchanges it follows ([`checks`]).
    checks: ChecksConfig,
    routine: RoutineChecks,
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
        self.verdicts[slot].filter(|_| same_inputs(stored, row))
    }

    fn put(&mut self, slot: usize, row: &[f64], v: Verdict) {
        self.rows[slot * self.width..(slot + 1) * self.width].copy_from_slice(row);
        self.verdicts[slot] = Some(v);
    }
}

/// Whether two rows of model inputs are the same, bit for bit, so that a NaN input (not
/// produced, but not excluded either) matches itself as the trees treat it.
fn same_inputs(a: &[f64], b: &[f64]) -> bool {
    a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits())
}

/// Operator overrides of the model's operating thresholds; `None` keeps the model's own.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ThresholdOverride {
    pub supervised: Option<f64>,
    pub unsupervised: Option<f64>,
}

/// The connections of one scoring batch: their features, scopes and records, and for those in
/// a cold host window the rows of its contexts.
struct Batch<'a> {
    features: Vec<KddFeatures>,
    scopes: Vec<Option<NotScored>>,
    recs: Vec<&'a ConnectionRecord>,
    /// `(connection, its rows in context_rows)`.
    contexts: Vec<(usize, std::ops::Range<usize>)>,
    context_rows: Vec<KddFeatures>,
    /// Each connection's cold host window, if its verdict is the mean over its contexts.
    colds: Vec<Option<ColdWindow>>,
    /// What the volume rule found, judged in event order (its per-target half counts each
    /// verdict as it comes, [`TargetRates`]).
    volume_hits: Vec<Option<VolumeHit>>,
    /// Whether the rule's per-target half was undecided ([`TargetVerdict::pending`]).
    volume_pending: Vec<bool>,
}

impl<'a> Batch<'a> {
    fn with_capacity(n: usize) -> Batch<'a> {
        Batch {
            features: Vec::with_capacity(n),
            scopes: Vec::with_capacity(n),
            recs: Vec::with_capacity(n),
            contexts: Vec::new(),
            context_rows: Vec::new(),
            colds: Vec::with_capacity(n),
            volume_hits: Vec::with_capacity(n),
            volume_pending: Vec::with_capacity(n),
        }
    }

    /// Adds the connection whose features `engine` computed last; the volume rule judges it
    /// now, in event order, where the model judges it.
    fn push(
        &mut self,
        engine: &FeatureEngine,
        f: KddFeatures,
        rec: &'a ConnectionRecord,
        volume: (
            &mut TargetRates,
            &mut LoginRates,
            &mut HeldRequests,
            &VolumeConfig,
        ),
    ) {
        let scope = NotScored::of(rec);
        let (rates, logins, held, cfg) = volume;
        if rec.held_request() {
            // A held request's look, judged by the held-request rule only: the connection is
            // counted and judged as any other at its end.
            let hit = scope.is_none().then(|| held.judge(cfg, rec)).flatten();
            self.volume_hits.push(hit);
            self.volume_pending.push(false);
            self.colds.push(None);
            self.features.push(f);
            self.scopes.push(scope);
            self.recs.push(rec);
            return;
        }
        // Every UDP and TCP verdict counts towards its target's answered share; so does a
        // conversation of answers to nothing, which the model does not judge but a flood of
        // resets or SYN-ACKs sends (the rule's stray segments).
        let target = match scope {
            None | Some(NotScored::AnswersOnly) => rates.judge(cfg, rec),
            Some(_) => TargetVerdict::default(),
        };
        let hit = scope.is_none().then(|| cfg.judge(rec)).flatten();
        let login = scope.is_none().then(|| logins.judge(cfg, rec)).flatten();
        self.volume_hits.push(hit.or(target.hit).or(login));
        self.volume_pending.push(hit.is_none() && target.pending);
        let cold = engine.last_cold().filter(|_| scope.is_none());
        if let Some(c) = cold {
            let from = self.context_rows.len();
            c.contexts(&f, &mut self.context_rows);
            self.contexts
                .push((self.features.len(), from..self.context_rows.len()));
        }
        self.colds.push(cold);
        self.features.push(f);
        self.scopes.push(scope);
        self.recs.push(rec);
    }
}

impl Pipeline {
    pub fn new(model: Arc<Model>, features: FeatureConfig) -> Result<Pipeline, FeatureConfigError> {
        Ok(Pipeline {
            engine: FeatureEngine::new(features)?,
            cache: VerdictCache::new(model.input_width()),
            cache_hits: 0,
            model,
            overrides: ThresholdOverride::default(),
            suppressions: Arc::default(),
            volume: VolumeConfig::default(),
            targets: TargetRates::default(),
            logins: LoginRates::default(),
            held: HeldRequests::default(),
            checks: ChecksConfig::default(),
            routine: RoutineChecks::default(),
        })
    }

    /// Sets the routine-check rule's settings (the configuration's `[checks]`).
    pub fn with_checks(mut self, checks: ChecksConfig) -> Pipeline {
        self.checks = checks;
        self
    }

    /// Sets the volume rule's thresholds (the configuration's `[volume]`).
    pub fn with_volume(mut self, volume: VolumeConfig) -> Pipeline {
        self.volume = volume;
        self
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
        let mut batch = Batch::with_capacity(n);
        for e in events {
            if let ConnEvent::Opened(s) = e {
                let id = &s.id;
                self.targets.opened(
                    &self.volume,
                    id.transport,
                    id.orig_addr,
                    (id.resp_addr, id.resp_port),
                    id.start_unix_ns,
                );
            }
            if let Some(f) = self.engine.on_event(e)
                && let Some(r) = e.record()
            {
                batch.push(
                    &self.engine,
                    f,
                    r,
                    (
                        &mut self.targets,
                        &mut self.logins,
                        &mut self.held,
                        &self.volume,
                    ),
                );
            }
        }
        self.score(batch)
    }

    /// Scores connections known only as records, each as if it began, was answered and
    /// finished when it is its turn ([`FeatureEngine::push`]): for records in the order they
    /// began (tests, benchmarks).
    pub fn process_records(&mut self, recs: &[ConnectionRecord]) -> Vec<Scored> {
        let mut batch = Batch::with_capacity(recs.len());
        for r in recs {
            self.targets.opened(
                &self.volume,
                r.transport,
                r.orig_addr,
                (r.resp_addr, r.resp_port),
                r.start_unix_ns,
            );
            let f = self.engine.push(r);
            batch.push(
                &self.engine,
                f,
                r,
                (
                    &mut self.targets,
                    &mut self.logins,
                    &mut self.held,
                    &self.volume,
                ),
            );
        }
        self.score(batch)
    }

    fn score(&mut self, batch: Batch<'_>) -> Vec<Scored> {
        let Batch {
            features,
            scopes,
            recs,
            contexts,
            context_rows,
            colds,
            volume_hits,
            volume_pending,
        } = batch;
        let verdicts = if contexts.is_empty() {
            self.verdicts(&features)
        } else {
            // A connection in a cold host window: the mean over its contexts (see
            // `ColdWindow::contexts`); the others, their own features.
            let mut cold = vec![false; features.len()];
            for (i, _) in &contexts {
                cold[*i] = true;
            }
            let warm: Vec<KddFeatures> = features
                .iter()
                .zip(&cold)
                .filter(|(_, c)| !**c)
                .map(|(f, _)| *f)
                .collect();
            let mut warm = self.verdicts(&warm).into_iter();
            // Context rows from the cache are not connections from the cache.
            let hits = self.cache_hits;
            let scored = self.verdicts(&context_rows);
            self.cache_hits = hits;
            let mut contexts = contexts.into_iter();
            let mut out = Vec::with_capacity(features.len());
            for (i, is_cold) in cold.into_iter().enumerate() {
                let v = if is_cold {
                    let (j, range) = contexts.next().expect("one range per cold connection");
                    debug_assert_eq!(i, j);
                    let unseen = colds[i].map_or(0.0, |c| c.unseen_share());
                    self.model.mean_verdict(&scored[range], unseen)
                } else {
                    warm.next()
                };
                out.push(v.expect("a verdict per connection"));
            }
            out
        };
        let mut out = Vec::with_capacity(features.len());
        for ((((((features, mut verdict), not_scored), rec), cold), volume), volume_pending) in
            features
                .into_iter()
                .zip(verdicts)
                .zip(scopes)
                .zip(recs)
                .zip(colds)
                .zip(volume_hits)
                .zip(volume_pending)
        {
            if not_scored.is_some() || (rec.held_request() && volume.is_none()) {
                verdict.anomalous = false;
                verdict.score = 0.0;
                verdict.detector = crate::model::Detector::None;
                verdict.withdrawn_by_attack_boxes = false;
            }
            if let Some(hit) = volume {
                // A flood by its rate, whatever the model said of its features.
                verdict.anomalous = true;
                verdict.score = verdict.score.max(hit.ratio);
                verdict.detector = crate::model::Detector::Volume;
                verdict.withdrawn_by_attack_boxes = false;
            }
            // Packets no stack sends: anomalous, whatever the model said of the features (a
            // teardrop's fragments to port 53 read as an ordinary lookup).
            let malformed = not_scored.is_none() && rec.malformed();
            if malformed && !verdict.anomalous {
                verdict.anomalous = true;
                verdict.score = verdict.score.max(1.0);
                verdict.detector = crate::model::Detector::Malformed;
                verdict.withdrawn_by_attack_boxes = false;
            }
            // A check on a schedule: the model's verdict withdrawn (not a rule's).
            let routine_check = (not_scored.is_none() && volume.is_none() && !malformed)
                .then(|| self.routine.judge(&self.checks, rec, &verdict))
                .flatten();
            if routine_check.is_some() {
                verdict.anomalous = false;
                verdict.score = 0.0;
                verdict.detector = crate::model::Detector::None;
            }
            let mut s = Scored {
                features,
                verdict,
                not_scored,
                suppressed_by: None,
                cold,
                volume,
                volume_pending,
                routine_check,
            };
            // Rules are tried on anomalous connections only, so normal traffic costs one test.
            if s.verdict.anomalous && !self.suppressions.is_empty() {
                s.suppressed_by = self
                    .suppressions
                    .connection(rec, &s.features, &s.verdict)
                    .cloned();
            }
            out.push(s);
        }
        out
    }

    /// Swaps in new suppression rules (from the next connection on).
    pub fn set_suppressions(&mut self, s: Arc<Suppressions>) {
        self.suppressions = s;
    }

    pub fn suppressions(&self) -> &Arc<Suppressions> {
        &self.suppressions
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
            // A flood's rows repeat back to back: the previous row's answer, without hashing
            // (a row that differs usually does so in its first inputs, so this costs little).
            if i > 0 && same_inputs(&x[(i - 1) * w..i * w], row) {
                answers.push(answers[i - 1]);
                continue;
            }
            let slot = VerdictCache::slot(row);
            if let Some(v) = self.cache.get(slot, row) {
                answers.push(Ok(v));
                continue;
            }
            let pending = waiting[slot] as usize;
            if let Some(&(j, _)) = missed.get(pending)
                && same_inputs(&x[j * w..(j + 1) * w], row)
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

    /// The volume rule's per-target counts ([`TargetRates`]), for their metrics.
    pub fn targets(&self) -> &TargetRates {
        &self.targets
    }

    /// The login rule's per-source counts ([`LoginRates`]), for their metrics.
    pub fn logins(&self) -> &LoginRates {
        &self.logins
    }

    /// The held-request rule's per-source counts ([`HeldRequests`]), for their metrics.
    pub fn held(&self) -> &HeldRequests {
        &self.held
    }

    pub fn routine_checks(&self) -> &RoutineChecks {
        &self.routine
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
    use std::net::IpAddr;

    fn model() -> Arc<Model> {
        let p =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model");
        Arc::new(Model::load(&p).expect("committed model"))
    }

    fn recs() -> Vec<ConnectionRecord> {
        (0..300u64)
            .map(|i| ConnectionRecord {
                orig_packets: 1,
                resp_packets: 1,
                conn_state: if i % 3 == 0 {
                    ConnState::SF
                } else {
                    ConnState::REJ
                },
                end_reason: EndReason::Rst,
                ..ConnectionRecord::new(
                    Transport::Tcp,
                    ("198.18.1.1".parse::<IpAddr>().unwrap(), 40_000 + i as u16),
                    (
                        "198.18.2.4".parse::<IpAddr>().unwrap(),
                        1 + (i % 100) as u16 * if i < 150 { 0 } else { 1 },
                    ),
                    1_000_000_000 + i * 10_000_000,
                )
            })
            .collect()
    }

    /// The volume rule on the pipeline's verdicts: a ping flood in one conversation is
    /// anomalous by its rate (detector `volume`, combined score its rate over the threshold)
    /// whatever the model said; the same stream to a multicast group is not judged; a pipeline
    /// with the rule off keeps the model's verdict.
    #[test]
    fn a_conversation_at_a_floods_rate_is_the_volume_rules_unless_unjudged_or_off() {
        let mut flood = recs()[0].clone();
        flood.transport = Transport::Icmp;
        flood.ip_proto = 1;
        flood.icmp_type = Some(8);
        flood.icmp_code = Some(0);
        flood.conn_state = ConnState::OTH;
        flood.orig_packets = 20_000;
        flood.resp_packets = 20_000;
        flood.end_unix_ns = flood.start_unix_ns + 2_000_000_000;
        flood.final_unix_ns = flood.end_unix_ns;
        flood.end_reason = EndReason::Idle;
        let mut group = flood.clone();
        group.to_group = true;
        let recs = [flood, group];
        let mut p = Pipeline::new(model(), FeatureConfig::default()).unwrap();
        let out = p.process_records(&recs);
        let v = out[0].verdict;
        assert!(v.anomalous, "{v:?}");
        assert_eq!(v.detector, crate::model::Detector::Volume);
        assert!(
            (v.score - 10.0).abs() < 1e-9,
            "10,000/s over 1,000/s: {v:?}"
        );
        assert_eq!(out[1].not_scored, Some(NotScored::GroupDestination));
        assert!(!out[1].verdict.anomalous);
        assert!(out[0].explain(p.model()).is_empty(), "no feature moved it");

        let off = VolumeConfig {
            enabled: false,
            ..VolumeConfig::default()
        };
        let mut p = Pipeline::new(model(), FeatureConfig::default())
            .unwrap()
            .with_volume(off);
        let v = p.process_records(&recs)[0].verdict;
        assert_ne!(v.detector, crate::model::Detector::Volume);
        // The model's own verdict, whose scores the rule left as they were.
        let on = out[0].verdict;
        assert_eq!(
            (v.supervised_score, v.unsupervised_score),
            (on.supervised_score, on.unsupervised_score)
        );
        assert!(
            !v.anomalous,
            "the model finds one conversation ordinary: {v:?}"
        );
    }

    /// Floods of answers to nothing through the whole pipeline: 3,000 RSTs (`hping3 -R`) and
    /// 3,000 SYN-ACKs (`hping3 -SA`, each reset by the target) a second from one address to
    /// port 80, from changing source ports. Their conversations are answers only, which the
    /// model does not judge; the volume rule counts them as failed attempts at the target's
    /// port and flags them from about the 100th. The SYN-ACKs' records name the target the
    /// originator (the table takes a SYN-ACK's sender for the responder): their hits are
    /// `reversed`. A few such answers (a timed-out connection's tail) are left alone.
    #[test]
    fn floods_of_answers_to_nothing_are_the_volume_rules() {
        use sensor_common::flow::history::{NON_SYN, RST, SYN_ACK};
        use std::net::{IpAddr, Ipv4Addr};
        let (attacker, target) = (
            IpAddr::V4(Ipv4Addr::new(198, 18, 3, 7)),
            IpAddr::V4(Ipv4Addr::new(198, 18, 2, 10)),
        );
        let flood = |n: u64, syn_ack: bool| -> Vec<ConnectionRecord> {
            (0..n)
                .map(|i| {
                    let start = 1_700_000_000_000_000_000 + i * 333_333;
                    let mut r = ConnectionRecord {
                        conn_state: ConnState::OTH,
                        end_reason: EndReason::Rst,
                        orig_packets: 1,
                        history: crate::flows::History {
                            orig: NON_SYN | RST,
                            resp: 0,
                        },
                        ..ConnectionRecord::new(
                            Transport::Tcp,
                            (attacker, 1024 + i as u16),
                            (target, 80),
                            start,
                        )
                    };
                    if syn_ack {
                        r.history.orig = SYN_ACK;
                        r.history.resp = NON_SYN | RST;
                        (r.resp_packets, r.conn_state) = (1, ConnState::RSTRH);
                        r = r.reversed();
                    }
                    r
                })
                .collect()
        };
        for syn_ack in [false, true] {
            let mut p = Pipeline::new(model(), FeatureConfig::default()).unwrap();
            let out = p.process_records(&flood(6_000, syn_ack));
            assert!(
                out.iter()
                    .all(|s| s.not_scored == Some(NotScored::AnswersOnly)),
                "answers only"
            );
            let flagged: Vec<&Scored> = out.iter().filter(|s| s.verdict.anomalous).collect();
            assert!(
                (5_890..=5_901).contains(&flagged.len()),
                "syn_ack {syn_ack}: all but the first 100 or so: {}",
                flagged.len()
            );
            for s in flagged {
                assert_eq!(s.verdict.detector, crate::model::Detector::Volume);
                let hit = s.volume.expect("the rule's");
                assert_eq!((hit.scope, hit.reversed), (VolumeScope::Target, syn_ack));
            }
            let mut p = Pipeline::new(model(), FeatureConfig::default()).unwrap();
            let few = p.process_records(&flood(20, syn_ack));
            assert!(
                few.iter().all(|s| !s.verdict.anomalous),
                "syn_ack {syn_ack}"
            );
        }
    }

    /// Packets no stack sends through the whole pipeline: teardrop-like trains of two
    /// fragments to port 53, the first odd-sized with more to come (20 trains on fixed ports:
    /// one conversation, 20 wrong fragments), which the model finds an ordinary exchange with
    /// a resolver (as in a replayed capture, December 6), are anomalous by the rule (detector
    /// `malformed`, no feature explanation); the same conversation without its wrong
    /// fragments stays normal.
    #[test]
    fn malformed_conversations_are_anomalous_whatever_the_model_says() {
        use std::net::{IpAddr, Ipv4Addr};
        let teardrop = ConnectionRecord {
            orig_packets: 40,
            orig_bytes: 20 * (28 + 30),
            conn_state: ConnState::S0,
            wrong_fragments: 20,
            end_reason: EndReason::Idle,
            ..ConnectionRecord::new(
                Transport::Udp,
                (IpAddr::V4(Ipv4Addr::new(198, 18, 3, 7)), 3000),
                (IpAddr::V4(Ipv4Addr::new(198, 18, 2, 10)), 53),
                1_700_000_000_000_000_000,
            )
        };
        let plain = ConnectionRecord {
            wrong_fragments: 0,
            ..teardrop.clone()
        };
        let scored = |r: &ConnectionRecord| {
            let mut p = Pipeline::new(model(), FeatureConfig::default()).unwrap();
            let s = p.process_records(std::slice::from_ref(r)).remove(0);
            let explained = s.explain(p.model()).len();
            (s, explained)
        };
        let (s, _) = scored(&plain);
        assert!(!s.verdict.anomalous, "{:?}", s.verdict);
        let (s, explained) = scored(&teardrop);
        assert!(s.verdict.anomalous, "{:?}", s.verdict);
        assert_eq!(s.verdict.detector, crate::model::Detector::Malformed);
        assert!(s.verdict.score >= 1.0);
        assert_eq!(explained, 0, "no feature moved it");
    }

    /// Password guessing through the whole pipeline: 150 refused SSH logins from one source,
    /// five a second, each beside the one before (the shape `hydra` makes): the login rule
    /// flags each from the 60th beside another on (the 61st), whatever the model said of it,
    /// and the model's verdicts before stay the model's.
    #[test]
    fn a_guessers_sessions_are_the_login_rules_from_the_bar_on() {
        use std::net::{IpAddr, Ipv4Addr};
        let guesses: Vec<ConnectionRecord> = (0..150u64)
            .map(|i| {
                let mut r = logins::refused_guess(
                    IpAddr::V4(Ipv4Addr::new(198, 18, 3, 7)),
                    IpAddr::V4(Ipv4Addr::new(198, 18, 2, 10)),
                    1_700_000_000_000_000_000 + i * 200_000_000,
                    400_000_000,
                );
                r.orig_port = 40_000 + i as u16;
                r
            })
            .collect();
        let mut p = Pipeline::new(model(), FeatureConfig::default()).unwrap();
        let out = p.process_records(&guesses);
        for (i, s) in out.iter().enumerate() {
            let by_rule = s.volume.map(|h| h.scope) == Some(VolumeScope::Logins);
            assert_eq!(by_rule, i >= 60, "session {i}: {:?}", s.volume);
            if by_rule {
                assert!(s.verdict.anomalous);
                assert_eq!(s.verdict.detector, crate::model::Detector::Volume);
            } else {
                assert_ne!(s.verdict.detector, crate::model::Detector::Volume);
            }
        }
        let last = out[149].volume.expect("flagged");
        // All 149 beside another within the minute, over a bar of 60.
        assert!((last.ratio - 149.0 / 60.0).abs() < 1e-9, "{last:?}");
    }

    /// A monitoring host's checks of three services once a second (a refused check of a
    /// service that is down, a banner read and reset, a connect and close): the model flags
    /// them; the routine-check rule leaves the first three of each flagged and withdraws the
    /// rest (normal, score 0, the model's scores kept); with the rule off every verdict is the
    /// model's.
    #[test]
    fn checks_on_a_schedule_are_withdrawn_from_their_fourth_repeat_and_off_is_the_models() {
        use sensor_common::flow::history::{ACK, DATA, FIN, RST, SYN, SYN_ACK};
        use std::net::{IpAddr, Ipv4Addr};
        let (checker, host) = (
            IpAddr::V4(Ipv4Addr::new(198, 18, 3, 30)),
            IpAddr::V4(Ipv4Addr::new(198, 18, 2, 20)),
        );
        let mut checks = Vec::new();
        for i in 0..20u64 {
            let round = 1_700_000_000_000_000_000 + i * 1_000_000_000 + (i % 3) * 1_000_000;
            let check = |k: u64, port: u16, state, orig, resp, resp_bytes| {
                let start = round + k * 1_000_000;
                ConnectionRecord {
                    orig_packets: 3,
                    resp_packets: 2,
                    resp_bytes,
                    conn_state: state,
                    end_reason: EndReason::Rst,
                    end_unix_ns: start + 200_000,
                    final_unix_ns: start + 200_000,
                    history: crate::flows::History { orig, resp },
                    ..ConnectionRecord::new(
                        Transport::Tcp,
                        (checker, 41_000 + (3 * i + k) as u16),
                        (host, port),
                        start,
                    )
                }
            };
            checks.push(check(0, 5432, ConnState::REJ, SYN, RST, 0));
            let (o, r) = (SYN | ACK | RST, SYN_ACK | ACK | DATA | FIN);
            checks.push(check(1, 22, ConnState::RSTO, o, r, 32));
            let (o, r) = (SYN | ACK | FIN, SYN_ACK | ACK | FIN);
            checks.push(check(2, 80, ConnState::SF, o, r, 0));
        }
        let off = ChecksConfig {
            enabled: false,
            ..ChecksConfig::default()
        };
        let mut p = Pipeline::new(model(), FeatureConfig::default())
            .unwrap()
            .with_checks(off);
        let models = p.process_records(&checks);
        let mut p = Pipeline::new(model(), FeatureConfig::default()).unwrap();
        let out = p.process_records(&checks);
        for port in [5432, 22, 80] {
            let of_port = |v: &[Scored]| -> Vec<Scored> {
                v.iter()
                    .zip(&checks)
                    .filter(|(_, r)| r.resp_port == port)
                    .map(|(s, _)| s.clone())
                    .collect()
            };
            let (models, out) = (of_port(&models), of_port(&out));
            let flagged_by_model = models.iter().filter(|s| s.verdict.anomalous).count();
            let mut withdrawn = 0;
            for (i, (s, m)) in out.iter().zip(&models).enumerate() {
                assert!(m.routine_check.is_none());
                match s.routine_check {
                    Some(hit) => {
                        withdrawn += 1;
                        assert!(m.verdict.anomalous, "port {port} check {i}: a flagged one");
                        assert!(!s.verdict.anomalous && s.verdict.score == 0.0);
                        assert_eq!(s.verdict.detector, crate::model::Detector::None);
                        assert_eq!(s.verdict.supervised_score, m.verdict.supervised_score);
                        assert!(hit.repeats >= 4 && (0.99..1.01).contains(&hit.period_secs));
                    }
                    None => assert_eq!(s.verdict, m.verdict, "port {port} check {i}"),
                }
            }
            println!(
                "port {port}: the model flagged {flagged_by_model} of 20, {withdrawn} withdrawn"
            );
            assert_eq!(withdrawn, flagged_by_model.saturating_sub(3), "port {port}");
            let left = out.iter().filter(|s| s.verdict.anomalous).count();
            assert_eq!(left, flagged_by_model.min(3), "port {port}");
        }
        let all = models.iter().filter(|s| s.verdict.anomalous).count();
        assert!(all >= 30, "the model flags such checks: {all} of 60");
        assert_eq!(p.routine_checks().tracked(), 3);
    }

    /// What a fragment is: data without the originator's SYN, an established connection
    /// open at the end; and what it is not: probes without a handshake, unanswered attempts.
    #[test]
    fn fragments_are_not_scored_but_probes_and_attempts_are() {
        use crate::flows::History;
        use sensor_common::flow::history::{ACK, DATA, FIN, NON_SYN, RST, SYN, SYN_ACK};
        let base = ConnectionRecord {
            history: History {
                orig: SYN | NON_SYN | ACK | DATA | FIN,
                resp: SYN_ACK | NON_SYN | ACK | DATA | FIN,
            },
            conn_state: ConnState::SF,
            orig_bytes: 100,
            resp_bytes: 900,
            end_reason: EndReason::Fin,
            ..recs()[0].clone()
        };
        let with = |orig: u8, resp: u8, state: ConnState, bytes: (u64, u64), end: EndReason| {
            NotScored::of(&ConnectionRecord {
                history: History { orig, resp },
                conn_state: state,
                orig_bytes: bytes.0,
                resp_bytes: bytes.1,
                end_reason: end,
                ..base.clone()
            })
        };
        assert_eq!(NotScored::of(&base), None, "a whole connection");
        // Mid-stream with data, in one or both directions.
        let mid = NON_SYN | ACK | DATA;
        assert_eq!(
            with(mid, mid, ConnState::OTH, (10, 10), EndReason::Idle),
            Some(NotScored::StartNotSeen)
        );
        assert_eq!(
            with(0, mid, ConnState::OTH, (0, 2769), EndReason::Idle),
            Some(NotScored::StartNotSeen)
        );
        // A mid-stream close the responder acknowledged (a FIN it had a connection for).
        assert_eq!(
            with(
                NON_SYN | ACK | FIN,
                NON_SYN | ACK,
                ConnState::SH,
                (0, 0),
                EndReason::Idle
            ),
            Some(NotScored::StartNotSeen)
        );
        // FIN, NULL, Xmas and ACK probes carry no data and get a RST or nothing: scored.
        assert_eq!(
            with(NON_SYN | FIN, 0, ConnState::OTH, (0, 0), EndReason::Idle),
            None
        );
        for (probe, answer) in [
            (NON_SYN | FIN, NON_SYN | RST),
            (NON_SYN | ACK, NON_SYN | RST),
        ] {
            assert_eq!(
                with(probe, answer, ConnState::RSTR, (0, 0), EndReason::Rst),
                None
            );
        }
        // Answers to a start not seen (backscatter, a timed-out connection's tail): a lone RST,
        // a lone SYN-ACK, a SYN-ACK then a RST, RSTs both ways.
        for (orig, resp, state) in [
            (NON_SYN | RST, 0, ConnState::OTH),
            (0, SYN_ACK, ConnState::OTH),
            (0, SYN_ACK | NON_SYN | RST, ConnState::RSTRH),
            (NON_SYN | RST, NON_SYN | RST, ConnState::OTH),
        ] {
            assert_eq!(
                with(orig, resp, state, (0, 0), EndReason::Rst),
                Some(NotScored::AnswersOnly),
                "{orig:#b} {resp:#b}"
            );
        }
        // A SYN sent as a tiny first fragment, whose flags were not seen: its SYN-ACK was
        // asked for, and the conversation is scored (not answers only, not begun unseen).
        let mut tiny = ConnectionRecord {
            history: History {
                orig: NON_SYN | DATA | RST,
                resp: SYN_ACK,
            },
            conn_state: ConnState::RSTO,
            orig_bytes: 12,
            resp_bytes: 0,
            end_reason: EndReason::Rst,
            wrong_fragments: 1,
            ..base.clone()
        };
        assert_eq!(NotScored::of(&tiny), None);
        tiny.wrong_fragments = 0;
        assert_eq!(NotScored::of(&tiny), Some(NotScored::StartNotSeen));
        // Not answers only: a NULL probe (a packet without SYN, RST, ACK or FIN), a SYN, an
        // answered ACK probe, data.
        for (orig, resp, bytes) in [
            (NON_SYN, NON_SYN | RST, (0, 0)),
            (SYN, SYN_ACK, (0, 0)),
            (NON_SYN | ACK, NON_SYN | RST, (0, 0)),
            (NON_SYN | RST | DATA, 0, (10, 0)),
        ] {
            assert_ne!(
                with(orig, resp, ConnState::OTH, bytes, EndReason::Rst),
                Some(NotScored::AnswersOnly),
                "{orig:#b} {resp:#b}"
            );
        }
        // Open at the end of observation, or established and silent past the idle timeout
        // without FIN or RST (an idle interactive session): its end not seen, an established
        // fragment not scored. Unanswered attempts are scored either way.
        for end in [EndReason::Shutdown, EndReason::Idle] {
            assert_eq!(
                with(
                    SYN | NON_SYN | ACK | DATA,
                    SYN_ACK | NON_SYN | ACK | DATA,
                    ConnState::S1,
                    (5, 5),
                    end
                ),
                Some(NotScored::EndNotSeen),
                "{end:?}"
            );
            assert_eq!(with(SYN, 0, ConnState::S0, (0, 0), end), None, "{end:?}");
        }
        // IPv6 neighbour discovery and MLD are the link's control plane; echoes, redirects and
        // errors, and every ICMPv4 type, are scored.
        let icmp = |ip_version: u8, t: u8| {
            NotScored::of(&ConnectionRecord {
                transport: Transport::Icmp,
                ip_version,
                icmp_type: Some(t),
                icmp_code: Some(0),
                history: History::default(),
                ..base.clone()
            })
        };
        for t in [130, 131, 132, 133, 134, 135, 136, 143] {
            assert_eq!(icmp(6, t), Some(NotScored::LinkControl), "type {t}");
            assert_eq!(icmp(4, t), None, "ICMPv4 type {t}");
        }
        for t in [1, 2, 3, 128, 129, 137] {
            assert_eq!(icmp(6, t), None, "type {t}");
        }
        // Records without TCP history (UDP, files from older versions) are scored.
        assert_eq!(with(0, 0, ConnState::OTH, (5, 5), EndReason::Idle), None);
        for r in NotScored::ALL {
            assert_eq!(NotScored::ALL[r.index()], r);
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }

    #[test]
    fn a_cold_host_window_gets_the_mean_verdict_over_the_contexts() {
        let m = model();
        let rs = recs();
        let mut engine = FeatureEngine::new(FeatureConfig::default()).unwrap();
        let mut p = Pipeline::new(Arc::clone(&m), FeatureConfig::default()).unwrap();
        let scored = p.process_records(&rs);
        for (r, s) in rs.iter().zip(&scored) {
            let f = engine.push(r);
            assert_eq!(
                f, s.features,
                "the features reported are the mean context's"
            );
            if engine.last_cold().is_none() {
                // The 255th connection on: the window is full, the verdict the model's.
                assert_eq!(s.verdict, m.score(&f));
                assert_eq!(s.cold, None);
                assert_eq!(s.explain(&m), m.explain(&f, &s.verdict));
                continue;
            }
            assert_eq!(s.cold, engine.last_cold());
            let mut contexts = Vec::new();
            engine.last_cold().unwrap().contexts(&f, &mut contexts);
            assert_eq!(
                contexts.len(),
                crate::features::cold_contexts::COLD_CONTEXT_COUNT
            );
            // Only the host window (KDD 32-41) differs between the contexts.
            assert!(contexts.iter().all(|c| c.0[..31] == f.0[..31]));
            assert!(contexts.iter().any(|c| c.0[31..] != f.0[31..]));
            let each: Vec<Verdict> = contexts.iter().map(|c| m.score(c)).collect();
            let cold = engine.last_cold().unwrap();
            let want = m.mean_verdict(&each, cold.unseen_share()).unwrap();
            assert_eq!(s.verdict, want);
            // Its explanation is over the contexts too.
            assert_eq!(s.explain(&m), m.explain_over(&contexts, &s.verdict));
            let mean_s = each.iter().map(|v| v.supervised_score).sum::<f64>() / each.len() as f64;
            assert!((s.verdict.supervised_score - mean_s).abs() < 1e-12);
        }
        assert_eq!(engine.stats().connections_total, 300);
        assert_eq!(m.mean_verdict(&[], 1.0), None);
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
        // Past the cold host window (255 connections), each verdict is the model's on the
        // connection's features.
        for s in &scored[255..] {
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
