//! End to end: the gateway lab of `cargo xtask demo` ([`xtask::gateway`]) with real services
//! (dnsmasq, OpenSSH, an HTTP server, a UDP responder), real clients from two hosts, the hosts'
//! own IPv6 link-local chatter, and real attacks (hping3 SYN flood, nmap TCP and UDP scans,
//! nmap ping sweep), watched by `sensor run` with the shipped settings (`deploy/sensor.toml`)
//! and the committed model.
//!
//! Two groups of checks, all evaluated before the test fails so that one run reports every
//! miss, each naming the kind and the numbers:
//! * the harness and the accounting: every generator's exchanges succeeded, the sensor saw
//!   exactly the connections the generators made, each ended by its own end (none in the
//!   shutdown flush), `/metrics` agrees with the records, `promtool check metrics` passes;
//! * the goals of issue 10: every normal kind at most 1% flagged and no incident; every attack
//!   at least 90% flagged and an incident opened within 5 s of its start; no incident that
//!   names no attack;
//! * alerting (issue 14): a real Prometheus server on the gateway, with the shipped scrape
//!   configuration (file-based discovery) and alert rules, scraped the sensor throughout; every
//!   kind of incident fired `SensorIncident` soon after the attacks began, its API shows the
//!   flood's alert firing at the end, no health alert fired, and every query of the Grafana
//!   dashboard returns data.
use std::path::PathBuf;

use integration_tests::{
    deploy::{
        as_promql, dashboard_queries, deploy_path, registered_metric_names, sensor_metric_names,
    },
    require_root, sensor_bin,
};
use xtask::gateway::{
    self, ATTACK_KINDS, EXACT_KINDS, FLOOD_SYNS, NORMAL_KINDS, PrometheusOptions, ScenarioOptions,
    TCP_SCAN_PORTS,
};
use xtask::metrics;

/// Goals of issue 10 for the demo lab.
const NORMAL_MAX_FLAGGED: f64 = 0.01;
const ATTACK_MIN_FLAGGED: f64 = 0.90;
const INCIDENT_WITHIN_S: f64 = 5.0;
/// The shipped Prometheus configuration scrapes every 5 s and evaluates rules every 15 s: an
/// incident alert fires within about 20 s of the incident; the bound leaves room for a slow run.
const ALERT_WITHIN_S: f64 = 40.0;

/// Collects the outcome of every check; fails at the end with all the misses.
#[derive(Default)]
struct Checks {
    group: &'static str,
    failed: Vec<String>,
    passed: usize,
}

impl Checks {
    fn group(&mut self, name: &'static str) {
        self.group = name;
        println!("-- {name}");
    }

    fn check(&mut self, ok: bool, what: String) {
        println!("{} {what}", if ok { "ok  " } else { "FAIL" });
        if ok {
            self.passed += 1;
        } else {
            self.failed.push(format!("[{}] {what}", self.group));
        }
    }
}

