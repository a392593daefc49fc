//! Building the registry: every metric's name, help and labels.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use sensor_common::conn_state::ConnState;

use super::{
    Children, DETECTORS, Detection, END_REASONS, Metrics, MetricsError, kernel::KernelHealth, reg,
};
use crate::{capture::HealthSource, detect::NotScored, flows::Transport, kdd::SERVICES};

impl Metrics {
    /// Builds the registry. `health` is read at every scrape; `table_size` is the flow
    /// table's configured size.
    pub fn new(health: Arc<dyn HealthSource>, table_size: u32) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let e = |name| move |source| MetricsError { name, source };

        register_build_info(&registry)?;

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

        let table_entries = register_flow_table(&registry, table_size)?;

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
            "Finished TCP connections whose finish event had not come (dropped, late, or a race of two CPUs), finalised by an idle check, the table scan or their eviction from a full table.",
        )?;
        let capture_finished_at_final_ack = counter(
            "sensor_capture_finished_at_final_ack_total",
            "FIN-closed TCP connections whose second FIN signalled nothing (two CPUs took the last FINs at once, or its event was late or lost), finalised at the first packet after both FINs.",
        )?;
        let capture_adopted_by_scan = counter(
            "sensor_capture_adopted_by_scan_total",
            "Connections whose begin event was lost (full ring buffer), found by the table scan; their window features are approximate.",
        )?;
        let capture_lost_on_restart = counter(
            "sensor_capture_lost_on_restart_total",
            "Connections whose entry a new connection on the same 5-tuple took over before their end was reported, whose finish and replaced events were both lost (not parked either): records lost.",
        )?;
        let capture_finished_on_restart = counter(
            "sensor_capture_finished_on_restart_total",
            "Connections finalised from the kernel's replaced event when a SYN reused their 5-tuple, because their finish event was lost (or they were only half closed).",
        )?;
        let capture_trailing_folded = counter(
            "sensor_capture_trailing_folded_total",
            "Flows of trailing packets (no SYN either way) on the 5-tuple of a finished connection that a full flow table evicted while it lingered: folded into that connection, whose record was out, instead of recorded as connections of their own.",
        )?;
        let capture_taken_from_park = counter(
            "sensor_capture_taken_from_park_total",
            "Connections the kernel parked when a SYN reused their 5-tuple while the ring buffer was full, taken out by the table scan and finalised then.",
        )?;
        let nat_split_connections = counter(
            "sensor_nat_split_connections_total",
            "TCP connections of this host's own address that the remote side answered while nothing sent from the address was seen: connections the host forwarded between watched interfaces and translated (NAT) where the kernel did not follow the translation, each split into two halves the model misjudges. Watch the inside interfaces only if it grows.",
        )?;
        let nat_filter_rebuilds = counter(
            "sensor_nat_filter_rebuilds_total",
            "Rebuilds of the kernel's filter of translated connections' answers: its half in use had more than an eighth of its bits set (answers to ever new outside clients, as port forwards get), so it was rebuilt from the translations the kernel still holds.",
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
            capture_finished_at_final_ack,
            capture_adopted_by_scan,
            capture_lost_on_restart,
            capture_finished_on_restart,
            capture_taken_from_park,
            capture_trailing_folded,
            nat_split_connections,
            nat_filter_rebuilds,
            detection,
        })
    }
}

/// `sensor_build_info`: the running sensor's version.
fn register_build_info(registry: &Registry) -> Result<(), MetricsError> {
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
    reg(registry, "sensor_build_info", build)?;
    Ok(())
}

/// The flow table's capacity (`table_size`) and occupancy gauges; returns the occupancy the
/// capture loop sets.
fn register_flow_table(
    registry: &Registry,
    table_size: u32,
) -> Result<Arc<AtomicU64>, MetricsError> {
    let e = |name| move |source| MetricsError { name, source };
    let capacity = IntGauge::new(
        "sensor_flow_table_capacity",
        "Capacity of the kernel flow table, in connections.",
    )
    .map_err(e("sensor_flow_table_capacity"))?;
    capacity.set(i64::from(table_size));
    reg(registry, "sensor_flow_table_capacity", capacity)?;

    let table_entries = Arc::new(AtomicU64::new(0));
    let entries = Arc::clone(&table_entries);
    let occupancy = prometheus::PullingGauge::new(
        "sensor_flow_table_entries",
        "Connections in the kernel flow table as the last whole pass of the table scan counted them (at most about two scan intervals old; 0 before the first pass).",
        Box::new(move || entries.load(Ordering::Relaxed) as f64),
    )
    .map_err(e("sensor_flow_table_entries"))?;
    registry
        .register(Box::new(occupancy))
        .map_err(e("sensor_flow_table_entries"))?;
    Ok(table_entries)
}

