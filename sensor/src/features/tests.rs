//! Hand-computed windows, mappings, and the incremental engine against a naive rescan.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rand::{Rng, SeedableRng, rngs::StdRng};
use sensor_common::conn_state::ConnState;

use super::*;
use crate::{
    flows::{EndReason, Transport},
    kdd::{FLAGS, SERVICES, vocab_index},
};

const SEC_NS: u64 = 1_000_000_000;
/// An arbitrary epoch far from 0, so that `t - 2 s` never underflows.
const T0: u64 = 1_700_000_000 * SEC_NS;

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 18, 0, last))
}

fn tcp(end_ns: u64, dst: IpAddr, dport: u16, sport: u16, st: ConnState) -> ConnectionRecord {
    ConnectionRecord {
        orig_packets: 1,
        resp_packets: 1,
        conn_state: st,
        end_reason: EndReason::Fin,
        ..ConnectionRecord::new(Transport::Tcp, (v4(200), sport), (dst, dport), end_ns)
    }
}

/// The window definitions as written, without the cold-window scaling (tested on its own).
fn raw() -> FeatureConfig {
    FeatureConfig {
        fill_cold_host_window: false,
        ..FeatureConfig::default()
    }
}

fn engine() -> FeatureEngine {
    FeatureEngine::new(raw()).unwrap()
}

fn col(f: &KddFeatures, name: &str) -> f64 {
    f.0[vocab_index(&crate::kdd::FEATURE_NAMES, name).unwrap()]
}

fn svc(name: &str) -> f64 {
    vocab_index(&SERVICES, name).unwrap() as f64
}

fn flag(name: &str) -> f64 {
    vocab_index(&FLAGS, name).unwrap() as f64
}

#[test]
fn two_second_boundary_is_half_open() {
    // Exactly 2 s before: out.
    let mut e = engine();
    e.push(&tcp(T0, v4(1), 80, 1000, ConnState::SF));
    let f = e.push(&tcp(T0 + 2 * SEC_NS, v4(1), 80, 1001, ConnState::SF));
    assert_eq!(col(&f, "count"), 1.0);
    assert_eq!(col(&f, "srv_count"), 1.0);
    // The host window has no time limit: both are there.
    assert_eq!(col(&f, "dst_host_count"), 2.0);

    // 1 ns less than 2 s before: in.
    let mut e = engine();
    e.push(&tcp(T0, v4(1), 80, 1000, ConnState::SF));
    let f = e.push(&tcp(T0 + 2 * SEC_NS - 1, v4(1), 80, 1001, ConnState::SF));
    assert_eq!(col(&f, "count"), 2.0);
    assert_eq!(col(&f, "srv_count"), 2.0);
}

#[test]
fn the_current_connection_is_counted() {
    let f = engine().push(&tcp(T0, v4(1), 80, 1000, ConnState::SF));
    assert_eq!(col(&f, "count"), 1.0);
    assert_eq!(col(&f, "same_srv_rate"), 1.0);
    assert_eq!(col(&f, "dst_host_count"), 1.0);
    assert_eq!(col(&f, "dst_host_same_srv_rate"), 1.0);
    assert_eq!(col(&f, "dst_host_same_src_port_rate"), 1.0);
    assert_eq!(col(&f, "srv_diff_host_rate"), 0.0);
}

/// The "different" rates count distinct services (hosts), as the training data does: 0 when
/// the group holds one, else the distinct ones over the group (`distinct_rate`).
#[test]
fn different_services_and_hosts_are_counted_as_distinct_values() {
    let ms = 1_000_000;
    // Host 1: four connections to http, then one to ftp. Five connections, two distinct
    // services: 2/5, where the share that differs would be 1/5.
    let mut e = engine();
    for i in 0..4 {
        e.push(&tcp(T0 + i * ms, v4(1), 80, 1000 + i as u16, ConnState::SF));
    }
    let f = e.push(&tcp(T0 + 5 * ms, v4(1), 21, 2000, ConnState::SF));
    assert_eq!(col(&f, "count"), 5.0);
    assert_eq!(col(&f, "same_srv_rate"), 0.2);
    assert_eq!(col(&f, "diff_srv_rate"), 0.4);
    assert_eq!(col(&f, "dst_host_same_srv_rate"), 0.2);
    assert_eq!(col(&f, "dst_host_diff_srv_rate"), 0.4);
    // One more http connection: still two services, now among six.
    let f = e.push(&tcp(T0 + 6 * ms, v4(1), 80, 2001, ConnState::SF));
    assert_eq!(col(&f, "diff_srv_rate"), 0.33);
    // A host with one service: 0, not 1/n.
    let mut e = engine();
    for i in 0..3 {
        e.push(&tcp(T0 + i * ms, v4(2), 80, 1000 + i as u16, ConnState::SF));
    }
    let f = e.push(&tcp(T0 + 3 * ms, v4(2), 80, 1003, ConnState::SF));
    assert_eq!(col(&f, "diff_srv_rate"), 0.0);
    assert_eq!(col(&f, "dst_host_diff_srv_rate"), 0.0);
    // The service's hosts: three connections to http on host 3, one on host 4: two distinct
    // hosts among four (the data prints 0.50 for srv_count 4 with two hosts, never 0.25).
    let mut e = engine();
    for i in 0..3 {
        e.push(&tcp(T0 + i * ms, v4(3), 80, 1000 + i as u16, ConnState::SF));
    }
    let f = e.push(&tcp(T0 + 3 * ms, v4(4), 80, 1003, ConnState::SF));
    assert_eq!(col(&f, "srv_count"), 4.0);
    assert_eq!(col(&f, "srv_diff_host_rate"), 0.5);
    assert_eq!(col(&f, "dst_host_srv_diff_host_rate"), 0.5);
    // 254 connections to one service and one to another: 2/255 rounds to 0.01 (the data's
    // 2,069 normal rows with dst_host_count 255, dst_host_srv_count 254 all print 0.01).
    let mut e = engine();
    for i in 0..254u64 {
        e.push(&tcp(
            T0 + i * SEC_NS,
            v4(5),
            53,
            1000 + i as u16,
            ConnState::SF,
        ));
    }
    let f = e.push(&tcp(T0 + 300 * SEC_NS, v4(5), 25, 3000, ConnState::SF));
    assert_eq!(col(&f, "dst_host_count"), 255.0);
    assert_eq!(col(&f, "dst_host_diff_srv_rate"), 0.01);
}

