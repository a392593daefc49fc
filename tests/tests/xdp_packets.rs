//! The real XDP program run on crafted frames through BPF_PROG_TEST_RUN: exact accounting,
//! truncation at every header byte, malformed headers, fragments, VLANs, IPv6 extension chains,
//! a full table, and a randomized run of a million mutated frames.

use integration_tests::packet::{flags::*, *};
use sensor_common::{
    FlowEvent, FlowKey, Health,
    account::peer,
    conn_state::{ConnState, tcp_conn_state},
    flow::{event, history, ipproto},
    map_names,
    parse::{ParseError, parse_ethernet},
};

fn delta(after: &Health, before: &Health) -> Health {
    let a = after.as_array();
    let b = before.as_array();
    let mut d = [0u64; Health::FIELD_NAMES.len()];
    for i in 0..d.len() {
        d[i] = a[i] - b[i];
    }
    Health {
        packets: d[0],
        bytes: d[1],
        non_ip: d[2],
        parse_errors: d[3],
        truncated: d[4],
        table_full: d[5],
        ringbuf_drops: d[6],
        unsupported_l4: d[7],
        unattributed_fragments: d[8],
        accounted: d[9],
        flows_created: d[10],
        events_sent: d[11],
        egress_already_seen: d[12],
        flows_restarted: d[13],
        tunnel_payloads: d[14],
        too_deep: d[15],
        flows_evicted: d[16],
        evict_ring_full: d[17],
        restarts_parked: d[18],
        restarts_lost: d[19],
        nat_translations: d[20],
        nat_answers: d[21],
    }
}

/// Runs one frame and returns the change in the health counters.
fn run_one(x: &mut XdpHarness, frame: &[u8]) -> Health {
    let before = x.health();
    x.run(frame);
    delta(&x.health(), &before)
}

#[test]
fn a_tcp_exchange_is_one_exact_sf_entry() {
    let mut x = XdpHarness::new(1024);
    let (c, s) = (v4(0, 1), v4(0, 2));
    let frames = [
        tcp4(c, 40000, s, 80, SYN, b""),
        tcp4(s, 80, c, 40000, SYN | ACK, b""),
        tcp4(c, 40000, s, 80, ACK, b""),
        tcp4(c, 40000, s, 80, ACK | PSH, &[1; 100]),
        tcp4(s, 80, c, 40000, ACK | PSH | URG, &[2; 300]),
        tcp4(c, 40000, s, 80, FIN | ACK, b""),
        tcp4(s, 80, c, 40000, FIN | ACK, b""),
        tcp4(c, 40000, s, 80, ACK, b""),
    ];
    for f in &frames {
        x.run(f);
    }
    let flows = x.flows();
    assert_eq!(flows.len(), 1, "{flows:?}");
    let (k, v) = flows[0];
    let o = usize::from(v.orig_side);
    let r = peer(o);
    assert_eq!(k.endpoint(o).1, 40000, "the SYN sender is the originator");
    assert_eq!((v.packets[o], v.packets[r]), (5, 3));
    assert_eq!((v.payload_bytes[o], v.payload_bytes[r]), (100, 300));
    assert_eq!(v.urgent_packets, 1);
    assert_eq!(
        tcp_conn_state(
            v.history[o],
            v.history[r],
            v.payload_bytes[o],
            v.payload_bytes[r]
        ),
        ConnState::SF
    );
    let h = x.health();
    // Four events: the connection began, its SYN was answered, both sides sent FIN, the final
    // ACK followed.
    assert_eq!(
        (h.packets, h.accounted, h.flows_created, h.events_sent),
        (8, 8, 1, 4)
    );
    assert_eq!(h.outcomes(), h.packets + h.tunnel_payloads);
    // The client reuses the port: the entry restarts for the new connection, and the old one
    // goes to user space first, as it ended (its FIN event may have been lost).
    drain_events(&mut x);
    let h = run_one(&mut x, &frames[0]);
    assert_eq!((h.flows_restarted, h.events_sent), (1, 2));
    let events = drain_events(&mut x);
    let kinds: Vec<u32> = events.iter().map(|e| e.kinds).collect();
    assert_eq!(kinds, [event::REPLACED, event::OPEN]);
    assert_eq!(
        (events[0].key, events[0].value),
        (k, v),
        "the old value, whole"
    );
    assert!(events[0].evicted_ns >= v.last_seen_ns);
    let o = usize::from(events[1].value.orig_side);
    assert_eq!(
        events[1].value.packets[o] + events[1].value.packets[o ^ 1],
        1
    );
}

/// The parts the agent's table scan walks one a tick (`FlowTable::entries_part`) hold every
/// entry of the kernel's table once, whatever the number of parts.
#[test]
fn the_table_scans_parts_hold_every_entry_once() {
    let mut x = XdpHarness::new(1024);
    for i in 0..300u16 {
        x.run(&udp4(v4(2, 1), 1024 + i, v4(2, 2), 53, &[0; 8]));
    }
    let sorted = |mut v: Vec<(FlowKey, sensor_common::FlowValue)>| {
        v.sort_by_key(|(k, _)| k.words());
        v.into_iter().map(|(k, _)| k.words()).collect::<Vec<_>>()
    };
    let all = sorted(x.flows());
    assert_eq!(all.len(), 300);
    for parts in [1, 3, 16] {
        let each: Vec<_> = (0..parts).map(|p| x.flows_part(p, parts)).collect();
        assert!(
            each.iter().all(|p| !p.is_empty()),
            "300 flows leave no part of {parts} empty"
        );
        assert_eq!(sorted(each.concat()), all, "{parts} parts");
    }
}

#[test]
fn udp_icmp_ipv6_and_vlan_frames_are_accounted() {
    let mut x = XdpHarness::new(1024);
    let (c, s) = (v4(1, 1), v4(1, 2));
    // UDP request and reply.
    x.run(&udp4(c, 5353, s, 53, &[0; 30]));
    x.run(&udp4(s, 53, c, 5353, &[0; 120]));
    // ICMP echo request and reply meet in one entry keyed by the echo id.
    let echo = |src, dst, kind| {
        ethernet(
            &[],
            0x0800,
            &Ipv4::new(src, dst, 1).build(&icmp(kind, 0, 77, &[0; 56])),
        )
    };
    x.run(&echo(c, s, 8));
    x.run(&echo(s, c, 0));
    // IPv6 TCP SYN.
    x.run(&ethernet(
        &[],
        0x86dd,
        &ipv6(v6(1), v6(2), &[], 6, &tcp(1000, 443, SYN, None, b"")),
    ));
    // 802.1Q, and 802.1ad + 802.1Q.
    let inner = Ipv4::new(c, s, 17).build(&udp(6001, 6000, None, &[0; 10]));
    x.run(&ethernet(&[(0x8100, 100)], 0x0800, &inner));
    let inner2 = Ipv4::new(c, s, 17).build(&udp(6002, 6000, None, &[0; 20]));
    x.run(&ethernet(&[(0x88a8, 200), (0x8100, 100)], 0x0800, &inner2));

    let flows = x.flows();
    assert_eq!(flows.len(), 5, "{flows:#?}");
    let find = |pred: &dyn Fn(&FlowKey) -> bool| {
        flows
            .iter()
            .find(|(k, _)| pred(k))
            .unwrap_or_else(|| panic!("flow missing: {flows:#?}"))
            .1
    };
    let u = find(&|k| k.protocol == ipproto::UDP && (k.port_lo == 53 || k.port_hi == 53));
    let o = usize::from(u.orig_side);
    assert_eq!(
        (
            u.packets[o],
            u.packets[peer(o)],
            u.payload_bytes[o],
            u.payload_bytes[peer(o)]
        ),
        (1, 1, 30, 120)
    );
    let e = find(&|k| k.protocol == ipproto::ICMP);
    assert_eq!(
        (
            e.packets[0],
            e.packets[1],
            e.payload_bytes[0] + e.payload_bytes[1]
        ),
        (1, 1, 112)
    );
    assert_eq!(e.icmp_type, 8);
    let t6 = find(&|k| k.ip_version == 6);
    assert_eq!(t6.history[usize::from(t6.orig_side)], history::SYN);
    let vl = find(&|k| k.port_lo == 6001 || k.port_hi == 6001);
    assert_eq!(vl.payload_bytes[usize::from(vl.orig_side)], 10);
    let qq = find(&|k| k.port_lo == 6002 || k.port_hi == 6002);
    assert_eq!(qq.payload_bytes[usize::from(qq.orig_side)], 20);
    let h = x.health();
    assert_eq!((h.packets, h.accounted), (7, 7));
}

