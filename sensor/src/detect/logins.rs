//! The login rule: one source guessing passwords on one login service, by its rate of short
//! sessions, beside the model.
//!
//! Why a rule: a password-guessing attempt on SSH, FTP or Telnet is a complete, ordinary
//! session (handshake, version strings, key exchange, one refused login, close); the 1998 data
//! found `guess_passwd` by its content features (failed logins), which a flow sensor does not
//! see, and in the flow features one attempt is any short session (`hydra` against SSH: 400
//! attempts in 36 s, none flagged by the model; `docs/design.md`, "Attack shapes"). What sets
//! guessing apart is how many sessions one source opens to one service, and how: people log in
//! a few times an hour, automation keeps one connection open (Ansible's `ControlPersist`) or
//! runs one session after another, and a guessing tool runs several at once to go faster
//! (`hydra`: 16 tasks by default, 4 recommended against SSH; Patator 10 threads; Ncrack and
//! Nmap's `ssh-brute` in parallel too).
//!
//! The rule counts, for each source, host and login port ([`LOGIN_PORTS`]), the sessions that
//! began in each of the last 60 seconds and that look like a login: the handshake completed,
//! both sides sent payload (a port check that connects and closes is not a login), the session
//! lasted at most [`LOGIN_SESSION_MAX_SECS`] (a user's session lasts longer; a refused guess
//! ends in a second or two), and it began while another such session of the source to the
//! service was still open (a script's loop of `ssh host command`, one after another, at any
//! pace, never does). A session is flagged when the minute up to its start holds at least
//! [`super::VolumeConfig::login_sessions_per_min`] of them: 60 by default, one a second for a
//! minute, below what a guessing tool opens (`hydra` with 4 tasks: about 11 a second;
//! CIC-IDS2017's SSH-Patator about 1.6 a second). Missed: a guesser that tries one session at
//! a time, or slower than one a second. Flagged although benign: parallel automation opening
//! new short sessions to one host faster than one a second (silenced with a `[[suppress]]` rule
//! on `detector = ["volume"]` for its source).
//!
//! A flagged session is anomalous with detector `volume` (scope `logins`), and opens one
//! `brute_force` incident for its source, host and port by itself (`crate::incidents`).

use std::net::IpAddr;

use sensor_common::conn_state::ConnState;

use super::{VolumeConfig, VolumeHit, VolumeScope};
use crate::flows::{ConnectionRecord, EndReason, Transport};

/// TCP ports whose every session begins with a person's or a script's login: SSH, FTP, Telnet,
/// rlogin/rexec/rsh, RDP and VNC. Not here: web logins (a browser's many connections to one
/// site look the same whether it logs in or not), databases (an application without a
/// connection pool opens a session per request, hundreds a minute from one server), and mail
/// (a site's mail clients behind one address poll POP3 and IMAP every few minutes each).
pub const LOGIN_PORTS: [u16; 8] = [21, 22, 23, 512, 513, 514, 3389, 5900];

/// Whether `port` is one of [`LOGIN_PORTS`].
pub fn is_login_port(port: u16) -> bool {
    LOGIN_PORTS.contains(&port)
}

/// The longest a session may last and still count as a login attempt: a refused guess ends
/// within seconds (sshd closes after its `MaxAuthTries`, a guessing tool after one or a few
/// passwords), while a user's session, or a transfer, lasts longer.
pub const LOGIN_SESSION_MAX_SECS: u64 = 30;

/// Seconds of sessions kept per source and service: the rule's minute.
pub(super) const WINDOW_SECS: u64 = 60;
/// Sources and services followed at most; beyond, a new one finds no room until the sweep
/// forgets the quiet ones ([`LoginRates::untracked`]).
pub(super) const MAX_KEYS: usize = 65_536;
pub(super) const NS_PER_SEC: u64 = 1_000_000_000;

/// Events of the last [`WINDOW_SECS`] seconds, per second (by second modulo the window), and
/// the latest second one came in: one source's login sessions to one service, or its held
/// requests ([`super::held`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct MinuteCounts {
    second: u64,
    began: [u16; WINDOW_SECS as usize],
}

impl MinuteCounts {
    pub(super) fn new(s: u64) -> MinuteCounts {
        MinuteCounts {
            second: s,
            began: [0; WINDOW_SECS as usize],
        }
    }

