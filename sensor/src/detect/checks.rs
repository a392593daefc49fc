//! The routine-check rule: the model's verdict is withdrawn from an exchange that one source
//! repeats with one service of one host, unchanged, at a steady pace of about a second or slower.
//!
//! Why: a monitoring system, a load balancer or an orchestrator checks services on a schedule
//! (Nagios' `check_tcp` and `check_ssh`, Prometheus' blackbox probes, Kubernetes' TCP probes,
//! HAProxy's health checks): it connects and closes without a byte, reads a banner and resets, is
//! refused by a service that is down, or waits in vain on a host that is down. Each such exchange
//! is, connection for connection, what the 1998 data's probes look like (a zero-byte or reset
//! connection, a refusal, an unanswered SYN), so the model flags every one, and checks every few
//! seconds add up to an incident (`docs/design.md`, "Attack shapes": a checker's 313 flagged
//! connections of 637). What sets a check apart is repetition: the same exchange (the same state,
//! the same bytes each way), with the same service of the same host, again and again at the pace of
//! a schedule. An attack does not repeat itself so: a scan or a sweep moves on to the next port or
//! host, a flood repeats far faster than twice a second, and a password guesser is the login rule's
//! ([`super::logins`]), whose verdicts this rule never touches.
//!
//! The rule follows, for each source, host, transport and port, the exchanges the model flagged
//! there ([`SIGNATURES`] at most, the least recent replaced) that a real client made: a TCP
//! connection whose handshake the originator completed, that the host refused (`REJ`), or that went
//! unanswered while the originator's stack sent its SYN again (`S0` with two SYNs or more: a
//! `connect()` waiting on a host that is down); a UDP exchange with an answer (and one-way
//! messages, below). A flood tool or a
//! scanner sends each SYN once, and a SYN its own kernel resets after the host's SYN-ACK completes
//! no handshake: neither is followed. An exchange repeats when a later one has the same state and
//! the same bytes each way within an eighth; it keeps a pace when the time from the start of the
//! last repeat is at least [`ChecksConfig::min_period_ns`] (half a second by default: a schedule of
//! one a second, with its jitter, and never a flood's pace), at most [`MAX_PERIOD_SECS`], and
//! within half to twice the time before (a check that was skipped once keeps its pace). From the
//! [`ChecksConfig::repeats`]-th exchange at a pace on (the fourth by default), the model's verdict
//! is withdrawn: the connection is normal, with combined score 0, its detectors' scores kept, and
//! its record says why (`routine_check`). The first ones stay flagged: an operator sees the check
//! once, and again whenever its pace or its exchange changes (a service that goes down, a check
//! that starts failing).
//!
//! Not withdrawn: single unanswered SYNs (a spoofed flood's, `hping3`'s), the volume and login
//! rules' verdicts, connections sped up past the minimum period, and anything that changes from one
//! repeat to the next. A scan repeated on a schedule (the site's own vulnerability scanner every
//! hour) is withdrawn from its fourth round on; an attacker who repeats a real client's probe of
//! one port once a second for minutes gets three alerts.
//!
//! **One-way messages.** A client's messages to a collector (a metric to statsd, a log line to
//! syslog, a flow export, a trap: UDP with payload, no answer) are a datagram each, often from a
//! new socket each (a library that opens one per message), to a service the host's other clients
//! rarely use. Each is what the 1998 data's UDP probes (`satan`'s) look like, and the model flags
//! them by the hundred where the collector's host is busy with other services (a statsd client's
//! counters among a host's lookups: 450 of 600 flagged, an `anomalous_source`). What sets them
//! apart is again repetition: a probe is a datagram or two per port, and the same source sending
//! to the same service again and again is its client. Their sizes and pace are the client's
//! (a counter, a log line; a few a minute or hundreds a second), so neither is required: each
//! conversation with payload and no answer counts once (at its first verdict, the early one a
//! second after it), and from the `repeats`-th within [`MAX_PERIOD_SECS`] of the one before
//! the model's verdict is withdrawn. Whether such a stream is a flood is its rate's to say (the
//! volume rule, whose verdicts this rule never touches). Not messages: empty datagrams (nothing
//! for a service to read: a flood tool's), and answered ones (exchanges, above). A UDP scan or
//! sweep sends one probe per port or host and stays flagged; a UDP flood with payload under the
//! volume rule's bar from one source is withdrawn from its fourth datagram (the model had read
//! such a flood as ordinary once its windows filled anyway).

