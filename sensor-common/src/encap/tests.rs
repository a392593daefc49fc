//! Every encapsulation through the parser and [`follow`], as replay drives them, and every
//! frame cut at every byte.
extern crate std;

use std::{vec, vec::Vec};

use super::*;
use crate::{
    flow::ipproto,
    parse::{parse_ethernet, tcp_flags},
};

// Frames, byte by byte. Addresses from 198.18.0.0/15 and 2001:2::/48.
const A: [u8; 4] = [198, 18, 1, 1];
const B: [u8; 4] = [198, 18, 1, 2];
const C: [u8; 4] = [198, 18, 2, 1];
const D: [u8; 4] = [198, 18, 2, 2];

fn v6(last: u8) -> [u8; 16] {
    [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, last]
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    f.extend(ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend(total.to_be_bytes());
    h.extend([0, 1, 0, 0, 64, protocol, 0, 0]);
    h.extend(src);
    h.extend(dst);
    h.extend_from_slice(payload);
    h
}

fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend((payload.len() as u16).to_be_bytes());
    h.extend([next, 64]);
    h.extend(src);
    h.extend(dst);
    h.extend_from_slice(payload);
    h
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = sport.to_be_bytes().to_vec();
    u.extend(dport.to_be_bytes());
    u.extend(((8 + payload.len()) as u16).to_be_bytes());
    u.extend([0, 0]);
    u.extend_from_slice(payload);
    u
}

fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = sport.to_be_bytes().to_vec();
    t.extend(dport.to_be_bytes());
    t.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(payload);
    t
}

fn echo(kind: u8, id: u16) -> Vec<u8> {
    let mut c = vec![kind, 0, 0, 0];
    c.extend(id.to_be_bytes());
    c.extend([0, 1, 9, 9, 9, 9]);
    c
}

/// The inner packet most tests carry: TCP from C:40000 to D:80 with 10 bytes.
fn inner4() -> Vec<u8> {
    ipv4(
        C,
        D,
        ipproto::TCP,
        &tcp(40000, 80, tcp_flags::SYN, &[7; 10]),
    )
}

fn inner6() -> Vec<u8> {
    ipv6(v6(3), v6(4), ipproto::UDP, &udp(5000, 53, &[7; 12]))
}

fn gre(flags: u16, proto: u16, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut g = flags.to_be_bytes().to_vec();
    g.extend(proto.to_be_bytes());
    g.extend_from_slice(options);
    g.extend_from_slice(payload);
    g
}

fn vxlan(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    v.extend_from_slice(payload);
    v
}

fn geneve(options: &[u8], proto: u16, payload: &[u8]) -> Vec<u8> {
    let mut g = vec![(options.len() / 4) as u8, 0];
    g.extend(proto.to_be_bytes());
    g.extend([0, 0, 42, 0]);
    g.extend_from_slice(options);
    g.extend_from_slice(payload);
    g
}

fn gtp(optional: Option<&[u8]>, payload: &[u8]) -> Vec<u8> {
    let mut g = vec![if optional.is_some() { 0x34 } else { 0x30 }, 0xff];
    let rest = optional.map(|o| o.len()).unwrap_or(0) + payload.len();
    g.extend((rest as u16).to_be_bytes());
    g.extend([0, 0, 0, 1]);
    if let Some(o) = optional {
        g.extend_from_slice(o);
    }
    g.extend_from_slice(payload);
    g
}

/// What [`follow`] and the fast path accounted, in order, and the health counters.
struct Seen {
    accounted: Vec<(Parsed, Marks)>,
    h: Health,
}

/// Drives a frame as replay does (and the kernel, level by level).
fn run(frame: &[u8]) -> Seen {
    let mut h = Health {
        packets: 1,
        ..Health::default()
    };
    let mut accounted = Vec::new();
    match parse_ethernet(frame) {
        Err(e) => count_error(&mut h, e, 1),
        Ok(p) if p.next == next::NONE => {
            h.accounted += 1;
            accounted.push((p, Marks::default()));
        }
        Ok(p) => {
            let mut pending = Pending {
                p,
                segments: 1,
                ..Pending::default()
            };
            let mut levels = 0;
            loop {
                levels += 1;
                assert!(levels < 33, "levels do not end");
                let next = follow(frame, &mut h, &pending, |h, p, marks| {
                    h.accounted += 1;
                    accounted.push((*p, marks));
                });
                match next {
                    Some(n) => pending = n,
                    None => break,
                }
            }
        }
    }
    assert_eq!(h.outcomes(), h.packets + h.tunnel_payloads, "{h:?}");
    Seen { accounted, h }
}

