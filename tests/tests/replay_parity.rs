//! Parity of live mode and offline replay: the same traffic, observed live by the XDP/TC sensor
//! and captured by tcpdump on the same interface at the same time, gives the same connection
//! records (counts, bytes, flags, ports, end reasons) and the same features and verdicts.
//!
//! Live verdicts come from the live records (`sensor flows`) through `detect::Pipeline` (the
//! stage `sensor run` feeds), in the event order `features::events_from_records` rebuilds from
//! the records' times (not the order the live agent received its events); replay verdicts from
//! the `sensor replay` binary. Only times differ (kernel clock vs. pcap timestamps) and are not compared, except that
//! durations must agree to a few milliseconds.
//!
//! Two workloads: ordinary exchanges (every record equal, times aside), and scans (the same
//! connections, the same verdict for at least 99% of them).
//!
//! The capture is filtered to the server's addresses (plus the clock marker, below), and the live
//! records to those with the server as an endpoint, so link-local IPv6 chatter that one of the two
//! may catch at the edges of the capture window does not enter either pipeline.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use integration_tests::*;
use sensor::{
    detect::Pipeline,
    features::FeatureConfig,
    flows::{ConnectionRecord, EndReason},
    model::Model,
};

/// A scratch directory removed on drop (every exit path, panics included).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn model_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model")
}

/// The identity used to match a live record with a replayed one.
type Id = (String, String, u16, String, u16, Option<u8>);

fn id(r: &ConnectionRecord) -> Id {
    (
        r.transport.as_str().to_string(),
        r.orig_addr.to_string(),
        r.orig_port,
        r.resp_addr.to_string(),
        r.resp_port,
        r.icmp_type,
    )
}

/// Everything but the times (the duration kept, and whether an answer came).
fn timeless(r: &ConnectionRecord) -> ConnectionRecord {
    ConnectionRecord {
        start_unix_ns: 0,
        end_unix_ns: r.end_unix_ns - r.start_unix_ns,
        answer_unix_ns: r.answer_unix_ns.map(|_| 0),
        final_unix_ns: 0,
        ..r.clone()
    }
}

/// What one observation gave: the live records with the server as an endpoint, scored through
/// the live pipeline in the event order their times give, by identity; the replayed rows
/// (record and JSON row); replay's stderr.
struct Observed {
    live_scored: BTreeMap<Id, (ConnectionRecord, sensor::detect::Scored)>,
    replayed: Vec<(ConnectionRecord, serde_json::Value)>,
    stderr: String,
}

