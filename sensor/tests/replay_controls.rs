//! Operator controls through `sensor replay`: `[[suppress]]` rules from a configuration file
//! silence the alerts and incidents they match and leave the rest, alerts and incidents name
//! the features that moved their score, and the alert stream can be Suricata EVE `alert`
//! events that join the EVE `flow` rows.
mod common;

use std::path::{Path, PathBuf};

use common::*;
use pcap_file::DataLink;
use sensor::{
    cli::replay::ReplayOptions,
    config::{AlertFormat, FileConfig},
    replay::output::Format,
};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("controls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Two sources each scan 60 ports of their own target (SYN answered by RST): 198.18.1.1 ->
/// 198.18.2.1 and 198.18.1.2 -> 198.18.2.2, interleaved, 1 ms apart.
fn two_scans() -> Vec<u8> {
    let mut f = Frames::default();
    let mut t = T0;
    for port in 1..=60u16 {
        for (src, dst) in [(v4(1, 1), v4(2, 1)), (v4(1, 2), v4(2, 2))] {
            f.push(t, tcp4(src, 40_000 + port, dst, port, SYN, &[]));
            f.push(
                t + 100_000,
                tcp4(dst, port, src, 40_000 + port, RST | ACK, &[]),
            );
            t += MS;
        }
    }
    f.pcap(DataLink::ETHERNET)
}

/// Replays `capture` with the rules of `config` (if any): (rows, alert lines).
fn replay(
    dir: &Scratch,
    capture: &Path,
    config: Option<&Path>,
) -> (String, Vec<serde_json::Value>) {
    let out = dir.0.join("rows.jsonl");
    let alerts = dir.0.join("alerts.jsonl");
    let opts = ReplayOptions {
        files: vec![capture.to_path_buf()],
        model: model_path(),
        format: Format::Jsonl,
        output: Some(out.clone()),
        alerts: Some(alerts.clone()),
        connection_alerts: true,
        alerts_format: AlertFormat::Json,
        community_id_seed: 0,
        config: Default::default(),
        site: config
            .map(|c| FileConfig::load_for_replay(c).expect("config"))
            .unwrap_or_default(),
    };
    sensor::cli::replay::replay(&opts, std::io::sink()).expect("replay");
    let lines = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (std::fs::read_to_string(&out).unwrap(), lines)
}

fn of_type<'a>(lines: &'a [serde_json::Value], t: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|v| v["type"] == t).collect()
}

fn from(lines: &[&serde_json::Value], src: &str) -> usize {
    lines.iter().filter(|v| v["orig_addr"] == src).count()
}

/// The anomalous connections from `src` in JSON-lines records.
fn anomalous_from(rows: &str, src: &str) -> usize {
    rows.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["orig_addr"] == src && v["anomalous"] == true)
        .count()
}

#[test]
fn a_rule_silences_the_scanner_it_names_and_leaves_the_other() {
    let dir = Scratch::new("suppress");
    let capture = dir.file("scans.pcap", &two_scans());

    let (rows_before, before) = replay(&dir, &capture, None);
    let alerts = of_type(&before, "alert");
    // Each scanner's probes are anomalous (a scan's first probe, a lone refused connection in
    // a window the sensor has not seen, may be judged normal), and each anomalous one alerts.
    let (first, second) = (
        anomalous_from(&rows_before, "198.18.1.1"),
        anomalous_from(&rows_before, "198.18.1.2"),
    );
    assert!(
        first >= 57 && second >= 57,
        "{first} and {second} of 60 anomalous"
    );
    assert_eq!(from(&alerts, "198.18.1.1"), first);
    assert_eq!(from(&alerts, "198.18.1.2"), second);
    let incidents = of_type(&before, "incident");
    let scans_of = |inc: &[&serde_json::Value], src: &str| {
        inc.iter()
            .filter(|v| v["kind"] == "port_scan" && v["sources"][0] == src)
            .count()
    };
    assert!(scans_of(&incidents, "198.18.1.1") >= 1, "{incidents:?}");
    assert!(scans_of(&incidents, "198.18.1.2") >= 1, "{incidents:?}");

    // Every alert and incident says why, with at most three features that raised its score.
    for v in alerts.iter().chain(&incidents) {
        let top = v["top_features"].as_array().expect("top_features");
        assert!(!top.is_empty() && top.len() <= 3, "{v}");
        for f in top {
            assert!(f["name"].is_string() && f["value"].is_number(), "{f}");
            assert!(f["contribution"].as_f64().unwrap() > 0.0, "{f}");
        }
        let c: Vec<f64> = top
            .iter()
            .map(|f| f["contribution"].as_f64().unwrap())
            .collect();
        assert!(c.windows(2).all(|w| w[0] >= w[1]), "strongest first: {c:?}");
    }
    // Records stay as they were: no explanation per connection.
    assert!(!rows_before.contains("top_features"));

    let config = dir.file(
        "sensor.toml",
        br#"
interfaces = ["eth0"]

[[suppress]]
name = "vulnerability-scanner"
src = ["198.18.1.1/32", "2001:db8::/32"]
"#,
    );
    let (rows_after, after) = replay(&dir, &capture, Some(&config));
    let alerts = of_type(&after, "alert");
    assert_eq!(from(&alerts, "198.18.1.1"), 0, "silenced");
    assert_eq!(
        from(&alerts, "198.18.1.2"),
        second,
        "the other scanner still alerts"
    );
    let incidents = of_type(&after, "incident");
    assert_eq!(
        scans_of(&incidents, "198.18.1.1"),
        0,
        "no evidence, no incident"
    );
    assert!(scans_of(&incidents, "198.18.1.2") >= 1);
    // Still recorded and scored the same.
    assert_eq!(rows_after, rows_before);

    // A kind rule silences the incident lines but not the connection alerts.
    let config = dir.file(
        "kind.toml",
        br#"
[[suppress]]
name = "scans-from-the-lab"
kind = ["port_scan"]
src = ["198.18.1.2"]
"#,
    );
    let (_, after) = replay(&dir, &capture, Some(&config));
    assert_eq!(from(&of_type(&after, "alert"), "198.18.1.2"), second);
    let incidents = of_type(&after, "incident");
    assert_eq!(scans_of(&incidents, "198.18.1.2"), 0);
    assert!(scans_of(&incidents, "198.18.1.1") >= 1);
}

