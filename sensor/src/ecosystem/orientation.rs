//! Zeek's orientation of a connection, for the rows of Zeek's `conn.log` layout.
//!
//! The sensor's originator is the side whose packet it saw first; only a TCP connection first
//! seen at its SYN-ACK is turned round (the SYN-ACK's receiver is the originator). That is the
//! orientation the window features count a connection against, and it stays so for detection:
//! turning round a datagram because it came from a well-known port would let a UDP scan sent
//! from source port 53 (`nmap -g 53`) look like thousands of replies from the targets
//! (`docs/replay.md`).
//!
//! Zeek also guesses the server from the ports when a connection's first packet is not a SYN
//! (its "likely server ports", [`LIKELY_SERVER_PORTS`]), and marks the guess with `^` in the
//! history. Operators put the sensor's `conn.log` next to Zeek's, so that layout follows Zeek's
//! rule ([`zeek_view`]): its rows name the originator Zeek names, with Zeek's `conn_state` for
//! that orientation (a server's lone UDP reply is `SHR` there, `S0` in the sensor's JSON), while
//! the uid and Community ID stay those of the sensor's record, so the rows still join the
//! alerts.
//!
//! Zeek's rule (`TCPAnalyzer::WantConnection`, `UDPAnalyzer::WantConnection` in
//! `src/packet_analysis/protocol/{tcp,udp}`), applied to what the record knows:
//! * TCP whose first packet is not a SYN: turned round if the sender's port is a likely server
//!   port and the receiver's is not; if both are, only if the sender's port is the lower one and
//!   the first packet is not a SYN-ACK (a SYN-ACK first is how stealth scans look). A SYN-ACK
//!   first is turned round later too, once its receiver answers it (Zeek's traces
//!   `zeek-image-post-1080-8000-x.pcap` and `http-on-irc-port-missing-syn.pcapng`: `^hADadFf`).
//! * UDP: turned round if the sender's port is a likely server port and the receiver's is not.
//! * Never where the first packet went to the IPv4 broadcast address (`NewConn`), and never for
//!   ICMP and other protocols.
//!
//! Not followed: the flips Zeek's DNS and NTP analyzers make from the payload (a DNS response or
//! an NTP server-mode message seen first), which the flow table does not read.
//!
//! The record does not keep its first packet, only the kinds of packet each side sent: a TCP
//! connection whose responder sent a SYN-ACK and whose originator sent no SYN is taken to have
//! begun with that SYN-ACK (the sensor turned it round), any other without the originator's SYN
//! to have begun with a packet of the originator's.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr},
};

use sensor_common::{
    conn_state::{datagram_conn_state, tcp_conn_state},
    flow::history,
};

use crate::flows::{ConnectionRecord, History, Transport};

/// Zeek's `likely_server_ports` as its default scripts (`scripts/base/`) leave it: the server
/// ports its protocol and tunnel analyzers register (`Analyzer::register_for_ports` and
/// `PacketAnalyzer::register_for_ports` add each one; older versions listed them by hand, mostly
/// the same). POP3 has none (its analyzer is found by the payload only), and of DHCP's ports
/// only the server's is one. TCP and UDP apart, as Zeek keeps them; sorted, for a binary search.
pub const LIKELY_SERVER_PORTS: LikelyServerPorts = LikelyServerPorts {
    tcp: &[
        21,    // ftp
        22,    // ssh
        25,    // smtp
        53,    // dns
        79,    // finger
        80,    // http
        81,    // http
        88,    // krb
        135,   // dce-rpc
        139,   // smb
        143,   // imap
        389,   // ldap
        443,   // ssl
        445,   // smb
        502,   // modbus
        514,   // syslog
        563,   // ssl
        585,   // ssl
        587,   // smtp
        614,   // ssl
        631,   // http
        636,   // ssl
        989,   // ssl
        990,   // ssl
        992,   // ssl
        993,   // ssl
        995,   // ssl
        1080,  // http, socks
        1434,  // mysql
        1883,  // mqtt
        2811,  // ftp (GridFTP)
        3128,  // http
        3268,  // ldap
        3306,  // mysql
        3389,  // rdp
        5222,  // xmpp
        5223,  // ssl
        5269,  // xmpp
        5432,  // postgresql
        6379,  // redis
        6666,  // irc
        6667,  // irc
        6668,  // irc
        6669,  // irc
        8000,  // http
        8080,  // http
        8888,  // http
        20000, // dnp3
    ],
    udp: &[
        53,    // dns
        67,    // dhcp (the server's; not the client's 68)
        88,    // krb
        123,   // ntp
        137,   // dns (NetBIOS)
        161,   // snmp
        162,   // snmp
        389,   // ldap
        443,   // ssl (DTLS)
        514,   // syslog
        784,   // quic
        853,   // quic
        1812,  // radius
        2123,  // gtpv1
        2152,  // gtpv1
        3389,  // rdp
        3544,  // teredo
        4789,  // vxlan
        5060,  // sip
        5072,  // ayiya
        5353,  // dns (mDNS)
        5355,  // dns (LLMNR)
        6081,  // geneve
        20000, // dnp3
    ],
};

