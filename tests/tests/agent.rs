//! `sensor run` as an operator uses it: a TOML configuration, model hot reload on SIGHUP (a bad
//! file keeps the running model and is counted), and the alert rate limit with its summary.
use std::{path::PathBuf, time::Duration};

use integration_tests::{Pair, require_root, sensor_bin, wait_until};
use xtask::metrics::sum;

fn model_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/nsl-kdd-flow.model")
}

fn scrape(ns: &integration_tests::Netns) -> String {
    xtask::metrics::scrape(ns, "127.0.0.1:9464", 3).unwrap_or_default()
}

fn sighup(pid: u32) {
    // `ip netns exec` execs the sensor, so the child's pid is the sensor's.
    let st = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(st.success());
}

/// `sensor run --config FILE` on the lab's server side for at most a minute, once it is
/// watching.
fn run_sensor(lab: &Pair, config: &std::path::Path) -> xtask::lab::Proc {
    let mut sensor = lab
        .server
        .spawn(
            &sensor_bin().to_string_lossy(),
            &[
                "run",
                "--config",
                &config.to_string_lossy(),
                "--duration-secs",
                "60",
            ],
        )
        .expect("spawn sensor");
    sensor
        .wait_for_stderr("watching", Duration::from_secs(30))
        .expect("sensor started");
    sensor
}

