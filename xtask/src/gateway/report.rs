//! What a run of the gateway lab showed: each scored connection's traffic kind (from the lab's
//! address plan), incidents attributed to kinds by the addresses they name, and the per-kind
//! table printed by the demo and the end-to-end test.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::{
    DNS_SERVER, FLOOD_SOURCE, FLOOD_TARGET, GUESS_SOURCE, GUESS_TARGET, HTTP_SERVER, Made, Outcome,
    PING_FLOOD_SOURCE, PING_FLOOD_TARGET, PING_SERVER, PORT_SCAN_SOURCE, PORT_SCAN_TARGET,
    SSH_SERVER, SWEEP_FIRST, SWEEP_LAST, SWEEP_SOURCE, UDP_RR_PORT, UDP_RR_SERVER, UDP_SCAN_SOURCE,
    UDP_SCAN_TARGET,
};

/// Normal kinds (should not be flagged) and attack kinds (should be).
pub const NORMAL_KINDS: [&str; 6] = ["http", "dns", "ssh", "udp-rr", "ping", "ipv6-local"];
pub const ATTACK_KINDS: [&str; 6] = [
    "ping-flood",
    "syn-flood",
    "port-scan",
    "udp-scan",
    "ping-sweep",
    "ssh-guessing",
];
/// ICMP errors the attacks provoke (port unreachable from the scanned host, host unreachable
/// from the gateway), sent to the attacker: neither normal traffic nor the attack's own probes.
pub const PROVOKED_KIND: &str = "icmp-errors";
/// Kinds whose generator says exactly how many connections it made.
pub const EXACT_KINDS: [&str; 11] = [
    "http",
    "dns",
    "ssh",
    "udp-rr",
    "ping",
    "ping-flood",
    "syn-flood",
    "port-scan",
    "udp-scan",
    "ping-sweep",
    "ssh-guessing",
];

/// Every kind, in table order.
pub fn all_kinds() -> impl Iterator<Item = &'static str> {
    NORMAL_KINDS
        .into_iter()
        .chain(ATTACK_KINDS)
        .chain([PROVOKED_KIND, "other"])
}

/// The attack an address belongs to (as the attacker's source or as the attack's target).
fn attack_of_address(a: IpAddr) -> Option<&'static str> {
    let s = a.to_string();
    match s.as_str() {
        FLOOD_SOURCE | FLOOD_TARGET => return Some("syn-flood"),
        PORT_SCAN_SOURCE | PORT_SCAN_TARGET => return Some("port-scan"),
        UDP_SCAN_SOURCE | UDP_SCAN_TARGET => return Some("udp-scan"),
        SWEEP_SOURCE => return Some("ping-sweep"),
        PING_FLOOD_SOURCE | PING_FLOOD_TARGET => return Some("ping-flood"),
        GUESS_SOURCE | GUESS_TARGET => return Some("ssh-guessing"),
        _ => {}
    }
    match a {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            ((a, b, c) == (198, 18, 2) && (SWEEP_FIRST..=SWEEP_LAST).contains(&d))
                .then_some("ping-sweep")
        }
        IpAddr::V6(_) => None,
    }
}

fn attack_source(kind: &str) -> Option<&'static str> {
    match kind {
        "syn-flood" => Some(FLOOD_SOURCE),
        "port-scan" => Some(PORT_SCAN_SOURCE),
        "udp-scan" => Some(UDP_SCAN_SOURCE),
        "ping-sweep" => Some(SWEEP_SOURCE),
        "ping-flood" => Some(PING_FLOOD_SOURCE),
        "ssh-guessing" => Some(GUESS_SOURCE),
        _ => None,
    }
}

/// IPv6 traffic that never leaves the link: link-local unicast (fe80::/10), link-scope
/// multicast (ff02::/16), and the unspecified address (duplicate address detection, MLD
/// reports before an address is configured).
fn is_ipv6_link_local(a: IpAddr) -> bool {
    match a {
        IpAddr::V6(v6) => {
            let s0 = v6.segments()[0];
            v6.is_unspecified() || s0 & 0xffc0 == 0xfe80 || s0 == 0xff02
        }
        IpAddr::V4(_) => false,
    }
}

