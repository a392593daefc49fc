//! Bad input to `sensor replay`: truncated and corrupt captures, unsupported link types, missing
//! and non-capture files. Each error names the file and the packet; the packets before the
//! damage are still replayed and reported; the binary exits non-zero. Also the binary's happy
//! path: its CSV reads back as an NSL-KDD file and `sensor evaluate` takes it.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::*;
use pcap_file::DataLink;
use sensor::{
    detect::Pipeline,
    features::FeatureConfig,
    flows::{ConnectionRecord, EndReason},
    model::Model,
    replay::{self, ReplayConfig, ReplayError, ReplayReport},
};

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("replay-{tag}-{}", std::process::id()));
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

fn replay_files(files: &[PathBuf]) -> (Vec<ConnectionRecord>, ReplayReport) {
    let model = Model::load(&model_path()).expect("committed model");
    let mut pipeline =
        Pipeline::new(std::sync::Arc::new(model), FeatureConfig::default()).expect("pipeline");
    let mut recs = Vec::new();
    let mut incidents = sensor::incidents::IncidentTracker::new(Default::default());
    let report = replay::replay_files(
        files,
        ReplayConfig::default(),
        &mut pipeline,
        &mut incidents,
        |o| {
            if let replay::Output::Connection { record, .. } = o {
                recs.push(record.clone());
            }
            Ok::<(), ()>(())
        },
    )
    .expect("sink");
    (recs, report)
}

fn golden_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join(name)).unwrap()
}

