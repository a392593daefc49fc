//! Incidents: anomalous connections grouped into the attacks an operator pages on.
//!
//! A flood is thousands of anomalous connections, a port scan a thousand; one alert line each
//! buries the operator. The tracker groups anomalous connections by the shape of the attack they
//! belong to and reports each attack as one incident, with one JSON line per state change:
//! `open` when its evidence passes a threshold, `update` at most every `update_every` while it
//! lasts, `closed` after `quiet` without new evidence.
//!
//! | kind | evidence | key |
//! |---|---|---|
//! | `flood` | anomalous TCP connections to one port of one host, from any number of sources (spoofed ones included); or the held-request rule's verdicts on a slow attack's connections (`crate::detect::held`) | target host, protocol, port |
//! | `udp_flood` | the same over UDP; or the volume rule's verdicts on a host flooded on many ports (`crate::detect::volume`) | target host, protocol, port; or target host |
//! | `icmp_flood` | anomalous ICMP echo conversations to one host | target host |
//! | `port_scan` | one source, anomalous connections to many ports of one host, probes (no payload both ways) on `scan_ports` of them | source, target host, protocol |
//! | `host_sweep` | one source, anomalous connections to one port (or ICMP echo) on many hosts | source, protocol, port |
//! | `anomalous_source` | one source that keeps producing anomalous connections of no shape above, not its flagged calls to services that serve it ordinarily | source |
//! | `brute_force` | the login rule's verdicts: one source's short sessions to one login service of a host at a guesser's rate (`crate::detect::logins`) | source, target host, port |
//! | `malformed` | anomalous conversations carrying packets no network stack sends: `land` (the target's own address and port as the source), or wrong UDP or ICMP fragments (ping of death, teardrop); one such conversation is the attack | source, target host, protocol |
//!
//! One source's port scans and host sweeps are one attack, whatever their transports: while
//! one is open, the next that passes its threshold joins it instead of opening (`nmap` over a
//! network is a port scan of each host and a sweep of each port, 30 incidents for one run over
//! 20 hosts and 100 ports before this; its host discovery, `nmap -sn`, probes each host with
//! an ICMP echo and TCP segments to ports 443 and 80 at once, an ICMP and a TCP sweep; a TCP
//! scan and then a UDP scan), and from then on the incident takes every connection of the
//! source, keeping the kind, protocol and id it opened with; its lines list every transport
//! of its anomalous connections (`protocols`) (`IncidentTracker::widen`). Floods of several ports of one host over one transport are one
//! attack the same way (a SYN flood of ports 80 and 443, or of a random port per packet): the
//! widened flood takes every anomalous connection to the host over the transport; so are TCP
//! port scans of one host from several sources that began within seconds of each other
//! (`nmap -D`'s decoys, a SYN flood of ever new ports from a few spoofed addresses).
//!
//! An incident's last moment, which `quiet` counts from, is its last anomalous connection's:
//! the ordinary connections an open incident also counts (a flooded web server's clients) do
//! not keep it open after the attack ends.
//!
//! A connection that fits an incident already open is counted there (flood, then the host's
//! widened floods, guessing, the source's widened scans, scan, the host's UDP flood, sweep,
//! source, malformed); otherwise it is evidence for candidates of every
//! kind, and the first candidate to pass its threshold opens. The login rule's verdicts feed
//! only their source's guessing, and only they do. The host's UDP flood is the exception to
//! both: it is fed only by the volume rule's verdicts at the host, which it takes first (and
//! which feed no port's flood), and it takes only anomalous connections; a UDP port scan of a
//! host the rule cannot judge yet waits (`IncidentTracker::take_over_scans`). Any verdict the
//! volume rule flagged by a rate belongs to its flood the same way, taken by it or opening it
//! whatever else is open (but for its late verdicts, `late_target_verdict`); and a run of
//! anomalous connections to one port that an open port scan takes, unbroken by the scan's
//! others, still counts towards that port's flood, which takes the rest once it opens (one
//! attacker address that scans a host and then floods a port of it is two attacks, not a scan
//! that takes the flood; both count the flood's first connections). ICMP error
//! messages (unreachable, time exceeded) are responses to other traffic, not attacks of their
//! own: they never open an incident, and they count towards one open on their key.
//!
//! A client is no scan: an application calling many services of a host, some of which are
//! down, is flagged on its refusals and, for their sake, on many of its served calls, on every
//! port. A port scan's threshold counts the ports of its probes (anomalous connections that
//! exchanged nothing), and a flagged exchange with a service that served the same source
//! ordinarily within `window` is no evidence of an anomalous source (`IncidentTracker::observe`).
//! Likewise a service's client meeting dead hosts is no sweep while it was served more often
//! than it failed (`Served`).
//!
//! Evidence is counted on the connections' own clock (their final moment, or for an early
//! verdict the moment it was taken), so replay and live mode group alike. It counts over at
//! most `horizon` from a candidate's first connection, then counting starts again: a threshold
//! is a rate (so many in five minutes), so that a trickle of false alarms that never stops (a
//! busy server's 0.5% of flagged connections, a client's occasional odd exchange) cannot add up
//! to an incident however long the sensor runs, while an attack at the threshold's rate passes
//! it within two horizons at most. Memory is bounded:
//! candidates not fed for `window` are forgotten, at most four times `max_candidates` are kept in
//! all (the oldest goes first, counted), and the distinct ports, hosts and sources an incident
//! remembers are capped (the counts then say "at least").

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    net::IpAddr,
    time::Duration,
};

pub mod line;

pub use line::{Example, FeatureMean, IncidentKind, IncidentLine, IncidentState};

use crate::{
    detect::{Scored, VolumeScope},
    features::ColdWindow,
    flows::{ConnId, ConnectionRecord, EndReason, Transport},
    hashing::{Map, Set},
    kdd::{FEATURE_NAMES, FeatureSet, KddFeatures},
    model::Verdict,
};

/// When evidence becomes an incident, and how long incidents last.
#[derive(Clone, Debug, PartialEq)]
pub struct IncidentConfig {
    /// Distinct ports of one host a source must probe: anomalous connections there that
    /// exchanged nothing (no payload both ways).
    pub scan_ports: u32,
    /// Distinct hosts a source must touch on one port with anomalous connections.
    pub sweep_hosts: u32,
    /// Anomalous connections to one port of one host (any sources).
    pub flood_connections: u32,
    /// Anomalous connections from one source, of no other shape (its flagged calls to a
    /// service that served it ordinarily within `window` not counted). Keep it above
    /// `flood_connections`, so that a flood from one source opens as a flood.
    pub source_connections: u32,
    /// Evidence older than this (without new evidence for its candidate) is forgotten.
    pub window: Duration,
    /// The longest a candidate's evidence counts from its first connection: then it starts
    /// again from the connection at hand (see the module docs). Five minutes, Zeek's
    /// `Scan::scan_interval`: a slow scan of 20 ports in five minutes still opens.
    pub horizon: Duration,
    /// An incident closes after this long without new evidence.
    pub quiet: Duration,
    /// At most one `update` line per incident per this long.
    pub update_every: Duration,
    /// Candidates kept at most (per kind); beyond, the one fed longest ago is dropped.
    pub max_candidates: usize,
}

