//! The volume rule: one conversation whose packet rate is a flood's, whatever the model says.
//!
//! Why a rule beside the model: the sensor keeps a run of pings with one identifier, and a UDP
//! exchange on one pair of ports, as one conversation (`docs/features.md`), described to the
//! model as one exchange. A flood that keeps its identifier or ports (`hping3 --icmp --flood`,
//! `ping -f`, `hping3 --udp --flood` from one source port) is then one connection with ordinary
//! features, which the model, trained on 1998's rows of one ICMP message each, scores normal
//! (`docs/design.md`, "Attack shapes"). What sets it apart is its rate, which no KDD feature
//! carries.
//!
//! The rule flags a conversation of at least [`VolumeConfig::min_packets`] packets from its
//! originator whose mean rate over its life so far (the early verdict a second after its first
//! packet, then its final record) reaches:
//! - for ICMP echo (requests, or replies sent unasked as a reflected flood does),
//!   [`VolumeConfig::icmp_echo_pps`]: echo is a diagnostic, and no diagnostic tool sends
//!   anything near it to one host (`ping` sends 1 per second, 5 at most for a user; `mtr` and
//!   `smokeping` about 1);
//! - for UDP that the responder leaves unanswered (at most 1% of the originator's datagrams
//!   answered), [`VolumeConfig::udp_one_way_pps`]: about 56 Mbit/s of full-size datagrams,
//!   above what one unicast one-way stream carries in normal use (a 4K video stream over RTP is
//!   about 2,000 datagrams/s, a router's flow export or a firewall's syslog a few hundred to a
//!   few thousand). Answered UDP at any rate is a conversation (QUIC, a VPN, a call), and
//!   multicast and broadcast streams are not judged (`NotScored::GroupDestination`).
//!
//! Its second half, [`TargetRates`], judges a UDP flood from changing source ports (one
//! conversation per datagram, each ordinary) by its target's rate instead: the rate at one
//! service of a host, or, for a flood that changes destination ports too, at the host. It
//! judges a TCP SYN flood the same way, by the new connections per second to one service
//! that never complete their handshake: the model catches most SYN floods (unanswered, or
//! refused), but not one whose SYN-ACKs its source resets (`hping3 -S` from the attacker's own
//! address, whose kernel knows no such connection): each is a zero-byte `RSTO` with
//! ordinary window features, which the normal profile finds ordinary on a web port.
//!
//! An established TCP connection at any rate is a transfer: the first half leaves TCP alone.
//!
//! A flagged conversation is anomalous with detector `volume` and a combined score of the
//! larger of the model's and its rate over the threshold (at least 1), and opens its flood
//! incident by itself
//! (`crate::incidents`): the rate is the evidence that a hundred anomalous connections are for
//! the model's verdicts. The thresholds are settings (`[volume]` in the configuration file): a
//! site with a legitimate faster one-way stream raises them, or silences the stream with a
//! `[[suppress]]` rule on `detector = ["volume"]`.

use crate::flows::{ConnectionRecord, EndReason, Transport};

/// When a conversation's rate is a flood's; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VolumeConfig {
    /// Off: no conversation is flagged by its rate.
    pub enabled: bool,
    /// Packets from the originator a conversation needs before its rate counts: a burst of a
    /// few hundred is not a flood, and a rate over a few packets means nothing.
    pub min_packets: u64,
    /// Mean ICMP echo messages per second from the originator.
    pub icmp_echo_pps: f64,
    /// Mean UDP datagrams per second from the originator, in a conversation the responder
    /// answered at most 1% of.
    pub udp_one_way_pps: f64,
    /// New UDP conversations per second from one source to one service, where at most 1% of
    /// that source's conversations with it are answered ([`TargetRates`]): a UDP flood from
    /// one address that changes its source port per datagram (`hping3 --udp` at a fixed
    /// interval, a `scapy` loop), under the service's bar (`udp_one_way_pps`, which a busy
    /// service's many clients must not reach when it goes down).
    pub udp_one_way_per_source_pps: f64,
    /// TCP attempts per second to one service that never complete their handshake, where at
    /// most 1% of the verdicts on its connections are on completed ones ([`TargetRates`]).
    pub tcp_attempts_per_sec: f64,
    /// The same from one source to one service, where at most 1% of that source's
    /// connections to it complete: a SYN flood from one address, whatever the service's other
    /// clients do (a client retries a service that is down a few times a second at most).
    pub tcp_attempts_per_source_per_sec: f64,
    /// Short login sessions from one source to one login service in a minute
    /// ([`super::logins`]): password guessing.
    pub login_sessions_per_min: u32,
    /// Held requests from one source to one service of a host in a minute
    /// ([`super::held`]): a slow attack holding the service's connections.
    pub held_requests_per_min: u32,
}

impl Default for VolumeConfig {
    fn default() -> Self {
        VolumeConfig {
            enabled: true,
            min_packets: 1_000,
            icmp_echo_pps: 1_000.0,
            udp_one_way_pps: 5_000.0,
            udp_one_way_per_source_pps: 1_000.0,
            tcp_attempts_per_sec: 5_000.0,
            tcp_attempts_per_source_per_sec: 100.0,
            login_sessions_per_min: 60,
            held_requests_per_min: 50,
        }
    }
}

/// Whose rate a [`VolumeHit`] measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeScope {
    /// The conversation's own packets ([`VolumeConfig::judge`]).
    Conversation,
    /// New UDP conversations to one service of one host that answers at most 1% of them, or
    /// TCP attempts to one that never complete their handshake, where at most 1% of its
    /// connections complete ([`TargetRates`]).
    Target,
    /// New UDP conversations to one host, whatever their ports, that answers at most 1% of
    /// them ([`TargetRates`]): a flood that changes destination ports, no port of which
    /// reaches the bar.
    Host,
    /// Short login sessions from one source to one login service of a host
    /// ([`super::LoginRates`]): password guessing.
    Logins,
    /// Connections from one source to one service of a host that each hold a request open
    /// without an answer ([`super::HeldRequests`]): a slow attack (slowloris).
    Held,
}

/// What the rule found in a conversation it flags.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VolumeHit {
    pub scope: VolumeScope,
    /// [`VolumeScope::Conversation`]: the originator's mean packets per second over the
    /// conversation so far. [`VolumeScope::Target`]: the new conversations per second to its
    /// target's service (at least one datagram each), answered or not, in the second it began
    /// (or the next), or its flood episode's peak; for TCP, the attempts that never completed
    /// in the second up to its start, or the episode's peak. [`VolumeScope::Host`]: the same
    /// as `Target` over the host's UDP ports. [`VolumeScope::Logins`]: the source's login
    /// sessions to the service per second over the minute up to this one's start.
    /// [`VolumeScope::Held`]: the source's held requests to the service per second over the
    /// minute up to this one's.
    pub packets_per_second: f64,
    /// That rate over the threshold it passed (at least 1): the verdict's combined score.
    pub ratio: f64,
    /// The attack runs from the conversation's responder to its originator: a SYN-ACK nobody
    /// asked for (a SYN-ACK flood's) makes its sender the responder, as the flow table and
    /// Zeek take a SYN-ACK's sender to be, while the sender is the one flooding the
    /// originator's port. Incidents name the ends the other way round.
    pub reversed: bool,
}

impl VolumeHit {
    /// A target's or host's hit at `rate` new conversations (or failed attempts) a second,
    /// its bar being `threshold`.
    fn of_target(scope: VolumeScope, rate: u32, threshold: f64) -> VolumeHit {
        VolumeHit {
            reversed: false,
            scope,
            packets_per_second: f64::from(rate),
            ratio: f64::from(rate) / threshold,
        }
    }
}

/// The originator's mean packets per second over `rec`'s life so far (first to last packet;
/// a conversation of one instant counts as one microsecond long).
fn orig_packets_per_second(rec: &ConnectionRecord) -> f64 {
    let span_ns = rec.end_unix_ns.saturating_sub(rec.start_unix_ns).max(1_000);
    rec.orig_packets as f64 * 1e9 / span_ns as f64
}

impl VolumeConfig {
    /// Whether `rec` is a flood by its rate alone, and by how much.
    pub fn judge(&self, rec: &ConnectionRecord) -> Option<VolumeHit> {
        if !self.enabled || rec.orig_packets < self.min_packets {
            return None;
        }
        let threshold = match rec.transport {
            Transport::Icmp if rec.is_icmp_echo() => self.icmp_echo_pps,
            Transport::Udp if unanswered(rec) => self.udp_one_way_pps,
            _ => return None,
        };
        let pps = orig_packets_per_second(rec);
        (threshold > 0.0 && pps >= threshold).then_some(VolumeHit {
            reversed: false,
            scope: VolumeScope::Conversation,
            packets_per_second: pps,
            ratio: pps / threshold,
        })
    }
}

/// Whether the responder answered at most 1% of the originator's packets (in integers:
/// `100 * answers <= packets`).
fn unanswered(rec: &ConnectionRecord) -> bool {
    rec.resp_packets.saturating_mul(100) <= rec.orig_packets
}

/// Whether a TCP connection never completed its handshake: its originator acknowledged
/// nothing (the SYN-ACK's final ACK, or anything later; a RST carries no acknowledgement in
/// the history), and its responder neither acknowledged anything after its SYN-ACK (which it
/// does only once the handshake is complete) nor sent payload. A SYN flood's connections are
/// all such, answered (SYN-ACK, RST) or not, with payload in the SYN or not; every connection a
/// client makes completes, and so does one the sensor sees one direction of (the client's
/// ACKs, or the server's ACKs and data).
fn incomplete(rec: &ConnectionRecord) -> bool {
    use sensor_common::flow::history::{ACK, DATA};
    rec.history.orig & ACK == 0 && rec.history.resp & (ACK | DATA) == 0 && rec.resp_bytes == 0
}

/// Which end of a TCP conversation sent its stray segments ([`stray`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StraySender {
    Originator,
    /// A SYN-ACK nobody asked for: the flow table (as Zeek) takes a SYN-ACK's sender for the
    /// responder, so the end flooded is the originator's.
    Responder,
}

/// Whether a TCP conversation is a stray segment's, and whose: the sensor did not see it
/// begin, no payload went either way, and one end sent segments no connection of its peer's
/// knows, which the peer answered with nothing or resets. The originator's: a bare ACK, FIN or
/// RST (what ACK, FIN and RST floods send: `hping3 -A`, `-F`, `-R`; with changing source ports
/// each is a conversation of its own); the responder's: a SYN-ACK (`hping3 -SA`, or SYN-ACKs
/// reflected at the originator by servers that got SYNs in its name). Each is judged as a
/// failed attempt. A connection picked up mid-stream (begun before the sensor watched, or
/// after its entry went) carries payload or is acknowledged, and a keep-alive is answered:
/// none is a stray. A segment after a connection's end (a late retransmission, answered by a
/// reset) is one, but its client's other connections complete, so its source and service are
/// not judged flooded.
fn stray(rec: &ConnectionRecord) -> Option<StraySender> {
    use sensor_common::flow::history::{DATA, NON_SYN, RST, SYN, SYN_ACK};
    let (orig, resp) = (rec.history.orig, rec.history.resp);
    // A conversation whose start was seen is no stray's (a SYN sent as a tiny first
    // fragment shows no flags, and the SYN-ACK answering it was asked for).
    if rec.orig_bytes != 0 || rec.resp_bytes != 0 || rec.tcp_start_seen() {
        return None;
    }
    if orig != 0 && orig & (SYN | SYN_ACK | DATA) == 0 && resp & !(NON_SYN | RST) == 0 {
        Some(StraySender::Originator)
    } else if resp & SYN_ACK != 0
        && resp & !(SYN_ACK | NON_SYN | RST) == 0
        && orig & !(NON_SYN | RST) == 0
    {
        Some(StraySender::Responder)
    } else {
        None
    }
}

