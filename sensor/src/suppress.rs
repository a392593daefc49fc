//! Operator suppressions: `[[suppress]]` rules in the configuration file that silence what the
//! operator has already judged benign (the backup server's nightly sweep, the monitoring
//! host's port checks).
//!
//! A rule matches when every matcher it gives matches (AND); within one matcher, any listed
//! value matches (OR). Suppression only silences: a suppressed connection is still recorded,
//! scored and counted in the verdict metrics, so that the evidence is there when a rule turns
//! out to be too broad. It writes no alert line and does not feed incidents. An incident line
//! that matches a rule is not written. Each suppression is counted by rule
//! (`sensor_suppressed_total{rule, what}`).
//!
//! Which rules apply to what:
//! - connections: rules without `kind` (a connection has no incident kind; a rule that names
//!   one is about incidents). `src` is the originator, `dst` the responder, `port` the
//!   responder's port, `service` the KDD service and `detector` the verdict's detector, both
//!   as the alert lines show them (`"both"` is its own name: a rule on `"supervised"` does not
//!   match a connection both detectors flagged).
//! - incident lines: rules without `service` or `detector` (an incident groups connections of
//!   several services and detectors). `src` must contain every source of the incident, `dst`
//!   every target and `port` every port (ICMP incidents: the ICMP types), and the incident
//!   must list them all (at most ten of each): an incident with more sources than it lists is
//!   never suppressed by a `src` matcher, since the unlisted ones could be anywhere.
use std::{fmt, net::IpAddr, str::FromStr, sync::Arc};

use serde::Deserialize;

use crate::{
    flows::ConnectionRecord,
    incidents::line::{IncidentKind, IncidentLine},
    kdd::{KddFeatures, SERVICES},
    model::{Detector, Verdict},
};

/// An IPv4 or IPv6 network, `address/prefix` (a bare address is a host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix_len: u8,
}

impl FromStr for Cidr {
    type Err = String;

    /// Host bits set below the prefix (`10.0.0.1/8`) are refused rather than masked: they are
    /// more often a typo of the prefix than a way of writing the network.
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or network"))?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match len {
            None => bits,
            Some(l) => l
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= bits)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {bits}"))?,
        };
        let c = Cidr { addr, prefix_len };
        if c.network_bits() != bits_of(addr) {
            return Err(format!(
                "{s:?}: host bits set below the /{prefix_len} prefix"
            ));
        }
        Ok(c)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// An address as a 128-bit number (IPv4 in the low 32 bits).
fn bits_of(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

impl Cidr {
    fn width(&self) -> u32 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    /// The address with the host bits cleared.
    fn network_bits(&self) -> u128 {
        let host = self.width() - u32::from(self.prefix_len);
        if host >= 128 {
            0
        } else {
            (bits_of(self.addr) >> host) << host
        }
    }

    /// Whether `ip` is in this network. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is its
    /// IPv4 address, as dual-stack sockets report IPv4 peers that way.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let host = self.width() - u32::from(self.prefix_len);
        let net = |b: u128| if host >= 128 { 0 } else { b >> host };
        net(bits_of(ip)) == net(bits_of(self.addr))
    }
}

/// One `[[suppress]]` table as written (validated into a [`Rule`]).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: String,
    src: Option<Vec<String>>,
    dst: Option<Vec<String>>,
    port: Option<Vec<u16>>,
    service: Option<Vec<String>>,
    kind: Option<Vec<String>>,
    detector: Option<Vec<String>>,
}

/// A validated rule; see the module docs for what it matches.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: Arc<str>,
    src: Option<Vec<Cidr>>,
    dst: Option<Vec<Cidr>>,
    port: Option<Vec<u16>>,
    service: Option<Vec<&'static str>>,
    kind: Option<Vec<IncidentKind>>,
    detector: Option<Vec<Detector>>,
}

