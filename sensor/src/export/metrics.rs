//! The sensor's Prometheus metrics.
//!
//! Label sets are closed enums (protocol, flag, end reason, packet outcome), never addresses or
//! ports, so the number of series is bounded. Values that live in the kernel (the per-CPU health
//! counters) are read from the map at scrape time, not copied on a timer.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use sensor_common::conn_state::ConnState;

use crate::{
    capture::HealthSource,
    detect::{NotScored, Scored},
    features::EngineStats,
    flows::{ConnectionRecord, EndReason, Transport},
    incidents::{IncidentKind, IncidentStats},
    kdd::SERVICES,
    lifecycle::LifecycleStats,
    model::{Detector, Model},
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

fn detector_index(d: Detector) -> usize {
    match d {
        Detector::None => 0,
        Detector::Supervised => 1,
        Detector::Unsupervised => 2,
        Detector::Both => 3,
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
    capture_adopted_by_scan: IntCounter,
    capture_lost_on_restart: IntCounter,
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
    model_info: IntGaugeVec,
    model_threshold: GaugeVec,
    model_reloads: IntCounterVec,
    config_reloads: IntCounterVec,
    suppressed: IntCounterVec,
    model_loaded: Gauge,
    window_connections: IntGauge,
    window_evictions: IntCounter,
    output_errors: IntCounter,
    incidents: IntCounterVec,
    incidents_open: IntGaugeVec,
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

impl Metrics {
    /// Builds the registry. `health` is read at every scrape; `table_size` is the flow
    /// table's configured size.
    pub fn new(health: Arc<dyn HealthSource>, table_size: u32) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let e = |name| move |source| MetricsError { name, source };

        let build = IntGaugeVec::new(
            Opts::new(
                "sensor_build_info",
                "Build of the running sensor (value is always 1).",
            ),
            &["version"],
        )
        .map_err(e("sensor_build_info"))?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        reg(&registry, "sensor_build_info", build)?;

        let connections = reg(
            &registry,
            "sensor_connections_total",
            IntCounterVec::new(
                Opts::new(
                    "sensor_connections_total",
                    "Finished connections, by transport protocol, KDD flag (Zeek conn_state) and why they ended.",
                ),
                &["protocol", "flag", "end_reason"],
            )
            .map_err(e("sensor_connections_total"))?,
        )?;

        let capacity = IntGauge::new(
            "sensor_flow_table_capacity",
            "Capacity of the kernel flow table, in connections.",
        )
        .map_err(e("sensor_flow_table_capacity"))?;
        capacity.set(i64::from(table_size));
        reg(&registry, "sensor_flow_table_capacity", capacity)?;

        let table_entries = Arc::new(AtomicU64::new(0));
        let entries = Arc::clone(&table_entries);
        let occupancy = prometheus::PullingGauge::new(
            "sensor_flow_table_entries",
            "Connections in the kernel flow table at the last table scan (at most a second old).",
            Box::new(move || entries.load(Ordering::Relaxed) as f64),
        )
        .map_err(e("sensor_flow_table_entries"))?;
        registry
            .register(Box::new(occupancy))
            .map_err(e("sensor_flow_table_entries"))?;

        let kernel = KernelHealth::new(health).map_err(e("sensor_kernel_*"))?;
        registry
            .register(Box::new(kernel))
            .map_err(e("sensor_kernel_*"))?;

        let counter = |name: &'static str, help: &str| {
            IntCounter::new(name, help)
                .map_err(e(name))
                .and_then(|c| reg(&registry, name, c))
        };
        let capture_events = counter(
            "sensor_capture_events_total",
            "Finished-connection events received from the kernel ring buffer.",
        )?;
        let capture_duplicate_events = counter(
            "sensor_capture_duplicate_events_total",
            "Ring-buffer events for a connection already reported (two CPUs raced on its last packets).",
        )?;
        let capture_finished_by_scan = counter(
            "sensor_capture_finished_by_scan_total",
            "Finished TCP connections whose finish event never came (dropped, or a race of two CPUs), finalised by an idle check or the table scan.",
        )?;
        let capture_adopted_by_scan = counter(
            "sensor_capture_adopted_by_scan_total",
            "Connections whose begin event was lost (full ring buffer), found by the table scan; their window features are approximate.",
        )?;
        let capture_lost_on_restart = counter(
            "sensor_capture_lost_on_restart_total",
            "Connections whose entry a new connection on the same 5-tuple took over before their end was reported (their finish event was lost): records lost.",
        )?;
        let detection = Detection::new(&registry)?;
        // Both results exist from the start at 0, so that the first failed reload is an
        // increase that alert rules see (a series born at 1 has no increase in PromQL).
        for result in ["ok", "error"] {
            detection.model_reloads.with_label_values(&[result]);
            detection.config_reloads.with_label_values(&[result]);
        }
        Ok(Metrics {
            registry,
            connections,
            connection_children: Children::new(
                Transport::ALL.len() * ConnState::ALL.len() * END_REASONS,
            ),
            table_entries,
            capture_events,
            capture_duplicate_events,
            capture_finished_by_scan,
            capture_adopted_by_scan,
            capture_lost_on_restart,
            detection,
        })
    }

    /// Counts a scored connection: verdict by protocol and service, its score, and the
    /// detection latency (seconds from the moment the connection was final to the verdict).
    pub fn observe_scored(&self, rec: &ConnectionRecord, scored: &Scored, latency_secs: f64) {
        let d = &self.detection;
        let v = &scored.verdict;
        let svc = usize::from(scored.features.service_index()).min(SERVICES.len());
        let service = SERVICES.get(svc).copied().unwrap_or("other");
        let (t, det) = (transport_index(rec.transport), detector_index(v.detector));
        let i = ((usize::from(v.anomalous) * 4 + det) * Transport::ALL.len() + t)
            * (SERVICES.len() + 1)
            + svc;
        d.verdict_children
            .get(i, || {
                d.verdicts.with_label_values(&[
                    if v.anomalous { "anomalous" } else { "normal" },
                    detector_name(v.detector),
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
        d.score.observe(v.score);
        let (li, finalised_by) = match rec.end_reason {
            EndReason::Fin | EndReason::Rst => (0, "event"),
            EndReason::Idle => (1, "idle_timeout"),
            EndReason::Shutdown | EndReason::Ongoing => (2, "shutdown"),
            EndReason::Evicted => (3, "eviction"),
        };
        d.latency_children
            .get(li, || d.latency.with_label_values(&[finalised_by]))
            .observe(latency_secs.max(0.0));
    }

    /// Counts alerts written and suppressed (cumulative values from the alert sink).
    pub fn set_alert_counts(&self, written: u64, suppressed: u64) {
        let up = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        up(&self.detection.alerts, written);
        up(&self.detection.alerts_suppressed, suppressed);
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
        d.window_evictions.inc_by(
            s.time_window_overflow_evictions_total
                .saturating_sub(d.window_evictions.get()),
        );
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
            let c = d.incidents.with_label_values(&[kind.as_str()]);
            c.inc_by(opened.saturating_sub(c.get()));
            let open = s.open.get(&kind).copied().unwrap_or(0);
            d.incidents_open
                .with_label_values(&[kind.as_str()])
                .set(i64::try_from(open).unwrap_or(i64::MAX));
        }
    }

    /// Brings the capture-stage counters up to `stats` (cumulative values).
    pub fn set_capture_stats(&self, stats: &LifecycleStats) {
        let up = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        up(&self.capture_events, stats.events);
        up(&self.capture_duplicate_events, stats.duplicate_events);
        up(&self.capture_finished_by_scan, stats.finished_by_scan);
        up(&self.capture_adopted_by_scan, stats.adopted_by_scan);
        up(&self.capture_lost_on_restart, stats.lost_on_restart);
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

fn detector_name(d: Detector) -> &'static str {
    match d {
        Detector::None => "none",
        Detector::Supervised => "supervised",
        Detector::Unsupervised => "unsupervised",
        Detector::Both => "both",
    }
}

impl Detection {
    fn new(registry: &Registry) -> Result<Detection, MetricsError> {
        let e = |name| move |source| MetricsError { name, source };
        macro_rules! registered {
            ($name:literal, $make:expr) => {
                reg(registry, $name, $make.map_err(e($name))?)?
            };
        }
        Ok(Detection {
            verdict_children: Children::new(2 * 4 * Transport::ALL.len() * (SERVICES.len() + 1)),
            latency_children: Children::new(4),
            not_scored_children: Children::new(NotScored::ALL.len()),
            not_scored: registered!(
                "sensor_connections_not_scored_total",
                IntCounterVec::new(
                    Opts::new(
                        "sensor_connections_not_scored_total",
                        "Connections the model does not judge (counted as normal verdicts too), by reason: group_destination (broadcast, multicast), one_sided (one direction of a TCP connection seen), start_not_seen (picked up mid-stream with data), end_not_seen (established and still open when observation ended), tunnel_carrier (a tunnel's outer connection), other_transport (SCTP and other IP protocols).",
                    ),
                    &["reason"],
                )
            ),
            verdicts: registered!(
                "sensor_verdicts_total",
                IntCounterVec::new(
                    Opts::new(
                        "sensor_verdicts_total",
                        "Scored connections by verdict, the detector that fired (none for normal), protocol and KDD service (70 names).",
                    ),
                    &["verdict", "detector", "protocol", "service"],
                )
            ),
            score: registered!(
                "sensor_score",
                Histogram::with_opts(
                    HistogramOpts::new(
                        "sensor_score",
                        "Combined anomaly score of scored connections: each detector's score over its threshold, the larger; >= 1 is anomalous.",
                    )
                    .buckets(vec![0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 5.0]),
                )
            ),
            latency: registered!(
                "sensor_detection_latency_seconds",
                HistogramVec::new(
                    HistogramOpts::new(
                        "sensor_detection_latency_seconds",
                        "Time from the moment a connection was final (its last packet for FIN/RST; last packet plus the idle timeout for idle ones) to its verdict, by how it was finalised (event: FIN/RST signalled by the kernel; idle_timeout; shutdown).",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ]),
                    &["finalised_by"],
                )
            ),
            alerts: registered!(
                "sensor_alerts_total",
                IntCounter::new("sensor_alerts_total", "Alert lines written.")
            ),
            alerts_suppressed: registered!(
                "sensor_alerts_suppressed_total",
                IntCounter::new(
                    "sensor_alerts_suppressed_total",
                    "Anomalous connections whose alert the rate limit held back (summarised in `suppressed` lines).",
                )
            ),
            model_info: registered!(
                "sensor_model_info",
                IntGaugeVec::new(
                    Opts::new(
                        "sensor_model_info",
                        "The running model (value is always 1): file, format version, feature set, training data hash prefix, normal-profile source.",
                    ),
                    &["path", "format", "feature_set", "data_sha256", "normal_profile"],
                )
            ),
            model_threshold: registered!(
                "sensor_model_threshold",
                GaugeVec::new(
                    Opts::new(
                        "sensor_model_threshold",
                        "Operating threshold of each detector (after any configured override).",
                    ),
                    &["detector"],
                )
            ),
            model_reloads: registered!(
                "sensor_model_reloads_total",
                IntCounterVec::new(
                    Opts::new(
                        "sensor_model_reloads_total",
                        "Model reloads on SIGHUP, by result; on error the running model is kept.",
                    ),
                    &["result"],
                )
            ),
            config_reloads: registered!(
                "sensor_config_reloads_total",
                IntCounterVec::new(
                    Opts::new(
                        "sensor_config_reloads_total",
                        "Reloads of the configuration file's suppression rules on SIGHUP, by result; on error the running rules are kept.",
                    ),
                    &["result"],
                )
            ),
            suppressed: registered!(
                "sensor_suppressed_total",
                IntCounterVec::new(
                    Opts::new(
                        "sensor_suppressed_total",
                        "Anomalous connections and incident lines silenced by an operator's suppression rule (still recorded and counted as verdicts).",
                    ),
                    &["rule", "what"],
                )
            ),
            model_loaded: registered!(
                "sensor_model_loaded_timestamp_seconds",
                Gauge::new(
                    "sensor_model_loaded_timestamp_seconds",
                    "Unix time at which the running model was loaded.",
                )
            ),
            window_connections: registered!(
                "sensor_feature_window_connections",
                IntGauge::new(
                    "sensor_feature_window_connections",
                    "Connections held in the 2-second feature window.",
                )
            ),
            window_evictions: registered!(
                "sensor_feature_window_evictions_total",
                IntCounter::new(
                    "sensor_feature_window_evictions_total",
                    "Connections expired early from the 2-second window because of its size cap.",
                )
            ),
            output_errors: registered!(
                "sensor_output_errors_total",
                IntCounter::new(
                    "sensor_output_errors_total",
                    "Alert or record lines that could not be written.",
                )
            ),
            incidents: registered!(
                "sensor_incidents_total",
                IntCounterVec::new(
                    Opts::new(
                        "sensor_incidents_total",
                        "Incidents opened (anomalous connections grouped into one attack), by kind.",
                    ),
                    &["kind"],
                )
            ),
            incidents_open: registered!(
                "sensor_incidents_open",
                IntGaugeVec::new(
                    Opts::new("sensor_incidents_open", "Incidents open now, by kind."),
                    &["kind"],
                )
            ),
        })
    }
}

/// The kernel health counters as Prometheus counters, read from the map at each scrape.
struct KernelHealth {
    source: Arc<dyn HealthSource>,
    packets: IntCounterVec,
    bytes: IntCounter,
    ringbuf_drops: IntCounter,
    flows_created: IntCounter,
    events_sent: IntCounter,
    egress_already_seen: IntCounter,
    flows_restarted: IntCounter,
    tunnel_payloads: IntCounter,
    flows_evicted: IntCounter,
    evict_ring_full: IntCounter,
    read_errors: IntCounter,
    descs: Vec<Desc>,
}

impl KernelHealth {
    fn new(source: Arc<dyn HealthSource>) -> Result<KernelHealth, prometheus::Error> {
        let packets = IntCounterVec::new(
            Opts::new(
                "sensor_kernel_packets_total",
                "Packets seen by the kernel programs, and tunnel payloads found in them, by outcome: accounted into a flow, or why not.",
            ),
            &["outcome"],
        )?;
        let tunnel_payloads = IntCounter::new(
            "sensor_kernel_tunnel_payloads_total",
            "Tunnel payloads found in packets (each also counted by its outcome in sensor_kernel_packets_total).",
        )?;
        let bytes = IntCounter::new(
            "sensor_kernel_bytes_total",
            "Frame bytes seen by the kernel programs.",
        )?;
        let ringbuf_drops = IntCounter::new(
            "sensor_kernel_ringbuf_drops_total",
            "Finished-connection events the ring buffer had no room for (the idle scan still finalises those connections).",
        )?;
        let flows_created = IntCounter::new(
            "sensor_kernel_flows_created_total",
            "Flows created in the kernel flow table.",
        )?;
        let events_sent = IntCounter::new(
            "sensor_kernel_events_sent_total",
            "Connection events (begun, answered, finished, evicted) sent by the kernel.",
        )?;
        let egress_already_seen = IntCounter::new(
            "sensor_kernel_egress_already_seen_total",
            "Forwarded packets skipped on egress because XDP accounted them on a watched ingress.",
        )?;
        let flows_restarted = IntCounter::new(
            "sensor_kernel_flows_restarted_total",
            "Flows restarted in place by a new SYN on a 5-tuple whose connection had ended.",
        )?;
        let flows_evicted = IntCounter::new(
            "sensor_kernel_flows_evicted_total",
            "Unanswered attempts evicted from the full flow table to make room for new flows, each handed over as a finished record (end_reason evicted).",
        )?;
        let evict_ring_full = IntCounter::new(
            "sensor_kernel_evict_ring_full_total",
            "New flows not stored although the full table held an evictable attempt, because the ring buffer had no room for its record (also counted as outcome table_full).",
        )?;
        let read_errors = IntCounter::new(
            "sensor_kernel_health_read_errors_total",
            "Scrapes at which the kernel health counters could not be read.",
        )?;
        let mut descs = Vec::new();
        for c in [
            &bytes,
            &ringbuf_drops,
            &flows_created,
            &events_sent,
            &egress_already_seen,
            &flows_restarted,
            &tunnel_payloads,
            &flows_evicted,
            &evict_ring_full,
            &read_errors,
        ] {
            descs.extend(c.desc().into_iter().cloned());
        }
        descs.extend(packets.desc().into_iter().cloned());
        Ok(KernelHealth {
            source,
            packets,
            bytes,
            ringbuf_drops,
            flows_created,
            events_sent,
            egress_already_seen,
            flows_restarted,
            tunnel_payloads,
            flows_evicted,
            evict_ring_full,
            read_errors,
            descs,
        })
    }
}

impl Collector for KernelHealth {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Kernel counters only grow, so the difference since the last scrape is added.
        let up = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        match self.source.read() {
            Some(h) => {
                for (outcome, v) in [
                    ("accounted", h.accounted),
                    ("non_ip", h.non_ip),
                    ("truncated", h.truncated),
                    ("parse_error", h.parse_errors),
                    ("unsupported_l4", h.unsupported_l4),
                    ("unattributed_fragment", h.unattributed_fragments),
                    ("table_full", h.table_full),
                    ("too_deep", h.too_deep),
                ] {
                    up(&self.packets.with_label_values(&[outcome]), v);
                }
                up(&self.bytes, h.bytes);
                up(&self.ringbuf_drops, h.ringbuf_drops);
                up(&self.flows_created, h.flows_created);
                up(&self.events_sent, h.events_sent);
                up(&self.egress_already_seen, h.egress_already_seen);
                up(&self.flows_restarted, h.flows_restarted);
                up(&self.tunnel_payloads, h.tunnel_payloads);
                up(&self.flows_evicted, h.flows_evicted);
                up(&self.evict_ring_full, h.evict_ring_full);
            }
            None => self.read_errors.inc(),
        }
        let mut out = Vec::new();
        for c in [
            &self.bytes,
            &self.ringbuf_drops,
            &self.flows_created,
            &self.events_sent,
            &self.egress_already_seen,
            &self.flows_restarted,
            &self.tunnel_payloads,
            &self.flows_evicted,
            &self.evict_ring_full,
            &self.read_errors,
        ] {
            out.extend(c.collect());
        }
        out.extend(self.packets.collect());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_common::Health;

    struct Fixed(Health);
    impl HealthSource for Fixed {
        fn read(&self) -> Option<Health> {
            Some(self.0)
        }
    }

    #[test]
    fn kernel_counters_are_read_at_scrape_time_and_connections_counted() {
        let h = Health {
            packets: 10,
            accounted: 7,
            non_ip: 2,
            table_full: 1,
            bytes: 900,
            tunnel_payloads: 3,
            too_deep: 3,
            ..Health::default()
        };
        let m = Metrics::new(Arc::new(Fixed(h)), 1024).unwrap();
        let rec: ConnectionRecord = serde_json::from_str(
            r#"{"start_unix_ns":1,"end_unix_ns":2,"transport":"tcp","ip_version":4,"orig_addr":"198.18.0.1","orig_port":1,"resp_addr":"198.18.0.2","resp_port":80,"icmp_type":null,"icmp_code":null,"orig_packets":1,"resp_packets":1,"orig_bytes":0,"resp_bytes":0,"conn_state":"REJ","urgent_packets":0,"wrong_fragments":0,"land":false,"end_reason":"rst"}"#,
        )
        .unwrap();
        m.observe_connection(&rec);
        m.observe_connection(&rec);
        let text = m.render();
        assert!(
            text.contains("sensor_kernel_packets_total{outcome=\"accounted\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("sensor_kernel_packets_total{outcome=\"table_full\"} 1"),
            "{text}"
        );
        assert!(text.contains("sensor_kernel_bytes_total 900"), "{text}");
        assert!(
            text.contains("sensor_kernel_packets_total{outcome=\"too_deep\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("sensor_kernel_tunnel_payloads_total 3"),
            "{text}"
        );
        assert!(text.contains("sensor_flow_table_capacity 1024"), "{text}");
        assert!(
            text.contains(
                "sensor_connections_total{end_reason=\"rst\",flag=\"REJ\",protocol=\"tcp\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("sensor_model_reloads_total{result=\"error\"} 0"),
            "{text}"
        );
        // A second scrape does not double the kernel values.
        let again = m.render();
        assert!(again.contains("sensor_kernel_bytes_total 900"), "{again}");
    }
}