fn addr(a: [u8; 4]) -> [u32; 4] {
    [u32::from_ne_bytes(a), 0, 0, 0]
}

/// Asserts a carrier (marked with `kind`) then the TCP inner packet of [`inner4`].
fn assert_carries_inner4(s: &Seen, kind: u8) {
    assert_eq!(s.accounted.len(), 2, "{:?}", s.h);
    let (outer, om) = s.accounted[0];
    assert_eq!(om.carries, kind);
    assert_eq!(om.tunnel, 0);
    assert_ne!(outer.next, next::NONE);
    let (inner, im) = s.accounted[1];
    assert_eq!(
        im,
        Marks {
            tunnel: kind,
            carries: 0
        }
    );
    assert_eq!((inner.src, inner.dst), (addr(C), addr(D)));
    assert_eq!(
        (inner.sport, inner.dport, inner.protocol),
        (40000, 80, ipproto::TCP)
    );
    assert_eq!(inner.payload_len, 10);
    assert_eq!(inner.tcp_flags, tcp_flags::SYN);
    assert_eq!(s.h.tunnel_payloads, 1);
}

#[test]
fn vlan_tags_of_every_kind_and_depth() {
    let ip = ipv4(A, B, ipproto::UDP, &udp(1, 2, &[0; 4]));
    // Two tags: the per-packet path alone.
    let mut two = eth(0x88a8, &[0, 5, 0x81, 0x00, 0, 6, 0x08, 0x00]);
    two.extend(&ip);
    let s = run(&two);
    assert_eq!((s.accounted.len(), s.h.tunnel_payloads), (1, 0));
    assert_eq!(parse_ethernet(&two[..]).unwrap().next, next::NONE);
    // Three and four tags (and the old 0x9100 TPID): the continuation.
    for tpids in [
        &[0x88a8u16, 0x8100, 0x8100][..],
        &[0x9100, 0x9100, 0x8100, 0x8100],
    ] {
        let mut f = eth(tpids[0], &[0, 5]);
        for t in &tpids[1..] {
            f.extend(t.to_be_bytes());
            f.extend([0, 6]);
        }
        f.extend([0x08, 0x00]);
        f.extend(&ip);
        let s = run(&f);
        assert_eq!(s.accounted.len(), 1, "{tpids:?}: {:?}", s.h);
        assert_eq!(s.accounted[0].0.sport, 1);
        assert_eq!(s.accounted[0].1, Marks::default());
    }
    // More tags than the parser follows.
    let mut f = eth(0x8100, &[0, 5]);
    for _ in 0..crate::parse::MAX_L2_HEADERS + 2 {
        f.extend([0x81, 0x00, 0, 6]);
    }
    f.extend([0x08, 0x00]);
    f.extend(&ip);
    let s = run(&f);
    assert_eq!((s.h.too_deep, s.h.accounted), (1, 0), "{:?}", s.h);
}

