//! End to end: the gateway lab of `cargo xtask demo` ([`xtask::gateway`]) with real normal
//! traffic and real attacks (hping3 SYN flood, nmap TCP and UDP scans, nmap ping sweep), the
//! `sensor run` agent on the gateway with the committed model, and checks of what it reported:
//! verdicts per traffic kind, connection counts against what the generators made, the
//! `/metrics` endpoint against the records, and `promtool check metrics` on the live endpoint.
use std::{collections::BTreeMap, path::PathBuf};

use integration_tests::{require_root, sensor_bin};
use xtask::gateway::{
    self, ATTACK_KINDS, FLOOD_SYNS, NORMAL_KINDS, SWEEP_HOSTS, ScenarioOptions, TCP_SCAN_PORTS,
    UDP_SCAN_PORTS, quantile,
};

/// Sums the samples of `name` whose labels include every `(key, value)` of `filter`.
fn metric_sum(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let labels: BTreeMap<&str, &str> = labels
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            filter
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[test]
fn gateway_lab_flags_attacks_spares_normal_traffic_and_metrics_add_up() {
    require_root();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let work_dir = std::env::temp_dir().join(format!("sensor-e2e-{}", std::process::id()));
    let opts = ScenarioOptions {
        sensor: sensor_bin(),
        model: root.join("models/nsl-kdd-flow.model"),
        seconds: 30,
        attacks: true,
        work_dir: work_dir.clone(),
        verbose: true,
    };
    let out = gateway::run(&opts).expect("the lab scenario ran");
    let _ = std::fs::remove_dir_all(&work_dir);
    let kinds = gateway::summarize(&out.connections);
    for (k, s) in &kinds {
        println!(
            "{k:<11} made {:>5} seen {:>5} flagged {:>5} ({:5.1}%) latency p50 {:.1} ms p99 {:.1} ms",
            out.generated.get(k).copied().unwrap_or(0),
            s.connections,
            s.flagged,
            100.0 * s.flagged as f64 / s.connections.max(1) as f64,
            quantile(&s.latencies_ms, 0.5),
            quantile(&s.latencies_ms, 0.99)
        );
    }

    // Every connection a generator made was seen, once.
    let expected: BTreeMap<&str, u64> = [
        ("syn-flood", u64::from(FLOOD_SYNS)),
        ("port-scan", u64::from(TCP_SCAN_PORTS)),
        ("udp-scan", u64::from(UDP_SCAN_PORTS)),
        ("ping-sweep", u64::from(SWEEP_HOSTS)),
    ]
    .into_iter()
    .chain(NORMAL_KINDS.iter().map(|k| (*k, out.generated[k])))
    .collect();
    for (k, n) in &expected {
        let seen = kinds.get(k).map_or(0, |s| s.connections);
        assert!(*n > 0, "generator {k} made nothing");
        assert_eq!(seen, *n, "{k}: connections seen vs made");
    }
    // Attacks flagged, normal traffic not.
    for k in ATTACK_KINDS {
        let s = &kinds[k];
        let rate = s.flagged as f64 / s.connections as f64;
        assert!(rate >= 0.90, "{k}: only {:.1}% flagged", 100.0 * rate);
    }
    for k in NORMAL_KINDS {
        let s = &kinds[k];
        let rate = s.flagged as f64 / s.connections as f64;
        assert!(
            rate <= 0.02,
            "{k}: {:.1}% of normal connections flagged",
            100.0 * rate
        );
    }

    // /metrics agrees with the records (all traffic had ended and timed out before the scrape).
    let m = &out.metrics;
    let scored: Vec<_> = out
        .connections
        .iter()
        .filter(|c| c["end_reason"] != "shutdown")
        .collect();
    let anomalous = scored.iter().filter(|c| c["anomalous"] == true).count();
    assert_eq!(
        metric_sum(m, "sensor_verdicts_total", &[]) as usize,
        scored.len(),
        "{m}"
    );
    assert_eq!(
        metric_sum(m, "sensor_verdicts_total", &[("verdict", "anomalous")]) as usize,
        anomalous
    );
    assert_eq!(
        metric_sum(
            m,
            "sensor_verdicts_total",
            &[("protocol", "tcp"), ("service", "http_443")]
        ) as u32,
        FLOOD_SYNS + u32::from(TCP_SCAN_PORTS >= 443),
        "the flood's connections by service (plus the scan's probe of port 443)"
    );
    assert_eq!(
        metric_sum(m, "sensor_connections_total", &[]) as usize,
        scored.len()
    );
    assert_eq!(
        metric_sum(m, "sensor_detection_latency_seconds_count", &[]) as usize,
        scored.len()
    );
    // Every anomalous connection was either alerted or summarised; the lab's limits are high
    // enough that nothing was held back.
    let written = metric_sum(m, "sensor_alerts_total", &[]) as usize;
    let held = metric_sum(m, "sensor_alerts_suppressed_total", &[]) as usize;
    assert_eq!(written + held, anomalous, "alerts written + suppressed");
    assert_eq!(held, 0, "alerts are not rate-limited in the lab");
    let alerts = out
        .alert_lines
        .iter()
        .filter(|a| a["type"] == "alert")
        .count();
    assert_eq!(alerts, anomalous);
    assert!(
        metric_sum(m, "sensor_model_info", &[("feature_set", "flow")]) == 1.0,
        "{m}"
    );
    assert!(
        metric_sum(
            m,
            "sensor_kernel_packets_total",
            &[("outcome", "accounted")]
        ) > 5000.0
    );
    assert_eq!(
        metric_sum(
            m,
            "sensor_kernel_packets_total",
            &[("outcome", "table_full")]
        ),
        0.0
    );
    assert_eq!(metric_sum(m, "sensor_kernel_ringbuf_drops_total", &[]), 0.0);
    assert!(metric_sum(m, "sensor_flow_table_capacity", &[]) > 0.0);
    if let Err(e) = &out.promtool {
        panic!("promtool check metrics on the live endpoint: {e}");
    }
}
