use super::*;
use crate::{
    detect::Scored,
    incidents::{Example, IncidentState},
};

fn rules(text: &str) -> Result<Suppressions, String> {
    let f = crate::config::FileConfig::parse(text, "t.toml").map_err(|e| e.to_string())?;
    Suppressions::compile(&f.suppress).map_err(|e| e.to_string())
}

fn record(src: &str, dst: &str, port: u16) -> ConnectionRecord {
    ConnectionRecord {
        end_unix_ns: 2,
        orig_packets: 1,
        conn_state: sensor_common::conn_state::ConnState::S0,
        final_unix_ns: 2,
        ..ConnectionRecord::new(
            crate::flows::Transport::Tcp,
            (src.parse::<std::net::IpAddr>().unwrap(), 40000),
            (dst.parse::<std::net::IpAddr>().unwrap(), port),
            1,
        )
    }
}

/// The rule of `rules` that silences a connection to `service` judged by `detector`.
fn silenced<'a>(
    rules: &'a Suppressions,
    rec: &ConnectionRecord,
    service: &str,
    detector: Detector,
) -> Option<&'a Arc<str>> {
    let s = scored(service, detector);
    rules.connection(rec, &s.features, &s.verdict)
}

fn scored(service: &str, detector: Detector) -> Scored {
    let mut f = [0.0; 41];
    f[crate::kdd::SERVICE] = SERVICES.iter().position(|s| *s == service).unwrap() as f64;
    Scored {
        features: KddFeatures(f),
        verdict: Verdict {
            anomalous: detector != Detector::None,
            score: 2.0,
            detector,
            supervised_score: 1.0,
            unsupervised_score: None,
            supervised_score_plain: 1.0,
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

fn incident(
    kind: IncidentKind,
    sources: &[&str],
    source_count: usize,
    ports: &[u16],
) -> IncidentLine {
    IncidentLine {
        kind_of_line: "incident",
        id: "x-1".into(),
        state: IncidentState::Open,
        kind,
        protocol: "tcp",
        protocols: vec!["tcp"],
        start_unix_ns: 0,
        last_unix_ns: 0,
        sources: sources.iter().map(|s| s.parse().unwrap()).collect(),
        source_count,
        targets: vec!["192.0.2.1".parse().unwrap()],
        target_count: 1,
        ports: ports.to_vec(),
        port_count: ports.len(),
        connections: 10,
        anomalous_connections: 10,
        peak_packets_per_second: None,
        held_requests: None,
        merged_into: None,
        features: Vec::new(),
        example: Example {
            orig_addr: "192.0.2.9".parse().unwrap(),
            orig_port: 1,
            resp_addr: "192.0.2.1".parse().unwrap(),
            resp_port: 2,
            protocol: "tcp",
            start_unix_ns: 0,
            community_id: String::new(),
        },
        top_features: Vec::new(),
        strongest: None,
    }
}

#[test]
fn cidr_edges_v4_and_v6() {
    let c: Cidr = "10.1.0.0/16".parse().unwrap();
    assert!(c.contains("10.1.0.0".parse().unwrap()));
    assert!(c.contains("10.1.255.255".parse().unwrap()));
    assert!(!c.contains("10.0.255.255".parse().unwrap()));
    assert!(!c.contains("10.2.0.0".parse().unwrap()));
    // An IPv4-mapped IPv6 address is its IPv4 address; a plain IPv6 address never is.
    assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
    assert!(!c.contains("2001:db8::1".parse().unwrap()));
    let host: Cidr = "192.0.2.7".parse().unwrap();
    assert!(host.contains("192.0.2.7".parse().unwrap()));
    assert!(!host.contains("192.0.2.6".parse().unwrap()));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("255.255.255.255".parse().unwrap()));
    assert!(!all.contains("::1".parse().unwrap()));
    let v6: Cidr = "2001:db8:ab00::/40".parse().unwrap();
    assert!(v6.contains("2001:db8:ab00::1".parse().unwrap()));
    assert!(v6.contains("2001:db8:abff:ffff::1".parse().unwrap()));
    assert!(!v6.contains("2001:db8:ac00::".parse().unwrap()));
    assert!(!v6.contains("10.0.0.1".parse().unwrap()));
    let v6all: Cidr = "::/0".parse().unwrap();
    assert!(v6all.contains("ffff::1".parse().unwrap()));
    let v6host: Cidr = "2001:db8::5/128".parse().unwrap();
    assert!(v6host.contains("2001:db8::5".parse().unwrap()));
    assert!(!v6host.contains("2001:db8::4".parse().unwrap()));
    for bad in [
        "10.0.0.1/8",
        "10.0.0.0/33",
        "2001:db8::1/64",
        "::/129",
        "10.0.0/8",
        "host",
        "10.0.0.0/x",
    ] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad} accepted");
    }
}