/// The normal service an address serves, if any.
fn service_of_address(a: IpAddr) -> Option<&'static str> {
    if is_ipv6_link_local(a) {
        return Some("ipv6-local");
    }
    match a.to_string().as_str() {
        HTTP_SERVER => Some("http"),
        DNS_SERVER => Some("dns"),
        PING_SERVER => Some("ping"),
        SSH_SERVER => Some("ssh"),
        UDP_RR_SERVER => Some("udp-rr"),
        _ => None,
    }
}

/// The traffic kind of a scored connection (a `"type": "connection"` line), from its
/// addresses, protocol and port.
pub fn kind(c: &serde_json::Value) -> &'static str {
    let addr = |k: &str| c[k].as_str().and_then(|s| s.parse::<IpAddr>().ok());
    let (Some(orig), Some(resp)) = (addr("orig_addr"), addr("resp_addr")) else {
        return "other";
    };
    let protocol = c["protocol"].as_str().unwrap_or("");
    let is_attacker = |a: IpAddr| {
        ATTACK_KINDS
            .iter()
            .any(|k| attack_source(k) == Some(&a.to_string()))
    };
    if is_attacker(orig) {
        return attack_of_address(orig).unwrap_or("other");
    }
    if is_attacker(resp) {
        // An attack's probe seen from its answer first, or an ICMP error it provoked.
        return if protocol == "icmp" {
            PROVOKED_KIND
        } else {
            attack_of_address(resp).unwrap_or("other")
        };
    }
    if is_ipv6_link_local(orig) && is_ipv6_link_local(resp) {
        return "ipv6-local";
    }
    let port = c["resp_port"].as_u64().unwrap_or(0);
    let served = service_of_address(resp);
    match (protocol, served, port) {
        ("tcp", Some("http"), 80) => "http",
        ("tcp", Some("ssh"), 22) => "ssh",
        ("udp", Some("dns"), 53) => "dns",
        ("udp", Some("udp-rr"), p) if p == u64::from(UDP_RR_PORT) => "udp-rr",
        ("icmp", Some("ping"), _) => "ping",
        _ => "other",
    }
}

/// An incident of the alert stream (`"type": "incident"` lines sharing an `id`).
#[derive(Clone, Debug)]
pub struct Incident {
    pub id: String,
    /// The kinds its addresses (sources, targets) belong to; empty when it names none of the
    /// lab's services or attacks.
    pub kinds: BTreeSet<&'static str>,
    /// When it was opened, Unix ns: the `open` line's `time` (when it was written), else its
    /// `last_unix_ns`.
    pub opened_unix_ns: Option<u64>,
}

