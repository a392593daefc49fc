use std::net::Ipv4Addr;

use sensor_common::conn_state::ConnState;

use super::*;
use crate::model::Detector;

const S: u64 = 1_000_000_000;
/// The connections' clock starts here (any Unix time).
const T0: u64 = 1_800_000_000 * S;

fn addr(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 9, last))
}

/// A refused TCP connection from `src` to `dst:port` at `t_ns`.
fn conn(src: IpAddr, src_port: u16, dst: IpAddr, port: u16, t_ns: u64) -> ConnectionRecord {
    ConnectionRecord {
        orig_packets: 1,
        resp_packets: 1,
        conn_state: ConnState::REJ,
        end_reason: EndReason::Rst,
        answer_unix_ns: Some(t_ns),
        ..ConnectionRecord::new(Transport::Tcp, (src, src_port), (dst, port), t_ns)
    }
}

fn flagged() -> Scored {
    Scored {
        features: KddFeatures([0.0; 41]),
        verdict: Verdict {
            anomalous: true,
            score: 1.5,
            detector: Detector::Supervised,
            supervised_score: 0.9,
            unsupervised_score: None,
            supervised_score_plain: 0.9,
            withdrawn_by_attack_boxes: false,
        },
        not_scored: None,
        suppressed_by: None,
        cold: None,
        volume: None,
        volume_pending: false,
        routine_check: None,
    }
}

/// Feeds `conns` (in time order) to a tracker with the default settings, ticking it every
/// second of their clock as the agent does, and returns the kinds of the incidents opened.
fn opened(conns: &[ConnectionRecord]) -> Vec<IncidentKind> {
    lines_of(conns)
        .iter()
        .filter(|l| l.state == IncidentState::Open)
        .map(|l| l.kind)
        .collect()
}

/// The lines of `out` in `state`.
fn in_state(out: &[IncidentLine], state: IncidentState) -> Vec<&IncidentLine> {
    out.iter().filter(|l| l.state == state).collect()
}

/// Feeds `conns` as [`opened`] does and returns every line (the last ones from `finish`).
fn lines_of(conns: &[ConnectionRecord]) -> Vec<IncidentLine> {
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let (mut out, s) = (Vec::new(), flagged());
    let mut next_tick = T0;
    for c in conns {
        while next_tick <= c.final_unix_ns {
            tracker.tick(next_tick, &mut out);
            next_tick += S;
        }
        tracker.observe(c, &s, c.final_unix_ns, &mut out);
    }
    tracker.finish(&mut out);
    out
}

/// Four hours of false alarms at a steady low rate, each shaped like the evidence of one
/// kind: one a minute would never have been forgotten (fed within the 60 s window), so
/// before the horizon each added up to its threshold within the first hour.
#[test]
fn a_trickle_of_false_alarms_never_adds_up_to_an_incident() {
    let server = addr(1);
    let mut conns = Vec::new();
    for i in 0..(4 * 3600 / 5) as u64 {
        let t = T0 + i * 5 * S;
        // One client's odd exchanges with a multi-service server, every 20 s, over 40 ports
        // (15 distinct ports per five minutes; `scan_ports` is 20).
        if i % 4 == 0 {
            conns.push(conn(
                addr(2),
                40_000,
                server,
                9_000 + (i / 4 % 40) as u16,
                t,
            ));
        }
        // A busy resolver's flagged queries from ever new clients, every 5 s (60 per five
        // minutes; `flood_connections` is 100).
        conns.push(conn(addr(100 + (i % 100) as u8), 50_000, server, 53, t + S));
        // A monitoring host whose probes of 20 hosts are now and then flagged, every 40 s
        // (8 hosts per five minutes; `sweep_hosts` is 10).
        if i % 8 == 0 {
            conns.push(conn(
                addr(3),
                41_000,
                addr(200 + (i / 8 % 20) as u8),
                161,
                t + 2 * S,
            ));
        }
    }
    assert_eq!(opened(&conns), Vec::<IncidentKind>::new());
}

/// A scan of one port every 10 s: 20 ports in 190 s, within the horizon.
#[test]
fn a_slow_scan_within_the_horizon_opens_one_port_scan() {
    let conns: Vec<_> = (0..60u64)
        .map(|i| conn(addr(4), 42_000, addr(1), 1 + i as u16, T0 + i * 10 * S))
        .collect();
    assert_eq!(opened(&conns), vec![IncidentKind::PortScan]);
}

/// A scan that begins just before a candidate's horizon ends (the candidate began with a
/// false alarm from the same source) still opens: counting starts again with it.
#[test]
fn a_scan_at_the_end_of_a_horizon_still_opens() {
    let mut conns = vec![conn(addr(5), 43_000, addr(1), 22, T0)];
    conns.extend((0..40u64).map(|i| {
        conn(
            addr(5),
            43_001,
            addr(1),
            100 + i as u16,
            T0 + 290 * S + i * S,
        )
    }));
    assert_eq!(opened(&conns), vec![IncidentKind::PortScan]);
}

/// A flood passes its threshold as fast as before: 100 anomalous connections in a second.
#[test]
fn a_flood_opens_within_its_first_second() {
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let (mut out, s) = (Vec::new(), flagged());
    for i in 0..150u64 {
        let c = conn(
            addr(10 + (i % 4) as u8),
            1024 + i as u16,
            addr(1),
            443,
            T0 + i * 5_000_000,
        );
        tracker.observe(&c, &s, c.final_unix_ns, &mut out);
    }
    let open = in_state(&out, IncidentState::Open);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].kind, IncidentKind::Flood);
    assert!(open[0].last_unix_ns < T0 + S);
}

/// A UDP conversation of `packets` datagrams over one second from `src`, unanswered: an early
/// verdict (`Ongoing`) or its final record.
fn udp_stream(src: IpAddr, packets: u64, end_reason: EndReason) -> ConnectionRecord {
    let mut c = conn(src, 40_000, addr(99), 53, T0);
    c.transport = Transport::Udp;
    c.ip_proto = 17;
    c.conn_state = ConnState::S0;
    c.answer_unix_ns = None;
    c.orig_packets = packets;
    c.resp_packets = 0;
    c.end_unix_ns = T0 + S;
    c.final_unix_ns = T0 + S;
    c.end_reason = end_reason;
    c
}

/// A verdict of the volume rule at `scope`, `pps` its rate (over a bar of 5,000).
fn by_volume(scope: crate::detect::VolumeScope, pps: f64) -> Scored {
    let mut s = flagged();
    s.verdict.detector = Detector::Volume;
    s.volume = Some(crate::detect::VolumeHit {
        reversed: false,
        scope,
        packets_per_second: pps,
        ratio: pps / 5_000.0,
    });
    s
}

/// The early verdict's record of the `i`-th one-datagram conversation from `src` of a flood
/// to the next port of the target each, `gap_ns` apart.
fn datagram_to_next_port(src: IpAddr, i: u64, gap_ns: u64) -> ConnectionRecord {
    datagram_at(src, i, T0 + i * gap_ns)
}

/// [`datagram_to_next_port`]'s `i`-th conversation, begun at `start_ns`.
fn datagram_at(src: IpAddr, i: u64, start_ns: u64) -> ConnectionRecord {
    let mut c = udp_stream(src, 1, EndReason::Ongoing);
    c.orig_port = 1_024 + i as u16;
    c.resp_port = 1 + i as u16;
    c.start_unix_ns = start_ns;
    c.end_unix_ns = start_ns;
    c.final_unix_ns = start_ns + S;
    c
}

