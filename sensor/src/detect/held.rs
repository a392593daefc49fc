//! The held-request rule: one source holding many connections of one service open with
//! requests it never finishes, beside the model.
//!
//! Why a rule: a slow attack on a web server (`slowloris`, `slowhttptest`'s slow headers and
//! slow bodies, R-U-Dead-Yet) opens hundreds of ordinary connections and sends each request a
//! line or a few bytes at a time, every 10 to 15 s, so that the server keeps a worker or a
//! connection slot waiting on each for good; a few hundred such connections from one address
//! take a server with a fixed pool (Apache's prefork or worker, a small application server)
//! off the network. Each connection is an ordinary established one, and at its end (when the
//! attacker stops, or the server times the request out) an ordinary short exchange: in the lab,
//! 200 connections held for 40 s against the web server, none flagged by the model.
//!
//! What sets the attack apart is that the connections hold requests open, many at once from
//! one source. The lifecycle looks once at every answered TCP connection still open
//! [`HELD_REQUEST_AFTER`] (10 s) after its first packet, and hands on the record of one that
//! holds a request ([`crate::lifecycle::held_request`]: its originator sent payload, trickling
//! at less than a packet a second, and its server has sent nothing back; an early verdict,
//! [`ConnectionRecord::held_request`]). The rule counts those records per source, host and
//! port, in the second each came, over the last minute, and flags each from the
//! [`super::VolumeConfig::held_requests_per_min`]-th on (50 by default: `slowhttptest` opens
//! 50 connections by default, `slowloris` 150, and a browser at most 6 to one host, each
//! answered in well under a second).
//!
//! Flagged although benign: a client (or a proxy, or many users behind one translating
//! address) with that many requests that one server leaves unanswered for 10 s at once: a
//! service that hangs. Silenced with a `[[suppress]]` rule on `detector = ["volume"]` for its
//! source, or a higher bar. Missed: a slow attack spread over many sources each below the bar;
//! one over TLS (the server's handshake messages are payload back, and the flow counters cannot
//! tell a request held after them from a connection idle after its answer); and one whose
//! requests the server answers early (a slow read attack, which reads the answer slowly
//! instead).
//!
//! A flagged record is anomalous with detector `volume` (scope `held`) and opens the `flood`
//! incident of the service by itself, which its connections keep open while they last
//! (`crate::incidents`). The model does not judge these early verdicts: a connection gets its
//! model verdict at its end, as every other.
//!
//! [`HELD_REQUEST_AFTER`]: crate::lifecycle::LifecycleConfig::HELD_REQUEST_AFTER

use super::{
    VolumeConfig, VolumeHit, VolumeScope,
    logins::{MinuteCounts, NS_PER_SEC, PerService, minute_hit},
};
use crate::flows::ConnectionRecord;

/// The held-request rule's counts; see the module docs.
#[derive(Debug, Default)]
pub struct HeldRequests {
    held: PerService<MinuteCounts>,
}

impl HeldRequests {
    /// Counts `rec` if it is a held request's record, and flags it where its source's held
    /// requests to its service in the minute up to it reach the bar.
    pub fn judge(&mut self, cfg: &VolumeConfig, rec: &ConnectionRecord) -> Option<VolumeHit> {
        if !cfg.enabled || !rec.held_request() {
            return None;
        }
        let s = rec.final_unix_ns / NS_PER_SEC;
        let count = self
            .held
            .entry(rec, s, MinuteCounts::latest_s, || MinuteCounts::new(s))?
            .add(s)?;
        minute_hit(VolumeScope::Held, count, cfg.held_requests_per_min)
    }

    /// Sources and services followed now.
    pub fn tracked(&self) -> usize {
        self.held.tracked()
    }

    /// Held requests not counted because the table of sources and services was full.
    pub fn untracked(&self) -> u64 {
        self.held.untracked()
    }
}