/// Byte offset where packet `n` (1-based) of a little-endian pcap starts.
fn pcap_offset(bytes: &[u8], n: usize) -> usize {
    let mut off = 24;
    for _ in 1..n {
        let incl = u32::from_le_bytes(bytes[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16 + incl;
    }
    off
}

fn sensor(args: &[&str]) -> (bool, Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sensor"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sensor");
    (
        out.status.success(),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn summary(stderr: &str) -> serde_json::Value {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .unwrap_or_else(|| panic!("no summary line in {stderr}"));
    serde_json::from_str(line).unwrap()
}

fn model_arg() -> String {
    model_path().to_string_lossy().into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_capture_cut_mid_packet_names_the_packet_and_keeps_the_ones_before() {
    let dir = Scratch::new("cut");
    let bytes = golden_bytes("tcp_states.pcap");
    // Cut inside packet 5's data, and inside packet 5's record header.
    for (what, cut) in [
        ("data", pcap_offset(&bytes, 5) + 16 + 20),
        ("header", pcap_offset(&bytes, 5) + 8),
    ] {
        let f = dir.file(&format!("cut-{what}.pcap"), &bytes[..cut]);
        let (recs, report) = replay_files(std::slice::from_ref(&f));
        let err = report.error.as_ref().expect("an error");
        assert!(
            matches!(err, ReplayError::Corrupt { packet: 5, file, .. } if *file == f),
            "{what}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(s(&f)) && msg.contains("packet 5"), "{msg}");
        // SYN, SYN-ACK, ACK and the 100-byte request were replayed; the open connection is
        // flushed at the end like the live sensor's shutdown.
        assert_eq!(report.health.packets, 4);
        assert_eq!(report.files, vec![(f.clone(), 4)]);
        assert_eq!(recs.len(), 1);
        assert_eq!((recs[0].orig_packets, recs[0].resp_packets), (3, 1));
        assert_eq!(recs[0].orig_bytes, 100);
        assert_eq!(recs[0].end_reason, EndReason::Shutdown);
    }
}

#[test]
fn a_truncated_pcapng_names_the_packet() {
    let dir = Scratch::new("cutng");
    let bytes = golden_bytes("ipv6.pcapng");
    let f = dir.file("cut.pcapng", &bytes[..bytes.len() - 30]);
    let (_, report) = replay_files(std::slice::from_ref(&f));
    let err = report.error.expect("an error");
    assert!(
        matches!(err, ReplayError::Corrupt { packet: 10, .. }),
        "{err:?}"
    );
    assert_eq!(report.health.packets, 9);
}

#[test]
fn a_packet_longer_than_on_the_wire_is_corrupt() {
    let dir = Scratch::new("corrupt");
    let mut bytes = golden_bytes("vlan.pcap");
    // Packet 3's orig_len (bytes 12..16 of its record header) set below its captured length.
    let off = pcap_offset(&bytes, 3);
    bytes[off + 12..off + 16].copy_from_slice(&10u32.to_le_bytes());
    let f = dir.file("corrupt.pcap", &bytes);
    let (_, report) = replay_files(std::slice::from_ref(&f));
    let err = report.error.expect("an error");
    assert!(
        matches!(err, ReplayError::BadPacket { packet: 3, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("packet 3"), "{err}");
    assert_eq!(report.health.packets, 2);
}

#[test]
fn unsupported_link_type_missing_file_and_non_capture_are_named() {
    let dir = Scratch::new("bad");
    let mut usb = Frames::default();
    usb.push(T0, vec![0u8; 40]);
    let w = dir.file("usb.pcap", &usb.pcap(DataLink::USB_LINUX));
    let (_, report) = replay_files(std::slice::from_ref(&w));
    let err = report.error.expect("an error");
    assert!(
        matches!(&err, ReplayError::UnsupportedLinkType { file, .. } if *file == w),
        "{err:?}"
    );
    assert!(err.to_string().contains("189"), "{err}");
    assert_eq!(report.health.packets, 0);

    let missing = dir.0.join("nope.pcap");
    let (_, report) = replay_files(std::slice::from_ref(&missing));
    let err = report.error.expect("an error");
    assert!(matches!(err, ReplayError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains(s(&missing)), "{err}");

    let text = dir.file("notes.txt", b"this is not a capture\n");
    let (_, report) = replay_files(std::slice::from_ref(&text));
    let err = report.error.expect("an error");
    assert!(matches!(err, ReplayError::NotACapture { .. }), "{err:?}");
}

#[test]
fn reading_stops_at_the_damaged_file_and_keeps_what_came_before() {
    let dir = Scratch::new("multi");
    let bytes = golden_bytes("vlan.pcap");
    let cut = dir.file("cut.pcap", &bytes[..bytes.len() - 5]);
    let good = fixtures_dir().join("udp_icmp.pcap");
    let never = fixtures_dir().join("tcp_states.pcap");
    let (_, report) = replay_files(&[good.clone(), cut.clone(), never]);
    assert!(matches!(
        report.error,
        Some(ReplayError::Corrupt { packet: 4, .. })
    ));
    assert_eq!(report.files, vec![(good, 9), (cut, 3)]);
    assert_eq!(report.health.packets, 12);
}

#[test]
fn the_binary_exits_non_zero_on_damage_after_writing_the_rows_before_it() {
    let dir = Scratch::new("bin-cut");
    let bytes = golden_bytes("tcp_states.pcap");
    let f = dir.file("cut.pcap", &bytes[..pcap_offset(&bytes, 11) + 30]);
    let (ok, code, stdout, stderr) = sensor(&["replay", "--model", &model_arg(), s(&f)]);
    assert!(!ok, "must fail: {stderr}");
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(s(&f)) && stderr.contains("packet 11"),
        "{stderr}"
    );
    // Packets 1-10: the SF connection (finished) and the REJ one (finished at packet 11, not
    // read): SF by its FINs, the REJ attempt flushed at the end.
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows[0].starts_with("0,tcp,http,SF,100,300,"), "{stdout}");
    assert!(rows[1].starts_with("0,tcp,telnet,S0,0,0,"), "{stdout}");
    let sum = summary(&stderr);
    assert_eq!(sum["health"]["packets"], 10);
    assert_eq!(sum["replay"]["connections"], 2);

    let (ok, code, _, stderr) = sensor(&["replay", "--model", &model_arg(), "/nonexistent/x.pcap"]);
    assert!(!ok && code == Some(1), "{stderr}");
    assert!(stderr.contains("/nonexistent/x.pcap"), "{stderr}");
}

#[test]
fn the_binary_writes_csv_that_reads_back_as_nsl_kdd_and_evaluates() {
    let dir = Scratch::new("bin-ok");
    let out = dir.0.join("replay.csv");
    let alerts = dir.0.join("alerts.jsonl");
    let captures: Vec<PathBuf> = [
        "tcp_states.pcap",
        "udp_icmp.pcap",
        "ipv6.pcapng",
        "vlan.pcap",
    ]
    .iter()
    .map(|n| fixtures_dir().join(n))
    .collect();
    let mut args = vec![
        "replay",
        "--model",
        &*Box::leak(model_arg().into_boxed_str()),
        "--format",
        "csv",
        "--output",
        s(&out),
        "--alerts",
        s(&alerts),
        // One alert line per anomalous connection (the default alert stream is incidents).
        "--connection-alerts",
    ];
    args.extend(captures.iter().map(|p| s(p)));
    let (ok, _, stdout, stderr) = sensor(&args);
    assert!(ok, "{stderr}");
    assert!(stdout.is_empty());
    let sum = summary(&stderr);
    assert_eq!(sum["health"]["packets"], 26 + 9 + 10 + 4);
    let connections = sum["replay"]["connections"].as_u64().unwrap();
    let anomalous = sum["replay"]["anomalous"].as_u64().unwrap();
    assert!(connections >= 10, "{sum}");

    let data = sensor::dataset::load(&out, Default::default()).expect("NSL-KDD reader");
    assert_eq!(data.samples.len() as u64, connections);
    let labelled_anomaly = data.samples.iter().filter(|s| s.is_attack()).count() as u64;
    assert_eq!(labelled_anomaly, anomalous);
    let alert_lines = std::fs::read_to_string(&alerts).unwrap();
    let connection_alerts = alert_lines
        .lines()
        .filter(|l| l.contains(r#""type":"alert""#))
        .count();
    assert_eq!(connection_alerts as u64, anomalous);
    for l in alert_lines.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        if v["type"] == "incident" {
            continue;
        }
        assert_eq!(v["type"], "alert", "the live alert format");
        assert_eq!(v["anomalous"], true);
        assert!(v["orig_addr"].is_string() && v["score"].as_f64().unwrap() >= 1.0);
        assert_eq!(v["features"].as_object().unwrap().len(), 28);
    }

    // Evaluate reads the file, and the model agrees with the verdicts it gave: on most rows,
    // not all, because every connection of a capture this small is in a cold host window,
    // whose verdict is the mean over the training data's normal contexts while the row
    // carries the features of their mean composition (docs/features.md, "cold host window";
    // `a_cold_host_window_gets_the_mean_verdict_over_the_contexts` checks the verdicts
    // exactly). (A small training file names the attack types seen in training: this needs
    // no NSL-KDD.)
    let train_data = fixtures_dir().join("../good3.txt");
    let (ok, _, stdout, stderr) = sensor(&[
        "evaluate",
        "--model",
        &model_arg(),
        "--data",
        s(&out),
        "--train-data",
        s(&train_data),
        "--json",
    ]);
    assert!(ok, "{stderr}");
    let e: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(e["metrics"]["rows"], connections);
    let accuracy = e["metrics"]["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.8, "{accuracy}");
}