#[test]
fn one_conversation_at_a_floods_rate_opens_its_flood_once() {
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    // The rule's verdicts: 20,000 per second over the first second, 30,000 over the flood.
    let by_volume = |pps: f64| by_volume(crate::detect::VolumeScope::Conversation, pps);
    // The early verdict opens the flood at once; the final record of the same conversation
    // (a minute later, after the UDP timeout) adds nothing.
    let early = udp_stream(addr(1), 20_000, EndReason::Ongoing);
    tracker.observe(&early, &by_volume(20_000.0), T0 + S, &mut out);
    let mut last = udp_stream(addr(1), 40_000, EndReason::Idle);
    last.end_unix_ns = T0 + 2 * S;
    last.final_unix_ns = T0 + 62 * S;
    tracker.observe(&last, &by_volume(30_000.0), last.final_unix_ns, &mut out);
    tracker.finish(&mut out);
    let opens = in_state(&out, IncidentState::Open);
    assert_eq!(opens.len(), 1, "{out:?}");
    assert_eq!(opens[0].kind, IncidentKind::UdpFlood);
    assert_eq!(opens[0].anomalous_connections, 1);
    let pps = opens[0].peak_packets_per_second.expect("the rate");
    assert!((pps - 20_000.0).abs() < 1e-6, "{pps}");
    assert_eq!(opens[0].targets, vec![addr(99)]);

    // The same conversation flagged by the model: one anomalous connection is no flood.
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    tracker.observe(&early, &flagged(), T0 + S, &mut out);
    tracker.finish(&mut out);
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn a_target_floods_final_records_a_minute_later_open_nothing_new() {
    // A flood of one-datagram conversations, judged by its target's rate: 200 early verdicts
    // in its second second open one `udp_flood`; it closes `quiet` after them; their final
    // records a minute later (the UDP timeout), flagged again and 99 of them flagged only
    // then, must not open a second incident.
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    let by_target = by_volume(crate::detect::VolumeScope::Target, 8_000.0);
    let conv = |i: u64, end_reason: EndReason| {
        let mut c = udp_stream(addr(1), 1, end_reason);
        c.orig_port = 1_024 + i as u16;
        c.start_unix_ns = T0 + i * 1_000_000;
        c.end_unix_ns = c.start_unix_ns;
        c.final_unix_ns = match end_reason {
            EndReason::Ongoing => c.start_unix_ns + S,
            _ => c.start_unix_ns + 60 * S,
        };
        c
    };
    for i in 0..200 {
        let c = conv(i, EndReason::Ongoing);
        tracker.observe(&c, &by_target, c.final_unix_ns, &mut out);
    }
    for t in 2..60 {
        tracker.tick(T0 + t * S, &mut out);
    }
    for i in 0..300 {
        let c = conv(i, EndReason::Idle);
        tracker.observe(&c, &by_target, c.final_unix_ns, &mut out);
    }
    tracker.finish(&mut out);
    let states: Vec<IncidentState> = out.iter().map(|l| l.state).collect();
    assert_eq!(
        states,
        [IncidentState::Open, IncidentState::Closed],
        "{out:?}"
    );
    assert_eq!(out[0].kind, IncidentKind::UdpFlood);
    assert_eq!(out[0].peak_packets_per_second, Some(8_000.0));
}

#[test]
fn a_syn_floods_attempts_judged_at_their_final_records_open_its_flood() {
    // Unanswered SYNs to port 80, flagged by the service's rate of attempts at their final
    // records, each 5 s after it began (the attempt timeout): the rule's only verdict on a
    // TCP attempt, so it opens the `flood` (a UDP conversation's final record, a minute after
    // its early verdict, would open nothing).
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    let by_target = by_volume(crate::detect::VolumeScope::Target, 6_000.0);
    for i in 0..10u64 {
        let mut c = conn(addr(1), 1_024 + i as u16, addr(99), 80, T0 + i * 1_000_000);
        (c.resp_packets, c.conn_state, c.end_reason) = (0, ConnState::S0, EndReason::Idle);
        c.answer_unix_ns = None;
        c.final_unix_ns = c.start_unix_ns + 5 * S;
        tracker.observe(&c, &by_target, c.final_unix_ns, &mut out);
    }
    tracker.finish(&mut out);
    let opens = in_state(&out, IncidentState::Open);
    assert_eq!(opens.len(), 1, "{out:?}");
    assert_eq!(opens[0].kind, IncidentKind::Flood);
    assert_eq!(opens[0].peak_packets_per_second, Some(6_000.0));
    let closed = out.iter().find(|l| l.state == IncidentState::Closed);
    assert_eq!(closed.map(|l| l.connections), Some(10), "{out:?}");
}

/// A SYN-ACK flood to port 80 of a host from changing source ports of one address: each
/// conversation's record names the target the originator (the flow table takes a SYN-ACK's
/// sender for the responder), and the volume rule's hit says so (`reversed`). One `flood`,
/// naming the sender as its source and the target's port 80, not a flood of the sender's
/// ever new ports.
#[test]
fn a_syn_ack_flood_is_one_flood_from_its_sender() {
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    let mut by_target = by_volume(crate::detect::VolumeScope::Target, 6_000.0);
    if let Some(h) = by_target.volume.as_mut() {
        h.reversed = true;
    }
    for i in 0..200u64 {
        // As the table records it: from the target's port 80 to the sender's port.
        let c = conn(addr(99), 80, addr(1), 1_024 + i as u16, T0 + i * 1_000_000);
        tracker.observe(&c, &by_target, c.final_unix_ns, &mut out);
    }
    tracker.finish(&mut out);
    let opens = in_state(&out, IncidentState::Open);
    assert_eq!(opens.len(), 1, "{out:?}");
    assert_eq!(opens[0].kind, IncidentKind::Flood);
    assert_eq!(
        (&opens[0].sources, &opens[0].targets),
        (&vec![addr(1)], &vec![addr(99)])
    );
    let closed = last_closed(&out, IncidentKind::Flood);
    assert_eq!((closed.connections, &closed.ports), (200, &vec![80]));
}

/// One attacker scanning 30 ports of a host (refused, flagged by the model), then sending 500
/// connections to its port 80, `gap_ns` apart, scored `flood`: the incident lines, all closed
/// at the end.
fn scan_then_flood(flood: &Scored, gap_ns: u64) -> Vec<IncidentLine> {
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    let mut feed =
        |c: ConnectionRecord, s: &Scored| tracker.observe(&c, s, c.final_unix_ns, &mut out);
    for port in 1..=30u16 {
        let t = T0 + u64::from(port) * 1_000;
        feed(conn(addr(1), 40_000, addr(99), 1_000 + port, t), &flagged());
    }
    for i in 0..500u64 {
        let t = T0 + S + i * gap_ns;
        feed(conn(addr(1), 1_024 + i as u16, addr(99), 80, t), flood);
    }
    tracker.finish(&mut out);
    out
}

/// The last `closed` line of an incident of `kind` in `out`.
fn last_closed(out: &[IncidentLine], kind: IncidentKind) -> &IncidentLine {
    out.iter()
        .rev()
        .find(|l| l.kind == kind && l.state == IncidentState::Closed)
        .unwrap_or_else(|| panic!("no closed {kind:?}: {out:?}"))
}

#[test]
fn a_flood_after_a_scan_from_the_same_source_is_a_flood_of_its_own() {
    // One attacker scans 30 ports of a host (refused), then floods its port 80 with SYNs
    // whose SYN-ACKs it resets, flagged by the service's rate, while the scan is still open:
    // the flood opens its own incident and takes its connections; the scan keeps its ports.
    // (One address for both is what a lab's single attacker host does.)
    let by_target = by_volume(crate::detect::VolumeScope::Target, 9_000.0);
    let out = scan_then_flood(&by_target, 100_000);
    let (scan, flood) = (
        last_closed(&out, IncidentKind::PortScan),
        last_closed(&out, IncidentKind::Flood),
    );
    assert_eq!((scan.port_count, scan.connections), (30, 30), "{scan:?}");
    assert_eq!((flood.port_count, flood.connections), (1, 500), "{flood:?}");
    assert_eq!(flood.peak_packets_per_second, Some(9_000.0));

    // The same flood flagged by the model alone (no rate): the open scan takes its first
    // hundred connections, which still count towards the port's flood; at the hundredth the
    // flood opens (with them) and takes the rest.
    let out = scan_then_flood(&flagged(), 1_000_000);
    let (scan, flood) = (
        last_closed(&out, IncidentKind::PortScan),
        last_closed(&out, IncidentKind::Flood),
    );
    assert_eq!((scan.port_count, scan.connections), (31, 130), "{scan:?}");
    assert_eq!((flood.port_count, flood.connections), (1, 500), "{flood:?}");
    assert_eq!(flood.peak_packets_per_second, None);

    // A scan repeated over the same 20 ports (120 rounds: 120 connections to each port, in
    // turn) is one scan: no run to one port, no flood.
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    let mut after_first_round = 0;
    for round in 0..120u64 {
        for port in 1..=20u16 {
            let t = T0 + round * 100_000_000 + u64::from(port) * 1_000;
            let c = conn(addr(1), 40_000 + round as u16, addr(99), port, t);
            tracker.observe(&c, &flagged(), c.final_unix_ns, &mut out);
        }
        if round == 0 {
            after_first_round = tracker.candidates.len();
        }
    }
    // The candidates from before the scan opened, and at most one flood candidate of its.
    assert!(
        tracker.candidates.len() <= after_first_round + 1,
        "{} candidates, {after_first_round} when the scan opened",
        tracker.candidates.len()
    );
    tracker.finish(&mut out);
    let kinds: Vec<IncidentKind> = out
        .iter()
        .filter(|l| l.state == IncidentState::Open)
        .map(|l| l.kind)
        .collect();
    assert_eq!(kinds, [IncidentKind::PortScan], "{out:?}");
}

#[test]
fn a_flood_over_many_ports_is_one_incident_at_its_host() {
    // One-datagram conversations from four spoofed sources, each to the next port of one
    // host, flagged by the host's rate: one `udp_flood` for the host, not one per port (each
    // port's verdicts carry a rate, which opens a flood by itself) nor a port scan per source.
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    let by_host = by_volume(crate::detect::VolumeScope::Host, 9_000.0);
    for i in 0..2_000u64 {
        let c = datagram_to_next_port(addr(1 + (i % 4) as u8), i, 100_000);
        tracker.observe(&c, &by_host, c.final_unix_ns, &mut out);
    }
    // A query to the host's resolver during the flood, answered and normal: not the flood's
    // (its key spans every port of the host, whose ordinary traffic would keep it open).
    let mut query = udp_stream(addr(7), 1, EndReason::Idle);
    query.resp_port = 53;
    query.resp_packets = 1;
    query.final_unix_ns = T0 + S;
    tracker.observe(
        &query,
        &Scored {
            verdict: Verdict {
                anomalous: false,
                ..flagged().verdict
            },
            ..flagged()
        },
        T0 + S,
        &mut out,
    );
    tracker.finish(&mut out);
    let states: Vec<(IncidentState, IncidentKind)> =
        out.iter().map(|l| (l.state, l.kind)).collect();
    assert_eq!(
        states,
        [
            (IncidentState::Open, IncidentKind::UdpFlood),
            (IncidentState::Closed, IncidentKind::UdpFlood)
        ],
        "{out:?}"
    );
    let closed = &out[1];
    assert_eq!(closed.targets, vec![addr(99)]);
    assert_eq!(closed.source_count, 4);
    assert_eq!(closed.port_count, 2_000);
    assert_eq!(closed.connections, 2_000);
    assert_eq!(closed.anomalous_connections, 2_000);
    assert_eq!(closed.peak_packets_per_second, Some(9_000.0));

    // The same verdicts by the model (no rate): anomalous connections to many ports of one
    // host are port scans by their sources, as before, and no host flood.
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    for i in 0..200u64 {
        let c = datagram_to_next_port(addr(1), i, 1_000_000);
        tracker.observe(&c, &flagged(), c.final_unix_ns, &mut out);
    }
    tracker.finish(&mut out);
    let kinds: Vec<IncidentKind> = out
        .iter()
        .filter(|l| l.state == IncidentState::Open)
        .map(|l| l.kind)
        .collect();
    assert_eq!(kinds, [IncidentKind::PortScan], "{out:?}");
}

#[test]
fn a_port_scan_that_turns_out_a_host_flood_is_taken_over_by_it() {
    // A UDP port scan of a host, judged by the model alone and open (at its twentieth port)
    // before the host was flooded, then `hping3 --udp -p ++1 --flood` at the same host: the
    // host's rate flags the rest, and its flood takes the scan over.
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    let by_host = by_volume(crate::detect::VolumeScope::Host, 20_000.0);
    for i in 0..1_000u64 {
        let c = datagram_to_next_port(addr(1), i, 50_000);
        let s = if i < 99 { flagged() } else { by_host.clone() };
        tracker.observe(&c, &s, c.final_unix_ns, &mut out);
    }
    tracker.finish(&mut out);
    let lines: Vec<(IncidentState, IncidentKind, Option<&str>)> = out
        .iter()
        .map(|l| (l.state, l.kind, l.merged_into.as_deref()))
        .collect();
    let flood_id = out
        .iter()
        .find(|l| l.kind == IncidentKind::UdpFlood)
        .map(|l| l.id.as_str())
        .expect("a udp_flood");
    assert_eq!(
        lines,
        [
            (IncidentState::Open, IncidentKind::PortScan, None),
            (IncidentState::Open, IncidentKind::UdpFlood, None),
            (
                IncidentState::Closed,
                IncidentKind::PortScan,
                Some(flood_id)
            ),
            (IncidentState::Closed, IncidentKind::UdpFlood, None),
        ],
        "{out:?}"
    );
    // The flood's first line already tells the whole attack so far, the scan's 99 included.
    assert_eq!((out[1].connections, out[1].port_count), (100, 100));
    // The flood holds every connection of the attack.
    let closed = out.last().unwrap();
    assert_eq!(closed.connections, 1_000);
    assert_eq!(closed.port_count, 1_000);
    assert_eq!(closed.start_unix_ns, T0);
    assert_eq!(tracker.stats().open.values().sum::<u64>(), 0);
    assert_eq!(tracker.stats().opened[&IncidentKind::PortScan], 1);
}

/// A verdict flagged by the model that the volume rule marked undecided.
fn undecided() -> Scored {
    Scored {
        volume_pending: true,
        ..flagged()
    }
}

/// A flood of 1,000 one-datagram conversations (`datagram(i)`) observed by `tracker`: the
/// first 99 undecided by the volume rule (the host's rate is a flood's, too few verdicts to
/// tell), then flagged by the host's rate.
fn undecided_then_host_flood(
    tracker: &mut IncidentTracker,
    out: &mut Vec<IncidentLine>,
    datagram: impl Fn(u64) -> ConnectionRecord,
) {
    let by_host = by_volume(crate::detect::VolumeScope::Host, 20_000.0);
    let pending = undecided();
    for i in 0..1_000u64 {
        let c = datagram(i);
        let s = if i < 99 { &pending } else { &by_host };
        tracker.observe(&c, s, c.final_unix_ns, out);
    }
}

#[test]
fn a_port_scan_waits_while_the_volume_rule_cannot_judge_its_host() {
    // The same flood, its first 99 conversations marked undecided by the volume rule (the
    // host's rate is a flood's, too few verdicts to tell): no port scan opens, and the host's
    // flood, when the rule flags it, holds them all.
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    undecided_then_host_flood(&mut tracker, &mut out, |i| {
        datagram_to_next_port(addr(1), i, 50_000)
    });
    tracker.finish(&mut out);
    let lines: Vec<(IncidentState, IncidentKind)> = out.iter().map(|l| (l.state, l.kind)).collect();
    assert_eq!(
        lines,
        [
            (IncidentState::Open, IncidentKind::UdpFlood),
            (IncidentState::Closed, IncidentKind::UdpFlood),
        ],
        "{out:?}"
    );
    assert_eq!((out[0].connections, out[0].port_count), (100, 100));
    assert_eq!(out[1].connections, 1_000);

    // Undecided, then not a flood after all (the host answers): the scan opens at the first
    // anomalous connection the rule has decided on.
    let pending = undecided();
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    for i in 0..30u64 {
        let c = datagram_to_next_port(addr(1), i, 50_000);
        let s = if i < 25 { &pending } else { &flagged() };
        tracker.observe(&c, s, c.final_unix_ns, &mut out);
        if i < 25 {
            assert!(out.is_empty(), "opened while undecided: {out:?}");
        }
    }
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].kind, out[0].port_count),
        (IncidentKind::PortScan, 26)
    );

    // Undecided to its end (a short scan while another source kept the host busy), and no
    // flood of the host follows: the scan opens once the rule has had time to decide.
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    let mut last_ns = 0;
    for i in 0..25u64 {
        let c = datagram_to_next_port(addr(1), i, 50_000);
        tracker.observe(&c, &pending, c.final_unix_ns, &mut out);
        last_ns = c.final_unix_ns;
    }
    tracker.tick(last_ns + TAKE_OVER_NS - 1, &mut out);
    assert!(
        out.is_empty(),
        "opened before the rule could decide: {out:?}"
    );
    tracker.tick(last_ns + TAKE_OVER_NS, &mut out);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(
        (out[0].state, out[0].kind, out[0].port_count),
        (IncidentState::Open, IncidentKind::PortScan, 25)
    );
}