/// Frames and the length of their headers (a cut shorter than that is truncated).
fn templates() -> Vec<(&'static str, Vec<u8>, usize)> {
    let (c, s) = (v4(2, 1), v4(2, 2));
    let mut opts = Ipv4::new(c, s, 17);
    opts.options = vec![1, 1, 1, 0]; // NOP, NOP, NOP, EOL: IHL 6
    vec![
        (
            "IPv4/TCP",
            tcp4(c, 1234, s, 80, ACK, &[9; 10]),
            14 + 20 + 20,
        ),
        (
            "IPv4 with options/UDP",
            ethernet(&[], 0x0800, &opts.build(&udp(1, 2, None, &[9; 10]))),
            14 + 24 + 8,
        ),
        (
            "VLAN/IPv4/ICMP",
            ethernet(
                &[(0x8100, 7)],
                0x0800,
                &Ipv4::new(c, s, 1).build(&icmp(8, 0, 5, &[9; 10])),
            ),
            18 + 20 + 8,
        ),
        (
            "IPv6+HBH+DSTOPT/TCP",
            ethernet(
                &[],
                0x86dd,
                &ipv6(
                    v6(3),
                    v6(4),
                    &[(0, ext8()), (60, ext8())],
                    6,
                    &tcp(5, 6, SYN, None, &[9; 10]),
                ),
            ),
            14 + 40 + 8 + 8 + 20,
        ),
    ]
}

#[test]
fn truncation_at_every_header_byte_is_counted_and_creates_no_flow() {
    let mut x = XdpHarness::new(1024);
    for (name, frame, header_len) in templates() {
        for cut in 0..header_len {
            if cut < 14 {
                // BPF_PROG_TEST_RUN refuses XDP input shorter than an Ethernet header (and no
                // driver delivers such a runt): check the same shared parser in user space.
                assert_eq!(
                    parse_ethernet(&frame[..cut]),
                    Err(ParseError::Truncated),
                    "{name} cut at {cut}"
                );
                continue;
            }
            let d = run_one(&mut x, &frame[..cut]);
            assert_eq!(d.truncated, 1, "{name} cut at {cut} bytes: {d:?}");
            assert_eq!(
                d.accounted + d.parse_errors + d.non_ip,
                0,
                "{name} cut at {cut}: {d:?}"
            );
            assert!(x.flows().is_empty(), "{name} cut at {cut} created a flow");
        }
        // Headers complete (payload cut) and the full frame: both accounted, from IP lengths.
        let d = run_one(&mut x, &frame[..header_len]);
        assert_eq!(d.accounted, 1, "{name} with headers only: {d:?}");
        let d = run_one(&mut x, &frame);
        assert_eq!(d.accounted, 1, "{name} full: {d:?}");
        let flows = x.flows();
        assert_eq!(flows.len(), 1, "{name}");
        let v = flows[0].1;
        let o = usize::from(v.orig_side);
        assert_eq!(v.packets[o], 2, "{name}");
        assert_eq!(
            v.payload_bytes[o], 20,
            "{name}: payload counted from the IP lengths"
        );
        x.clear_flows();
    }
}

#[test]
fn malformed_headers_are_parse_errors_and_create_no_flow() {
    let mut x = XdpHarness::new(1024);
    let (c, s) = (v4(3, 1), v4(3, 2));
    let seg = tcp(1, 2, ACK, None, &[0; 8]);
    let ip = |f: &dyn Fn(&mut Ipv4)| {
        let mut h = Ipv4::new(c, s, 6);
        f(&mut h);
        ethernet(&[], 0x0800, &h.build(&seg))
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("IHL 4", ip(&|h| h.ihl = Some(4))),
        ("IHL 0", ip(&|h| h.ihl = Some(0))),
        ("version 5", ip(&|h| h.version = Some(5))),
        ("total length < IHL", ip(&|h| h.total_len = Some(19))),
        (
            "TCP data offset 4",
            ethernet(
                &[],
                0x0800,
                &Ipv4::new(c, s, 6).build(&tcp(1, 2, ACK, Some(4), b"")),
            ),
        ),
        (
            "TCP data offset beyond the IP payload",
            ethernet(
                &[],
                0x0800,
                &Ipv4::new(c, s, 6).build(&tcp(1, 2, ACK, Some(15), b"")),
            ),
        ),
        (
            "UDP length 7",
            ethernet(
                &[],
                0x0800,
                &Ipv4::new(c, s, 17).build(&udp(1, 2, Some(7), b"")),
            ),
        ),
        ("IPv6 version 4", {
            let mut f = ethernet(&[], 0x86dd, &ipv6(v6(5), v6(6), &[], 6, &seg));
            f[14] = 0x40;
            f
        }),
        ("IPv6 extension longer than the payload", {
            let mut e = ext8();
            e[1] = 200;
            ethernet(&[], 0x86dd, &ipv6(v6(5), v6(6), &[(0, e)], 6, &seg))
        }),
    ];
    for (name, frame) in cases {
        let d = run_one(&mut x, &frame);
        assert_eq!(d.parse_errors, 1, "{name}: {d:?}");
        assert_eq!(d.accounted, 0, "{name}: {d:?}");
    }
    assert!(x.flows().is_empty());
}