    /// Counts an event in second `s`; returns the events of the minute up to the latest
    /// second (`s`'s included), or `None` where `s` is older than that minute.
    pub(super) fn add(&mut self, s: u64) -> Option<u32> {
        if s + WINDOW_SECS <= self.second {
            return None;
        }
        if s > self.second {
            // Seconds that passed without an event, or all of them after a quiet minute.
            let gap = (s - self.second).min(WINDOW_SECS);
            for k in 1..=gap {
                self.began[((self.second + k) % WINDOW_SECS) as usize] = 0;
            }
            self.second = s;
        }
        let slot = &mut self.began[(s % WINDOW_SECS) as usize];
        *slot = slot.saturating_add(1);
        Some(self.began.iter().map(|&n| u32::from(n)).sum())
    }

    /// The latest second an event came in.
    pub(super) fn latest_s(&self) -> u64 {
        self.second
    }
}

/// One source's login sessions to one service.
#[derive(Clone, Copy, Debug)]
struct Sessions {
    began: MinuteCounts,
    /// The latest end of the source's sessions to the service seen so far: a session that
    /// began before it ran beside another (records come as sessions end).
    last_end_ns: u64,
}

/// A per-minute rule's state for each source, host and port (the login rule's, the
/// held-request rule's): at most [`MAX_KEYS`] of them, swept of those quiet for a minute.
#[derive(Debug)]
pub(super) struct PerService<V> {
    keys: crate::hashing::Map<(IpAddr, IpAddr, u16), V>,
    /// Events not counted: their source and service found no room.
    untracked: u64,
    /// The second of the last sweep of quiet keys: at most one a second.
    swept_s: u64,
}

impl<V> Default for PerService<V> {
    fn default() -> Self {
        PerService {
            keys: Default::default(),
            untracked: 0,
            swept_s: 0,
        }
    }
}

impl<V> PerService<V> {
    /// The state of `rec`'s source, host and port, made with `new` where it has none, at
    /// second `s`; `None` (and the event counted as untracked) where the map has no room.
    /// First forgets the keys whose `last_active_s` is a minute before `s`, at most once a
    /// second and only once the map is half full (a sweep costs a scan of it).
    pub(super) fn entry(
        &mut self,
        rec: &ConnectionRecord,
        s: u64,
        last_active_s: impl Fn(&V) -> u64,
        new: impl FnOnce() -> V,
    ) -> Option<&mut V> {
        if super::volume::sweep_due(&mut self.swept_s, s) && self.keys.len() >= MAX_KEYS / 2 {
            self.keys.retain(|_, v| last_active_s(v) + WINDOW_SECS > s);
        }
        let key = (rec.orig_addr, rec.resp_addr, rec.resp_port);
        if self.keys.len() >= MAX_KEYS && !self.keys.contains_key(&key) {
            self.untracked += 1;
            return None;
        }
        Some(self.keys.entry(key).or_insert_with(new))
    }

    /// Sources and services followed now.
    pub(super) fn tracked(&self) -> usize {
        self.keys.len()
    }

    /// Events not counted because the map was full.
    pub(super) fn untracked(&self) -> u64 {
        self.untracked
    }
}

/// The hit of a rule whose `count` events of a source to a service in a minute reached `bar`
/// (0: off), if they did.
pub(super) fn minute_hit(scope: VolumeScope, count: u32, bar: u32) -> Option<VolumeHit> {
    (bar > 0 && count >= bar).then(|| VolumeHit {
        reversed: false,
        scope,
        packets_per_second: f64::from(count) / WINDOW_SECS as f64,
        ratio: f64::from(count) / f64::from(bar),
    })
}

/// The login rule's counts; see the module docs.
#[derive(Debug, Default)]
pub struct LoginRates {
    sessions: PerService<Sessions>,
}

/// Whether `rec` is a finished session that looks like a login attempt (see the module docs).
fn login_session(rec: &ConnectionRecord) -> bool {
    rec.transport == Transport::Tcp
        && rec.end_reason != EndReason::Ongoing
        && is_login_port(rec.resp_port)
        && matches!(
            rec.conn_state,
            ConnState::SF
                | ConnState::S1
                | ConnState::S2
                | ConnState::S3
                | ConnState::RSTO
                | ConnState::RSTR
        )
        && rec.orig_bytes > 0
        && rec.resp_bytes > 0
        && rec.end_unix_ns.saturating_sub(rec.start_unix_ns) <= LOGIN_SESSION_MAX_SECS * NS_PER_SEC
}