/// Every IP address named anywhere in a JSON value.
fn addresses(v: &serde_json::Value, out: &mut BTreeSet<IpAddr>) {
    match v {
        serde_json::Value::String(s) => {
            if let Ok(a) = s.parse() {
                out.insert(a);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| addresses(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| addresses(x, out)),
        _ => {}
    }
}

/// Parses RFC 3339 UTC times as the sensor writes them (`2026-05-20T12:34:56.789Z`).
pub fn parse_rfc3339_utc(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    let frac_ns = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        digits.parse::<u64>().ok()? * 10u64.pow(9 - digits.len() as u32)
    };
    u64::try_from(secs)
        .ok()
        .map(|s| s * 1_000_000_000 + frac_ns)
}

/// The incidents of an alert stream, attributed to kinds by their addresses.
pub fn incidents(alert_lines: &[serde_json::Value]) -> Vec<Incident> {
    let mut by_id: BTreeMap<String, Incident> = BTreeMap::new();
    for (i, line) in alert_lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l["type"] == "incident")
    {
        let id = match &line["id"] {
            serde_json::Value::Null => format!("line {i}"),
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let e = by_id.entry(id.clone()).or_insert_with(|| Incident {
            id,
            kinds: BTreeSet::new(),
            opened_unix_ns: None,
        });
        let mut addrs = BTreeSet::new();
        addresses(line, &mut addrs);
        for a in addrs {
            if let Some(k) = attack_of_address(a).or_else(|| service_of_address(a)) {
                e.kinds.insert(k);
            }
        }
        let opening = line["state"] == "open" || line["state"].is_null();
        if opening && e.opened_unix_ns.is_none() {
            e.opened_unix_ns = line["time"]
                .as_str()
                .and_then(parse_rfc3339_utc)
                .or_else(|| line["last_unix_ns"].as_u64());
        }
    }
    by_id.into_values().collect()
}

/// Per-kind figures of a run.
#[derive(Clone, Debug, Default)]
pub struct KindSummary {
    /// What the generator made (None: it cannot say).
    pub made: Option<Made>,
    /// Connections finalised by their own end (FIN, RST, idle timeout).
    pub connections: u64,
    pub flagged: u64,
    /// Of `flagged` (normal kinds only), those whose service an attack probed within 2 s of
    /// their start ([`COLLATERAL_WINDOW_NS`]).
    pub flagged_beside_attacks: u64,
    /// Connections finalised by the sensor's stop (the shutdown flush) instead of their own end.
    pub finalised_at_shutdown: u64,
    /// Incidents naming an address of this kind.
    pub incidents: u64,
    /// Seconds from the attack's start to its first incident's opening.
    pub first_incident_after_s: Option<f64>,
    /// Detection latency (ms) of `connections`.
    pub latencies_ms: Vec<f64>,
}

impl KindSummary {
    pub fn flagged_share(&self) -> f64 {
        self.flagged as f64 / self.connections.max(1) as f64
    }
}

/// How close in time (either way) an attack's connection to the same service makes a flagged
/// normal connection collateral. The KDD "same service" window features (`srv_count`,
/// `srv_rerror_rate`, `srv_diff_host_rate` ...) count every host's connections to that service
/// in the last 2 s, so a scan's refused probe of port 22 puts a concurrent SSH session in the
/// scan's company by the features' own definition.
pub const COLLATERAL_WINDOW_NS: u64 = 2_000_000_000;

/// Per-kind figures: connections and verdicts from the records, made from the generators,
/// incidents from the alert stream.
pub fn summarize(out: &Outcome) -> BTreeMap<&'static str, KindSummary> {
    let mut rows: BTreeMap<&'static str, KindSummary> =
        all_kinds().map(|k| (k, KindSummary::default())).collect();
    let attack_starts: Vec<(&str, u64)> = out
        .connections
        .iter()
        .filter(|r| ATTACK_KINDS.contains(&kind(r)))
        .filter_map(|r| Some((r["service"].as_str()?, r["start_unix_ns"].as_u64()?)))
        .collect();
    for c in &out.connections {
        let k = kind(c);
        let e = rows.entry(k).or_default();
        if c["end_reason"] == "shutdown" {
            e.finalised_at_shutdown += 1;
            continue;
        }
        e.connections += 1;
        if c["anomalous"].as_bool() == Some(true) {
            e.flagged += 1;
            let (service, start) = (c["service"].as_str(), c["start_unix_ns"].as_u64());
            let beside_attack = NORMAL_KINDS.contains(&k)
                && attack_starts.iter().any(|(s, t)| {
                    Some(*s) == service
                        && start.is_some_and(|st| st.abs_diff(*t) <= COLLATERAL_WINDOW_NS)
                });
            e.flagged_beside_attacks += u64::from(beside_attack);
        }
        if let Some(l) = c["latency_ms"].as_f64() {
            e.latencies_ms.push(l);
        }
    }
    for (k, m) in &out.generated {
        rows.entry(k).or_default().made = Some(*m);
    }
    for inc in incidents(&out.alert_lines) {
        let kinds: Vec<&'static str> = if inc.kinds.is_empty() {
            vec!["other"]
        } else {
            inc.kinds.iter().copied().collect()
        };
        for k in kinds {
            let e = rows.entry(k).or_default();
            e.incidents += 1;
            if let (Some(a), Some(at)) =
                (out.attacks.iter().find(|a| a.kind == k), inc.opened_unix_ns)
            {
                let after = (at as f64 - a.start_unix_ns as f64) / 1e9;
                if e.first_incident_after_s.is_none_or(|f| after < f) {
                    e.first_incident_after_s = Some(after);
                }
            }
        }
    }
    rows
}