/// Targets followed at most, services and hosts each; beyond, a new target finds no room until
/// the once-a-second sweep forgets the quiet ones ([`TargetRates::untracked`]). A UDP scan
/// touches a new port per datagram: it fills the services with targets of one conversation
/// each, none a flood, while its host keeps its own room.
const MAX_TARGETS: usize = 65_536;
/// Sources of TCP services followed at most: a flood from spoofed sources fills them with one
/// attempt each (its service's count judges it), and one from a single address needs one.
const MAX_SOURCES: usize = 16_384;
/// How often a target's verdict counts are halved, so that its answered share follows its
/// recent conversations.
const JUDGED_SECS: u64 = 10;
/// Verdicts a target's answered share needs before it counts: the first few conversations of
/// a busy server can be the unanswered ones.
const MIN_JUDGED: u64 = 100;
/// Seconds of openings kept per target: a second is complete about one second after it ends
/// (its conversations' early verdicts), and an `Opened` event the table scan recovered comes
/// up to about a second late.
const KEPT_SECS: u64 = 4;
/// Seconds of failed attempts kept per TCP service: their records come at once (reset,
/// refused), at the attempt timeout (5 s, nobody answered) or about 12 s after they began (a
/// SYN-ACK nobody answered, retransmitted by the server), each counted in the second it began.
const TCP_KEPT_SECS: u64 = 16;
/// A target quiet this long is forgotten by the sweep.
const QUIET_SECS: u64 = 4;
/// Seconds between two flagged seconds that still make one flood (an episode, below).
const EPISODE_GAP_SECS: u64 = 2;
const NS_PER_SEC: u64 = 1_000_000_000;

/// The second half of the volume rule: a UDP flood from changing source ports (`hping3 --udp
/// --flood` by default) is one conversation of one datagram per packet, each ordinary, and no
/// conversation has a rate. Its target's service receives them at the rate instead. This counts,
/// for each UDP service of each host (address and port), the conversations that began in each
/// second, answered or not (from their `Opened` events, so a second is complete when its
/// conversations' early verdicts come, a second after each began), and the verdicts on its
/// conversations (each is judged about twice: early and final), answered or not, halved every
/// `JUDGED_SECS`. An unanswered conversation is flagged when its target's service received
/// at least [`VolumeConfig::udp_one_way_pps`] new conversations in the second it began (or the
/// next), and at most 1% of the verdicts on the service's conversations (at least
/// `MIN_JUDGED` of them) were answered: a busy resolver receives as many, and answers them.
///
/// The seconds so flagged make the target's flood *episode*. A conversation's final record
/// comes a minute after its early verdict (the UDP idle timeout), when its second's count is
/// long forgotten: an unanswered final record whose conversation began within the episode is
/// flagged too, with the episode's peak, so that a flood's records agree with its early
/// verdicts however long it lasts. So is an unanswered conversation of the second after the
/// episode's last, where the flood ended: that second holds only the part of the flood before
/// its end, under the bar.
///
/// The same counts are kept for each host over all its UDP ports: a flood that changes its
/// destination port with every datagram (`hping3 --udp -p ++1`, random ports) spreads over
/// thousands of services, none near the bar, and reaches it at the host. A host's count of a
/// second leaves out its busiest service's, or all its services' at the bar if more: a flood
/// of a port or a few is theirs, and would otherwise make every other port of the host look
/// flooded. (A flood over a few ports that is under the bar once its busiest is left out goes
/// unflagged: a miss, not a false alarm.) A host's answered
/// share is over all its services, so a host that runs a busy service it answers is not judged
/// flooded on its other ports (a miss, not a false alarm). A conversation is judged at its
/// service first, then at its host ([`VolumeScope::Host`]).
///
/// TCP services are counted in a map of their own (a wide TCP scan must not crowd out the UDP
/// services), from the connections' final records: the connections that never completed
/// their handshake (`incomplete`) by the second they began, and the verdicts on its
/// connections, those that completed counting as answered. Such a connection is flagged when
/// the second up to its start (its own second so far, and the second before in proportion)
/// holds at least [`VolumeConfig::tcp_attempts_per_sec`] of them, and at most 1% of the
/// verdicts on the service's connections (100 at least) were on completed ones. The attempts,
/// not all connections: a busy server completes its connections, whose records come when they
/// end (a keep-alive's a minute later), while the few that fail come at once. The second up to
/// its start: an attempt's record comes at once (reset), at the attempt timeout (unanswered) or
/// about 12 s after it began (a SYN-ACK nobody answered), each kind in about the order they
/// began, so while its second is the latest its count is of the attempts before it (a record
/// that comes later is judged on its whole second, `TCP_KEPT_SECS` being kept). Only
/// services: a SYN flood over many ports of a host is a scan to the model, which catches its
/// refused and unanswered attempts. But SYN-ACKs nobody asked for, reflected at ever new ports
/// of a host by the servers that got SYNs in its name, are answers to nothing, which the model
/// does not judge: each sender's are counted over all the host's ports too, at a source's bar.
#[derive(Debug, Default)]
pub struct TargetRates {
    targets: crate::hashing::Map<(std::net::IpAddr, u16), UdpCounts>,
    /// The same counts per host, over all its UDP ports.
    hosts: crate::hashing::Map<std::net::IpAddr, UdpCounts>,
    /// The same per source of each UDP service (source, host, port), at most [`MAX_SOURCES`]:
    /// a flood from one address that changes its source port per datagram, judged on its own
    /// answered share at a source's bar ([`VolumeConfig::udp_one_way_per_source_pps`]). A
    /// client asks again a few times a second at most when its service does not answer, and
    /// one-way UDP (logs, metrics, flow export) is sent from one socket: one conversation,
    /// which [`VolumeConfig::judge`] weighs.
    udp_sources: crate::hashing::Map<(std::net::IpAddr, std::net::IpAddr, u16), UdpCounts>,
    /// The counts per TCP service: its connections that never completed, by the second they
    /// began, and the verdicts on its connections.
    tcp_targets: crate::hashing::Map<(std::net::IpAddr, u16), TcpCounts>,
    /// The same per source of each TCP service (source, host, port), at most
    /// [`MAX_SOURCES`]: a flood from one address, judged on its own completed share.
    tcp_sources: crate::hashing::Map<(std::net::IpAddr, std::net::IpAddr, u16), TcpCounts>,
    /// The same per sender of SYN-ACKs nobody asked for and the host it sends them to, over
    /// all the host's ports (sender, host), at most [`MAX_SOURCES`]: servers that got SYNs in
    /// the host's name (a reflected SYN flood) answer to ever new ports of it, none of which
    /// reaches a bar. No server sends a host SYN-ACKs it never asked for at a source's bar:
    /// one that the sensor sees only the answers of (its SYNs took another path) sends its
    /// data and acknowledgments after them, which no stray carries. The host's completed
    /// connections with the sender count as its answered share.
    tcp_reflected: crate::hashing::Map<(std::net::IpAddr, std::net::IpAddr), TcpCounts>,
    /// Openings not counted: their target found no room, or came more than [`KEPT_SECS`] late.
    untracked: u64,
    /// Failed TCP attempts and new UDP conversations not counted at their source: no room (a
    /// flood from spoofed sources, which its service's count judges), or too late.
    sources_untracked: u64,
    /// The second of the last sweep of quiet targets: one a second, so that the map costs a
    /// scan of it per second, not per new target.
    swept_s: u64,
    /// The same for the TCP services, by the seconds their records come in (a record comes up
    /// to a few seconds after its attempt began, a long connection's much later).
    tcp_swept_s: u64,
}

/// One target's counts over the last `K` seconds; see [`TargetRates`].
#[derive(Clone, Copy, Debug)]
struct TargetCounts<const K: usize> {
    /// The latest second (Unix seconds) a conversation began in, and the openings of it and
    /// the `K` - 1 before it, by second modulo `K`. For a TCP service: its attempts that
    /// never completed.
    second: u64,
    opened: [u32; K],
    /// A host's: the openings of its busiest service in each of those seconds, and of all its
    /// services that reached the bar in it, the larger of which its count leaves out
    /// ([`TargetCounts::spread_in`]). 0 for a service.
    busiest: [u32; K],
    at_bar: [u32; K],
    /// A TCP service's: the latest second one of its records came in, for the sweep (its
    /// records come up to seconds after their attempts began, long connections' much later).
    active_s: u64,
    /// Verdicts on the target's conversations since the second `judged_since`.
    judged_since: u64,
    answered: u32,
    unanswered: u32,
    /// The flood episode: the first and last second flagged, and the peak rate.
    episode: Option<(u64, u64, u32)>,
}

/// A UDP service's or host's counts.
type UdpCounts = TargetCounts<{ KEPT_SECS as usize }>;
/// A TCP service's counts.
type TcpCounts = TargetCounts<{ TCP_KEPT_SECS as usize }>;

impl<const K: usize> Default for TargetCounts<K> {
    fn default() -> Self {
        TargetCounts {
            second: 0,
            opened: [0; K],
            busiest: [0; K],
            at_bar: [0; K],
            active_s: 0,
            judged_since: 0,
            answered: 0,
            unanswered: 0,
            episode: None,
        }
    }
}

impl<const K: usize> TargetCounts<K> {
    /// The seconds kept.
    const KEPT: u64 = K as u64;

    /// Conversations that began in the second `s`, while it is one of those kept.
    fn opened_in(&self, s: u64) -> u32 {
        if s <= self.second && self.second - s < Self::KEPT {
            self.opened[(s % Self::KEPT) as usize]
        } else {
            0
        }
    }

    /// The openings of the second `s` that its rate is judged on: a service's all; a host's
    /// all but its busiest service's, or those of all its services at the bar if more. A flood of one port is its service's, and must not make
    /// the host's other ports look flooded, while the host is for a flood spread over its
    /// ports (a maximum, not the services at the bar: that grows with the second, where
    /// leaving those out only once they reach it would let a service just under the bar
    /// count at the host for a moment).
    fn spread_in(&self, s: u64) -> u32 {
        if s <= self.second && self.second - s < Self::KEPT {
            let k = (s % Self::KEPT) as usize;
            self.opened[k].saturating_sub(self.busiest[k].max(self.at_bar[k]))
        } else {
            0
        }
    }

    /// Notes that a service of this host has had `n` openings in the second `s` (the host's
    /// own opening of it counted first), the bar being `threshold`.
    fn service_count(&mut self, s: u64, n: u32, threshold: f64) {
        if s <= self.second && self.second - s < Self::KEPT {
            let k = (s % Self::KEPT) as usize;
            self.busiest[k] = self.busiest[k].max(n);
            if threshold > 0.0 && f64::from(n) >= threshold {
                // All of its openings when it reaches the bar, then each one.
                let add = if f64::from(n - 1) < threshold { n } else { 1 };
                self.at_bar[k] = self.at_bar[k].saturating_add(add);
            }
        }
    }

    /// Whether a sweep at the second `s` keeps this target, last active in the second
    /// `active` (a UDP target's latest opening, a TCP service's latest failed attempt's
    /// record): active in the last [`QUIET_SECS`], or flagged in the last two minutes (the
    /// final records of a flood episode come up to the idle timeout after it).
    fn kept(&self, active: u64, s: u64) -> bool {
        active + QUIET_SECS > s || self.episode.is_some_and(|(_, last, _)| last + 120 > s)
    }