/// Runs `send` in `lab` while `sensor flows` watches the server's interface and tcpdump
/// captures it, then replays the capture with the same settings (`FAST_TIMEOUTS`).
fn observe(lab: &Pair, send: impl FnOnce(&Pair)) -> Observed {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("replay-parity-{}", lab::unique_tag())));
    std::fs::create_dir_all(&scratch.0).unwrap();
    let pcap = scratch.0.join("live.pcap");
    // The marker: a non-IP frame (ethertype 0x88b5, local experimental) sent last. The sensor
    // counts it as non_ip and creates no flow; in the capture it moves replay's clock past the
    // idle timeouts, as the live sensor's own clock moved on while it kept running.
    let server_mac = mac_of(&lab.server, &lab.veth.b).replace(':', "");
    let marker = format!("{server_mac}020000000001{:04x}{}", 0x88b5, "00".repeat(46));
    let filter = format!(
        "host {} or host {} or ether proto 0x88b5",
        lab.server_v4, lab.server_v6
    );
    let mut tcpdump = lab
        .server
        .spawn(
            "tcpdump",
            &[
                "-i",
                &lab.veth.b,
                "-w",
                pcap.to_str().unwrap(),
                "-U",
                "-n",
                "-s",
                "0",
                "--immediate-mode",
                "-B",
                "8192",
                "-Z",
                "root",
                // Bounded: far more than this test sends.
                "-c",
                "5000",
                &filter,
            ],
        )
        .unwrap();
    tcpdump
        .wait_for_stderr("listening on", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("tcpdump did not start: {e}"));
    let sensor = SensorRun::start(&lab.server, &[&lab.veth.b], FAST_TIMEOUTS);
    send(lab);
    // Longer than the 1 s idle timeouts plus a scan period: the live sensor finalises the UDP
    // and ICMP conversations as idle.
    std::thread::sleep(Duration::from_millis(1600));
    lab.client
        .run("python3", &[&traffic("raw_frame.py"), &lab.veth.a, &marker])
        .unwrap();
    // tcpdump writes each packet as it comes (`-U`): wait until the marker is in the file (its
    // source MAC and ethertype), so that terminating cannot lose it on a busy machine.
    let marker_bytes: Vec<u8> = (0..8)
        .map(|i| u8::from_str_radix(&marker[12 + 2 * i..14 + 2 * i], 16).unwrap())
        .collect();
    let written = integration_tests::wait_until(Duration::from_secs(10), || {
        std::fs::read(&pcap).is_ok_and(|b| b.windows(marker_bytes.len()).any(|w| w == marker_bytes))
    });
    assert!(written, "the marker frame never reached {}", pcap.display());
    tcpdump.terminate();
    let (_, _, td_err) = tcpdump
        .wait_output(Duration::from_secs(10))
        .expect("tcpdump exit");
    let live = sensor.stop();
    live.assert_packets_add_up();

    // Replay the capture with the live run's settings.
    let mut args: Vec<&str> = vec!["replay", "--format", "jsonl"];
    let model = model_path();
    args.extend(["--model", model.to_str().unwrap()]);
    args.extend(FAST_TIMEOUTS);
    args.push(pcap.to_str().unwrap());
    let out = std::process::Command::new(sensor_bin())
        .args(&args)
        .output()
        .expect("run sensor replay");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "replay failed: {stderr}\ntcpdump: {td_err}"
    );
    let replayed: Vec<(ConnectionRecord, serde_json::Value)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json row");
            (serde_json::from_value(v.clone()).expect("record"), v)
        })
        .collect();

    // Live verdicts: the server's records, in emission order, through the live pipeline.
    let is_server = |r: &ConnectionRecord| {
        [&lab.server_v4, &lab.server_v6]
            .iter()
            .any(|a| r.orig_addr.to_string() == **a || r.resp_addr.to_string() == **a)
    };
    let mut pipeline = Pipeline::new(
        Arc::new(Model::load(&model_path()).expect("model")),
        FeatureConfig::default(),
    )
    .unwrap();
    let server_records: Vec<ConnectionRecord> = live
        .records
        .iter()
        .filter(|r| is_server(r))
        .cloned()
        .collect();
    let scored = pipeline.process_events(&sensor::features::events_from_records(&server_records));
    let finished_in_event_order = sensor::features::events_from_records(&server_records)
        .into_iter()
        .filter_map(|e| match e {
            sensor::flows::ConnEvent::Finished(r) => Some(r),
            _ => None,
        });
    let live_scored: BTreeMap<Id, (ConnectionRecord, sensor::detect::Scored)> =
        finished_in_event_order
            .zip(scored)
            .map(|(r, s)| (id(&r), (r, s)))
            .collect();
    Observed {
        live_scored,
        replayed,
        stderr: stderr.into_owned(),
    }
}

/// An HTTP server on the server's port 8080, listening when this returns (killed on drop).
fn http_server(lab: &Pair) -> Proc {
    let p = lab
        .server
        .spawn(
            "python3",
            &["-m", "http.server", "8080", "--bind", &lab.server_v4],
        )
        .unwrap();
    wait_listening(&lab.server, 8080);
    p
}