#[test]
fn non_ip_deep_labels_every_ip_protocol_and_empty_ipv6_are_counted() {
    let mut x = XdpHarness::new(1024);
    for et in [0x0806u16, 0x88cc, 0x1234] {
        let d = run_one(&mut x, &ethernet(&[], et, &[0; 46]));
        assert_eq!(d.non_ip, 1, "ethertype {et:#06x}");
    }
    // An MPLS stack without a bottom of stack within the labels followed.
    let d = run_one(&mut x, &ethernet(&[], 0x8847, &[0; 46]));
    assert_eq!((d.too_deep, d.packets), (1, 1), "{d:?}");
    // Every IP protocol is a connection between two addresses (SCTP with its ports); GRE is
    // followed, and this one carries protocol 0: its payload is not IP.
    for proto in [132u8, 50, 89, 47] {
        let f = ethernet(
            &[],
            0x0800,
            &Ipv4::new(v4(4, 1), v4(4, 2), proto).build(&[0; 24]),
        );
        let d = run_one(&mut x, &f);
        assert_eq!(d.accounted, 1, "IP protocol {proto}: {d:?}");
        if proto == 47 {
            assert_eq!((d.tunnel_payloads, d.non_ip), (1, 1), "{d:?}");
        }
    }
    let mut protocols: Vec<u8> = x.flows().iter().map(|(k, _)| k.protocol).collect();
    protocols.sort();
    assert_eq!(protocols, [47, 50, 89, 132]);
    x.clear_flows();
    // An IPv6 chain longer than the parser follows, and IPv6 with no next header.
    let long: Vec<(u8, Vec<u8>)> = (0..7).map(|_| (60u8, ext8())).collect();
    let f = ethernet(
        &[],
        0x86dd,
        &ipv6(v6(7), v6(8), &long, 6, &tcp(1, 2, SYN, None, b"")),
    );
    assert_eq!(run_one(&mut x, &f).unsupported_l4, 1);
    let f = ethernet(&[], 0x86dd, &ipv6(v6(7), v6(8), &[], 59, b""));
    assert_eq!(run_one(&mut x, &f).unsupported_l4, 1);
    assert!(x.flows().is_empty());
    let h = x.health();
    assert_eq!(h.outcomes(), h.packets + h.tunnel_payloads);
}

/// Every encapsulation through the real programs (the per-packet one and its continuation):
/// the inner connection is accounted, marked with the tunnel it came through, and a tunnel's
/// carrier is a connection of its own, marked with what it carries.
#[test]
fn encapsulated_frames_account_the_inner_connection_and_its_carrier() {
    let mut x = XdpHarness::new(1024);
    for (name, frame) in encapsulated_frames() {
        let d = run_one(&mut x, &frame);
        let flows = x.flows();
        let inner: Vec<_> = flows
            .iter()
            .filter(|(k, _)| k.port_lo == 80 || k.port_hi == 80)
            .collect();
        assert_eq!(inner.len(), 1, "{name}: {flows:?}");
        let (_, v) = inner[0];
        assert_eq!(v.payload_bytes[usize::from(v.orig_side)], 10, "{name}");
        let tunnelled = !name.starts_with("qinq") && !name.starts_with("mpls") && name != "pppoe";
        if tunnelled {
            assert_ne!(v.tunnel, 0, "{name}: the inner connection's mark");
            let carriers: Vec<_> = flows.iter().filter(|(_, v)| v.carries != 0).collect();
            assert_eq!(carriers.len(), 1, "{name}: {flows:?}");
            assert_eq!(carriers[0].1.carries, v.tunnel, "{name}");
            assert_eq!((d.accounted, d.tunnel_payloads), (2, 1), "{name}: {d:?}");
        } else {
            assert_eq!((flows.len(), v.tunnel), (1, 0), "{name}");
            assert_eq!((d.accounted, d.tunnel_payloads), (1, 0), "{name}: {d:?}");
        }
        x.clear_flows();
    }
    let h = x.health();
    assert_eq!(h.outcomes(), h.packets + h.tunnel_payloads);
}

/// A SYN sent as a tiny first fragment (RFC 1858; `hping3 -S -f`): the first fragment carries
/// 8 bytes of the TCP header (ports and sequence number), the flags come in the next. Refused
/// as truncated (or, padded to Ethernet's 60 bytes, malformed) until December 6, so a
/// fragmented SYN flood's SYNs were never seen; now the first fragment opens the connection on
/// its ports, counts as a wrong fragment, and the next fragment is attributed to it.
#[test]
fn a_tiny_first_tcp_fragment_is_attributed_and_counted_wrong() {
    for padded in [false, true] {
        let mut x = XdpHarness::new(1024);
        let (c, s) = (v4(5, 1), v4(5, 2));
        let header = tcp(40_000, 80, SYN, None, &[]);
        let mut first = Ipv4::new(c, s, 6);
        first.id = 777;
        first.more_fragments = true;
        let mut f1 = ethernet(&[], 0x0800, &first.build(&header[..8]));
        if padded {
            // On a wire the frame is padded to 60 bytes, which are not the header's.
            f1.resize(60, 0);
        }
        let mut rest = Ipv4::new(c, s, 6);
        rest.id = 777;
        rest.frag_offset = 1;
        let f2 = ethernet(&[], 0x0800, &rest.build(&header[8..]));
        let d = run_one(&mut x, &f1);
        assert_eq!(
            (d.accounted, d.truncated, d.parse_errors),
            (1, 0, 0),
            "padded {padded}: {d:?}"
        );
        let d = run_one(&mut x, &f2);
        assert_eq!(
            (d.accounted, d.unattributed_fragments),
            (1, 0),
            "padded {padded}: the next fragment follows it: {d:?}"
        );
        let flows = x.flows();
        assert_eq!(flows.len(), 1, "padded {padded}: {flows:?}");
        let (k, v) = flows[0];
        assert_eq!((k.protocol, k.port_lo.min(k.port_hi)), (ipproto::TCP, 80));
        let o = usize::from(v.orig_side);
        assert_eq!(v.packets[o], 2, "padded {padded}");
        assert_eq!(v.wrong_fragments, 1, "padded {padded}");
        assert_eq!(v.history[o] & history::SYN, 0, "its flags were not seen");
    }
}

#[test]
fn ip_fragments_are_attributed_and_wrong_ones_counted() {
    let mut x = XdpHarness::new(1024);
    let (c, s) = (v4(5, 1), v4(5, 2));
    // First fragment: UDP header + 16 payload bytes (24 bytes, multiple of 8), MF set.
    let mut first = Ipv4::new(c, s, 17);
    first.id = 4242;
    first.more_fragments = true;
    let f1 = ethernet(
        &[],
        0x0800,
        &first.build(&udp(7000, 7001, Some(8 + 16 + 40), &[1; 16])),
    );
    // Last fragment at offset 24 bytes (3 units), 40 bytes.
    let mut last = Ipv4::new(c, s, 17);
    last.id = 4242;
    last.frag_offset = 3;
    let f2 = ethernet(&[], 0x0800, &last.build(&[2; 40]));
    assert_eq!(run_one(&mut x, &f1).accounted, 1);
    assert_eq!(
        run_one(&mut x, &f2).accounted,
        1,
        "later fragment attributed to its flow"
    );
    let flows = x.flows();
    assert_eq!(flows.len(), 1);
    let v = flows[0].1;
    let o = usize::from(v.orig_side);
    assert_eq!((v.packets[o], v.payload_bytes[o]), (2, 16 + 40));
    assert_eq!(v.wrong_fragments, 0);

    // A later fragment whose first fragment was never seen.
    let mut orphan = Ipv4::new(c, s, 17);
    orphan.id = 9999;
    orphan.frag_offset = 10;
    assert_eq!(
        run_one(&mut x, &ethernet(&[], 0x0800, &orphan.build(&[0; 16]))).unattributed_fragments,
        1
    );

    // Wrong fragments: a non-last fragment whose payload is not a multiple of 8, and one that
    // reaches past 65,535 bytes (ping of death).
    let mut odd = Ipv4::new(c, s, 1);
    odd.id = 5;
    odd.more_fragments = true;
    x.run(&ethernet(&[], 0x0800, &odd.build(&icmp(8, 0, 1, &[0; 13]))));
    let mut pod = Ipv4::new(c, s, 1);
    pod.id = 5;
    pod.frag_offset = 8189; // 65,512 bytes
    x.run(&ethernet(&[], 0x0800, &pod.build(&[0; 100])));
    let icmp_flow = x
        .flows()
        .into_iter()
        .find(|(k, _)| k.protocol == ipproto::ICMP)
        .expect("ICMP flow")
        .1;
    assert_eq!(icmp_flow.wrong_fragments, 2);

    // IPv6: first and later fragment.
    let frag6 = |offset: u16, more: bool, payload: &[u8]| {
        ethernet(
            &[],
            0x86dd,
            &ipv6(
                v6(9),
                v6(10),
                &[(44, ipv6_fragment(offset, more, 77))],
                17,
                payload,
            ),
        )
    };
    assert_eq!(
        run_one(
            &mut x,
            &frag6(0, true, &udp(8000, 8001, Some(48), &[0; 16]))
        )
        .accounted,
        1
    );
    assert_eq!(run_one(&mut x, &frag6(3, false, &[0; 24])).accounted, 1);
    let f6 = x
        .flows()
        .into_iter()
        .find(|(k, _)| k.ip_version == 6)
        .expect("IPv6 flow")
        .1;
    assert_eq!(f6.payload_bytes[usize::from(f6.orig_side)], 16 + 24);
    let h = x.health();
    assert_eq!(h.outcomes(), h.packets + h.tunnel_payloads);
}