    /// Counts an opening in the second `s`; false if `s` is too late to count.
    fn open(&mut self, s: u64) -> bool {
        if s > self.second {
            // Forget the seconds that fell out of the kept ones.
            for k in (self.second + 1).max(s.saturating_sub(Self::KEPT - 1))..=s {
                self.opened[(k % Self::KEPT) as usize] = 0;
                self.busiest[(k % Self::KEPT) as usize] = 0;
                self.at_bar[(k % Self::KEPT) as usize] = 0;
            }
            self.second = s;
        } else if self.second - s >= Self::KEPT {
            return false;
        }
        let slot = &mut self.opened[(s % Self::KEPT) as usize];
        *slot = slot.saturating_add(1);
        true
    }
}

/// What [`TargetRates::judge`] found in a conversation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TargetVerdict {
    /// Flagged: its service's or its host's rate is a flood's.
    pub hit: Option<VolumeHit>,
    /// Not flagged yet, but undecided: an unanswered conversation whose host received a
    /// flood's rate of new conversations in its second, with too few verdicts yet
    /// (`MIN_JUDGED`) to tell a flood from a busy server's first moments, and few enough
    /// answered (one in the first hundred) that it may still be a flood. A flood over many
    /// ports is a port scan to the model meanwhile (`crate::incidents` waits before opening
    /// one of such a host).
    pub pending: bool,
}

impl<const K: usize> TargetCounts<K> {
    /// Whether a conversation of the second `s` is undecided as [`TargetVerdict::pending`]
    /// says (its own verdict counted).
    fn pending(&self, s: u64, threshold: f64) -> bool {
        let judged = u64::from(self.answered) + u64::from(self.unanswered);
        let count = self.spread_in(s).max(self.spread_in(s + 1));
        // Still a flood at the hundredth verdict if at most 1% of those are answered.
        let may_flood = u64::from(self.answered) * 100 <= MIN_JUDGED;
        threshold > 0.0 && f64::from(count) >= threshold && judged < MIN_JUDGED && may_flood
    }

    /// Counts the verdict on a conversation that began in the second `s`, judged at the
    /// second `now`, answered or not (`quiet`), and returns the rate it is flagged at, if its
    /// target is flooded as [`TargetRates`] says: its rate in the second `s` or the next, or
    /// with `sliding` (TCP: how far into its second the conversation began, 0 to 1) in the
    /// second up to its start (or in `s`, once a later second has begun).
    fn judge(
        &mut self,
        now: u64,
        s: u64,
        quiet: bool,
        threshold: f64,
        sliding: Option<f64>,
    ) -> Option<u32> {
        if now >= self.judged_since + JUDGED_SECS {
            // Halved once per period gone by, so that a long quiet spell forgets.
            let halvings = ((now - self.judged_since) / JUDGED_SECS).min(31) as u32;
            self.answered >>= halvings;
            self.unanswered >>= halvings;
            self.judged_since = now;
        }
        if quiet {
            self.unanswered = self.unanswered.saturating_add(1);
        } else {
            self.answered = self.answered.saturating_add(1);
        }
        if !quiet || threshold <= 0.0 {
            return None;
        }
        let judged = u64::from(self.answered) + u64::from(self.unanswered);
        // Judged on the spread, reported as all the new conversations it got.
        let (spread, count) = match sliding {
            // TCP (a service's spread is its count): the second up to its start, while its
            // second is the latest (its count so far, and the second before in proportion to
            // the part of it within one second of its start); the whole second it began once
            // later ones came (its count is then complete).
            Some(frac) => {
                let before = s.checked_sub(1).map_or(0, |b| self.opened_in(b));
                let carried = f64::from(before) * (1.0 - frac.clamp(0.0, 1.0));
                let count = if s == self.second {
                    self.opened_in(s).saturating_add(carried as u32)
                } else {
                    self.opened_in(s)
                };
                (count, count)
            }
            None => (
                self.spread_in(s).max(self.spread_in(s + 1)),
                self.opened_in(s).max(self.opened_in(s + 1)),
            ),
        };
        let flood = f64::from(spread) >= threshold
            && judged >= MIN_JUDGED
            && u64::from(self.unanswered) * 100 >= judged * 99;
        if flood {
            self.episode = Some(match self.episode {
                Some((first, last, peak))
                    if s <= last + EPISODE_GAP_SECS && s + EPISODE_GAP_SECS >= first =>
                {
                    (first.min(s), last.max(s), peak.max(count))
                }
                _ => (s, s, count),
            });
            return Some(count);
        }
        // A conversation of the episode judged when its second is forgotten (its final
        // record): flagged at the episode's peak. So is a UDP conversation of the second after
        // the episode's last: a flood ends within a second, and that second's count is only
        // the part of it before the end, under the bar (a UDP conversation is judged by its
        // second's count and the next's). Not a TCP attempt: judged by the second up to its
        // start, it carries the second before already, and a tail there would flag a second
        // after the flood.
        let tail = u64::from(sliding.is_none());
        match self.episode {
            Some((first, last, peak)) if (first..=last + tail).contains(&s) => Some(peak),
            _ => None,
        }
    }
}

/// Whether a sweep of quiet targets is due at the second `s`, the last having been at
/// `swept_s` (then updated): one a second, so that a map costs a scan of it per second, not
/// per new target; and one when the clock went back a minute or more (a capture with a bogus
/// timestamp far ahead would otherwise stop the sweeps until it is reached).
pub(super) fn sweep_due(swept_s: &mut u64, s: u64) -> bool {
    let due = s > *swept_s || s + 60 < *swept_s;
    if due {
        *swept_s = s;
    }
    due
}

/// Counts an opening in the second `s` for `key`, which finds room while `map` follows fewer
/// than [`MAX_TARGETS`]: the openings of `s` so far, or `None` if it was not counted (no room,
/// or too late).
fn open_in<T: std::hash::Hash + Eq, const K: usize>(
    map: &mut crate::hashing::Map<T, TargetCounts<K>>,
    key: T,
    s: u64,
) -> Option<u32> {
    let c = entry_in(map, key)?;
    c.open(s).then(|| c.opened_in(s))
}

/// `key`'s counts in `map`, new ones if it follows fewer than [`MAX_TARGETS`]; `None` if there
/// is no room.
fn entry_in<T: std::hash::Hash + Eq, const K: usize>(
    map: &mut crate::hashing::Map<T, TargetCounts<K>>,
    key: T,
) -> Option<&mut TargetCounts<K>> {
    entry_within(map, key, MAX_TARGETS)
}

/// [`entry_in`] with room for `cap` keys.
fn entry_within<T: std::hash::Hash + Eq, const K: usize>(
    map: &mut crate::hashing::Map<T, TargetCounts<K>>,
    key: T,
    cap: usize,
) -> Option<&mut TargetCounts<K>> {
    let room = map.len() < cap;
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
        std::collections::hash_map::Entry::Vacant(e) if room => {
            Some(e.insert(TargetCounts::default()))
        }
        std::collections::hash_map::Entry::Vacant(_) => None,
    }
}

impl TargetRates {
    /// A conversation from `source` to `target`'s `port` began (its `Opened` event, or a
    /// record pushed without events).
    pub fn opened(
        &mut self,
        cfg: &VolumeConfig,
        transport: Transport,
        source: std::net::IpAddr,
        (target, port): (std::net::IpAddr, u16),
        start_ns: u64,
    ) {
        if !cfg.enabled || transport != Transport::Udp {
            return;
        }
        let s = start_ns / NS_PER_SEC;
        if sweep_due(&mut self.swept_s, s) {
            self.targets.retain(|_, c| c.kept(c.second, s));
            self.hosts.retain(|_, c| c.kept(c.second, s));
            self.udp_sources.retain(|_, c| c.kept(c.second, s));
        }
        let counted = entry_within(&mut self.udp_sources, (source, target, port), MAX_SOURCES)
            .is_some_and(|c| c.open(s));
        if !counted {
            self.sources_untracked += 1;
        }
        let service = open_in(&mut self.targets, (target, port), s);
        let host = open_in(&mut self.hosts, target, s).is_some();
        // The host's count leaves out its busiest service ([`TargetCounts::spread_in`]).
        if let Some(n) = service.filter(|_| host)
            && let Some(h) = self.hosts.get_mut(&target)
        {
            h.service_count(s, n, cfg.udp_one_way_pps);
        }
        if !(service.is_some() && host) {
            self.untracked += 1;
        }
    }

    /// Counts the verdict on `rec` towards its target's answered share (its service's and
    /// its host's), and flags it if it is an unanswered UDP conversation to a target flooded
    /// as [`TargetRates`] says (its service, or else its host), or a TCP connection that
    /// never completed its handshake to a flooded service.
    pub fn judge(&mut self, cfg: &VolumeConfig, rec: &ConnectionRecord) -> TargetVerdict {
        let now = rec.final_unix_ns.max(rec.end_unix_ns) / NS_PER_SEC;
        let s = rec.start_unix_ns / NS_PER_SEC;
        match rec.transport {
            _ if !cfg.enabled => return TargetVerdict::default(),
            Transport::Udp => {}
            Transport::Tcp => {
                let rate = self.judge_tcp(cfg, rec, now, s);
                return TargetVerdict {
                    hit: rate.map(|(r, bar, reversed)| VolumeHit {
                        reversed,
                        ..VolumeHit::of_target(VolumeScope::Target, r, bar)
                    }),
                    pending: false,
                };
            }
            _ => return TargetVerdict::default(),
        }
        let quiet = unanswered(rec);
        let threshold = cfg.udp_one_way_pps;
        // All count the verdict, whichever flags it: the service first, then the source.
        let service = self
            .targets
            .get_mut(&(rec.resp_addr, rec.resp_port))
            .and_then(|c| c.judge(now, s, quiet, threshold, None));
        let source_bar = cfg.udp_one_way_per_source_pps;
        let source = self
            .udp_sources
            .get_mut(&(rec.orig_addr, rec.resp_addr, rec.resp_port))
            .and_then(|c| c.judge(now, s, quiet, source_bar, None))
            .map(|rate| VolumeHit::of_target(VolumeScope::Target, rate, source_bar));
        let (host, pending) = match self.hosts.get_mut(&rec.resp_addr) {
            Some(c) => {
                let rate = c.judge(now, s, quiet, threshold, None);
                (rate, quiet && rate.is_none() && c.pending(s, threshold))
            }
            None => (None, false),
        };
        let hit = match (service, source, host) {
            (Some(rate), ..) => VolumeHit::of_target(VolumeScope::Target, rate, threshold),
            (None, Some(hit), _) => hit,
            (None, None, Some(rate)) => VolumeHit::of_target(VolumeScope::Host, rate, threshold),
            (None, None, None) => return TargetVerdict { hit: None, pending },
        };
        TargetVerdict {
            hit: Some(hit),
            pending: false,
        }
    }

