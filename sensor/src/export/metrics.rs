//! The sensor's Prometheus metrics.
//!
//! Label sets are closed enums (protocol, flag, end reason, packet outcome), never addresses or
//! ports, so the number of series is bounded. Values that live in the kernel (the per-CPU health
//! counters) are read from the map at scrape time, not copied on a timer.

use std::sync::{Arc, atomic::AtomicU64};

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Registry, core::Collector,
};

use crate::{
    flows::{EndReason, Transport},
    model::Detector,
};

/// Errors while building the registry (a programming error: a duplicate or invalid metric).
#[derive(Debug, thiserror::Error)]
#[error("registering metric {name}")]
pub struct MetricsError {
    name: &'static str,
    #[source]
    source: prometheus::Error,
}

/// Label-resolved children of a metric vector, one slot per label combination, filled on first
/// use. `with_label_values` hashes the label strings under a lock on every call (hundreds of
/// ns); the hot path instead indexes this array and bumps an atomic.
struct Children<C> {
    slots: Vec<std::sync::OnceLock<C>>,
}

impl<C: Clone> Children<C> {
    fn new(n: usize) -> Self {
        Children {
            slots: (0..n).map(|_| std::sync::OnceLock::new()).collect(),
        }
    }

    fn get(&self, i: usize, make: impl FnOnce() -> C) -> &C {
        self.slots[i].get_or_init(make)
    }
}

fn transport_index(t: Transport) -> usize {
    t.index()
}

/// How many values [`end_index`] gives.
const END_REASONS: usize = 6;

fn end_index(e: EndReason) -> (usize, &'static str) {
    match e {
        EndReason::Fin => (0, "fin"),
        EndReason::Rst => (1, "rst"),
        EndReason::Idle => (2, "idle"),
        EndReason::Shutdown => (3, "shutdown"),
        EndReason::Ongoing => (4, "ongoing"),
        EndReason::Evicted => (5, "evicted"),
    }
}

/// How many values [`detector_index`] gives.
const DETECTORS: usize = 6;

fn detector_index(d: Detector) -> usize {
    match d {
        Detector::None => 0,
        Detector::Supervised => 1,
        Detector::Unsupervised => 2,
        Detector::Both => 3,
        Detector::Volume => 4,
        Detector::Malformed => 5,
    }
}

/// Every metric of the sensor, registered once.
pub struct Metrics {
    pub registry: Registry,
    connections: IntCounterVec,
    connection_children: Children<IntCounter>,
    /// Flow-table entries seen by the last full scan (set by the capture loop).
    pub table_entries: Arc<AtomicU64>,
    capture_events: IntCounter,
    capture_duplicate_events: IntCounter,
    capture_finished_by_scan: IntCounter,
    capture_finished_at_final_ack: IntCounter,
    capture_adopted_by_scan: IntCounter,
    capture_lost_on_restart: IntCounter,
    capture_finished_on_restart: IntCounter,
    capture_taken_from_park: IntCounter,
    capture_trailing_folded: IntCounter,
    nat_split_connections: IntCounter,
    nat_filter_rebuilds: IntCounter,
    detection: Detection,
}

/// The detection stage's metrics (verdicts, scores, latency, alerts, model).
struct Detection {
    verdicts: IntCounterVec,
    verdict_children: Children<IntCounter>,
    not_scored: IntCounterVec,
    not_scored_children: Children<IntCounter>,
    latency_children: Children<Histogram>,
    score: Histogram,
    latency: HistogramVec,
    alerts: IntCounter,
    alerts_suppressed: IntCounter,
    withdrawn: IntCounter,
    withdrawn_checks: IntCounter,
    check_keys: IntGauge,
    check_keys_untracked: IntCounter,
    model_info: IntGaugeVec,
    model_threshold: GaugeVec,
    model_reloads: IntCounterVec,
    config_reloads: IntCounterVec,
    suppressed: IntCounterVec,
    model_loaded: Gauge,
    window_connections: IntGauge,
    window_evictions: IntCounter,
    window_resumed: IntCounterVec,
    volume_targets: IntGauge,
    volume_targets_untracked: IntCounter,
    volume_sources_untracked: IntCounter,
    login_sources: IntGauge,
    login_sources_untracked: IntCounter,
    held_sources: IntGauge,
    held_sources_untracked: IntCounter,
    output_errors: IntCounter,
    incidents: IntCounterVec,
    incidents_open: IntGaugeVec,
    incident_candidates_dropped: IntCounter,
    incident_candidates_restarted: IntCounter,
    incident_exchanges_untracked: IntCounter,
    incident_early_verdicts_forgotten: IntCounter,
}

fn reg<C: Collector + Clone + 'static>(
    registry: &Registry,
    name: &'static str,
    c: C,
) -> Result<C, MetricsError> {
    registry
        .register(Box::new(c.clone()))
        .map_err(|source| MetricsError { name, source })?;
    Ok(c)
}

/// Raises a counter to `total`, a running total kept elsewhere (the kernel's, a rule's, the
/// tracker's): it adds what grew since the last call, never less than nothing.
fn raise_to(c: &IntCounter, total: u64) {
    c.inc_by(total.saturating_sub(c.get()));
}

mod kernel;
mod record;
pub use record::ScoredBatch;
mod registry;
#[cfg(test)]
mod tests;