/// Every event waiting in the ring buffer.
fn drain_events(x: &mut XdpHarness) -> Vec<FlowEvent> {
    let map = x.ebpf.map_mut(map_names::EVENTS).expect("EVENTS map");
    let mut ring = aya::maps::RingBuf::try_from(map).expect("ring buffer");
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        assert_eq!(item.len(), size_of::<FlowEvent>());
        // SAFETY: the kernel wrote a whole FlowEvent (size checked); any alignment is read.
        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) });
    }
    out
}

/// The `EVICTED` events waiting in the ring buffer (the others are drained with them).
fn drain_evicted(x: &mut XdpHarness) -> Vec<FlowEvent> {
    drain_events(x)
        .into_iter()
        .filter(|e| e.kinds == event::EVICTED)
        .collect()
}

/// A full table makes room for a new flow by evicting an unanswered attempt, which reaches user
/// space as an `EVICTED` event with its counts; open TCP connections are never evicted. UDP
/// exchanges, answered or not, may be (an answer proves nothing about its source), the oldest
/// first.
#[test]
fn a_full_table_evicts_unanswered_attempts_and_keeps_tcp_connections_exact() {
    const CAP: u16 = 64;
    let mut x = XdpHarness::new(u32::from(CAP));
    let (c, s) = (v4(6, 1), v4(6, 2));
    let query = |port: u16| udp4(c, port, s, 53, &[0; 10]);
    let answer = |port: u16| udp4(s, 53, c, port, &[0; 30]);
    // Half the table: open TCP connections; the other half: attempts.
    for i in 0..CAP / 2 {
        let port = 10_000 + i;
        x.run(&tcp4(c, port, s, 80, SYN, &[]));
        x.run(&tcp4(s, 80, c, port, SYN | ACK, &[]));
        x.run(&tcp4(c, port, s, 80, PSH | ACK, &[0; 10]));
        x.run(&tcp4(s, 80, c, port, PSH | ACK, &[0; 30]));
    }
    for i in 0..CAP / 2 {
        x.run(&query(20_000 + i));
    }
    assert_eq!(x.flows().len(), usize::from(CAP));
    drain_events(&mut x);
    // 100 new attempts: each takes an attempt's place.
    let before = x.health();
    for i in 0..100u16 {
        x.run(&query(30_000 + i));
    }
    let h = delta(&x.health(), &before);
    assert_eq!(
        (h.accounted, h.flows_created, h.flows_evicted, h.table_full),
        (100, 100, 100, 0),
        "{h:?}"
    );
    assert_eq!(
        h.events_sent, 200,
        "an OPEN for each new flow, an EVICTED for each victim"
    );
    let evicted = drain_evicted(&mut x);
    assert_eq!(evicted.len(), 100);
    let flows = x.flows();
    assert_eq!(flows.len(), usize::from(CAP));
    for e in &evicted {
        let o = usize::from(e.value.orig_side);
        assert_eq!(
            (e.key.protocol, e.value.packets[o], e.value.packets[o ^ 1]),
            (ipproto::UDP, 1, 0),
            "an attempt, with its count: {e:?}"
        );
        assert!(e.evicted_ns >= e.value.last_seen_ns && e.evicted_ns > 0);
        assert!(
            !flows.iter().any(|(k, _)| *k == e.key),
            "gone from the table"
        );
    }
    // The TCP connections are all there, exact.
    let tcp = |flows: &[(FlowKey, sensor_common::FlowValue)]| -> usize {
        flows
            .iter()
            .filter(|(k, _)| k.protocol == ipproto::TCP)
            .inspect(|(_, v)| {
                let o = usize::from(v.orig_side);
                assert_eq!((v.payload_bytes[o], v.payload_bytes[o ^ 1]), (10, 30));
            })
            .count()
    };
    assert_eq!(tcp(&flows), usize::from(CAP / 2));
    // Answer every attempt left: the exchanges are room too, the TCP connections are not.
    for (k, v) in &flows {
        if k.protocol == ipproto::UDP {
            let o = usize::from(v.orig_side);
            let (_, port) = k.endpoint(o);
            x.run(&answer(port));
        }
    }
    let before = x.health();
    for i in 0..20u16 {
        x.run(&query(40_000 + i));
    }
    let h = delta(&x.health(), &before);
    assert_eq!(
        (h.flows_created, h.flows_evicted, h.table_full),
        (20, 20, 0)
    );
    assert_eq!(tcp(&x.flows()), usize::from(CAP / 2));
    let all = x.health();
    assert_eq!(all.outcomes(), all.packets + all.tunnel_payloads);
    assert_eq!(
        all.flows_created,
        x.flows().len() as u64 + all.flows_evicted,
        "every flow created is in the table or was handed over"
    );
    // Evictions reclaimed their tombstones where they could: the table still has empty slots
    // to end the walks of new keys.
    let (used, tombs) = sensor::capture::open_flow_table(&x.ebpf)
        .unwrap()
        .occupancy();
    assert_eq!(used, u64::from(CAP));
    assert!(tombs < u64::from(CAP), "{tombs} tombstones");
}