/// Each unnamed port (`private` below 1024, `other` above) is a service of its own in the
/// windows, as in the training data (`service::window_key`); named services count by name.
#[test]
fn unnamed_ports_are_services_of_their_own() {
    let ms = 1_000_000;
    // A scan of three unnamed ports: srv_count 1 each (not 1, 2, 3), every service distinct.
    let mut e = engine();
    e.push(&tcp(T0, v4(1), 1500, 1000, ConnState::REJ));
    e.push(&tcp(T0 + ms, v4(1), 1501, 1000, ConnState::REJ));
    let f = e.push(&tcp(T0 + 2 * ms, v4(1), 1502, 1000, ConnState::REJ));
    assert_eq!(col(&f, "service"), svc("other"));
    assert_eq!(col(&f, "count"), 3.0);
    assert_eq!(col(&f, "srv_count"), 1.0);
    assert_eq!(col(&f, "same_srv_rate"), 0.33);
    assert_eq!(col(&f, "diff_srv_rate"), 1.0);
    assert_eq!(col(&f, "srv_rerror_rate"), 1.0);
    assert_eq!(col(&f, "dst_host_srv_count"), 1.0);
    assert_eq!(col(&f, "dst_host_diff_srv_rate"), 1.0);
    // Two hosts' connections to one unnamed port are one service; to another port, not.
    let mut e = engine();
    e.push(&tcp(T0, v4(2), 8443, 1000, ConnState::SF));
    e.push(&tcp(T0 + ms, v4(3), 9000, 1000, ConnState::SF));
    let f = e.push(&tcp(T0 + 2 * ms, v4(3), 8443, 1001, ConnState::SF));
    assert_eq!(col(&f, "srv_count"), 2.0);
    assert_eq!(col(&f, "srv_diff_host_rate"), 1.0);
    assert_eq!(col(&f, "same_srv_rate"), 0.5);
    // The same port over UDP is another service; private ports likewise.
    let mut e = engine();
    e.push(&tcp(T0, v4(4), 900, 1000, ConnState::S0));
    let mut udp = tcp(T0 + ms, v4(4), 900, 1001, ConnState::S0);
    udp.transport = Transport::Udp;
    e.push(&udp);
    let f = e.push(&tcp(T0 + 2 * ms, v4(4), 900, 1002, ConnState::S0));
    assert_eq!(col(&f, "service"), svc("private"));
    assert_eq!(col(&f, "srv_count"), 2.0);
    // Named services count by name whatever the port: X11 on displays 0 and 1.
    let mut e = engine();
    e.push(&tcp(T0, v4(5), 6000, 1000, ConnState::SF));
    let f = e.push(&tcp(T0 + ms, v4(5), 6001, 1001, ConnState::SF));
    assert_eq!(col(&f, "service"), svc("X11"));
    assert_eq!(col(&f, "srv_count"), 2.0);
    assert_eq!(col(&f, "diff_srv_rate"), 0.0);
}

#[test]
fn counts_saturate_at_511_and_255() {
    let mut e = engine();
    let mut last = None;
    for i in 0..600u64 {
        last = Some(e.push(&tcp(T0 + i * 1000, v4(1), 80, 1000, ConnState::S0)));
    }
    let f = last.unwrap();
    assert_eq!(col(&f, "count"), 511.0);
    assert_eq!(col(&f, "srv_count"), 511.0);
    assert_eq!(col(&f, "serror_rate"), 1.0);
    assert_eq!(col(&f, "dst_host_count"), 255.0);
    assert_eq!(col(&f, "dst_host_srv_count"), 255.0);

    // A host window configured larger than 255 still prints at most 255.
    let mut e = FeatureEngine::new(FeatureConfig {
        host_window_connections: 1000,
        ..raw()
    })
    .unwrap();
    let mut last = None;
    for i in 0..400u64 {
        last = Some(e.push(&tcp(T0 + i * 1000, v4(1), 80, 1000, ConnState::SF)));
    }
    let f = last.unwrap();
    assert_eq!(col(&f, "dst_host_count"), 255.0);
    assert_eq!(col(&f, "dst_host_srv_count"), 255.0);
    assert_eq!(col(&f, "count"), 400.0);

    // Just below saturation the true count shows.
    let mut e = engine();
    let mut last = None;
    for i in 0..254u64 {
        last = Some(e.push(&tcp(T0 + i, v4(1), 80, 1000, ConnState::SF)));
    }
    assert_eq!(col(&last.unwrap(), "dst_host_count"), 254.0);
}

/// The worked example of every rate. Connections (H1 = .1, H2 = .2), all to the current
/// destination H1 unless said:
///
/// | conn | end | host | service | flag | src port |
/// |---|---|---|---|---|---|
/// | c0 | -3 s | H1 | telnet | S0 | 1000 |
/// | c1 | 0 | H1 | http | S0 | 1000 |
/// | c2 | +0.1 s | H1 | http | REJ | 1000 |
/// | c3 | +0.2 s | H2 | http | S0 | 2000 |
/// | c4 | +0.3 s | H1 | ftp | SF | 3000 |
/// | c5 (current) | +0.4 s | H1 | http | SF | 1000 |
///
/// 2 s window (c1-c5): count = 4 (c1 c2 c4 c5), srv_count = 4 (c1 c2 c3 c5);
/// serror 1/4, srv_serror 2/4, rerror 1/4, srv_rerror 1/4, same_srv 3/4, diff_srv 2/4 (two
/// distinct services, http and ftp), srv_diff_host 2/4 (two distinct hosts, H1 and H2).
/// Host window (c0-c5): dst_host_count = 5, dst_host_srv_count = 4; same_srv 3/5 = .6,
/// diff_srv 3/5 = .6 (telnet, http, ftp), same_src_port 4/5 = .8, srv_diff_host 2/4,
/// serror 2/5 = .4, srv_serror 2/4, rerror 1/5, srv_rerror 1/4.
#[test]
fn every_rate_on_a_hand_computed_window() {
    let ms = 1_000_000;
    let mut e = engine();
    e.push(&tcp(T0 - 3 * SEC_NS, v4(1), 23, 1000, ConnState::S0));
    e.push(&tcp(T0, v4(1), 80, 1000, ConnState::S0));
    e.push(&tcp(T0 + 100 * ms, v4(1), 80, 1000, ConnState::REJ));
    e.push(&tcp(T0 + 200 * ms, v4(2), 80, 2000, ConnState::S0));
    e.push(&tcp(T0 + 300 * ms, v4(1), 21, 3000, ConnState::SF));
    let f = e.push(&tcp(T0 + 400 * ms, v4(1), 80, 1000, ConnState::SF));
    let expect = [
        ("count", 4.0),
        ("srv_count", 4.0),
        ("serror_rate", 0.25),
        ("srv_serror_rate", 0.5),
        ("rerror_rate", 0.25),
        ("srv_rerror_rate", 0.25),
        ("same_srv_rate", 0.75),
        ("diff_srv_rate", 0.5),
        ("srv_diff_host_rate", 0.5),
        ("dst_host_count", 5.0),
        ("dst_host_srv_count", 4.0),
        ("dst_host_same_srv_rate", 0.6),
        ("dst_host_diff_srv_rate", 0.6),
        ("dst_host_same_src_port_rate", 0.8),
        ("dst_host_srv_diff_host_rate", 0.5),
        ("dst_host_serror_rate", 0.4),
        ("dst_host_srv_serror_rate", 0.5),
        ("dst_host_rerror_rate", 0.2),
        ("dst_host_srv_rerror_rate", 0.25),
    ];
    for (name, v) in expect {
        assert_eq!(col(&f, name), v, "{name}");
    }
    assert_eq!(col(&f, "service"), svc("http"));
    assert_eq!(col(&f, "flag"), flag("SF"));
}

#[test]
fn s1_s2_s3_are_syn_errors_and_rsto_is_not() {
    for (st, serror) in [
        (ConnState::S1, 1.0),
        (ConnState::S2, 1.0),
        (ConnState::S3, 1.0),
        (ConnState::S0, 1.0),
        (ConnState::RSTO, 0.0),
        (ConnState::RSTOS0, 0.0),
        (ConnState::SH, 0.0),
        (ConnState::REJ, 0.0),
    ] {
        let f = engine().push(&tcp(T0, v4(1), 80, 1000, st));
        assert_eq!(col(&f, "serror_rate"), serror, "{st:?}");
        assert_eq!(col(&f, "dst_host_srv_serror_rate"), serror, "{st:?}");
        let rej = if st == ConnState::REJ { 1.0 } else { 0.0 };
        assert_eq!(col(&f, "rerror_rate"), rej, "{st:?}");
    }
}

#[test]
fn rates_round_to_two_decimals_unless_disabled() {
    // 1 of 3 connections to the host is a SYN error: 0.33 rounded, 1/3 raw.
    let run = |round_rates| {
        let mut e = FeatureEngine::new(FeatureConfig {
            round_rates,
            ..raw()
        })
        .unwrap();
        e.push(&tcp(T0, v4(1), 80, 1000, ConnState::S0));
        e.push(&tcp(T0 + 1, v4(1), 80, 1000, ConnState::SF));
        col(
            &e.push(&tcp(T0 + 2, v4(1), 80, 1000, ConnState::SF)),
            "serror_rate",
        )
    };
    assert_eq!(run(true), 0.33);
    assert_eq!(run(false), 1.0 / 3.0);
}