    /// [`TargetRates::judge`] of a TCP connection, which began in the second `s` and is
    /// judged in the second `now`: the rate it is flagged at, if any. Only final records count
    /// and are judged (an early verdict comes only for an attempt nobody answered, which the
    /// model flags), each once: a connection that never completed counts in the second it
    /// began, one that completed towards its service's completed share. Counting the attempts
    /// that never completed, not every connection as for UDP, is what keeps a busy server
    /// safe: its completed connections' records come when they end, a keep-alive's a minute
    /// or more later, while its few attempts that never complete come at once. Also returns
    /// whether the attempt ran from the responder to the originator ([`VolumeHit::reversed`]).
    fn judge_tcp(
        &mut self,
        cfg: &VolumeConfig,
        rec: &ConnectionRecord,
        now: u64,
        s: u64,
    ) -> Option<(u32, f64, bool)> {
        // Not an attempt: a connection picked up mid-stream neither tries nor completes a
        // handshake. A stray segment (an ACK, FIN, RST or SYN-ACK flood's) counts as a failed
        // attempt, from the end that sent it to its peer's port.
        let stray = stray(rec);
        if rec.end_reason == EndReason::Ongoing || !(rec.tcp_start_seen() || stray.is_some()) {
            return None;
        }
        let reversed = stray == Some(StraySender::Responder);
        let (src, dst, port) = match reversed {
            true => (rec.resp_addr, rec.orig_addr, rec.orig_port),
            false => (rec.orig_addr, rec.resp_addr, rec.resp_port),
        };
        if sweep_due(&mut self.tcp_swept_s, now) {
            self.tcp_targets.retain(|_, c| c.kept(c.active_s, now));
            self.tcp_sources.retain(|_, c| c.kept(c.active_s, now));
            self.tcp_reflected.retain(|_, c| c.kept(c.active_s, now));
        }
        let quiet = stray.is_some() || incomplete(rec);
        // Its records come about in the order the attempts began, so its second's count so
        // far is the attempts up to it.
        let frac = (rec.start_unix_ns % NS_PER_SEC) as f64 / NS_PER_SEC as f64;
        // Both count the verdict; the service's rate flags first.
        let judged = |c: Option<&mut TcpCounts>, bar: f64, untracked: &mut u64| {
            let c = c?;
            if quiet {
                if !c.open(s) {
                    *untracked += 1;
                }
                c.active_s = c.active_s.max(now);
            }
            c.judge(now, s, quiet, bar, Some(frac))
                .map(|r| (r, bar, reversed))
        };
        // A failed attempt is counted (its service and source followed if there is room); a
        // completed connection counts only towards those followed already.
        let key = (dst, port);
        let service = match quiet {
            true => entry_in(&mut self.tcp_targets, key),
            false => self.tcp_targets.get_mut(&key),
        };
        if quiet && service.is_none() {
            self.untracked += 1;
        }
        let by_service = judged(service, cfg.tcp_attempts_per_sec, &mut self.untracked);
        let key = (src, dst, port);
        let source = match quiet {
            true => entry_within(&mut self.tcp_sources, key, MAX_SOURCES),
            false => self.tcp_sources.get_mut(&key),
        };
        if quiet && source.is_none() {
            self.sources_untracked += 1;
        }
        let bar = cfg.tcp_attempts_per_source_per_sec;
        let by_source = judged(source, bar, &mut self.sources_untracked);
        // A reflected SYN-ACK at its sender and host over all the host's ports (the
        // originator being the host, the responder the sender); a connection the host
        // completed with the sender towards that pair's answered share.
        let pair = (rec.resp_addr, rec.orig_addr);
        let reflected = match (reversed, quiet) {
            (true, _) => entry_within(&mut self.tcp_reflected, pair, MAX_SOURCES),
            (false, false) => self.tcp_reflected.get_mut(&pair),
            (false, true) => None,
        };
        if reversed && reflected.is_none() {
            self.sources_untracked += 1;
        }
        let by_reflection = judged(reflected, bar, &mut self.sources_untracked);
        by_service.or(by_source).or(by_reflection)
    }

    /// Openings not counted: their target found no room, or came too late.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Failed TCP attempts not counted at their source (see [`TargetRates::untracked`]).
    pub fn sources_untracked(&self) -> u64 {
        self.sources_untracked
    }