/// The held-request record of a connection from `src` to `dst`'s web port, begun at
/// `start_ns`: 10 s in, the originator's handshake and four short lines of a request, nothing
/// back (the lab's `slowloris` shape). For the tests of the rule, the pipeline and the
/// incidents.
#[cfg(test)]
pub(crate) fn held_record(
    src: std::net::IpAddr,
    src_port: u16,
    dst: std::net::IpAddr,
    start_ns: u64,
) -> ConnectionRecord {
    use sensor_common::{
        conn_state::ConnState,
        flow::history::{ACK, DATA, SYN, SYN_ACK},
    };

    use crate::flows::{EndReason, Transport};
    let at_ns = start_ns + 10 * NS_PER_SEC;
    ConnectionRecord {
        end_unix_ns: at_ns - 5 * NS_PER_SEC,
        final_unix_ns: at_ns,
        answer_unix_ns: Some(start_ns + 100_000),
        orig_packets: 4,
        resp_packets: 3,
        orig_bytes: 70,
        resp_bytes: 0,
        conn_state: ConnState::S1,
        end_reason: EndReason::Ongoing,
        history: crate::flows::History {
            orig: SYN | ACK | DATA,
            resp: SYN_ACK | ACK,
        },
        ..ConnectionRecord::new(Transport::Tcp, (src, src_port), (dst, 80), start_ns)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::flows::EndReason;

    const T0: u64 = 1_700_000_000 * NS_PER_SEC;

    fn held(src: u8, port: u16, at_ms: u64) -> ConnectionRecord {
        held_record(
            IpAddr::V4(Ipv4Addr::new(198, 18, 4, src)),
            port,
            IpAddr::V4(Ipv4Addr::new(198, 18, 2, 1)),
            T0 + at_ms * 1_000_000,
        )
    }

    #[test]
    fn a_source_holding_requests_is_flagged_from_the_bar_on() {
        let cfg = VolumeConfig::default();
        let bar = cfg.held_requests_per_min;
        let mut r = HeldRequests::default();
        // 150 connections opened 10 ms apart, as `slowloris` opens its sockets.
        let hits: Vec<Option<VolumeHit>> = (0..150)
            .map(|i| r.judge(&cfg, &held(1, 40_000 + i, u64::from(i) * 10)))
            .collect();
        let first = (bar - 1) as usize;
        assert!(hits[..first].iter().all(Option::is_none));
        let hit = hits[first].expect("the bar's held request is flagged");
        assert_eq!(hit.scope, VolumeScope::Held);
        assert_eq!(hit.ratio, 1.0);
        assert!(hits[first..].iter().all(Option::is_some));
        // Another source holding a few of the service's requests counts on its own.
        assert!(r.judge(&cfg, &held(2, 40_000, 1_500)).is_none());
        assert_eq!(r.tracked(), 2);
        assert_eq!(r.untracked(), 0);
    }

    #[test]
    fn a_minute_apart_or_below_the_bar_is_no_attack() {
        let cfg = VolumeConfig::default();
        let bar = u64::from(cfg.held_requests_per_min);
        let mut r = HeldRequests::default();
        // One held request short of the bar in a minute, then as many again a minute later.
        for i in 0..bar - 1 {
            assert!(
                r.judge(&cfg, &held(1, 40_000 + i as u16, i * 100))
                    .is_none()
            );
        }
        for i in 0..bar - 1 {
            let at_ms = 61_000 + i * 100;
            assert!(r.judge(&cfg, &held(1, 41_000 + i as u16, at_ms)).is_none());
        }
    }

    #[test]
    fn only_held_request_records_count_and_the_rule_can_be_turned_off() {
        let mut cfg = VolumeConfig {
            held_requests_per_min: 2,
            ..VolumeConfig::default()
        };
        let mut r = HeldRequests::default();
        // Final records of connections of that shape, and unanswered attempts' early
        // verdicts, are no held requests.
        for (i, change) in [
            |c: &mut ConnectionRecord| c.end_reason = EndReason::Fin,
            |c: &mut ConnectionRecord| c.answer_unix_ns = None,
        ]
        .iter()
        .enumerate()
        {
            for k in 0..5 {
                let mut c = held(1, 40_000 + 10 * i as u16 + k, 0);
                change(&mut c);
                assert!(r.judge(&cfg, &c).is_none(), "{c:?}");
            }
        }
        assert_eq!(r.tracked(), 0);
        cfg.enabled = false;
        for k in 0..5 {
            assert!(r.judge(&cfg, &held(1, 41_000 + k, 0)).is_none());
        }
        cfg.enabled = true;
        assert!(r.judge(&cfg, &held(1, 42_000, 0)).is_none());
        assert!(r.judge(&cfg, &held(1, 42_001, 0)).is_some());
    }
}