#[test]
fn all_flags_map_and_rstrh_shr_udp_icmp_are_documented_choices() {
    for name in FLAGS {
        let st = ConnState::from_name(name).unwrap();
        assert_eq!(
            f64::from(basic::flag_index(Transport::Tcp, st)),
            flag(name),
            "{name}"
        );
    }
    assert_eq!(
        f64::from(basic::flag_index(Transport::Tcp, ConnState::RSTRH)),
        flag("RSTR")
    );
    assert_eq!(
        f64::from(basic::flag_index(Transport::Tcp, ConnState::SHR)),
        flag("OTH")
    );
    for st in ConnState::ALL {
        assert_eq!(f64::from(basic::flag_index(Transport::Udp, st)), flag("SF"));
        assert_eq!(
            f64::from(basic::flag_index(Transport::Icmp, st)),
            flag("SF")
        );
    }
}

fn with(transport: Transport, port: u16) -> ConnectionRecord {
    ConnectionRecord {
        transport,
        ..tcp(T0, v4(1), port, 40000, ConnState::SF)
    }
}

fn icmp(ip_version: u8, t: u8, c: u8) -> ConnectionRecord {
    ConnectionRecord {
        transport: Transport::Icmp,
        ip_version,
        resp_port: 0,
        icmp_type: Some(t),
        icmp_code: Some(c),
        ..tcp(T0, v4(1), 0, 0, ConnState::SF)
    }
}

#[test]
fn service_mapping_by_port_private_other_and_icmp() {
    let s = |rec: &ConnectionRecord| f64::from(service::service_index(&rec.start(), 1024));
    let cases = [
        (Transport::Tcp, 80, "http"),
        (Transport::Tcp, 25, "smtp"),
        (Transport::Tcp, 21, "ftp"),
        (Transport::Tcp, 20, "ftp_data"),
        (Transport::Tcp, 23, "telnet"),
        (Transport::Tcp, 53, "domain"),
        (Transport::Udp, 53, "domain_u"),
        (Transport::Udp, 123, "ntp_u"),
        (Transport::Udp, 69, "tftp_u"),
        (Transport::Tcp, 443, "http_443"),
        (Transport::Tcp, 8001, "http_8001"),
        (Transport::Tcp, 2784, "http_2784"),
        (Transport::Tcp, 79, "finger"),
        (Transport::Tcp, 113, "auth"),
        (Transport::Tcp, 6000, "X11"),
        (Transport::Tcp, 6063, "X11"),
        (Transport::Tcp, 6064, "other"),
        (Transport::Tcp, 1, "private"),
        (Transport::Tcp, 1023, "private"),
        (Transport::Tcp, 1024, "other"),
        (Transport::Tcp, 50000, "other"),
        // UDP has only three named services in NSL-KDD; TCP names do not apply.
        (Transport::Udp, 80, "private"),
        (Transport::Udp, 137, "private"),
        (Transport::Udp, 40000, "other"),
    ];
    for (t, port, name) in cases {
        assert_eq!(s(&with(t, port)), svc(name), "{t:?} {port}");
    }
    let icmp_cases = [
        (4, 8, 0, "eco_i"),
        (4, 0, 0, "ecr_i"),
        (4, 3, 3, "urp_i"),
        (4, 3, 1, "urh_i"),
        (4, 5, 1, "red_i"),
        (4, 13, 0, "tim_i"),
        (4, 14, 0, "tim_i"),
        (4, 11, 0, "other"),
        (6, 128, 0, "eco_i"),
        (6, 129, 0, "ecr_i"),
        (6, 1, 4, "urp_i"),
        (6, 1, 3, "urh_i"),
        (6, 137, 0, "red_i"),
        (6, 135, 0, "other"),
    ];
    for (v, t, c, name) in icmp_cases {
        assert_eq!(s(&icmp(v, t, c)), svc(name), "v{v} {t}/{c}");
    }
    // The threshold is configurable.
    assert_eq!(
        f64::from(service::service_index(
            &with(Transport::Tcp, 2000).start(),
            49152
        )),
        svc("private")
    );
}

#[test]
fn port_tables_cover_the_vocabulary() {
    let mut named: Vec<&str> = service::TCP_PORTS
        .iter()
        .chain(service::UDP_PORTS)
        .map(|&(_, n)| n)
        .collect();
    named.extend([
        "private", "other", "eco_i", "ecr_i", "urp_i", "urh_i", "red_i", "tim_i",
    ]);
    named.sort();
    named.dedup();
    for n in &named {
        assert!(SERVICES.contains(n), "{n}");
    }
    let missing: Vec<&str> = SERVICES
        .iter()
        .copied()
        .filter(|s| !named.contains(s))
        .collect();
    // Documented in service.rs: no well-known port.
    assert_eq!(missing, ["harvest", "pm_dump"]);
}

#[test]
fn basic_features_duration_floor_bytes_land() {
    let mut r = tcp(T0, v4(1), 80, 1000, ConnState::SF);
    r.start_unix_ns = T0 - 1_999_999_999;
    r.orig_bytes = 123;
    r.resp_bytes = 4567;
    r.land = true;
    r.wrong_fragments = 2;
    r.urgent_packets = 3;
    let f = engine().push(&r);
    assert_eq!(col(&f, "duration"), 1.0);
    assert_eq!(col(&f, "protocol_type"), 0.0);
    assert_eq!(col(&f, "src_bytes"), 123.0);
    assert_eq!(col(&f, "dst_bytes"), 4567.0);
    assert_eq!(col(&f, "land"), 1.0);
    assert_eq!(col(&f, "wrong_fragment"), 2.0);
    assert_eq!(col(&f, "urgent"), 3.0);
    for i in 9..22 {
        assert_eq!(f.0[i], 0.0, "content feature {i}");
    }
    r.start_unix_ns = T0 - 999_999_999;
    assert_eq!(col(&engine().push(&r), "duration"), 0.0);
}

/// An ICMP conversation reads as one exchange on the data's scale: duration 0, each side's
/// mean message with its 8-byte header.
#[test]
fn icmp_is_one_exchange_of_whole_messages() {
    let mut r = icmp(4, 8, 0);
    r.start_unix_ns = T0 - 3_000_000_000;
    // Four 56-byte echoes answered by four replies (Unix `ping`): 64-byte messages.
    (r.orig_packets, r.orig_bytes, r.resp_packets, r.resp_bytes) = (4, 224, 4, 224);
    let f = engine().push(&r);
    assert_eq!(col(&f, "duration"), 0.0);
    assert_eq!(col(&f, "src_bytes"), 64.0);
    assert_eq!(col(&f, "dst_bytes"), 64.0);
    // nmap's empty echo to a host that does not answer: 8 bytes, as `ipsweep` in the data.
    (r.orig_packets, r.orig_bytes, r.resp_packets, r.resp_bytes) = (1, 0, 0, 0);
    let f = engine().push(&r);
    assert_eq!((col(&f, "src_bytes"), col(&f, "dst_bytes")), (8.0, 0.0));
    // A side that sent nothing has 0 bytes, not a header.
    (r.orig_packets, r.resp_packets, r.resp_bytes) = (0, 1, 28);
    let f = engine().push(&r);
    assert_eq!((col(&f, "src_bytes"), col(&f, "dst_bytes")), (0.0, 36.0));
}
#[test]
fn config_is_validated() {
    let bad = FeatureConfig {
        host_window_connections: 0,
        ..FeatureConfig::default()
    };
    assert_eq!(
        FeatureEngine::new(bad).unwrap_err(),
        FeatureConfigError::EmptyWindow {
            field: "host_window_connections"
        }
    );
    let bad = FeatureConfig {
        time_window_ns: 0,
        ..FeatureConfig::default()
    };
    assert_eq!(
        FeatureEngine::new(bad).unwrap_err(),
        FeatureConfigError::EmptyTimeWindow
    );
}

