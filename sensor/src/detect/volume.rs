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
//! TCP is left to the model: a SYN, ACK or RST flood is many connections or a connection
//! without a handshake, which the model and the incidents' `flood` already catch, and an
//! established TCP connection at any rate is a transfer.
//!
//! A flagged conversation is anomalous with detector `volume` and a combined score of its rate
//! over the threshold (at least 1), and opens its flood incident by itself
//! (`crate::incidents`): the rate is the evidence that a hundred anomalous connections are for
//! the model's verdicts. The thresholds are settings (`[volume]` in the configuration file): a
//! site with a legitimate faster one-way stream raises them, or silences the stream with a
//! `[[suppress]]` rule on `detector = ["volume"]`.

use crate::flows::{ConnectionRecord, Transport};

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
}

impl Default for VolumeConfig {
    fn default() -> Self {
        VolumeConfig {
            enabled: true,
            min_packets: 1_000,
            icmp_echo_pps: 1_000.0,
            udp_one_way_pps: 5_000.0,
        }
    }
}

/// What the rule found in a conversation it flags.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VolumeHit {
    /// The originator's mean packets per second over the conversation so far.
    pub packets_per_second: f64,
    /// That rate over the threshold it passed (at least 1): the verdict's combined score.
    pub ratio: f64,
}

/// The originator's mean packets per second over `rec`'s life so far (first to last packet;
/// a conversation of one instant counts as one microsecond long).
pub fn orig_packets_per_second(rec: &ConnectionRecord) -> f64 {
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
            // At most 1% answered, in integers: 100 * answers <= datagrams.
            Transport::Udp if rec.resp_packets.saturating_mul(100) <= rec.orig_packets => {
                self.udp_one_way_pps
            }
            _ => return None,
        };
        let pps = orig_packets_per_second(rec);
        (threshold > 0.0 && pps >= threshold).then_some(VolumeHit {
            packets_per_second: pps,
            ratio: pps / threshold,
        })
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
            stream_bytes: None,
            history: Default::default(),
            start_unix_ns: start,
            end_unix_ns: start + span_ms * 1_000_000,
            transport,
            ip_version: if icmp_type.is_some_and(|t| t >= 128) {
                6
            } else {
                4
            },
            orig_addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            orig_port: if transport == Transport::Icmp {
                0
            } else {
                40_000
            },
            resp_addr: IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            resp_port: if transport == Transport::Icmp { 0 } else { 53 },
            icmp_type,
            icmp_code: icmp_type.map(|_| 0),
            orig_packets: orig,
            resp_packets: resp,
            orig_bytes: orig * 64,
            resp_bytes: resp * 64,
            conn_state: ConnState::SF,
            urgent_packets: 0,
            wrong_fragments: 0,
            land: false,
            to_group: false,
            end_reason: EndReason::Ongoing,
            ip_proto: match transport {
                Transport::Icmp => 1,
                Transport::Udp => 17,
                _ => 6,
            },
            tunnel: None,
            carries: None,
            answer_unix_ns: None,
            final_unix_ns: start + span_ms * 1_000_000,
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
    fn tcp_is_left_to_the_model_and_the_rule_can_be_turned_off() {
        assert!(!flags(Transport::Tcp, None, 100_000, 0, 1_000));
        let off = VolumeConfig {
            enabled: false,
            ..VolumeConfig::default()
        };
        assert!(off.judge(&conv(ICMP, Some(8), 20_000, 0, 1_000)).is_none());
    }
}