/// Registers metric `$name`, made by `$make` (a `Result` of prometheus's), in `$registry`.
macro_rules! registered {
    ($registry:expr, $name:literal, $make:expr) => {
        reg(
            $registry,
            $name,
            $make.map_err(|source| MetricsError {
                name: $name,
                source,
            })?,
        )?
    };
}

impl Detection {
    fn new(registry: &Registry) -> Result<Detection, MetricsError> {
        let (not_scored, verdicts, score, latency) = verdict_metrics(registry)?;
        let alerts = registered!(
            registry,
            "sensor_alerts_total",
            IntCounter::new("sensor_alerts_total", "Alert lines written.")
        );
        let alerts_suppressed = registered!(
            registry,
            "sensor_alerts_suppressed_total",
            IntCounter::new(
                "sensor_alerts_suppressed_total",
                "Anomalous connections whose alert the rate limit held back (summarised in `suppressed` lines).",
            )
        );
        let withdrawn = registered!(
            registry,
            "sensor_verdicts_withdrawn_by_attack_boxes_total",
            IntCounter::new(
                "sensor_verdicts_withdrawn_by_attack_boxes_total",
                "Connections the forest alone would have flagged and the attack boxes' rule judged normal (outside every box of the attacks the forest learnt, where the normal profile finds them ordinary; docs/model.md). Their records carry withdrawn_by_attack_boxes.",
            )
        );
        let withdrawn_checks = registered!(
            registry,
            "sensor_verdicts_withdrawn_as_checks_total",
            IntCounter::new(
                "sensor_verdicts_withdrawn_as_checks_total",
                "Connections the model flagged whose verdict the routine-check rule withdrew: one source's same exchange with one service of a host, repeated at a schedule's steady pace (at least half a second apart by default) (a monitoring system's or a load balancer's checks), or one source's one-way UDP messages to one service from the fourth on (statsd, syslog, flow exports; docs/design.md). Their records carry routine_check.",
            )
        );
        let check_keys = registered!(
            registry,
            "sensor_check_exchanges",
            IntGauge::new(
                "sensor_check_exchanges",
                "Sources and services (source, host, transport, port) whose flagged exchanges the routine-check rule follows (at most 32,768; quiet for 15 minutes, forgotten).",
            )
        );
        let check_keys_untracked = registered!(
            registry,
            "sensor_check_exchanges_untracked_total",
            IntCounter::new(
                "sensor_check_exchanges_untracked_total",
                "Flagged exchanges the routine-check rule could not follow, its map being full of sources and services flagged in the last 15 minutes: their verdicts stay the model's.",
            )
        );
        let (model_info, model_threshold, model_reloads, config_reloads) = model_metrics(registry)?;
        let suppressed = registered!(
            registry,
            "sensor_suppressed_total",
            IntCounterVec::new(
                Opts::new(
                    "sensor_suppressed_total",
                    "Anomalous connections and incident lines silenced by an operator's suppression rule (still recorded and counted as verdicts).",
                ),
                &["rule", "what"],
            )
        );
        let model_loaded = registered!(
            registry,
            "sensor_model_loaded_timestamp_seconds",
            Gauge::new(
                "sensor_model_loaded_timestamp_seconds",
                "Unix time at which the running model was loaded.",
            )
        );
        let window_connections = registered!(
            registry,
            "sensor_feature_window_connections",
            IntGauge::new(
                "sensor_feature_window_connections",
                "Connections held in the 2-second feature window.",
            )
        );
        let window_evictions = registered!(
            registry,
            "sensor_feature_window_evictions_total",
            IntCounter::new(
                "sensor_feature_window_evictions_total",
                "Connections expired early from the 2-second window because of its size cap.",
            )
        );
        let window_resumed = registered!(
            registry,
            "sensor_feature_window_resumed_total",
            IntCounterVec::new(
                Opts::new(
                    "sensor_feature_window_resumed_total",
                    "UDP/ICMP connections that resumed a conversation its idle timeout ended (within 60 s): outcome resumed (held once in the feature windows) or forgotten (the memory of ended conversations was full, so it entered them as a new connection).",
                ),
                &["outcome"],
            )
        );
        let volume_targets = registered!(
            registry,
            "sensor_volume_targets",
            IntGauge::new(
                "sensor_volume_targets",
                "UDP services of hosts (address and port) and hosts over all their UDP ports whose new conversations per second the volume rule follows, and TCP services whose failed attempts per second it follows (at most 65,536 of each), and their sources (at most 16,384).",
            )
        );
        let volume_targets_untracked = registered!(
            registry,
            "sensor_volume_targets_untracked_total",
            IntCounter::new(
                "sensor_volume_targets_untracked_total",
                "New UDP conversations, or failed TCP attempts, to a service or host the volume rule could not count: its map was full of ones active in the last four seconds (a wide scan), or the opening came more than four seconds late (a TCP attempt's record more than sixteen), so a flood of one-datagram conversations or of SYNs to it may not be flagged by its rate.",
            )
        );
        let volume_sources_untracked = registered!(
            registry,
            "sensor_volume_sources_untracked_total",
            IntCounter::new(
                "sensor_volume_sources_untracked_total",
                "Failed TCP attempts and new UDP conversations the volume rule could not count at their source (source, host, port): its map of 16,384 (one for TCP, one for UDP) was full of sources active in the last four seconds (a flood from spoofed sources, which its service's rate judges), or the record came too late (TCP: sixteen seconds); a flood from one such address is left to its service's rate and the model.",
            )
        );
        let login_sources = registered!(
            registry,
            "sensor_login_sources",
            IntGauge::new(
                "sensor_login_sources",
                "Sources and login services (source, host, port) whose short login sessions per minute the login rule follows, password guessing being its bar (at most 65,536).",
            )
        );
        let login_sources_untracked = registered!(
            registry,
            "sensor_login_sources_untracked_total",
            IntCounter::new(
                "sensor_login_sources_untracked_total",
                "Login sessions the login rule could not count, its map being full of sources active in the last minute: a guesser among them may not be flagged by its rate.",
            )
        );
        let held_sources = registered!(
            registry,
            "sensor_held_sources",
            IntGauge::new(
                "sensor_held_sources",
                "Sources and services (source, host, port) whose held requests per minute the held-request rule follows, a slow attack being its bar (at most 65,536).",
            )
        );
        let held_sources_untracked = registered!(
            registry,
            "sensor_held_sources_untracked_total",
            IntCounter::new(
                "sensor_held_sources_untracked_total",
                "Held requests the held-request rule could not count, its map being full of sources with one in the last minute: a slow attack among them may not be flagged.",
            )
        );
        let output_errors = registered!(
            registry,
            "sensor_output_errors_total",
            IntCounter::new(
                "sensor_output_errors_total",
                "Alert or record lines that could not be written.",
            )
        );
        let incidents = registered!(
            registry,
            "sensor_incidents_total",
            IntCounterVec::new(
                Opts::new(
                    "sensor_incidents_total",
                    "Incidents opened (anomalous connections grouped into one attack), by kind.",
                ),
                &["kind"],
            )
        );
        let incidents_open = registered!(
            registry,
            "sensor_incidents_open",
            IntGaugeVec::new(
                Opts::new("sensor_incidents_open", "Incidents open now, by kind."),
                &["kind"],
            )
        );
        let incident_candidates_dropped = registered!(
            registry,
            "sensor_incident_candidates_dropped_total",
            IntCounter::new(
                "sensor_incident_candidates_dropped_total",
                "Incident candidates (a source, target or service with anomalous connections in the last window, not yet an incident) dropped with their evidence, oldest first, because the tracker held 400,000: their connections are still in the verdict metrics and records, but an attack among them may open its incident late or not at all.",
            )
        );
        let incident_candidates_restarted = registered!(
            registry,
            "sensor_incident_candidates_restarted_total",
            IntCounter::new(
                "sensor_incident_candidates_restarted_total",
                "Incident candidates whose evidence reached the horizon without opening an incident and began counting again: steady anomalies at a rate under every bar.",
            )
        );
        let incident_exchanges_untracked = registered!(
            registry,
            "sensor_incident_exchanges_untracked_total",
            IntCounter::new(
                "sensor_incident_exchanges_untracked_total",
                "Ordinary exchanges (payload both ways) the incident tracker could not count for their source and service port, or for their source and the host's service, its maps holding 100,000 each seen in the last window: a client's failures then weigh more toward a host_sweep, and its flagged calls toward an anomalous_source, never less.",
            )
        );
        let incident_early_verdicts_forgotten = registered!(
            registry,
            "sensor_incident_early_verdicts_forgotten_total",
            IntCounter::new(
                "sensor_incident_early_verdicts_forgotten_total",
                "Anomalous early verdicts of connections still open that the incident tracker forgot having counted as evidence, its map of 400,000 being full (the older of its two generations goes): their final records count again, so an incident may count such a connection twice.",
            )
        );
        Ok(Detection {
            verdict_children: Children::new(
                2 * DETECTORS * Transport::ALL.len() * (SERVICES.len() + 1),
            ),
            latency_children: Children::new(4),
            not_scored_children: Children::new(NotScored::ALL.len()),
            not_scored,
            verdicts,
            score,
            latency,
            alerts,
            alerts_suppressed,
            withdrawn,
            withdrawn_checks,
            check_keys,
            check_keys_untracked,
            model_info,
            model_threshold,
            model_reloads,
            config_reloads,
            suppressed,
            model_loaded,
            window_connections,
            window_evictions,
            window_resumed,
            volume_targets,
            volume_targets_untracked,
            volume_sources_untracked,
            login_sources,
            login_sources_untracked,
            held_sources,
            held_sources_untracked,
            output_errors,
            incidents,
            incidents_open,
            incident_candidates_dropped,
            incident_candidates_restarted,
            incident_exchanges_untracked,
            incident_early_verdicts_forgotten,
        })
    }
}