/// A rule that cannot be used; names the rule (or its position) and the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("suppress rule {rule}: {field}: {reason}")]
pub struct RuleError {
    /// `"name"` in quotes, or `#n` (1-based) for a rule without a usable name.
    pub rule: String,
    pub field: String,
    pub reason: String,
}

/// The detectors a rule may name: those that flag a connection (`none` never alerts).
const DETECTORS: [Detector; 5] = [
    Detector::Supervised,
    Detector::Unsupervised,
    Detector::Both,
    Detector::Volume,
    Detector::Malformed,
];

impl Rule {
    /// Validates one `[[suppress]]` table; `position` is its 1-based place in the file.
    fn from_table(t: &toml::Table, position: usize) -> Result<Rule, RuleError> {
        let named = t.get("name").and_then(|v| v.as_str());
        let rule = named.map_or_else(|| format!("#{position}"), |n| format!("{n:?}"));
        let err = |field: &str, reason: String| RuleError {
            rule: rule.clone(),
            field: field.to_string(),
            reason,
        };
        let f: RuleFile = toml::Value::Table(t.clone()).try_into().map_err(|e| {
            let msg = e.to_string().trim_end().to_string();
            // Serde names an unknown key or a missing `name` in its message; say which field.
            let field = ["name", "src", "dst", "port", "service", "kind", "detector"]
                .into_iter()
                .find(|k| t.contains_key(*k) && msg.contains(&format!("`{k}`")))
                .unwrap_or("keys");
            err(field, msg)
        })?;
        if f.name.trim().is_empty() {
            return Err(err("name", "must not be empty".into()));
        }
        let cidrs = |field: &str, v: Option<Vec<String>>| {
            v.map(|list| {
                list.iter()
                    .map(|s| s.parse::<Cidr>().map_err(|r| err(field, r)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()
        };
        let src = cidrs("src", f.src)?;
        let dst = cidrs("dst", f.dst)?;
        let service = f
            .service
            .map(|list| {
                list.iter()
                    .map(|s| {
                        SERVICES
                            .iter()
                            .find(|k| **k == s.as_str())
                            .copied()
                            .ok_or_else(|| err("service", format!("unknown KDD service {s:?}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let kind = f
            .kind
            .map(|list| {
                list.iter()
                    .map(|s| {
                        IncidentKind::ALL
                            .into_iter()
                            .find(|k| k.as_str() == s)
                            .ok_or_else(|| {
                                let known: Vec<_> =
                                    IncidentKind::ALL.iter().map(|k| k.as_str()).collect();
                                err(
                                    "kind",
                                    format!("unknown incident kind {s:?} (one of {known:?})"),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let detector = f
            .detector
            .map(|list| {
                list.iter()
                    .map(|s| {
                        DETECTORS
                            .into_iter()
                            .find(|d| Detector::as_str(*d) == s)
                            .ok_or_else(|| {
                                err(
                                    "detector",
                                    format!(
                                        "unknown detector {s:?} (one of \"supervised\", \"unsupervised\", \"both\", \"volume\")"
                                    ),
                                )
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let r = Rule {
            name: Arc::from(f.name.as_str()),
            src,
            dst,
            port: f.port,
            service,
            kind,
            detector,
        };
        let lists = [
            ("src", r.src.as_ref().map(Vec::len)),
            ("dst", r.dst.as_ref().map(Vec::len)),
            ("port", r.port.as_ref().map(Vec::len)),
            ("service", r.service.as_ref().map(Vec::len)),
            ("kind", r.kind.as_ref().map(Vec::len)),
            ("detector", r.detector.as_ref().map(Vec::len)),
        ];
        if lists.iter().all(|(_, n)| n.is_none()) {
            return Err(err(
                "matchers",
                "no matcher: give at least one of src, dst, port, service, kind, detector".into(),
            ));
        }
        // An empty list would match nothing and silently disable the rule.
        if let Some((field, _)) = lists.iter().find(|(_, n)| *n == Some(0)) {
            return Err(err(
                field,
                "empty list (leave the field out instead)".into(),
            ));
        }
        if r.kind.is_some() && (r.service.is_some() || r.detector.is_some()) {
            return Err(err(
                "kind",
                "a rule with `kind` matches incidents, which have no single service or detector: it cannot also give `service` or `detector`".into(),
            ));
        }
        Ok(r)
    }

    /// Whether this rule silences an anomalous connection.
    pub fn matches_connection(
        &self,
        rec: &ConnectionRecord,
        features: &KddFeatures,
        verdict: &Verdict,
    ) -> bool {
        if self.kind.is_some() {
            return false;
        }
        let in_any = |nets: &Option<Vec<Cidr>>, ip| {
            nets.as_ref()
                .is_none_or(|n| n.iter().any(|c| c.contains(ip)))
        };
        let service = || {
            SERVICES
                .get(features.0[crate::kdd::SERVICE] as usize)
                .copied()
                .unwrap_or("?")
        };
        in_any(&self.src, rec.orig_addr)
            && in_any(&self.dst, rec.resp_addr)
            && self
                .port
                .as_ref()
                .is_none_or(|p| p.contains(&rec.resp_port))
            && self.service.as_ref().is_none_or(|l| l.contains(&service()))
            && self
                .detector
                .as_ref()
                .is_none_or(|d| d.contains(&verdict.detector))
    }

    /// Whether this rule silences an incident line.
    pub fn matches_incident(&self, line: &IncidentLine) -> bool {
        if self.service.is_some() || self.detector.is_some() {
            return false;
        }
        let all_in = |nets: &Option<Vec<Cidr>>, ips: &[IpAddr], count: usize| {
            nets.as_ref().is_none_or(|n| {
                !ips.is_empty()
                    && count == ips.len()
                    && ips.iter().all(|&ip| n.iter().any(|c| c.contains(ip)))
            })
        };
        self.kind.as_ref().is_none_or(|k| k.contains(&line.kind))
            && all_in(&self.src, &line.sources, line.source_count)
            && all_in(&self.dst, &line.targets, line.target_count)
            && self.port.as_ref().is_none_or(|p| {
                !line.ports.is_empty()
                    && line.port_count == line.ports.len()
                    && line.ports.iter().all(|x| p.contains(x))
            })
    }
}

/// The rules in force; empty by default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Suppressions {
    rules: Vec<Rule>,
}

impl Suppressions {
    /// Validates the `[[suppress]]` tables of a configuration file. Rule names must be unique,
    /// since they label the metric.
    pub fn compile(tables: &[toml::Table]) -> Result<Suppressions, RuleError> {
        let mut rules: Vec<Rule> = Vec::with_capacity(tables.len());
        for (i, t) in tables.iter().enumerate() {
            let r = Rule::from_table(t, i + 1)?;
            if rules.iter().any(|o| o.name == r.name) {
                return Err(RuleError {
                    rule: format!("{:?}", &*r.name),
                    field: "name".into(),
                    reason: "another rule has this name".into(),
                });
            }
            rules.push(r);
        }
        Ok(Suppressions { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The first rule that silences a connection with these features and verdict (only
    /// anomalous connections are ever silenced).
    pub fn connection(
        &self,
        rec: &ConnectionRecord,
        features: &KddFeatures,
        verdict: &Verdict,
    ) -> Option<&Arc<str>> {
        if !verdict.anomalous {
            return None;
        }
        self.rules
            .iter()
            .find(|r| r.matches_connection(rec, features, verdict))
            .map(|r| &r.name)
    }

    /// The first rule that silences an incident line.
    pub fn incident(&self, line: &IncidentLine) -> Option<&Arc<str>> {
        self.rules
            .iter()
            .find(|r| r.matches_incident(line))
            .map(|r| &r.name)
    }
}

#[cfg(test)]
mod tests;