/// Ports by transport ([`LIKELY_SERVER_PORTS`]).
#[derive(Debug)]
pub struct LikelyServerPorts {
    pub tcp: &'static [u16],
    pub udp: &'static [u16],
}

impl LikelyServerPorts {
    /// Whether Zeek takes `port` of `transport` for a server's.
    pub fn contains(&self, transport: Transport, port: u16) -> bool {
        let ports = match transport {
            Transport::Tcp => self.tcp,
            Transport::Udp => self.udp,
            _ => return false,
        };
        ports.binary_search(&port).is_ok()
    }
}

/// How Zeek orients a record, relative to the sensor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZeekOrientation {
    /// Zeek's originator is the sensor's responder.
    pub swapped: bool,
    /// Zeek turned the connection round after taking its first packet's sender for the
    /// originator (`^` in its history). Not the same as `swapped`: a SYN-ACK first is turned round
    /// by both where the client answers it or it came from a server's port, by the sensor alone
    /// where neither.
    pub flipped: bool,
}

/// Zeek's orientation of `rec` (module docs).
pub fn zeek_orientation(rec: &ConnectionRecord) -> ZeekOrientation {
    let likely = |port| LIKELY_SERVER_PORTS.contains(rec.transport, port);
    // Zeek never turns round a first packet sent to the IPv4 broadcast address.
    let broadcast = |a: IpAddr| a == IpAddr::V4(Ipv4Addr::BROADCAST);
    let (o, r) = (rec.orig_port, rec.resp_port);
    let same = |flipped| ZeekOrientation {
        swapped: flipped,
        flipped,
    };
    match rec.transport {
        Transport::Tcp if !rec.history.start_seen() => {
            let h = rec.history;
            if h.resp & history::SYN_ACK != 0 && h.orig & history::SYN_ACK == 0 {
                // Began with the responder's SYN-ACK, which the sensor turned round. Zeek does
                // too (with `^`) where the SYN-ACK came from a likely server port to another
                // port, or later, once the client answers it (Zeek's own traces show it: a
                // SYN-ACK between two server ports, 8000 to 1080 or 80 to 6669, then the
                // client's ACK and data, is logged `^hADadFf` from the client); else, the client
                // silent (backscatter of a spoofed SYN), its originator is the SYN-ACK's sender.
                let flipped = (likely(r) && !likely(o) && !broadcast(rec.orig_addr)) || h.orig != 0;
                ZeekOrientation {
                    swapped: !flipped,
                    flipped,
                }
            } else {
                same(likely(o) && (!likely(r) || o < r) && !broadcast(rec.resp_addr))
            }
        }
        Transport::Udp => same(likely(o) && !likely(r) && !broadcast(rec.resp_addr)),
        _ => ZeekOrientation::default(),
    }
}

/// `rec` as Zeek's `conn.log` orients and counts it: TCP's byte counts from its sequence
/// numbers ([`ConnectionRecord::stream_bytes`]), as Zeek's; and where Zeek's originator is the
/// sensor's responder, the two sides swapped (addresses, ports, counts, history) and
/// `conn_state` derived again for that orientation, as Zeek derives it. Times, uid and
/// Community ID are unchanged.
pub fn zeek_view(rec: &ConnectionRecord) -> (Cow<'_, ConnectionRecord>, ZeekOrientation) {
    let how = zeek_orientation(rec);
    // TCP's byte counts as Zeek's: sequence space (`ConnectionRecord::stream_bytes`).
    let stream = rec
        .stream_bytes
        .filter(|&(o, r)| (o, r) != (rec.orig_bytes, rec.resp_bytes));
    if !how.swapped && stream.is_none() {
        return (Cow::Borrowed(rec), how);
    }
    let mut v = rec.clone();
    if let Some((o, r)) = stream {
        (v.orig_bytes, v.resp_bytes) = (o, r);
    }
    if how.swapped {
        std::mem::swap(&mut v.orig_addr, &mut v.resp_addr);
        std::mem::swap(&mut v.orig_port, &mut v.resp_port);
        std::mem::swap(&mut v.orig_packets, &mut v.resp_packets);
        std::mem::swap(&mut v.orig_bytes, &mut v.resp_bytes);
        v.history = History {
            orig: rec.history.resp,
            resp: rec.history.orig,
        };
    }
    // Derived again from what the row says, as Zeek derives it from its own counts.
    v.conn_state = match v.transport {
        Transport::Tcp => {
            tcp_conn_state(v.history.orig, v.history.resp, v.orig_bytes, v.resp_bytes)
        }
        _ => datagram_conn_state(v.orig_packets, v.resp_packets),
    };
    (Cow::Owned(v), how)
}