#[test]
fn live_and_replayed_traffic_give_the_same_records_and_verdicts() {
    require_root();
    let lab = Pair::new().unwrap();

    let _http = http_server(&lab);
    let _tcp = lab
        .server
        .spawn(
            "python3",
            &[
                &traffic("tcp_server.py"),
                &lab.server_v4,
                "7000",
                "100",
                "300",
                "close",
                "60",
            ],
        )
        .unwrap();
    let _udp = lab
        .server
        .spawn(
            "python3",
            &[
                &traffic("udp_server.py"),
                &lab.server_v4,
                "5353",
                "120",
                "60",
            ],
        )
        .unwrap();
    wait_listening(&lab.server, 7000);
    wait_udp_bound(&lab.server, 5353);

    let Observed {
        live_scored,
        replayed,
        stderr,
    } = observe(&lab, |lab| {
        // HTTP request/response (SF).
        lab.client
            .run(
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    "--max-time",
                    "5",
                    &format!("http://{}:8080/", lab.server_v4),
                ],
            )
            .unwrap();
        // A SYN to a closed port (REJ).
        let _ = lab
            .client
            .cmd("curl")
            .args([
                "-s",
                "--max-time",
                "2",
                &format!("http://{}:9/", lab.server_v4),
            ])
            .status();
        // An exchange the client aborts (RSTO), after the server's FIN: an abort that crosses the
        // FIN is seen in either order by the sensor's two hooks and by tcpdump, so the record at
        // the RST would count the FIN in one and not the other (one CI run failed so).
        lab.client
            .run(
                "python3",
                &[
                    &traffic("tcp_client.py"),
                    &lab.server_v4,
                    "7000",
                    "100",
                    "300",
                    "abort-after-fin",
                    "1",
                    "10",
                ],
            )
            .unwrap();
        // Three UDP request/responses, 0.6 s apart so that each is finalised by its own idle scan
        // (a scan's records come out in hash order live and in end-time order in replay).
        lab.client
            .run(
                "python3",
                &[
                    &traffic("udp_client.py"),
                    &lab.server_v4,
                    "5353",
                    "40",
                    "3",
                    "0.6",
                    // Fixed, distinct source ports: three flows for sure.
                    "21000",
                ],
            )
            .unwrap();
        // ICMP echo, v4 and v6.
        lab.client
            .run("ping", &["-c", "3", "-i", "0.2", "-W", "1", &lab.server_v4])
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        lab.client
            .run(
                "ping",
                &["-6", "-c", "2", "-i", "0.2", "-W", "1", &lab.server_v6],
            )
            .unwrap();
    });
    let replay_by_id: BTreeMap<Id, &(ConnectionRecord, serde_json::Value)> =
        replayed.iter().map(|r| (id(&r.0), r)).collect();
    assert_eq!(
        replay_by_id.len(),
        replayed.len(),
        "replayed identities are unique"
    );

    let context = || {
        format!(
            "live: {:#?}\nreplayed: {:#?}\nreplay stderr: {stderr}",
            live_scored.values().map(|x| &x.0).collect::<Vec<_>>(),
            replayed.iter().map(|x| &x.0).collect::<Vec<_>>()
        )
    };
    assert_eq!(
        live_scored.keys().collect::<Vec<_>>(),
        replay_by_id.keys().collect::<Vec<_>>(),
        "the same connections\n{}",
        context()
    );
    // The traffic above, all present: SF, REJ, RSTO, 3 UDP, ICMP v4 and v6.
    let states: Vec<String> = replayed
        .iter()
        .map(|(r, _)| format!("{}/{}", r.transport.as_str(), r.conn_state.as_str()))
        .collect();
    eprintln!("replayed {} connections: {states:?}", replayed.len());
    for want in ["tcp/SF", "tcp/REJ", "tcp/RSTO", "udp/SF", "icmp/OTH"] {
        assert!(states.iter().any(|s| s == want), "no {want}: {states:?}");
    }
    assert!(replayed.iter().filter(|(r, _)| r.resp_port == 5353).count() == 3);
    assert!(replayed.iter().any(|(r, _)| r.ip_version == 6));
    assert!(
        replayed
            .iter()
            .any(|(r, _)| r.end_reason == EndReason::Idle),
        "the marker moved replay's clock past the idle timeouts: {states:?}"
    );

    // The 2 s window's boundary: live times come from the kernel's clock, the capture's from
    // the capture's (durations agree within 50 ms, checked below). A connection that began
    // within that of another's moment minus 2 s is inside one window and outside the other
    // by chance (one CI rehearsal in many: an ICMP echo's `count` 5 live, 4 in replay), so
    // the 2 s window's features (KDD 23-31) of such a connection are not compared.
    const CLOCKS_NS: u64 = 50_000_000;
    let starts: Vec<u64> = replayed.iter().map(|(r, _)| r.start_unix_ns).collect();
    let at_the_edge = |r: &ConnectionRecord| {
        let moment = r.handshake_answer().map_or(r.start_unix_ns, |(at, _)| at);
        let edge = moment.saturating_sub(2_000_000_000);
        starts.iter().any(|&s| s.abs_diff(edge) < CLOCKS_NS)
    };
    for (k, (l, scored)) in &live_scored {
        let (r, row) = replay_by_id[k];
        let edge = at_the_edge(r);
        if edge {
            eprintln!("{k:?}: a connection began at its 2 s window's edge; KDD 23-31 not compared");
        }
        let (mut lt, mut rt) = (timeless(l), timeless(r));
        let (ld, rd) = (lt.end_unix_ns, rt.end_unix_ns);
        assert!(
            ld.abs_diff(rd) < 50_000_000,
            "durations {ld} vs {rd} ns for {k:?}"
        );
        (lt.end_unix_ns, rt.end_unix_ns) = (0, 0);
        assert_eq!(lt, rt, "record of {k:?}");
        let kdd: Vec<serde_json::Value> = row["kdd"].as_array().unwrap().clone();
        let mut windows_differ = false;
        for (i, v) in kdd.iter().enumerate() {
            let want = match i {
                1..=3 => serde_json::Value::from(sensor::replay::output::feature_text(
                    &scored.features,
                    i,
                )),
                _ => serde_json::Value::from(scored.features.0[i]),
            };
            if edge && (22..=30).contains(&i) {
                windows_differ |= *v != want;
                continue;
            }
            assert_eq!(
                *v,
                want,
                "feature {} of {k:?}",
                sensor::kdd::FEATURE_NAMES[i]
            );
        }
        if windows_differ {
            // Its inputs differ, so may its score: the rest of its record was compared.
            eprintln!("{k:?}: 2 s window features differ at the edge; verdict not compared");
            continue;
        }
        assert_eq!(
            row["anomalous"], scored.verdict.anomalous,
            "verdict of {k:?}"
        );
        assert_eq!(row["score"], scored.verdict.score, "score of {k:?}");
    }
    // The kernel's and replay's health counters agree on what both saw.
    let summary: serde_json::Value = serde_json::from_str(
        stderr
            .lines()
            .find_map(|l| l.strip_prefix("summary: "))
            .expect("replay summary"),
    )
    .unwrap();
    assert!(summary["health"]["non_ip"].as_u64().unwrap() >= 1);
    assert_eq!(
        summary["replay"]["connections"].as_u64().unwrap() as usize,
        replayed.len()
    );
}