#[test]
fn mpls_stacks_pppoe_and_fabricpath() {
    let ip4 = inner4();
    let ip6 = inner6();
    let labels = |n: usize, payload: &[u8]| {
        let mut l = Vec::new();
        for i in 0..n {
            l.extend([0, 0x10, if i + 1 == n { 0x01 } else { 0x00 }, 64]);
        }
        l.extend_from_slice(payload);
        l
    };
    for (n, payload, v) in [(1, &ip4, 4), (3, &ip6, 6), (8, &ip4, 4)] {
        let s = run(&eth(0x8847, &labels(n, payload)));
        assert_eq!(s.accounted.len(), 1, "{n} labels: {:?}", s.h);
        assert_eq!(s.accounted[0].0.ip_version, v);
    }
    // MPLS inside a VLAN tag; a stack without bottom; a payload that is not IP.
    let mut f = eth(0x8100, &[0, 9, 0x88, 0x47]);
    f.extend(labels(2, &ip4));
    assert_eq!(run(&f).accounted.len(), 1);
    assert_eq!(run(&eth(0x8847, &labels(9, &ip4))).h.too_deep, 1);
    assert_eq!(run(&eth(0x8847, &labels(1, &[0x00; 40]))).h.non_ip, 1);
    // PPPoE session with IPv4 and IPv6; PPP LCP is not IP.
    let pppoe = |proto: u16, payload: &[u8]| {
        let mut p = vec![0x11, 0, 0x12, 0x34];
        p.extend(((payload.len() + 2) as u16).to_be_bytes());
        p.extend(proto.to_be_bytes());
        p.extend_from_slice(payload);
        p
    };
    let s = run(&eth(0x8864, &pppoe(0x0021, &ip4)));
    assert_eq!((s.accounted.len(), s.accounted[0].0.dport), (1, 80));
    assert_eq!(
        run(&eth(0x8864, &pppoe(0x0057, &ip6))).accounted[0].0.dport,
        53
    );
    assert_eq!(run(&eth(0x8864, &pppoe(0xc021, &[1, 1, 0, 4]))).h.non_ip, 1);
    // PPPoE over QinQ.
    let mut f = eth(0x88a8, &[0, 1, 0x81, 0x00, 0, 2, 0x88, 0x64]);
    f.extend(pppoe(0x0021, &ip4));
    assert_eq!(run(&f).accounted.len(), 1);
    // FabricPath: a tag, then the frame's own Ethernet header (a group destination here).
    let mut fp = vec![0, 0x3f];
    fp.extend([0x01, 0, 0x5e, 0, 0, 1, 0x02, 0, 0, 0, 0, 3, 0x08, 0x00]);
    fp.extend(&ip4);
    let s = run(&eth(0x8903, &fp));
    assert_eq!(s.accounted.len(), 1, "{:?}", s.h);
    assert_eq!(s.accounted[0].0.l2_group, 1);
}

#[test]
fn gre_with_options_ip_ethernet_and_pptp() {
    let ip4 = inner4();
    // Version 0: plain, with checksum, key and sequence number.
    for (flags, options) in [(0x0000u16, &[][..]), (0xb000, &[0u8; 12][..])] {
        let f = eth(
            0x0800,
            &ipv4(A, B, ipproto::GRE, &gre(flags, 0x0800, options, &ip4)),
        );
        let s = run(&f);
        assert_carries_inner4(&s, tunnel::GRE);
        let (outer, _) = s.accounted[0];
        assert_eq!(
            (outer.protocol, outer.sport, outer.dport),
            (ipproto::GRE, 0, 0)
        );
    }
    // IPv6 inside, and transparent Ethernet bridging.
    let s = run(&eth(
        0x0800,
        &ipv4(A, B, 47, &gre(0, 0x86dd, &[], &inner6())),
    ));
    assert_eq!(s.accounted[1].0.ip_version, 6);
    let s = run(&eth(
        0x0800,
        &ipv4(A, B, 47, &gre(0x2000, 0x6558, &[0; 4], &eth(0x0800, &ip4))),
    ));
    assert_carries_inner4(&s, tunnel::GRE);
    // PPTP: version 1, key (and an acknowledgement), PPP with IPv4.
    let ppp = [&[0xff, 0x03, 0x00, 0x21][..], &ip4].concat();
    let s = run(&eth(
        0x0800,
        &ipv4(A, B, 47, &gre(0x2081, 0x880b, &[0; 8], &ppp)),
    ));
    assert_carries_inner4(&s, tunnel::GRE);
    // Routing present, an unknown version, an unknown protocol: the payload's outcome.
    assert_eq!(
        run(&eth(
            0x0800,
            &ipv4(A, B, 47, &gre(0x4000, 0x0800, &[], &ip4))
        ))
        .h
        .parse_errors,
        1
    );
    assert_eq!(
        run(&eth(
            0x0800,
            &ipv4(A, B, 47, &gre(0x0002, 0x0800, &[], &ip4))
        ))
        .h
        .parse_errors,
        1
    );
    let s = run(&eth(0x0800, &ipv4(A, B, 47, &gre(0, 0x1234, &[], &ip4))));
    assert_eq!(
        (s.h.non_ip, s.accounted.len(), s.accounted[0].1.carries),
        (1, 1, tunnel::GRE)
    );
}

