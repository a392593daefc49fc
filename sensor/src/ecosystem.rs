//! Rows in the layouts other tools read: Zeek's `conn.log` (TSV with its `#` header lines) and
//! Suricata's EVE JSON `flow` events (connection records, in `sensor replay` and `sensor run`).
//! (The alert stream's EVE `alert` events are written by `alerts::eve`.) See `docs/formats.md`
//! and `docs/replay.md` for what each column holds and what differs from the real thing.

use std::{
    io::{self, Write},
    net::IpAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    community_id,
    detect::Scored,
    flows::{ConnectionRecord, EndReason, Transport},
    kdd::{SERVICE, SERVICES},
};
use sensor_common::conn_state::ConnState;

/// The `#fields` of the Zeek rows: Zeek's `conn.log` columns (with `ip_proto`, as Zeek 6 and
/// later write it), then the sensor's own `community_id`, `verdict` and `score`.
pub const ZEEK_FIELDS: [&str; 25] = [
    "ts",
    "uid",
    "id.orig_h",
    "id.orig_p",
    "id.resp_h",
    "id.resp_p",
    "proto",
    "service",
    "duration",
    "orig_bytes",
    "resp_bytes",
    "conn_state",
    "local_orig",
    "local_resp",
    "missed_bytes",
    "history",
    "orig_pkts",
    "orig_ip_bytes",
    "resp_pkts",
    "resp_ip_bytes",
    "tunnel_parents",
    "ip_proto",
    "community_id",
    "verdict",
    "score",
];

/// The `#types` of [`ZEEK_FIELDS`].
pub const ZEEK_TYPES: [&str; 25] = [
    "time",
    "string",
    "addr",
    "port",
    "addr",
    "port",
    "enum",
    "string",
    "interval",
    "count",
    "count",
    "string",
    "bool",
    "bool",
    "count",
    "string",
    "count",
    "count",
    "count",
    "count",
    "set[string]",
    "count",
    "string",
    "string",
    "double",
];

/// Zeek's unset field.
const UNSET: &str = "-";

/// A time as Zeek's log headers write it: `2026-12-03-02-08-33` (UTC).
fn zeek_header_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .trim_end_matches('Z')
        .replace(['T', ':'], "-")
}

/// Zeek's `#` header lines for a `conn` log opened at `open`.
pub fn write_zeek_header(w: &mut impl Write, open: SystemTime) -> io::Result<()> {
    writeln!(w, "#separator \\x09")?;
    writeln!(w, "#set_separator\t,")?;
    writeln!(w, "#empty_field\t(empty)")?;
    writeln!(w, "#unset_field\t{UNSET}")?;
    writeln!(w, "#path\tconn")?;
    writeln!(w, "#open\t{}", zeek_header_time(open))?;
    writeln!(w, "#fields\t{}", ZEEK_FIELDS.join("\t"))?;
    writeln!(w, "#types\t{}", ZEEK_TYPES.join("\t"))
}

/// Zeek's `#close` line, for a log closed at `close`.
pub fn write_zeek_footer(w: &mut impl Write, close: SystemTime) -> io::Result<()> {
    writeln!(w, "#close\t{}", zeek_header_time(close))
}

/// Unix nanoseconds as Zeek's `time` (seconds with 6 decimals).
fn zeek_time(ns: u64) -> String {
    format!("{}.{:06}", ns / 1_000_000_000, ns % 1_000_000_000 / 1_000)
}

/// A Zeek-style connection uid: `C` and the base62 digits of a 96-bit hash of the 5-tuple and
/// the start time. The same connection gets the same uid on every run.
pub fn uid(rec: &ConnectionRecord) -> String {
    uid_of(
        rec.start_unix_ns,
        community_id::ip_proto(rec),
        (rec.orig_addr, rec.orig_port),
        (rec.resp_addr, rec.resp_port),
    )
}

/// [`uid`] from its parts: start, IP protocol, originator and responder.
pub(crate) fn uid_of(
    start_unix_ns: u64,
    ip_proto: u8,
    orig: (IpAddr, u16),
    resp: (IpAddr, u16),
) -> String {
    let mut h = Sha256::new();
    h.update(start_unix_ns.to_be_bytes());
    h.update([ip_proto]);
    for a in [orig.0, resp.0] {
        match a {
            IpAddr::V4(a) => h.update(a.octets()),
            IpAddr::V6(a) => h.update(a.octets()),
        }
    }
    h.update(orig.1.to_be_bytes());
    h.update(resp.1.to_be_bytes());
    let d = h.finalize();
    let mut n = d[..12].iter().fold(0u128, |n, &b| (n << 8) | u128::from(b));
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 62) as usize]);
        n /= 62;
        if n == 0 {
            break;
        }
    }
    out.push(b'C');
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// The KDD service of a connection (the port-based guess of the feature engine).
fn kdd_service(s: &Scored) -> &'static str {
    SERVICES
        .get(s.features.0[SERVICE] as usize)
        .copied()
        .unwrap_or("other")
}