impl Default for IncidentConfig {
    fn default() -> Self {
        IncidentConfig {
            scan_ports: 20,
            sweep_hosts: 10,
            flood_connections: 100,
            // Above `flood_connections`: a single-source flood is a flood, not an anomalous
            // source.
            source_connections: 200,
            window: Duration::from_secs(60),
            horizon: Duration::from_secs(300),
            quiet: Duration::from_secs(30),
            update_every: Duration::from_secs(10),
            max_candidates: 100_000,
        }
    }
}

/// How long the volume rule takes at most to judge a host's flood (the second it began, and
/// the early verdict's delay after it): a UDP port scan of the host that began within this of
/// the flood is the flood's own start (`IncidentTracker::take_over_scans`), and a scan that
/// waited for the rule opens once its last connection is this old (`IncidentTracker::tick`).
const TAKE_OVER_NS: u64 = crate::lifecycle::LifecycleConfig::DEFAULT_EARLY_VERDICT_AFTER.as_nanos()
    as u64
    + 1_000_000_000;

/// How many distinct values an incident lists in its lines.
const LISTED: usize = 10;
/// How many distinct values an incident remembers exactly (counts beyond are "at least").
const REMEMBERED: usize = 65_536;
/// How many features an incident names as the ones that drove its verdicts.
const TOP_FEATURES: usize = 5;

/// The keys of the candidate groups a connection belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    /// Target host, transport, port (ICMP: the echo type).
    Flood(IpAddr, Transport, u16),
    /// Target host of a UDP flood over many ports: fed by the volume rule's verdicts at the
    /// host ([`VolumeScope::Host`]) only, since each port of such a flood is a flood of its own
    /// by the rate, and would open one incident per port.
    HostFlood(IpAddr),
    /// Source, target host, transport.
    Scan(IpAddr, IpAddr, Transport),
    /// Source, transport, port.
    Sweep(IpAddr, Transport, u16),
    /// Source.
    Source(IpAddr),
    /// Source, target host, login port: fed by the login rule's verdicts
    /// ([`VolumeScope::Logins`]) only, as any other anomalous session to a login service is
    /// evidence for the other kinds.
    Logins(IpAddr, IpAddr, u16),
    /// Source: never a candidate. An open port scan or host sweep moves here when another
    /// scan or sweep of its source passes its threshold, over any transport (a scan of
    /// several hosts, or a sweep of several ports: one `nmap` run over a network; `nmap -sn`'s
    /// host discovery, which probes each host with an ICMP echo and TCP segments to ports 443
    /// and 80 at once), and then takes every connection of the source
    /// ([`IncidentTracker::widen`]).
    Recon(IpAddr),
    /// Source, target host, transport: anomalous conversations of malformed packets
    /// (`ConnectionRecord::malformed`), each an attack by itself.
    Malformed(IpAddr, IpAddr, Transport),
    /// Target host, transport: never a candidate. An open flood moves here when a flood of
    /// another port of its host over the same transport passes its threshold (a SYN flood of
    /// ports 80 and 443), and so does an open TCP or UDP port scan when another source's scan
    /// of the same host that began with it passes its own (`nmap -D`'s decoys, a SYN flood of
    /// ever new ports from a few spoofed addresses, datagrams reflected at ever new ports from
    /// a few servers); it then takes every anomalous connection to the host over the
    /// transport ([`IncidentTracker::widen`]).
    Target(IpAddr, Transport),
}

/// Incidents of one attack that open one after the other: a source's scans and sweeps (over
/// any transports), or the floods of one host's ports over one transport. Each has at most
/// one incident open ([`IncidentTracker::widen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Group {
    Source(IpAddr),
    Target(IpAddr, Transport),
    /// Port scans of one host over one transport (TCP or UDP) that began together from
    /// several sources: `nmap -D`'s decoys beside the real scan, a SYN flood of ever new ports
    /// from a few spoofed addresses, or datagrams reflected at ever new ports from a few
    /// servers under the volume rule's bar (a UDP flood at the bar is the host's flood, which
    /// takes such scans over, `IncidentTracker::take_over_scans`). Only those that began
    /// within [`TAKE_OVER_NS`] of the open one join it (an independent scanner of the same
    /// host a minute later is another attack).
    Scanned(IpAddr, Transport),
}

impl Group {
    /// The key its incident moves to once it has taken a second scan, sweep or flood.
    fn wide(self) -> Key {
        match self {
            Group::Source(src) => Key::Recon(src),
            Group::Target(host, t) => Key::Target(host, t),
            Group::Scanned(host, t) => Key::Target(host, t),
        }
    }
}

impl Key {
    /// The groups of a scan-shaped key (a port scan, a host sweep, or the two widened) or a
    /// flood-shaped one (a port's flood, or a host's floods widened).
    fn groups(&self) -> [Option<Group>; 2] {
        let scanned = |host, t| {
            matches!(t, Transport::Tcp | Transport::Udp).then_some(Group::Scanned(host, t))
        };
        match *self {
            Key::Scan(src, host, t) => [Some(Group::Source(src)), scanned(host, t)],
            Key::Sweep(src, ..) | Key::Recon(src) => [Some(Group::Source(src)), None],
            Key::Flood(host, t, _) => [Some(Group::Target(host, t)), None],
            Key::Target(host, t) => [Some(Group::Target(host, t)), scanned(host, t)],
            _ => [None, None],
        }
    }
}

/// Distinct values, remembered up to [`REMEMBERED`].
#[derive(Clone, Debug)]
struct Distinct<T: Ord> {
    set: BTreeSet<T>,
    overflow: bool,
}

impl<T: Ord> Default for Distinct<T> {
    fn default() -> Self {
        Distinct {
            set: BTreeSet::new(),
            overflow: false,
        }
    }
}

impl<T: Ord + Copy> Distinct<T> {
    fn insert(&mut self, v: T) {
        if self.set.len() < REMEMBERED {
            self.set.insert(v);
        } else if !self.set.contains(&v) {
            self.overflow = true;
        }
    }
    fn len(&self) -> usize {
        self.set.len() + usize::from(self.overflow)
    }
    fn extend(&mut self, other: &Distinct<T>) {
        for v in &other.set {
            self.insert(*v);
        }
        self.overflow |= other.overflow;
    }
    fn first(&self) -> Vec<T> {
        self.set.iter().take(LISTED).copied().collect()
    }
}

/// Evidence gathered for one key.
#[derive(Clone, Debug, Default)]
struct Evidence {
    first_ns: u64,
    last_ns: u64,
    start_ns: u64,
    anomalous: u64,
    connections: u64,
    sources: Distinct<IpAddr>,
    targets: Distinct<IpAddr>,
    ports: Distinct<u16>,
    /// The ports of its anomalous connections that exchanged nothing ([`exchanged`]: no
    /// payload both ways): a port scan's probes. A client of a host whose services refuse it
    /// on a few ports is flagged on every port it uses, served calls too, but its failures are
    /// on the few ports that are down ([`IncidentTracker::passes`]).
    probe_ports: Distinct<u16>,
    /// The transports of its anomalous connections, one bit each ([`Transport::index`]): a
    /// source's reconnaissance widened over several ([`Key::Recon`]) has more than one.
    transports: u8,
    /// Sum of each flow feature over the anomalous connections.
    feature_sums: Vec<f64>,
    example: Option<Example>,
    /// The anomalous connection with the highest combined score (its features, verdict and
    /// cold host window, for its explanation).
    strongest: Option<(KddFeatures, Verdict, Option<ColdWindow>)>,
    /// The highest rate of a conversation the volume rule flagged: such a conversation is a
    /// flood by itself (see [`IncidentTracker::passes`]).
    peak_pps: Option<f64>,
    /// Its connections the held-request rule flagged (`crate::detect::held`): each holds a
    /// request of a slow attack open, and one is the flood by itself, as a flood's rate is.
    held_requests: u64,
    /// When it first passed its threshold while the volume rule could not judge its host (a
    /// UDP port scan, `crate::detect::TargetVerdict::pending`): it opens at
    /// [`IncidentTracker::tick`] once the rule has had time to decide, unless a flood of the
    /// host that began then took it over.
    waited_ns: Option<u64>,
}