#[test]
fn mistakes_are_errors_that_name_the_rule_and_the_field() {
    let cases = [
        (
            "[[suppress]]\nname = \"backup\"\nsrc = [\"10.0.0.1/8\"]",
            ["\"backup\"", "src", "host bits"],
        ),
        (
            "[[suppress]]\nname = \"b\"\ndst = [\"2001:db8::/129\"]",
            ["\"b\"", "dst", "prefix length"],
        ),
        (
            "[[suppress]]\nname = \"k\"\nkind = [\"portscan\"]",
            ["\"k\"", "kind", "port_scan"],
        ),
        (
            "[[suppress]]\nname = \"d\"\ndetector = [\"forest\"]",
            ["\"d\"", "detector", "forest"],
        ),
        (
            "[[suppress]]\nname = \"s\"\nservice = [\"https\"]",
            ["\"s\"", "service", "https"],
        ),
        (
            "[[suppress]]\nname = \"u\"\nsrc = [\"10.0.0.0/8\"]\nprot = [\"tcp\"]",
            ["\"u\"", "prot", "unknown field"],
        ),
        (
            "[[suppress]]\nname = \"e\"",
            ["\"e\"", "matchers", "no matcher"],
        ),
        (
            "[[suppress]]\nname = \"l\"\nport = []",
            ["\"l\"", "port", "empty list"],
        ),
        (
            "[[suppress]]\nname = \"p\"\nport = [70000]",
            ["\"p\"", "port", "70000"],
        ),
        (
            "[[suppress]]\nsrc = [\"10.0.0.0/8\"]",
            ["#1", "name", "name"],
        ),
        (
            "[[suppress]]\nname = \"a\"\nport = [22]\n[[suppress]]\nname = \"a\"\nport = [23]",
            ["\"a\"", "name", "another rule"],
        ),
        (
            "[[suppress]]\nname = \"m\"\nkind = [\"flood\"]\ndetector = [\"both\"]",
            ["\"m\"", "kind", "detector"],
        ),
    ];
    for (text, want) in cases {
        let e = rules(text).unwrap_err();
        for w in want {
            assert!(e.contains(w), "{text}\n=> {e}\n(missing {w:?})");
        }
    }
}