#[test]
fn a_late_connection_is_counted_and_nothing_leaks() {
    let mut e = engine();
    e.push(&tcp(T0 + SEC_NS, v4(1), 80, 1000, ConnState::SF));
    // Arrives after, ended 0.5 s before: both are in each other's window.
    let f = e.push(&tcp(T0 + SEC_NS / 2, v4(1), 80, 1000, ConnState::SF));
    assert_eq!(col(&f, "count"), 2.0);
    // 10 s later everything before has expired.
    let f = e.push(&tcp(T0 + 10 * SEC_NS, v4(1), 80, 1000, ConnState::SF));
    assert_eq!(col(&f, "count"), 1.0);
    assert_eq!(e.stats().time_window_connections, 1);
    assert_eq!(e.stats().time_window_hosts, 1);
}

#[test]
fn a_cold_host_window_is_filled_with_the_training_data_normal_traffic() {
    let mut e = FeatureEngine::new(FeatureConfig::default()).unwrap();
    let p = window::COLD_PRIOR;
    // Alone: 254 unseen slots at the prior, 1 seen.
    let f = e.push(&tcp(T0, v4(1), 80, 1000, ConnState::SF));
    assert_eq!(col(&f, "dst_host_count"), (1.0 + 254.0 * p.host).round());
    assert_eq!(
        col(&f, "dst_host_srv_count"),
        (1.0 + 254.0 * p.service).round()
    );
    let same_port = (1.0 + 254.0 * p.host_src_port) / (1.0 + 254.0 * p.host);
    assert_eq!(
        col(&f, "dst_host_same_src_port_rate"),
        (same_port * 100.0).round() / 100.0
    );
    // Once full, the counts are the window's own.
    for i in 0..300 {
        e.push(&tcp(T0 + 10 + i, v4(3), 80, 1000, ConnState::SF));
    }
    let f = e.push(&tcp(T0 + 400, v4(2), 25, 1003, ConnState::SF));
    assert_eq!(col(&f, "dst_host_count"), 1.0);
    assert_eq!(col(&f, "dst_host_srv_count"), 1.0);
}

#[test]
fn a_lone_cold_window_is_the_first_connection_a_sensor_sees() {
    // What training scores validation rows with (`ColdWindow::lone`) is what the engine has
    // for its first connection, whatever its state: the same window, the same contexts.
    for state in [
        ConnState::SF,
        ConnState::REJ,
        ConnState::S0,
        ConnState::RSTO,
    ] {
        let mut e = FeatureEngine::new(FeatureConfig::default()).unwrap();
        let f = e.push(&tcp(T0, v4(1), 110, 1000, state));
        let seen = e
            .last_cold()
            .expect("the first connection's window is cold");
        let cfg = FeatureConfig::default();
        let lone = ColdWindow::lone(
            f.0[crate::kdd::FLAG] as u8,
            cfg.host_window_connections,
            cfg.round_rates,
        );
        assert_eq!(lone, seen, "{state:?}");
        assert_eq!(seen.unseen_share(), 1.0);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        lone.contexts(&f, &mut a);
        seen.contexts(&f, &mut b);
        assert_eq!(a, b);
    }
    // The share not seen falls as the window fills, to none once it is full.
    let mut e = FeatureEngine::new(FeatureConfig::default()).unwrap();
    let mut shares = Vec::new();
    for i in 0..300 {
        e.push(&tcp(T0 + i, v4(3), 80, 1000, ConnState::SF));
        shares.push(e.last_cold().map_or(0.0, |c| c.unseen_share()));
    }
    assert_eq!(shares[0], 1.0);
    assert!(
        (shares[127] - 127.0 / 254.0).abs() < 1e-12,
        "{}",
        shares[127]
    );
    assert!(shares.windows(2).all(|w| w[1] <= w[0]));
    assert_eq!(shares[254], 0.0);
    assert_eq!(shares[299], 0.0);
}

#[test]
fn a_syn_in_flight_during_a_handshake_is_not_a_syn_error_of_it() {
    let server = v4(1);
    // Six parallel connections to one server, as a browser opens them: SYNs 10 us apart,
    // answered 1 ms later in the same order, all established.
    let parallel = |answer_order: [u64; 6]| -> Vec<ConnectionRecord> {
        (0..6u64)
            .map(|i| ConnectionRecord {
                start_unix_ns: T0 + i * 10_000,
                answer_unix_ns: Some(T0 + 1_000_000 + answer_order[i as usize] * 10_000),
                ..tcp(
                    T0 + 50_000_000 + i,
                    server,
                    80,
                    40000 + i as u16,
                    ConnState::SF,
                )
            })
            .collect()
    };
    let serror_by_port = |recs: &[ConnectionRecord]| {
        let mut e = FeatureEngine::new(raw()).unwrap();
        let mut out = std::collections::BTreeMap::new();
        for ev in events_from_records(recs) {
            if let (Some(f), ConnEvent::Finished(r)) = (e.on_event(&ev), &ev) {
                out.insert(
                    r.orig_port,
                    (col(&f, "serror_rate"), col(&f, "dst_host_serror_rate")),
                );
            }
        }
        out
    };
    // In order: when each is answered, the others still waiting began after it.
    let got = serror_by_port(&parallel([0, 1, 2, 3, 4, 5]));
    assert!(got.values().all(|&v| v == (0.0, 0.0)), "{got:?}");
    // The second answered first: the first, still waiting, began before it and counts.
    let got = serror_by_port(&parallel([1, 0, 2, 3, 4, 5]));
    assert_eq!(got[&40001], (0.17, 0.17), "{got:?}");
    assert_eq!(got[&40000], (0.0, 0.0), "{got:?}");
    // A flood: unanswered SYNs are errors of each other (each one's moment is its SYN).
    let flood: Vec<ConnectionRecord> = (0..6u64)
        .map(|i| ConnectionRecord {
            start_unix_ns: T0 + i * 10_000,
            ..tcp(T0 + i * 10_000, server, 80, 41000 + i as u16, ConnState::S0)
        })
        .collect();
    let got = serror_by_port(&flood);
    assert_eq!(got[&41005], (1.0, 1.0), "{got:?}");
    // An unanswered SYN that began before an answered connection is its SYN error.
    let mut older = vec![flood[0].clone()];
    older.push(ConnectionRecord {
        start_unix_ns: T0 + 10_000,
        answer_unix_ns: Some(T0 + 1_000_000),
        ..tcp(T0 + 50_000_000, server, 80, 42000, ConnState::SF)
    });
    let got = serror_by_port(&older);
    assert_eq!(got[&42000], (0.5, 0.5), "{got:?}");
}

/// One connection of the naive model.
#[derive(Clone)]
struct Past {
    start_ns: u64,
    host: IpAddr,
    /// What "the same service" is: the KDD service, or for `private` and `other` the
    /// transport (ICMP by IP version) and responder port (ICMP type).
    service: (u8, u8, u16),
    /// As a member of another connection's window: its handshake's outcome.
    member_syn_error: bool,
    member_rej_error: bool,
    /// As the current connection: its final flag.
    flag: u8,
    sport: u16,
}