/// A source's ordinary exchanges with one service port (transport, port) over all hosts
/// ([`exchanged`]): the service's work done for a client. A host sweep is mostly probes that
/// fail (finding which hosts answer is its point); a client of the service (a mail relay
/// delivering to many hosts, a resolver asking many name servers) mostly gets served, and
/// meets dead or refusing hosts now and then: its failures to ten hosts are no sweep while it
/// was served more often than it failed ([`IncidentTracker::passes`]). Counted from before the
/// failures (a failed attempt's record comes at the attempt timeout, after the deliveries
/// made meanwhile), forgotten after `window` without one, restarted after `horizon`.
#[derive(Clone, Copy, Debug)]
struct Served {
    first_ns: u64,
    last_ns: u64,
    exchanges: u64,
}

impl Evidence {
    fn add(&mut self, rec: &ConnectionRecord, s: &Scored, at_ns: u64) {
        if self.connections == 0 && self.anomalous == 0 {
            self.first_ns = at_ns;
            self.start_ns = rec.start_unix_ns;
        }
        // Final moments come a little out of order (a record the table scan finished is a
        // second late): the horizon runs from the earliest.
        self.first_ns = self.first_ns.min(at_ns);
        self.start_ns = self.start_ns.min(rec.start_unix_ns);
        self.connections += 1;
        if !s.verdict.anomalous {
            return;
        }
        // The attack's last moment: an open incident also counts the ordinary connections
        // on its key (a flooded web server's clients), which must not keep it open after the
        // attack ends.
        self.last_ns = self.last_ns.max(at_ns);
        self.anomalous += 1;
        // A packet rate; the login rule's is of sessions, which its incident does not report,
        // and the held-request rule's of requests held open, which it counts instead.
        if s.volume.is_some_and(|h| h.scope == VolumeScope::Held) {
            self.held_requests += 1;
        } else if let Some(hit) = s.volume.filter(|h| h.scope != VolumeScope::Logins) {
            let pps = hit.packets_per_second;
            self.peak_pps = Some(self.peak_pps.map_or(pps, |p| p.max(pps)));
        }
        self.transports |= 1 << rec.transport.index();
        self.sources.insert(rec.orig_addr);
        self.targets.insert(rec.resp_addr);
        self.ports.insert(port_of(rec));
        if !exchanged(rec) {
            self.probe_ports.insert(port_of(rec));
        }
        let inputs = FeatureSet::Flow.indices();
        if self.feature_sums.len() != inputs.len() {
            self.feature_sums = vec![0.0; inputs.len()];
        }
        for (sum, &i) in self.feature_sums.iter_mut().zip(inputs) {
            *sum += s.features.0[i];
        }
        if self
            .strongest
            .is_none_or(|(_, v, _)| s.verdict.score > v.score)
        {
            self.strongest = Some((s.features, s.verdict, s.cold));
        }
        if self.example.is_none() {
            self.example = Some(Example {
                orig_addr: rec.orig_addr,
                orig_port: rec.orig_port,
                resp_addr: rec.resp_addr,
                resp_port: rec.resp_port,
                protocol: rec.transport.as_str(),
                start_unix_ns: rec.start_unix_ns,
                community_id: crate::community_id::of_record(rec, 0),
            });
        }
    }
}

impl Evidence {
    /// Adds `other`'s evidence (another incident's, taken over) to this.
    fn merge(&mut self, other: &Evidence) {
        if other.connections == 0 {
            return;
        }
        self.first_ns = self.first_ns.min(other.first_ns);
        self.start_ns = self.start_ns.min(other.start_ns);
        self.last_ns = self.last_ns.max(other.last_ns);
        self.connections += other.connections;
        self.anomalous += other.anomalous;
        self.transports |= other.transports;
        self.sources.extend(&other.sources);
        self.targets.extend(&other.targets);
        self.ports.extend(&other.ports);
        self.probe_ports.extend(&other.probe_ports);
        if self.feature_sums.len() < other.feature_sums.len() {
            self.feature_sums.resize(other.feature_sums.len(), 0.0);
        }
        for (sum, o) in self.feature_sums.iter_mut().zip(&other.feature_sums) {
            *sum += o;
        }
        if let Some(o) = other.strongest
            && self.strongest.is_none_or(|(_, v, _)| o.1.score > v.score)
        {
            self.strongest = Some(o);
        }
        if other.start_ns <= self.start_ns || self.example.is_none() {
            self.example = other.example.clone().or(self.example.take());
        }
        self.peak_pps = match (self.peak_pps, other.peak_pps) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.held_requests += other.held_requests;
    }
}

/// The target port of a connection (ICMP: its type).
fn port_of(rec: &ConnectionRecord) -> u16 {
    match rec.transport {
        Transport::Icmp => u16::from(rec.icmp_type.unwrap_or(0)),
        _ => rec.resp_port,
    }
}

/// ICMP messages that answer other traffic (unreachable, time exceeded, parameter problem).
fn is_icmp_error(rec: &ConnectionRecord) -> bool {
    rec.transport == Transport::Icmp
        && match (rec.ip_version, rec.icmp_type) {
            (6, Some(t)) => t < 128,
            (_, Some(t)) => matches!(t, 3 | 4 | 5 | 11 | 12),
            (_, None) => false,
        }
}

/// An incident being tracked.
#[derive(Debug)]
struct Incident {
    id: String,
    kind: IncidentKind,
    protocol: &'static str,
    evidence: Evidence,
    last_line_ns: u64,
    /// Evidence since the last line.
    dirty: bool,
    /// Conversations still open that the volume rule flagged at their early verdict
    /// ([`IncidentTracker::live`]): the incident stays open until their final records come.
    live: u32,
    /// An open port scan's latest run of anomalous connections to one port of its host: that
    /// port's flood key, and how many in a row (see [`IncidentTracker::observe`]).
    run: Option<(Key, u32)>,
}