/// The `history` column of a row oriented by [`zeek_view`]: `^` where Zeek turned it round,
/// then TCP's letters (the set of kinds each side sent, not Zeek's sequence), or for UDP Zeek's
/// `D`/`d` for a datagram (empty ones too) from the originator/responder. `None` where there is
/// nothing to write (Zeek's unset field).
pub fn zeek_history(view: &ConnectionRecord, how: ZeekOrientation) -> Option<String> {
    let mut s = String::new();
    if how.flipped {
        s.push('^');
    }
    match view.transport {
        Transport::Tcp => s.push_str(&view.history.letters()),
        Transport::Udp => {
            if view.orig_packets > 0 {
                s.push('D');
            }
            if view.resp_packets > 0 {
                s.push('d');
            }
        }
        _ => {}
    }
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use sensor_common::{conn_state::ConnState, flow::history::*};

    use super::*;

    fn record(transport: Transport, (o, r): (u16, u16), (ho, hr): (u8, u8)) -> ConnectionRecord {
        let tcp = transport == Transport::Tcp;
        let (op, rp) = (u64::from(ho != 0 || !tcp), u64::from(hr != 0));
        let mut rec = ConnectionRecord {
            end_unix_ns: 2,
            orig_packets: op,
            resp_packets: rp,
            orig_bytes: 10 * op,
            ip_proto: if tcp { 6 } else { 17 },
            final_unix_ns: 2,
            history: History { orig: ho, resp: hr },
            ..ConnectionRecord::new(
                transport,
                (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), o),
                (IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)), r),
                1,
            )
        };
        rec.conn_state = match transport {
            Transport::Tcp => tcp_conn_state(ho, hr, rec.orig_bytes, rec.resp_bytes),
            _ => datagram_conn_state(rec.orig_packets, rec.resp_packets),
        };
        rec
    }

    #[test]
    fn the_ports_are_sorted_for_the_search() {
        for ports in [LIKELY_SERVER_PORTS.tcp, LIKELY_SERVER_PORTS.udp] {
            assert!(ports.windows(2).all(|w| w[0] < w[1]), "{ports:?}");
        }
        assert!(LIKELY_SERVER_PORTS.contains(Transport::Udp, 53));
        assert!(LIKELY_SERVER_PORTS.contains(Transport::Tcp, 22));
        assert!(!LIKELY_SERVER_PORTS.contains(Transport::Udp, 22));
        assert!(!LIKELY_SERVER_PORTS.contains(Transport::Icmp, 53));
    }

    #[test]
    fn a_servers_lone_udp_reply_is_turned_round_by_its_port() {
        // A DNS answer whose query was not seen: the sensor's S0 from port 53, Zeek's SHR.
        let rec = record(Transport::Udp, (53, 40_000), (0, 0));
        assert_eq!(rec.conn_state, ConnState::S0);
        let (view, how) = zeek_view(&rec);
        assert_eq!(
            how,
            ZeekOrientation {
                swapped: true,
                flipped: true
            }
        );
        assert_eq!((view.orig_port, view.resp_port), (40_000, 53));
        assert_eq!(view.orig_addr, rec.resp_addr);
        assert_eq!((view.orig_packets, view.resp_packets), (0, 1));
        assert_eq!((view.orig_bytes, view.resp_bytes), (0, 10));
        assert_eq!(view.conn_state, ConnState::SHR);
        assert_eq!(zeek_history(&view, how).as_deref(), Some("^d"));
        // Times and the rest stay the record's.
        assert_eq!(
            (view.start_unix_ns, view.end_unix_ns),
            (rec.start_unix_ns, rec.end_unix_ns)
        );
    }

    #[test]
    fn udp_between_two_server_ports_or_none_keeps_the_first_sender() {
        for ports in [(53, 53), (123, 53), (40_000, 53), (40_000, 50_000)] {
            let rec = record(Transport::Udp, ports, (0, 0));
            let (view, how) = zeek_view(&rec);
            assert_eq!(how, ZeekOrientation::default(), "{ports:?}");
            assert!(matches!(view, Cow::Borrowed(_)));
            assert_eq!(zeek_history(&view, how).as_deref(), Some("D"));
        }
    }

    #[test]
    fn tcp_with_its_syn_is_never_turned_round() {
        // A SYN from port 80 to port 40000 (a scan from a server port): Zeek keeps the SYN's
        // sender, and so does the row.
        let rec = record(Transport::Tcp, (80, 40_000), (SYN, 0));
        assert_eq!(zeek_orientation(&rec), ZeekOrientation::default());
        let (view, _) = zeek_view(&rec);
        assert_eq!(view.conn_state, ConnState::S0);
    }

    #[test]
    fn tcp_picked_up_mid_stream_from_the_server_is_turned_round() {
        // The server's data and FIN, nothing of the client's seen.
        let rec = record(
            Transport::Tcp,
            (22, 50_000),
            (NON_SYN | ACK | DATA | FIN, 0),
        );
        assert_eq!(rec.conn_state, ConnState::SH);
        let (view, how) = zeek_view(&rec);
        assert!(how.swapped && how.flipped);
        assert_eq!((view.orig_port, view.resp_port), (50_000, 22));
        assert_eq!(view.conn_state, ConnState::SHR);
        assert_eq!(zeek_history(&view, how).as_deref(), Some("^adf"));
        // A lone RST from the server: the sensor's OTH, Zeek's RSTRH.
        let rst = record(Transport::Tcp, (443, 50_000), (NON_SYN | RST, 0));
        assert_eq!(rst.conn_state, ConnState::OTH);
        assert_eq!(zeek_view(&rst).0.conn_state, ConnState::RSTRH);
        // Both ports a server's: turned round only from the lower one.
        let both = record(Transport::Tcp, (80, 8080), (NON_SYN | ACK | DATA, 0));
        assert!(zeek_orientation(&both).swapped);
        let both = record(Transport::Tcp, (8080, 80), (NON_SYN | ACK | DATA, 0));
        assert!(!zeek_orientation(&both).swapped);
        // Neither a server's: the first sender stays the originator.
        let none = record(Transport::Tcp, (40_000, 50_000), (NON_SYN | ACK | DATA, 0));
        assert_eq!(zeek_orientation(&none), ZeekOrientation::default());
    }

    #[test]
    fn a_syn_ack_first_is_turned_round_as_zeek_does() {
        // The sensor took the SYN-ACK's receiver for the originator. Zeek does too, and marks it
        // `^`, where the SYN-ACK came from a server port to another port ...
        let from_server = record(Transport::Tcp, (50_000, 80), (0, SYN_ACK));
        assert_eq!(
            zeek_orientation(&from_server),
            ZeekOrientation {
                swapped: false,
                flipped: true
            }
        );
        let (view, how) = zeek_view(&from_server);
        assert_eq!(view.orig_port, 50_000);
        assert_eq!(zeek_history(&view, how).as_deref(), Some("^h"));
        // ... or where the client answered it, whatever the ports (as Zeek logged a SYN-ACK
        // from port 8000 to port 1080 answered by the client: `^hADadFf`).
        let answered = record(
            Transport::Tcp,
            (1080, 8000),
            (NON_SYN | ACK | DATA, SYN_ACK),
        );
        let (view, how) = zeek_view(&answered);
        assert!(!how.swapped && how.flipped);
        assert_eq!(zeek_history(&view, how).as_deref(), Some("^ADh"));
        // Unanswered from another port (backscatter of a spoofed SYN), or between two server
        // ports: the SYN-ACK's sender is Zeek's originator.
        for (ports, client) in [((80, 50_000), 0), ((8080, 80), 0)] {
            let rec = record(Transport::Tcp, ports, (client, SYN_ACK));
            let (view, how) = zeek_view(&rec);
            assert_eq!(
                how,
                ZeekOrientation {
                    swapped: true,
                    flipped: false
                },
                "{ports:?} {client}"
            );
            assert_eq!((view.orig_port, view.resp_port), (ports.1, ports.0));
            assert_eq!(view.history.orig, SYN_ACK);
            assert_eq!(zeek_history(&view, how).as_deref(), Some("H"));
        }
    }

    #[test]
    fn nothing_sent_to_the_broadcast_address_is_turned_round() {
        // A DHCP server's offer to 255.255.255.255:68.
        let mut rec = record(Transport::Udp, (67, 68), (0, 0));
        rec.resp_addr = IpAddr::V4(Ipv4Addr::BROADCAST);
        assert_eq!(zeek_orientation(&rec), ZeekOrientation::default());
        rec.resp_addr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
        assert!(zeek_orientation(&rec).swapped);
    }
}