/// A full table also makes room by evicting finished TCP connections, whose entries only
/// linger after their record (`slots::evictable`): a table full of connections closed by FINs
/// or reset admits new flows, each victim handed over as an `EVICTED` event with its counts.
#[test]
fn a_full_table_evicts_finished_connections() {
    const CAP: u16 = 16;
    let mut x = XdpHarness::new(u32::from(CAP));
    let (c, s) = (v4(7, 1), v4(7, 2));
    for i in 0..CAP {
        let port = 10_000 + i;
        x.run(&tcp4(c, port, s, 80, SYN, &[]));
        x.run(&tcp4(s, 80, c, port, SYN | ACK, &[]));
        x.run(&tcp4(c, port, s, 80, ACK, &[]));
        if i % 2 == 0 {
            x.run(&tcp4(c, port, s, 80, FIN | ACK, &[]));
            x.run(&tcp4(s, 80, c, port, FIN | ACK, &[]));
            x.run(&tcp4(c, port, s, 80, ACK, &[]));
        } else {
            x.run(&tcp4(s, 80, c, port, RST | ACK, &[]));
        }
    }
    assert_eq!(x.flows().len(), usize::from(CAP));
    drain_events(&mut x);
    // Each new flow finds the table full; the first can only take a finished connection's room
    // (the later ones may take an earlier new attempt's, the older of their window).
    let before = x.health();
    x.run(&udp4(c, 20_000, s, 53, &[0; 10]));
    let evicted = drain_evicted(&mut x);
    assert_eq!(evicted.len(), 1);
    let e = &evicted[0];
    let (a, b) = (e.value.history[0], e.value.history[1]);
    assert_eq!(e.key.protocol, ipproto::TCP);
    assert!(
        (a | b) & history::RST != 0 || a & b & history::FIN != 0,
        "a finished connection: {e:?}"
    );
    for i in 1..CAP {
        x.run(&udp4(c, 20_000 + i, s, 53, &[0; 10]));
    }
    let h = delta(&x.health(), &before);
    assert_eq!(
        (h.flows_created, h.flows_evicted, h.table_full),
        (u64::from(CAP), u64::from(CAP), 0),
        "{h:?}"
    );
    // Open answered connections stay: a table of them evicts nothing.
    let mut y = XdpHarness::new(u32::from(CAP));
    for i in 0..CAP {
        let port = 30_000 + i;
        y.run(&tcp4(c, port, s, 80, SYN, &[]));
        y.run(&tcp4(s, 80, c, port, SYN | ACK, &[]));
        y.run(&tcp4(c, port, s, 80, ACK, &[]));
    }
    drain_events(&mut y);
    let before = y.health();
    y.run(&udp4(c, 40_000, s, 53, &[0; 10]));
    let h = delta(&y.health(), &before);
    assert_eq!((h.flows_evicted, h.table_full), (0, 1), "{h:?}");
}

/// A flood of spoofed ACKs to an address that does not answer makes each packet a one-sided
/// "connection" (its originator acknowledges a SYN-ACK the sensor did not see). It must not take
/// a full table for good: its flows are evicted as a flood's attempts are, oldest first
/// (`slots::eviction_rank`), each handed over with its count, while the open TCP connections
/// stay exact and a connection begun during the flood is stored whole.
#[test]
fn a_full_table_evicts_the_one_sided_flows_of_an_ack_flood() {
    const CAP: u16 = 64;
    let mut x = XdpHarness::new(u32::from(CAP));
    let (c, s, dark) = (v4(8, 1), v4(8, 2), v4(8, 99));
    // Four spoofed sources, changing ports, one silent target.
    let ack = |i: u16| tcp4(v4(9, 1 + (i % 4) as u8), 1024 + i, dark, 80, ACK, &[]);
    for i in 0..CAP / 2 {
        x.run(&tcp4(c, 10_000 + i, s, 80, SYN, &[]));
        x.run(&tcp4(s, 80, c, 10_000 + i, SYN | ACK, &[]));
        x.run(&tcp4(c, 10_000 + i, s, 80, ACK, &[]));
    }
    for i in 0..CAP / 2 {
        x.run(&ack(i));
    }
    assert_eq!(x.flows().len(), usize::from(CAP));
    drain_events(&mut x);
    let before = x.health();
    for i in CAP / 2..CAP / 2 + 100 {
        x.run(&ack(i));
    }
    // A connection begins and is answered during the flood, which goes on after it.
    x.run(&tcp4(c, 30_000, s, 80, SYN, &[]));
    x.run(&tcp4(s, 80, c, 30_000, SYN | ACK, &[]));
    x.run(&tcp4(c, 30_000, s, 80, ACK, &[]));
    for i in CAP / 2 + 100..CAP / 2 + 150 {
        x.run(&ack(i));
    }
    let h = delta(&x.health(), &before);
    assert_eq!(
        (h.flows_created, h.flows_evicted, h.table_full),
        (151, 151, 0),
        "every new flow stored, each in a flood packet's room: {h:?}"
    );
    let evicted = drain_evicted(&mut x);
    assert_eq!(evicted.len(), 151);
    for e in &evicted {
        let o = usize::from(e.value.orig_side);
        assert_eq!(e.key.protocol, ipproto::TCP);
        assert_eq!(
            (e.value.packets[o], e.value.packets[o ^ 1]),
            (1, 0),
            "a flood packet's flow, with its count: {e:?}"
        );
        assert_ne!(e.value.history[o] & history::ACK, 0, "{e:?}");
    }
    let flows = x.flows();
    assert_eq!(flows.len(), usize::from(CAP));
    let answered = flows
        .iter()
        .filter(|(_, v)| v.packets[0] > 0 && v.packets[1] > 0);
    assert_eq!(answered.count(), usize::from(CAP / 2) + 1);
    let (_, conn) = flows
        .iter()
        .find(|(k, _)| k.protocol == ipproto::TCP && 30_000 == k.port_lo.max(k.port_hi))
        .expect("the connection begun during the flood");
    let o = usize::from(conn.orig_side);
    assert_eq!((conn.packets[o], conn.packets[o ^ 1]), (2, 1));
    let all = x.health();
    assert_eq!(
        all.flows_created,
        x.flows().len() as u64 + all.flows_evicted,
        "every flow created is in the table or was handed over"
    );
}

/// A spoofed SYN flood at a server that answers: each flow a SYN and the server's SYN-ACK, a
/// handshake its originator never completes. A full table evicts them as attempts (oldest
/// first), each handed over with both sides' counts, and keeps the completed handshakes.
#[test]
fn a_full_table_evicts_the_half_open_handshakes_of_a_syn_flood_the_server_answers() {
    const CAP: u16 = 32;
    let mut x = XdpHarness::new(u32::from(CAP));
    let (c, s) = (v4(10, 1), v4(10, 2));
    let syn = |i: u16| tcp4(v4(11, 1 + (i % 4) as u8), 1024 + i, s, 80, SYN, &[]);
    let syn_ack = |i: u16| tcp4(s, 80, v4(11, 1 + (i % 4) as u8), 1024 + i, SYN | ACK, &[]);
    // Half the table: completed handshakes; the rest: the flood.
    for i in 0..CAP / 2 {
        x.run(&tcp4(c, 10_000 + i, s, 80, SYN, &[]));
        x.run(&tcp4(s, 80, c, 10_000 + i, SYN | ACK, &[]));
        x.run(&tcp4(c, 10_000 + i, s, 80, ACK, &[]));
    }
    for i in 0..CAP / 2 {
        x.run(&syn(i));
        x.run(&syn_ack(i));
    }
    assert_eq!(x.flows().len(), usize::from(CAP));
    drain_events(&mut x);
    let before = x.health();
    for i in CAP / 2..CAP / 2 + 60 {
        x.run(&syn(i));
        x.run(&syn_ack(i));
    }
    let h = delta(&x.health(), &before);
    assert_eq!(
        (h.flows_created, h.flows_evicted, h.table_full),
        (60, 60, 0),
        "{h:?}"
    );
    let evicted = drain_evicted(&mut x);
    assert_eq!(evicted.len(), 60);
    for e in &evicted {
        let o = usize::from(e.value.orig_side);
        assert_eq!(
            (e.value.packets[o], e.value.packets[o ^ 1]),
            (1, 1),
            "a SYN and its SYN-ACK: {e:?}"
        );
        assert_eq!(e.value.history[o] & history::ACK, 0, "{e:?}");
    }
    let completed = x
        .flows()
        .into_iter()
        .filter(|(_, v)| v.packets[usize::from(v.orig_side)] == 2)
        .count();
    assert_eq!(
        completed,
        usize::from(CAP / 2),
        "the completed handshakes stay"
    );
}

