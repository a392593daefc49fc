//! Golden tests: small committed captures (`tests/fixtures/captures/`, made by
//! `common::golden_captures`) replayed with exact expected rows.
//!
//! The rows were checked by hand: flags and byte counts from the packets listed in
//! `common::golden_captures`; the window features from the connections before each one (e.g. the
//! REJ to 198.18.0.1:23 is the second connection to that host within 2 s: `count` 2,
//! `srv_count` 1, `rerror_rate` 0.5, `srv_rerror_rate` 1, `same_srv_rate` 0.5). The label column
//! is the committed model's verdict, which pins the model too: retraining the model may change
//! those, and only those. (Every connection of these captures is in a cold host window, so its
//! verdict is the mean over the training data's normal contexts, while the row prints the
//! features of their mean composition: docs/features.md.)
mod common;

use std::path::Path;

use common::*;
use sensor::{
    detect::{Pipeline, Scored},
    features::FeatureConfig,
    flows::{ConnectionRecord, EndReason},
    model::Model,
    replay::{self, ReplayConfig, ReplayReport, output},
};
use sensor_common::conn_state::ConnState;

fn replay_file(path: &Path) -> (Vec<(ConnectionRecord, Scored)>, ReplayReport) {
    let model = Model::load(&model_path()).expect("committed model");
    let mut pipeline =
        Pipeline::new(std::sync::Arc::new(model), FeatureConfig::default()).expect("pipeline");
    let mut rows = Vec::new();
    let mut incidents = sensor::incidents::IncidentTracker::new(Default::default());
    let report = replay::replay_files(
        &[path.to_path_buf()],
        ReplayConfig::default(),
        &mut pipeline,
        &mut incidents,
        |o| {
            if let replay::Output::Connection { record, scored } = o {
                rows.push((record.clone(), scored.clone()));
            }
            Ok::<(), ()>(())
        },
    )
    .expect("sink");
    assert!(report.error.is_none(), "{:?}", report.error);
    (rows, report)
}

fn golden(name: &str) -> (Vec<(ConnectionRecord, Scored)>, ReplayReport) {
    replay_file(&fixtures_dir().join(name))
}

fn csv(rows: &[(ConnectionRecord, Scored)]) -> Vec<String> {
    rows.iter()
        .map(|(r, s)| {
            let mut b = Vec::new();
            output::write_row(&mut b, output::Format::Csv, r, s).unwrap();
            String::from_utf8(b).unwrap().trim_end().to_string()
        })
        .collect()
}

/// `(orig, orig_port, resp, resp_port, conn_state, end_reason, packets, bytes)` of a record.
type Brief = (
    String,
    u16,
    String,
    u16,
    ConnState,
    EndReason,
    (u64, u64),
    (u64, u64),
);

fn brief(rows: &[(ConnectionRecord, Scored)]) -> Vec<Brief> {
    rows.iter()
        .map(|(r, _)| {
            (
                r.orig_addr.to_string(),
                r.orig_port,
                r.resp_addr.to_string(),
                r.resp_port,
                r.conn_state,
                r.end_reason,
                (r.orig_packets, r.resp_packets),
                (r.orig_bytes, r.resp_bytes),
            )
        })
        .collect()
}

#[allow(clippy::too_many_arguments)] // one argument per column of the brief
fn b(
    o: &str,
    op: u16,
    r: &str,
    rp: u16,
    st: ConnState,
    end: EndReason,
    pk: (u64, u64),
    by: (u64, u64),
) -> Brief {
    (o.into(), op, r.into(), rp, st, end, pk, by)
}

#[test]
fn committed_captures_are_what_the_generator_writes() {
    let update = std::env::var_os("UPDATE_REPLAY_CAPTURES").is_some();
    for (name, bytes) in golden_captures() {
        let path = fixtures_dir().join(name);
        if update {
            std::fs::create_dir_all(fixtures_dir()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (UPDATE_REPLAY_CAPTURES=1 writes it)",
                path.display()
            )
        });
        assert!(
            committed == bytes,
            "{name} differs from its generator; regenerate with UPDATE_REPLAY_CAPTURES=1"
        );
        assert!(bytes.len() < 50_000, "{name} is too large to commit");
    }
}