#[test]
fn a_scan_that_began_before_the_flood_is_not_taken_over() {
    // A UDP scan of 30 ports of the host by the model's verdicts, open; ten seconds later a
    // flood over many ports from another source: two attacks, two incidents.
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    for i in 0..30u64 {
        let c = datagram_to_next_port(addr(5), i, 1_000_000);
        tracker.observe(&c, &flagged(), c.final_unix_ns, &mut out);
    }
    let by_host = by_volume(crate::detect::VolumeScope::Host, 20_000.0);
    for i in 0..200u64 {
        let c = datagram_at(addr(1), i, T0 + 10 * S + i * 50_000);
        tracker.observe(&c, &by_host, c.final_unix_ns, &mut out);
        // The scan goes on meanwhile, at other ports: its connections stay its own.
        if i % 20 == 0 {
            let c = datagram_at(addr(5), 1_000 + i, T0 + 10 * S + i * 50_000);
            tracker.observe(&c, &flagged(), c.final_unix_ns, &mut out);
        }
    }
    tracker.finish(&mut out);
    let mut lines: Vec<(IncidentState, IncidentKind, Option<&str>, u64)> = out
        .iter()
        .map(|l| (l.state, l.kind, l.merged_into.as_deref(), l.connections))
        .collect();
    lines.sort_by_key(|l| (l.0 as u8, l.1));
    assert_eq!(
        lines,
        [
            (IncidentState::Open, IncidentKind::UdpFlood, None, 1),
            (IncidentState::Open, IncidentKind::PortScan, None, 20),
            (IncidentState::Closed, IncidentKind::UdpFlood, None, 200),
            (IncidentState::Closed, IncidentKind::PortScan, None, 40),
        ],
        "{out:?}"
    );
}