#[test]
fn gateway_lab_with_real_services_and_shipped_settings() {
    require_root();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let work_dir = std::env::temp_dir().join(format!("sensor-e2e-{}", std::process::id()));
    let opts = ScenarioOptions {
        sensor: sensor_bin(),
        config: gateway::shipped_config(),
        model: root.join("models/nsl-kdd-flow.model"),
        seconds: 30,
        attacks: true,
        work_dir: work_dir.clone(),
        verbose: true,
        prometheus: Some(PrometheusOptions {
            queries: dashboard_queries().0.iter().map(|q| as_promql(q)).collect(),
        }),
    };
    let out = gateway::run_scenario(&opts);
    let _ = std::fs::remove_dir_all(&work_dir);
    let out = out.expect("the lab scenario ran");
    let rows = gateway::summarize(&out);
    println!("\n{}", gateway::table(&out, &rows));
    for line in gateway::incident_summary(&out.alert_lines) {
        println!("incident {line}");
    }
    let mut c = Checks::default();

    c.group("harness and accounting");
    for k in EXACT_KINDS {
        let r = &rows[k];
        let made = r.made.unwrap_or_default();
        c.check(
            made.connections > 0 && made.succeeded == made.connections,
            format!(
                "{k}: generator made {} connections, {} exchanges succeeded",
                made.connections, made.succeeded
            ),
        );
        c.check(
            r.connections + r.finalised_at_shutdown == made.connections,
            format!(
                "{k}: sensor saw {} connections ({} finalised at shutdown), generator made {}",
                r.connections + r.finalised_at_shutdown,
                r.finalised_at_shutdown,
                made.connections
            ),
        );
    }
    c.check(
        rows["ipv6-local"].connections > 0,
        format!(
            "ipv6-local: {} link-local connections seen (neighbour discovery, MLD)",
            rows["ipv6-local"].connections
        ),
    );
    let at_shutdown: Vec<String> = rows
        .iter()
        .filter(|(_, r)| r.finalised_at_shutdown > 0)
        .map(|(k, r)| format!("{k} {}", r.finalised_at_shutdown))
        .collect();
    c.check(
        at_shutdown.is_empty(),
        format!(
            "every connection ended by its own end before the sensor stopped (finalised at shutdown: {})",
            if at_shutdown.is_empty() {
                "none".to_string()
            } else {
                at_shutdown.join(", ")
            }
        ),
    );
    let other = &rows["other"];
    let other_examples: Vec<String> = out
        .connections
        .iter()
        .filter(|x| gateway::kind(x) == "other")
        .take(5)
        .map(|x| {
            format!(
                "{} {}:{} -> {}:{} {}",
                x["protocol"].as_str().unwrap_or("?"),
                x["orig_addr"].as_str().unwrap_or("?"),
                x["orig_port"],
                x["resp_addr"].as_str().unwrap_or("?"),
                x["resp_port"],
                x["service"].as_str().unwrap_or("?")
            )
        })
        .collect();
    c.check(
        other.connections + other.finalised_at_shutdown == 0,
        format!(
            "other: {} connections of no known kind {other_examples:?}",
            other.connections + other.finalised_at_shutdown
        ),
    );

    // /metrics (scraped once every connection had ended) agrees with the records.
    let m = &out.metrics;
    let scored: Vec<_> = out
        .connections
        .iter()
        .filter(|x| x["end_reason"] != "shutdown")
        .collect();
    let anomalous = scored.iter().filter(|x| x["anomalous"] == true).count();
    let metric_vs_records = |name: &str, filter: &[(&str, &str)], records: usize| {
        let v = metrics::sum(m, name, filter);
        (
            v as usize == records,
            format!("metrics: {name}{filter:?} = {v}, records: {records}"),
        )
    };
    for (name, filter, n) in [
        ("sensor_verdicts_total", &[][..], scored.len()),
        (
            "sensor_verdicts_total",
            &[("verdict", "anomalous")][..],
            anomalous,
        ),
        ("sensor_connections_total", &[][..], scored.len()),
        (
            "sensor_detection_latency_seconds_count",
            &[][..],
            scored.len(),
        ),
        (
            "sensor_verdicts_total",
            &[("protocol", "tcp"), ("service", "http_443")][..],
            // The flood's connections, plus the TCP scan's probe of port 443.
            (FLOOD_SYNS + u32::from(TCP_SCAN_PORTS >= 443)) as usize,
        ),
    ] {
        let (ok, what) = metric_vs_records(name, filter, n);
        c.check(ok, what);
    }
    // The shipped alert stream carries incidents, one line per state change: no per-connection
    // alert lines; every incident the metrics counted opened in the file, and each one that
    // opened closed by the end (quiet, or the sensor's stop).
    let alert_lines = out
        .alert_lines
        .iter()
        .filter(|a| a["type"] == "alert")
        .count();
    c.check(
        alert_lines == 0 && metrics::sum(m, "sensor_alerts_total", &[]) == 0.0,
        format!(
            "alert file: {alert_lines} per-connection alert lines (off in the shipped settings)"
        ),
    );
    let incident_lines: Vec<&serde_json::Value> = out
        .alert_lines
        .iter()
        .filter(|a| a["type"] == "incident")
        .collect();
    let opened = incident_lines
        .iter()
        .filter(|a| a["state"] == "open")
        .count();
    let closed = incident_lines
        .iter()
        .filter(|a| a["state"] == "closed")
        .count();
    let counted = metrics::sum(m, "sensor_incidents_total", &[]) as usize;
    c.check(
        opened == counted && closed == opened,
        format!(
            "incidents: {opened} opened and {closed} closed in the alert file, {counted} in sensor_incidents_total"
        ),
    );
    let ids: std::collections::BTreeSet<&str> = incident_lines
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    c.check(
        ids.len() == opened,
        format!(
            "incidents: {} distinct ids for {opened} incidents",
            ids.len()
        ),
    );
    c.check(
        metrics::sum(m, "sensor_model_info", &[("feature_set", "flow")]) == 1.0,
        "metrics: sensor_model_info{feature_set=flow} = 1".into(),
    );
    let accounted = metrics::sum(
        m,
        "sensor_kernel_packets_total",
        &[("outcome", "accounted")],
    );
    c.check(
        accounted > 5000.0,
        format!("metrics: {accounted} packets accounted"),
    );
    for (name, filter) in [
        (
            "sensor_kernel_packets_total",
            &[("outcome", "table_full")][..],
        ),
        ("sensor_kernel_ringbuf_drops_total", &[][..]),
    ] {
        let v = metrics::sum(m, name, filter);
        c.check(v == 0.0, format!("metrics: {name}{filter:?} = {v}"));
    }
    c.check(
        metrics::sum(m, "sensor_flow_table_capacity", &[]) > 0.0,
        "metrics: sensor_flow_table_capacity > 0".into(),
    );
    c.check(
        out.promtool.is_ok(),
        format!(
            "promtool check metrics on the live endpoint: {:?}",
            out.promtool
        ),
    );

    c.group("goals (issue 10)");
    // A flagged normal connection, printed for whoever reads a failure. One whose service an
    // attack probed within the 2 s around it is counted apart, as collateral
    // (`gateway::COLLATERAL_WINDOW_NS`: the KDD same-service window features count both). The
    // goal holds for the others; the collateral ones are reported (the table's `collat.`).
    for r in &out.connections {
        let k = gateway::kind(r);
        if r["anomalous"].as_bool() == Some(true) && NORMAL_KINDS.contains(&k) {
            eprintln!("flagged normal {k}: {r}");
        }
    }
    // How close the normal traffic came: each kind's highest score (the verdict's threshold
    // is the model's), with its record.
    for k in NORMAL_KINDS {
        let top = out
            .connections
            .iter()
            .filter(|r| gateway::kind(r) == k)
            .max_by(|a, b| {
                a["score"]
                    .as_f64()
                    .partial_cmp(&b["score"].as_f64())
                    .unwrap()
            });
        if let Some(r) = top {
            eprintln!("highest score of {k}: {} {r}", r["score"]);
        }
    }
    for k in NORMAL_KINDS {
        let r = &rows[k];
        let beside_attacks = r.flagged_beside_attacks;
        let alone = r.flagged - beside_attacks;
        let ok = r.connections > 0 && alone as f64 <= NORMAL_MAX_FLAGGED * r.connections as f64;
        // A miss names the flagged records (the first few) in the message itself, which a log
        // cut to its head and tail still shows.
        let flagged: Vec<String> = if ok {
            Vec::new()
        } else {
            out.connections
                .iter()
                .filter(|r| gateway::kind(r) == k && r["anomalous"] == true)
                .take(3)
                .map(|r| format!("\n    {r}"))
                .collect()
        };
        c.check(
            ok,
            format!(
                "{k}: {alone} of {} normal connections flagged ({:.1}%, at most {:.0}%), \
                 and {beside_attacks} more while an attack probed the same service{}",
                r.connections,
                100.0 * alone as f64 / r.connections.max(1) as f64,
                100.0 * NORMAL_MAX_FLAGGED,
                flagged.concat()
            ),
        );
        c.check(
            r.incidents == 0,
            format!(
                "{k}: {} incidents on normal traffic (0 allowed)",
                r.incidents
            ),
        );
    }
    // Password guessing is the login rule's from the session that reaches its bar (module
    // docs of `sensor::detect::logins`): the sessions that began beside another of the
    // attacker's still open (every one but the first, and those of a worker left alone at
    // the end), in the order their records came, from the bar's on. Replayed here from the
    // records: each such session from the bar's on must be flagged.
    let bar = u64::from(sensor::detect::VolumeConfig::default().login_sessions_per_min);
    let mut last_end_ns = 0;
    let mut beside = Vec::new();
    for r in out
        .connections
        .iter()
        .filter(|r| gateway::kind(r) == "ssh-guessing" && r["end_reason"] != "shutdown")
    {
        let (start, end) = (
            r["start_unix_ns"].as_u64().unwrap_or(0),
            r["end_unix_ns"].as_u64().unwrap_or(0),
        );
        if start < last_end_ns {
            beside.push((end, r["anomalous"] == true));
        }
        last_end_ns = last_end_ns.max(end);
    }
    let due = beside.get(bar as usize - 1..).unwrap_or_default();
    let guesses = &rows["ssh-guessing"];
    c.check(
        !due.is_empty() && due.iter().all(|&(_, flagged)| flagged),
        format!(
            "ssh-guessing: {} of {} sessions flagged; {} began beside another, {} of them from the bar's ({bar} a minute) on, flagged: {}",
            guesses.flagged,
            guesses.connections,
            beside.len(),
            due.len(),
            due.iter().filter(|d| d.1).count()
        ),
    );
    // The session that reaches the bar.
    let at_bar_ns = due.first().map(|&(end, _)| end);
    let brute: Vec<u64> = out
        .alert_lines
        .iter()
        .filter(|a| a["type"] == "incident" && a["state"] == "open" && a["kind"] == "brute_force")
        // When it was written, else the moment of its evidence (as `gateway::incidents`).
        .filter_map(|a| {
            a["time"]
                .as_str()
                .and_then(gateway::parse_rfc3339_utc)
                .or_else(|| a["last_unix_ns"].as_u64())
        })
        .collect();
    c.check(
        brute.len() == 1
            && at_bar_ns
                .is_some_and(|t| (brute[0] as f64 - t as f64) / 1e9 <= INCIDENT_WITHIN_S),
        format!(
            "ssh-guessing: {} brute_force incidents, opened {} after the session that reached the bar ended (at most {INCIDENT_WITHIN_S} s)",
            brute.len(),
            match (brute.first(), at_bar_ns) {
                (Some(&o), Some(t)) => format!("{:.1} s", (o as f64 - t as f64) / 1e9),
                _ => "never".to_string(),
            }
        ),
    );
    for k in ATTACK_KINDS.into_iter().filter(|&k| k != "ssh-guessing") {
        let r = &rows[k];
        c.check(
            r.connections > 0 && r.flagged_share() >= ATTACK_MIN_FLAGGED,
            format!(
                "{k}: {} of {} attack connections flagged ({:.1}%, at least {:.0}%)",
                r.flagged,
                r.connections,
                100.0 * r.flagged_share(),
                100.0 * ATTACK_MIN_FLAGGED
            ),
        );
        c.check(
            r.first_incident_after_s
                .is_some_and(|s| s <= INCIDENT_WITHIN_S),
            format!(
                "{k}: {} incidents, the first opened {} after the attack's start (at most {INCIDENT_WITHIN_S} s)",
                r.incidents,
                r.first_incident_after_s
                    .map_or("never".to_string(), |s| format!("{s:.1} s"))
            ),
        );
    }
    c.check(
        other.incidents == 0,
        format!(
            "{} incidents name none of the lab's attacks or services (0 allowed)",
            other.incidents
        ),
    );

    c.group("alerting in Prometheus (issue 14)");
    let p = out
        .prometheus
        .as_ref()
        .expect("the scenario ran Prometheus");
    c.check(
        p.targets.len() == 1 && p.targets.values().all(|h| h == "up"),
        format!(
            "Prometheus found the sensor by file discovery and scraped it: {:?}",
            p.targets
        ),
    );
    // Every kind of incident the sensor counted fired the incident alert soon after the attack
    // that caused it began; no other alert fired (the health alerts stay quiet on a healthy
    // sensor).
    let attack_start = |kind: &str| {
        let attack = match kind {
            "flood" => "syn-flood",
            "port_scan" => "port-scan",
            "host_sweep" => "ping-sweep",
            "icmp_flood" => "ping-flood",
            "brute_force" => "ssh-guessing",
            _ => "",
        };
        out.attacks
            .iter()
            .filter(|a| a.kind == attack || attack.is_empty())
            .map(|a| a.start_unix_ns as f64 / 1e9)
            .fold(f64::INFINITY, f64::min)
    };
    let counted: Vec<String> = m
        .lines()
        .filter_map(|l| l.strip_prefix("sensor_incidents_total{kind=\""))
        .filter_map(|l| l.split_once("\"} "))
        .filter(|(_, v)| v.parse::<f64>().is_ok_and(|v| v > 0.0))
        .map(|(k, _)| k.to_string())
        .collect();
    c.check(
        counted.contains(&"flood".to_string()),
        format!("the sensor counted incidents of kinds {counted:?} (flood among them)"),
    );
    for kind in &counted {
        let fired = p
            .first_fired
            .get(&("SensorIncident".to_string(), kind.clone()))
            .map(|t| t - attack_start(kind));
        c.check(
            fired.is_some_and(|s| s <= ALERT_WITHIN_S),
            format!(
                "SensorIncident{{kind={kind}}} fired {} after its attack began (at most {ALERT_WITHIN_S} s)",
                fired.map_or("never".to_string(), |s| format!("{s:.1} s"))
            ),
        );
    }
    let firing_now: Vec<String> = p
        .alerts
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| {
            format!(
                "{}{{kind={}}}",
                a["labels"]["alertname"].as_str().unwrap_or("?"),
                a["labels"]["kind"].as_str().unwrap_or("")
            )
        })
        .collect();
    c.check(
        firing_now.iter().any(|a| a == "SensorIncident{kind=flood}"),
        format!("/api/v1/alerts at the end shows the attack alert firing: {firing_now:?}"),
    );
    let others: Vec<_> = p
        .first_fired
        .keys()
        .filter(|(name, _)| name != "SensorIncident")
        .collect();
    c.check(
        others.is_empty(),
        format!("no other alert fired: {others:?}"),
    );
    // The dashboard's queries: each evaluates in Prometheus and returns data, and every
    // metric the dashboard and the rules name is in the live scrape.
    let failed: Vec<String> = p
        .queries
        .iter()
        .filter(|(_, r)| !matches!(r, Ok(n) if *n > 0))
        .map(|(q, r)| format!("{q}: {r:?}"))
        .collect();
    c.check(
        failed.is_empty(),
        format!(
            "{} of {} dashboard queries return data; not: {failed:?}",
            p.queries.len() - failed.len(),
            p.queries.len()
        ),
    );
    let registered = registered_metric_names();
    let rules = std::fs::read_to_string(deploy_path("sensor.rules.yml")).unwrap();
    let (exprs, variables) = dashboard_queries();
    let used = sensor_metric_names(
        &format!("{rules}\n{}\n{}", exprs.join("\n"), variables.join("\n")),
        &registered,
    );
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !m.contains(&format!("# TYPE {n} ")))
        .collect();
    c.check(
        missing.is_empty(),
        format!(
            "the {} metrics the dashboard and rules use are all in the live scrape; missing: {missing:?}",
            used.len()
        ),
    );

    assert!(
        c.failed.is_empty(),
        "{} of {} checks failed:\n  {}",
        c.failed.len(),
        c.failed.len() + c.passed,
        c.failed.join("\n  ")
    );
}
