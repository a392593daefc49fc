//! The alert stream as Suricata EVE JSON `alert` events: incidents and connection alerts, each
//! with the sensor's own line under `sensor`, so that nothing of it is lost. See
//! `docs/formats.md`.

use std::io::{self, Write};

use serde::Serialize;

use super::ScoredLine;
use crate::{
    ecosystem::{EveHead, flow_id, suricata_time, uid_of},
    incidents::{IncidentKind, IncidentLine},
};

/// Suricata's `alert` object. The sensor's signatures are gid 1 with ids from
/// [`SIGNATURE_ID_BASE`] (in the range Suricata leaves to local rules).
#[derive(Serialize)]
struct EveAlertInfo {
    action: &'static str,
    gid: u32,
    signature_id: u32,
    rev: u32,
    signature: String,
    category: &'static str,
    severity: u8,
}

/// First signature id of the sensor's alerts: 9,000,000-9,999,999 is the local range.
pub const SIGNATURE_ID_BASE: u32 = 9_100_000;

/// An EVE `alert` event, with the sensor's own line (incident or connection alert) under
/// `sensor` so that nothing of it is lost.
#[derive(Serialize)]
struct EveAlert<'a, T: Serialize> {
    #[serde(flatten)]
    head: EveHead,
    community_id: &'a str,
    alert: EveAlertInfo,
    sensor: &'a T,
}

/// Suricata's `proto` for a KDD protocol name (`tcp`, `udp`, `icmp`) and address family.
fn eve_proto(protocol: &str, v6: bool) -> &'static str {
    match protocol {
        "tcp" => "TCP",
        "udp" => "UDP",
        "icmp" if v6 => "IPv6-ICMP",
        "icmp" => "ICMP",
        "sctp" => "SCTP",
        _ => "IP",
    }
}

/// The IP protocol number of a KDD protocol name and address family.
fn ip_proto_of(protocol: &str, v6: bool) -> u8 {
    match protocol {
        "tcp" => 6,
        "udp" => 17,
        "icmp" if v6 => 58,
        "icmp" => 1,
        "sctp" => 132,
        _ => 0,
    }
}

/// An incident's state change as an EVE `alert` event: the example connection's 5-tuple and
/// Community ID (so that the alert joins the flow in Zeek and Suricata logs), signature
/// `SENSOR <kind> incident <state>`, one signature id per kind. `flow_id` is stable for the
/// incident (open, updates and close share it).
pub fn write_incident(w: &mut impl Write, line: &IncidentLine) -> io::Result<()> {
    let e = &line.example;
    let kind = line.kind;
    let index = IncidentKind::ALL
        .iter()
        .position(|&k| k == kind)
        .unwrap_or(0) as u32;
    let (category, severity) = match kind {
        IncidentKind::PortScan | IncidentKind::HostSweep => ("Attempted Information Leak", 2),
        IncidentKind::Flood | IncidentKind::UdpFlood | IncidentKind::IcmpFlood => {
            ("Attempted Denial of Service", 1)
        }
        IncidentKind::AnomalousSource => ("Potentially Bad Traffic", 2),
        // Suricata's `attempted-user` class, as its rules for password guessing use.
        IncidentKind::BruteForce => ("Attempted User Privilege Gain", 1),
        // Suricata's decoder events (`decode-event`) for packets no stack sends.
        IncidentKind::Malformed => ("Generic Protocol Command Decode", 2),
    };
    // The example's own transport: a source's reconnaissance may span several.
    let ports = e.protocol != "icmp";
    let event = EveAlert {
        head: EveHead {
            timestamp: suricata_time(line.last_unix_ns),
            flow_id: flow_id(&format!("incident {}", line.id)),
            event_type: "alert",
            src_ip: e.orig_addr,
            src_port: ports.then_some(e.orig_port),
            dest_ip: e.resp_addr,
            dest_port: ports.then_some(e.resp_port),
            proto: eve_proto(e.protocol, e.orig_addr.is_ipv6()).into(),
        },
        community_id: &e.community_id,
        alert: EveAlertInfo {
            action: "allowed",
            gid: 1,
            signature_id: SIGNATURE_ID_BASE + 1 + index,
            rev: 1,
            signature: format!("SENSOR {} incident {}", kind.as_str(), line.state.as_str()),
            category,
            severity,
        },
        sensor: line,
    };
    serde_json::to_writer(&mut *w, &event)?;
    w.write_all(b"\n")
}

/// One anomalous connection's alert as an EVE `alert` event; its `flow_id` is the one of the
/// connection's EVE `flow` event ([`crate::ecosystem::write_eve_row`]).
pub fn write_connection_alert(w: &mut impl Write, line: &ScoredLine) -> io::Result<()> {
    let v6 = line.orig_addr.is_ipv6();
    let ports = line.protocol != "icmp";
    let uid = uid_of(
        line.start_unix_ns,
        ip_proto_of(line.protocol, v6),
        (line.orig_addr, line.orig_port),
        (line.resp_addr, line.resp_port),
    );
    let event = EveAlert {
        head: EveHead {
            timestamp: suricata_time(line.end_unix_ns),
            flow_id: flow_id(&uid),
            event_type: "alert",
            src_ip: line.orig_addr,
            src_port: ports.then_some(line.orig_port),
            dest_ip: line.resp_addr,
            dest_port: ports.then_some(line.resp_port),
            proto: eve_proto(line.protocol, v6).into(),
        },
        community_id: &line.community_id,
        alert: EveAlertInfo {
            action: "allowed",
            gid: 1,
            signature_id: SIGNATURE_ID_BASE,
            rev: 1,
            signature: format!("SENSOR anomalous {} connection", line.service),
            category: "Potentially Bad Traffic",
            severity: 3,
        },
        sensor: line,
    };
    serde_json::to_writer(&mut *w, &event)?;
    w.write_all(b"\n")
}

/// Any other line of the alert stream (the rate limit's `suppressed` summary) as an EVE event
/// of the sensor's own type `sensor_<type>`, at `at_unix_ns`.
pub fn write_other<T: Serialize>(
    w: &mut impl Write,
    event_type: &str,
    at_unix_ns: u64,
    line: &T,
) -> io::Result<()> {
    let event = serde_json::json!({
        "timestamp": suricata_time(at_unix_ns),
        "event_type": format!("sensor_{event_type}"),
        "sensor": line,
    });
    serde_json::to_writer(&mut *w, &event)?;
    w.write_all(b"\n")
}