impl Incident {
    fn line(&self, state: IncidentState) -> IncidentLine {
        let e = &self.evidence;
        IncidentLine {
            kind_of_line: "incident",
            id: self.id.clone(),
            state,
            kind: self.kind,
            protocol: self.protocol,
            protocols: Transport::ALL
                .into_iter()
                .filter(|t| e.transports & (1 << t.index()) != 0)
                .map(Transport::as_str)
                .collect(),
            start_unix_ns: e.start_ns,
            last_unix_ns: e.last_ns,
            sources: e.sources.first(),
            source_count: e.sources.len(),
            targets: e.targets.first(),
            target_count: e.targets.len(),
            ports: e.ports.first(),
            port_count: e.ports.len(),
            connections: e.connections,
            anomalous_connections: e.anomalous,
            peak_packets_per_second: e.peak_pps.map(f64::round),
            held_requests: (e.held_requests > 0).then_some(e.held_requests),
            merged_into: None,
            features: top_features(e),
            top_features: Vec::new(),
            strongest: e.strongest,
            example: e.example.clone().unwrap_or(Example {
                orig_addr: IpAddr::from([0, 0, 0, 0]),
                orig_port: 0,
                resp_addr: IpAddr::from([0, 0, 0, 0]),
                resp_port: 0,
                protocol: self.protocol,
                start_unix_ns: 0,
                community_id: String::new(),
            }),
        }
    }
}

/// The flow features with the largest mean over the anomalous connections, among the window
/// and basic features that describe attacks (counts, error and diversity rates, flags).
fn top_features(e: &Evidence) -> Vec<FeatureMean> {
    if e.anomalous == 0 {
        return Vec::new();
    }
    let names: Vec<&'static str> = FeatureSet::Flow
        .indices()
        .iter()
        .map(|&i| FEATURE_NAMES[i])
        .collect();
    // Rates are in [0, 1] and counts up to 511 or 255: compare on a common scale.
    let scale = |name: &str| match name {
        "count" | "srv_count" => 511.0,
        "dst_host_count" | "dst_host_srv_count" => 255.0,
        _ => 1.0,
    };
    let mut means: Vec<(f64, FeatureMean)> = names
        .iter()
        .zip(&e.feature_sums)
        .filter(|(n, _)| n.ends_with("_rate") || n.ends_with("count"))
        .map(|(&name, &sum)| {
            let mean = sum / e.anomalous as f64;
            (
                mean / scale(name),
                FeatureMean {
                    name,
                    mean: (mean * 1000.0).round() / 1000.0,
                },
            )
        })
        .collect();
    means.sort_by(|a, b| b.0.total_cmp(&a.0));
    means
        .into_iter()
        .take(TOP_FEATURES)
        .map(|(_, f)| f)
        .collect()
}

/// Counters of the tracker, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncidentStats {
    /// Incidents opened so far, by kind.
    pub opened: BTreeMap<IncidentKind, u64>,
    /// Incidents open now, by kind.
    pub open: BTreeMap<IncidentKind, u64>,
    /// Candidates dropped because of `max_candidates`.
    pub candidates_dropped: u64,
    /// Candidates whose evidence outlived the horizon and started again.
    pub candidates_restarted: u64,
    /// Ordinary exchanges not counted for their source and port, or for their source and the
    /// host's service (`max_candidates` of each followed): a sweep's failures, or a client's
    /// flagged calls towards an anomalous source, then weigh more, never less.
    pub exchanges_untracked: u64,
    /// Anomalous early verdicts forgotten before their connections' final records (the map
    /// of four times `max_candidates` was full: its older half went): those final records
    /// count again.
    pub early_verdicts_forgotten: u64,
}

/// Groups anomalous connections into incidents; see the module docs.
#[derive(Debug)]
pub struct IncidentTracker {
    config: IncidentConfig,
    /// A prefix that makes ids unique across runs (the first evidence's time, hex).
    id_prefix: Option<String>,
    next_id: u64,
    candidates: Map<Key, Evidence>,
    /// Candidate keys in the order they were last fed, for expiry (stale entries skipped).
    fed: VecDeque<(u64, Key)>,
    open: Map<Key, Incident>,
    /// Connections still open whose anomalous early verdict was counted as evidence, and
    /// whether it was malformed then (`ConnectionRecord::malformed`). Two generations, each
    /// of at most twice `max_candidates`: new entries go to `counted`; when it is full it
    /// becomes `counted_old` and the generation before is forgotten (counted in
    /// [`IncidentStats::early_verdicts_forgotten`]). A full map so forgets its older half, the
    /// connections most likely ended unseen (their final records lost), where clearing it
    /// whole forgot the connections of the last seconds too.
    counted: Map<ConnId, bool>,
    counted_old: Map<ConnId, bool>,
    /// Conversations still open that the volume rule flagged at their early verdict, and the
    /// key of the incident that took them. Such a conversation is a flood by itself and gets
    /// one early verdict: without this, its incident would close `quiet` after that verdict
    /// while the flood goes on. Until its final record (the flood's end plus the idle timeout)
    /// its incident stays open; the final record moves the incident's last moment to the
    /// flood's last packet.
    live: Map<ConnId, Key>,
    /// Keys of the candidates waiting for the volume rule (`Evidence::waited_ns`), so that
    /// `tick` looks at those, not at every candidate (up to `max_candidates` per kind, under a
    /// flood). An entry whose candidate went (opened, taken over, forgotten) is dropped there.
    waiting: Set<Key>,
    /// The key of each group's open incident ([`Key::group`]): where its next scan, sweep or
    /// flood goes instead of opening an incident of its own ([`Self::widen`]).
    groups: Map<Group, Key>,
    /// Each source's ordinary exchanges per service port ([`Served`]), at most
    /// `max_candidates`.
    served: Map<(IpAddr, Transport, u16), Served>,
    /// Each source's last ordinary exchange with each service of a host (source, host,
    /// transport, port), at most `max_candidates`, forgotten after `window` without one: a
    /// flagged exchange with a service that serves the source ordinarily is no evidence of an
    /// anomalous source ([`IncidentTracker::observe`]).
    regulars: Map<(IpAddr, IpAddr, Transport, u16), u64>,
    /// When `served` and `regulars` were last swept of sources quiet for `window`.
    served_swept_ns: u64,
    stats: IncidentStats,
}

impl IncidentTracker {
    pub fn new(config: IncidentConfig) -> IncidentTracker {
        IncidentTracker {
            config,
            id_prefix: None,
            next_id: 0,
            candidates: Map::default(),
            fed: VecDeque::new(),
            open: Map::default(),
            counted: Map::default(),
            counted_old: Map::default(),
            live: Map::default(),
            waiting: Set::default(),
            groups: Map::default(),
            served: Map::default(),
            regulars: Map::default(),
            served_swept_ns: 0,
            stats: IncidentStats::default(),
        }
    }

    pub fn stats(&self) -> &IncidentStats {
        &self.stats
    }