/// A table evicts nothing when the ring buffer has no room for the record: the new flow counts
/// as `table_full` and `evict_ring_full`, and the attempt stays.
#[test]
fn no_eviction_without_room_for_the_record() {
    const CAP: u16 = 16;
    let mut x = XdpHarness::new(u32::from(CAP));
    let query = |port: u16| udp4(v4(6, 3), port, v4(6, 4), 53, &[0; 10]);
    // Fill the table, then keep adding attempts without reading the ring buffer (64 KiB, about
    // 500 events): each evicts another and sends two events, until the ring is full.
    let mut i = 0u16;
    loop {
        let before = x.health();
        x.run(&query(1000 + i));
        i += 1;
        let h = delta(&x.health(), &before);
        if h.evict_ring_full > 0 {
            assert_eq!((h.table_full, h.flows_evicted, h.flows_created), (1, 0, 0));
            break;
        }
        assert!(i < 2000, "the ring never filled: {:?}", x.health());
    }
    let h = x.health();
    assert_eq!(h.flows_created, u64::from(CAP) + h.flows_evicted);
    assert_eq!(x.flows().len(), usize::from(CAP));
    assert_eq!(h.outcomes(), h.packets + h.tunnel_payloads);
    // Once user space reads the ring, evictions resume.
    drain_events(&mut x);
    let before = x.health();
    x.run(&query(60_000));
    let d = delta(&x.health(), &before);
    assert_eq!((d.flows_created, d.flows_evicted, d.table_full), (1, 1, 0));
}

/// The open-addressing table (`sensor_common::slots`) under churn: removed flows leave
/// tombstones that later inserts reuse (or that become empty slots again), the table keeps
/// holding exactly its capacity, and flows stored behind tombstones are still found.
#[test]
fn removed_flows_free_their_slots_and_the_rest_stay_reachable() {
    const CAP: u16 = 64;
    let mut x = XdpHarness::new(u32::from(CAP));
    let (c, s) = (|round: u8| v4(7, round), v4(7, 200));
    let from_client = |round: u8, i: u16, flags: u8| tcp4(c(round), 20_000 + i, s, 80, flags, &[]);
    let frame = |round: u8, i: u16| from_client(round, i, ACK);
    for round in 0..5u8 {
        // Fill to capacity (plus 8 that do not fit) with open TCP connections, which a full
        // table does not evict.
        for i in 0..CAP + 8 {
            x.run(&from_client(round, i, SYN));
            x.run(&tcp4(s, 80, c(round), 20_000 + i, SYN | ACK, &[]));
            x.run(&frame(round, i));
        }
        let flows = x.flows();
        assert_eq!(flows.len(), usize::from(CAP), "round {round}");
        for (_, v) in &flows {
            assert_eq!(v.packets[0] + v.packets[1], 3, "round {round}: {v:?}");
        }
        // Remove every other flow; the rest keep counting in place, new ones take the room (the
        // last 8, one-sided ACKs, evict 8 of the new ones).
        let mut table = sensor::capture::open_flow_table(&x.ebpf).unwrap();
        for (k, _) in flows.iter().step_by(2) {
            assert!(table.remove(k));
        }
        assert_eq!(table.len(), u64::from(CAP / 2));
        for i in 0..CAP + 8 {
            x.run(&frame(round, i));
        }
        let after = x.flows();
        assert_eq!(after.len(), usize::from(CAP), "round {round}");
        let kept: Vec<_> = flows.iter().skip(1).step_by(2).collect();
        for (k, _) in &kept {
            let v = table.get(k).expect("a kept flow is still reachable");
            assert_eq!(v.packets[0] + v.packets[1], 4, "round {round}: {v:?}");
        }
        x.clear_flows();
        // As the agent would: evictions need room in the ring buffer for their records.
        drain_events(&mut x);
        assert!(table.is_empty());
        // Every tombstone was next to an empty slot in the end: all reclaimed.
        assert_eq!(table.occupancy(), (0, 0), "round {round}");
    }
    let h = x.health();
    assert_eq!(h.outcomes(), h.packets + h.tunnel_payloads);
    assert_eq!(
        h.flows_created,
        5 * (u64::from(CAP) + u64::from(CAP / 2) + 8)
    );
    assert_eq!(h.flows_evicted, 5 * 8);
}

/// BPF_PROG_TEST_RUN of program `fd` on `frame`, by raw syscall (usable from any thread);
/// the program's return value.
fn test_run_raw(fd: std::os::fd::RawFd, frame: &[u8]) -> u32 {
    /// The `test` member of `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct TestAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut attr = TestAttr {
        prog_fd: fd as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat: 1,
        ..TestAttr::default()
    };
    // SAFETY: `attr` is a valid, zero-padded `bpf_attr` prefix of the size passed; `frame`
    // outlives the call and the kernel only reads it (no output buffer).
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &raw mut attr,
            size_of::<TestAttr>() as u32,
        )
    };
    assert_eq!(
        r,
        0,
        "BPF_PROG_TEST_RUN: {}",
        std::io::Error::last_os_error()
    );
    attr.retval
}

/// Two CPUs creating the same flows at the same moment (the insert race of the open-addressing
/// table: compare-and-swap on the slot state, waiting for a busy slot, the re-check after a
/// claim): every flow is stored once, and every packet is accounted in it.
#[test]
fn two_cpus_creating_the_same_flows_store_each_once() {
    use std::os::fd::{AsFd, AsRawFd};
    const FLOWS: u16 = 20_000;
    let x = XdpHarness::new(u32::from(FLOWS));
    let prog: &aya::programs::Xdp = x
        .ebpf
        .program(sensor_common::program_names::XDP_INGRESS)
        .unwrap()
        .try_into()
        .unwrap();
    let fd = prog.fd().unwrap().try_clone().unwrap();
    let frames: Vec<Vec<u8>> = (0..FLOWS)
        .map(|i| udp4(v4(8, (i >> 8) as u8), 1024 + i, v4(8, 255), 53, &[0; 10]))
        .collect();
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                start.wait();
                for f in &frames {
                    assert_eq!(test_run_raw(fd.as_fd().as_raw_fd(), f), 2);
                }
            });
        }
    });
    let h = x.health();
    let flows = x.flows();
    let mut keys: Vec<_> = flows.iter().map(|(k, _)| *k).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), flows.len(), "no flow stored twice");
    assert_eq!(flows.len(), usize::from(FLOWS));
    assert_eq!(
        (h.flows_created, h.table_full, h.accounted),
        (u64::from(FLOWS), 0, 2 * u64::from(FLOWS)),
        "{h:?}"
    );
    for (k, v) in &flows {
        assert_eq!(v.packets[0] + v.packets[1], 2, "{k:?}: {v:?}");
    }
}

