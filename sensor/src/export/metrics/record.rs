//! Recording: per-connection counts, verdicts, model and reload figures.

use std::sync::atomic::Ordering;

use prometheus::local::LocalHistogram;
use sensor_common::conn_state::ConnState;

use super::{
    DETECTORS, END_REASONS, Metrics, detector_index, end_index, raise_to, transport_index,
};
use crate::{
    detect::Scored,
    features::EngineStats,
    flows::{ConnectionRecord, EndReason, Transport},
    incidents::{IncidentKind, IncidentStats},
    kdd::SERVICES,
    lifecycle::LifecycleStats,
    model::{Detector, Model},
};

/// The histograms of one batch of scored connections ([`Metrics::scored_batch`]): observed
/// without atomics, added to the shared ones once when it is dropped. Two histogram
/// observations per connection were a twentieth of the live path's time under a flood.
pub struct ScoredBatch<'a> {
    metrics: &'a Metrics,
    score: LocalHistogram,
    latency: [Option<LocalHistogram>; 4],
}

impl ScoredBatch<'_> {
    /// Counts a scored connection: verdict by protocol and service, its score, and the
    /// detection latency (seconds from the moment the connection was final to the verdict).
    pub fn observe(&mut self, rec: &ConnectionRecord, scored: &Scored, latency_secs: f64) {
        let d = &self.metrics.detection;
        let v = &scored.verdict;
        let svc = usize::from(scored.features.service_index()).min(SERVICES.len());
        let service = SERVICES.get(svc).copied().unwrap_or("other");
        let (t, det) = (transport_index(rec.transport), detector_index(v.detector));
        let i = ((usize::from(v.anomalous) * DETECTORS + det) * Transport::ALL.len() + t)
            * (SERVICES.len() + 1)
            + svc;
        d.verdict_children
            .get(i, || {
                d.verdicts.with_label_values(&[
                    if v.anomalous { "anomalous" } else { "normal" },
                    Detector::as_str(v.detector),
                    rec.transport.as_str(),
                    service,
                ])
            })
            .inc();
        if let Some(reason) = scored.not_scored {
            d.not_scored_children
                .get(reason.index(), || {
                    d.not_scored.with_label_values(&[reason.as_str()])
                })
                .inc();
        }
        self.score.observe(v.score);
        if v.withdrawn_by_attack_boxes {
            d.withdrawn.inc();
        }
        if scored.routine_check.is_some() {
            d.withdrawn_checks.inc();
        }
        let (li, finalised_by) = match rec.end_reason {
            EndReason::Fin | EndReason::Rst => (0, "event"),
            EndReason::Idle => (1, "idle_timeout"),
            EndReason::Shutdown | EndReason::Ongoing => (2, "shutdown"),
            EndReason::Evicted => (3, "eviction"),
        };
        self.latency[li]
            .get_or_insert_with(|| {
                d.latency_children
                    .get(li, || d.latency.with_label_values(&[finalised_by]))
                    .local()
            })
            .observe(latency_secs.max(0.0));
    }
}