/// The table printed by the demo and the end-to-end test.
pub fn table(out: &Outcome, rows: &BTreeMap<&'static str, KindSummary>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<11} {:>6} {:>11} {:>8} {:>8} {:>8} {:>9} {:>9} {:>12} {:>11} {:>11}",
        "traffic",
        "made",
        "connections",
        "flagged",
        "flagged%",
        "collat.",
        "incidents",
        "shutdown",
        "1st incident",
        "p50 latency",
        "p99 latency"
    );
    for k in all_kinds() {
        let Some(r) = rows.get(k) else { continue };
        if (k == PROVOKED_KIND || k == "other")
            && r.connections + r.finalised_at_shutdown + r.incidents == 0
        {
            continue;
        }
        let made = r.made.map_or("-".into(), |m| m.connections.to_string());
        let first = r
            .first_incident_after_s
            .map_or("-".into(), |f| format!("+{f:.1} s"));
        let _ = writeln!(
            s,
            "{:<11} {:>6} {:>11} {:>8} {:>7.1}% {:>8} {:>9} {:>9} {:>12} {:>8.1} ms {:>8.1} ms",
            k,
            made,
            r.connections,
            r.flagged,
            100.0 * r.flagged_share(),
            if NORMAL_KINDS.contains(&k) {
                r.flagged_beside_attacks.to_string()
            } else {
                "-".into()
            },
            r.incidents,
            r.finalised_at_shutdown,
            first,
            quantile(&r.latencies_ms, 0.5),
            quantile(&r.latencies_ms, 0.99),
        );
    }
    let incident_lines = out
        .alert_lines
        .iter()
        .filter(|a| a["type"] == "incident")
        .count();
    let t = &out.timings;
    let shutdown: u64 = rows.values().map(|r| r.finalised_at_shutdown).sum();
    let _ = write!(
        s,
        "
connections: finalised by their own end (FIN, RST, idle timeout); shutdown: finalised by the
  sensor's stop instead ({shutdown} in this run), not counted in the other columns.
collat.: of a normal kind's flagged connections, those that began within 2 s of an attack's
  connection to the same service (a scan's probe of port 22 beside an SSH session): the KDD
  same-service window features count both, so the attack is in their company by definition.
latency: from the moment a connection was final (its last packet after FIN or RST, its last
  packet plus the idle timeout otherwise) to its verdict.
incidents: `\"type\":\"incident\"` alert lines ({incident_lines} in this run), counted towards a kind
  by the addresses they name; 1st incident: its opening after the attack's start.
{PROVOKED_KIND}: ICMP errors the attacks provoked (port unreachable from the scanned host, host
  unreachable from the gateway), one conversation per replying host.
settings: {} (idle timeouts TCP attempt {:?}, UDP {:?}, ICMP {:?}).
run: {:.0} s (setup {:.0} s, traffic {:.0} s, waiting for the last connections to end {:.0} s).
",
        out.config.display(),
        out.timeouts.tcp_attempt,
        out.timeouts.udp,
        out.timeouts.icmp,
        t.total.as_secs_f64(),
        t.setup.as_secs_f64(),
        t.traffic.as_secs_f64(),
        t.settle.as_secs_f64(),
    );
    s
}