impl LoginRates {
    /// Counts `rec` if it is a login session, and flags it where its source's sessions to its
    /// service in the minute up to its start reach the bar.
    pub fn judge(&mut self, cfg: &VolumeConfig, rec: &ConnectionRecord) -> Option<VolumeHit> {
        if !cfg.enabled || !login_session(rec) {
            return None;
        }
        let s = rec.start_unix_ns / NS_PER_SEC;
        let entry = self.sessions.entry(
            rec,
            s,
            |v| v.last_end_ns / NS_PER_SEC,
            || Sessions {
                began: MinuteCounts::new(s),
                last_end_ns: 0,
            },
        )?;
        // Beside another session: one that ended after this one began (its record came first,
        // as it ended first), or one that began first and ends later (counted at its own
        // record, which finds this one's end).
        let beside = rec.start_unix_ns < entry.last_end_ns;
        entry.last_end_ns = entry.last_end_ns.max(rec.end_unix_ns);
        if !beside {
            return None;
        }
        let count = entry.began.add(s)?;
        minute_hit(VolumeScope::Logins, count, cfg.login_sessions_per_min)
    }

    /// Sources and services followed now.
    pub fn tracked(&self) -> usize {
        self.sessions.tracked()
    }

    /// Login sessions not counted because the table of sources and services was full.
    pub fn untracked(&self) -> u64 {
        self.sessions.untracked()
    }
}