/// The features 23-41 by rescanning every past connection (the definitions, literally): the
/// connections that began up to the current one's start (it included), the others counted with
/// their handshake's outcome, the current one with its final flag.
fn naive(past: &[Past], cfg: &FeatureConfig) -> [f64; 19] {
    let cur = past.last().unwrap();
    let n = past.len();
    let r = |n: usize, d: usize| rate(n as u32, d as u32, cfg.round_rates);
    let is_cur = |p: &Past| std::ptr::eq(p, cur);
    let serr = |w: &[&Past]| {
        w.iter()
            .filter(|p| {
                if is_cur(p) {
                    basic::is_syn_error(p.flag)
                } else {
                    p.member_syn_error
                }
            })
            .count()
    };
    let rerr = |w: &[&Past]| {
        w.iter()
            .filter(|p| {
                if is_cur(p) {
                    basic::is_rej_error(p.flag)
                } else {
                    p.member_rej_error
                }
            })
            .count()
    };
    let horizon = cur.start_ns - cfg.time_window_ns;
    let time: Vec<&Past> = past.iter().filter(|p| p.start_ns > horizon).collect();
    let start = n.saturating_sub(cfg.host_window_connections);
    let hostw: Vec<&Past> = past[start..].iter().collect();
    fn stats<'a>(w: &[&'a Past], cur: &Past) -> (Vec<&'a Past>, Vec<&'a Past>, usize, usize) {
        let same_host: Vec<&Past> = w.iter().copied().filter(|p| p.host == cur.host).collect();
        let same_srv: Vec<&Past> = w
            .iter()
            .copied()
            .filter(|p| p.service == cur.service)
            .collect();
        let hs = same_host
            .iter()
            .filter(|p| p.service == cur.service)
            .count();
        let hp = same_host.iter().filter(|p| p.sport == cur.sport).count();
        (same_host, same_srv, hs, hp)
    }
    // Distinct services of the host's connections, distinct hosts of the service's.
    fn distinct<T: Ord>(w: &[&Past], key: impl Fn(&Past) -> T) -> usize {
        w.iter()
            .map(|p| key(p))
            .collect::<std::collections::BTreeSet<T>>()
            .len()
    }
    let (h, s, hs, _) = stats(&time, cur);
    let (hh, hsv, hhs, hhp) = stats(&hostw, cur);
    // KDD's "different" rates: 0 when one distinct value, else distinct / n.
    let rd = |d: usize, n: usize| if d <= 1 { 0.0 } else { r(d, n) };
    let full = cfg.host_window_connections as f64;
    let held = past.len().min(cfg.host_window_connections) as f64;
    let unseen = if cfg.fill_cold_host_window {
        full - held
    } else {
        0.0
    };
    let p = &window::COLD_PRIOR;
    // What was seen, plus the unseen slots at the prior's share.
    let w = |n: usize, share: f64| n as f64 + unseen * share;
    let rw = |num: f64, den: f64| {
        let x = num / den;
        if cfg.round_rates {
            (x * 100.0).round() / 100.0
        } else {
            x
        }
    };
    let rwd = |d: f64, n: f64| if d < 1.5 { 0.0 } else { rw(d, n) };
    let (hn, sn) = (w(hh.len(), p.host), w(hsv.len(), p.service));
    [
        h.len().min(511) as f64,
        s.len().min(511) as f64,
        r(serr(&h), h.len()),
        r(serr(&s), s.len()),
        r(rerr(&h), h.len()),
        r(rerr(&s), s.len()),
        r(hs, h.len()),
        rd(distinct(&h, |p| p.service), h.len()),
        rd(distinct(&s, |p| p.host), s.len()),
        hn.round().min(255.0),
        sn.round().min(255.0),
        rw(w(hhs, p.host_service), hn),
        rwd(w(distinct(&hh, |p| p.service), p.host_distinct), hn),
        rw(w(hhp, p.host_src_port), hn),
        rwd(w(distinct(&hsv, |p| p.host), p.service_distinct), sn),
        rw(w(serr(&hh), p.host_syn), hn),
        rw(w(serr(&hsv), p.service_syn), sn),
        rw(w(rerr(&hh), p.host_rej), hn),
        rw(w(rerr(&hsv), p.service_rej), sn),
    ]
}

fn random_record(rng: &mut StdRng, start_ns: u64) -> ConnectionRecord {
    let transports = [
        Transport::Tcp,
        Transport::Tcp,
        Transport::Udp,
        Transport::Icmp,
    ];
    let transport = transports[rng.random_range(0..transports.len())];
    let dst = if rng.random_bool(0.2) {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            0,
            rng.random_range(0..4),
        ))
    } else {
        v4(rng.random_range(0..12))
    };
    // Named services, and unnamed ports (`private` below 1024, `other` above), each a service
    // of its own in the windows.
    let ports = [21, 22, 23, 25, 53, 80, 123, 443, 7, 999, 1500, 1501, 50000];
    let mut r = tcp(
        start_ns,
        dst,
        ports[rng.random_range(0..ports.len())],
        rng.random_range(1000..1006),
        ConnState::ALL[rng.random_range(0..ConnState::ALL.len())],
    );
    r.transport = transport;
    r.end_unix_ns = start_ns + rng.random_range(0..5 * SEC_NS);
    r.final_unix_ns = r.end_unix_ns;
    if transport == Transport::Icmp {
        r.icmp_type = Some([0, 8, 3, 5, 13, 11][rng.random_range(0..6)]);
        r.icmp_code = Some(rng.random_range(0..4));
        r.ip_version = if dst.is_ipv6() { 6 } else { 4 };
    }
    r
}

/// What "the same service" is to the oracles (`Past::service`) for a connection `rec` of KDD
/// service `svc`: the service, or for `private` and `other` the transport (ICMP by IP version)
/// and the responder port (ICMP type).
fn oracle_service(rec: &ConnectionRecord, svc: u8) -> (u8, u8, u16) {
    match SERVICES[usize::from(svc)] {
        "other" | "private" => (
            1 + rec.transport as u8,
            if rec.transport == Transport::Icmp {
                rec.ip_version
            } else {
                0
            },
            rec.icmp_type.map_or(rec.resp_port, u16::from),
        ),
        _ => (0, 0, u16::from(svc)),
    }
}

/// The feature configuration an oracle test runs with.
fn oracle_config(
    host_window_connections: usize,
    round_rates: bool,
    fill_cold_host_window: bool,
) -> FeatureConfig {
    FeatureConfig {
        host_window_connections,
        round_rates,
        fill_cold_host_window,
        ..FeatureConfig::default()
    }
}

/// 5,000 random connections (in start order, with ties and exact 2 s gaps) through the engine
/// and through the naive rescan: every one of the 41 columns must agree.
#[test]
fn incremental_engine_matches_naive_rescan() {
    for (seed, host_window_connections, round_rates, fill_cold_host_window) in [
        (7u64, 255, true, false),
        (8, 17, false, false),
        (9, 600, true, false),
        (10, 255, true, true),
    ] {
        let cfg = oracle_config(host_window_connections, round_rates, fill_cold_host_window);
        let mut e = FeatureEngine::new(cfg.clone()).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut past: Vec<Past> = Vec::new();
        let mut t = T0;
        for i in 0..5_000 {
            t += match rng.random_range(0..10) {
                0 => 0,
                1 => 2 * SEC_NS,
                2 => rng.random_range(0..3 * SEC_NS),
                _ => rng.random_range(0..50_000_000),
            };
            let rec = random_record(&mut rng, t);
            let f = e.push(&rec);
            let answer = rec.handshake_answer();
            past.push(Past {
                start_ns: t,
                host: rec.resp_addr,
                service: oracle_service(&rec, f.0[2] as u8),
                member_syn_error: rec.start().awaits_answer && answer.is_none(),
                member_rej_error: answer.is_some_and(|(_, refused)| refused),
                flag: f.0[3] as u8,
                sport: rec.orig_port,
            });
            let want = naive(&past, &cfg);
            assert_eq!(&f.0[22..], &want[..], "seed {seed} connection {i}");
            assert_eq!(
                f.0[2],
                f64::from(service::service_index(&rec.start(), 1024)),
                "service"
            );
            assert_eq!(
                f.0[3],
                f64::from(basic::flag_index(rec.transport, rec.conn_state))
            );
        }
    }
}

