//! The kernel's health counters, read from the map at scrape time.

use std::sync::Arc;

use prometheus::{
    IntCounter, IntCounterVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use super::raise_to;
use crate::capture::HealthSource;

/// The kernel health counters as Prometheus counters, read from the map at each scrape.
pub(super) struct KernelHealth {
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
    restarts_parked: IntCounter,
    restarts_lost: IntCounter,
    nat_translations: IntCounter,
    nat_answers: IntCounter,
    read_errors: IntCounter,
    descs: Vec<Desc>,
}

impl KernelHealth {
    pub(super) fn new(source: Arc<dyn HealthSource>) -> Result<KernelHealth, prometheus::Error> {
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
            "Flows evicted from the full flow table to make room for new flows: attempts (flows whose responder sent nothing, TCP handshakes whose originator never acknowledged) and UDP or ICMP flows, each handed over as a finished record (end_reason evicted), and finished TCP connections whose entry lingered after their record.",
        )?;
        let evict_ring_full = IntCounter::new(
            "sensor_kernel_evict_ring_full_total",
            "New flows not stored although the full table held an evictable flow, because the ring buffer had no room for its record (also counted as outcome table_full).",
        )?;
        let restarts_parked = IntCounter::new(
            "sensor_kernel_restarts_parked_total",
            "Connections whose 5-tuple a new SYN reused while the ring buffer was full: parked in a map for the agent's table scan instead of lost.",
        )?;
        let restarts_lost = IntCounter::new(
            "sensor_kernel_restarts_lost_total",
            "Connections lost when a new SYN reused their 5-tuple while both the ring buffer and the parking map were full (also counted in sensor_kernel_ringbuf_drops_total).",
        )?;
        let nat_translations = IntCounter::new(
            "sensor_kernel_nat_translations_total",
            "Address translations learned: a connection's first packet, forwarded from a watched interface, left with other addresses or ports than it entered with (a NAT gateway). Its answers are then accounted under the original connection.",
        )?;
        let nat_answers = IntCounter::new(
            "sensor_kernel_nat_answers_total",
            "Packets that entered with a translated connection's outside addresses and were accounted as answers of the original connection (also counted as outcome accounted).",
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
            &restarts_parked,
            &restarts_lost,
            &nat_translations,
            &nat_answers,
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
            restarts_parked,
            restarts_lost,
            nat_translations,
            nat_answers,
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
                    raise_to(&self.packets.with_label_values(&[outcome]), v);
                }
                raise_to(&self.bytes, h.bytes);
                raise_to(&self.ringbuf_drops, h.ringbuf_drops);
                raise_to(&self.flows_created, h.flows_created);
                raise_to(&self.events_sent, h.events_sent);
                raise_to(&self.egress_already_seen, h.egress_already_seen);
                raise_to(&self.flows_restarted, h.flows_restarted);
                raise_to(&self.tunnel_payloads, h.tunnel_payloads);
                raise_to(&self.flows_evicted, h.flows_evicted);
                raise_to(&self.evict_ring_full, h.evict_ring_full);
                raise_to(&self.restarts_parked, h.restarts_parked);
                raise_to(&self.restarts_lost, h.restarts_lost);
                raise_to(&self.nat_translations, h.nat_translations);
                raise_to(&self.nat_answers, h.nat_answers);
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
            &self.restarts_parked,
            &self.restarts_lost,
            &self.nat_translations,
            &self.nat_answers,
            &self.read_errors,
        ] {
            out.extend(c.collect());
        }
        out.extend(self.packets.collect());
        out
    }
}
