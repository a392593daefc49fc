//! When a connection without packets is final: the idle timeouts, the lifecycle's
//! configuration, and the reading of a flow's TCP history they depend on.

use std::time::Duration;

use sensor_common::{
    FlowKey, FlowValue,
    account::peer,
    flow::{SIDE_HI, SIDE_LO, history, ipproto},
};

use crate::flows::EndReason;

/// Idle timeouts after which a connection without packets is final.
///
/// Defaults follow Zeek (`tcp_inactivity_timeout` 5 min, `udp_inactivity_timeout` and
/// `icmp_inactivity_timeout` 1 min, `tcp_attempt_delay` 5 s), whose connection semantics the KDD
/// features were derived with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// An established TCP connection that neither closed nor reset.
    pub tcp_established: Duration,
    /// A TCP connection attempt without an established handshake (S0, half-open, mid-stream).
    pub tcp_attempt: Duration,
    pub udp: Duration,
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl Timeouts {
    /// The defaults, for flags and configuration files alike.
    pub const DEFAULT: Timeouts = Timeouts {
        tcp_established: Duration::from_secs(300),
        tcp_attempt: Duration::from_secs(5),
        udp: Duration::from_secs(60),
        icmp: Duration::from_secs(60),
    };

    /// The shortest of the four.
    pub fn shortest(&self) -> Duration {
        self.tcp_established
            .min(self.tcp_attempt)
            .min(self.udp)
            .min(self.icmp)
    }
}

/// How the lifecycle finalises connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleConfig {
    pub timeouts: Timeouts,
    /// How long a finished TCP connection's entry stays in the table after it was reported.
    pub close_linger: Duration,
    /// How long after its second FIN a TCP connection's record waits at most for the final
    /// ACK (whose event, `CLOSED`, ends the wait at once), so that the record counts it as
    /// Zeek's does; longer for a connection whose round trips (the responder's and the
    /// originator's), timed by its handshake, are longer (up to [`Self::MAX_CLOSE_SETTLE`]);
    /// zero: the record is written at the second FIN.
    pub close_settle: Duration,
    /// Period of the scan of the whole table (in `SCAN_PARTS` parts) that adopts connections
    /// whose events were lost; `None`: no scan
    /// (replay, which loses no event).
    pub table_scan_interval: Option<Duration>,
    /// How long after its first packet a connection that is still open without an
    /// established TCP handshake gets an early verdict
    /// ([`ConnEvent::Ongoing`](crate::flows::ConnEvent::Ongoing)); `None`: never.
    /// Such connections (unanswered SYNs, UDP and ICMP conversations) end only by an idle
    /// timeout, up to a minute later; an early verdict lets incidents open while a flood, a
    /// UDP scan or a sweep is still going on.
    ///
    /// A TCP connection waits twice as long, one SYN retransmission more (see
    /// [`Self::tcp_early_verdict_after`]; an answered one gets no early verdict anyway), and an
    /// unanswered attempt whose originator retransmitted its SYN ([`retransmitted_syn`]) gets
    /// none: a client's stack still waiting for a busy server, whose final record (answered,
    /// or at the attempt timeout) judges it.
    pub early_verdict_after: Option<Duration>,
    /// Whether a connection ended by FINs or a RST is handed on again, with its trailing
    /// packets, when its entry leaves the table ([`ConnEvent::Settled`](crate::flows::ConnEvent::Settled)).
    /// Only the `conn.log` and EVE rows use it (`replay::output::LogRows`); the agent and replay
    /// turn it off for the other layouts, so that they build no record nobody reads.
    pub settled_records: bool,
}

impl LifecycleConfig {
    /// Default close linger: Zeek's `tcp_close_delay` (5 s), long enough for the trailing ACK
    /// and the retransmissions of a FIN whose ACK was lost (backing off 0.2 s, 0.4 s, ... they
    /// reach 3 s after the first four; at 2 s, a capture of Zeek's missed one). A lingering
    /// entry costs no room a new flow needs: a full table evicts finished connections
    /// (`sensor_common::slots::evictable`).
    pub const DEFAULT_CLOSE_LINGER: Duration = Duration::from_secs(5);
    /// Default close settle: one capture tick (`config::DEFAULT_TICK`). The final ACK follows
    /// the second FIN by the round trip between the sensor and the host that sends it, well
    /// under a millisecond for a gateway next to its hosts (and nothing for a capture on one
    /// of them), and its event ends the wait; a connection whose handshake took longer (either
    /// side's round trip) waits longer (see `Lifecycle::close_settle_ns`, at most
    /// [`Self::MAX_CLOSE_SETTLE`]). Only a connection whose final ACK never comes (or later)
    /// waits it out, which is then part of its detection latency. A final ACK later than the
    /// settle is left out of the record (`docs/replay.md`).
    pub const DEFAULT_CLOSE_SETTLE: Duration = Duration::from_millis(10);
    /// Longest wait for a final ACK, however slow the handshake was (a SYN-ACK to a
    /// retransmitted SYN, or an ACK to a retransmitted SYN-ACK, times the retransmission,
    /// seconds): a satellite link's round trip is about 600 ms, and one and a half of it fits.
    pub const MAX_CLOSE_SETTLE: Duration = Duration::from_secs(1);
    /// Default delay of an early verdict: beyond any round-trip time, and the moment a
    /// client retransmits an unanswered SYN.
    pub const DEFAULT_EARLY_VERDICT_AFTER: Duration = Duration::from_secs(1);
    /// SYNs a client's stack sends at most before its attempt's early verdict: the first and
    /// its retransmission at the initial retransmission timeout (1 s, RFC 6298), and one more
    /// where a shortened timer fits it. An attempt with more SYNs in one 5-tuple than these
    /// is a flood poured into one connection, which is judged early.
    pub const MAX_CLIENT_SYNS: u64 = 3;
    /// The shortest wait before a client's stack sends its SYN again: half RFC 6298's initial
    /// retransmission timeout (1 s), leaving room for a stack that shortens it.
    pub const MIN_SYN_RETRANSMISSION: Duration = Duration::from_millis(500);