#[test]
fn erspan_types_one_two_and_three() {
    let frame = eth(0x0800, &inner4());
    let type1 = gre(0x0000, 0x88be, &[], &frame);
    let type2 = gre(
        0x1000,
        0x88be,
        &[0, 0, 0, 1, 0x10, 0, 0, 0, 0, 0, 0, 0],
        &frame,
    );
    let mut h3 = vec![0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];
    h3.extend([0; 8]); // platform-specific subheader (O flag)
    let type3 = gre(0x0000, 0x22eb, &[], &[&h3[..], &frame].concat());
    for g in [type1, type2, type3] {
        let s = run(&eth(0x0800, &ipv4(A, B, 47, &g)));
        assert_carries_inner4(&s, tunnel::ERSPAN);
    }
}

#[test]
fn ip_in_ip_of_both_versions() {
    let s = run(&eth(0x0800, &ipv4(A, B, ipproto::IPIP, &inner4())));
    assert_carries_inner4(&s, tunnel::IP_IN_IP);
    let s = run(&eth(0x0800, &ipv4(A, B, ipproto::IPV6, &inner6())));
    assert_eq!(
        (s.accounted[1].0.dport, s.accounted[1].1.tunnel),
        (53, tunnel::IP_IN_IP)
    );
    let s = run(&eth(0x86dd, &ipv6(v6(1), v6(2), ipproto::IPIP, &inner4())));
    assert_carries_inner4(&s, tunnel::IP_IN_IP);
    let s = run(&eth(0x86dd, &ipv6(v6(1), v6(2), ipproto::IPV6, &inner6())));
    assert_eq!(s.accounted[1].0.ip_version, 6);
    // The inner header must be of the version the protocol says.
    assert_eq!(
        run(&eth(0x0800, &ipv4(A, B, ipproto::IPIP, &inner6())))
            .h
            .parse_errors,
        1
    );
}

#[test]
fn vxlan_and_geneve() {
    let frame = eth(0x0800, &inner4());
    let s = run(&eth(
        0x0800,
        &ipv4(A, B, 17, &udp(51000, 4789, &vxlan(&frame))),
    ));
    assert_carries_inner4(&s, tunnel::VXLAN);
    let (outer, _) = s.accounted[0];
    assert_eq!((outer.sport, outer.dport), (51000, 4789));
    assert_eq!(outer.payload_len as usize, 8 + frame.len());
    // The reply direction (source port 4789) too; without the I flag it is plain UDP.
    let s = run(&eth(
        0x0800,
        &ipv4(B, A, 17, &udp(4789, 51000, &vxlan(&frame))),
    ));
    assert_carries_inner4(&s, tunnel::VXLAN);
    let mut bad = vxlan(&frame);
    bad[0] = 0;
    let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(51000, 4789, &bad))));
    assert_eq!(
        (
            s.accounted.len(),
            s.accounted[0].1.carries,
            s.h.tunnel_payloads
        ),
        (1, 0, 0)
    );
    // Geneve with 8 bytes of options, carrying Ethernet and IP.
    let g = geneve(&[0; 8], 0x6558, &frame);
    assert_carries_inner4(
        &run(&eth(0x0800, &ipv4(A, B, 17, &udp(1, 6081, &g)))),
        tunnel::GENEVE,
    );
    let g = geneve(&[], 0x0800, &inner4());
    assert_carries_inner4(
        &run(&eth(0x0800, &ipv4(A, B, 17, &udp(1, 6081, &g)))),
        tunnel::GENEVE,
    );
    let mut g = geneve(&[], 0x0800, &inner4());
    g[0] |= 0x40; // version 1
    assert_eq!(
        run(&eth(0x0800, &ipv4(A, B, 17, &udp(1, 6081, &g))))
            .h
            .tunnel_payloads,
        0
    );
}