/// A live stream for [`late_answers_in_live_order_match_the_naive_rescan`]: `n` connections of
/// `random_record` in start order, about 45 ms apart, on a 1 ms grid (so that starts, answers
/// and the 2 s boundary often tie). TCP is answered (half of the answers after 2 s, a quarter
/// after 6 to 30 s, when a hundred or more later connections have begun), refused (as late),
/// unanswered, picked up mid-stream, or answered with no answer time recorded (taken as
/// answered at its start); UDP and ICMP as they come. Every connection finishes up to 25 s
/// after its moment, so that finishes interleave with other connections' opens and answers. No
/// two connections share an id (the events name a connection by it).
fn live_stream(rng: &mut StdRng, n: usize) -> Vec<ConnectionRecord> {
    use ConnState::*;
    let ms = 1_000_000;
    let mut ids = std::collections::HashSet::new();
    let mut recs = Vec::with_capacity(n);
    let mut t = T0;
    while recs.len() < n {
        t += ms
            * match rng.random_range(0..100) {
                0..10 => 0,
                10 => 2_000,
                11 => rng.random_range(0..3_000),
                _ => rng.random_range(0..20),
            };
        let mut r = random_record(rng, t);
        if r.transport == Transport::Tcp {
            let delay = ms
                * match rng.random_range(0..4) {
                    0 => rng.random_range(0..5),
                    1 => rng.random_range(0..2_000),
                    2 => rng.random_range(2_000..6_000),
                    _ => rng.random_range(6_000..30_000),
                };
            (r.conn_state, r.answer_unix_ns) = match rng.random_range(0..10) {
                0..5 => (
                    [SF, S1, S2, S3, RSTO, RSTR][rng.random_range(0..6)],
                    Some(t + delay),
                ),
                5 => (REJ, Some(t + delay)),
                6 | 7 => ([S0, SH, RSTOS0][rng.random_range(0..3)], None),
                8 => ([OTH, SHR, RSTRH][rng.random_range(0..3)], None),
                _ => ([SF, REJ][rng.random_range(0..2)], None),
            };
        }
        r.end_unix_ns = r.answer_unix_ns.unwrap_or(t) + ms * rng.random_range(0..20_000);
        r.final_unix_ns = r.end_unix_ns + ms * rng.random_range(0..5_000);
        if ids.insert(r.id()) {
            recs.push(r);
        }
    }
    recs
}

/// The window features (23-41) of every connection of `recs` (in start order, so that index
/// order is the order they open) from the definitions in `docs/features.md`, "A connection's
/// moment", by rescanning all of them. The live order is that of `events_from_records`: an
/// event's instant is its time, then opens before answers before finishes, then start, then
/// index. A connection's moment is its answer (TCP answered or refused), else its start. The
/// windows are taken over the connections opened before that instant, in the order they
/// opened, with the connection itself last, placed at its moment (`naive`): the 2 s window is
/// those that began in `(moment - 2 s, moment]` and the connection; the host window the last
/// `host_window_connections`, "the current one included" (`FeatureConfig`), so one that began
/// that many connections ago is counted with the latest `host_window_connections - 1`. Another
/// connection counts with its outcome as known at the moment: a SYN not answered by then is a
/// SYN error, unless the moment is an answer and it began after the current connection (in
/// flight); a RST answered by then is a REJ error. "The same service" is `naive`'s, with an
/// unnamed TCP port `ftp_data` while an FTP control connection between the two hosts is open
/// (opened before it, finished after it opened).
fn naive_live(recs: &[ConnectionRecord], cfg: &FeatureConfig) -> Vec<[f64; 19]> {
    let opened = |i: usize| (recs[i].start_unix_ns, 0, recs[i].start_unix_ns, i);
    let answered = |i: usize| {
        let r = &recs[i];
        r.handshake_answer()
            .map(|(at, refused)| ((at, 1, r.start_unix_ns, i), refused))
    };
    let finished = |i: usize| {
        let r = &recs[i];
        (r.final_unix_ns.max(r.end_unix_ns), 2, r.start_unix_ns, i)
    };
    let ftp_data = svc("ftp_data") as u8;
    let services: Vec<(u8, u8, u16)> = (0..recs.len())
        .map(|i| {
            let r = &recs[i];
            let named = service::service_index(&r.start(), cfg.private_port_below);
            let unnamed = matches!(SERVICES[usize::from(named)], "private" | "other");
            let ftp_session_open = (0..recs.len()).any(|c| {
                let ctl = &recs[c];
                ctl.transport == Transport::Tcp
                    && ctl.resp_port == 21
                    && ([ctl.orig_addr, ctl.resp_addr] == [r.orig_addr, r.resp_addr]
                        || [ctl.orig_addr, ctl.resp_addr] == [r.resp_addr, r.orig_addr])
                    && opened(c) < opened(i)
                    && opened(i) < finished(c)
            });
            if unnamed && r.transport == Transport::Tcp && ftp_session_open {
                oracle_service(r, ftp_data)
            } else {
                oracle_service(r, named)
            }
        })
        .collect();
    let past = |j: usize, start_ns: u64, syn_error: bool, rej_error: bool| Past {
        start_ns,
        host: recs[j].resp_addr,
        service: services[j],
        member_syn_error: syn_error,
        member_rej_error: rej_error,
        flag: basic::flag_index(recs[j].transport, basic::kdd_state(&recs[j])),
        sport: recs[j].orig_port,
    };
    (0..recs.len())
        .map(|i| {
            let moment = answered(i).map_or(opened(i), |(at, _)| at);
            let mut window: Vec<Past> = (0..recs.len())
                .filter(|&j| j != i && opened(j) < moment)
                .map(|j| {
                    let known = answered(j).filter(|&(at, _)| at < moment);
                    let in_flight = answered(i).is_some() && opened(j) > opened(i);
                    past(
                        j,
                        recs[j].start_unix_ns,
                        recs[j].start().awaits_answer && known.is_none() && !in_flight,
                        known.is_some_and(|(_, refused)| refused),
                    )
                })
                .collect();
            window.push(past(i, moment.0, false, false));
            naive(&window, cfg)
        })
        .collect()
}

/// The live path with late answers: random streams (`live_stream`) turned into events by
/// `events_from_records` and fed to `on_event` against the docs' definitions rescanned
/// (`naive_live`), every one of the 19 window features of every connection. Unlike
/// `incremental_engine_matches_naive_rescan` (`push`: opened, answered and finished at once),
/// here an answer can come after its connection has left the 2 s window and after more than
/// the host window's length of later connections began, its status changes in the snapshots
/// of the connections after it, SYNs are in flight or failed depending on who began first,
/// and finishes come long after later connections were scored.
#[test]
fn late_answers_in_live_order_match_the_naive_rescan() {
    for (seed, host_window_connections, round_rates, fill_cold_host_window) in [
        (21u64, 17, true, false),
        (22, 255, false, false),
        (23, 255, true, true),
        (24, 17, false, true),
    ] {
        let cfg = oracle_config(host_window_connections, round_rates, fill_cold_host_window);
        let recs = live_stream(&mut StdRng::seed_from_u64(seed), 3_000);
        // The path under test is exercised: answers after 2 s and after more than the host
        // window's length of later connections began.
        let late = recs
            .iter()
            .enumerate()
            .filter(|&(i, r)| {
                r.answer_unix_ns.is_some_and(|at| {
                    at - r.start_unix_ns >= 2 * SEC_NS
                        && recs.partition_point(|o| o.start_unix_ns <= at) - (i + 1)
                            > host_window_connections
                })
            })
            .count();
        assert!(late >= 100, "seed {seed}: {late} late answers");
        let want = naive_live(&recs, &cfg);
        let index: std::collections::HashMap<ConnId, usize> =
            recs.iter().enumerate().map(|(i, r)| (r.id(), i)).collect();
        let mut e = FeatureEngine::new(cfg).unwrap();
        let mut finished = 0;
        for ev in events_from_records(&recs) {
            let got = e.on_event(&ev);
            let ConnEvent::Finished(r) = &ev else {
                assert_eq!(got, None);
                continue;
            };
            let i = index[&r.id()];
            let got = got.expect("a finished connection's features");
            for (k, (g, w)) in got.0[22..].iter().zip(&want[i]).enumerate() {
                assert_eq!(
                    g,
                    w,
                    "seed {seed} connection {i} column {} ({})",
                    23 + k,
                    crate::kdd::FEATURE_NAMES[22 + k]
                );
            }
            finished += 1;
        }
        assert_eq!(finished, recs.len());
    }
}