/// xorshift64*: fast, seeded, reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn a_million_mutated_frames_keep_the_counters_consistent() {
    const FRAMES: usize = 1_000_000;
    let mut x = XdpHarness::new(1 << 20);
    // Replay's parser and table update over the same frames, at one instant (nothing expires).
    let mut r = sensor::replay::Replayer::new(sensor::replay::ReplayConfig {
        table_size: 1 << 20,
        ..Default::default()
    });
    let mut events = Vec::new();
    let mut base: Vec<Vec<u8>> = templates().into_iter().map(|t| t.1).collect();
    base.extend(encapsulated_frames().into_iter().map(|t| t.1));
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut frame = Vec::with_capacity(256);
    for _ in 0..FRAMES {
        frame.clear();
        frame.extend_from_slice(&base[rng.below(base.len())]);
        match rng.below(4) {
            0 => {
                // Flip 1-4 random bytes anywhere.
                for _ in 0..=rng.below(4) {
                    let i = rng.below(frame.len());
                    frame[i] = rng.next() as u8;
                }
            }
            1 => {
                // At least an Ethernet header: the shortest input BPF_PROG_TEST_RUN takes.
                let n = 14 + rng.below(frame.len() - 13);
                frame.truncate(n);
            }
            2 => {
                // Corrupt a length or header field: IHL/version byte, total length, data offset.
                let i = [14, 16, 17, 46, 18, 19]
                    .get(rng.below(6))
                    .copied()
                    .unwrap_or(14);
                if i < frame.len() {
                    frame[i] = rng.next() as u8;
                }
            }
            _ => {
                // Change addresses/ports so that many distinct flows appear.
                let i = 26 + rng.below(12);
                if i < frame.len() {
                    frame[i] = rng.next() as u8;
                }
                let extra = rng.below(8);
                frame.extend(std::iter::repeat_n(0u8, extra));
            }
        }
        x.run(&frame);
        r.packet(
            1_700_000_000_000_000_000,
            frame.len() as u64,
            sensor::replay::LinkType::Ethernet,
            &frame,
            &mut events,
        );
        events.clear();
    }
    let h = x.health();
    assert_eq!(h.packets, FRAMES as u64);
    assert_eq!(
        h.outcomes(),
        h.packets + h.tunnel_payloads,
        "every packet and tunnel payload has exactly one outcome: {h:?}"
    );
    assert_eq!(h.table_full, 0);
    // The mutations exercise both sides: many accepted, many rejected for each reason.
    assert!(h.accounted > FRAMES as u64 / 4, "{h:?}");
    assert!(
        h.truncated > 10_000 && h.parse_errors > 10_000 && h.non_ip > 1_000,
        "{h:?}"
    );
    assert!(h.flows_created > 10_000, "{h:?}");
    // The kernel counted every outcome as replay, the same parser and update in user space,
    // did (the ring buffer's counters aside, and the parking of restarts it had no room for:
    // replay has no ring).
    let rh = r.health();
    let untimed = |h: &Health| Health {
        events_sent: 0,
        ringbuf_drops: 0,
        restarts_parked: 0,
        restarts_lost: 0,
        ..*h
    };
    assert_eq!(untimed(&h), untimed(&rh), "kernel vs replay");
    assert!(h.tunnel_payloads > 10_000, "{h:?}");
    // No entry from a malformed frame: the flows hold every accounted packet (a restart on a
    // reused 5-tuple starts its counts afresh, so then they hold fewer).
    let flows = x.flows();
    let in_flows: u64 = flows.iter().map(|(_, v)| v.packets[0] + v.packets[1]).sum();
    if h.flows_restarted == 0 {
        assert_eq!(in_flows, h.accounted);
    } else {
        assert!(
            in_flows < h.accounted && in_flows + h.flows_restarted <= h.accounted,
            "{h:?}"
        );
    }
    assert_eq!(flows.len() as u64, h.flows_created);
}

/// Address translation learned by the programs themselves, as on a masquerading gateway: a
/// connection's first packet enters (XDP), leaves with the gateway's address (TC egress,
/// forwarded from a watched interface), and its answers, entering to the gateway's address,
/// are accounted under the original connection; a packet to another port of the gateway is no
/// answer and stays its own flow. Pinned to one CPU: the first packets are remembered per CPU,
/// as a gateway forwards on the CPU that received.
#[test]
fn a_translation_learned_where_the_packet_leaves_is_undone_for_its_answers() {
    const WATCHED_IFINDEX: u32 = 7;
    pin_to_cpu(0);
    let mut x = XdpHarness::new(1024);
    x.watch(WATCHED_IFINDEX);
    let (client, gateway, server) = (v4(20, 1), v4(21, 1), v4(22, 1));
    let leave = |x: &mut XdpHarness, frame: &[u8]| {
        x.time_tc_ns(
            sensor_common::program_names::TC_EGRESS,
            frame,
            1,
            WATCHED_IFINDEX,
        );
    };
    // A DNS lookup and a TCP handshake through the gateway.
    x.run(&udp4(client, 5000, server, 53, &[1, 2, 3, 4, 0, 0, 0, 0]));
    leave(
        &mut x,
        &udp4(gateway, 61000, server, 53, &[1, 2, 3, 4, 0, 0, 0, 0]),
    );
    x.run(&tcp4_seq(client, 40000, server, 443, SYN, 1000, 0, &[]));
    leave(
        &mut x,
        &tcp4_seq(gateway, 61001, server, 443, SYN, 1000, 0, &[]),
    );
    let h = x.health();
    assert_eq!(
        (h.nat_translations, h.egress_already_seen, h.accounted),
        (2, 2, 2)
    );
    // The answers, and a packet to a port of the gateway no translation gave out.
    x.run(&udp4(
        server,
        53,
        gateway,
        61000,
        &[1, 2, 3, 4, 0x81, 0x80, 0, 1],
    ));
    x.run(&tcp4_seq(
        server,
        443,
        gateway,
        61001,
        SYN | ACK,
        9000,
        1001,
        &[],
    ));
    x.run(&udp4(
        server,
        53,
        gateway,
        61002,
        &[5, 6, 7, 8, 0x81, 0x80, 0, 1],
    ));
    let h = x.health();
    assert_eq!((h.nat_answers, h.accounted), (2, 5));
    let mut flows: Vec<(u8, u16, u16, [u64; 2])> = x
        .flows()
        .iter()
        .map(|(k, v)| (k.protocol, k.port_lo, k.port_hi, v.packets))
        .collect();
    flows.sort_unstable();
    assert_eq!(
        flows,
        [
            // Each connection whole, between the client and the server (the lower address's
            // port first).
            (ipproto::TCP, 40000, 443, [1, 1]),
            (ipproto::UDP, 5000, 53, [1, 1]),
            // The stray datagram, its own flow from the server (the higher address).
            (ipproto::UDP, 61002, 53, [0, 1]),
        ]
    );
}