    /// Targets followed now: UDP services, their sources and hosts, TCP services and their
    /// sources.
    pub fn len(&self) -> usize {
        self.targets.len()
            + self.hosts.len()
            + self.udp_sources.len()
            + self.tcp_targets.len()
            + self.tcp_sources.len()
            + self.tcp_reflected.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use sensor_common::conn_state::ConnState;

    use super::*;
    use crate::flows::EndReason;

    /// A conversation of `orig` packets over `span_ms`, `resp` answered.
    fn conv(
        transport: Transport,
        icmp_type: Option<u8>,
        orig: u64,
        resp: u64,
        span_ms: u64,
    ) -> ConnectionRecord {
        let start = 1_700_000_000_000_000_000;
        ConnectionRecord {
            end_unix_ns: start + span_ms * 1_000_000,
            ip_version: if icmp_type.is_some_and(|t| t >= 128) {
                6
            } else {
                4
            },
            icmp_type,
            icmp_code: icmp_type.map(|_| 0),
            orig_packets: orig,
            resp_packets: resp,
            orig_bytes: orig * 64,
            resp_bytes: resp * 64,
            conn_state: ConnState::SF,
            end_reason: EndReason::Ongoing,
            ip_proto: match transport {
                Transport::Icmp => 1,
                Transport::Udp => 17,
                _ => 6,
            },
            final_unix_ns: start + span_ms * 1_000_000,
            ..ConnectionRecord::new(
                transport,
                (
                    IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
                    if transport == Transport::Icmp {
                        0
                    } else {
                        40_000
                    },
                ),
                (
                    IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
                    if transport == Transport::Icmp { 0 } else { 53 },
                ),
                start,
            )
        }
    }

    /// Whether the default rule flags a conversation of `orig` packets over `span_ms`.
    fn flags(
        transport: Transport,
        icmp_type: Option<u8>,
        orig: u64,
        resp: u64,
        span_ms: u64,
    ) -> bool {
        VolumeConfig::default()
            .judge(&conv(transport, icmp_type, orig, resp, span_ms))
            .is_some()
    }

    const ICMP: Transport = Transport::Icmp;
    const UDP: Transport = Transport::Udp;

    #[test]
    fn an_echo_flood_is_flagged_by_its_rate_answered_or_not() {
        let v = VolumeConfig::default();
        // 7,000 requests in a second, each answered: `hping3 --icmp --flood`'s shape.
        let hit = v.judge(&conv(ICMP, Some(8), 7_000, 7_000, 1_000)).unwrap();
        assert!((hit.packets_per_second - 7_000.0).abs() < 1e-6, "{hit:?}");
        assert!((hit.ratio - 7.0).abs() < 1e-9, "{hit:?}");
        // Unasked replies (a reflected flood), and ICMPv6 echo.
        assert!(flags(ICMP, Some(0), 5_000, 0, 1_000));
        assert!(flags(ICMP, Some(128), 5_000, 5_000, 1_000));
        // Type 128 is not echo in ICMPv4.
        let mut v4_128 = conv(ICMP, Some(128), 5_000, 0, 1_000);
        v4_128.ip_version = 4;
        assert!(v.judge(&v4_128).is_none());
        // All at one instant: counted over a microsecond, not divided by zero.
        let hit = v.judge(&conv(ICMP, Some(8), 1_000, 0, 0)).unwrap();
        assert!((hit.packets_per_second - 1e9).abs() < 1e-3, "{hit:?}");
    }

    #[test]
    fn ordinary_pings_and_short_bursts_are_not() {
        // An hour of `ping` (1 per second), and `ping -i 0.2` for ten minutes.
        assert!(!flags(ICMP, Some(8), 3_600, 3_600, 3_600_000));
        assert!(!flags(ICMP, Some(8), 3_000, 3_000, 600_000));
        // Fast, but one packet short of `min_packets`; then exactly `min_packets`.
        assert!(!flags(ICMP, Some(8), 999, 999, 10));
        assert!(flags(ICMP, Some(8), 1_000, 1_000, 10));
        // Just under the rate, and at it.
        assert!(!flags(ICMP, Some(8), 1_998, 0, 2_000));
        assert!(flags(ICMP, Some(8), 2_000, 0, 2_000));
        // ICMP errors are answers to other traffic, whatever their rate.
        assert!(!flags(ICMP, Some(3), 50_000, 0, 1_000));
    }

    #[test]
    fn only_unanswered_udp_is_judged_by_its_rate() {
        // `hping3 --udp --flood` from one source port: nothing answers.
        assert!(flags(UDP, None, 20_000, 0, 2_000));
        // Just under the bar, and at it.
        assert!(!flags(UDP, None, 9_998, 0, 2_000));
        assert!(flags(UDP, None, 10_000, 0, 2_000));
        // 1% answered still counts as unanswered; 1.01% does not.
        assert!(flags(UDP, None, 20_000, 200, 2_000));
        assert!(!flags(UDP, None, 20_000, 202, 2_000));
        // A QUIC download or a VPN tunnel: answered, at any rate.
        assert!(!flags(UDP, None, 80_000, 40_000, 1_000));
        // A 4K video stream over RTP (about 2,000 datagrams/s, one way) for a minute.
        assert!(!flags(UDP, None, 120_000, 0, 60_000));
    }

    #[test]
    fn one_tcp_connection_is_not_judged_by_its_rate_and_the_rule_can_be_turned_off() {
        assert!(!flags(Transport::Tcp, None, 100_000, 0, 1_000));
        let off = VolumeConfig {
            enabled: false,
            ..VolumeConfig::default()
        };
        assert!(off.judge(&conv(ICMP, Some(8), 20_000, 0, 1_000)).is_none());
    }

    /// One-datagram UDP conversations to port 53 of the target, `per_second` of them over
    /// `secs` seconds from changing source ports of [`SPOOFED`] sources in turn, each answered
    /// unless `answered(i)` says not; every one is opened, then each judged at its early
    /// verdict (a second after it began), as the pipeline sees them. How many were flagged,
    /// and the largest rate found.
    fn udp_burst(
        rates: &mut TargetRates,
        per_second: u64,
        secs: u64,
        answered: impl Fn(u64) -> bool,
    ) -> (usize, f64) {
        let (flagged, peak, scopes) = udp_burst_to(rates, per_second, secs, answered, |_| 53);
        assert!(
            scopes.iter().all(|s| *s == VolumeScope::Target),
            "{scopes:?}"
        );
        (flagged, peak)
    }

    /// Sources a test's UDP burst comes from, three conversations each in turn: each under
    /// the source's bar ([`VolumeConfig::udp_one_way_per_source_pps`]) at the rates the
    /// service's bar is tested at.
    const SPOOFED: u64 = 16;

    /// [`udp_burst`] with the `i`-th conversation to `port(i)`, and the scopes of the hits.
    fn udp_burst_to(
        rates: &mut TargetRates,
        per_second: u64,
        secs: u64,
        answered: impl Fn(u64) -> bool,
        port: impl Fn(u64) -> u16,
    ) -> (usize, f64, std::collections::BTreeSet<VolumeScope>) {
        udp_burst_from(
            rates,
            (per_second, per_second * secs),
            SPOOFED,
            answered,
            port,
        )
    }

    /// [`udp_burst_to`] from `sources` sources in turn, `n` conversations at `per_second`.
    fn udp_burst_from(
        rates: &mut TargetRates,
        (per_second, n): (u64, u64),
        sources: u64,
        answered: impl Fn(u64) -> bool,
        port: impl Fn(u64) -> u16,
    ) -> (usize, f64, std::collections::BTreeSet<VolumeScope>) {
        let v = VolumeConfig::default();
        let gap_ns = NS_PER_SEC / per_second;
        let convs: Vec<ConnectionRecord> = (0..n)
            .map(|i| {
                let mut c = conv(UDP, None, 1, u64::from(answered(i)), 0);
                c.orig_addr = std::net::IpAddr::from([198, 18, 7, 1 + (i / 3 % sources) as u8]);
                c.orig_port = 1024 + (i % 60_000) as u16;
                c.resp_port = port(i);
                c.start_unix_ns += i * gap_ns;
                c.end_unix_ns = c.start_unix_ns;
                c.final_unix_ns = c.start_unix_ns + NS_PER_SEC;
                c
            })
            .collect();
        let (mut flagged, mut peak, mut scopes) = (0, 0f64, std::collections::BTreeSet::new());
        let mut judge = |rates: &mut TargetRates, c: &ConnectionRecord| {
            if let Some(h) = rates.judge(&v, c).hit {
                flagged += 1;
                peak = peak.max(h.packets_per_second);
                scopes.insert(h.scope);
            }
        };
        let mut judged = 0;
        for c in &convs {
            rates.opened(
                &v,
                c.transport,
                c.orig_addr,
                (c.resp_addr, c.resp_port),
                c.start_unix_ns,
            );
            // The early verdicts due by now.
            while convs[judged].final_unix_ns <= c.start_unix_ns {
                judge(rates, &convs[judged]);
                judged += 1;
            }
        }
        for c in &convs[judged..] {
            judge(rates, c);
        }
        (flagged, peak, scopes)
    }

    #[test]
    fn a_flood_of_one_datagram_conversations_is_flagged_by_its_targets_rate() {
        // `hping3 --udp --flood` to a closed port: 10,000 a second for three seconds.
        let mut rates = TargetRates::default();
        let (flagged, peak) = udp_burst(&mut rates, 10_000, 3, |_| false);
        // All but the first 99, judged before the target's share counts.
        assert_eq!(flagged, 30_000 - 99);
        assert_eq!(peak, 10_000.0);
        // Under the bar: 4,000 a second (250 from each of 16 sources).
        let mut rates = TargetRates::default();
        assert_eq!(udp_burst(&mut rates, 4_000, 3, |_| false), (0, 0.0));
        // Off.
        let mut rates = TargetRates::default();
        let c = conv(UDP, None, 1, 0, 0);
        for _ in 0..10_000 {
            rates.opened(
                &VolumeConfig::default(),
                UDP,
                c.orig_addr,
                (c.resp_addr, c.resp_port),
                c.start_unix_ns,
            );
        }
        let off = VolumeConfig {
            enabled: false,
            ..VolumeConfig::default()
        };
        assert!(rates.judge(&off, &c).hit.is_none());
        let on = VolumeConfig::default();
        let flagged = (0..100)
            .filter(|_| rates.judge(&on, &c).hit.is_some())
            .count();
        assert_eq!(flagged, 1, "the hundredth verdict");
    }

    /// A UDP flood from one address that changes its source port per datagram, under the
    /// service's bar (`hping3 --udp -i u250` to a closed port: 4,000 a second for three
    /// seconds) is flagged at its source's; one at 900 a second is not, nor one at 4,000 a
    /// second whose service answers (a client's queries), nor the same 4,000 a second from
    /// eight addresses (500 each: a spoofed flood under the service's bar, which the model
    /// judges).
    #[test]
    fn a_udp_flood_from_one_address_is_flagged_at_its_sources_rate() {
        let mut rates = TargetRates::default();
        let (flagged, peak, scopes) =
            udp_burst_from(&mut rates, (4_000, 12_000), 1, |_| false, |_| 53);
        // All but the first 99, judged before the source's share counts.
        assert_eq!(flagged, 12_000 - 99);
        assert_eq!(peak, 4_000.0);
        assert_eq!(
            scopes,
            std::collections::BTreeSet::from([VolumeScope::Target])
        );
        for (rate, sources, answered) in [(900, 1, false), (4_000, 1, true), (4_000, 8, false)] {
            let mut rates = TargetRates::default();
            let (flagged, ..) =
                udp_burst_from(&mut rates, (rate, rate * 3), sources, |_| answered, |_| 53);
            assert_eq!(
                flagged, 0,
                "{rate} a second from {sources}, answered {answered}"
            );
        }
        // A source's count is bounded; beyond, its openings are counted as untracked.
        let (v, mut rates) = (VolumeConfig::default(), TargetRates::default());
        let c = conv(UDP, None, 1, 0, 0);
        for i in 0..MAX_SOURCES as u64 + 5 {
            let src = std::net::IpAddr::from((0xC612_0000u32 + i as u32).to_be_bytes());
            rates.opened(&v, UDP, src, (c.resp_addr, 53), c.start_unix_ns);
        }
        assert_eq!(
            (rates.udp_sources.len(), rates.sources_untracked()),
            (MAX_SOURCES, 5)
        );
    }

    /// How a test's TCP connection goes: completed (a request and its answer) or not (a
    /// SYN-ACK its source resets, a SYN nobody answers, a stray segment), or seen mid-stream,
    /// and how long after it began its final record comes.
    #[derive(Clone, Copy, Debug)]
    enum Tcp {
        Completed {
            record_after_ns: u64,
        },
        Reset,
        Unanswered,
        /// A bare ACK (`hping3 -A`), reset by the target: no SYN seen.
        BareAck,
        /// A bare FIN (`hping3 -F`) to an open port, which drops it: no SYN seen, unanswered.
        BareFin,
        /// A connection picked up mid-stream: data and acknowledgements both ways.
        MidStream,
        /// A bare RST (`hping3 -R`), which the target does not answer: no SYN seen.
        BareRst,
        /// A SYN-ACK nobody asked for (`hping3 -SA`), reset by the target: the flow table
        /// takes its sender for the responder, so its record names the target the originator.
        SynAck,
        /// A SYN sent as a tiny first fragment (`hping3 -S -f`), its SYN-ACK reset by the
        /// source: the SYN's flags unseen, the next fragment's header bytes counted as payload,
        /// one wrong fragment.
        FragmentedSyn,
    }

    /// The number of [`Tcp`] kinds.
    const KINDS: usize = 9;

    impl Tcp {
        /// Its index in [`tcp_flood_by_kind`]'s counts.
        fn index(self) -> usize {
            match self {
                Tcp::Completed { .. } => 0,
                Tcp::Reset => 1,
                Tcp::Unanswered => 2,
                Tcp::BareAck => 3,
                Tcp::BareFin => 4,
                Tcp::MidStream => 5,
                Tcp::BareRst => 6,
                Tcp::SynAck => 7,
                Tcp::FragmentedSyn => 8,
            }
        }
    }

    /// TCP connections to port 80 of the target, `per_second` of them over `secs` seconds
    /// from changing source ports of 1,000 sources (each under the bar of one source),
    /// starting `offset_ns` into a second, the `i`-th going as `how(i)` says; each judged at
    /// its final record, in the order they come (an unanswered attempt also at its early
    /// verdict, which the rule leaves to the model, before its final record at the attempt
    /// timeout, 5 s). How many final records were flagged, and the largest rate.
    fn tcp_flood(
        rates: &mut TargetRates,
        v: &VolumeConfig,
        shape: (u64, u64, u64),
        how: impl Fn(u64) -> Tcp,
    ) -> (usize, f64) {
        let (flagged, peak) = tcp_flood_by_kind(rates, v, shape, 1_000, how);
        (flagged.iter().sum(), peak)
    }

    /// [`tcp_flood`] from `sources` addresses, the final records flagged counted by [`Tcp`]
    /// kind.
    fn tcp_flood_by_kind(
        rates: &mut TargetRates,
        v: &VolumeConfig,
        (per_second, secs, offset_ns): (u64, u64, u64),
        sources: u64,
        how: impl Fn(u64) -> Tcp,
    ) -> ([usize; KINDS], f64) {
        use sensor_common::flow::history::{ACK, DATA, FIN, NON_SYN, RST, SYN, SYN_ACK};
        let gap_ns = NS_PER_SEC / per_second;
        let mut recs = Vec::new();
        for i in 0..per_second * secs {
            let mut c = conv(Transport::Tcp, None, 1, 0, 0);
            c.orig_port = 1024 + (i % 60_000) as u16;
            c.orig_addr = std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                0xc613_0000 + (i % sources.max(1)) as u32,
            ));
            c.resp_port = 80;
            c.start_unix_ns += offset_ns + i * gap_ns;
            (c.orig_bytes, c.resp_bytes) = (0, 0);
            let after_ns = match how(i) {
                Tcp::Completed { record_after_ns } => {
                    c.history.orig = SYN | ACK | DATA | FIN;
                    c.history.resp = SYN_ACK | ACK | DATA | FIN;
                    (c.orig_bytes, c.resp_bytes) = (80, 400);
                    (c.orig_packets, c.resp_packets) = (5, 4);
                    c.conn_state = ConnState::SF;
                    c.end_reason = EndReason::Fin;
                    record_after_ns
                }
                Tcp::Reset => {
                    c.history.orig = SYN | RST;
                    c.history.resp = SYN_ACK;
                    (c.orig_packets, c.resp_packets) = (2, 1);
                    c.conn_state = ConnState::RSTO;
                    c.end_reason = EndReason::Rst;
                    10_000
                }
                Tcp::Unanswered => {
                    c.history.orig = SYN;
                    c.conn_state = ConnState::S0;
                    let mut early = c.clone();
                    early.final_unix_ns = early.start_unix_ns + NS_PER_SEC;
                    recs.push((early, how(i)));
                    c.end_reason = EndReason::Idle;
                    5 * NS_PER_SEC
                }
                Tcp::BareAck => {
                    c.history.orig = NON_SYN | ACK;
                    c.history.resp = NON_SYN | RST;
                    (c.orig_packets, c.resp_packets) = (1, 1);
                    c.conn_state = ConnState::OTH;
                    c.end_reason = EndReason::Rst;
                    10_000
                }
                Tcp::BareFin => {
                    c.history.orig = NON_SYN | FIN;
                    c.conn_state = ConnState::OTH;
                    c.end_reason = EndReason::Idle;
                    5 * NS_PER_SEC
                }
                Tcp::MidStream => {
                    c.history.orig = NON_SYN | ACK | DATA | FIN;
                    c.history.resp = NON_SYN | ACK | DATA | FIN;
                    (c.orig_bytes, c.resp_bytes) = (80, 400);
                    (c.orig_packets, c.resp_packets) = (4, 4);
                    c.conn_state = ConnState::OTH;
                    c.end_reason = EndReason::Fin;
                    10_000
                }
                Tcp::BareRst => {
                    c.history.orig = NON_SYN | RST;
                    c.conn_state = ConnState::OTH;
                    c.end_reason = EndReason::Rst;
                    10_000
                }
                Tcp::SynAck => {
                    c.history.orig = SYN_ACK;
                    c.history.resp = NON_SYN | RST;
                    (c.orig_packets, c.resp_packets) = (1, 1);
                    c.conn_state = ConnState::RSTR;
                    c.end_reason = EndReason::Rst;
                    c = c.reversed();
                    10_000
                }
                Tcp::FragmentedSyn => {
                    c.history.orig = NON_SYN | DATA | RST;
                    c.history.resp = SYN_ACK;
                    (c.orig_bytes, c.wrong_fragments) = (12, 1);
                    (c.orig_packets, c.resp_packets) = (3, 1);
                    c.conn_state = ConnState::RSTO;
                    c.end_reason = EndReason::Rst;
                    10_000
                }
            };
            c.end_unix_ns = c.start_unix_ns + after_ns.min(10_000);
            c.final_unix_ns = c.start_unix_ns + after_ns;
            recs.push((c, how(i)));
        }
        recs.sort_by_key(|(c, _)| c.final_unix_ns);
        let (mut flagged, mut peak) = ([0; KINDS], 0f64);
        for (c, kind) in &recs {
            let Some(h) = rates.judge(v, c).hit else {
                continue;
            };
            assert_eq!(h.scope, VolumeScope::Target, "{h:?}");
            assert_ne!(c.end_reason, EndReason::Ongoing, "an early verdict flagged");
            assert!(
                matches!(
                    kind,
                    Tcp::Reset
                        | Tcp::Unanswered
                        | Tcp::BareAck
                        | Tcp::BareFin
                        | Tcp::BareRst
                        | Tcp::SynAck
                        | Tcp::FragmentedSyn
                ),
                "a connection that completed, or was no attempt, flagged"
            );
            assert_eq!(h.reversed, matches!(kind, Tcp::SynAck), "{kind:?}");
            flagged[kind.index()] += 1;
            peak = peak.max(h.packets_per_second);
        }
        (flagged, peak)
    }

    #[test]
    fn a_syn_flood_whose_source_resets_its_answers_is_flagged_by_its_services_rate() {
        let v = VolumeConfig::default();
        // 10,000 attempts a second for three seconds, none completed. In the first second,
        // each is judged on the attempts of that second so far: flagged from the 5,000th on;
        // in the next two, on the second up to its start (10,000, or 10,001 counting both
        // ends).
        let mut rates = TargetRates::default();
        let (flagged, peak) = tcp_flood(&mut rates, &v, (10_000, 3, 0), |_| Tcp::Reset);
        assert_eq!(flagged, 5_001 + 20_000);
        assert!((10_000.0..=10_001.0).contains(&peak), "{peak}");
        // 6,000 a second starting half a second into a second: 3,000 in the first, under the
        // bar. In the next, at a fraction f of it, the second before counts as if spread evenly
        // (3,000 (1 - f)) beside this one's 6,000 f: 5,000 at f = 2/3, after 4,000 more
        // attempts; every attempt from there on is flagged, 11,000 of the 18,000.
        let mut rates = TargetRates::default();
        let (flagged, _) = tcp_flood(&mut rates, &v, (6_000, 3, NS_PER_SEC / 2), |_| Tcp::Reset);
        assert!((10_999..=11_001).contains(&flagged), "{flagged}");
        // Under the bar: 4,000 a second.
        let mut rates = TargetRates::default();
        assert_eq!(
            tcp_flood(&mut rates, &v, (4_000, 3, 0), |_| Tcp::Reset),
            (0, 0.0)
        );
        // A bar of its own: under one of 20,000.
        let higher = VolumeConfig {
            tcp_attempts_per_sec: 20_000.0,
            ..v
        };
        let mut rates = TargetRates::default();
        assert_eq!(
            tcp_flood(&mut rates, &higher, (10_000, 3, 0), |_| Tcp::Reset),
            (0, 0.0)
        );
        // Off.
        let off = VolumeConfig {
            enabled: false,
            ..v
        };
        let mut rates = TargetRates::default();
        assert_eq!(
            tcp_flood(&mut rates, &off, (10_000, 3, 0), |_| Tcp::Reset),
            (0, 0.0)
        );
        assert!(rates.is_empty());
        // Counted apart from UDP: a UDP service on the same port is not flooded by it.
        let mut rates = TargetRates::default();
        tcp_flood(&mut rates, &v, (10_000, 3, 0), |_| Tcp::Reset);
        let mut udp = conv(UDP, None, 1, 0, 0);
        udp.resp_port = 80;
        udp.start_unix_ns += 2 * NS_PER_SEC;
        for _ in 0..200 {
            rates.opened(
                &v,
                UDP,
                udp.orig_addr,
                (udp.resp_addr, 80),
                udp.start_unix_ns,
            );
            assert!(rates.judge(&v, &udp).hit.is_none());
        }
    }

    #[test]
    fn an_unanswered_syn_flood_is_judged_at_its_final_records_once_each() {
        let v = VolumeConfig::default();
        // 6,000 a second for three seconds, nobody answering: each attempt's early verdict
        // is the model's; its final record, at the attempt timeout, counts once and is judged
        // as a reset one's is at once.
        let mut rates = TargetRates::default();
        let (flagged, _) = tcp_flood(&mut rates, &v, (6_000, 3, 0), |_| Tcp::Unanswered);
        assert_eq!(flagged, 18_000 - 4_999);
        // At 3,000 a second, nothing: each attempt counts once, not at both its verdicts.
        let mut rates = TargetRates::default();
        assert_eq!(
            tcp_flood(&mut rates, &v, (3_000, 3, 0), |_| Tcp::Unanswered),
            (0, 0.0)
        );
    }

    /// One address's SYN flood at 1,000 a second, its answers reset by its own kernel
    /// (`hping3 -S -p 80 -i u1000` without spoofing), at a web server that serves another
    /// client as many: the service completes half its connections, so its rate cannot judge,
    /// while the source completes none. Flagged from its 100th attempt by the source's rate;
    /// a client at 50 failed attempts a second, or one completing most of its connections, is
    /// not.
    #[test]
    fn a_syn_flood_from_one_address_is_flagged_by_its_own_rate_at_a_busy_server() {
        let v = VolumeConfig::default();
        let mut rates = TargetRates::default();
        // Sources alternate: even attempts from the attacker, odd ones from the client.
        let attacker_and_client = |i: u64| {
            if i.is_multiple_of(2) {
                Tcp::Reset
            } else {
                Tcp::Completed {
                    record_after_ns: 50_000_000,
                }
            }
        };
        let (flagged, peak) =
            tcp_flood_by_kind(&mut rates, &v, (2_000, 3, 0), 2, attacker_and_client);
        assert_eq!(flagged[Tcp::Completed { record_after_ns: 0 }.index()], 0);
        assert!(
            (2_890..=2_901).contains(&flagged[Tcp::Reset.index()]),
            "all but the first 100 or so of 3,000: {flagged:?}"
        );
        assert!((900.0..=1_010.0).contains(&peak), "{peak}");
        // Under the bar: 50 a second for ten seconds.
        let mut rates = TargetRates::default();
        assert_eq!(
            tcp_flood_by_kind(&mut rates, &v, (50, 10, 0), 1, |_| Tcp::Reset).0,
            [0; KINDS]
        );
        // A load test against a struggling server: 1,000 a second, one in ten completing.
        let mut rates = TargetRates::default();
        let struggling = |i: u64| {
            if i.is_multiple_of(10) {
                Tcp::Completed {
                    record_after_ns: 10_000_000,
                }
            } else {
                Tcp::Reset
            }
        };
        assert_eq!(
            tcp_flood_by_kind(&mut rates, &v, (1_000, 5, 0), 1, struggling).0,
            [0; KINDS]
        );
        // Its own setting: a bar of 2,000 a second leaves the flood alone.
        let higher = VolumeConfig {
            tcp_attempts_per_source_per_sec: 2_000.0,
            ..v
        };
        let mut rates = TargetRates::default();
        assert_eq!(
            tcp_flood_by_kind(&mut rates, &higher, (2_000, 3, 0), 2, attacker_and_client).0,
            [0; KINDS]
        );
    }

    /// SYN-ACKs reflected at a host: one server (spoofed SYNs in the host's name went to it)
    /// answers from port 80 to ever new ports of the host, each reset by the host. No port,
    /// and no port's source, gets more than one; the sender's SYN-ACKs over all the host's
    /// ports are judged at its source's bar (100 a second): at 1,000 a second for two
    /// seconds, flagged from about the 100th on, each hit reversed (the server is the
    /// sender). At 50 a second, none; nor where the host completed connections with the
    /// server beside them (its answered share).
    #[test]
    fn syn_acks_reflected_at_ever_new_ports_of_a_host_are_judged_at_their_sender() {
        use sensor_common::flow::history::{ACK, DATA, FIN, NON_SYN, RST, SYN, SYN_ACK};
        let v = VolumeConfig::default();
        let ip = |last: u8| std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, last));
        let (server, host) = (ip(7), ip(9));
        let reflected = |i: u64, per_second: u64| {
            let mut c = conv(Transport::Tcp, None, 1, 1, 0);
            (c.orig_addr, c.orig_port) = (server, 80);
            (c.resp_addr, c.resp_port) = (host, 1024 + (i % 60_000) as u16);
            (c.orig_bytes, c.resp_bytes) = (0, 0);
            c.history.orig = SYN_ACK;
            c.history.resp = NON_SYN | RST;
            c.conn_state = ConnState::RSTR;
            c.end_reason = EndReason::Rst;
            c.start_unix_ns += i * NS_PER_SEC / per_second;
            c.end_unix_ns = c.start_unix_ns + 10_000;
            c.final_unix_ns = c.end_unix_ns;
            c.reversed()
        };
        let completed = |i: u64| {
            let mut c = conv(Transport::Tcp, None, 5, 4, 0);
            (c.orig_addr, c.orig_port) = (host, 30_000 + i as u16);
            (c.resp_addr, c.resp_port) = (server, 443);
            c.history.orig = SYN | ACK | DATA | FIN;
            c.history.resp = SYN_ACK | ACK | DATA | FIN;
            c.end_reason = EndReason::Fin;
            c.start_unix_ns += i * NS_PER_SEC / 100;
            c.end_unix_ns = c.start_unix_ns + 10_000;
            c.final_unix_ns = c.end_unix_ns;
            c
        };
        let mut rates = TargetRates::default();
        let hits: Vec<VolumeHit> = (0..2_000)
            .filter_map(|i| rates.judge(&v, &reflected(i, 1_000)).hit)
            .collect();
        assert!((1_850..=1_910).contains(&hits.len()), "{}", hits.len());
        assert!(
            hits.iter()
                .all(|h| h.reversed && h.scope == VolumeScope::Target)
        );
        let mut rates = TargetRates::default();
        let slow = (0..200)
            .filter(|&i| rates.judge(&v, &reflected(i, 50)).hit.is_some())
            .count();
        assert_eq!(slow, 0);
        // The host's own connections to the server, 100 a second beside 1,000 SYN-ACKs a
        // second: nothing the host asked for is flagged, and its share keeps the pair safe.
        let mut rates = TargetRates::default();
        let mut flagged = 0;
        for i in 0..2_000 {
            if i % 10 == 0 {
                assert!(rates.judge(&v, &completed(i / 10)).hit.is_none());
            }
            flagged += usize::from(rates.judge(&v, &reflected(i, 1_000)).hit.is_some());
        }
        assert_eq!(flagged, 0);
    }

    /// ACK, FIN, RST and SYN-ACK floods from one address (`hping3 -A`, `-F`, `-R`, `-SA`,
    /// changing source ports, 3,000 a second): each segment is a conversation the sensor did
    /// not see begin, reset by the target or dropped. Stray segments, judged as failed
    /// attempts at the target's port: flagged from about the 100th by the source's rate, each
    /// where its record comes (at once, or at the 5 s timeout). The SYN-ACKs' records name the
    /// target the originator; they count at its port all the same, and their hits say the
    /// attack runs the other way. Connections picked up mid-stream at the same rate, and stray
    /// segments after a client's completed connections, are not.
    #[test]
    fn ack_fin_rst_and_syn_ack_floods_are_failed_attempts_and_mid_stream_connections_are_not() {
        let v = VolumeConfig::default();
        for kind in [Tcp::BareAck, Tcp::BareFin, Tcp::BareRst, Tcp::SynAck] {
            let mut rates = TargetRates::default();
            let (flagged, peak) = tcp_flood_by_kind(&mut rates, &v, (3_000, 3, 0), 1, |_| kind);
            assert!(
                (8_890..=8_901).contains(&flagged[kind.index()]),
                "{kind:?}: all but the first 100 or so of 9,000: {flagged:?}"
            );
            assert!((2_900.0..=3_010.0).contains(&peak), "{peak}");
            let target = conv(Transport::Tcp, None, 1, 0, 0).resp_addr;
            assert_eq!(
                rates.tcp_targets.keys().collect::<Vec<_>>(),
                [&(target, 80)],
                "{kind:?}: counted at the target's port"
            );
        }
        let mut rates = TargetRates::default();
        assert_eq!(
            tcp_flood_by_kind(&mut rates, &v, (3_000, 3, 0), 1, |_| Tcp::MidStream).0,
            [0; KINDS]
        );
        assert_eq!(
            rates.tcp_targets.len(),
            0,
            "mid-stream: neither counted nor followed"
        );
        // A client completing 500 connections a second, each followed by a stray segment
        // (its late final ACK, reset): half its connections complete.
        let mut rates = TargetRates::default();
        let trailing = |i: u64| {
            if i.is_multiple_of(2) {
                Tcp::Completed {
                    record_after_ns: 10_000,
                }
            } else {
                Tcp::BareAck
            }
        };
        assert_eq!(
            tcp_flood_by_kind(&mut rates, &v, (1_000, 5, 0), 1, trailing).0,
            [0; KINDS]
        );
    }

    /// A SYN flood whose SYNs are tiny first fragments (`hping3 -S -f` from one address, 2,500
    /// a second, each SYN-ACK reset by the source's kernel): no SYN seen, but a wrong fragment
    /// began each conversation, so each is an attempt that never completed, from its
    /// originator (0 of 10,000 flagged in a replayed capture before, December 6).
    #[test]
    fn a_syn_flood_of_tiny_fragments_is_judged_as_attempts() {
        let v = VolumeConfig::default();
        let mut rates = TargetRates::default();
        let (flagged, _) =
            tcp_flood_by_kind(&mut rates, &v, (2_500, 3, 0), 1, |_| Tcp::FragmentedSyn);
        let n = flagged[Tcp::FragmentedSyn.index()];
        assert!((7_390..=7_401).contains(&n), "{flagged:?}");
    }

    #[test]
    fn a_floods_attempts_count_however_late_their_records_come() {
        let v = VolumeConfig::default();
        // Ten seconds of 12,000 attempts a second, half reset (their records at once), half
        // unanswered (at the attempt timeout, 5 s later): the unanswered half counts in the
        // seconds it began though the reset half's have moved on, and is flagged.
        let mut rates = TargetRates::default();
        let half = |i: u64| {
            if i.is_multiple_of(2) {
                Tcp::Reset
            } else {
                Tcp::Unanswered
            }
        };
        let (flagged, _) = tcp_flood_by_kind(&mut rates, &v, (12_000, 10, 0), 1_000, half);
        assert_eq!(rates.untracked(), 0);
        assert!(flagged[Tcp::Unanswered.index()] >= 59_000, "{flagged:?}");
        // A bare ACK among every 50 attempts (`hping3 -A`, reset by the target) is a stray
        // segment, a failed attempt as well: no completed handshake, it does not hide the
        // flood, and it is flagged with it.
        let mut rates = TargetRates::default();
        let with_acks = |i: u64| {
            if i.is_multiple_of(50) {
                Tcp::BareAck
            } else {
                Tcp::Reset
            }
        };
        let (flagged, _) = tcp_flood_by_kind(&mut rates, &v, (10_000, 3, 0), 1_000, with_acks);
        assert!(flagged[Tcp::Reset.index()] >= 24_000, "{flagged:?}");
        assert!(flagged[Tcp::BareAck.index()] >= 480, "{flagged:?}");
        // Forgotten by the sweep once quiet (no flood here: 100 attempts a second), kept while
        // flagged.
        let mut rates = TargetRates::default();
        tcp_flood(&mut rates, &v, (100, 3, 0), |_| Tcp::Reset);
        assert_eq!(rates.tcp_targets.len(), 1);
        let mut later = conv(Transport::Tcp, None, 1, 1, 0);
        later.history.orig = sensor_common::flow::history::SYN;
        later.history.resp = sensor_common::flow::history::RST;
        (later.orig_bytes, later.resp_bytes) = (0, 0);
        later.end_reason = EndReason::Rst;
        later.resp_port = 81;
        later.start_unix_ns += 3 * NS_PER_SEC + QUIET_SECS * NS_PER_SEC;
        (later.end_unix_ns, later.final_unix_ns) = (later.start_unix_ns, later.start_unix_ns);
        rates.judge(&v, &later);
        assert_eq!(rates.tcp_targets.len(), 1, "port 80 forgotten, 81 followed");
        let mut rates = TargetRates::default();
        tcp_flood(&mut rates, &v, (10_000, 3, 0), |_| Tcp::Reset);
        rates.judge(&v, &later);
        assert_eq!(rates.tcp_targets.len(), 2, "the flooded service is kept");
    }

    #[test]
    fn a_busy_web_server_completes_its_connections_and_is_not_a_flood() {
        let v = VolumeConfig::default();
        let at_once = Tcp::Completed {
            record_after_ns: 10_000,
        };
        // 10,000 connections a second, every hundredth reset before it completed (1%).
        let mut rates = TargetRates::default();
        let every_100th = |i: u64| {
            if i.is_multiple_of(100) {
                Tcp::Reset
            } else {
                at_once
            }
        };
        assert_eq!(
            tcp_flood(&mut rates, &v, (10_000, 3, 0), every_100th),
            (0, 0.0)
        );
        // Its connections kept alive for 30 s, so that their records come long after those of
        // its few failed attempts (one in 200), as when a sensor starts beside a busy server
        // or the service moves to it: 30 failed attempts a second are no flood.
        let mut rates = TargetRates::default();
        let kept_alive = |i: u64| {
            if i.is_multiple_of(200) {
                Tcp::Reset
            } else {
                Tcp::Completed {
                    record_after_ns: 30 * NS_PER_SEC,
                }
            }
        };
        assert_eq!(
            tcp_flood(&mut rates, &v, (6_000, 3, 0), kept_alive),
            (0, 0.0)
        );
        // A flood against it: two in three attempts, one in three completed. Not flagged by
        // this rule (a miss, not a false alarm: the model judges each attempt).
        let mut rates = TargetRates::default();
        let third = |i: u64| {
            if i.is_multiple_of(3) {
                at_once
            } else {
                Tcp::Reset
            }
        };
        assert_eq!(tcp_flood(&mut rates, &v, (15_000, 3, 0), third), (0, 0.0));
    }

    #[test]
    fn what_completed_a_tcp_handshake() {
        use sensor_common::flow::history::{ACK, DATA, FIN, RST, SYN, SYN_ACK};
        let tcp = |orig: u8, resp: u8, resp_bytes: u64| {
            let mut c = conv(Transport::Tcp, None, 1, 1, 0);
            (c.history.orig, c.history.resp) = (orig, resp);
            (c.orig_bytes, c.resp_bytes) = (120, resp_bytes);
            c
        };
        // A SYN with payload (`hping3 -S -d 120`), reset or unanswered: never completed.
        assert!(incomplete(&tcp(SYN | DATA | RST, SYN_ACK, 0)));
        assert!(incomplete(&tcp(SYN | DATA, 0, 0)));
        // Refused.
        assert!(incomplete(&tcp(SYN, RST, 0)));
        // A client's connection, and TCP Fast Open (data in the SYN, then the final ACK).
        assert!(!incomplete(&tcp(
            SYN | ACK | DATA | FIN,
            SYN_ACK | ACK | DATA | FIN,
            400
        )));
        assert!(!incomplete(&tcp(SYN | DATA | ACK, SYN_ACK | DATA, 400)));
        // Seen one way only, the client's packets.
        assert!(!incomplete(&tcp(SYN | ACK | DATA | FIN, 0, 0)));
    }
    #[test]
    fn a_busy_resolver_answers_and_is_not_a_flood() {
        // 10,000 queries a second, every hundredth unanswered (1%): the unanswered ones are
        // not flagged, since the server answers its traffic.
        let mut rates = TargetRates::default();
        assert_eq!(udp_burst(&mut rates, 10_000, 3, |i| i % 100 != 0), (0, 0.0));
        // Half unanswered: not a flood by this rule either (at most 1% may be answered).
        let mut rates = TargetRates::default();
        assert_eq!(udp_burst(&mut rates, 10_000, 3, |i| i % 2 == 0), (0, 0.0));
    }

    #[test]
    fn a_flood_over_many_ports_is_flagged_at_its_host() {
        let host = std::collections::BTreeSet::from([VolumeScope::Host]);
        // `hping3 --udp -p ++1 --flood`: 10,000 a second for three seconds, each to the next
        // port, so no port gets more than one a second.
        let mut rates = TargetRates::default();
        let next_port = |i: u64| 1 + (i % 65_535) as u16;
        let (flagged, peak, scopes) = udp_burst_to(&mut rates, 10_000, 3, |_| false, next_port);
        assert_eq!((flagged, peak, &scopes), (30_000 - 99, 10_000.0, &host));
        // Under the bar (4,000 a second): an `nmap -sU` at its fastest usual timing is slower.
        let mut rates = TargetRates::default();
        let quiet = udp_burst_to(&mut rates, 4_000, 3, |_| false, next_port);
        assert_eq!((quiet.0, quiet.1), (0, 0.0));
        // A media server that answers what it receives on many ports (a conference bridge, a
        // BitTorrent node): a busy host, not a flood.
        let mut rates = TargetRates::default();
        let answered = udp_burst_to(&mut rates, 10_000, 3, |i| i % 50 != 0, next_port);
        assert_eq!((answered.0, answered.1), (0, 0.0));
        // A flood of one port is its service's, not its host's.
        let mut rates = TargetRates::default();
        let one_port = udp_burst_to(&mut rates, 10_000, 3, |_| false, |_| 9);
        assert_eq!(
            one_port.2,
            std::collections::BTreeSet::from([VolumeScope::Target])
        );
    }

    #[test]
    fn a_hosts_first_unanswered_conversations_at_a_floods_rate_are_pending() {
        let v = VolumeConfig::default();
        // 10,000 conversations to as many ports of one host in one second, judged a second
        // later: the first 99 are undecided, the hundredth is the flood's.
        let opened = |rates: &mut TargetRates, n: u64| {
            let c = conv(UDP, None, 1, 0, 0);
            for i in 0..n {
                rates.opened(
                    &v,
                    UDP,
                    c.orig_addr,
                    (c.resp_addr, 1 + i as u16),
                    c.start_unix_ns,
                );
            }
            c
        };
        let mut rates = TargetRates::default();
        let c = opened(&mut rates, 10_000);
        let to = |port: u16, answered: u64| ConnectionRecord {
            resp_port: port,
            resp_packets: answered,
            ..c.clone()
        };
        for port in 1..100 {
            let t = rates.judge(&v, &to(port, 0));
            assert_eq!((t.hit, t.pending), (None, true), "port {port}");
        }
        let t = rates.judge(&v, &to(100, 0));
        assert_eq!(
            (t.hit.map(|h| h.scope), t.pending),
            (Some(VolumeScope::Host), false)
        );
        // A host that answered two of its first conversations is a server, not undecided
        // (one in a hundred may be a flood's: a closed port's ICMP error, say).
        let mut rates = TargetRates::default();
        opened(&mut rates, 10_000);
        assert!(!rates.judge(&v, &to(1, 1)).pending, "answered itself");
        assert!(
            rates.judge(&v, &to(2, 0)).pending,
            "one answered in a hundred"
        );
        assert!(!rates.judge(&v, &to(3, 1)).pending, "answered itself");
        assert!(!rates.judge(&v, &to(4, 0)).pending, "its host answered two");
        // Under the bar: nothing is undecided.
        let mut rates = TargetRates::default();
        opened(&mut rates, 4_000);
        assert!(!rates.judge(&v, &to(1, 0)).pending);
    }

    #[test]
    fn a_flood_of_one_port_leaves_the_hosts_other_ports_alone() {
        // 10,000 a second to port 9 for three seconds, and in the middle of each second one
        // syslog datagram to port 514, unanswered: the service's flood, not the host's. The
        // syslog datagrams are flagged neither at their early verdicts nor at their final
        // records a minute later, nor undecided.
        let v = VolumeConfig::default();
        let mut rates = TargetRates::default();
        let port = |i: u64| if i % 10_000 == 5_000 { 514 } else { 9 };
        let (flagged, _, scopes) = udp_burst_to(&mut rates, 10_000, 3, |_| false, port);
        assert_eq!(flagged, 30_000 - 3 - 99);
        assert_eq!(
            scopes,
            std::collections::BTreeSet::from([VolumeScope::Target])
        );
        // The final record of the syslog datagram of the flood's `k`-th second.
        let syslog = |k: u64| {
            let mut c = conv(UDP, None, 1, 0, 0);
            c.resp_port = 514;
            c.start_unix_ns += k * NS_PER_SEC + NS_PER_SEC / 2;
            c.end_unix_ns = c.start_unix_ns;
            c.final_unix_ns = c.start_unix_ns + 61 * NS_PER_SEC;
            c
        };
        for k in 0..3 {
            let t = rates.judge(&v, &syslog(k));
            assert_eq!((t.hit, t.pending), (None, false), "second {k}");
        }
        // Two ports at 10,000 a second each, and the syslog trickle: each port's flood, not
        // the host's.
        let mut rates = TargetRates::default();
        let two = |i: u64| match i % 20_000 {
            10_000 => 514,
            k => 9 + (k % 2) as u16,
        };
        let (_, _, scopes) = udp_burst_to(&mut rates, 20_000, 3, |_| false, two);
        assert_eq!(
            scopes,
            std::collections::BTreeSet::from([VolumeScope::Target])
        );
        for k in 0..3 {
            assert_eq!(rates.judge(&v, &syslog(k)).hit, None, "second {k}");
        }
        // The same 10,000 a second over four ports (2,500 each): under the bar at every
        // service, over it at the host without its busiest.
        let mut rates = TargetRates::default();
        let four = udp_burst_to(&mut rates, 10_000, 3, |_| false, |i| 9 + (i % 4) as u16);
        assert_eq!(
            four.2,
            std::collections::BTreeSet::from([VolumeScope::Host])
        );
    }

    #[test]
    fn a_scan_of_many_ports_fills_the_targets_only_up_to_their_bound() {
        let v = VolumeConfig::default();
        let mut rates = TargetRates::default();
        let c = conv(UDP, None, 1, 0, 0);
        let t = c.start_unix_ns;
        for port in 0..MAX_TARGETS {
            rates.opened(&v, UDP, c.orig_addr, (c.resp_addr, port as u16), t);
        }
        let followed = |r: &TargetRates| (r.targets.len(), r.hosts.len(), r.untracked());
        assert_eq!(followed(&rates), (MAX_TARGETS, 1, 0));
        // The scanner's source counts have a bound of their own, the rest counted.
        let sources = |r: &TargetRates| (r.udp_sources.len(), r.sources_untracked());
        assert_eq!(
            sources(&rates),
            (MAX_SOURCES, (MAX_TARGETS - MAX_SOURCES) as u64)
        );
        assert_eq!(rates.len(), MAX_TARGETS + 1 + MAX_SOURCES);
        // TCP services have room of their own: a refused attempt is followed.
        let mut refused = conv(Transport::Tcp, None, 1, 1, 0);
        refused.history.orig = sensor_common::flow::history::SYN;
        refused.history.resp = sensor_common::flow::history::RST;
        (refused.orig_bytes, refused.resp_bytes) = (0, 0);
        refused.end_reason = EndReason::Rst;
        assert!(rates.judge(&v, &refused).hit.is_none());
        assert_eq!(
            (
                rates.tcp_targets.len(),
                rates.tcp_sources.len(),
                rates.untracked()
            ),
            (1, 1, 0)
        );
        rates.tcp_targets.clear();
        rates.tcp_sources.clear();
        // Full of services touched this second: a new one is not followed, and counted; its
        // host is, since hosts have room of their own.
        let other: std::net::IpAddr = "198.18.0.9".parse().unwrap();
        let src = c.orig_addr;
        rates.opened(&v, UDP, src, (other, 53), t);
        assert_eq!(followed(&rates), (MAX_TARGETS, 2, 1));
        // One sweep a second: the next new service of the second is not followed either.
        rates.opened(&v, UDP, src, (other, 54), t);
        assert_eq!(followed(&rates), (MAX_TARGETS, 2, 2));
        assert_eq!(rates.swept_s, t / NS_PER_SEC);
        // Once they are quiet for `QUIET_SECS`, the sweep forgets them.
        let later = t + QUIET_SECS * NS_PER_SEC;
        rates.opened(&v, UDP, src, (other, 53), later);
        assert_eq!(followed(&rates), (1, 1, 2));
        assert_eq!(rates.udp_sources.len(), 1);
        // Other transports are not counted at their openings (TCP at its records, below).
        rates.opened(&v, Transport::Tcp, src, (other, 80), later);
        rates.opened(&v, Transport::Icmp, src, (other, 0), later);
        assert_eq!(rates.len(), 3);
        // A bogus timestamp a day ahead does not stop the sweeps: the next opening of the
        // right time sweeps again.
        let day = 86_400 * NS_PER_SEC;
        rates.opened(&v, UDP, src, (other, 7), t + day);
        assert_eq!(rates.swept_s, (t + day) / NS_PER_SEC);
        rates.opened(&v, UDP, src, (other, 8), t + 5 * NS_PER_SEC);
        assert_eq!(rates.swept_s, t / NS_PER_SEC + 5);
    }

    /// A flood that ends within a second leaves that second under the bar (here 3,000 of
    /// `hping3`'s 10,000 a second to the service's bar of 5,000, from spoofed sources, and 800
    /// of 4,000 a second to the source's bar of 1,000, from one source): its conversations are
    /// the flood's all the same, at the episode's peak. A conversation from the flood's first
    /// source to the same service in the second after that one is not.
    #[test]
    fn a_floods_last_partial_second_is_the_floods() {
        for (per_second, n, sources) in [(10_000, 33_000, SPOOFED), (4_000, 12_800, 1)] {
            let mut rates = TargetRates::default();
            let (flagged, peak, _) =
                udp_burst_from(&mut rates, (per_second, n), sources, |_| false, |_| 53);
            assert_eq!(flagged as u64, n - 99, "{per_second} a second, {n} in all");
            assert_eq!(peak, per_second as f64);
            let mut after = conv(UDP, None, 1, 0, 0);
            after.orig_addr = std::net::IpAddr::from([198, 18, 7, 1]);
            // The flood's last flagged second is n / per_second - 1, its partial one the next.
            after.start_unix_ns += (n / per_second + 1) * NS_PER_SEC;
            after.end_unix_ns = after.start_unix_ns;
            after.final_unix_ns = after.start_unix_ns + NS_PER_SEC;
            rates.opened(
                &VolumeConfig::default(),
                UDP,
                after.orig_addr,
                (after.resp_addr, after.resp_port),
                after.start_unix_ns,
            );
            assert!(
                rates.judge(&VolumeConfig::default(), &after).hit.is_none(),
                "the second after the flood's partial one"
            );
        }
    }

    #[test]
    fn a_long_floods_final_records_agree_with_its_early_verdicts() {
        // Ten seconds of 10,000 a second; each conversation's final record a minute after its
        // early verdict, when its second's count is long gone: flagged by the episode, at its
        // peak. A conversation that began after the flood, to the same target, is not.
        let v = VolumeConfig::default();
        let mut rates = TargetRates::default();
        let (flagged, _) = udp_burst(&mut rates, 10_000, 10, |_| false);
        assert_eq!(flagged, 100_000 - 99);
        let base = conv(UDP, None, 1, 0, 0);
        let at = |start_s: u64| {
            let mut c = base.clone();
            c.start_unix_ns += start_s * NS_PER_SEC;
            c.end_unix_ns = c.start_unix_ns;
            c.final_unix_ns = c.start_unix_ns + 61 * NS_PER_SEC;
            c
        };
        for start_s in [0, 5, 9] {
            let hit = rates
                .judge(&v, &at(start_s))
                .hit
                .expect("a flood's final record");
            assert_eq!(hit.packets_per_second, 10_000.0);
        }
        assert!(rates.judge(&v, &at(30)).hit.is_none(), "after the flood");
        // The first 99, not flagged at their early verdicts, are at their final records.
        assert!(rates.judge(&v, &at(0)).hit.is_some());
    }

    #[test]
    fn late_openings_count_in_their_second_and_quiet_spells_forget_the_answers() {
        let v = VolumeConfig::default();
        let c = conv(UDP, None, 1, 0, 0);
        let mut counts = UdpCounts::default();
        assert!(counts.open(10) && counts.open(12));
        // Two seconds late (recovered by the table scan): still counted in its own second.
        assert!(counts.open(10));
        assert_eq!(
            (
                counts.opened_in(10),
                counts.opened_in(11),
                counts.opened_in(12)
            ),
            (2, 0, 1)
        );
        // Past the seconds kept: not counted, and the caller counts it as untracked.
        assert!(counts.open(20));
        assert!(!counts.open(16));
        assert_eq!(
            counts.opened_in(12),
            0,
            "forgotten once out of the kept seconds"
        );

        // A resolver that answered 20,000 queries, then an hour of quiet, then a flood: the
        // old answers are halved away, so the flood is flagged from its first hundred.
        let mut rates = TargetRates::default();
        let mut answered = c.clone();
        answered.resp_packets = 1;
        rates.opened(
            &v,
            UDP,
            c.orig_addr,
            (c.resp_addr, c.resp_port),
            c.start_unix_ns,
        );
        for _ in 0..20_000 {
            rates.judge(&v, &answered);
        }
        let hour = 3_600 * NS_PER_SEC;
        let mut late = c.clone();
        late.start_unix_ns += hour;
        late.end_unix_ns = late.start_unix_ns;
        late.final_unix_ns = late.start_unix_ns + NS_PER_SEC;
        for _ in 0..10_000 {
            rates.opened(
                &v,
                UDP,
                c.orig_addr,
                (c.resp_addr, c.resp_port),
                late.start_unix_ns,
            );
        }
        let flagged = (0..200)
            .filter(|_| rates.judge(&v, &late).hit.is_some())
            .count();
        assert!(flagged >= 100, "{flagged} of 200 after an hour's quiet");
    }
}