/// 1,000,000 distinct destination hosts, 1 us apart: the 2 s window would hold all of them, the
/// cap keeps 100,000; memory stays bounded and the evictions are counted.
#[test]
fn a_million_distinct_hosts_stay_bounded() {
    let cap = 100_000;
    let mut e = FeatureEngine::new(FeatureConfig {
        max_time_window_connections: cap,
        ..FeatureConfig::default()
    })
    .unwrap();
    for i in 0..1_000_000u32 {
        let dst = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        e.push(&tcp(T0 + u64::from(i) * 1000, dst, 80, 1000, ConnState::SF));
    }
    let s = e.stats();
    assert_eq!(s.connections_total, 1_000_000);
    assert_eq!(s.time_window_connections, cap);
    assert_eq!(s.time_window_hosts, cap);
    assert_eq!(s.host_window_hosts, 255);
    assert_eq!(
        s.time_window_overflow_evictions_total,
        1_000_000 - cap as u64
    );
    let per_host = s.heap_bytes / cap;
    eprintln!(
        "heap {} bytes, {per_host} bytes per tracked host",
        s.heap_bytes
    );
    // Queue entry (48 B) + host map slot (~65 B) + host-service slot (~33 B), with map slack.
    assert!(per_host < 400, "{per_host} bytes per host");
}

#[test]
fn rates_round_as_f64_round_does() {
    // Every value a rate takes (num / den for den up to 600), the halfway points and their
    // neighbours, and a sweep of [0, 1].
    let mut xs = vec![0.0, 1.0];
    for den in 1..=600u32 {
        for num in 0..=den {
            xs.push(f64::from(num) / f64::from(den));
        }
    }
    for k in 0..100 {
        let half = (f64::from(k) + 0.5) / 100.0;
        xs.extend([half, half.next_up(), half.next_down()]);
    }
    xs.extend((0..=1_000_000).map(|i| f64::from(i) / 1e6));
    for x in xs {
        assert_eq!(
            super::rate_f(x, 1.0, true),
            (x * 100.0).round() / 100.0,
            "{x:e}"
        );
    }
    // Host counts: weighted sums up to 255 and beyond, halfway points included.
    for i in 0..=300_000u32 {
        let c = f64::from(i) / 1000.0;
        for y in [c, c.next_up(), c.next_down()] {
            assert_eq!(super::round_half_up(y), y.round(), "{y:e}");
        }
    }
}

/// A UDP record between the lab client and `dst`:53 over `[start, end]`, ended by its idle
/// timeout `timeout_ns` after its last packet.
fn udp_idle(start_ns: u64, end_ns: u64, dst: IpAddr, timeout_ns: u64) -> ConnectionRecord {
    ConnectionRecord {
        transport: Transport::Udp,
        start_unix_ns: start_ns,
        end_unix_ns: end_ns,
        final_unix_ns: end_ns + timeout_ns,
        end_reason: EndReason::Idle,
        orig_port: 5000,
        ..tcp(end_ns, dst, 53, 5000, ConnState::SF)
    }
}

/// The features of the last record of `recs`, run through the engine as the live sensor's
/// events, and the engine's figures.
fn last_features(recs: &[ConnectionRecord]) -> (KddFeatures, EngineStats) {
    let mut e = engine();
    let last = recs.last().unwrap().id();
    let mut out = None;
    for ev in events_from_records(recs) {
        let f = e.on_event(&ev);
        if let ConnEvent::Finished(r) = &ev
            && r.id() == last
        {
            out = f;
        }
    }
    (out.unwrap(), e.stats())
}

/// A conversation with a 5 s pause is one record under a 60 s timeout and two under 2 s; its
/// neighbours' window features are the same either way, because the second record resumes the
/// conversation and does not enter the windows again.
#[test]
fn a_conversation_split_by_its_idle_timeout_is_in_the_windows_once() {
    let server = v4(1);
    let neighbour = tcp(T0 + 6_500_000_000, server, 80, 41000, ConnState::SF);
    let whole = vec![
        udp_idle(T0, T0 + 7 * SEC_NS, server, 60 * SEC_NS),
        neighbour.clone(),
    ];
    let split = vec![
        udp_idle(T0, T0 + SEC_NS, server, 2 * SEC_NS),
        udp_idle(T0 + 6 * SEC_NS, T0 + 7 * SEC_NS, server, 2 * SEC_NS),
        neighbour.clone(),
    ];
    let (f_whole, s_whole) = last_features(&whole);
    let (f_split, s_split) = last_features(&split);
    assert_eq!(f_whole.0[22..], f_split.0[22..]);
    assert_eq!((s_whole.resumed_total, s_split.resumed_total), (0, 1));
    // The resumed record itself is scored with the windows as they stand, itself counted once:
    // it and its neighbour are the two connections to the server in the last 2 s.
    let (f_resumed, _) = last_features(&split[..2]);
    assert_eq!(col(&f_resumed, "count"), 1.0);
    assert_eq!(col(&f_split, "count"), 1.0);
    assert_eq!(col(&f_split, "dst_host_count"), 2.0);

    // Resumed by the other side: the same conversation.
    let mut reversed = split.clone();
    let r = &mut reversed[1];
    (r.orig_addr, r.resp_addr) = (r.resp_addr, r.orig_addr);
    (r.orig_port, r.resp_port) = (r.resp_port, r.orig_port);
    assert_eq!(last_features(&reversed).1.resumed_total, 1);

    // After more than the gap (60 s), a new conversation: it enters the windows.
    let late = vec![
        udp_idle(T0, T0 + SEC_NS, server, 2 * SEC_NS),
        udp_idle(T0 + 62 * SEC_NS, T0 + 63 * SEC_NS, server, 2 * SEC_NS),
        tcp(T0 + 62_500_000_000, server, 80, 41000, ConnState::SF),
    ];
    let (f_late, s_late) = last_features(&late);
    assert_eq!(s_late.resumed_total, 0);
    assert_eq!(col(&f_late, "count"), 2.0);

    // TCP is never a resumption: a new SYN is a new connection.
    let tcp_twice = vec![
        ConnectionRecord {
            end_reason: EndReason::Idle,
            ..tcp(T0, server, 80, 41000, ConnState::SF)
        },
        tcp(T0 + 6 * SEC_NS, server, 80, 41000, ConnState::SF),
    ];
    assert_eq!(last_features(&tcp_twice).1.resumed_total, 0);
}

/// The memory of ended conversations is bounded; what it forgets early is counted, and its
/// resumption enters the windows as a new connection.
#[test]
fn ended_conversations_are_remembered_within_a_bound_and_forgetting_is_counted() {
    let n = resume::Resumptions::CAPACITY + 10;
    let mut e = engine();
    let mut first = None;
    for i in 0..n {
        let ip = u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (i as u32 % 60_000);
        let mut r = udp_idle(T0, T0 + 1_000, IpAddr::V4(Ipv4Addr::from(ip)), 2 * SEC_NS);
        r.orig_port = 1024 + (i / 60_000) as u16;
        first.get_or_insert_with(|| r.clone());
        e.push(&r);
    }
    let s = e.stats();
    assert_eq!(s.resume_forgotten_total, 10);
    assert!(s.heap_bytes < 64 << 20, "{} heap bytes", s.heap_bytes);
    let mut again = first.unwrap();
    again.start_unix_ns = T0 + 3 * SEC_NS;
    again.end_unix_ns = again.start_unix_ns;
    e.push(&again);
    assert_eq!(e.stats().resumed_total, 0, "the first one was forgotten");
}