#[test]
fn a_scan_that_waited_for_the_rule_is_the_floods_however_early_it_began() {
    // The flood's source sent one odd datagram to the host half a minute before (flagged by
    // the model); then the flood, its first 99 conversations undecided: its scan candidate
    // began long before the flood, but waited for the rule's verdict, so the flood takes it.
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    let early = datagram_to_next_port(addr(1), 5_000, 0);
    tracker.observe(&early, &flagged(), early.final_unix_ns, &mut out);
    undecided_then_host_flood(&mut tracker, &mut out, |i| {
        datagram_at(addr(1), i, T0 + 30 * S + i * 50_000)
    });
    tracker.finish(&mut out);
    let kinds: Vec<(IncidentState, IncidentKind)> = out.iter().map(|l| (l.state, l.kind)).collect();
    assert_eq!(
        kinds,
        [
            (IncidentState::Open, IncidentKind::UdpFlood),
            (IncidentState::Closed, IncidentKind::UdpFlood),
        ],
        "{out:?}"
    );
    assert_eq!(out[1].connections, 1_001);
}

#[test]
fn a_scan_that_waited_long_before_a_flood_is_not_taken_over() {
    // A slow scan waited for the rule once (its host busy), opened when the rule found no
    // flood, and is still going an hour later when a flood of the host begins from another
    // source: two attacks, two incidents.
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    let pending = undecided();
    let mut last_ns = 0;
    for i in 0..25u64 {
        let c = datagram_to_next_port(addr(5), i, 50_000);
        tracker.observe(&c, &pending, c.final_unix_ns, &mut out);
        last_ns = c.final_unix_ns;
    }
    tracker.tick(last_ns + TAKE_OVER_NS, &mut out);
    assert_eq!(out.len(), 1, "the scan opened: {out:?}");
    let hour = 3_600 * S;
    let by_host = by_volume(crate::detect::VolumeScope::Host, 20_000.0);
    for i in 0..200u64 {
        // The scan keeps going (one port a minute would do; here every tenth datagram).
        if i % 10 == 0 {
            let c = datagram_at(addr(5), 100 + i, T0 + hour + i * 50_000);
            tracker.observe(&c, &flagged(), c.final_unix_ns, &mut out);
        }
        let c = datagram_at(addr(1), i, T0 + hour + i * 50_000);
        tracker.observe(&c, &by_host, c.final_unix_ns, &mut out);
    }
    tracker.finish(&mut out);
    assert!(out.iter().all(|l| l.merged_into.is_none()), "{out:?}");
    let opened: Vec<IncidentKind> = out
        .iter()
        .filter(|l| l.state == IncidentState::Open)
        .map(|l| l.kind)
        .collect();
    assert_eq!(
        opened,
        [IncidentKind::PortScan, IncidentKind::UdpFlood],
        "{out:?}"
    );
}

/// A refused password guess from `src` to SSH on `dst`, begun at `t_ns`, lasting 0.5 s.
fn guess(src: IpAddr, dst: IpAddr, t_ns: u64) -> ConnectionRecord {
    crate::detect::logins::refused_guess(src, dst, t_ns, S / 2)
}

/// Two guessers on one SSH server, the login rule's verdicts from each one's 60th session
/// (the first 59 normal), while the model flags a few of the guesses and an operator's SSH
/// sessions go on: one `brute_force` per guesser, naming it, and nothing else.
#[test]
fn password_guessing_opens_one_brute_force_per_source_and_service() {
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    let server = addr(1);
    let rated = by_volume(crate::detect::VolumeScope::Logins, 1.0);
    let normal = {
        let mut s = flagged();
        s.verdict.anomalous = false;
        s
    };
    for i in 0..400u64 {
        let t = T0 + i * S / 4;
        // The second guesser begins 25 s after the first.
        let guessers = [(addr(5), Some(i)), (addr(6), i.checked_sub(100))];
        for (src, n) in guessers.into_iter().filter_map(|(a, n)| Some((a, n?))) {
            let s = match n {
                59.. => &rated,
                // The model's odd verdict now and then.
                _ if n % 20 == 0 => &flagged(),
                _ => &normal,
            };
            tracker.observe(&guess(src, server, t), s, t + S / 2, &mut out);
        }
        // The operator's own sessions, every 5 s.
        if i % 20 == 0 {
            tracker.observe(&guess(addr(7), server, t), &normal, t + S / 2, &mut out);
        }
        tracker.tick(t + S / 2, &mut out);
    }
    tracker.finish(&mut out);
    let opens = in_state(&out, IncidentState::Open);
    assert_eq!(opens.len(), 2, "{opens:?}");
    for (open, src) in opens.iter().zip([addr(5), addr(6)]) {
        assert_eq!(open.kind, IncidentKind::BruteForce);
        assert_eq!(
            (open.sources.clone(), open.targets.clone()),
            (vec![src], vec![server])
        );
        assert_eq!(open.ports, vec![22]);
        assert_eq!(
            open.peak_packets_per_second, None,
            "sessions are no packet rate"
        );
    }
    let closed = last_closed(&out, IncidentKind::BruteForce);
    assert_eq!(closed.sources, vec![addr(6)]);
    // The guesser's sessions from its 60th on: 400 - 100 - 59.
    assert_eq!(closed.anomalous_connections, 241);
}

/// `nmap` over a network: each round of `hosts` probes one port on every host, `ports` rounds,
/// 1 ms apart, from `src` over `transport`.
fn network_scan(
    src: IpAddr,
    transport: Transport,
    hosts: u8,
    ports: u16,
    t0: u64,
) -> Vec<ConnectionRecord> {
    let mut conns = Vec::new();
    for p in 0..ports {
        for h in 0..hosts {
            let t = t0 + (u64::from(p) * u64::from(hosts) + u64::from(h)) * 1_000_000;
            let mut c = conn(src, 40_000 + p, addr(100 + h), 1 + p * 7, t);
            c.transport = transport;
            conns.push(c);
        }
    }
    conns
}