#[test]
fn teredo_with_indications_and_away_from_its_port() {
    let teredo_ip = |src: [u8; 16]| ipv6(src, v6(9), ipproto::ICMPV6, &echo(128, 77));
    let mut client = v6(1);
    client[..4].copy_from_slice(&[0x20, 0x01, 0, 0]);
    let plain = teredo_ip(client);
    let origin = [&[0, 0, 0x12, 0x34, 1, 2, 3, 4][..], &plain].concat();
    let auth = [&[0, 1, 2, 1, 0xaa, 0xbb, 0xcc][..], &[0; 9], &origin].concat();
    for payload in [&plain, &origin, &auth] {
        let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(3544, 40000, payload))));
        assert_eq!(s.accounted.len(), 2, "{:?}", s.h);
        assert_eq!(s.accounted[0].1.carries, tunnel::TEREDO);
        let (inner, m) = s.accounted[1];
        assert_eq!(
            (inner.icmp_type, inner.sport, m.tunnel),
            (128, 77, tunnel::TEREDO)
        );
    }
    // Client to peer on other ports: a Teredo address inside is needed.
    let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(40001, 40002, &plain))));
    assert_eq!(s.accounted[0].1.carries, tunnel::TEREDO);
    let other = teredo_ip(v6(5));
    let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(40001, 40002, &other))));
    assert_eq!((s.accounted.len(), s.h.tunnel_payloads), (1, 0));
    // A length that does not fill the datagram: not Teredo.
    let mut short = plain.clone();
    short[5] -= 1;
    let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(3544, 40000, &short))));
    assert_eq!(s.h.tunnel_payloads, 0);
}

#[test]
fn gtp_u_with_extension_headers_and_nested_teredo() {
    let s = run(&eth(
        0x0800,
        &ipv4(A, B, 17, &udp(2152, 2152, &gtp(None, &inner4()))),
    ));
    assert_carries_inner4(&s, tunnel::GTP);
    // Sequence number and one extension header (PDU session container).
    let opt = [0, 1, 0, 0x85, 1, 0x10, 0x01, 0x00];
    let s = run(&eth(
        0x0800,
        &ipv4(A, B, 17, &udp(2152, 2152, &gtp(Some(&opt), &inner4()))),
    ));
    assert_carries_inner4(&s, tunnel::GTP);
    // Echo request (message type 1): not a G-PDU; DNS from port 2152 (Zeek's false GTP).
    let mut echo_req = gtp(None, &[]);
    echo_req[1] = 1;
    assert_eq!(
        run(&eth(0x0800, &ipv4(A, B, 17, &udp(2152, 2152, &echo_req))))
            .h
            .tunnel_payloads,
        0
    );
    let dns = [0x5a, 0x11, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(2152, 53, &dns))));
    assert_eq!((s.accounted.len(), s.h.tunnel_payloads), (1, 0));
    // Teredo in GTP: two tunnels deep, as deep as followed; a third is too deep.
    let mut client = v6(1);
    client[..4].copy_from_slice(&[0x20, 0x01, 0, 0]);
    let teredo = udp(
        3544,
        50000,
        &ipv6(client, v6(2), ipproto::ICMPV6, &echo(128, 5)),
    );
    let two = gtp(None, &ipv4(C, D, 17, &teredo));
    let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(2152, 2152, &two))));
    assert_eq!(s.accounted.len(), 3, "{:?}", s.h);
    assert_eq!(
        s.accounted[1].1,
        Marks {
            tunnel: tunnel::GTP,
            carries: tunnel::TEREDO
        }
    );
    assert_eq!(s.accounted[2].1.tunnel, tunnel::TEREDO);
    let three = gtp(None, &ipv4(C, D, 17, &udp(2152, 2152, &two)));
    let s = run(&eth(0x0800, &ipv4(A, B, 17, &udp(2152, 2152, &three))));
    assert_eq!(
        (s.accounted.len(), s.h.tunnel_payloads, s.h.too_deep),
        (3, 3, 1),
        "{:?}",
        s.h
    );
}

#[test]
fn ayiya() {
    // Identity 16 bytes (2^4), signature 20 bytes (5 words), forward (opcode 1), IPv4.
    let mut a = vec![0x41, 0x52, 0x11, ipproto::IPIP, 0, 0, 0, 0];
    a.extend([0; 16 + 20]);
    a.extend(inner4());
    assert_carries_inner4(
        &run(&eth(0x0800, &ipv4(A, B, 17, &udp(5072, 5072, &a)))),
        tunnel::AYIYA,
    );
}