/// A site's `[thresholds]` and `[incidents]` judge and group a replayed capture as `sensor run`
/// with the same file would.
#[test]
fn a_config_files_thresholds_and_incident_settings_apply_to_replay() {
    let dir = Scratch::new("site-settings");
    let capture = dir.file("scans.pcap", &two_scans());
    let (rows, lines) = replay(&dir, &capture, None);
    let kinds = |lines: &[serde_json::Value]| -> Vec<String> {
        of_type(lines, "incident")
            .iter()
            .filter(|v| v["state"] == "open")
            .map(|v| v["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds(&lines), ["port_scan", "port_scan"]);
    // Each scanner touches 60 ports: a site that pages only beyond 100 gets no incident.
    let config = dir.file("quiet.toml", b"[incidents]\nscan_ports = 100\n");
    let (same_rows, lines) = replay(&dir, &capture, Some(&config));
    assert_eq!(same_rows, rows, "the verdicts do not change");
    assert_eq!(kinds(&lines), Vec::<String>::new());
    // Thresholds no score reaches (both scores are at most 1): nothing anomalous, so no alert.
    let config = dir.file(
        "lenient.toml",
        b"[thresholds]\nsupervised = 1.5\nunsupervised = 1.5\n",
    );
    let (rows, lines) = replay(&dir, &capture, Some(&config));
    assert_eq!(anomalous_from(&rows, "198.18.1.1"), 0);
    assert_eq!(anomalous_from(&rows, "198.18.1.2"), 0);
    assert!(of_type(&lines, "alert").is_empty());
}

/// Floods that keep one conversation, and a person's pings beside them: 198.18.1.1 sends
/// 3,000 echo requests with one identifier 200 us apart (5,000 per second), each answered;
/// 198.18.1.3 sends 20,000 UDP datagrams from one source port 50 us apart to a port that
/// never answers; 198.18.1.2 pings once a second for ten seconds. And floods of one datagram
/// per conversation: 198.18.1.4 sends 10,000 UDP datagrams from changing source ports 100 us
/// apart to port 53 of 198.18.2.4, which never answers (`hping3 --udp`'s default); 198.18.1.5
/// as many queries to 198.18.2.5, a busy resolver that answers all but every hundredth.
fn floods_in_one_conversation() -> Vec<u8> {
    let echo = |src, dst, kind| {
        ethernet(
            &[],
            0x0800,
            &Ipv4::new(src, dst, 1).build(&icmp(kind, 0, 0x4242, &[0x55; 56])),
        )
    };
    let mut f = Frames::default();
    for i in 0..3_000u64 {
        let t = T0 + i * 200_000;
        f.push(t, echo(v4(1, 1), v4(2, 1), 8));
        f.push(t + 50_000, echo(v4(2, 1), v4(1, 1), 0));
    }
    for i in 0..20_000u64 {
        f.push(
            T0 + i * 50_000,
            udp4(v4(1, 3), 40_000, v4(2, 3), 9_999, &[]),
        );
    }
    for i in 0..10u64 {
        let t = T0 + i * 1_000 * MS;
        f.push(t, echo(v4(1, 2), v4(2, 1), 8));
        f.push(t + MS, echo(v4(2, 1), v4(1, 2), 0));
    }
    for i in 0..10_000u64 {
        let (t, port) = (T0 + i * 100_000, 1_024 + i as u16);
        f.push(t, udp4(v4(1, 4), port, v4(2, 4), 53, &[0x42; 32]));
        f.push(t + 30_000, udp4(v4(1, 5), port, v4(2, 5), 53, &[0x42; 32]));
        if i % 100 != 0 {
            f.push(t + 500_000, udp4(v4(2, 5), 53, v4(1, 5), port, &[0x24; 64]));
        }
    }
    f.0.sort_by_key(|(t, _)| *t);
    f.pcap(DataLink::ETHERNET)
}

/// The volume rule (`sensor::detect::volume`) through replay: each flood is one anomalous
/// conversation (detector `volume`, its rate in the alert) and one incident of its kind; the
/// pings beside them stay normal; a site that turns the rule off gets the model's verdicts.
#[test]
fn floods_in_one_conversation_are_flagged_by_their_rate_unless_the_site_turns_the_rule_off() {
    let dir = Scratch::new("volume");
    let capture = dir.file("floods.pcap", &floods_in_one_conversation());
    let (rows, lines) = replay(&dir, &capture, None);
    let opened = |lines: &[serde_json::Value], kind: &str| {
        of_type(lines, "incident")
            .into_iter()
            .filter(|v| v["state"] == "open" && v["kind"] == kind)
            .count()
    };
    assert_eq!(opened(&lines, "icmp_flood"), 1, "{lines:?}");
    assert_eq!(opened(&lines, "udp_flood"), 2, "{lines:?}");
    let mut udp_targets: Vec<String> = of_type(&lines, "incident")
        .into_iter()
        .filter(|v| v["state"] == "open" && v["kind"] == "udp_flood")
        .map(|v| v["targets"][0].as_str().unwrap_or_default().to_string())
        .collect();
    udp_targets.sort();
    assert_eq!(
        udp_targets,
        ["198.18.2.3", "198.18.2.4"],
        "not the resolver"
    );
    // The flood of one datagram per conversation: all but the first 99 flagged (judged
    // before the target's answered share counts) at their early verdicts, every one at its
    // final record; the resolver's unanswered hundredth are not.
    let flagged = anomalous_from(&rows, "198.18.1.4");
    assert_eq!(flagged, 10_000, "{flagged} of 10,000");
    let by_volume_from = |src: &str| {
        rows.lines()
            .filter(|l| l.contains(&format!("\"orig_addr\":\"{src}\"")))
            .filter(|l| l.contains("\"detector\":\"volume\""))
            .count()
    };
    assert_eq!(by_volume_from("198.18.1.5"), 0, "a busy resolver");
    assert_eq!(by_volume_from("198.18.1.4"), 10_000);
    assert_eq!(anomalous_from(&rows, "198.18.1.1"), 1);
    assert_eq!(anomalous_from(&rows, "198.18.1.3"), 1);
    assert_eq!(anomalous_from(&rows, "198.18.1.2"), 0, "a person's pings");
    let alerts = of_type(&lines, "alert");
    for (src, pps, scope) in [
        ("198.18.1.1", 5_000.0, "conversation"),
        ("198.18.1.3", 20_000.0, "conversation"),
        ("198.18.1.4", 10_000.0, "target"),
    ] {
        let a: Vec<_> = alerts.iter().filter(|a| a["orig_addr"] == src).collect();
        assert!(!a.is_empty(), "no alert from {src}");
        for a in a {
            assert_eq!(a["detector"], "volume", "{a}");
            assert_eq!(a["volume_scope"], scope, "{a}");
            let got = a["packets_per_second"].as_f64().unwrap();
            assert!(
                (got - pps).abs() / pps < 0.01,
                "{src}: {got} packets/s, sent {pps}"
            );
            assert!(a.get("top_features").is_none(), "no feature moved it: {a}");
        }
    }

    let config = dir.file("off.toml", b"[volume]\nenabled = false\n");
    let (rows, lines) = replay(&dir, &capture, Some(&config));
    assert_eq!(
        opened(&lines, "icmp_flood") + opened(&lines, "udp_flood"),
        0
    );
    assert!(rows.lines().all(|l| !l.contains("\"volume\"")), "{rows}");
    // Higher bars than every rate (the UDP flood's from one source too): nothing by volume
    // either.
    let config = dir.file(
        "high.toml",
        b"[volume]\nicmp_echo_pps = 6000\nudp_one_way_pps = 30000\nudp_one_way_per_source_pps = 30000\n",
    );
    let (_, lines) = replay(&dir, &capture, Some(&config));
    assert_eq!(
        opened(&lines, "icmp_flood") + opened(&lines, "udp_flood"),
        0
    );
}

#[test]
fn the_binary_names_the_file_rule_and_field_of_a_bad_rule() {
    let dir = Scratch::new("bad-rule");
    let capture = dir.file("scans.pcap", &two_scans());
    let config = dir.file(
        "bad.toml",
        b"[[suppress]]\nname = \"oops\"\ndst = [\"198.18.2.1/16\"]\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sensor"))
        .args(["replay", "--model"])
        .arg(model_path())
        .arg("--config")
        .arg(&config)
        .arg(&capture)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for want in [config.to_str().unwrap(), "\"oops\"", "dst", "host bits"] {
        assert!(stderr.contains(want), "{want}: {stderr}");
    }
}

#[test]
fn eve_alerts_join_the_eve_flow_rows_and_keep_the_sensor_line() {
    let dir = Scratch::new("eve");
    let capture = dir.file("scans.pcap", &two_scans());
    let (rows, alerts) = (dir.0.join("flows.jsonl"), dir.0.join("alerts.jsonl"));
    let opts = ReplayOptions {
        files: vec![capture],
        model: model_path(),
        format: Format::Eve,
        output: Some(rows.clone()),
        alerts: Some(alerts.clone()),
        connection_alerts: true,
        alerts_format: AlertFormat::Eve,
        community_id_seed: 0,
        config: Default::default(),
        site: Default::default(),
    };
    sensor::cli::replay::replay(&opts, std::io::sink()).expect("replay");
    let read = |p: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let (flows, lines) = (read(&rows), read(&alerts));
    assert_eq!(flows.len(), 120);
    assert!(
        lines.iter().all(|l| l["event_type"] == "alert"),
        "{lines:?}"
    );
    // Each connection alert carries its flow's id and Community ID, and the sensor's line.
    let conn_alerts: Vec<_> = lines
        .iter()
        .filter(|l| l["sensor"]["type"] == "alert")
        .collect();
    // Every probe but a scan's first few (lone refused connections in an unseen window).
    assert!(
        conn_alerts.len() >= 114,
        "{} of 120 probes alert",
        conn_alerts.len()
    );
    for a in &conn_alerts {
        let flow = flows
            .iter()
            .find(|f| f["flow_id"] == a["flow_id"])
            .unwrap_or_else(|| panic!("no flow row with the alert's flow_id: {a}"));
        for field in [
            "src_ip",
            "src_port",
            "dest_ip",
            "dest_port",
            "proto",
            "community_id",
        ] {
            assert_eq!(flow[field], a[field], "{field}: {a} vs {flow}");
        }
        assert_eq!(a["alert"]["gid"], 1);
        assert_eq!(a["alert"]["action"], "allowed");
        assert!(
            a["alert"]["signature"]
                .as_str()
                .unwrap()
                .starts_with("SENSOR ")
        );
        assert_eq!(a["sensor"]["community_id"], a["community_id"]);
    }
    // Incidents: one signature per kind and state change, a flow id shared by the states of
    // one incident, the example connection's 5-tuple and Community ID.
    let incidents: Vec<_> = lines
        .iter()
        .filter(|l| l["sensor"]["type"] == "incident")
        .collect();
    let opened: Vec<_> = incidents
        .iter()
        .filter(|l| l["alert"]["signature"] == "SENSOR port_scan incident open")
        .collect();
    assert_eq!(opened.len(), 2, "one port scan per scanner: {incidents:?}");
    for open in &opened {
        let id = &open["sensor"]["id"];
        let closed: Vec<_> = incidents
            .iter()
            .filter(|l| &l["sensor"]["id"] == id && l["sensor"]["state"] == "closed")
            .collect();
        assert_eq!(closed.len(), 1, "{incidents:?}");
        assert_eq!(closed[0]["flow_id"], open["flow_id"]);
        assert_eq!(
            closed[0]["alert"]["signature_id"],
            open["alert"]["signature_id"]
        );
        let example = &open["sensor"]["example"];
        assert_eq!(open["community_id"], example["community_id"]);
        assert_eq!(open["src_ip"], example["orig_addr"]);
        assert_eq!(open["dest_port"], example["resp_port"]);
        assert_eq!(open["alert"]["category"], "Attempted Information Leak");
    }
    assert_ne!(opened[0]["flow_id"], opened[1]["flow_id"]);
}