/// One source scanning 20 hosts on 30 ports is a port scan of each host and a sweep of each
/// port to the thresholds: 50 incidents before the widening, one now, listing every host and
/// port, and counting every connection after the first scan or sweep opened.
#[test]
fn a_scan_of_a_network_is_one_incident() {
    let conns = network_scan(addr(6), Transport::Tcp, 20, 30, T0);
    let out = lines_of(&conns);
    let opened = in_state(&out, IncidentState::Open);
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert!(matches!(
        opened[0].kind,
        IncidentKind::PortScan | IncidentKind::HostSweep
    ));
    let closed = in_state(&out, IncidentState::Closed);
    assert_eq!(closed.len(), 1);
    let c = closed[0];
    assert_eq!(
        (c.id.as_str(), c.kind),
        (opened[0].id.as_str(), opened[0].kind)
    );
    assert_eq!((c.target_count, c.port_count), (20, 30));
    // The first sweep opens at its 10th host (the first round); the second round's sweep
    // widens it, and from then on it takes everything: all but the other hosts' candidates of
    // the first round.
    assert!(
        c.connections >= 600 - 20 && c.connections <= 600,
        "{} connections",
        c.connections
    );
}

/// Widening is per source: a second source's scan of the same network is an incident of its
/// own; the first source's UDP scan of it, while its TCP scan's incident is open, joins that
/// (one attacker's reconnaissance, whatever the transports); and once the first source's
/// incident has closed, its next scan opens a new one.
#[test]
fn widening_keeps_sources_and_attacks_apart_but_not_a_sources_transports() {
    let (a, b) = (addr(6), addr(7));
    let mut conns = network_scan(a, Transport::Tcp, 12, 25, T0);
    conns.extend(network_scan(b, Transport::Tcp, 12, 25, T0 + S / 2));
    conns.extend(network_scan(a, Transport::Udp, 12, 25, T0 + S));
    // After the quiet time (30 s shipped): another attack.
    conns.extend(network_scan(a, Transport::Tcp, 12, 25, T0 + 120 * S));
    conns.sort_by_key(|c| c.final_unix_ns);
    let out = lines_of(&conns);
    let opened: Vec<(IpAddr, &str)> = out
        .iter()
        .filter(|l| l.state == IncidentState::Open)
        .map(|l| (l.sources[0], l.protocol))
        .collect();
    assert_eq!(opened, vec![(a, "tcp"), (b, "tcp"), (a, "tcp")], "{out:?}");
    let closed: Vec<(IpAddr, Vec<&str>, u64)> = out
        .iter()
        .filter(|l| l.state == IncidentState::Closed)
        .map(|l| (l.sources[0], l.protocols.clone(), l.anomalous_connections))
        .collect();
    let scan = 12 * 25;
    assert_eq!(
        closed,
        vec![
            (b, vec!["tcp"], scan),
            (a, vec!["tcp", "udp"], 2 * scan),
            (a, vec!["tcp"], scan)
        ],
        "{out:?}"
    );
    for l in out.iter().filter(|l| l.state == IncidentState::Closed) {
        assert_eq!((l.source_count, l.target_count, l.port_count), (1, 12, 25));
    }
}

/// `nmap -sn` over a routed network (host discovery, as root): each host is probed at once
/// with an ICMP echo request, a TCP SYN to port 443 and a TCP ACK to port 80 (and an ICMP
/// timestamp request). To the thresholds that is an ICMP sweep and two TCP sweeps of the same
/// hosts, which opened two incidents (the ICMP and the TCP sweeps) before a source's
/// reconnaissance was one over all transports: now one `host_sweep`, listing both.
#[test]
fn host_discovery_over_icmp_and_tcp_is_one_host_sweep() {
    let src = addr(6);
    let mut conns = Vec::new();
    for h in 0..40u8 {
        let t = T0 + u64::from(h) * 5_000_000;
        let mut echo = ConnectionRecord::new(Transport::Icmp, (src, 7), (addr(100 + h), 7), t);
        (echo.icmp_type, echo.icmp_code, echo.ip_proto) = (Some(8), Some(0), 1);
        (echo.orig_packets, echo.resp_packets) = (1, 1);
        echo.conn_state = ConnState::OTH;
        conns.push(echo);
        conns.push(conn(src, 50_000, addr(100 + h), 443, t + 100_000));
        conns.push(conn(src, 50_000, addr(100 + h), 80, t + 200_000));
    }
    let out = lines_of(&conns);
    let open = in_state(&out, IncidentState::Open);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].kind, IncidentKind::HostSweep);
    let closed = last_closed(&out, IncidentKind::HostSweep);
    assert_eq!(closed.protocols, vec!["tcp", "icmp"]);
    assert_eq!((closed.target_count, closed.port_count), (40, 3));
}

/// A port scan of one host, then a flood of one of its ports from the same source, then a
/// scan of a second host: the flood stays an incident of its own, the second scan joins the
/// first.
#[test]
fn a_widened_scan_leaves_its_sources_flood_alone() {
    let (src, first, second) = (addr(8), addr(1), addr(2));
    let mut conns: Vec<_> = (0..30u64)
        .map(|i| conn(src, 42_000, first, 1 + i as u16, T0 + i * 10_000_000))
        .collect();
    conns.extend(
        (0..300u64).map(|i| conn(src, 10_000 + i as u16, first, 80, T0 + S + i * 1_000_000)),
    );
    conns.extend((0..30u64).map(|i| {
        conn(
            src,
            43_000,
            second,
            1 + i as u16,
            T0 + 2 * S + i * 10_000_000,
        )
    }));
    let out = lines_of(&conns);
    let kinds: Vec<IncidentKind> = out
        .iter()
        .filter(|l| l.state == IncidentState::Open)
        .map(|l| l.kind)
        .collect();
    assert_eq!(kinds, vec![IncidentKind::PortScan, IncidentKind::Flood]);
    // Its ports: the 30 scanned, and the flooded one (the scan counts the flood's first
    // connections, until the flood opens).
    let scan = last_closed(&out, IncidentKind::PortScan);
    assert_eq!((scan.target_count, scan.port_count), (2, 31));
    let flood = last_closed(&out, IncidentKind::Flood);
    assert_eq!((flood.target_count, flood.port_count), (1, 1));
}

/// A connection judged normal at its early verdict and flagged at its final record (a stray
/// segment of an ACK or FIN flood, judged by the volume rule at its end) counts once towards
/// the open incident that takes it, not at both verdicts.
#[test]
fn a_connection_counts_once_whatever_its_early_verdict() {
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    let target = addr(1);
    for i in 0..200u64 {
        let t = T0 + i * 1_000_000;
        let rec = conn(addr(9), 10_000 + i as u16, target, 80, t);
        let mut early = rec.clone();
        early.end_reason = EndReason::Ongoing;
        let mut normal = flagged();
        normal.verdict.anomalous = false;
        tracker.observe(&early, &normal, t, &mut out);
        tracker.observe(&rec, &flagged(), t + 1_000, &mut out);
    }
    tracker.finish(&mut out);
    let closed = last_closed(&out, IncidentKind::Flood);
    assert_eq!(
        (closed.connections, closed.anomalous_connections),
        (200, 200)
    );
}

/// A refused connection from `src_port` of one of 50 spoofed sources to `dst:port` at `t_ns`.
fn flood_conn(i: u64, dst: IpAddr, port: u16, t_ns: u64) -> ConnectionRecord {
    conn(
        addr(100 + (i % 50) as u8),
        10_000 + (i % 50_000) as u16,
        dst,
        port,
        t_ns,
    )
}