#[test]
fn other_protocols_sctp_and_zero_total_length() {
    let s = run(&eth(0x0800, &ipv4(A, B, 89, &[0; 40])));
    let (p, m) = s.accounted[0];
    assert_eq!(
        (p.protocol, p.sport, p.dport, p.payload_len, m),
        (89, 0, 0, 40, Marks::default())
    );
    let mut sctp = 5000u16.to_be_bytes().to_vec();
    sctp.extend(38412u16.to_be_bytes());
    sctp.extend([0; 8 + 16]);
    let s = run(&eth(0x0800, &ipv4(A, B, ipproto::SCTP, &sctp)));
    let (p, _) = s.accounted[0];
    assert_eq!((p.sport, p.dport, p.payload_len), (5000, 38412, 16));
    // IPv6 with no next header: nothing to account (Teredo bubbles).
    assert_eq!(
        run(&eth(0x86dd, &ipv6(v6(1), v6(2), 59, &[])))
            .h
            .unsupported_l4,
        1
    );
    // Total length 0 (a TSO segment as captured): the frame's bytes count.
    let mut f = eth(0x0800, &inner4());
    f[16] = 0;
    f[17] = 0;
    let s = run(&f);
    assert_eq!(s.accounted[0].0.payload_len, 10);
}

/// Every frame of the tests above, cut at every byte: no panic, and each level's outcome is
/// counted (the outcomes add up, which `run` checks), truncated where a header is cut.
#[test]
fn every_encapsulation_cut_at_every_byte() {
    let frame4 = eth(0x0800, &inner4());
    let mut client = v6(1);
    client[..4].copy_from_slice(&[0x20, 0x01, 0, 0]);
    let teredo = ipv6(client, v6(9), ipproto::ICMPV6, &echo(128, 77));
    let frames: Vec<(&str, Vec<u8>)> = vec![
        ("qinq3", {
            let mut f = eth(
                0x88a8,
                &[0, 1, 0x81, 0x00, 0, 2, 0x81, 0x00, 0, 3, 0x08, 0x00],
            );
            f.extend(inner4());
            f
        }),
        (
            "mpls",
            eth(
                0x8847,
                &[&[0, 0x10, 0, 64, 0, 0x20, 1, 64][..], &inner4()].concat(),
            ),
        ),
        (
            "pppoe",
            eth(
                0x8864,
                &[&[0x11, 0, 0, 1, 0, 42, 0, 0x21][..], &inner4()].concat(),
            ),
        ),
        (
            "gre",
            eth(
                0x0800,
                &ipv4(A, B, 47, &gre(0x3000, 0x0800, &[0; 8], &inner4())),
            ),
        ),
        (
            "erspan",
            eth(
                0x0800,
                &ipv4(A, B, 47, &gre(0x1000, 0x88be, &[0; 12], &frame4)),
            ),
        ),
        ("ipip", eth(0x86dd, &ipv6(v6(1), v6(2), 4, &inner4()))),
        (
            "vxlan",
            eth(0x0800, &ipv4(A, B, 17, &udp(1, 4789, &vxlan(&frame4)))),
        ),
        (
            "geneve",
            eth(
                0x0800,
                &ipv4(A, B, 17, &udp(1, 6081, &geneve(&[0; 4], 0x6558, &frame4))),
            ),
        ),
        (
            "teredo",
            eth(
                0x0800,
                &ipv4(
                    A,
                    B,
                    17,
                    &udp(3544, 1, &[&[0, 0, 1, 2, 3, 4, 5, 6][..], &teredo].concat()),
                ),
            ),
        ),
        (
            "gtp",
            eth(
                0x0800,
                &ipv4(
                    A,
                    B,
                    17,
                    &udp(2152, 2152, &gtp(Some(&[0, 1, 0, 0]), &inner4())),
                ),
            ),
        ),
    ];
    for (name, f) in frames {
        let whole = run(&f);
        assert_eq!(
            whole.h.accounted,
            whole.h.packets + whole.h.tunnel_payloads,
            "{name}: {:?}",
            whole.h
        );
        for cut in 0..f.len() {
            let s = run(&f[..cut]);
            let h = s.h;
            // A frame cut inside its headers loses the level whose header is cut, as
            // truncated; a UDP tunnel whose header is cut is plain UDP; a frame cut in
            // the inner payload only is whole (lengths come from the IP headers).
            let lost = h.packets + h.tunnel_payloads - h.accounted;
            assert!(lost <= 1, "{name} cut at {cut}: {h:?}");
            if lost == 1 {
                assert_eq!(h.truncated, 1, "{name} cut at {cut}: {h:?}");
            }
        }
    }
}