/// The service name Zeek logs for a KDD service, where Zeek has an analyzer of that name.
/// Note that the KDD service is a guess from the port, where Zeek's is what its analyzers
/// recognised in the payload.
pub fn zeek_service(kdd: &str) -> Option<&'static str> {
    Some(match kdd {
        "http" | "http_2784" | "http_8001" => "http",
        "http_443" => "ssl",
        "domain" | "domain_u" => "dns",
        "ftp" => "ftp",
        "ftp_data" => "ftp-data",
        "ssh" => "ssh",
        "smtp" => "smtp",
        "pop_3" => "pop3",
        "imap4" => "imap",
        "IRC" => "irc",
        "ntp_u" => "ntp",
        "ldap" => "ldap",
        _ => return None,
    })
}

/// The `app_proto` Suricata logs for a KDD service, where Suricata has a parser of that name.
pub fn suricata_app_proto(kdd: &str) -> Option<&'static str> {
    Some(match kdd {
        "http" | "http_2784" | "http_8001" => "http",
        "http_443" => "tls",
        "domain" | "domain_u" => "dns",
        "ftp" => "ftp",
        "ftp_data" => "ftp-data",
        "ssh" => "ssh",
        "smtp" => "smtp",
        "imap4" => "imap",
        "ntp_u" => "ntp",
        "tftp_u" => "tftp",
        _ => return None,
    })
}

/// One connection as a `conn.log` row (tab-separated, [`ZEEK_FIELDS`] in order), oriented as
/// Zeek orients it ([`orientation::zeek_view`]: a connection whose first packet was not a SYN
/// may have its sides swapped, with `^` in its history); the uid is the record's own.
///
/// As Zeek does, `duration`, `orig_bytes` and `resp_bytes` are unset when the connection's
/// packets all came at one instant. Unknown to the sensor, and unset: `local_orig`,
/// `local_resp`, `missed_bytes`, the IP-level byte counts and `tunnel_parents`; `history` is
/// the set of letters seen (not Zeek's sequence; for UDP `D`/`d`, a datagram from either side)
/// and unset for other protocols.
pub fn write_zeek_row(
    w: &mut impl Write,
    record: &ConnectionRecord,
    s: &Scored,
    seed: u16,
) -> io::Result<()> {
    let (rec, how) = orientation::zeek_view(record);
    let (orig_p, resp_p) = community_id::flow_ports(&rec)
        .map(|(o, r, _)| (o, r))
        .unwrap_or((0, 0));
    let timed = rec.end_unix_ns > rec.start_unix_ns;
    let opt = |x: u64| if timed { x.to_string() } else { UNSET.into() };
    let duration = if timed {
        let d = rec.end_unix_ns - rec.start_unix_ns;
        format!("{}.{:06}", d / 1_000_000_000, d % 1_000_000_000 / 1_000)
    } else {
        UNSET.into()
    };
    let history = orientation::zeek_history(&rec, how).unwrap_or_else(|| UNSET.into());
    let fields: [String; 25] = [
        zeek_time(rec.start_unix_ns),
        uid(record),
        rec.orig_addr.to_string(),
        orig_p.to_string(),
        rec.resp_addr.to_string(),
        resp_p.to_string(),
        rec.transport.as_str().into(),
        zeek_service(kdd_service(s)).unwrap_or(UNSET).into(),
        duration,
        opt(rec.orig_bytes),
        opt(rec.resp_bytes),
        rec.conn_state.as_str().into(),
        UNSET.into(),
        UNSET.into(),
        UNSET.into(),
        history,
        rec.orig_packets.to_string(),
        UNSET.into(),
        rec.resp_packets.to_string(),
        UNSET.into(),
        UNSET.into(),
        community_id::ip_proto(&rec).to_string(),
        community_id::of_record(&rec, seed),
        s.verdict.label().into(),
        s.verdict.score.to_string(),
    ];
    writeln!(w, "{}", fields.join("\t"))
}

/// Unix nanoseconds as Suricata's timestamps: `2020-10-14T20:29:23.476578+0000`.
pub fn suricata_time(ns: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(ns / 1_000);
    let text = humantime::format_rfc3339_micros(t).to_string();
    format!("{}+0000", text.trim_end_matches('Z'))
}

/// Suricata's `proto` name of a record's protocol.
fn suricata_proto(rec: &ConnectionRecord) -> String {
    match (rec.transport, rec.ip_version) {
        (Transport::Tcp, _) => "TCP".into(),
        (Transport::Udp, _) => "UDP".into(),
        (Transport::Icmp, 6) => "IPv6-ICMP".into(),
        (Transport::Icmp, _) => "ICMP".into(),
        (Transport::Sctp, _) => "SCTP".into(),
        (Transport::Unknown, _) => match rec.ip_proto {
            2 => "IGMP".into(),
            4 => "IPIP".into(),
            41 => "IPv6".into(),
            47 => "GRE".into(),
            50 => "ESP".into(),
            51 => "AH".into(),
            89 => "OSPF".into(),
            103 => "PIM".into(),
            112 => "VRRP".into(),
            p => p.to_string(),
        },
    }
}