/// The incidents of an alert stream, one line each from its latest state change: state, kind,
/// protocol, who (one address, or how many), what (one port, or how many), connections and
/// how long it has lasted. What an operator paging on the stream would see of each attack.
pub fn incident_summary(alert_lines: &[serde_json::Value]) -> Vec<String> {
    let mut latest: BTreeMap<String, &serde_json::Value> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for line in alert_lines.iter().filter(|l| l["type"] == "incident") {
        let id = match &line["id"] {
            serde_json::Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        if latest.insert(id.clone(), line).is_none() {
            order.push(id);
        }
    }
    let one_or_count = |l: &serde_json::Value, list: &str, count: &str, noun: &str| {
        let n = l[count].as_u64().unwrap_or(0);
        match (n, l[list].get(0)) {
            (1, Some(v)) => v.as_str().map_or(v.to_string(), str::to_string),
            _ => format!("{n} {noun}"),
        }
    };
    order
        .iter()
        .map(|id| {
            let l = latest[id];
            let ports = match (l["port_count"].as_u64().unwrap_or(0), l["ports"].get(0)) {
                (1, Some(p)) => format!("port {p}"),
                (n, _) => format!("{n} ports"),
            };
            let lasted_ns = l["last_unix_ns"]
                .as_u64()
                .zip(l["start_unix_ns"].as_u64())
                .map_or(0, |(last, start)| last.saturating_sub(start));
            let lasted = if lasted_ns < 1_000_000_000 {
                format!("{} ms", lasted_ns / 1_000_000)
            } else {
                format!("{:.1} s", lasted_ns as f64 / 1e9)
            };
            format!(
                "{:<7} {:<14} {:<5} {} -> {}, {}: {} connections ({} anomalous) in {}",
                l["state"].as_str().unwrap_or("?"),
                l["kind"].as_str().unwrap_or("?"),
                l["protocol"].as_str().unwrap_or("-"),
                one_or_count(l, "sources", "source_count", "sources"),
                one_or_count(l, "targets", "target_count", "hosts"),
                ports,
                l["connections"].as_u64().unwrap_or(0),
                l["anomalous_connections"].as_u64().unwrap_or(0),
                lasted,
            )
        })
        .collect()
}

/// The `q` quantile (0..1) of `v` (nearest rank); 0 for an empty slice.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1;
    s[i]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::{CLIENT, CLIENT2};
    use serde_json::json;

    fn conn(protocol: &str, orig: &str, resp: &str, port: u16) -> serde_json::Value {
        json!({"protocol": protocol, "orig_addr": orig, "resp_addr": resp, "resp_port": port})
    }

    #[test]
    fn kinds_by_address_protocol_and_port() {
        assert_eq!(kind(&conn("tcp", CLIENT, HTTP_SERVER, 80)), "http");
        assert_eq!(kind(&conn("tcp", CLIENT2, HTTP_SERVER, 80)), "http");
        assert_eq!(kind(&conn("udp", CLIENT, DNS_SERVER, 53)), "dns");
        assert_eq!(kind(&conn("tcp", CLIENT, SSH_SERVER, 22)), "ssh");
        assert_eq!(kind(&conn("udp", CLIENT, UDP_RR_SERVER, 123)), "udp-rr");
        assert_eq!(kind(&conn("icmp", CLIENT2, PING_SERVER, 0)), "ping");
        assert_eq!(kind(&conn("icmp", "fe80::1", "ff02::16", 0)), "ipv6-local");
        assert_eq!(kind(&conn("icmp", "::", "ff02::1:ff00:1", 0)), "ipv6-local");
        assert_eq!(
            kind(&conn("tcp", FLOOD_SOURCE, FLOOD_TARGET, 443)),
            "syn-flood"
        );
        assert_eq!(
            kind(&conn("tcp", PORT_SCAN_SOURCE, PORT_SCAN_TARGET, 7)),
            "port-scan"
        );
        assert_eq!(
            kind(&conn("udp", UDP_SCAN_SOURCE, UDP_SCAN_TARGET, 7)),
            "udp-scan"
        );
        assert_eq!(
            kind(&conn("icmp", SWEEP_SOURCE, "198.18.2.33", 0)),
            "ping-sweep"
        );
        assert_eq!(
            kind(&conn("icmp", UDP_SCAN_TARGET, UDP_SCAN_SOURCE, 0)),
            PROVOKED_KIND
        );
        assert_eq!(
            kind(&conn("icmp", "198.18.4.254", SWEEP_SOURCE, 0)),
            PROVOKED_KIND
        );
        assert_eq!(kind(&conn("tcp", CLIENT, DNS_SERVER, 53)), "other");
        assert_eq!(kind(&conn("udp", CLIENT, "2001:db8::1", 53)), "other");
    }

    #[test]
    fn incidents_are_attributed_by_address_and_timed_by_their_open_line() {
        let lines = vec![
            json!({"type": "alert", "resp_addr": DNS_SERVER}),
            json!({"type": "incident", "id": 7, "state": "open", "time": "2026-05-20T00:00:01.500Z",
                   "sources": [PORT_SCAN_SOURCE], "targets": {"addresses": [PORT_SCAN_TARGET]}}),
            json!({"type": "incident", "id": 7, "state": "closed", "time": "2026-05-20T00:01:00Z"}),
            json!({"type": "incident", "id": "x", "state": "open", "last_unix_ns": 5,
                   "sources": [CLIENT], "targets": [DNS_SERVER]}),
            json!({"type": "incident", "id": "y", "state": "open", "sources": [CLIENT]}),
        ];
        let inc = incidents(&lines);
        assert_eq!(inc.len(), 3);
        assert_eq!(inc[0].id, "7");
        assert_eq!(inc[0].kinds, BTreeSet::from(["port-scan"]));
        assert_eq!(
            inc[0].opened_unix_ns,
            parse_rfc3339_utc("2026-05-20T00:00:01.5Z")
        );
        assert_eq!(inc[1].kinds, BTreeSet::from(["dns"]));
        assert_eq!(inc[1].opened_unix_ns, Some(5));
        assert!(inc[2].kinds.is_empty());
    }

    fn outcome(connections: Vec<serde_json::Value>) -> Outcome {
        Outcome {
            connections,
            alert_lines: Vec::new(),
            metrics: String::new(),
            promtool: Ok(()),
            generated: BTreeMap::new(),
            attacks: Vec::new(),
            timings: Default::default(),
            config: Default::default(),
            timeouts: crate::gateway::IdleTimeouts {
                tcp: Default::default(),
                tcp_attempt: Default::default(),
                udp: Default::default(),
                icmp: Default::default(),
                tick: Default::default(),
            },
            sensor_stderr: String::new(),
            metrics_addr: String::new(),
            prometheus: None,
            traffic_start_unix: 0.0,
        }
    }

    #[test]
    fn flagged_normal_connections_beside_an_attack_on_their_service_are_collateral() {
        let c = |orig: &str, resp: &str, port: u16, service: &str, start_s: u64, anomalous| {
            json!({"protocol": "tcp", "orig_addr": orig, "resp_addr": resp, "resp_port": port,
                   "service": service, "start_unix_ns": start_s * 1_000_000_000,
                   "anomalous": anomalous, "end_reason": "fin"})
        };
        let rows = summarize(&outcome(vec![
            // The scan probes port 22 at 10 s.
            c(PORT_SCAN_SOURCE, PORT_SCAN_TARGET, 22, "ssh", 10, true),
            // Flagged SSH sessions: 1 s after the probe (collateral), 5 s after (not).
            c(CLIENT, SSH_SERVER, 22, "ssh", 11, true),
            c(CLIENT, SSH_SERVER, 22, "ssh", 15, true),
            // A clean session beside the probe, and a flagged HTTP exchange beside it (another
            // service: not collateral).
            c(CLIENT, SSH_SERVER, 22, "ssh", 10, false),
            c(CLIENT, HTTP_SERVER, 80, "http", 10, true),
        ]));
        assert_eq!(rows["ssh"].connections, 3);
        assert_eq!(rows["ssh"].flagged, 2);
        assert_eq!(rows["ssh"].flagged_beside_attacks, 1);
        assert_eq!(rows["http"].flagged_beside_attacks, 0);
        assert_eq!(rows["port-scan"].flagged_beside_attacks, 0);
    }

    #[test]
    fn incident_summary_takes_each_incident_latest_line() {
        let lines = vec![
            json!({"type": "alert", "resp_addr": DNS_SERVER}),
            json!({"type": "incident", "id": "a-1", "state": "open", "kind": "flood",
                   "protocol": "tcp", "sources": [FLOOD_SOURCE], "source_count": 1,
                   "targets": [FLOOD_TARGET], "target_count": 1, "ports": [443],
                   "port_count": 1, "connections": 100, "anomalous_connections": 100,
                   "start_unix_ns": 1_000_000_000u64, "last_unix_ns": 1_500_000_000u64}),
            json!({"type": "incident", "id": "a-2", "state": "open", "kind": "host_sweep",
                   "protocol": "icmp", "sources": [SWEEP_SOURCE], "source_count": 1,
                   "targets": ["198.18.2.11", "198.18.2.12"], "target_count": 30,
                   "ports": [8], "port_count": 1, "connections": 30,
                   "anomalous_connections": 29, "start_unix_ns": 0, "last_unix_ns": 0}),
            json!({"type": "incident", "id": "a-1", "state": "closed", "kind": "flood",
                   "protocol": "tcp", "sources": [FLOOD_SOURCE, "198.18.4.9"],
                   "source_count": 2, "targets": [FLOOD_TARGET], "target_count": 1,
                   "ports": [443, 444], "port_count": 2, "connections": 2000,
                   "anomalous_connections": 1990, "start_unix_ns": 1_000_000_000u64,
                   "last_unix_ns": 3_250_000_000u64}),
        ];
        let got = incident_summary(&lines);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(
            got[0],
            format!(
                "closed  flood          tcp   2 sources -> {FLOOD_TARGET}, 2 ports: 2000 \
                 connections (1990 anomalous) in 2.2 s"
            )
        );
        assert_eq!(
            got[1],
            format!(
                "open    host_sweep     icmp  {SWEEP_SOURCE} -> 30 hosts, port 8: 30 connections \
                 (29 anomalous) in 0 ms"
            )
        );
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_utc("2000-03-01T00:00:01.25Z"),
            Some(951_868_801_250_000_000)
        );
        assert_eq!(parse_rfc3339_utc("2000-03-01 00:00:01"), None);
    }
}