    /// How long after its first packet an established TCP connection whose request is still
    /// unanswered is looked at once more ([`held_request`]): its record so far goes on as an
    /// early verdict ([`ConnEvent::Ongoing`](crate::flows::ConnEvent::Ongoing)) for the
    /// held-request rule (`crate::detect::held`), where early verdicts are on. Ten seconds:
    /// far beyond the time a server takes to begin answering a complete request, and well
    /// within the time a slow attack holds each connection (a web server drops a request
    /// whose headers have not come in 20 to 60 s: Apache's `mod_reqtimeout` 20-40 s, nginx's
    /// `client_header_timeout` 60 s; `slowhttptest` and `slowloris` send the next line every
    /// 10 to 15 s to stay within them).
    pub const HELD_REQUEST_AFTER: Duration = Duration::from_secs(10);

    /// When an unanswered TCP attempt gets its early verdict: twice `early_verdict_after`.
    ///
    /// A server whose listen queue overflows drops SYNs, and its clients' stacks retransmit
    /// them a second later (RFC 6298's initial timeout, the default early-verdict delay); the
    /// retransmitted SYN is usually answered. Judged at the moment of the retransmission, each
    /// such attempt looked like a SYN flood's half-open connection (`S0`, among others to the
    /// same service), and a load burst on a small web server opened a `flood` incident whose
    /// connections all completed. Twice the delay leaves the retransmitted SYN the same margin
    /// for its answer as the first one had.
    pub fn tcp_early_verdict_after(&self) -> Option<Duration> {
        self.early_verdict_after.map(|d| d * 2)
    }