/// A SYN flood of ports 80 and 443 of one host at once, and then of ever new ports of it
/// (Mirai's SYN flood picks a random port per packet), is one attack on the host: one
/// incident listing its ports. Another host's flood at the same time is its own.
#[test]
fn floods_of_several_ports_of_one_host_are_one_incident() {
    let (host, other) = (addr(1), addr(2));
    let mut conns = Vec::new();
    for i in 0..2_000u64 {
        let t = T0 + i * 500_000;
        conns.push(flood_conn(i, host, if i % 2 == 0 { 80 } else { 443 }, t));
        conns.push(flood_conn(i, other, 25, t + 1));
    }
    for i in 0..5_000u64 {
        conns.push(flood_conn(
            i,
            host,
            1_000 + (i % 20) as u16,
            T0 + S + i * 200_000,
        ));
    }
    conns.sort_by_key(|c| c.final_unix_ns);
    let out = lines_of(&conns);
    let opened = in_state(&out, IncidentState::Open);
    let mut opened = opened;
    opened.sort_by_key(|l| l.targets[0]);
    let targets: Vec<IpAddr> = opened.iter().map(|l| l.targets[0]).collect();
    assert_eq!(targets, vec![host, other], "{opened:?}");
    let closed_of = |id: &str| {
        out.iter()
            .rfind(|l| l.id == id && l.state == IncidentState::Closed)
            .expect("closed")
    };
    let h = closed_of(&opened[0].id);
    assert_eq!(h.kind, IncidentKind::Flood);
    assert_eq!((h.target_count, h.port_count), (1, 22), "{h:?}");
    assert_eq!(h.connections, 2_000 + 5_000);
    let o = closed_of(&opened[1].id);
    assert_eq!((o.port_count, o.connections), (1, 2_000));
}

/// A flood of a web server's port while its clients keep connecting: the flood's incident
/// closes `quiet` (30 s) after the flood's last connection, however long the ordinary
/// connections to the same port go on (they counted as its evidence and kept it open until
/// December 6).
#[test]
fn an_incident_closes_after_its_attack_while_ordinary_traffic_goes_on() {
    let server = addr(1);
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let (mut out, attack) = (Vec::new(), flagged());
    let mut normal = flagged();
    normal.verdict.anomalous = false;
    let flood_end = T0 + 200 * 1_000_000;
    let mut next_tick = T0;
    let mut events: Vec<(ConnectionRecord, bool)> = (0..200u64)
        .map(|i| (flood_conn(i, server, 80, T0 + i * 1_000_000), true))
        .collect();
    // A client's fetches every 100 ms for two minutes.
    events.extend((0..1_200u64).map(|i| {
        (
            conn(addr(3), 20_000 + i as u16, server, 80, T0 + i * S / 10),
            false,
        )
    }));
    events.sort_by_key(|(c, _)| c.final_unix_ns);
    let mut closed_at = None;
    for (c, anomalous) in &events {
        while next_tick <= c.final_unix_ns {
            tracker.tick(next_tick, &mut out);
            if closed_at.is_none() && out.iter().any(|l| l.state == IncidentState::Closed) {
                closed_at = Some(next_tick);
            }
            next_tick += S;
        }
        let s = if *anomalous { &attack } else { &normal };
        tracker.observe(c, s, c.final_unix_ns, &mut out);
    }
    let closed_at = closed_at.expect("the flood's incident closed while the fetches went on");
    assert!(
        closed_at >= flood_end + 30 * S && closed_at <= flood_end + 32 * S,
        "closed {} s after the flood",
        (closed_at - flood_end) as f64 / S as f64
    );
    let closed = last_closed(&out, IncidentKind::Flood);
    assert!(closed.last_unix_ns <= flood_end, "{closed:?}");
    // It counted the fetches made while it was open.
    assert!(closed.connections > 200, "{closed:?}");
}

/// Two conversation floods at once, to ports 53 and 123 of one host (the volume rule flags
/// each by its rate at its early verdict): one incident, which stays open while either lasts
/// (each pins it until its final record) and closes `quiet` after the longer one's end.
#[test]
fn conversation_floods_of_two_ports_of_a_host_are_one_incident_open_while_either_lasts() {
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    let by_volume = |pps: f64| by_volume(crate::detect::VolumeScope::Conversation, pps);
    let (dns, mut ntp) = (
        udp_stream(addr(1), 20_000, EndReason::Ongoing),
        udp_stream(addr(2), 20_000, EndReason::Ongoing),
    );
    ntp.resp_port = 123;
    tracker.observe(&dns, &by_volume(20_000.0), T0 + S, &mut out);
    tracker.observe(&ntp, &by_volume(20_000.0), T0 + S, &mut out);
    // The port 53 flood ends after 2 s, the port 123 flood after 100 s; each final record comes
    // a minute after its end (the UDP idle timeout).
    let mut dns_end = udp_stream(addr(1), 40_000, EndReason::Idle);
    (dns_end.end_unix_ns, dns_end.final_unix_ns) = (T0 + 2 * S, T0 + 62 * S);
    let mut ntp_end = udp_stream(addr(2), 2_000_000, EndReason::Idle);
    ntp_end.resp_port = 123;
    (ntp_end.end_unix_ns, ntp_end.final_unix_ns) = (T0 + 100 * S, T0 + 160 * S);
    let mut closed_at = None;
    for t in 2..200u64 {
        let now = T0 + t * S;
        if now == dns_end.final_unix_ns {
            tracker.observe(&dns_end, &by_volume(20_000.0), now, &mut out);
        }
        if now == ntp_end.final_unix_ns {
            tracker.observe(&ntp_end, &by_volume(20_000.0), now, &mut out);
        }
        tracker.tick(now, &mut out);
        if closed_at.is_none() && out.iter().any(|l| l.state == IncidentState::Closed) {
            closed_at = Some(t);
        }
    }
    let opens = in_state(&out, IncidentState::Open);
    assert_eq!(opens.len(), 1, "{out:?}");
    assert_eq!(opens[0].kind, IncidentKind::UdpFlood);
    // Pinned by the port 123 conversation until its final record (160 s), then quiet from its
    // last packet (100 s): closed at once.
    assert_eq!(closed_at, Some(160), "{out:?}");
    let closed = last_closed(&out, IncidentKind::UdpFlood);
    assert_eq!((closed.port_count, closed.source_count), (2, 2));
}

/// `nmap -D`: the real scan of 300 ports of a host and the same probes from 4 decoy
/// addresses, interleaved: one incident naming the 5 sources (5 port scans before). Another
/// address's scan of a host that begins 10 s after a scan from one source, while that one is
/// open, is another attack.
#[test]
fn a_decoy_scan_is_one_incident_and_a_later_scanner_its_own() {
    let (host, other) = (addr(1), addr(2));
    let sources: Vec<IpAddr> = (0..5).map(|i| addr(50 + i)).collect();
    let mut conns = Vec::new();
    for p in 0..300u64 {
        for (i, &src) in sources.iter().enumerate() {
            let t = T0 + (p * 5 + i as u64) * 200_000;
            conns.push(conn(src, 40_000, host, 1 + p as u16, t));
        }
    }
    for (src, start) in [(addr(60), T0), (addr(61), T0 + 10 * S)] {
        conns.extend(
            (0..100u64).map(|p| conn(src, 41_000, other, 1 + p as u16, start + p * 1_000_000)),
        );
    }
    conns.sort_by_key(|c| c.final_unix_ns);
    let out = lines_of(&conns);
    let closed = in_state(&out, IncidentState::Closed);
    assert_eq!(closed.len(), 3, "{closed:?}");
    let decoys = closed
        .iter()
        .find(|l| l.targets == vec![host])
        .expect("the decoy scan");
    assert_eq!(decoys.kind, IncidentKind::PortScan);
    assert_eq!(
        (decoys.source_count, decoys.port_count),
        (5, 300),
        "{decoys:?}"
    );
    // All but the probes three decoys made before the incident widened (19 each, the round
    // their scans would have passed in): they stay with their candidates (`widen`).
    assert_eq!(decoys.connections, 1_500 - 3 * 19, "{decoys:?}");
    let mut others: Vec<Vec<IpAddr>> = closed
        .iter()
        .filter(|l| l.targets == vec![other])
        .map(|l| l.sources.clone())
        .collect();
    others.sort();
    assert_eq!(others, vec![vec![addr(60)], vec![addr(61)]]);
}