#[test]
fn config_file_sighup_reload_keeps_the_model_on_a_bad_file_and_alerts_are_rate_limited() {
    require_root();
    let lab = Pair::new().expect("lab");
    let dir = std::env::temp_dir().join(format!("sensor-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("site.model");
    std::fs::copy(model_file(), &model).unwrap();
    let alerts = dir.join("alerts.jsonl");
    let config = dir.join("sensor.toml");
    // One alert per second sustained, a burst of 3: the scan below must be summarised.
    std::fs::write(
        &config,
        format!(
            r#"
interfaces = ["{iface}"]
xdp_mode = "generic"
table_size = 4096
metrics_addr = "127.0.0.1:9464"
model = "{model}"
[timeouts]
tcp_attempt_secs = 1
udp_secs = 1
icmp_secs = 1
[alerts]
sink = "{alerts}"
connections = true
max_per_second = 1
burst = 3
"#,
            iface = lab.veth.b,
            model = model.display(),
            alerts = alerts.display()
        ),
    )
    .unwrap();
    let mut sensor = run_sensor(&lab, &config);
    let pid = sensor.child.as_ref().unwrap().id();
    let m = scrape(&lab.server);
    assert_eq!(sum(&m, "sensor_flow_table_capacity", &[]), 4096.0, "{m}");
    assert!(m.contains("sensor_model_info{"), "{m}");

    // A corrupted model file: refused, the running model stays, the failure is counted.
    let good = std::fs::read(&model).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n / 2] ^= 0x55;
    std::fs::write(&model, &bad).unwrap();
    sighup(pid);
    assert!(
        wait_until(Duration::from_secs(10), || sum(
            &scrape(&lab.server),
            "sensor_model_reloads_total",
            &[("result", "error")]
        ) == 1.0),
        "the bad reload was not counted: {}",
        scrape(&lab.server)
    );
    // A good file: loaded.
    std::fs::write(&model, &good).unwrap();
    sighup(pid);
    assert!(
        wait_until(Duration::from_secs(10), || sum(
            &scrape(&lab.server),
            "sensor_model_reloads_total",
            &[("result", "ok")]
        ) == 1.0),
        "the good reload was not counted: {}",
        scrape(&lab.server)
    );

    // A SYN scan of 300 closed ports: nearly all anomalous (the first probes come while the
    // sensor's host window is still cold, judged at the cold thresholds: one CI rehearsal had
    // a refused probe of port 21 scored normal); 3 alerts pass, the rest of the anomalous ones
    // are summarised.
    scan(&lab, "1-300");
    let ok = wait_until(Duration::from_secs(10), || {
        let m = scrape(&lab.server);
        let scored = sum(&m, "sensor_verdicts_total", &[("protocol", "tcp")]);
        let anomalous = sum(
            &m,
            "sensor_verdicts_total",
            &[("protocol", "tcp"), ("verdict", "anomalous")],
        );
        let a = sum(&m, "sensor_alerts_total", &[]);
        let s = sum(&m, "sensor_alerts_suppressed_total", &[]);
        scored >= 300.0 && anomalous >= 294.0 && a + s == anomalous
    });
    let m = scrape(&lab.server);
    assert!(
        ok,
        "scan alerts not all accounted for (at least 294 of 300 anomalous, each an alert or summarised): {m}"
    );
    sensor.terminate();
    let (status, _out, stderr) = sensor
        .wait_output(Duration::from_secs(30))
        .expect("sensor exit");
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("keeping the running model") && stderr.contains("checksum"),
        "the refusal is logged with its reason: {stderr}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let written = lines.iter().filter(|l| l["type"] == "alert").count();
    let summarised: u64 = lines
        .iter()
        .filter(|l| l["type"] == "suppressed")
        .map(|l| l["suppressed"].as_u64().unwrap())
        .sum();
    let anomalous = sum(
        &m,
        "sensor_verdicts_total",
        &[("protocol", "tcp"), ("verdict", "anomalous")],
    );
    assert!(
        (3..30).contains(&written),
        "rate limit let {written} through"
    );
    // Every anomalous verdict of the scan (at least 294 of its 300 probes, see above) is a
    // line of the sink or counted in one of its summaries.
    assert!(
        written as f64 + summarised as f64 >= anomalous && anomalous >= 294.0,
        "{written} written + {summarised} summarised; {anomalous} anomalous verdicts"
    );
    let first = lines.iter().find(|l| l["type"] == "alert").unwrap();
    assert_eq!(first["resp_addr"], lab.server_v4.as_str());
    assert_eq!(first["flag"], "REJ");
    assert_eq!(first["features"].as_object().unwrap().len(), 28);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A SYN scan of `ports` closed ports of the server.
fn scan(lab: &Pair, ports: &str) {
    let out = integration_tests::syn_scan(&lab.client, 20, ports, &lab.server_v4)
        .output()
        .expect("nmap");
    assert!(
        out.status.success(),
        "nmap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sighup_reloads_suppression_rules_and_keeps_them_on_a_bad_file() {
    require_root();
    let lab = Pair::new().expect("lab");
    let dir = std::env::temp_dir().join(format!("sensor-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let alerts = dir.join("alerts.jsonl");
    let config = dir.join("sensor.toml");
    let base = format!(
        r#"
interfaces = ["{iface}"]
xdp_mode = "generic"
table_size = 4096
metrics_addr = "127.0.0.1:9464"
model = "{model}"
[timeouts]
tcp_attempt_secs = 1
[alerts]
sink = "{alerts}"
connections = true
max_per_second = 1000
burst = 1000
"#,
        iface = lab.veth.b,
        model = model_file().display(),
        alerts = alerts.display()
    );
    std::fs::write(&config, &base).unwrap();
    let mut sensor = run_sensor(&lab, &config);
    let pid = sensor.child.as_ref().unwrap().id();

    // No rules: the scan alerts, and each alert says why.
    scan(&lab, "1-100");
    assert!(
        wait_until(Duration::from_secs(10), || sum(
            &scrape(&lab.server),
            "sensor_alerts_total",
            &[]
        ) >= 20.0),
        "{}",
        scrape(&lab.server)
    );

    // A bad rule: the file is refused, named in the log, counted; nothing changes.
    let rule =
        |src: &str| format!("{base}\n[[suppress]]\nname = \"lab-client\"\nsrc = [\"{src}\"]\n");
    std::fs::write(&config, rule(&format!("{}/8", lab.client_v4))).unwrap();
    sighup(pid);
    assert!(
        wait_until(Duration::from_secs(10), || sum(
            &scrape(&lab.server),
            "sensor_config_reloads_total",
            &[("result", "error")]
        ) == 1.0),
        "{}",
        scrape(&lab.server)
    );
    // A good rule for the client: its scan is silenced and counted.
    std::fs::write(&config, rule(&lab.client_v4)).unwrap();
    sighup(pid);
    assert!(
        wait_until(Duration::from_secs(10), || sum(
            &scrape(&lab.server),
            "sensor_config_reloads_total",
            &[("result", "ok")]
        ) == 1.0),
        "{}",
        scrape(&lab.server)
    );
    let before = sum(&scrape(&lab.server), "sensor_alerts_total", &[]);
    // The rules are swapped in at the next wake-up of the capture loop.
    std::thread::sleep(Duration::from_millis(500));
    scan(&lab, "101-160");
    assert!(
        wait_until(Duration::from_secs(10), || sum(
            &scrape(&lab.server),
            "sensor_suppressed_total",
            &[("rule", "lab-client"), ("what", "connection")]
        ) >= 30.0),
        "{}",
        scrape(&lab.server)
    );
    // Every probe has been judged by now (each ends at the server's RST).
    std::thread::sleep(Duration::from_secs(2));
    let m = scrape(&lab.server);
    assert_eq!(sum(&m, "sensor_alerts_total", &[]), before, "{m}");
    sensor.terminate();
    let (status, _out, stderr) = sensor
        .wait_output(Duration::from_secs(30))
        .expect("sensor exit");
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("keeping the running suppression rules")
            && stderr.contains(&*config.to_string_lossy())
            && stderr.contains("lab-client")
            && stderr.contains("src"),
        "the refusal names the file, rule and field: {stderr}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let alerted: Vec<_> = lines.iter().filter(|l| l["type"] == "alert").collect();
    assert!(alerted.len() >= 20);
    for a in &alerted {
        assert!(
            a["resp_port"].as_u64().unwrap() <= 100,
            "silenced port alerted: {a}"
        );
        let top = a["top_features"].as_array().expect("top_features");
        assert!((1..=3).contains(&top.len()), "{a}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `sensor run` writing its records as Zeek's `conn.log` and its alerts as Suricata EVE
/// `alert` events, for the tools operators already feed.
#[test]
fn records_as_zeek_conn_log_and_alerts_as_eve_events() {
    require_root();
    let lab = Pair::new().expect("lab");
    let dir = std::env::temp_dir().join(format!("sensor-formats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (alerts, records) = (dir.join("alerts.eve.json"), dir.join("conn.log"));
    let config = dir.join("sensor.toml");
    std::fs::write(
        &config,
        format!(
            r#"
interfaces = ["{iface}"]
xdp_mode = "generic"
table_size = 4096
metrics_addr = "off"
model = "{model}"
records = "{records}"
records_format = "zeek"
[alerts]
sink = "{alerts}"
format = "eve"
"#,
            iface = lab.veth.b,
            model = model_file().display(),
            records = records.display(),
            alerts = alerts.display()
        ),
    )
    .unwrap();
    let mut sensor = run_sensor(&lab, &config);
    scan(&lab, "1-60");
    // Every probe ends at the server's RST; the incident opens on the way.
    std::thread::sleep(Duration::from_secs(2));
    sensor.terminate();
    let (status, _out, stderr) = sensor
        .wait_output(Duration::from_secs(30))
        .expect("sensor exit");
    assert!(status.success(), "{stderr}");

    let log = std::fs::read_to_string(&records).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], "#separator \\x09", "{log}");
    assert_eq!(lines[4], "#path\tconn");
    let fields: Vec<&str> = lines
        .iter()
        .find_map(|l| l.strip_prefix("#fields\t"))
        .expect("#fields")
        .split('\t')
        .collect();
    assert!(lines.last().unwrap().starts_with("#close\t"), "{log}");
    let col = |name: &str| fields.iter().position(|f| *f == name).unwrap();
    let rows: Vec<Vec<&str>> = lines
        .iter()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect())
        .collect();
    assert!(rows.iter().all(|r| r.len() == fields.len()), "{log}");
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r[col("id.orig_h")] == lab.client_v4 && r[col("conn_state")] == "REJ")
        .collect();
    assert!(refused.len() >= 55, "the scan's probes, refused: {log}");
    for r in &refused {
        assert!(r[col("uid")].starts_with('C'));
        assert!(r[col("community_id")].starts_with("1:"));
        assert_eq!(r[col("proto")], "tcp");
        assert!(["anomaly", "normal"].contains(&r[col("verdict")]), "{r:?}");
    }
    // The first probes meet a host window the sensor has not seen yet, judged at the cold
    // thresholds, where a lone refused connection may be scored normal; the issue's goal for an
    // attack is 90% of its connections flagged.
    let anomalous = refused
        .iter()
        .filter(|r| r[col("verdict")] == "anomaly")
        .count();
    eprintln!("refused probes: {}, anomalous: {anomalous}", refused.len());
    assert!(
        anomalous * 10 >= refused.len() * 9,
        "{anomalous} of {} refused probes anomalous: {log}",
        refused.len()
    );

    let events: Vec<serde_json::Value> = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events.iter().all(|e| e["event_type"] == "alert"),
        "{events:?}"
    );
    let open = events
        .iter()
        .find(|e| e["alert"]["signature"] == "SENSOR port_scan incident open")
        .unwrap_or_else(|| panic!("no port scan incident: {events:?}"));
    assert_eq!(open["src_ip"], lab.client_v4.as_str());
    assert_eq!(open["dest_ip"], lab.server_v4.as_str());
    // The alert's Community ID is one of the conn.log's.
    let cid = open["community_id"].as_str().unwrap();
    assert!(
        rows.iter().any(|r| r[col("community_id")] == cid),
        "{cid} not in conn.log"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn baseline_learns_a_site_profile_from_live_traffic_reproducibly() {
    require_root();
    let lab = Pair::new().expect("lab");
    let dir = std::env::temp_dir().join(format!("sensor-baseline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("site.model");
    let records = dir.join("site.jsonl");
    // IPv4 only, so that no link-local IPv6 chatter joins the recording.
    for ns in [&lab.client, &lab.server] {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1").unwrap();
    }
    let _srv = lab
        .server
        .spawn(
            "python3",
            &[
                &integration_tests::traffic("udp_server.py"),
                &lab.server_v4,
                "5353",
                "200",
                "30",
            ],
        )
        .unwrap();
    integration_tests::wait_udp_bound(&lab.server, 5353);
    let mut baseline = lab
        .server
        .spawn(
            &sensor_bin().to_string_lossy(),
            &[
                "baseline",
                "--model",
                &model_file().to_string_lossy(),
                "--iface",
                &lab.veth.b,
                "--duration-secs",
                "8",
                "--udp-timeout-secs",
                "1",
                "--save-records",
                &records.to_string_lossy(),
                "--out",
                &out.to_string_lossy(),
            ],
        )
        .expect("spawn baseline");
    baseline
        .wait_for_stderr("recording the site", Duration::from_secs(30))
        .expect("baseline started");
    // The site's normal: 160 DNS-like exchanges from distinct ports over ~4 s.
    let answered = lab
        .client
        .run(
            "python3",
            &[
                &integration_tests::traffic("udp_client.py"),
                &lab.server_v4,
                "5353",
                "40",
                "160",
                "0.02",
                "30000",
            ],
        )
        .unwrap();
    assert_eq!(answered.trim(), "160");
    let (status, stdout, stderr) = baseline
        .wait_output(Duration::from_secs(40))
        .expect("baseline exit");
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("baseline: 160 connections"), "{stdout}");
    let model = sensor::model::Model::load(&out).expect("the site model loads");
    let profile = model.data().normal_profile.as_ref().expect("a profile");
    assert!(
        profile.source.starts_with("site baseline on "),
        "{}",
        profile.source
    );
    let original = sensor::model::Model::load(&model_file()).unwrap();
    assert_eq!(model.data().supervised, original.data().supervised);
    assert_ne!(model.data().normal_profile, original.data().normal_profile);
    let saved = sensor::baseline::read_records(&records).unwrap();
    assert_eq!(saved.len(), 160);
    // The same recording gives the same profile (fitting is seeded).
    let again = dir.join("again.model");
    let st = std::process::Command::new(sensor_bin())
        .args([
            "baseline",
            "--model",
            &model_file().to_string_lossy(),
            "--records",
            &records.to_string_lossy(),
            "--out",
            &again.to_string_lossy(),
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let again = sensor::model::Model::load(&again).unwrap();
    assert_eq!(
        again.data().normal_profile.as_ref().unwrap().forest,
        profile.forest
    );
    let _ = std::fs::remove_dir_all(&dir);
}