/// The filter of translated connections' answers, rebuilt from the translations the kernel
/// still holds (as the agent does when it fills, `sensor::capture::nat_filter`): a forgotten
/// translation's bit is cleared and its answers are no longer looked up, a held one's bit is
/// kept and its answers are still undone after the switch of halves; a translation learned
/// after the rebuild sets its bit in both halves, so the next rebuild, back to the first half,
/// keeps it.
#[test]
fn a_rebuilt_filter_keeps_the_translations_held_and_drops_the_forgotten() {
    use sensor::capture::nat_filter::{NatFilter, REBUILD_AT_BITS};
    use sensor_common::nat::{FILTER_WORDS, Tuple};
    const WATCHED_IFINDEX: u32 = 7;
    pin_to_cpu(0);
    let mut x = XdpHarness::new(1024);
    x.watch(WATCHED_IFINDEX);
    let mut filter = NatFilter::open(&x.ebpf).expect("map NAT_FILTER");
    assert_eq!(filter.rebuild().expect("rebuild"), None);
    let (client, gateway, server) = (v4(24, 1), v4(25, 1), v4(26, 1));
    // A DNS lookup from `client_port`, masqueraded to the gateway's `outside_port`.
    let lookup = |x: &mut XdpHarness, client_port: u16, outside_port: u16| {
        let query = [client_port as u8, 2, 3, 4, 0, 0, 0, 0];
        x.run(&udp4(client, client_port, server, 53, &query));
        x.time_tc_ns(
            sensor_common::program_names::TC_EGRESS,
            &udp4(gateway, outside_port, server, 53, &query),
            1,
            WATCHED_IFINDEX,
        );
    };
    let answer = |x: &mut XdpHarness, outside_port: u16| {
        x.run(&udp4(
            server,
            53,
            gateway,
            outside_port,
            &[9, 9, 9, 9, 0x81, 0x80, 0, 1],
        ));
    };
    lookup(&mut x, 5000, 61000);
    lookup(&mut x, 5001, 61001);
    assert_eq!(x.health().nat_translations, 2);
    let replies = |x: &XdpHarness| -> Vec<Tuple> {
        let m: aya::maps::HashMap<_, Tuple, Tuple> =
            aya::maps::HashMap::try_from(x.ebpf.map(map_names::NAT_REPLIES).expect("map"))
                .expect("NAT_REPLIES type");
        m.keys().map(|k| k.expect("key")).collect()
    };
    let held = replies(&x);
    let of_port = |port: u16| {
        *held
            .iter()
            .find(|t| t.dport == port)
            .expect("the answers' tuple of the translation")
    };
    let (forgotten, kept) = (of_port(61000), of_port(61001));
    let passes = |f: &NatFilter, base: u32, t: &Tuple| f.passes(base, &t.dst, t.dport, t.protocol);
    assert_eq!(filter.active_base().expect("NAT_ACTIVE"), Some(0));
    for base in [0, FILTER_WORDS] {
        assert!(passes(&filter, base, &forgotten) && passes(&filter, base, &kept));
    }
    // The LRU map forgets the first translation (as it does when it makes room).
    {
        let mut m: aya::maps::HashMap<_, Tuple, Tuple> =
            aya::maps::HashMap::try_from(x.ebpf.map_mut(map_names::NAT_REPLIES).expect("map"))
                .expect("NAT_REPLIES type");
        m.remove(&forgotten).expect("remove the translation");
    }
    let r = filter.rebuild().expect("rebuild").expect("a half in use");
    assert_eq!((r.translations, r.bits_after), (1, 1), "{r:?}");
    assert!(r.bits_before >= 1, "{r:?}");
    assert_eq!(
        filter.active_base().expect("NAT_ACTIVE"),
        Some(FILTER_WORDS)
    );
    assert!(!passes(&filter, FILTER_WORDS, &forgotten));
    assert!(passes(&filter, FILTER_WORDS, &kept));
    // The held translation's answer is still undone; the forgotten one's is not looked up.
    let before = x.health();
    answer(&mut x, 61001);
    answer(&mut x, 61000);
    let d = delta(&x.health(), &before);
    assert_eq!((d.nat_answers, d.accounted), (1, 2));
    // Learned after the rebuild: in both halves, so the rebuild back keeps it.
    lookup(&mut x, 5002, 61002);
    let learned = *replies(&x)
        .iter()
        .find(|t| t.dport == 61002)
        .expect("the new translation");
    for base in [0, FILTER_WORDS] {
        assert!(passes(&filter, base, &learned));
    }
    let r = filter.rebuild().expect("rebuild").expect("a half in use");
    assert_eq!((r.translations, r.bits_after), (2, 2), "{r:?}");
    assert_eq!(filter.active_base().expect("NAT_ACTIVE"), Some(0));
    assert!(!passes(&filter, 0, &forgotten));
    let before = x.health();
    answer(&mut x, 61002);
    answer(&mut x, 61001);
    assert_eq!(delta(&x.health(), &before).nat_answers, 2);
    assert_eq!(filter.rebuilds(), 2);
    // The agent's keeper thread rebuilds a half filled past an eighth of its bits (as a port
    // forward's answers to ever new clients fill it), not one below.
    assert_eq!(filter.rebuild_if_full().expect("check"), None);
    {
        let mut words: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(x.ebpf.map_mut(map_names::NAT_FILTER).expect("map"))
                .expect("NAT_FILTER type");
        for i in 0..=FILTER_WORDS / 8 {
            words.set(i, u64::MAX, 0).expect("fill a word");
        }
    }
    assert!(filter.bits_set(0) > REBUILD_AT_BITS);
    let keeper = filter.spawn_keeper().expect("keeper thread");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while keeper.rebuilds() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        keeper.rebuilds(),
        3,
        "the keeper did not rebuild a full half"
    );
    drop(keeper);
    let active: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(x.ebpf.map(map_names::NAT_ACTIVE).expect("map"))
            .expect("NAT_ACTIVE type");
    assert_eq!(
        sensor_common::nat::filter_base(active.get(&0, 0).expect("NAT_ACTIVE")),
        Some(FILTER_WORDS)
    );
    let before = x.health();
    answer(&mut x, 61002);
    answer(&mut x, 61001);
    assert_eq!(delta(&x.health(), &before).nat_answers, 2);
}

/// The egress program tells packets forwarded from watched interfaces (looked at, not
/// accounted) from the host's own and from packets of other interfaces (accounted), through
/// the index of watched interfaces, also where two watched interfaces share an index slot
/// (1029 and 5, then asked of the set) and an unwatched one maps to it (2053).
#[test]
fn egress_tells_forwarded_packets_by_the_watched_index() {
    let mut x = XdpHarness::new(1024);
    x.watch(5);
    x.watch(1029);
    x.watch(8);
    let frame = tcp4(v4(23, 1), 40000, v4(23, 2), 80, ACK, &[0; 10]);
    for (ingress_ifindex, forwarded) in [
        (0, false),
        (5, true),
        (1029, true),
        (2053, false),
        (8, true),
        (1032, false),
        (9, false),
    ] {
        let before = x.health();
        x.time_tc_ns(
            sensor_common::program_names::TC_EGRESS,
            &frame,
            1,
            ingress_ifindex,
        );
        let h = x.health();
        assert_eq!(
            (
                h.egress_already_seen - before.egress_already_seen,
                h.accounted - before.accounted
            ),
            if forwarded { (1, 0) } else { (0, 1) },
            "entered by ifindex {ingress_ifindex}"
        );
    }
}