    /// A scored connection, its verdict taken at `at_ns` (its final moment, or the moment of an
    /// early verdict, end reason `ongoing`). Lines for incidents it opens or updates are
    /// appended to `out`.
    ///
    /// A connection counts once: when its early verdict was anomalous, that was its evidence,
    /// and its final verdict (up to a minute later, for UDP and ICMP) adds nothing, so that an
    /// attack's connections do not reopen its incident after it went quiet; when it was
    /// normal, the connection counts at its final record only.
    pub fn observe(
        &mut self,
        rec: &ConnectionRecord,
        s: &Scored,
        at_ns: u64,
        out: &mut Vec<IncidentLine>,
    ) {
        let mut only_malformed = false;
        if rec.end_reason == EndReason::Ongoing {
            // A normal early verdict is no evidence, and the connection counts at its final
            // record (counting it at both made a flood of connections judged normal early and
            // flagged at their end, an ACK or FIN flood's, count each twice).
            if !s.verdict.anomalous {
                return;
            }
            if self.counted.len() >= self.config.max_candidates * 2 {
                // The older generation goes; the full one keeps its room (no reallocation).
                self.stats.early_verdicts_forgotten += self.counted_old.len() as u64;
                std::mem::swap(&mut self.counted, &mut self.counted_old);
                self.counted.clear();
            }
            self.counted.insert(rec.id(), rec.malformed());
        } else {
            if let Some(key) = self.live.remove(&rec.id()) {
                self.conversation_ended(key, rec, s);
            }
            let id = rec.id();
            match self
                .counted
                .remove(&id)
                .or_else(|| self.counted_old.remove(&id))
            {
                // Its final record counts again only where it turned malformed since its
                // early verdict (a ping of death's wrong fragment came after it), and there
                // only: evidence for the conversation's `malformed` incident.
                Some(false) if rec.malformed() => only_malformed = true,
                Some(_) => return,
                None => {}
            }
        }
        // An ordinary exchange with a service, for the sweeps of its source ([`Served`]).
        if !s.verdict.anomalous && exchanged(rec) {
            self.count_exchange(rec, at_ns);
        }
        // Silenced by an operator's rule: recorded and scored, but not evidence.
        if s.suppressed_by.is_some() {
            return;
        }
        // A flood of SYN-ACKs runs from the conversations' responders to their originators
        // (`VolumeHit::reversed`): its incident names the sender as the source.
        let reversed;
        let rec = match s.volume.is_some_and(|h| h.reversed) {
            true => {
                reversed = rec.reversed();
                &reversed
            }
            false => rec,
        };
        let mut keys = keys_of(rec);
        if only_malformed {
            keys = keys.map(|k| k.filter(|k| matches!(k, Key::Malformed(..))));
        }
        // A verdict the volume rule flagged by a rate belongs to its flood: taken by it when
        // open, opening it otherwise (below, the rate opens it by itself), even where another
        // incident of its connections is open: a port scan of the host (for a flood at the
        // host, the scan's first connections, judged by the model before the host's rate
        // could be), or a scan or sweep from the same source before it flooded.
        let at_host = s.volume.is_some_and(|h| h.scope == VolumeScope::Host);
        let at_logins = s.volume.is_some_and(|h| h.scope == VolumeScope::Logins);
        let rated_key = match s.volume.map(|h| h.scope) {
            Some(VolumeScope::Host) => Some(Key::HostFlood(rec.resp_addr)),
            Some(VolumeScope::Logins) => {
                Some(Key::Logins(rec.orig_addr, rec.resp_addr, rec.resp_port))
            }
            Some(VolumeScope::Target | VolumeScope::Conversation | VolumeScope::Held) => {
                keys[0].map(|k| self.open_key(k))
            }
            None => None,
        };
        let claimed = match rated_key {
            Some(k) if self.open.contains_key(&k) => Some(k),
            Some(_) if !late_target_verdict(rec, s) => None,
            _ => {
                // A host's flood takes only anomalous connections: it spans every UDP port of the
                // host, whose ordinary traffic (a resolver's queries) would keep it open forever;
                // so do a host's floods widened over its ports.
                let open = keys
                    .iter()
                    .flatten()
                    .filter(|k| {
                        s.verdict.anomalous || !matches!(k, Key::HostFlood(_) | Key::Target(..))
                    })
                    .find(|k| self.open.contains_key(k))
                    .copied();
                // A scan of the host open before the host's attack widened keeps its own
                // connections (a slow scan going on while a distributed one begins): it is
                // another attack, as when it stays apart at the widening (`register`).
                let own_scan = Key::Scan(rec.orig_addr, rec.resp_addr, rec.transport);
                match open {
                    Some(Key::Target(..)) if self.open.contains_key(&own_scan) => Some(own_scan),
                    open => open,
                }
            }
        };
        // An incident already open on one of its keys takes it, anomalous or not (a host's
        // flood: anomalous only).
        if let Some(key) = claimed {
            let update_every = self.config.update_every.as_nanos() as u64;
            self.pin_if_live(key, rec, s);
            if let Some(inc) = self.open.get_mut(&key) {
                inc.evidence.add(rec, s, at_ns);
                inc.dirty |= s.verdict.anomalous;
                if inc.dirty && at_ns.saturating_sub(inc.last_line_ns) >= update_every {
                    inc.last_line_ns = at_ns;
                    inc.dirty = false;
                    out.push(inc.line(IncidentState::Update));
                }
            }
            // A flood of one port from a source whose scan of the host is open: one attacker
            // address, scanning and then flooding. The scan takes its connections, but a run
            // of them to one port, unbroken by others of the scan, still counts towards that
            // port's flood, which takes the rest once it opens (claimed first). Without this
            // the scan would take the whole flood while it lasts. A run, not every connection:
            // a scan repeated over the same ports, or nmap's retries, never makes one long
            // enough, and the scan keeps at most one such candidate at a time.
            if matches!(key, Key::Scan(..) | Key::Recon(..))
                && let Some(f @ Key::Flood(..)) = keys[0]
                && counts_as_new_evidence(rec, s)
            {
                let broken = match self.open.get_mut(&key) {
                    Some(inc) => match &mut inc.run {
                        Some((k, n)) if *k == f => {
                            *n += 1;
                            None
                        }
                        run => run.replace((f, 1)).map(|(k, _)| k),
                    },
                    None => None,
                };
                // The run before it ended: its flood was not to be.
                if let Some(k) = broken {
                    self.candidates.remove(&k);
                }
                self.feed_candidates(std::iter::once(f), rec, s, at_ns, out);
            }
            return;
        }
        if !counts_as_new_evidence(rec, s) {
            return;
        }
        // A flagged exchange with a service that served the same source ordinarily within the
        // window is that client's routine use, flagged for its context (its windows holding
        // the refusals of the host's other services, say): the model judged the same use
        // ordinary a moment before. Not evidence that the source is anomalous. A source of
        // such exchanges and of probes is still judged by those (its scans, sweeps, floods).
        let window = self.config.window.as_nanos() as u64;
        let regular = exchanged(rec)
            && self
                .regulars
                .get(&(rec.orig_addr, rec.resp_addr, rec.transport, port_of(rec)))
                .is_some_and(|&last_ns| at_ns.saturating_sub(last_ns) < window);
        // A verdict at the host is evidence for the host's flood alone (which it opens: it
        // carries a rate), the login rule's for its source's guessing alone; any other is
        // evidence for every other kind.
        let candidates = keys.into_iter().flatten().filter(|k| match k {
            Key::HostFlood(_) => at_host,
            Key::Logins(..) => at_logins,
            // Opened only by widening an open scan, sweep or flood.
            Key::Recon(..) | Key::Target(..) => false,
            Key::Source(_) => !at_host && !at_logins && !regular,
            _ => !at_host && !at_logins,
        });
        self.feed_candidates(candidates, rec, s, at_ns, out);
    }