#[test]
fn tcp_states_sf_rej_rsto_rstr_s0_are_exact() {
    use ConnState::*;
    use EndReason::*;
    let (rows, report) = golden("tcp_states.pcap");
    let (c, s) = ("198.18.0.2", "198.18.0.1");
    assert_eq!(
        brief(&rows),
        vec![
            // 9 packets; the final ACK after the second FIN is in the record (its close
            // settle), as in Zeek's conn.log.
            b(c, 40000, s, 80, SF, Fin, (5, 4), (100, 300)),
            b(c, 40001, s, 23, REJ, Rst, (1, 1), (0, 0)),
            b(c, 40002, s, 7000, RSTO, Rst, (4, 2), (50, 60)),
            b(c, 40003, s, 7000, RSTR, Rst, (3, 2), (10, 0)),
            // Three SYNs to a silent host; finalised at its idle deadline (attempt timeout 5 s)
            // once the late UDP packet moved the capture clock to +20 s.
            b(c, 40004, "198.18.0.3", 22, S0, Idle, (3, 0), (0, 0)),
            b(c, 5000, s, 123, S0, Shutdown, (1, 0), (48, 0)),
        ]
    );
    assert_eq!(
        csv(&rows),
        [
            "0,tcp,http,SF,100,300,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,0,0,0,0,1,0,0,148,191,0.78,0.05,0.09,0.02,0.02,0,0.02,0.04,normal,0",
            "0,tcp,telnet,REJ,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2,1,0,0,0.5,1,0.5,1,0,148,190,0.78,0.06,0.09,0.02,0.02,0,0.02,0.05,anomaly,0",
            "0,tcp,other,RSTO,50,60,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,3,1,0,0,0.33,0,0.33,1,0,149,189,0.77,0.06,0.09,0.02,0.02,0,0.02,0.04,normal,0",
            "0,tcp,other,RSTR,10,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,4,2,0,0,0.25,0,0.5,0.75,0,149,189,0.77,0.06,0.09,0.02,0.02,0,0.02,0.04,anomaly,0",
            "3,tcp,ssh,S0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,0,0,1,0,0,146,188,0.78,0.05,0.09,0.02,0.02,0.01,0.02,0.04,anomaly,0",
            "0,udp,ntp_u,SF,48,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,0,0,0,0,1,0,0,149,187,0.76,0.07,0.09,0.02,0.02,0,0.02,0.04,normal,0",
        ]
    );
    let h = report.health;
    assert_eq!((h.packets, h.accounted, h.flows_created), (26, 26, 6));
    // Events: 6 connections begun, 4 answered (the REJ's answer and reset in one), 4 finished,
    // 1 final ACK after both FINs (the SF one).
    assert_eq!((h.events_sent, report.stats.records_idle), (14, 1));
    // Connection times are the capture's own (Unix) timestamps.
    assert_eq!(rows[0].0.start_unix_ns, T0);
    assert_eq!(rows[0].0.end_unix_ns, T0 + 7 * MS);
    assert_eq!(rows[4].0.end_unix_ns, T0 + 3400 * MS);
}

#[test]
fn udp_and_icmp_are_exact() {
    use ConnState::*;
    use EndReason::*;
    let (rows, report) = golden("udp_icmp.pcap");
    let (c, s) = ("198.18.0.2", "198.18.0.1");
    assert_eq!(
        brief(&rows),
        vec![
            b(c, 5353, s, 53, SF, Shutdown, (1, 1), (30, 120)),
            b(c, 5354, s, 53, SF, Shutdown, (1, 1), (31, 121)),
            b(c, 6000, s, 9999, S0, Shutdown, (1, 0), (10, 0)),
            // Echo request/reply pairs meet under the identifier (0x1234) as both "ports";
            // 56 payload bytes after the 8-byte ICMP header, twice each way.
            // ICMP's state is Zeek's `OTH` (the KDD flag below is `SF`).
            b(c, 0x1234, s, 0x1234, OTH, Shutdown, (2, 2), (112, 112)),
        ]
    );
    // The KDD row describes one message, as the data's ICMP rows do: duration 0, `src_bytes`
    // the originator's mean message with its 8-byte header (112 / 2 + 8), `dst_bytes` the
    // responder's.
    assert_eq!(rows[3].0.icmp_type, Some(8));
    assert_eq!(
        csv(&rows),
        [
            "0,udp,domain_u,SF,30,120,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,0,0,0,0,1,0,0,148,191,0.78,0.05,0.09,0.02,0.02,0,0.02,0.04,normal,0",
            "0,udp,domain_u,SF,31,121,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2,2,0,0,0,0,1,0,0,148,191,0.78,0.05,0.09,0.02,0.02,0,0.02,0.04,normal,0",
            "0,udp,other,SF,10,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,3,1,0,0,0,0,0.33,0.67,0,149,189,0.77,0.06,0.09,0.02,0.02,0,0.02,0.04,anomaly,0",
            "0,icmp,eco_i,SF,64,64,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,4,1,0,0,0,0,0.25,0.75,0,149,188,0.77,0.06,0.09,0.02,0.02,0,0.02,0.04,normal,0",
        ]
    );
    assert_eq!((report.health.packets, report.health.accounted), (9, 9));
}

