//! The incident lines of the alert stream: their kinds, states and fields.

use std::net::IpAddr;

use serde::Serialize;

use crate::{kdd::KddFeatures, model::Verdict};

/// The kinds of incident; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    Flood,
    UdpFlood,
    IcmpFlood,
    PortScan,
    HostSweep,
    AnomalousSource,
    BruteForce,
    Malformed,
}

impl IncidentKind {
    pub const ALL: [IncidentKind; 8] = [
        IncidentKind::Flood,
        IncidentKind::UdpFlood,
        IncidentKind::IcmpFlood,
        IncidentKind::PortScan,
        IncidentKind::HostSweep,
        IncidentKind::AnomalousSource,
        IncidentKind::BruteForce,
        IncidentKind::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::Flood => "flood",
            IncidentKind::UdpFlood => "udp_flood",
            IncidentKind::IcmpFlood => "icmp_flood",
            IncidentKind::PortScan => "port_scan",
            IncidentKind::HostSweep => "host_sweep",
            IncidentKind::AnomalousSource => "anomalous_source",
            IncidentKind::BruteForce => "brute_force",
            IncidentKind::Malformed => "malformed",
        }
    }
}

/// An incident's state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Open,
    Update,
    Closed,
}

impl IncidentState {
    /// Its name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Update => "update",
            IncidentState::Closed => "closed",
        }
    }
}

/// One incident line of the alert stream.
#[derive(Clone, Debug, Serialize)]
pub struct IncidentLine {
    #[serde(rename = "type")]
    pub kind_of_line: &'static str,
    pub id: String,
    pub state: IncidentState,
    pub kind: IncidentKind,
    /// The transport it opened on.
    pub protocol: &'static str,
    /// Every transport of its anomalous connections (`tcp`, `udp`, `icmp`, in that order):
    /// more than one for a source's reconnaissance over several (`nmap -sn`'s ICMP echoes and
    /// TCP probes, a TCP scan and then a UDP scan), which is one incident.
    pub protocols: Vec<&'static str>,
    /// First packet of its first connection, and the latest evidence's moment.
    pub start_unix_ns: u64,
    pub last_unix_ns: u64,
    /// Up to ten sources and targets, and how many there are.
    pub sources: Vec<IpAddr>,
    pub source_count: usize,
    pub targets: Vec<IpAddr>,
    pub target_count: usize,
    /// Up to ten target ports (or ICMP types), and how many distinct ones.
    pub ports: Vec<u16>,
    pub port_count: usize,
    /// Connections on the incident's key while it was open, and how many were anomalous.
    pub connections: u64,
    pub anomalous_connections: u64,
    /// The highest rate the volume rule found in the incident's connections
    /// (`crate::detect::volume`): a conversation's own packets per second, or its target's new
    /// conversations per second (`volume_scope` in their alerts). Absent where the rule flagged
    /// none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_packets_per_second: Option<f64>,
    /// Of a `flood` the held-request rule opened (a slow attack, `crate::detect::held`): its
    /// connections that held a request open, each without an answer for 10 s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_requests: Option<u64>,
    /// On the `closed` line of a UDP port scan whose target turned out to be flooded over many
    /// ports (the volume rule's verdicts at the host, `crate::detect::volume`): the id of the
    /// host's `udp_flood`, which took over its evidence: a scan that was the flood's own start
    /// (it began at most two seconds before), opened by verdicts the rule could not mark as
    /// undecided. The flood is the one to follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// The features whose values set its anomalous connections apart most, with their mean.
    pub features: Vec<FeatureMean>,
    /// One of its connections, for joining with other logs.
    pub example: Example,
    /// The features that moved the score of its strongest connection (highest combined
    /// score) most, filled in by [`IncidentLine::explain`] where the model is at hand. One
    /// connection rather than an aggregate over the evidence: contributions of different
    /// connections add up along different tree paths, and their sum explains no verdict.
    pub top_features: Vec<crate::model::FeatureContribution>,
    /// The strongest connection's features and verdict, for [`IncidentLine::explain`].
    #[serde(skip)]
    pub strongest: Option<(KddFeatures, Verdict, Option<crate::features::ColdWindow>)>,
}

impl IncidentLine {
    /// Fills `top_features` from the strongest connection, by `model`.
    pub fn explain(&mut self, model: &crate::model::Model) {
        if let Some((f, v, cold)) = &self.strongest
            && !v.detector.is_rule()
        {
            self.top_features = model.explain_verdict(f, cold.as_ref(), v);
        }
    }
}

/// A feature and its mean over an incident's anomalous connections.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeatureMean {
    pub name: &'static str,
    pub mean: f64,
}

/// A connection's 5-tuple and start.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Example {
    pub orig_addr: IpAddr,
    pub orig_port: u16,
    pub resp_addr: IpAddr,
    pub resp_port: u16,
    /// Its transport (`tcp`, `udp`, `icmp`): an incident's connections may have several.
    pub protocol: &'static str,
    pub start_unix_ns: u64,
    /// Community ID v1 (seed 0) of the example connection, to find it in Zeek or Suricata logs.
    pub community_id: String,
}