    /// Adds `rec` (scored `s`, at `at_ns`) to the candidates `keys`, in order, opening the
    /// first that passes its threshold.
    fn feed_candidates(
        &mut self,
        keys: impl Iterator<Item = Key>,
        rec: &ConnectionRecord,
        s: &Scored,
        at_ns: u64,
        out: &mut Vec<IncidentLine>,
    ) {
        let horizon = u64::try_from(self.config.horizon.as_nanos()).unwrap_or(u64::MAX);
        for key in keys {
            let e = self.candidates.entry(key).or_default();
            if e.anomalous > 0 && at_ns.saturating_sub(e.first_ns) >= horizon {
                // Older than the horizon: a rate, not a running total (see the module docs).
                *e = Evidence::default();
                self.stats.candidates_restarted += 1;
            }
            e.add(rec, s, at_ns);
            self.fed.push_back((at_ns, key));
            // A UDP port scan of a host the volume rule cannot judge yet may be a flood's
            // first moments (`crate::detect::TargetVerdict::pending`): its evidence waits
            // for the rule's verdict, the next decided connection on its key or `tick`.
            let undecided = s.volume_pending && matches!(key, Key::Scan(_, _, Transport::Udp));
            let passed = self.passes(&key);
            if undecided && passed.is_some() {
                if let Some(e) = self.candidates.get_mut(&key) {
                    e.waited_ns.get_or_insert(at_ns);
                    self.waiting.insert(key);
                }
                continue;
            }
            if let Some(kind) = passed {
                let evidence = self.candidates.remove(&key).unwrap_or_default();
                self.open_incident(key, kind, rec.transport.as_str(), evidence, at_ns, out);
                // Where it joined its host's floods, the widened incident holds it.
                self.pin_if_live(self.open_key(key), rec, s);
                break;
            }
        }
        self.bound_candidates();
    }

    /// The host's UDP flood `flood`, opening on `key`, takes over the UDP port scans of its
    /// `target` that are its own start: those that waited for the volume rule's verdict on
    /// the host, and those that began at most [`TAKE_OVER_NS`] before the flood, candidates and
    /// open ones. Their evidence joins the flood's (so its `open` line tells the whole
    /// attack), and each open scan closes with a line naming the flood (`merged_into`),
    /// returned, so that the attack is one incident to follow. A flood over many ports from
    /// few sources is a port scan to the model's first verdicts, before the rule has seen
    /// enough of the host to judge it: such a scan waits while the rule is undecided
    /// (`Scored::volume_pending`), and is open here only where a verdict came without the
    /// mark (a verdict of a conversation whose second was not yet at the host's bar). A scan
    /// that began earlier is another attack, and stays one.
    fn take_over_scans(
        &mut self,
        key: Key,
        flood: &mut Incident,
        target: IpAddr,
    ) -> Vec<IncidentLine> {
        // The flood's own first connections began at most the rule's time to decide before
        // the flood's first verdict at the host (the second it began, and the early verdict's
        // delay); a scan that began earlier is another attack, and stays one.
        let since_ns = flood.evidence.start_ns.saturating_sub(TAKE_OVER_NS);
        // A scan that waited for the rule's verdict on this host as the flood began is the
        // flood's, whenever it began (its source may have sent a few odd datagrams a minute
        // before).
        let of_flood = |k: &Key, e: &Evidence| {
            matches!(k, Key::Scan(_, t, Transport::Udp) | Key::Target(t, Transport::Udp) if *t == target)
                && (e.start_ns >= since_ns || e.waited_ns.is_some_and(|w| w >= since_ns))
        };
        let mut scans: Vec<Key> = self
            .open
            .iter()
            .filter(|(k, inc)| of_flood(k, &inc.evidence))
            .map(|(k, _)| *k)
            .collect();
        scans.sort_unstable();
        let mut waiting: Vec<Key> = self
            .candidates
            .iter()
            .filter(|(k, e)| of_flood(k, e))
            .map(|(k, _)| *k)
            .collect();
        waiting.sort_unstable();
        for k in waiting {
            if let Some(e) = self.candidates.remove(&k) {
                flood.evidence.merge(&e);
            }
        }
        let mut closed = Vec::new();
        for scan_key in scans {
            let Some(scan) = self.open.remove(&scan_key) else {
                continue;
            };
            self.forget_group(scan_key);
            flood.evidence.merge(&scan.evidence);
            flood.live += scan.live;
            for k in self.live.values_mut() {
                if *k == scan_key {
                    *k = key;
                }
            }
            let mut line = scan.line(IncidentState::Closed);
            line.merged_into = Some(flood.id.clone());
            closed.push(line);
            if let Some(n) = self.stats.open.get_mut(&scan.kind) {
                *n = n.saturating_sub(1);
            }
        }
        closed
    }

    /// Keeps the incident open on `key` open while `rec` lasts, if `rec` is the early verdict
    /// of a conversation the volume rule flagged (see [`Self::live`]). At most
    /// `max_candidates` such conversations are followed; beyond, an incident closes `quiet`
    /// after its last evidence, as any other.
    fn pin_if_live(&mut self, key: Key, rec: &ConnectionRecord, s: &Scored) {
        let pinned = rec.end_reason == EndReason::Ongoing
            && s.volume
                .is_some_and(|h| matches!(h.scope, VolumeScope::Conversation | VolumeScope::Held))
            && self.live.len() < self.config.max_candidates;
        if !pinned || self.live.contains_key(&rec.id()) {
            return;
        }
        if let Some(inc) = self.open.get_mut(&key) {
            inc.live += 1;
            self.live.insert(rec.id(), key);
        }
    }

    /// The final record of a conversation that kept the incident on `key` open: the incident
    /// may close once `quiet` has passed since the conversation's last packet, and the
    /// conversation's rate over its whole life counts towards the incident's peak.
    fn conversation_ended(&mut self, key: Key, rec: &ConnectionRecord, s: &Scored) {
        let Some(inc) = self.open.get_mut(&key) else {
            return;
        };
        inc.live = inc.live.saturating_sub(1);
        let e = &mut inc.evidence;
        e.last_ns = e.last_ns.max(rec.end_unix_ns);
        if let Some(hit) = s.volume {
            let pps = hit.packets_per_second;
            e.peak_pps = Some(e.peak_pps.map_or(pps, |p| p.max(pps)));
        }
        inc.dirty = true;
    }

    /// Which incident a candidate's evidence makes, if it passes its threshold.
    fn passes(&self, key: &Key) -> Option<IncidentKind> {
        let c = &self.config;
        let e = self.candidates.get(key)?;
        match key {
            // One conversation at a flood's rate is the flood (`crate::detect::volume`).
            Key::Flood(_, t, _)
                if e.anomalous >= u64::from(c.flood_connections)
                    || e.peak_pps.is_some()
                    || e.held_requests > 0 =>
            {
                match t {
                    Transport::Tcp => Some(IncidentKind::Flood),
                    Transport::Udp => Some(IncidentKind::UdpFlood),
                    Transport::Icmp => Some(IncidentKind::IcmpFlood),
                    // Never anomalous: not scored.
                    Transport::Sctp | Transport::Unknown => None,
                }
            }
            Key::HostFlood(_) if e.peak_pps.is_some() => Some(IncidentKind::UdpFlood),
            // Probes of many ports: not a client served on many ports, refused on a few.
            Key::Scan(..) if e.probe_ports.len() >= c.scan_ports as usize => {
                Some(IncidentKind::PortScan)
            }
            // Not a client of the service that was served more often than it failed.
            Key::Sweep(src, t, port)
                if e.targets.len() >= c.sweep_hosts as usize
                    && self
                        .served
                        .get(&(*src, *t, *port))
                        .map_or(0, |s| s.exchanges)
                        <= e.anomalous =>
            {
                Some(IncidentKind::HostSweep)
            }
            Key::Source(_) if e.anomalous >= u64::from(c.source_connections) => {
                Some(IncidentKind::AnomalousSource)
            }
            // Fed by the login rule's verdicts only, each at a guesser's rate by itself.
            Key::Logins(..) if e.anomalous > 0 => Some(IncidentKind::BruteForce),
            Key::Malformed(..) if e.anomalous > 0 => Some(IncidentKind::Malformed),
            _ => None,
        }
    }