/// A refused SSH login from `src` to `dst`, begun at `start_ns` and lasting `lasting_ns`: a
/// complete short session, about 3 kB each way (the lab's measured shape). For the tests of the
/// rule, the pipeline and the incidents.
#[cfg(test)]
pub(crate) fn refused_guess(
    src: IpAddr,
    dst: IpAddr,
    start_ns: u64,
    lasting_ns: u64,
) -> ConnectionRecord {
    use sensor_common::flow::history::{ACK, DATA, FIN, SYN, SYN_ACK};
    ConnectionRecord {
        end_unix_ns: start_ns + lasting_ns,
        final_unix_ns: start_ns + lasting_ns,
        answer_unix_ns: Some(start_ns + 100_000),
        orig_packets: 14,
        resp_packets: 12,
        orig_bytes: 3_077,
        resp_bytes: 2_889,
        conn_state: ConnState::SF,
        end_reason: EndReason::Fin,
        history: crate::flows::History {
            orig: SYN | ACK | DATA | FIN,
            resp: SYN_ACK | ACK | DATA | FIN,
        },
        ..ConnectionRecord::new(Transport::Tcp, (src, 40_000), (dst, 22), start_ns)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const T0: u64 = 1_700_000_000 * NS_PER_SEC;

    /// A refused SSH guess from `src`, `at_ms` after T0: 0.4 s, 3 kB each way.
    fn guess(src: u8, at_ms: u64) -> ConnectionRecord {
        lasting(src, at_ms, 400)
    }

    /// [`guess`], lasting `ms`.
    fn lasting(src: u8, at_ms: u64, ms: u64) -> ConnectionRecord {
        refused_guess(
            IpAddr::V4(Ipv4Addr::new(198, 18, 3, src)),
            IpAddr::V4(Ipv4Addr::new(198, 18, 2, 10)),
            T0 + at_ms * 1_000_000,
            ms * 1_000_000,
        )
    }

    #[test]
    fn a_source_at_the_bar_is_flagged_from_the_session_that_reaches_it() {
        let cfg = VolumeConfig::default();
        let mut r = LoginRates::default();
        // Five a second from one source, each beside the one before but the first: the 61st
        // session, the 60th beside another, 12 s in, reaches the bar.
        let hits: Vec<Option<VolumeHit>> = (0..100)
            .map(|i| r.judge(&cfg, &guess(1, i * 200)))
            .collect();
        assert!(hits[..60].iter().all(Option::is_none));
        let first = hits[60].expect("the 60th session in a minute reaches the bar");
        assert_eq!(first.scope, VolumeScope::Logins);
        assert_eq!(first.ratio, 1.0);
        assert!(hits[60..].iter().all(Option::is_some));
        assert_eq!(hits[99].map(|h| h.ratio), Some(99.0 / 60.0));
        // Another source at the same pace, interleaved, counts on its own.
        assert!(r.judge(&cfg, &guess(2, 20_000)).is_none());
    }

    #[test]
    fn a_minute_under_the_bar_is_not_flagged_however_long_it_lasts() {
        let cfg = VolumeConfig::default();
        let mut r = LoginRates::default();
        // 50 a minute, each beside the next, for ten minutes: never 60 in one minute.
        let flagged = (0..500u64)
            .filter(|i| r.judge(&cfg, &lasting(1, i * 1_200 + 1, 2_000)).is_some())
            .count();
        assert_eq!(flagged, 0);
        // A burst after a quiet minute starts from nothing.
        let mut r = LoginRates::default();
        for i in 0..59 {
            assert!(r.judge(&cfg, &guess(1, i * 10)).is_none());
        }
        assert!(r.judge(&cfg, &guess(1, 61_000)).is_none());
        assert_eq!(r.tracked(), 1);
    }

    /// A script's loop of `ssh host command`, one session after another without a pause:
    /// three a second for two minutes, none beside another, none counted.
    #[test]
    fn sessions_one_after_another_are_a_script_not_a_guesser_at_any_pace() {
        let cfg = VolumeConfig::default();
        let mut r = LoginRates::default();
        let flagged = (0..360u64)
            .filter(|i| r.judge(&cfg, &lasting(1, i * 333, 300)).is_some())
            .count();
        assert_eq!(flagged, 0);
        assert_eq!(r.tracked(), 1);
        // The same pace from two such loops at once is two sessions side by side.
        let mut r = LoginRates::default();
        let flagged = (0..360u64)
            .flat_map(|i| [lasting(1, i * 333, 300), lasting(1, i * 333 + 100, 300)])
            .filter(|rec| r.judge(&cfg, rec).is_some())
            .count();
        assert!(flagged > 500, "{flagged}");
    }

    #[test]
    fn only_short_completed_sessions_with_payload_both_ways_to_login_ports_count() {
        let cfg = VolumeConfig::default();
        type Change = fn(&mut ConnectionRecord);
        let shapes: [(&str, Change); 7] = [
            // `nc -z`: connects and closes, sends nothing.
            ("port check", |r| r.orig_bytes = 0),
            ("no answer", |r| r.resp_bytes = 0),
            ("refused", |r| r.conn_state = ConnState::REJ),
            ("never answered", |r| r.conn_state = ConnState::S0),
            ("a web port", |r| r.resp_port = 443),
            ("an early verdict", |r| r.end_reason = EndReason::Ongoing),
            ("a session of a minute", |r| {
                r.end_unix_ns = r.start_unix_ns + 60 * NS_PER_SEC
            }),
        ];
        for (what, change) in shapes {
            let mut r = LoginRates::default();
            for i in 0..200 {
                let mut rec = guess(1, i * 100);
                change(&mut rec);
                assert!(r.judge(&cfg, &rec).is_none(), "{what} counted");
            }
            assert_eq!(r.tracked(), 0, "{what}");
        }
        // And the rule is off with the volume rule.
        let off = VolumeConfig {
            enabled: false,
            ..VolumeConfig::default()
        };
        let mut r = LoginRates::default();
        assert!((0..200).all(|i| r.judge(&off, &guess(1, i * 100)).is_none()));
    }

    #[test]
    fn sessions_out_of_order_count_in_their_second_and_stale_ones_not_at_all() {
        let cfg = VolumeConfig {
            login_sessions_per_min: 3,
            ..VolumeConfig::default()
        };
        let mut r = LoginRates::default();
        assert!(r.judge(&cfg, &guess(1, 100_000)).is_none());
        assert!(r.judge(&cfg, &guess(1, 100_100)).is_none());
        // Older than the minute up to the latest second: not counted.
        assert!(r.judge(&cfg, &guess(1, 9_000)).is_none());
        assert!(r.judge(&cfg, &guess(1, 40_500)).is_none());
        // A little late: counted.
        assert!(r.judge(&cfg, &guess(1, 45_000)).is_none());
        assert!(r.judge(&cfg, &guess(1, 99_000)).is_some());
    }

    #[test]
    fn a_full_table_counts_what_it_cannot_follow_and_the_sweep_makes_room() {
        let cfg = VolumeConfig::default();
        let mut r = LoginRates::default();
        for i in 0..MAX_KEYS {
            let mut rec = guess(1, 0);
            rec.orig_port = 1;
            rec.orig_addr = IpAddr::V4(Ipv4Addr::from(0xc613_0000 + i as u32));
            r.judge(&cfg, &rec);
        }
        assert_eq!(r.tracked(), MAX_KEYS);
        r.judge(&cfg, &guess(1, 1_000));
        assert_eq!(r.untracked(), 1);
        // A minute later the quiet ones are forgotten.
        r.judge(&cfg, &guess(1, 61_000));
        assert_eq!(r.tracked(), 1);
        assert_eq!(r.untracked(), 1);
    }
}
