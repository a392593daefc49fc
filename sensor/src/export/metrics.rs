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
    IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    core::{Collector, Desc},
    proto::MetricFamily,
};
use sensor_common::Health;

use crate::flows::{ConnectionRecord, EndReason, Transport};

/// Errors while building the registry (a programming error: a duplicate or invalid metric).
#[derive(Debug, thiserror::Error)]
#[error("registering metric {name}")]
pub struct MetricsError {
    name: &'static str,
    #[source]
    source: prometheus::Error,
}

/// Reads the kernel health counters (summed over CPUs), at scrape time.
pub trait HealthSource: Send + Sync {
    fn read(&self) -> Option<Health>;
}

/// Every metric of the sensor, registered once.
pub struct Metrics {
    pub registry: Registry,
    connections: IntCounterVec,
    /// Flow-table entries seen by the last full scan (set by the capture loop).
    pub table_entries: Arc<AtomicU64>,
    capture_events: IntCounter,
    capture_duplicate_events: IntCounter,
    capture_finished_by_sweep: IntCounter,
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
    /// Builds the registry. `health` is read at every scrape; `table_capacity` is the flow
    /// table's configured size.
    pub fn new(
        health: Arc<dyn HealthSource>,
        table_capacity: u32,
    ) -> Result<Metrics, MetricsError> {
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
        capacity.set(i64::from(table_capacity));
        reg(&registry, "sensor_flow_table_capacity", capacity)?;

        let table_entries = Arc::new(AtomicU64::new(0));
        let entries = Arc::clone(&table_entries);
        let occupancy = prometheus::PullingGauge::new(
            "sensor_flow_table_entries",
            "Connections in the kernel flow table at the last idle scan.",
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
        let capture_finished_by_sweep = counter(
            "sensor_capture_finished_by_sweep_total",
            "Finished TCP connections found by the idle scan before any event (dropped event or race).",
        )?;
        Ok(Metrics {
            registry,
            connections,
            table_entries,
            capture_events,
            capture_duplicate_events,
            capture_finished_by_sweep,
        })
    }

    /// Counts a finished connection.
    pub fn observe_connection(&self, rec: &ConnectionRecord) {
        let protocol = match rec.transport {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Icmp => "icmp",
        };
        let end = match rec.end_reason {
            EndReason::Fin => "fin",
            EndReason::Rst => "rst",
            EndReason::Idle => "idle",
            EndReason::Shutdown => "shutdown",
        };
        self.connections
            .with_label_values(&[protocol, rec.conn_state.as_str(), end])
            .inc();
    }

    /// Brings the capture-stage counters up to `stats` (cumulative values).
    pub fn set_capture_stats(&self, stats: &crate::capture::CaptureStats) {
        let up = |c: &IntCounter, v: u64| c.inc_by(v.saturating_sub(c.get()));
        up(&self.capture_events, stats.events);
        up(&self.capture_duplicate_events, stats.duplicate_events);
        up(&self.capture_finished_by_sweep, stats.finished_by_sweep);
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
    read_errors: IntCounter,
    descs: Vec<Desc>,
}

impl KernelHealth {
    fn new(source: Arc<dyn HealthSource>) -> Result<KernelHealth, prometheus::Error> {
        let packets = IntCounterVec::new(
            Opts::new(
                "sensor_kernel_packets_total",
                "Packets seen by the kernel programs, by outcome: accounted into a flow, or why not.",
            ),
            &["outcome"],
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
            "Finished-connection events sent by the kernel.",
        )?;
        let egress_already_seen = IntCounter::new(
            "sensor_kernel_egress_already_seen_total",
            "Forwarded packets skipped on egress because XDP accounted them on a watched ingress.",
        )?;
        let flows_restarted = IntCounter::new(
            "sensor_kernel_flows_restarted_total",
            "Flows restarted in place by a new SYN on a 5-tuple whose connection had ended.",
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
                ] {
                    up(&self.packets.with_label_values(&[outcome]), v);
                }
                up(&self.bytes, h.bytes);
                up(&self.ringbuf_drops, h.ringbuf_drops);
                up(&self.flows_created, h.flows_created);
                up(&self.events_sent, h.events_sent);
                up(&self.egress_already_seen, h.egress_already_seen);
                up(&self.flows_restarted, h.flows_restarted);
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
        assert!(text.contains("sensor_flow_table_capacity 1024"), "{text}");
        assert!(
            text.contains(
                "sensor_connections_total{end_reason=\"rst\",flag=\"REJ\",protocol=\"tcp\"} 2"
            ),
            "{text}"
        );
        // A second scrape does not double the kernel values.
        let again = m.render();
        assert!(again.contains("sensor_kernel_bytes_total 900"), "{again}");
    }
}
