//! Address translation between watched interfaces that the kernel did not follow: found,
//! counted and reported.
//!
//! Why: the kernel side accounts a packet forwarded between two watched interfaces once, where
//! it enters (XDP on ingress, before the host's netfilter), and skips it where it leaves. On a
//! gateway that translates addresses (masquerade or SNAT, as most Linux gateways do), the two
//! directions of a connection then enter with different addresses: the inside client's request
//! with its own address (`client -> server`), the server's answer with the gateway's (`server ->
//! gateway`). The kernel learns each translation where the connection's first packet leaves
//! and accounts the answers under the original connection (`sensor_common::nat`). Where it could
//! not (receive packet steering forwarding on another CPU than the one that ran XDP, more
//! translated connections at once than its map holds), the connection becomes two halves, a
//! request never answered and an answer never asked for, which the model reads as probes: a
//! NAT gateway watched on both sides without the kernel's learning had 239 of 652 connections
//! flagged and a `port_scan` from its DNS server to its own address (December 7, namespaces).
//!
//! The halves are recognisable: a TCP connection that one of this host's own addresses opened
//! (the remote side answered with a SYN-ACK) while the sensor saw nothing sent from it. The
//! host's own connections leave through the egress program, which counts them; a connection
//! forwarded and translated to the host's address left unseen. Such connections are counted
//! (`sensor_nat_split_connections_total`) and the log says what to do at the 10th, 100th, ...
//! (watch the inside interfaces only: `docs/operations.md`). Only TCP: one-way UDP to the
//! host's address is as often the internet's unanswered noise as a translated answer.

use std::{collections::HashSet, net::IpAddr, time::Instant};

use sensor_common::flow::history::SYN_ACK;

use crate::flows::{ConnectionRecord, Transport};

/// How often the interfaces' addresses are read again (DHCP renews, an address added).
const REFRESH_SECS: u64 = 60;

/// The watched interfaces' addresses, and the connections split by translation to them.
#[derive(Debug)]
pub struct NatCheck {
    interfaces: Vec<String>,
    local: HashSet<IpAddr>,
    read_at: Option<Instant>,
    /// Split connections seen so far.
    pub split_total: u64,
    /// The count at which the log says so next (10, 100, 1,000, ...).
    next_warning: u64,
}

impl NatCheck {
    pub fn new(interfaces: &[String]) -> NatCheck {
        NatCheck {
            interfaces: interfaces.to_vec(),
            local: HashSet::new(),
            read_at: None,
            split_total: 0,
            next_warning: 10,
        }
    }

    /// A check over fixed addresses (tests), never read from the interfaces.
    pub fn with_addresses(local: impl IntoIterator<Item = IpAddr>) -> NatCheck {
        NatCheck {
            local: local.into_iter().collect(),
            read_at: Some(Instant::now()),
            ..NatCheck::new(&[])
        }
    }

    /// Reads the interfaces' addresses again if they are older than a minute; a
    /// failure keeps the last ones (and is logged).
    pub fn refresh(&mut self) {
        if self.interfaces.is_empty()
            || self
                .read_at
                .is_some_and(|t| t.elapsed().as_secs() < REFRESH_SECS)
        {
            return;
        }
        self.read_at = Some(Instant::now());
        match interface_addresses(&self.interfaces) {
            Ok(a) => self.local = a,
            Err(e) => log::warn!("reading the addresses of the watched interfaces: {e}"),
        }
    }

    /// Whether `rec` is the answering half of a connection translated to one of this host's
    /// addresses (see the module docs); counts it, and returns the log line to write at the
    /// 10th, 100th, ... such connection.
    pub fn observe(&mut self, rec: &ConnectionRecord) -> Option<String> {
        if !(rec.transport == Transport::Tcp
            && rec.orig_packets == 0
            && rec.resp_packets > 0
            && rec.history.resp & SYN_ACK != 0
            && self.local.contains(&rec.orig_addr))
        {
            return None;
        }
        self.split_total += 1;
        if self.split_total < self.next_warning {
            return None;
        }
        self.next_warning = self.next_warning.saturating_mul(10);
        Some(format!(
            "{} TCP connections of this host's address {} were answered (by {} and others) with \
             nothing seen sent from it: the host translates addresses (NAT) between interfaces \
             the sensor watches, and the kernel did not follow these translations (receive \
             packet steering, or more translated connections at once than it holds), which \
             splits each into two halves the model misjudges. Watch the inside interfaces only \
             (docs/operations.md, \"NAT gateways\"); sensor_nat_split_connections_total \
             counts them",
            self.split_total, rec.orig_addr, rec.resp_addr
        ))
    }
}