#[derive(Serialize)]
struct EveFlow {
    pkts_toserver: u64,
    pkts_toclient: u64,
    bytes_toserver: u64,
    bytes_toclient: u64,
    start: String,
    end: String,
    age: u64,
    state: &'static str,
    reason: &'static str,
    alerted: bool,
}

#[derive(Serialize)]
struct EveAnomaly {
    verdict: &'static str,
    score: f64,
    detector: crate::model::Detector,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_scored: Option<crate::detect::NotScored>,
}

/// The fields every EVE event of a flow begins with.
#[derive(Serialize)]
pub(crate) struct EveHead {
    pub(crate) timestamp: String,
    pub(crate) flow_id: u64,
    pub(crate) event_type: &'static str,
    pub(crate) src_ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) src_port: Option<u16>,
    pub(crate) dest_ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dest_port: Option<u16>,
    pub(crate) proto: String,
}

#[derive(Serialize)]
struct EveEvent {
    #[serde(flatten)]
    head: EveHead,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    icmp_code: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    app_proto: Option<&'static str>,
    flow: EveFlow,
    community_id: String,
    /// The sensor's verdict: not a Suricata field.
    anomaly: EveAnomaly,
}

/// Suricata's flow `state`: `new` (no answer), `established`, or `closed` (ended by FIN or
/// RST).
fn eve_state(rec: &ConnectionRecord) -> &'static str {
    match rec.conn_state {
        ConnState::SF
        | ConnState::REJ
        | ConnState::RSTO
        | ConnState::RSTR
        | ConnState::RSTOS0
        | ConnState::RSTRH
        | ConnState::S2
        | ConnState::S3
            if rec.transport == Transport::Tcp =>
        {
            "closed"
        }
        _ if rec.resp_packets > 0 => "established",
        _ => "new",
    }
}

/// Suricata's flow `reason`: `timeout`, `forced` (taken out of a full table) or `shutdown`.
fn eve_reason(rec: &ConnectionRecord) -> &'static str {
    match rec.end_reason {
        EndReason::Fin | EndReason::Rst | EndReason::Idle => "timeout",
        EndReason::Evicted => "forced",
        EndReason::Shutdown | EndReason::Ongoing => "shutdown",
    }
}

/// An EVE `flow_id` for a connection uid (or another stable name): Suricata's flow ids are
/// positive 51-bit numbers (they must survive JSON doubles).
pub(crate) fn flow_id(name: &str) -> u64 {
    let hash = Sha256::digest(name.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(id) & ((1 << 51) - 1)
}

/// One connection as an EVE `flow` event (one JSON line). `timestamp` is the moment the
/// connection became final (when Suricata would log it); byte counts are transport payload
/// bytes (Suricata counts whole packets).
pub fn write_eve_row(
    w: &mut impl Write,
    rec: &ConnectionRecord,
    s: &Scored,
    seed: u16,
) -> io::Result<()> {
    let icmp = rec.transport == Transport::Icmp;
    let ports = rec.transport != Transport::Unknown && !icmp;
    let kdd = kdd_service(s);
    let event = EveEvent {
        head: EveHead {
            timestamp: suricata_time(rec.final_unix_ns.max(rec.end_unix_ns)),
            flow_id: flow_id(&uid(rec)),
            event_type: "flow",
            src_ip: rec.orig_addr,
            src_port: ports.then_some(rec.orig_port),
            dest_ip: rec.resp_addr,
            dest_port: ports.then_some(rec.resp_port),
            proto: suricata_proto(rec),
        },
        icmp_type: rec.icmp_type.filter(|_| icmp),
        icmp_code: rec.icmp_code.filter(|_| icmp),
        app_proto: suricata_app_proto(kdd),
        flow: EveFlow {
            pkts_toserver: rec.orig_packets,
            pkts_toclient: rec.resp_packets,
            bytes_toserver: rec.orig_bytes,
            bytes_toclient: rec.resp_bytes,
            start: suricata_time(rec.start_unix_ns),
            end: suricata_time(rec.end_unix_ns),
            age: (rec.end_unix_ns.saturating_sub(rec.start_unix_ns)) / 1_000_000_000,
            state: eve_state(rec),
            reason: eve_reason(rec),
            alerted: false,
        },
        community_id: community_id::of_record(rec, seed),
        anomaly: EveAnomaly {
            verdict: s.verdict.label(),
            score: s.verdict.score,
            detector: s.verdict.detector,
            not_scored: s.not_scored,
        },
    };
    serde_json::to_writer(&mut *w, &event)?;
    w.write_all(b"\n")
}

pub mod orientation;

#[cfg(test)]
mod tests;