/// A scan of a host split over three sources (each its own 100 ports, together, as a
/// distributed scan or a SYN flood of ever new ports from spoofed addresses sends) is one
/// incident, though a slow scan of the host from another address, begun 20 s before, is
/// still open: that one began too early to join, and must not keep the three apart.
#[test]
fn scans_that_begin_together_join_though_an_older_scan_of_the_host_is_open() {
    let host = addr(1);
    let slow = addr(70);
    let mut conns: Vec<ConnectionRecord> = (0..100u64)
        .map(|p| conn(slow, 40_000, host, 1 + p as u16, T0 + p * 250_000_000))
        .collect();
    let split: Vec<IpAddr> = (0..3).map(|i| addr(80 + i)).collect();
    for (i, &src) in split.iter().enumerate() {
        let first_port = 1_000 + 100 * i as u16;
        conns.extend((0..100u64).map(|p| {
            let t = T0 + 20 * S + p * 20_000_000 + i as u64 * 1_000_000;
            conn(src, 41_000, host, first_port + p as u16, t)
        }));
    }
    conns.sort_by_key(|c| c.final_unix_ns);
    let out = lines_of(&conns);
    let mut closed: Vec<Vec<IpAddr>> = in_state(&out, IncidentState::Closed)
        .iter()
        .map(|l| l.sources.clone())
        .collect();
    closed.sort();
    assert_eq!(closed, vec![vec![slow], split], "{out:?}");
}

/// Datagrams from four spoofed sources to ever new ports of one host, begun together, 1,000 a
/// second from each (a reflected flood under the volume rule's bar, or a UDP scan split over
/// sources): one port scan of the host naming the four, where each source's was its own
/// before. Then the same with the host's flood flagged by the rule after the scans opened:
/// the flood takes the joined scans over, one `udp_flood`.
#[test]
fn udp_scans_of_a_host_that_begin_together_are_one_incident() {
    let sources: Vec<IpAddr> = (0..4).map(|i| addr(60 + i)).collect();
    let datagrams = |flood_from: Option<u64>| {
        let mut all = Vec::new();
        for i in 0..400u64 {
            for (k, &src) in sources.iter().enumerate() {
                let c = datagram_at(src, i, T0 + i * 1_000_000 + k as u64 * 1_000);
                let s = match flood_from {
                    Some(from) if i >= from => by_volume(crate::detect::VolumeScope::Host, 6_000.0),
                    _ => flagged(),
                };
                all.push((c, s));
            }
        }
        all
    };
    for (flood_from, kind) in [
        (None, IncidentKind::PortScan),
        (Some(150), IncidentKind::UdpFlood),
    ] {
        let mut tracker = IncidentTracker::new(IncidentConfig::default());
        let mut out = Vec::new();
        for (c, s) in datagrams(flood_from) {
            tracker.observe(&c, &s, c.final_unix_ns, &mut out);
        }
        tracker.finish(&mut out);
        let closed: Vec<&IncidentLine> = in_state(&out, IncidentState::Closed)
            .into_iter()
            .filter(|l| l.merged_into.is_none())
            .collect();
        assert_eq!(closed.len(), 1, "{flood_from:?}: {out:?}");
        assert_eq!(closed[0].kind, kind, "{:?}", closed[0]);
        assert_eq!(closed[0].sources, sources, "{:?}", closed[0]);
        // Every datagram but those of the three sources' candidates before they joined.
        assert!(closed[0].connections > 1_500, "{:?}", closed[0]);
    }
}

/// A mail relay delivering a queue over a minute: a message to each of 40 hosts on port 25
/// (ordinary sessions, payload both ways), and among them 12 hosts that refuse or never answer
/// (flagged by the model). Failures to 12 hosts pass the sweep threshold (10), but the relay
/// was served far more often than it failed: no incident. The same failures beside 5 served
/// deliveries (a sweep of port 25 finding a few mail servers, which it then talks to) are a
/// `host_sweep`. Deliveries before the first failure count too: live, a failed attempt's
/// record comes at the attempt timeout, after the deliveries made meanwhile.
#[test]
fn a_service_client_meeting_dead_hosts_is_no_sweep() {
    let relay = addr(40);
    let ordinary = Scored {
        verdict: Verdict {
            anomalous: false,
            ..flagged().verdict
        },
        ..flagged()
    };
    for (served, expected) in [(40u8, vec![]), (5, vec![IncidentKind::HostSweep])] {
        let mut conns = Vec::new();
        for i in 0..served {
            let mut c = conn(relay, 40_000 + u16::from(i), addr(100 + i), 25, T0);
            (c.orig_bytes, c.resp_bytes) = (2_000, 300);
            (c.orig_packets, c.resp_packets) = (12, 10);
            (c.conn_state, c.end_reason) = (ConnState::SF, EndReason::Fin);
            c.start_unix_ns = T0 + u64::from(i) * 1_500_000_000;
            c.end_unix_ns = c.start_unix_ns + 200_000_000;
            c.final_unix_ns = c.end_unix_ns;
            conns.push((c, ordinary.clone()));
        }
        for i in 0..12u8 {
            let t = T0 + 2 * S + u64::from(i) * 4 * S;
            conns.push((
                conn(relay, 41_000 + u16::from(i), addr(200 + i), 25, t),
                flagged(),
            ));
        }
        conns.sort_by_key(|(c, _)| c.final_unix_ns);
        let mut tracker = IncidentTracker::new(IncidentConfig::default());
        let mut out = Vec::new();
        for (c, s) in &conns {
            tracker.observe(c, s, c.final_unix_ns, &mut out);
        }
        tracker.finish(&mut out);
        let opened: Vec<IncidentKind> = in_state(&out, IncidentState::Open)
            .iter()
            .map(|l| l.kind)
            .collect();
        assert_eq!(opened, expected, "{served} served: {out:?}");
    }
}

/// An echo conversation from `src` to host 99 whose second fragment reaches past 65,535 bytes
/// (a ping of death: one wrong fragment), ICMP identifier `id`, begun at `t_ns`, ended by the
/// end of observation 20 s later.
fn ping_of_death(src: IpAddr, id: u16, t_ns: u64) -> ConnectionRecord {
    let mut c = ConnectionRecord::new(Transport::Icmp, (src, id), (addr(99), id), t_ns);
    (c.icmp_type, c.icmp_code, c.ip_proto) = (Some(8), Some(0), 1);
    (c.orig_packets, c.wrong_fragments, c.conn_state) = (2, 1, ConnState::OTH);
    c.end_unix_ns = t_ns + S;
    (c.final_unix_ns, c.end_reason) = (t_ns + 20 * S, EndReason::Shutdown);
    c
}

/// Attacks of one conversation each, whose packets no network stack sends: ten pings of
/// death from one source, 2 s apart (their early verdicts taken before the wrong fragment
/// came, flagged by the model or not, and their final records flagged at the end of
/// observation), and a `land` packet from another. No flood, scan or sweep threshold is
/// reached. One `malformed` incident for the pings, counting all ten, and one for the land.
#[test]
fn conversations_of_malformed_packets_open_one_incident_per_attacker() {
    let pings: Vec<ConnectionRecord> = (0..10u16)
        .map(|i| ping_of_death(addr(1), 7_000 + i, T0 + u64::from(i) * 2 * S))
        .collect();
    for early_flagged in [false, true] {
        let mut tracker = IncidentTracker::new(IncidentConfig::default());
        let mut out = Vec::new();
        let early_verdict = Scored {
            verdict: Verdict {
                anomalous: early_flagged,
                ..flagged().verdict
            },
            ..flagged()
        };
        for p in &pings {
            let early = ConnectionRecord {
                end_reason: EndReason::Ongoing,
                final_unix_ns: p.start_unix_ns + S,
                wrong_fragments: 0,
                ..p.clone()
            };
            tracker.observe(&early, &early_verdict, early.final_unix_ns, &mut out);
            tracker.tick(early.final_unix_ns, &mut out);
        }
        for p in &pings {
            tracker.observe(p, &flagged(), p.final_unix_ns, &mut out);
        }
        let mut land = conn(addr(2), 80, addr(2), 80, T0 + 5 * S);
        land.land = true;
        tracker.observe(&land, &flagged(), land.final_unix_ns, &mut out);
        tracker.finish(&mut out);
        let opens = in_state(&out, IncidentState::Open);
        assert_eq!(opens.len(), 2, "early flagged {early_flagged}: {out:?}");
        assert!(opens.iter().all(|o| o.kind == IncidentKind::Malformed));
        let closed = in_state(&out, IncidentState::Closed);
        let of = |src| closed.iter().find(|l| l.sources == vec![src]).copied();
        assert_eq!(
            of(addr(1)).map(|l| l.connections),
            Some(10),
            "early flagged {early_flagged}: {closed:?}"
        );
        assert_eq!(
            of(addr(2)).map(|l| (l.connections, l.targets.clone())),
            Some((1, vec![addr(2)]))
        );
    }
    // The same pings without their wrong fragments: ordinary echoes the model flagged, under
    // every threshold.
    let mut tracker = IncidentTracker::new(IncidentConfig::default());
    let mut out = Vec::new();
    for p in &pings {
        let plain = ConnectionRecord {
            wrong_fragments: 0,
            ..p.clone()
        };
        tracker.observe(&plain, &flagged(), plain.final_unix_ns, &mut out);
    }
    tracker.finish(&mut out);
    assert!(out.is_empty(), "{out:?}");
}