/// Attacks watched live and replayed (issue 10's goal: the same verdict for at least 99% of
/// connections on the same traffic). An nmap SYN scan of 300 ports (a few open, the rest
/// refused) and a UDP scan of 60 ports, back to back, so that their connections fill each
/// other's windows: the connections are the same, and so is every verdict. (Once the paths
/// differed here: 98% of a UDP scan flagged live, 78% in replay.)
#[test]
fn scans_watched_live_and_replayed_get_the_same_verdicts() {
    require_root();
    let lab = Pair::new().unwrap();
    let _http = http_server(&lab);
    let Observed {
        live_scored,
        replayed,
        stderr,
    } = observe(&lab, |lab| {
        for (kind, ports) in [("-sS", "7900-8199"), ("-sU", "6000-6059")] {
            lab.client
                .run(
                    "timeout",
                    &[
                        "60",
                        "nmap",
                        kind,
                        "-n",
                        "-Pn",
                        "--max-retries",
                        "0",
                        // Paced so that tcpdump keeps up (its drops would be connections the
                        // replay never sees): 2 s for the SYN scan.
                        "--max-rate",
                        "150",
                        "-p",
                        ports,
                        &lab.server_v4,
                    ],
                )
                .unwrap_or_else(|e| panic!("nmap {kind}: {e}"));
        }
        // Past the 1 s idle timeouts and a scan period, as in the test above.
        std::thread::sleep(Duration::from_millis(1600));
    });
    let replay_by_id: BTreeMap<Id, &(ConnectionRecord, serde_json::Value)> =
        replayed.iter().map(|r| (id(&r.0), r)).collect();
    let live_only: Vec<_> = live_scored
        .iter()
        .filter(|(k, _)| !replay_by_id.contains_key(*k))
        .map(|(_, (r, _))| r)
        .collect();
    let replay_only: Vec<_> = replay_by_id
        .iter()
        .filter(|(k, _)| !live_scored.contains_key(*k))
        .map(|(_, r)| &r.0)
        .collect();
    assert!(
        live_only.is_empty() && replay_only.is_empty(),
        "the same connections: live only {live_only:#?}\nreplay only {replay_only:#?}\n{stderr}"
    );
    let by_kind = |transport: &str| {
        let (mut n, mut agree, mut flagged_live, mut flagged_replay) = (0, 0, 0, 0);
        for (k, (r, scored)) in &live_scored {
            if r.transport.as_str() != transport {
                continue;
            }
            let row = &replay_by_id[k].1;
            let replay_anomalous = row["anomalous"].as_bool().unwrap();
            n += 1;
            agree += usize::from(replay_anomalous == scored.verdict.anomalous);
            flagged_live += usize::from(scored.verdict.anomalous);
            flagged_replay += usize::from(replay_anomalous);
        }
        eprintln!(
            "{transport}: {n} connections, verdicts agree for {agree}; flagged live {flagged_live}, \
             in replay {flagged_replay}"
        );
        (n, agree, flagged_live)
    };
    let (tcp, tcp_agree, tcp_flagged) = by_kind("tcp");
    let (udp, udp_agree, udp_flagged) = by_kind("udp");
    let (icmp, icmp_agree, _) = by_kind("icmp");
    assert!(tcp >= 250, "the SYN scan's connections: {tcp}");
    assert!(udp >= 50, "the UDP scan's connections: {udp}");
    // The scans are attacks, and read as such (issue 10's attack goal is 90%).
    assert!(
        tcp_flagged * 10 >= tcp * 9,
        "SYN scan flagged {tcp_flagged} of {tcp}"
    );
    assert!(
        udp_flagged * 10 >= udp * 9,
        "UDP scan flagged {udp_flagged} of {udp}"
    );
    let (n, agree) = (tcp + udp + icmp, tcp_agree + udp_agree + icmp_agree);
    assert!(
        agree * 100 >= n * 99,
        "verdicts agree for {agree} of {n} connections (goal 99%)"
    );
}