/// The verdict metrics: connections not scored, verdicts, scores and detection latency.
fn verdict_metrics(
    registry: &Registry,
) -> Result<(IntCounterVec, IntCounterVec, Histogram, HistogramVec), MetricsError> {
    let not_scored = registered!(
        registry,
        "sensor_connections_not_scored_total",
        IntCounterVec::new(
            Opts::new(
                "sensor_connections_not_scored_total",
                "Connections the model does not judge (counted as normal verdicts too), by reason: group_destination (broadcast, multicast), link_control (IPv6 neighbour discovery and MLD), one_sided (one direction of a TCP connection seen), start_not_seen (picked up mid-stream with data), answers_only (only SYN-ACKs or RSTs answering a start not seen: backscatter), end_not_seen (established, its end not seen: still open when observation ended, or idle past its timeout), tunnel_carrier (a tunnel's outer connection), other_transport (SCTP and other IP protocols).",
            ),
            &["reason"],
        )
    );
    let verdicts = registered!(
        registry,
        "sensor_verdicts_total",
        IntCounterVec::new(
            Opts::new(
                "sensor_verdicts_total",
                "Scored connections by verdict, the detector that fired (none for normal), protocol and KDD service (70 names).",
            ),
            &["verdict", "detector", "protocol", "service"],
        )
    );
    let score = registered!(
        registry,
        "sensor_score",
        Histogram::with_opts(
            HistogramOpts::new(
                "sensor_score",
                "Combined anomaly score of scored connections: each detector's score over its threshold, the larger; >= 1 is anomalous.",
            )
            .buckets(vec![0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 5.0]),
        )
    );
    let latency = registered!(
        registry,
        "sensor_detection_latency_seconds",
        HistogramVec::new(
            HistogramOpts::new(
                "sensor_detection_latency_seconds",
                "Time from the moment a connection was final (its last packet for FIN/RST; last packet plus the idle timeout for idle ones, first packet plus the attempt timeout for an unanswered TCP attempt) to its verdict, by how it was finalised (event: FIN/RST signalled by the kernel; idle_timeout; shutdown).",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["finalised_by"],
        )
    );
    Ok((not_scored, verdicts, score, latency))
}

/// The model metrics: the running model, its thresholds, and model and configuration reloads.
fn model_metrics(
    registry: &Registry,
) -> Result<(IntGaugeVec, GaugeVec, IntCounterVec, IntCounterVec), MetricsError> {
    let model_info = registered!(
        registry,
        "sensor_model_info",
        IntGaugeVec::new(
            Opts::new(
                "sensor_model_info",
                "The running model (value is always 1): file, format version, feature set, training data hash prefix, normal-profile source.",
            ),
            &[
                "path",
                "format",
                "feature_set",
                "data_sha256",
                "normal_profile"
            ],
        )
    );
    let model_threshold = registered!(
        registry,
        "sensor_model_threshold",
        GaugeVec::new(
            Opts::new(
                "sensor_model_threshold",
                "Operating threshold of each detector (after any configured override).",
            ),
            &["detector"],
        )
    );
    let model_reloads = registered!(
        registry,
        "sensor_model_reloads_total",
        IntCounterVec::new(
            Opts::new(
                "sensor_model_reloads_total",
                "Model reloads on SIGHUP, by result; on error the running model is kept.",
            ),
            &["result"],
        )
    );
    let config_reloads = registered!(
        registry,
        "sensor_config_reloads_total",
        IntCounterVec::new(
            Opts::new(
                "sensor_config_reloads_total",
                "Reloads of the configuration file's suppression rules on SIGHUP, by result; on error the running rules are kept.",
            ),
            &["result"],
        )
    );
    Ok((model_info, model_threshold, model_reloads, config_reloads))
}