#[test]
fn a_rule_matches_only_when_every_matcher_does() {
    let r = rules(
        r#"
        [[suppress]]
        name = "monitoring"
        src = ["192.0.2.0/28", "2001:db8::/32"]
        port = [22, 443]
        detector = ["supervised"]
        "#,
    )
    .unwrap();
    let hit = |src: &str, port: u16, d: Detector| {
        silenced(&r, &record(src, "198.51.100.1", port), "http", d).map(|n| n.to_string())
    };
    assert_eq!(
        hit("192.0.2.15", 22, Detector::Supervised).as_deref(),
        Some("monitoring")
    );
    assert_eq!(
        hit("2001:db8:1::9", 443, Detector::Supervised).as_deref(),
        Some("monitoring")
    );
    // Each matcher failing alone breaks the match.
    assert_eq!(hit("192.0.2.16", 22, Detector::Supervised), None, "src");
    assert_eq!(hit("192.0.2.15", 80, Detector::Supervised), None, "port");
    assert_eq!(hit("192.0.2.15", 22, Detector::Both), None, "detector");
    assert_eq!(hit("192.0.2.15", 22, Detector::Volume), None, "detector");
    // Normal connections are never silenced (nothing to silence).
    assert_eq!(hit("192.0.2.15", 22, Detector::None), None);

    // A site's known fast one-way stream, silenced for the volume rule only.
    let stream = rules(
        "[[suppress]]\nname = \"camera\"\ndst = [\"198.51.100.1/32\"]\ndetector = [\"volume\"]",
    )
    .unwrap();
    let hit = |d: Detector| {
        silenced(
            &stream,
            &record("192.0.2.15", "198.51.100.1", 554),
            "other",
            d,
        )
    };
    assert_eq!(
        hit(Detector::Volume).map(|n| n.to_string()).as_deref(),
        Some("camera")
    );
    assert_eq!(
        hit(Detector::Supervised),
        None,
        "the model's verdicts still alert"
    );

    let svc = rules(
        "[[suppress]]\nname = \"dns\"\nservice = [\"domain_u\"]\ndst = [\"198.51.100.0/24\"]",
    )
    .unwrap();
    let rec = record("203.0.113.1", "198.51.100.53", 53);
    assert!(silenced(&svc, &rec, "domain_u", Detector::Unsupervised).is_some());
    assert!(silenced(&svc, &rec, "private", Detector::Unsupervised).is_none());
    let other = record("203.0.113.1", "198.51.101.53", 53);
    assert!(silenced(&svc, &other, "domain_u", Detector::Unsupervised).is_none());
}

#[test]
fn kind_rules_are_for_incidents_and_need_every_source_inside() {
    let r = rules(
        r#"
        [[suppress]]
        name = "scanner"
        kind = ["port_scan"]
        src = ["192.0.2.0/24"]
        "#,
    )
    .unwrap();
    // A kind rule never silences a connection.
    assert!(
        silenced(
            &r,
            &record("192.0.2.1", "198.51.100.1", 22),
            "ssh",
            Detector::Both
        )
        .is_none()
    );
    assert!(
        r.incident(&incident(
            IncidentKind::PortScan,
            &["192.0.2.5"],
            1,
            &[22, 23]
        ))
        .is_some()
    );
    assert!(
        r.incident(&incident(IncidentKind::HostSweep, &["192.0.2.5"], 1, &[22]))
            .is_none()
    );
    // One source outside, or sources the line does not list: not silenced.
    assert!(
        r.incident(&incident(
            IncidentKind::PortScan,
            &["192.0.2.5", "203.0.113.5"],
            2,
            &[22]
        ))
        .is_none()
    );
    assert!(
        r.incident(&incident(IncidentKind::PortScan, &["192.0.2.5"], 11, &[22]))
            .is_none()
    );

    let ports = rules("[[suppress]]\nname = \"p\"\nport = [22, 23]").unwrap();
    assert!(
        ports
            .incident(&incident(
                IncidentKind::Flood,
                &["203.0.113.5"],
                1,
                &[22, 23]
            ))
            .is_some()
    );
    assert!(
        ports
            .incident(&incident(
                IncidentKind::Flood,
                &["203.0.113.5"],
                1,
                &[22, 80]
            ))
            .is_none()
    );
    // Service and detector rules never silence an incident.
    let svc = rules("[[suppress]]\nname = \"s\"\nservice = [\"ssh\"]").unwrap();
    assert!(
        svc.incident(&incident(IncidentKind::PortScan, &["192.0.2.5"], 1, &[22]))
            .is_none()
    );
}

#[test]
fn no_rules_by_default() {
    let r = rules("interfaces = [\"eth0\"]").unwrap();
    assert!(r.is_empty());
}