/// The flow table and health counters after the same frames through the real XDP program
/// (BPF_PROG_TEST_RUN) and through replay's user-space tables: equal entry for entry, times
/// aside. Covers what the live test's traffic does not: fragments (attributed, orphaned, wrong),
/// VLAN and QinQ, IPv6 extension headers, malformed, truncated, non-IP and unsupported frames,
/// a port-reusing SYN, every encapsulation (and each cut at every byte), every frame of the
/// golden captures, and every Ethernet frame of Zeek's test traces where they are present
/// (`../shared/data/zeek` or `ZEEK_DATA_DIR`; see `sensor/tests/zeek_traces.rs`).
#[test]
fn the_kernel_and_replay_tables_agree_frame_for_frame() {
    use integration_tests::packet::{flags::*, *};
    use sensor::replay::{LinkType, ReplayConfig, Replayer};
    use sensor_common::{FlowKey, FlowValue};

    let mut frames: Vec<Vec<u8>> = Vec::new();
    let golden =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sensor/tests/fixtures/captures");
    for name in [
        "tcp_states.pcap",
        "udp_icmp.pcap",
        "ipv6.pcapng",
        "vlan.pcap",
    ] {
        sensor::replay::for_each_packet(&golden.join(name), |p| frames.push(p.data.to_vec()))
            .unwrap();
    }
    let zeek = std::env::var_os("ZEEK_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/zeek")
        });
    let mut zeek_files = Vec::new();
    let mut dirs = vec![zeek.join("traces")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                zeek_files.push(p);
            }
        }
    }
    zeek_files.sort();
    for f in &zeek_files {
        // Ethernet frames only (what XDP sees), and no bigger than BPF_PROG_TEST_RUN takes.
        let _ = sensor::replay::for_each_packet(f, |p| {
            if p.link == LinkType::Ethernet && p.data.len() <= 3000 {
                frames.push(p.data.to_vec());
            }
        });
    }
    // Every encapsulation, whole and cut at every byte from the Ethernet header on.
    for (_, f) in encapsulated_frames() {
        for cut in 14..=f.len() {
            frames.push(f[..cut].to_vec());
        }
    }
    let (c, s) = (v4(9, 1), v4(9, 2));
    // Fragments: a train (first, middle, last), a wrong one (not a multiple of 8), an orphan.
    let frag = |id: u16, more: bool, offset: u16, payload: &[u8]| {
        let mut h = Ipv4::new(c, s, 17);
        h.id = id;
        h.more_fragments = more;
        h.frag_offset = offset;
        ethernet(&[], 0x0800, &h.build(payload))
    };
    frames.push(frag(
        77,
        true,
        0,
        &udp(7000, 7001, Some(8 + 16 + 16 + 40), &[1; 16]),
    ));
    frames.push(frag(77, true, 3, &[2; 16]));
    frames.push(frag(77, false, 5, &[3; 40]));
    frames.push(frag(78, true, 0, &udp(7002, 7003, Some(100), &[1; 13])));
    frames.push(frag(79, false, 9, &[4; 8]));
    // IPv6 with extension headers.
    frames.push(ethernet(
        &[],
        0x86dd,
        &ipv6(
            v6(3),
            v6(4),
            &[(0, ext8()), (60, ext8())],
            6,
            &tcp(5, 6, SYN, None, &[9; 10]),
        ),
    ));
    // A finished connection, then a SYN reusing its 5-tuple.
    for (from_c, f) in [
        (true, SYN),
        (false, SYN | ACK),
        (true, FIN | ACK),
        (false, FIN | ACK),
        (true, SYN),
    ] {
        frames.push(if from_c {
            tcp4(c, 40000, s, 80, f, &[])
        } else {
            tcp4(s, 80, c, 40000, f, &[])
        });
    }
    // URG, land.
    frames.push(tcp4(c, 40001, s, 80, SYN | URG, &[1; 3]));
    frames.push(tcp4(c, 99, c, 99, SYN, &[]));
    // Malformed, truncated, non-IP, unsupported transport.
    let mut bad_ihl = Ipv4::new(c, s, 6);
    bad_ihl.ihl = Some(3);
    frames.push(ethernet(
        &[],
        0x0800,
        &bad_ihl.build(&tcp(1, 2, SYN, None, &[])),
    ));
    let mut short = tcp4(c, 1, s, 2, SYN, &[]);
    short.truncate(14 + 20 + 7);
    frames.push(short);
    frames.push(ethernet(&[], 0x0806, &[0; 28]));
    frames.push(ethernet(&[], 0x0800, &Ipv4::new(c, s, 47).build(&[0; 8])));
    let long: Vec<(u8, Vec<u8>)> = (0..7).map(|_| (60u8, ext8())).collect();
    frames.push(ethernet(
        &[],
        0x86dd,
        &ipv6(v6(7), v6(8), &long, 6, &tcp(1, 2, SYN, None, b"")),
    ));

    let capacity = 1 << 16;
    let mut x = XdpHarness::new(capacity);
    let mut r = Replayer::new(ReplayConfig {
        table_size: capacity,
        ..ReplayConfig::default()
    });
    let mut out = Vec::new();
    // A microsecond per frame: no idle sweep or linger expiry moves entries out of the replay
    // table (the shortest, the 1 s early verdict and 5 s linger, are far off), as nothing moves
    // them out of the kernel's here; and a connection restarted on its 5-tuple starts at
    // another time than the one before, which is how the lifecycle tells them apart.
    for (i, f) in frames.iter().enumerate() {
        x.run(f);
        r.packet(
            1_700_000_000_000_000_000 + i as u64 * 1_000,
            f.len() as u64,
            LinkType::Ethernet,
            f,
            &mut out,
        );
    }
    // Times differ (kernel clock, capture clock); whether the originator's ACK was timed must not.
    let untimed = |v: &FlowValue| FlowValue {
        first_seen_ns: 0,
        last_seen_ns: 0,
        orig_ack_units: u32::from(v.orig_ack_units != 0),
        ..*v
    };
    // Where timed, the originator's first ACK is one of the flow's own packets.
    let ack_in_flow = |v: &FlowValue| {
        v.orig_ack_units == 0 || (v.first_seen_ns..=v.last_seen_ns).contains(&v.orig_ack_ns())
    };
    let (kernel_flows, replay_flows) = (x.flows(), r.tables());
    let timed_acks = kernel_flows
        .iter()
        .filter(|(_, v)| v.orig_ack_units != 0)
        .count();
    assert!(
        timed_acks > 0,
        "no originator ACK timed in the kernel table"
    );
    for (k, v) in kernel_flows
        .iter()
        .map(|(k, v)| (k, v))
        .chain(replay_flows.iter())
    {
        assert!(ack_in_flow(v), "orig_ack_ns outside its flow: {k:?} {v:?}");
    }
    let kernel: BTreeMap<FlowKey, FlowValue> =
        kernel_flows.iter().map(|(k, v)| (*k, untimed(v))).collect();
    let replay: BTreeMap<FlowKey, FlowValue> =
        replay_flows.iter().map(|(k, v)| (*k, untimed(v))).collect();
    assert_eq!(kernel.len(), replay.len(), "entries");
    for (k, v) in &kernel {
        assert_eq!(Some(v), replay.get(k), "entry {k:?}");
    }
    let (kh, rh) = (x.health(), r.health());
    // Nothing drains the kernel's ring buffer here: what did not fit is dropped (or, for a
    // restart's hand-over, parked), not lost.
    assert_eq!(
        kh.events_sent + kh.ringbuf_drops + kh.restarts_parked,
        rh.events_sent
    );
    let no_ring = |h: &sensor_common::Health| sensor_common::Health {
        events_sent: 0,
        ringbuf_drops: 0,
        restarts_parked: 0,
        restarts_lost: 0,
        ..*h
    };
    assert_eq!(no_ring(&kh), no_ring(&rh), "health counters");
    assert!(kh.unattributed_fragments >= 1 && kh.parse_errors >= 1 && kh.truncated >= 1);
    assert!(kh.non_ip >= 1 && kh.unsupported_l4 >= 1 && kh.flows_restarted >= 1);
    assert!(kh.tunnel_payloads >= 10 && kh.too_deep == 0, "{kh:?}");
    if !zeek_files.is_empty() {
        eprintln!("{} frames, Zeek's traces included: {kh:?}", frames.len());
    }
    // Every connection the kernel signalled as begun was opened once in replay, and every
    // finish it signalled became a record.
    let opened = out
        .iter()
        .filter(|e| matches!(e, sensor::flows::ConnEvent::Opened(_)))
        .count() as u64;
    assert_eq!(
        opened,
        kh.flows_created + kh.flows_restarted,
        "one open per new connection: {out:#?}"
    );
    assert!(
        out.iter().any(|e| e.finished().is_some()),
        "the finished connections became records: {out:#?}"
    );
}