use std::net::IpAddr;

use sensor_common::{
    conn_state::ConnState,
    flow::history::{self, SYN, SYN_ACK},
};

use crate::{
    flows::{ConnectionRecord, EndReason, Transport},
    model::{Detector, Verdict},
};

/// Exchanges followed per source, host, transport and port: a monitoring system checks a
/// service in one or two ways (a connect check and a page fetch), a site's few more.
pub const SIGNATURES: usize = 4;
/// The longest pace followed: the slowest schedule of common monitoring systems (Nagios'
/// default check interval is five minutes) with room to spare.
pub const MAX_PERIOD_SECS: u64 = 900;
/// Sources and services followed at most; beyond, a new one finds no room until the sweep
/// forgets the quiet ones ([`RoutineChecks::untracked`]).
const MAX_KEYS: usize = 32_768;
const NS_PER_SEC: u64 = 1_000_000_000;

/// The rule's settings (the configuration's `[checks]`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChecksConfig {
    /// Off: every verdict is the model's.
    pub enabled: bool,
    /// The exchange at a pace from which verdicts are withdrawn (at least 2: the first of a
    /// pace is its own).
    pub repeats: u32,
    /// The shortest time between repeats that is a schedule's: faster is a flood's. Below a
    /// schedule's fastest common pace (a second) by its jitter's margin: a check every second
    /// starts 0.9999 s after the last as often as 1.0001 s.
    pub min_period_ns: u64,
}

impl Default for ChecksConfig {
    fn default() -> ChecksConfig {
        ChecksConfig {
            enabled: true,
            repeats: 4,
            min_period_ns: NS_PER_SEC / 2,
        }
    }
}

/// Why a verdict was withdrawn: the exchange's repeats at its pace so far, and the pace.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct CheckHit {
    /// Exchanges at this pace so far, this one included.
    pub repeats: u32,
    /// The time from the last repeat's start to this one's, seconds.
    pub period_secs: f64,
}

/// One exchange of a source with a service: its shape and its pace so far. 24 bytes, so
/// that a full map of [`MAX_KEYS`] sources and services with [`SIGNATURES`] each stays near
/// 10 MB.
#[derive(Clone, Copy, Debug)]
struct Exchange {
    last_start_ns: u64,
    /// Bytes each way, saturated at `u32::MAX` (a check carries a few hundred).
    orig_bytes: u32,
    resp_bytes: u32,
    /// The time between the last two repeats, microseconds; 0 before the second.
    period_us: u32,
    repeats: u16,
    state: ConnState,
    /// A source's one-way messages to the service ([`one_way_message`]), counted whatever
    /// their bytes and pace.
    message: bool,
}

const _: () = assert!(std::mem::size_of::<Option<Exchange>>() == 24);