    fn open_incident(
        &mut self,
        key: Key,
        kind: IncidentKind,
        protocol: &'static str,
        evidence: Evidence,
        at_ns: u64,
        out: &mut Vec<IncidentLine>,
    ) {
        let evidence = match self.widen(key, evidence, at_ns, out) {
            Some(evidence) => evidence,
            None => return,
        };
        let prefix = self
            .id_prefix
            .get_or_insert_with(|| format!("{:x}", evidence.first_ns / 1_000_000))
            .clone();
        self.next_id += 1;
        let mut inc = Incident {
            id: format!("{prefix}-{}", self.next_id),
            kind,
            protocol,
            evidence,
            last_line_ns: at_ns,
            dirty: false,
            live: 0,
            run: None,
        };
        let taken_over = match key {
            Key::HostFlood(target) => self.take_over_scans(key, &mut inc, target),
            _ => Vec::new(),
        };
        out.push(inc.line(IncidentState::Open));
        out.extend(taken_over);
        *self.stats.opened.entry(kind).or_default() += 1;
        *self.stats.open.entry(kind).or_default() += 1;
        self.open.insert(key, inc);
        self.register(key);
    }

    /// A port scan or host sweep about to open (`key`, with its `evidence`) while its source
    /// has one open, over any transport: one attacker's reconnaissance of a network (`nmap`
    /// over many hosts and ports is a port scan of each host and a sweep of each port; its host
    /// discovery an ICMP and a TCP sweep at once) is one attack, so the open one takes the new
    /// one's evidence and, moved to [`Key::Recon`], every later connection of the source; its
    /// kind and id stay those it opened with, its lines list the hosts, ports and transports it
    /// grew to. The same for
    /// a flood about to open while another port of its host is flooded over the same
    /// transport, and for a TCP or UDP port scan of a host whose scan from another source began
    /// within [`TAKE_OVER_NS`] of it ([`Group::Scanned`]): one attack on the host, moved to
    /// [`Key::Target`] (which takes anomalous connections only: the host's ordinary traffic
    /// on its other ports is no flood's). Where another incident holds the wide key (the
    /// host's floods widened before its scans), the incident takes the evidence where it is.
    /// Returns the evidence back when there is nothing to widen (the caller opens the
    /// incident).
    ///
    /// Evidence that other candidates of the source gathered before the widening stays with
    /// them (they are forgotten after `window`): finding them would mean walking every
    /// candidate, which a scan from many addresses would make a cost per address.
    fn widen(
        &mut self,
        key: Key,
        evidence: Evidence,
        at_ns: u64,
        out: &mut Vec<IncidentLine>,
    ) -> Option<Evidence> {
        let found = key.groups().into_iter().flatten().find_map(|group| {
            let anchor = *self.groups.get(&group)?;
            let inc = self.open.get(&anchor)?;
            let together = match group {
                Group::Scanned(..) => {
                    inc.evidence.start_ns.abs_diff(evidence.start_ns) <= TAKE_OVER_NS
                }
                _ => true,
            };
            together.then_some((group, anchor))
        });
        let Some((group, anchor)) = found else {
            return Some(evidence);
        };
        let Some(mut inc) = self.open.remove(&anchor) else {
            return Some(evidence);
        };
        inc.evidence.merge(&evidence);
        // Moved to the group's wide key, unless another incident holds it (a flood of the
        // host widened before its scans were): then it stays where it is.
        let wide = group.wide();
        let key = if anchor != wide && !self.open.contains_key(&wide) {
            for k in self.live.values_mut() {
                if *k == anchor {
                    *k = wide;
                }
            }
            self.forget_group(anchor);
            wide
        } else {
            anchor
        };
        // A wider attack than its last line said: said now, at most once per `update_every`.
        inc.dirty = true;
        if at_ns.saturating_sub(inc.last_line_ns) >= self.config.update_every.as_nanos() as u64 {
            inc.last_line_ns = at_ns;
            inc.dirty = false;
            out.push(inc.line(IncidentState::Update));
        }
        self.open.insert(key, inc);
        self.register(key);
        None
    }

    /// Makes `key`'s open incident the one its groups widen, where no other open incident
    /// is. A host's scans that begin together join its newest scan ([`Group::Scanned`]): an
    /// older one still open (a slow scan half a minute before) began too early for them to
    /// join it, and must not keep the scans of a later decoy or distributed scan apart. Its
    /// widened incident ([`Key::Target`]) keeps the group: it takes them all anyway.
    fn register(&mut self, key: Key) {
        for group in key.groups().into_iter().flatten() {
            let taken = self.groups.get(&group).is_some_and(|k| {
                *k != key
                    && self.open.contains_key(k)
                    && !(matches!(group, Group::Scanned(..)) && matches!(k, Key::Scan(..)))
            });
            if !taken {
                self.groups.insert(group, key);
            }
        }
    }

    /// Forgets `key` as its groups' open incident (closed, moved, or taken over).
    fn forget_group(&mut self, key: Key) {
        for group in key.groups().into_iter().flatten() {
            if self.groups.get(&group) == Some(&key) {
                self.groups.remove(&group);
            }
        }
    }

    /// The key of the open incident a flood-shaped `key` belongs to: itself, or its host's
    /// widened floods ([`Key::Target`]). Not a single port's flood of the host: a verdict of
    /// another port opens its own candidate, which widens that flood (`widen`).
    fn open_key(&self, key: Key) -> Key {
        match key.groups()[0] {
            Some(g @ Group::Target(..)) if !self.open.contains_key(&key) => self
                .groups
                .get(&g)
                .copied()
                .filter(|k| *k == g.wide())
                .unwrap_or(key),
            _ => key,
        }
    }