#[test]
fn ipv6_pcapng_with_nanosecond_stamps_is_exact() {
    use ConnState::*;
    use EndReason::*;
    let (rows, report) = golden("ipv6.pcapng");
    let (c, s) = ("2001:2::2", "2001:2::1");
    assert_eq!(
        brief(&rows),
        vec![
            b(c, 40010, s, 80, SF, Fin, (5, 3), (20, 40)),
            b(c, 7, s, 7, OTH, Shutdown, (1, 1), (16, 16)),
        ]
    );
    assert_eq!(rows[0].0.ip_version, 6);
    // if_tsresol 9: nanoseconds survive.
    assert_eq!(rows[0].0.start_unix_ns, T0 + 123);
    assert_eq!(rows[0].0.end_unix_ns, T0 + 6 * MS + 123);
    assert_eq!(rows[1].0.icmp_type, Some(128));
    assert_eq!(
        csv(&rows),
        [
            "0,tcp,http,SF,20,40,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,0,0,0,0,1,0,0,148,191,0.78,0.05,0.09,0.02,0.02,0,0.02,0.04,normal,0",
            "0,icmp,eco_i,SF,24,24,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2,1,0,0,0,0,0.5,1,0,148,190,0.78,0.06,0.09,0.02,0.02,0,0.02,0.04,normal,0",
        ]
    );
    assert_eq!(report.health.packets, 10);
}

#[test]
fn vlan_and_qinq_frames_are_exact() {
    use ConnState::*;
    use EndReason::*;
    let (rows, report) = golden("vlan.pcap");
    let (c, s) = ("198.18.0.2", "198.18.0.1");
    assert_eq!(
        brief(&rows),
        vec![
            b(c, 40020, s, 25, REJ, Rst, (1, 1), (0, 0)),
            b(c, 6001, s, 53, SF, Shutdown, (1, 1), (33, 77)),
        ]
    );
    assert_eq!(
        csv(&rows),
        [
            "0,tcp,smtp,REJ,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,2,1,0,0,0.5,1,0.5,1,0,148,190,0.78,0.06,0.09,0.02,0.02,0,0.02,0.05,anomaly,0",
            "0,udp,domain_u,SF,33,77,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,0,0,0,0,1,0,0,148,191,0.78,0.05,0.09,0.02,0.02,0,0.02,0.04,normal,0",
        ]
    );
    assert_eq!((report.health.packets, report.health.accounted), (4, 4));
}

#[test]
fn the_pcap_and_pcapng_of_the_same_frames_replay_alike() {
    // The TCP-states frames written as pcapng instead of pcap: identical rows.
    let dir = std::env::temp_dir().join(format!("replay-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = fixtures_dir().join("tcp_states.pcap");
    let mut frames = Frames::default();
    sensor::replay::for_each_packet(&pcap, |p| frames.push(p.ts_ns, p.data.to_vec())).unwrap();
    let ng = dir.join("tcp_states.pcapng");
    std::fs::write(&ng, frames.pcapng()).unwrap();
    let (a, _) = replay_file(&pcap);
    let (b, _) = replay_file(&ng);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(csv(&a), csv(&b));
    assert_eq!(
        a.iter().map(|r| &r.0).collect::<Vec<_>>(),
        b.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
}

#[test]
fn jsonl_and_wide_csv_carry_the_five_tuple_end_time_and_verdict() {
    let (rows, _) = golden("tcp_states.pcap");
    let (r, s) = &rows[1];
    let v = output::json_row(r, s);
    assert_eq!(v["orig_addr"], "198.18.0.2");
    assert_eq!(v["resp_port"], 23);
    assert_eq!(v["transport"], "tcp");
    assert_eq!(v["conn_state"], "REJ");
    assert_eq!(v["end_unix_ns"], T0 + 101 * MS);
    assert_eq!(v["verdict"], "anomaly");
    assert_eq!(v["anomalous"], true);
    assert_eq!(v["score"], s.verdict.score);
    let kdd = v["kdd"].as_array().unwrap();
    assert_eq!(kdd.len(), 41);
    assert_eq!(
        (kdd[1].as_str(), kdd[2].as_str(), kdd[3].as_str()),
        (Some("tcp"), Some("telnet"), Some("REJ"))
    );
    let mut w = Vec::new();
    output::write_header(&mut w, output::Format::WideCsv).unwrap();
    output::write_row(&mut w, output::Format::WideCsv, r, s).unwrap();
    let text = String::from_utf8(w).unwrap();
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(lines[0].len(), lines[1].len());
    assert_eq!(lines[0][0], "duration");
    assert_eq!(
        lines[0][41..],
        [
            "orig_addr",
            "orig_port",
            "resp_addr",
            "resp_port",
            "transport",
            "start_unix_ns",
            "end_unix_ns",
            "verdict",
            "score"
        ]
    );
    assert_eq!(
        lines[1][41..45],
        ["198.18.0.2", "40001", "198.18.0.1", "23"]
    );
    assert_eq!(lines[1][47], (T0 + 101 * MS).to_string());
    assert_eq!(lines[1][48], "anomaly");
}