impl Metrics {
    /// A batch of scored connections to count ([`ScoredBatch::observe`]); the histograms
    /// are published when it is dropped.
    pub fn scored_batch(&self) -> ScoredBatch<'_> {
        ScoredBatch {
            metrics: self,
            score: self.detection.score.local(),
            latency: Default::default(),
        }
    }

    /// Counts alerts written and suppressed (cumulative values from the alert sink).
    pub fn set_alert_counts(&self, written: u64, suppressed: u64) {
        raise_to(&self.detection.alerts, written);
        raise_to(&self.detection.alerts_suppressed, suppressed);
    }

    /// Publishes the running model's identity and thresholds.
    pub fn set_model(&self, model: &Model, path: &str) {
        let d = &self.detection;
        let data = model.data();
        d.model_info.reset();
        d.model_info
            .with_label_values(&[
                path,
                &format!("v{}", data.format_version),
                &format!("{:?}", data.feature_set).to_lowercase(),
                data.metadata.data_sha256.get(..12).unwrap_or(""),
                data.normal_profile
                    .as_ref()
                    .map_or("none", |p| p.source.as_str()),
            ])
            .set(1);
        let t = model.thresholds();
        d.model_threshold
            .with_label_values(&["supervised"])
            .set(t.supervised);
        d.model_threshold
            .with_label_values(&["unsupervised"])
            .set(t.unsupervised);
        d.model_loaded.set(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        );
    }

    /// Counts a model reload attempt (`ok` or `error`).
    pub fn model_reload(&self, ok: bool) {
        self.detection
            .model_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Counts a reload of the configuration's suppression rules (`ok` or `error`).
    pub fn config_reload(&self, ok: bool) {
        self.detection
            .config_reloads
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Exports every rule's series at 0, so that the first suppression is an increase.
    pub fn set_suppressions(&self, s: &crate::suppress::Suppressions) {
        for r in s.rules() {
            for what in ["connection", "incident"] {
                self.detection
                    .suppressed
                    .with_label_values(&[&*r.name, what]);
            }
        }
    }

    /// Counts one suppression by `rule` of a `what` (`connection` or `incident`).
    pub fn suppressed(&self, rule: &str, what: &str) {
        self.detection
            .suppressed
            .with_label_values(&[rule, what])
            .inc();
    }

    /// Reloads so far: (ok, error).
    pub fn model_reload_counts(&self) -> (u64, u64) {
        let r = &self.detection.model_reloads;
        (
            r.with_label_values(&["ok"]).get(),
            r.with_label_values(&["error"]).get(),
        )
    }

    /// Brings the feature engine's figures up to date.
    pub fn set_engine_stats(&self, s: &EngineStats) {
        let d = &self.detection;
        d.window_connections
            .set(i64::try_from(s.time_window_connections).unwrap_or(i64::MAX));
        raise_to(&d.window_evictions, s.time_window_overflow_evictions_total);
        for (outcome, total) in [
            ("resumed", s.resumed_total),
            ("forgotten", s.resume_forgotten_total),
        ] {
            raise_to(&d.window_resumed.with_label_values(&[outcome]), total);
        }
    }

    /// The volume rule's per-target counts ([`crate::detect::TargetRates`]).
    pub fn set_volume_targets(&self, t: &crate::detect::TargetRates) {
        let d = &self.detection;
        d.volume_targets
            .set(i64::try_from(t.len()).unwrap_or(i64::MAX));
        raise_to(&d.volume_targets_untracked, t.untracked());
        raise_to(&d.volume_sources_untracked, t.sources_untracked());
    }

    /// The login rule's sources followed, and its sessions not counted (a running total in
    /// the rule).
    pub fn set_login_sources(&self, l: &crate::detect::LoginRates) {
        let d = &self.detection;
        d.login_sources
            .set(i64::try_from(l.tracked()).unwrap_or(i64::MAX));
        raise_to(&d.login_sources_untracked, l.untracked());
    }

    /// The held-request rule's sources followed, and its held requests not counted (a
    /// running total in the rule).
    pub fn set_held_sources(&self, h: &crate::detect::HeldRequests) {
        let d = &self.detection;
        d.held_sources
            .set(i64::try_from(h.tracked()).unwrap_or(i64::MAX));
        raise_to(&d.held_sources_untracked, h.untracked());
    }

    /// The routine-check rule's sources and services followed, and its flagged exchanges not
    /// followed (a running total in the rule).
    pub fn set_routine_checks(&self, c: &crate::detect::RoutineChecks) {
        let d = &self.detection;
        d.check_keys
            .set(i64::try_from(c.tracked()).unwrap_or(i64::MAX));
        raise_to(&d.check_keys_untracked, c.untracked());
    }

    /// Counts a failed write of an alert or record line.
    pub fn output_error(&self) {
        self.detection.output_errors.inc();
    }

    /// Counts a finished connection.
    pub fn observe_connection(&self, rec: &ConnectionRecord) {
        let (e, end) = end_index(rec.end_reason);
        let flag = rec.conn_state as usize;
        let i = (transport_index(rec.transport) * ConnState::ALL.len() + flag) * END_REASONS + e;
        self.connection_children
            .get(i, || {
                self.connections.with_label_values(&[
                    rec.transport.as_str(),
                    rec.conn_state.as_str(),
                    end,
                ])
            })
            .inc();
    }

    /// Brings the incident figures up to date.
    pub fn set_incident_stats(&self, s: &IncidentStats) {
        let d = &self.detection;
        for kind in IncidentKind::ALL {
            let opened = s.opened.get(&kind).copied().unwrap_or(0);
            raise_to(&d.incidents.with_label_values(&[kind.as_str()]), opened);
            let open = s.open.get(&kind).copied().unwrap_or(0);
            d.incidents_open
                .with_label_values(&[kind.as_str()])
                .set(i64::try_from(open).unwrap_or(i64::MAX));
        }
        raise_to(&d.incident_candidates_dropped, s.candidates_dropped);
        raise_to(&d.incident_candidates_restarted, s.candidates_restarted);
        raise_to(&d.incident_exchanges_untracked, s.exchanges_untracked);
        raise_to(
            &d.incident_early_verdicts_forgotten,
            s.early_verdicts_forgotten,
        );
    }

    /// Connections split by address translation between watched interfaces so far
    /// ([`crate::capture::nat`]).
    pub fn set_nat_split(&self, total: u64) {
        raise_to(&self.nat_split_connections, total);
    }

    /// Brings the capture-stage counters up to `stats` (cumulative values).
    pub fn set_capture_stats(&self, stats: &LifecycleStats) {
        raise_to(&self.capture_events, stats.events);
        raise_to(&self.capture_duplicate_events, stats.duplicate_events);
        raise_to(&self.capture_finished_by_scan, stats.finished_by_scan);
        raise_to(
            &self.capture_finished_at_final_ack,
            stats.finished_at_final_ack,
        );
        raise_to(&self.capture_adopted_by_scan, stats.adopted_by_scan);
        raise_to(&self.capture_lost_on_restart, stats.lost_on_restart);
        raise_to(&self.capture_finished_on_restart, stats.finished_on_restart);
        raise_to(&self.capture_taken_from_park, stats.taken_from_park);
        raise_to(&self.capture_trailing_folded, stats.trailing_folded);
        raise_to(&self.nat_filter_rebuilds, stats.nat_filter_rebuilds);
        self.table_entries
            .store(stats.table_entries, Ordering::Relaxed);
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let families = self.registry.gather();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut out) {
            log::error!("encoding metrics failed: {e}");
        }
        out
    }
}