/// `bytes` as an exchange keeps them.
fn saturated(bytes: u64) -> u32 {
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

impl Exchange {
    /// Counts one more of a source's one-way messages to the service, at any pace (a
    /// collector receives them as its clients emit them, a few a minute or hundreds a
    /// second); a message after [`MAX_PERIOD_SECS`] of silence starts the count again. A
    /// conversation is counted once, at its first verdict (its early one): a record that began
    /// no later than the last one counted (the final record of a conversation judged early, or
    /// one that came late) is judged by the count so far. From the `repeats`-th on, the
    /// model's verdict is withdrawn.
    fn repeat_message(&mut self, cfg: &ChecksConfig, rec: &ConnectionRecord) -> Option<CheckHit> {
        let gap_ns = rec.start_unix_ns.saturating_sub(self.last_start_ns);
        if rec.start_unix_ns > self.last_start_ns {
            self.repeats = if gap_ns <= MAX_PERIOD_SECS * NS_PER_SEC {
                self.repeats.saturating_add(1)
            } else {
                1
            };
            self.last_start_ns = rec.start_unix_ns;
        }
        (u32::from(self.repeats) >= cfg.repeats).then(|| CheckHit {
            repeats: u32::from(self.repeats),
            period_secs: gap_ns as f64 / NS_PER_SEC as f64,
        })
    }

    /// Whether `rec` is this exchange again: the same state, the same bytes each way within an
    /// eighth (a page with a date in it, a banner with a counter).
    fn same(&self, rec: &ConnectionRecord) -> bool {
        if self.message || one_way_message(rec) {
            return self.message && one_way_message(rec);
        }
        let near = |a: u32, b: u64| {
            let b = saturated(b);
            a.abs_diff(b) <= a.max(b) / 8
        };
        self.state == rec.conn_state
            && near(self.orig_bytes, rec.orig_bytes)
            && near(self.resp_bytes, rec.resp_bytes)
    }
}

/// The exchanges of one source with one service.
#[derive(Clone, Copy, Debug, Default)]
struct Exchanges {
    slots: [Option<Exchange>; SIGNATURES],
}

impl Exchanges {
    /// The latest start among them.
    fn latest_start_ns(&self) -> u64 {
        self.slots
            .iter()
            .flatten()
            .map(|e| e.last_start_ns)
            .max()
            .unwrap_or(0)
    }
}

/// The rule's state; see the module docs.
#[derive(Debug, Default)]
pub struct RoutineChecks {
    keys: crate::hashing::Map<(IpAddr, IpAddr, Transport, u16), Exchanges>,
    /// Flagged exchanges not followed: their source and service found no room.
    untracked: u64,
    /// The second of the last sweep of quiet keys: at most one a second.
    swept_s: u64,
}

/// Whether `rec` is a finished exchange of a real client with a host: a TCP connection whose
/// handshake the originator completed (it acknowledged the host's SYN-ACK), that the host
/// refused, or that went unanswered while the originator's stack sent its SYN again (a
/// `connect()` waiting on a host that is down: flood tools and scanners send each SYN once);
/// a UDP exchange with an answer.
fn real_exchange(rec: &ConnectionRecord) -> bool {
    if rec.end_reason == EndReason::Ongoing {
        return false;
    }
    match rec.transport {
        Transport::Tcp => {
            let h = rec.history;
            let completed = h.start_seen() && h.resp & SYN_ACK != 0 && h.orig & history::ACK != 0;
            let retried = rec.conn_state == ConnState::S0 && h.orig == SYN && rec.orig_packets >= 2;
            rec.conn_state == ConnState::REJ || completed || retried
        }
        Transport::Udp => rec.resp_packets > 0,
        _ => false,
    }
}

/// Whether `rec` is a one-way message to a UDP service: a conversation with payload that got
/// no answer (a metric to statsd, a log line to syslog, a trap, a flow export), at its early
/// verdict or its end. An empty datagram carries nothing for a service to read: a flood
/// tool's, never a client's message.
fn one_way_message(rec: &ConnectionRecord) -> bool {
    rec.transport == Transport::Udp && rec.resp_packets == 0 && rec.orig_bytes > 0
}

impl RoutineChecks {
    /// Follows `rec` if the model flagged it (`verdict`) and a real client made it; returns why
    /// the verdict is withdrawn where the exchange repeats at a pace (see the module docs).
    pub fn judge(
        &mut self,
        cfg: &ChecksConfig,
        rec: &ConnectionRecord,
        verdict: &Verdict,
    ) -> Option<CheckHit> {
        let by_model = matches!(
            verdict.detector,
            Detector::Supervised | Detector::Unsupervised | Detector::Both
        );
        let message = one_way_message(rec);
        if !cfg.enabled || !verdict.anomalous || !by_model || !(message || real_exchange(rec)) {
            return None;
        }
        self.sweep(rec.start_unix_ns / NS_PER_SEC);
        let key = (rec.orig_addr, rec.resp_addr, rec.transport, rec.resp_port);
        if self.keys.len() >= MAX_KEYS && !self.keys.contains_key(&key) {
            self.untracked += 1;
            return None;
        }
        let entry = self.keys.entry(key).or_default();
        let Some(ex) = entry.slots.iter_mut().flatten().find(|e| e.same(rec)) else {
            // A new exchange, in an empty slot or the least recent one's.
            let slot = entry
                .slots
                .iter_mut()
                .min_by_key(|s| s.map_or(0, |e| e.last_start_ns + 1))?;
            *slot = Some(Exchange {
                last_start_ns: rec.start_unix_ns,
                orig_bytes: saturated(rec.orig_bytes),
                resp_bytes: saturated(rec.resp_bytes),
                period_us: 0,
                repeats: 1,
                state: rec.conn_state,
                message,
            });
            return None;
        };
        if message {
            return ex.repeat_message(cfg, rec);
        }
        // Records come as connections end: one that began before the last repeat's start
        // (they overlapped) breaks the pace.
        let gap_ns = rec.start_unix_ns.saturating_sub(ex.last_start_ns);
        let paced = (cfg.min_period_ns..=MAX_PERIOD_SECS * NS_PER_SEC).contains(&gap_ns)
            && rec.start_unix_ns >= ex.last_start_ns;
        let period_ns = u64::from(ex.period_us) * 1_000;
        let steady = paced
            && period_ns > 0
            && gap_ns.saturating_mul(2) >= period_ns
            && gap_ns <= period_ns.saturating_mul(2);
        // At most MAX_PERIOD_SECS where paced: microseconds fit a u32.
        let gap_us = u32::try_from(gap_ns / 1_000).unwrap_or(u32::MAX).max(1);
        (ex.repeats, ex.period_us) = match (steady, paced) {
            (true, _) => (ex.repeats.saturating_add(1), gap_us),
            // The second of a new pace: this one and the last.
            (false, true) => (2, gap_us),
            (false, false) => (1, 0),
        };
        ex.last_start_ns = ex.last_start_ns.max(rec.start_unix_ns);
        (u32::from(ex.repeats) >= cfg.repeats).then(|| CheckHit {
            repeats: u32::from(ex.repeats),
            period_secs: gap_ns as f64 / NS_PER_SEC as f64,
        })
    }

    /// Forgets the sources and services without a flagged exchange in the last
    /// [`MAX_PERIOD_SECS`], at most once a second and only once the map is half full (a sweep
    /// costs a scan of it).
    fn sweep(&mut self, now_s: u64) {
        if !super::volume::sweep_due(&mut self.swept_s, now_s) || self.keys.len() < MAX_KEYS / 2 {
            return;
        }
        self.keys
            .retain(|_, v| v.latest_start_ns() / NS_PER_SEC + MAX_PERIOD_SECS > now_s);
    }

    /// Sources and services followed now.
    pub fn tracked(&self) -> usize {
        self.keys.len()
    }

    /// Flagged exchanges not followed because the table of sources and services was full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::History;
    use sensor_common::flow::history::{ACK, DATA, FIN, RST, SYN, SYN_ACK};

    const S: u64 = NS_PER_SEC;

    fn flagged() -> Verdict {
        Verdict {
            anomalous: true,
            score: 1.5,
            detector: Detector::Both,
            supervised_score: 0.9,
            unsupervised_score: Some(0.8),
            supervised_score_plain: 0.9,
            withdrawn_by_attack_boxes: false,
        }
    }

    /// A TCP connection from `src` to port `port` of 198.18.60.2 begun at `start_ns`, ended 2 ms
    /// later by FIN.
    fn tcp(src: [u8; 4], port: u16, start_ns: u64) -> ConnectionRecord {
        ConnectionRecord {
            end_unix_ns: start_ns + 2_000_000,
            final_unix_ns: start_ns + 2_000_000,
            end_reason: EndReason::Fin,
            ..ConnectionRecord::new(
                Transport::Tcp,
                (IpAddr::from(src), 40_000),
                (IpAddr::from([198, 18, 60, 2]), port),
                start_ns,
            )
        }
    }

    /// A port check of SSH that reads the banner and resets (the monitoring capture's shape).
    fn banner_check(src: [u8; 4], start_ns: u64) -> ConnectionRecord {
        ConnectionRecord {
            conn_state: ConnState::RSTO,
            history: History {
                orig: SYN | ACK | FIN | RST,
                resp: SYN_ACK | ACK | DATA,
            },
            orig_packets: 4,
            resp_packets: 3,
            resp_bytes: 32,
            ..tcp(src, 22, start_ns)
        }
    }

    /// `n` exchanges made by `make` at `starts_ns`, and which were withdrawn.
    fn run(
        cfg: &ChecksConfig,
        starts_ns: &[u64],
        make: impl Fn(u64) -> ConnectionRecord,
    ) -> Vec<bool> {
        let mut c = RoutineChecks::default();
        starts_ns
            .iter()
            .map(|&t| c.judge(cfg, &make(t), &flagged()).is_some())
            .collect()
    }

    #[test]
    fn a_check_repeated_every_second_is_withdrawn_from_its_fourth_on() {
        // Starts a little before and after each second, as a scheduler's jitter makes them.
        let starts: Vec<u64> = (0..10)
            .map(|i| 5 * S + i * S + if i % 2 == 0 { 3_000_000 } else { 0 } - 100_000)
            .collect();
        let w = run(&ChecksConfig::default(), &starts, |t| {
            banner_check([198, 18, 60, 1], t)
        });
        assert_eq!(w, [[false; 3].as_slice(), &[true; 7]].concat());
        // Every five minutes, the pace of Nagios' default, likewise.
        let starts: Vec<u64> = (0..6).map(|i| i * 300 * S).collect();
        let w = run(&ChecksConfig::default(), &starts, |t| {
            banner_check([198, 18, 60, 1], t)
        });
        assert_eq!(w, [false, false, false, true, true, true]);
    }

    #[test]
    fn faster_than_the_minimum_period_or_unsteady_or_changing_stays_flagged() {
        let cfg = ChecksConfig::default();
        let check = |t| banner_check([198, 18, 60, 1], t);
        // Three a second: faster than a schedule.
        let starts: Vec<u64> = (0..50).map(|i| i * S / 3).collect();
        assert!(run(&cfg, &starts, check).iter().all(|w| !w));
        // Gaps that more than double or halve each time: no schedule.
        let starts = [0, S, 4 * S, 5 * S, 15 * S, 17 * S, 40 * S];
        assert!(run(&cfg, &starts, check).iter().all(|w| !w));
        // The bytes change each time (a different answer each check): not the same exchange.
        let mut c = RoutineChecks::default();
        for i in 0..10u64 {
            let mut r = check(i * S);
            r.resp_bytes = 32 + 10 * i;
            assert!(c.judge(&cfg, &r, &flagged()).is_none(), "check {i}");
        }
        // Single unanswered SYNs (a flood's, hping3's once a second) are not followed; a
        // client's, whose stack sent its SYN again for want of an answer (a check of a host
        // that is down), is.
        let attempt = |t, syns| ConnectionRecord {
            conn_state: ConnState::S0,
            history: History { orig: SYN, resp: 0 },
            orig_packets: syns,
            resp_packets: 0,
            resp_bytes: 0,
            ..check(t)
        };
        let starts: Vec<u64> = (0..10).map(|i| i * S).collect();
        assert!(run(&cfg, &starts, |t| attempt(t, 1)).iter().all(|w| !w));
        let w = run(&cfg, &starts, |t| attempt(t, 2));
        assert_eq!(w, [[false; 3].as_slice(), &[true; 7]].concat());
        // A SYN the attacker's kernel resets after the host's SYN-ACK did not complete a
        // handshake: not a check.
        let mut c = RoutineChecks::default();
        for i in 0..10u64 {
            let mut r = check(i * S);
            r.history = History {
                orig: SYN | RST,
                resp: SYN_ACK,
            };
            r.resp_bytes = 0;
            assert!(c.judge(&cfg, &r, &flagged()).is_none(), "reset SYN {i}");
        }
    }

    #[test]
    fn a_refused_check_and_a_skipped_round_keep_their_pace_and_normal_verdicts_are_not_followed() {
        let cfg = ChecksConfig::default();
        let refused = |t| {
            let mut r = tcp([198, 18, 60, 1], 5432, t);
            r.conn_state = ConnState::REJ;
            r.history = History {
                orig: SYN,
                resp: RST | ACK,
            };
            r
        };
        // Every 10 s, one round skipped (a 20 s gap): withdrawn from the fourth on.
        let starts = [0, 10 * S, 20 * S, 30 * S, 50 * S, 60 * S];
        assert_eq!(
            run(&cfg, &starts, refused),
            [false, false, false, true, true, true]
        );
        // Verdicts the model left normal, or the volume rule's, are not followed.
        let mut c = RoutineChecks::default();
        let mut normal = flagged();
        normal.anomalous = false;
        normal.detector = Detector::None;
        let mut volume = flagged();
        volume.detector = Detector::Volume;
        for i in 0..10u64 {
            assert!(c.judge(&cfg, &refused(i * S), &normal).is_none());
            assert!(c.judge(&cfg, &refused(i * S), &volume).is_none());
        }
        assert_eq!(c.tracked(), 0);
        // Off: nothing is withdrawn.
        let off = ChecksConfig {
            enabled: false,
            ..cfg
        };
        let starts: Vec<u64> = (0..10).map(|i| i * S).collect();
        assert!(run(&off, &starts, refused).iter().all(|w| !w));
    }

    #[test]
    fn two_exchanges_with_one_service_keep_a_pace_each() {
        // A page fetched every second and a download every ten: each its own exchange.
        let cfg = ChecksConfig::default();
        let mut c = RoutineChecks::default();
        let mut withdrawn_downloads = 0;
        for i in 0..60u64 {
            let mut r = banner_check([198, 18, 60, 1], i * S);
            r.resp_port = 80;
            r.conn_state = ConnState::SF;
            r.orig_bytes = 80;
            r.resp_bytes = 600;
            let page = c.judge(&cfg, &r, &flagged()).is_some();
            assert_eq!(page, i >= 3, "page {i}");
            if i % 10 == 5 {
                r.start_unix_ns += S / 2;
                r.resp_bytes = 5_000_000;
                withdrawn_downloads += usize::from(c.judge(&cfg, &r, &flagged()).is_some());
            }
        }
        assert_eq!(withdrawn_downloads, 3, "the 4th to 6th of 6 downloads");
        assert_eq!(c.tracked(), 1);
    }

    /// A datagram with `bytes` of payload from `src_port` to port `port` of 198.18.60.2 begun
    /// at `start_ns`, unanswered; `early`: at its early verdict (still open), else at its end.
    fn datagram(
        src_port: u16,
        port: u16,
        bytes: u64,
        start_ns: u64,
        early: bool,
    ) -> ConnectionRecord {
        ConnectionRecord {
            orig_packets: 1,
            orig_bytes: bytes,
            resp_packets: 0,
            conn_state: ConnState::S0,
            end_reason: if early {
                EndReason::Ongoing
            } else {
                EndReason::Idle
            },
            ..ConnectionRecord::new(
                Transport::Udp,
                (IpAddr::from([198, 18, 60, 1]), src_port),
                (IpAddr::from([198, 18, 60, 2]), port),
                start_ns,
            )
        }
    }

    /// A client's one-way messages to a collector (statsd with a socket per metric: a new
    /// source port each, sizes and gaps irregular): withdrawn from the fourth on, each
    /// conversation counted once (its early verdict, then its final record a minute later);
    /// after 15 minutes of silence the count starts again.
    #[test]
    fn one_way_messages_to_a_service_are_withdrawn_from_the_fourth_on_at_any_pace() {
        let cfg = ChecksConfig::default();
        let mut c = RoutineChecks::default();
        let starts: Vec<u64> = (0..40u64).map(|i| 7 * S + i * i * 3_000_000).collect();
        let mut early = Vec::new();
        for (i, &t) in starts.iter().enumerate() {
            let rec = datagram(40_000 + i as u16, 8125, 12 + (i as u64 * 7) % 60, t, true);
            early.push(c.judge(&cfg, &rec, &flagged()).is_some());
        }
        assert_eq!(early, [[false; 3].as_slice(), &[true; 37]].concat());
        // Their final records come later (the UDP idle timeout): counted already, judged by
        // the count so far, so the first three are withdrawn too.
        for (i, &t) in starts.iter().enumerate() {
            let rec = datagram(40_000 + i as u16, 8125, 12 + (i as u64 * 7) % 60, t, false);
            let hit = c.judge(&cfg, &rec, &flagged()).expect("withdrawn");
            assert_eq!(hit.repeats, 40, "message {i}: {hit:?}");
        }
        // After 15 minutes without one, three flagged again.
        let later = starts[39] + (MAX_PERIOD_SECS + 1) * S;
        let again: Vec<bool> = (0..5u64)
            .map(|i| {
                let rec = datagram(50_000 + i as u16, 8125, 20, later + i * S, true);
                c.judge(&cfg, &rec, &flagged()).is_some()
            })
            .collect();
        assert_eq!(again, [false, false, false, true, true]);
        assert_eq!(c.tracked(), 1);
    }

    /// What is no client's messages: empty datagrams (a flood tool's), a probe of each port
    /// once (a UDP scan), and a datagram the service answered, which is an exchange (kept
    /// only where it repeats unchanged at a schedule's pace).
    #[test]
    fn empty_datagrams_a_scans_probes_and_answered_datagrams_are_no_messages() {
        let cfg = ChecksConfig::default();
        let mut c = RoutineChecks::default();
        for i in 0..50u64 {
            let rec = datagram(40_000 + i as u16, 53, 0, i * 300_000, true);
            assert!(
                c.judge(&cfg, &rec, &flagged()).is_none(),
                "empty datagram {i}"
            );
        }
        for i in 0..50u64 {
            // nmap -sU: a payload per port, sent twice to a port that stays silent.
            for k in 0..2 {
                let rec = datagram(41_000, 1_000 + i as u16, 40, i * S + k * S / 2, true);
                assert!(
                    c.judge(&cfg, &rec, &flagged()).is_none(),
                    "probe of port {i}"
                );
            }
        }
        for i in 0..10u64 {
            let rec = ConnectionRecord {
                resp_packets: 1,
                resp_bytes: 100 + 40 * i,
                conn_state: ConnState::SF,
                ..datagram(42_000 + i as u16, 161, 40, i * S / 10, false)
            };
            assert!(
                c.judge(&cfg, &rec, &flagged()).is_none(),
                "answered datagram {i}"
            );
        }
        // Off: the model's verdicts.
        let off = ChecksConfig {
            enabled: false,
            ..cfg
        };
        let mut c = RoutineChecks::default();
        for i in 0..10u64 {
            let rec = datagram(43_000 + i as u16, 8125, 20, i * S, true);
            assert!(c.judge(&off, &rec, &flagged()).is_none());
        }
    }
}