    /// The scan period a live sensor uses unless configured: a quarter of the shortest idle
    /// timeout, between 50 ms and 1 s, so that a connection whose `Opened` event was lost is
    /// adopted long before its idle deadline.
    pub fn default_table_scan_interval(timeouts: &Timeouts) -> Duration {
        (timeouts.shortest() / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        let timeouts = Timeouts::default();
        LifecycleConfig {
            table_scan_interval: Some(Self::default_table_scan_interval(&timeouts)),
            timeouts,
            close_linger: Self::DEFAULT_CLOSE_LINGER,
            close_settle: Self::DEFAULT_CLOSE_SETTLE,
            early_verdict_after: Some(Self::DEFAULT_EARLY_VERDICT_AFTER),
            settled_records: true,
        }
    }
}

/// The idle timeout that applies to a flow: for TCP the established one once the connection
/// is established, the attempt one before; per protocol otherwise.
///
/// Established: the originator completed the handshake (SYN, the responder's SYN-ACK, then a
/// packet without SYN), or, for a connection picked up mid-stream (no SYN either way, its
/// handshake before the capture began), both sides sent packets without SYN and neither has
/// closed: a conversation, which Zeek too keeps for its inactivity timeout. A one-sided
/// connection without a handshake (a capture of one direction, or spoofed packets) stays an
/// attempt, so that packets nobody answers cannot hold table room for minutes; so does a
/// half-closed one picked up at its FIN (Zeek ends those after a short close delay), and a
/// handshake the originator never completed (a SYN flood's half-open connections, answered by
/// SYN-ACKs).
pub fn idle_timeout(t: &Timeouts, key: &FlowKey, v: &FlowValue) -> Duration {
    match key.protocol {
        ipproto::TCP => {
            let orig = usize::from(v.orig_side & 1);
            let (o, r) = (v.history[orig], v.history[peer(orig)]);
            let handshake =
                o & history::SYN != 0 && r & history::SYN_ACK != 0 && o & history::NON_SYN != 0;
            let mid_stream = (o | r) & (history::SYN | history::SYN_ACK | history::FIN) == 0
                && o & r & history::NON_SYN != 0;
            if handshake || mid_stream {
                t.tcp_established
            } else {
                t.tcp_attempt
            }
        }
        ipproto::UDP => t.udp,
        _ => t.icmp,
    }
}

/// The moment (table clock) a connection that sends nothing more is final: its last packet
/// plus the [`idle_timeout`] that applies, except for a TCP attempt that began with the
/// originator's SYN and got no answer (its responder sent nothing, its originator neither
/// closed nor reset): that one is final [`Timeouts::tcp_attempt`] after its first packet,
/// whatever the originator sent since.
///
/// That is Zeek's attempt timer (`tcp_attempt_delay`): Zeek ends such a connection as `S0` 5 s
/// after its SYN even while the originator keeps sending (a client that sends its ACK and data
/// to a server whose answers the capture does not hold), and the originator's later packets
/// open a connection of their own, picked up mid-stream. Following it keeps the records, and
/// so the KDD features, those of the connection semantics the features were defined with, and
/// bounds how long an unanswered connection's retransmissions keep one record open.
pub fn final_deadline_ns(t: &Timeouts, key: &FlowKey, v: &FlowValue) -> u64 {
    let idle_ns = v
        .last_seen_ns
        .saturating_add(idle_timeout(t, key, v).as_nanos() as u64);
    if unanswered_syn_attempt(key, v) {
        idle_ns.min(
            v.first_seen_ns
                .saturating_add(t.tcp_attempt.as_nanos() as u64),
        )
    } else {
        idle_ns
    }
}

/// A TCP connection whose originator sent a SYN, and neither FIN nor RST, and whose responder
/// sent nothing: what Zeek's attempt timer ends ([`final_deadline_ns`]).
pub fn unanswered_syn_attempt(key: &FlowKey, v: &FlowValue) -> bool {
    let orig = usize::from(v.orig_side & 1);
    key.protocol == ipproto::TCP
        && v.history[orig] & history::SYN != 0
        && v.history[orig] & (history::FIN | history::RST) == 0
        && v.packets[peer(orig)] == 0
}

/// An unanswered TCP attempt whose originator sent its SYN again, and nothing else, as a
/// client's stack retransmits: at most [`LifecycleConfig::MAX_CLIENT_SYNS`] SYNs, the last at
/// least [`LifecycleConfig::MIN_SYN_RETRANSMISSION`] after the first. Such an attempt gets no
/// early verdict. A spoofed flood sends each SYN once, from a new source port; SYNs sent twice
/// in a row, or a capture that holds each frame twice, do not look like a retransmission.
pub fn retransmitted_syn(key: &FlowKey, v: &FlowValue) -> bool {
    let orig = usize::from(v.orig_side & 1);
    let min_gap_ns = LifecycleConfig::MIN_SYN_RETRANSMISSION.as_nanos() as u64;
    unanswered_syn_attempt(key, v)
        && v.history[orig] & history::NON_SYN == 0
        && (2..=LifecycleConfig::MAX_CLIENT_SYNS).contains(&v.packets[orig])
        && v.last_seen_ns.saturating_sub(v.first_seen_ns) >= min_gap_ns
}

/// An established TCP connection that holds a request open: its originator completed the
/// handshake and sent payload, its responder has sent none, neither side has closed, and the
/// originator trickles: fewer packets so far than [`LifecycleConfig::HELD_REQUEST_AFTER`] has
/// seconds (a request sent whole is a packet or a few; an upload, which a server also answers
/// only at its end, sends many a second). Asked at that age: a slow attack's connection
/// (`slowloris`, `slowhttptest`'s slow headers and slow bodies) is one, as is a request to a
/// server that does not answer for that long; an ordinary exchange is answered long before,
/// and a connection whose server speaks first (SSH, SMTP, FTP, a database's greeting) or that
/// carries no request yet (a browser's preconnect, an idle pool) is none.
pub fn held_request(key: &FlowKey, v: &FlowValue) -> bool {
    let orig = usize::from(v.orig_side & 1);
    let resp = peer(orig);
    let (o, r) = (v.history[orig], v.history[resp]);
    key.protocol == ipproto::TCP
        && o & (history::SYN | history::ACK) == history::SYN | history::ACK
        && r & history::SYN_ACK != 0
        && (o | r) & (history::FIN | history::RST) == 0
        && v.payload_bytes[orig] > 0
        && v.payload_bytes[resp] == 0
        && v.packets[orig] < LifecycleConfig::HELD_REQUEST_AFTER.as_secs()
}

/// A TCP connection whose end the kernel signals (or should have): FIN both ways, or a RST.
pub fn tcp_finished(key: &FlowKey, v: &FlowValue) -> Option<EndReason> {
    if key.protocol != ipproto::TCP {
        return None;
    }
    let (a, b) = (v.history[SIDE_LO], v.history[SIDE_HI]);
    if (a | b) & history::RST != 0 {
        Some(EndReason::Rst)
    } else if a & b & history::FIN != 0 {
        Some(EndReason::Fin)
    } else {
        None
    }
}