    /// Closes incidents quiet for `quiet` and forgets candidates not fed for `window`, as of
    /// `now_ns` (the connections' clock).
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<IncidentLine>) {
        // Waiting scans (`Evidence::waited_ns`) whose last connection is older than the volume
        // rule's time to decide: the rule found no flood of their host, or a flood that did
        // not take them over.
        let candidates = &self.candidates;
        self.waiting
            .retain(|k| candidates.get(k).is_some_and(|e| e.waited_ns.is_some()));
        let mut waited: Vec<Key> = self
            .waiting
            .iter()
            .filter(|k| {
                candidates
                    .get(k)
                    .is_some_and(|e| now_ns.saturating_sub(e.last_ns) >= TAKE_OVER_NS)
            })
            .copied()
            .collect();
        waited.sort_unstable();
        for key in waited {
            self.waiting.remove(&key);
            if let (Some(kind), Key::Scan(_, _, t)) = (self.passes(&key), key)
                && let Some(evidence) = self.candidates.remove(&key)
            {
                self.open_incident(key, kind, t.as_str(), evidence, now_ns, out);
            }
        }
        let quiet = self.config.quiet.as_nanos() as u64;
        let mut closed: Vec<Key> = self
            .open
            .iter()
            .filter(|(_, inc)| {
                inc.live == 0 && now_ns.saturating_sub(inc.evidence.last_ns) >= quiet
            })
            .map(|(k, _)| *k)
            .collect();
        closed.sort_unstable();
        for key in closed {
            if let Some(inc) = self.open.remove(&key) {
                self.forget_group(key);
                out.push(inc.line(IncidentState::Closed));
                if let Some(n) = self.stats.open.get_mut(&inc.kind) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        let window = self.config.window.as_nanos() as u64;
        // A quarter of the window apart: a scan of the map per 15 s, not per second.
        if now_ns.saturating_sub(self.served_swept_ns) >= window / 4 {
            self.served_swept_ns = now_ns;
            self.served
                .retain(|_, s| now_ns.saturating_sub(s.last_ns) < window);
            self.regulars
                .retain(|_, &mut last_ns| now_ns.saturating_sub(last_ns) < window);
        }
        while let Some(&(t, key)) = self.fed.front() {
            if now_ns.saturating_sub(t) < window {
                break;
            }
            self.fed.pop_front();
            if self
                .candidates
                .get(&key)
                .is_some_and(|e| now_ns.saturating_sub(e.last_ns) >= window)
            {
                self.candidates.remove(&key);
            }
        }
    }

    /// Closes every open incident (end of observation), those of conversations still open
    /// too.
    pub fn finish(&mut self, out: &mut Vec<IncidentLine>) {
        self.live.clear();
        for inc in self.open.values_mut() {
            inc.live = 0;
        }
        self.tick(u64::MAX, out);
    }

    /// Counts an ordinary exchange of `rec`'s source with its service port ([`Served`]), and
    /// remembers it as the source's with the host's service (`regulars`).
    fn count_exchange(&mut self, rec: &ConnectionRecord, at_ns: u64) {
        // Counted once as untracked where either map has no room for it.
        let regular = (rec.orig_addr, rec.resp_addr, rec.transport, port_of(rec));
        let regular_room = self.regulars.len() < self.config.max_candidates
            || self.regulars.contains_key(&regular);
        if regular_room {
            let last_ns = self.regulars.entry(regular).or_default();
            *last_ns = (*last_ns).max(at_ns);
        }
        let key = (rec.orig_addr, rec.transport, port_of(rec));
        let room = self.served.len() < self.config.max_candidates;
        let horizon = u64::try_from(self.config.horizon.as_nanos()).unwrap_or(u64::MAX);
        let fresh = Served {
            first_ns: at_ns,
            last_ns: at_ns,
            exchanges: 0,
        };
        let served = match self.served.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) if room => e.insert(fresh),
            std::collections::hash_map::Entry::Vacant(_) => {
                self.stats.exchanges_untracked += 1;
                return;
            }
        };
        if !regular_room {
            self.stats.exchanges_untracked += 1;
        }
        if at_ns.saturating_sub(served.first_ns) >= horizon {
            *served = fresh;
        }
        served.last_ns = served.last_ns.max(at_ns);
        served.exchanges += 1;
    }

    fn bound_candidates(&mut self) {
        while self.candidates.len() > self.config.max_candidates * 4 {
            match self.fed.pop_front() {
                Some((_, key)) => {
                    if self.candidates.remove(&key).is_some() {
                        self.stats.candidates_dropped += 1;
                    }
                }
                None => break,
            }
        }
    }
}

/// Whether `s` is the volume rule's verdict by its target's rate on the final record of a
/// conversation old enough to have had its early verdict (`crate::detect::TargetRates`): a
/// flood's conversation judged again a minute later (the UDP idle timeout), after the flood's
/// incident may have closed. It counts towards that incident while it is open, and opens
/// nothing: the flood was judged when it happened. (A conversation the rule flagged by its
/// own rate keeps its incident open until its final record instead, `IncidentTracker::live`.)
/// Not TCP: the rule judges a TCP attempt at its final record only (an unanswered one's comes
/// at the attempt timeout), which is then the flood as it happens.
fn late_target_verdict(rec: &ConnectionRecord, s: &Scored) -> bool {
    let early_ns = crate::lifecycle::LifecycleConfig::DEFAULT_EARLY_VERDICT_AFTER.as_nanos() as u64;
    s.volume
        .is_some_and(|h| matches!(h.scope, VolumeScope::Target | VolumeScope::Host))
        && rec.transport != Transport::Tcp
        && rec.end_reason != EndReason::Ongoing
        && rec.final_unix_ns.saturating_sub(rec.start_unix_ns) >= early_ns
}

/// Whether `rec`, scored `s`, is evidence for a candidate: anomalous, not an ICMP error, and
/// not the volume rule's late verdict on a flood judged before ([`late_target_verdict`]).
/// Whether both ends sent payload: a service's work for a client, which no probe gets (a SYN
/// or connect scan's probes carry none; an answered ping is an exchange too).
fn exchanged(rec: &ConnectionRecord) -> bool {
    rec.orig_bytes > 0 && rec.resp_bytes > 0
}

fn counts_as_new_evidence(rec: &ConnectionRecord, s: &Scored) -> bool {
    s.verdict.anomalous && !is_icmp_error(rec) && !late_target_verdict(rec, s)
}

/// The candidate keys of a connection, in the order an open incident claims it.
fn keys_of(rec: &ConnectionRecord) -> [Option<Key>; 9] {
    let t = rec.transport;
    let port = port_of(rec);
    let flood = match t {
        Transport::Icmp if !rec.is_icmp_echo() => None,
        _ => Some(Key::Flood(rec.resp_addr, t, port)),
    };
    [
        flood,
        // A host's floods widened over its ports (open only as such, `widen`).
        flood.map(|_| Key::Target(rec.resp_addr, t)),
        // A source's password guessing, before its scan of the host: a guesser's sessions to
        // one port are no scan.
        (t == Transport::Tcp && crate::detect::logins::is_login_port(port)).then_some(Key::Logins(
            rec.orig_addr,
            rec.resp_addr,
            port,
        )),
        // A source's scans and sweeps widened into one (open only as such, `widen`).
        Some(Key::Recon(rec.orig_addr)),
        Some(Key::Scan(rec.orig_addr, rec.resp_addr, t)),
        // After a scan: a scan of the host open before its flood keeps its own connections
        // (the flood takes the volume rule's verdicts at the host first, in `observe`).
        (t == Transport::Udp).then_some(Key::HostFlood(rec.resp_addr)),
        Some(Key::Sweep(rec.orig_addr, t, port)),
        Some(Key::Source(rec.orig_addr)),
        // Last: its first anomalous conversation opens it, and it then takes its source's
        // later ones to the host over the transport.
        rec.malformed()
            .then_some(Key::Malformed(rec.orig_addr, rec.resp_addr, t)),
    ]
}

#[cfg(test)]
mod tests;