/// The IPv4 and IPv6 addresses of `interfaces` (`getifaddrs`).
fn interface_addresses(interfaces: &[String]) -> std::io::Result<HashSet<IpAddr>> {
    let mut out = HashSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head to a valid pointer; freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not freed yet.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated interface name of the node.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if !interfaces.iter().any(|i| i.as_bytes() == name.to_bytes()) {
            continue;
        }
        // SAFETY: `ifa_addr` is non-null and its family says which sockaddr it is.
        let addr = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*ifa.ifa_addr.cast::<libc::sockaddr_in>();
                    Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
                }
                libc::AF_INET6 => {
                    let sin6 = &*ifa.ifa_addr.cast::<libc::sockaddr_in6>();
                    Some(IpAddr::from(sin6.sin6_addr.s6_addr))
                }
                _ => None,
            }
        };
        out.extend(addr);
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use sensor_common::{conn_state::ConnState, flow::history};

    use super::*;
    use crate::flows::EndReason;

    const GW: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 2, 254));
    const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 2, 1));
    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1));

    /// A TCP connection `orig -> SERVER:80`, with what each side sent.
    fn conn(orig: IpAddr, orig_packets: u64, resp_packets: u64) -> ConnectionRecord {
        let mut c = ConnectionRecord::new(Transport::Tcp, (orig, 40_000), (SERVER, 80), 1);
        (c.orig_packets, c.resp_packets) = (orig_packets, resp_packets);
        c.conn_state = ConnState::SF;
        c.end_reason = EndReason::Fin;
        if orig_packets > 0 {
            c.history.orig = history::SYN | history::ACK;
        }
        if resp_packets > 0 {
            c.history.resp = history::SYN_ACK | history::ACK;
        }
        c
    }

    #[test]
    fn answers_to_this_hosts_address_with_nothing_sent_from_it_are_counted() {
        let mut check = NatCheck::with_addresses([GW]);
        // The answering half of a translated connection: counted, the 10th logged.
        let lines: Vec<Option<String>> = (0..10).map(|_| check.observe(&conn(GW, 0, 6))).collect();
        assert_eq!(check.split_total, 10);
        assert!(lines[..9].iter().all(Option::is_none));
        let line = lines[9].as_deref().expect("the 10th is logged");
        assert!(
            line.contains("198.18.2.254") && line.contains("NAT"),
            "{line}"
        );
        // Not split: the host's own connection (seen both ways), the inside half (another
        // address), an answer without a SYN-ACK (a stray segment), UDP.
        check.observe(&conn(GW, 5, 6));
        check.observe(&conn(CLIENT, 0, 6));
        let mut stray = conn(GW, 0, 1);
        stray.history.resp = history::ACK;
        check.observe(&stray);
        let mut udp = conn(GW, 0, 1);
        udp.transport = Transport::Udp;
        check.observe(&udp);
        assert_eq!(check.split_total, 10);
        // The next line at the 100th.
        let logged = (10..100)
            .filter(|_| check.observe(&conn(GW, 0, 6)).is_some())
            .count();
        assert_eq!((check.split_total, logged), (100, 1));
    }

    #[test]
    fn the_loopback_interfaces_addresses_are_read() {
        let a = interface_addresses(&["lo".to_string()]).expect("getifaddrs");
        assert!(a.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{a:?}");
        assert!(
            interface_addresses(&["no-such-if0".to_string()])
                .expect("getifaddrs")
                .is_empty()
        );
    }
}