/// What the tracker could not hold is counted: candidates beyond four times `max_candidates`
/// (the oldest dropped), evidence that outlived the horizon, and exchanges beyond
/// `max_candidates` sources and ports.
#[test]
fn what_the_tracker_cannot_hold_is_counted() {
    let config = IncidentConfig {
        max_candidates: 2,
        ..IncidentConfig::default()
    };
    let mut tracker = IncidentTracker::new(config);
    let mut out = Vec::new();
    // Twenty sources, each refused once at its own host and port: each connection feeds a
    // few candidates, far more than the eight kept.
    for i in 0..20u8 {
        let c = conn(addr(i), 40_000, addr(100 + i), 1_000 + u16::from(i), T0);
        tracker.observe(&c, &flagged(), T0, &mut out);
    }
    let dropped = tracker.stats().candidates_dropped;
    assert!(dropped >= 12, "{:?}", tracker.stats());
    assert_eq!(tracker.stats().candidates_restarted, 0);
    // Source 19's evidence, fed again after the horizon (and within the window of its last
    // feed, every 50 s), starts again.
    for k in 1..=7u64 {
        let t = T0 + k * 50 * S;
        let c = conn(addr(19), 40_000, addr(119), 1_019, t);
        tracker.observe(&c, &flagged(), t, &mut out);
    }
    assert!(
        tracker.stats().candidates_restarted >= 1,
        "{:?}",
        tracker.stats()
    );
    // Five clients' ordinary exchanges with port 25: two are counted, three not.
    let ordinary = Scored {
        verdict: Verdict {
            anomalous: false,
            ..flagged().verdict
        },
        ..flagged()
    };
    let t = T0 + 400 * S;
    for i in 0..5u8 {
        let mut c = conn(addr(50 + i), 40_000, addr(200), 25, t);
        (c.orig_bytes, c.resp_bytes) = (2_000, 300);
        (c.orig_packets, c.resp_packets) = (12, 10);
        (c.conn_state, c.end_reason) = (ConnState::SF, EndReason::Fin);
        tracker.observe(&c, &ordinary, t, &mut out);
    }
    assert_eq!(
        tracker.stats().exchanges_untracked,
        3,
        "{:?}",
        tracker.stats()
    );
    // Early verdicts of nine conversations still open, in generations of four: the ninth
    // forgets the first four, counted.
    assert_eq!(tracker.stats().early_verdicts_forgotten, 0);
    for i in 0..9u8 {
        let mut c = conn(addr(150 + i), 40_000, addr(200), 9_999, t);
        c.end_reason = EndReason::Ongoing;
        tracker.observe(&c, &flagged(), t, &mut out);
    }
    assert_eq!(
        tracker.stats().early_verdicts_forgotten,
        4,
        "{:?}",
        tracker.stats()
    );
}

/// A full map of counted early verdicts forgets its older generation only: the final records
/// of the connections counted since still add nothing, those of the forgotten ones count again.
#[test]
fn a_full_map_of_early_verdicts_forgets_the_oldest_only() {
    let config = IncidentConfig {
        max_candidates: 2,
        ..IncidentConfig::default()
    };
    // Conversation `i` from its own source (no candidate grows): its early verdict flagged by
    // the model, then its final record at a flood's rate, which would open a `udp_flood` by
    // itself unless its early verdict is remembered as counted.
    let early = |i: u64| datagram_at(addr(10 + i as u8), i, T0 + i * 1_000_000);
    let fin = |i: u64| {
        let mut c = early(i);
        c.end_reason = EndReason::Idle;
        c.final_unix_ns += 60 * S;
        c
    };
    let floods_at_end = |i: u64| {
        let mut tracker = IncidentTracker::new(config.clone());
        let mut out = Vec::new();
        for k in 0..9 {
            let c = early(k);
            tracker.observe(&c, &flagged(), c.final_unix_ns, &mut out);
        }
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(tracker.stats().early_verdicts_forgotten, 4);
        let c = fin(i);
        let volume = by_volume(crate::detect::VolumeScope::Conversation, 20_000.0);
        tracker.observe(&c, &volume, c.final_unix_ns, &mut out);
        tracker.finish(&mut out);
        !in_state(&out, IncidentState::Open).is_empty()
    };
    // Generations of four: 0-3 forgotten at the ninth, 4-7 the older one kept, 8 the newest.
    for i in 0..4 {
        assert!(
            floods_at_end(i),
            "conversation {i} was forgotten: counts again"
        );
    }
    for i in 4..9 {
        assert!(
            !floods_at_end(i),
            "conversation {i} is remembered: adds nothing"
        );
    }
}

/// A client of 30 services of one host (an application calling its microservices, 20 calls a
/// second for 25 s, each a request and an answer), five of which are down and refuse it: the
/// model flags the refusals and, their windows holding them, about half of the served calls
/// too, on every port (measured December 7: 282 of 506 flagged, a `port_scan` naming 30 ports,
/// then an `anomalous_source`). Its probes (connections that exchanged nothing) are on five
/// ports, no scan's twenty, and its flagged calls are to services that serve it ordinarily:
/// no incident. The same refusals spread over 25 ports are a `port_scan`, and the same flagged
/// calls from a source no service served ordinarily an `anomalous_source`.
#[test]
fn a_client_of_many_services_some_down_is_no_port_scan_nor_anomalous_source() {
    let (client, host) = (addr(50), addr(60));
    let ordinary = Scored {
        verdict: Verdict {
            anomalous: false,
            ..flagged().verdict
        },
        ..flagged()
    };
    let call = |i: u64, port: u16| {
        let t = T0 + i * 50_000_000;
        let mut c = conn(client, 20_000 + (i % 40_000) as u16, host, port, t);
        (c.orig_bytes, c.resp_bytes) = (41, 520);
        (c.orig_packets, c.resp_packets) = (5, 5);
        (c.conn_state, c.end_reason) = (ConnState::SF, EndReason::Fin);
        (c.end_unix_ns, c.final_unix_ns) = (t + 2_000_000, t + 2_000_000);
        c
    };
    // `down` ports refuse; `served`: every other round of calls judged ordinary.
    let run = |down: &dyn Fn(u16) -> bool, served: bool| {
        let mut tracker = IncidentTracker::new(IncidentConfig::default());
        let mut out = Vec::new();
        for i in 0..500u64 {
            let port = 8_001 + (i * 7 % 30) as u16;
            let t = T0 + i * 50_000_000;
            if down(port) {
                let c = conn(client, 20_000 + i as u16, host, port, t);
                tracker.observe(&c, &flagged(), c.final_unix_ns, &mut out);
            } else {
                let c = call(i, port);
                let s = if served && (i / 30) % 2 == 0 {
                    &ordinary
                } else {
                    &flagged()
                };
                tracker.observe(&c, s, c.final_unix_ns, &mut out);
            }
            if i % 20 == 0 {
                tracker.tick(t, &mut out);
            }
        }
        tracker.finish(&mut out);
        in_state(&out, IncidentState::Open)
            .iter()
            .map(|l| l.kind)
            .collect::<Vec<_>>()
    };
    assert_eq!(run(&|p| p > 8_025, true), vec![], "five ports down");
    assert_eq!(
        run(&|p| p > 8_005, true),
        vec![IncidentKind::PortScan],
        "25 ports refusing: probes of 25 ports"
    );
    assert_eq!(
        run(&|p| p > 8_025, false),
        vec![IncidentKind::AnomalousSource],
        "flagged calls no service served ordinarily"
    );
}