/// An FTP session's data connections are `ftp_data`, whichever ports it negotiated: while a
/// control connection between the two hosts is open, or from port 20.
#[test]
fn an_ftp_sessions_data_connections_are_ftp_data() {
    let server = v4(1);
    let mut control = tcp(T0 + 10 * SEC_NS, server, 21, 40000, ConnState::SF);
    control.start_unix_ns = T0;
    let passive = tcp(T0 + 2 * SEC_NS, server, 50000, 40001, ConnState::SF);
    // Active mode: the server connects back to the client (here from a port other than 20).
    let active = ConnectionRecord {
        orig_addr: server,
        resp_addr: v4(200),
        ..tcp(T0 + 3 * SEC_NS, server, 40002, 61920, ConnState::SF)
    };
    let after = tcp(T0 + 20 * SEC_NS, server, 50001, 40003, ConnState::SF);
    let from_20 = ConnectionRecord {
        orig_addr: server,
        resp_addr: v4(200),
        ..tcp(T0 + 21 * SEC_NS, server, 40004, 20, ConnState::SF)
    };
    let other_host = tcp(T0 + 2 * SEC_NS, v4(2), 50000, 40005, ConnState::SF);
    let mut e = engine();
    let mut service = std::collections::HashMap::new();
    let recs = [control, passive, active, after, from_20, other_host];
    for ev in events_from_records(&recs) {
        if let (Some(f), ConnEvent::Finished(r)) = (e.on_event(&ev), &ev) {
            service.insert(r.orig_port, col(&f, "service"));
        }
    }
    assert_eq!(service[&40000], svc("ftp"));
    assert_eq!(service[&40001], svc("ftp_data"), "passive, session open");
    assert_eq!(service[&61920], svc("ftp_data"), "active, session open");
    assert_eq!(service[&40003], svc("other"), "after the session closed");
    assert_eq!(service[&20], svc("ftp_data"), "from port 20");
    assert_eq!(service[&40005], svc("other"), "another host");
}

/// An FTP session's data connections on different negotiated ports are one service in the
/// windows (`ftp_data`, a named service), not one unnamed port each: the data prints
/// `dst_host_diff_srv_rate` 0.02-0.03 for `ftp_data` beside `dst_host_same_srv_rate` 0.22-0.40.
#[test]
fn ftp_data_connections_on_different_ports_are_one_service() {
    let server = v4(1);
    let mut control = tcp(T0 + 10 * SEC_NS, server, 21, 40000, ConnState::SF);
    control.start_unix_ns = T0;
    let data: Vec<ConnectionRecord> = (0..3u64)
        .map(|i| {
            tcp(
                T0 + (i + 1) * 100_000_000,
                server,
                50000 + i as u16,
                40001 + i as u16,
                ConnState::SF,
            )
        })
        .collect();
    let mut e = engine();
    let mut last = None;
    let mut recs = vec![control];
    recs.extend(data);
    for ev in events_from_records(&recs) {
        if let (Some(f), ConnEvent::Finished(r)) = (e.on_event(&ev), &ev)
            && r.orig_port == 40003
        {
            last = Some(f);
        }
    }
    let f = last.expect("the third data connection");
    assert_eq!(col(&f, "service"), svc("ftp_data"));
    // The control connection and three data connections to the server within 2 s: the data
    // ones are one service, so two distinct services among four connections.
    assert_eq!(col(&f, "count"), 4.0);
    assert_eq!(col(&f, "srv_count"), 3.0);
    assert_eq!(col(&f, "diff_srv_rate"), 0.5);
}

/// A conversation that ends and resumes over and over within the gap does not grow the memory
/// of ended conversations past its bound.
#[test]
fn ending_and_resuming_over_and_over_stays_bounded() {
    let mut r = resume::Resumptions::default();
    let server = v4(1);
    for i in 0..4 * resume::Resumptions::CAPACITY as u64 {
        let rec = udp_idle(T0 + i * 10, T0 + i * 10 + 1, server, 2 * SEC_NS);
        r.ended(&rec, 60 * SEC_NS);
        let mut next = rec.id();
        next.start_unix_ns = T0 + i * 10 + 5;
        assert!(r.resumes(&next, 60 * SEC_NS));
    }
    assert!(r.heap_bytes() < 8 << 20, "{} heap bytes", r.heap_bytes());
}

#[test]
fn a_transport_outside_the_data_gets_service_other_and_no_window() {
    // Zeek's `unknown_transport` rows (IP protocols 99, 132 ...) are printed, never scored:
    // their service is `other`, not the vocabulary's first name.
    for transport in [Transport::Unknown, Transport::Sctp] {
        let mut e = engine();
        for port in [0, 48879] {
            let f = e.push(&with(transport, port));
            assert_eq!(
                col(&f, "service"),
                svc("other"),
                "{transport:?} port {port}"
            );
            assert_eq!(
                col(&f, "count"),
                0.0,
                "{transport:?} stays out of the windows"
            );
        }
    }
}

/// The open connections' index of slab positions: an id replaced in place, removed (its slab
/// place freed), another id in the freed place, the index grown past many rehashes, and every
/// id found with its own entry throughout.
#[test]
fn open_connections_keep_each_id_with_its_own_entry() {
    let id = |i: u32| ConnId {
        start_unix_ns: u64::from(i),
        transport: Transport::Tcp,
        orig_addr: IpAddr::V4(Ipv4Addr::from(0xc612_0000 + i)),
        orig_port: 1024,
        resp_addr: IpAddr::V4(Ipv4Addr::new(198, 18, 2, 1)),
        resp_port: 80,
    };
    let entry = |seq: u64| OpenEntry {
        seq: Some(seq),
        entry: WindowEntry::default(),
        snapshot: Snapshot::default(),
    };
    let mut open = OpenConnections::default();
    assert_eq!(open.insert(id(1), entry(1)).map(|e| e.seq), None);
    assert_eq!(open.insert(id(1), entry(2)).map(|e| e.seq), Some(Some(1)));
    assert_eq!((open.len(), open.slab.len()), (1, 1), "replaced in place");
    assert_eq!(open.remove(&id(1)).map(|e| e.seq), Some(Some(2)));
    assert!(open.remove(&id(1)).is_none() && !open.contains_key(&id(1)));
    open.insert(id(2), entry(20));
    assert_eq!(open.slab.len(), 1, "the freed place taken again");
    assert!(
        open.get(&id(1)).is_none(),
        "the old id of the place is not found"
    );
    // Many more: the index grows (rehashing through the slab's ids) and removals free places
    // that later ids take.
    for i in 3..5_000 {
        open.insert(id(i), entry(u64::from(i) * 10));
        if i % 3 == 0 {
            assert!(open.remove(&id(i - 1)).is_some(), "{i}");
        }
    }
    if let Some(e) = open.get_mut(&id(4_999)) {
        e.seq = Some(7);
    }
    for i in 2..5_000 {
        let removed = i % 3 == 2;
        let want = match i {
            4_999 => Some(7),
            _ => Some(u64::from(i) * 10),
        };
        assert_eq!(
            open.get(&id(i)).map(|e| e.seq),
            (!removed).then_some(want),
            "{i}"
        );
    }
    assert_eq!(open.len(), open.slab.len() - open.free.len());
}
