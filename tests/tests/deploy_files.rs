//! The deployment files in `deploy/` are valid for the tools that read them: Prometheus's
//! scrape configuration and alerting rules (`promtool`, installed by `cargo xtask bootstrap`),
//! and the rules refer only to metrics the sensor exports.
use std::{path::PathBuf, process::Command};

fn deploy(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name)
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (installed by `cargo xtask bootstrap`)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn prometheus_config_and_rules_pass_promtool() {
    let cfg = deploy("prometheus.yml");
    let text = promtool(&["check", "config", &cfg.to_string_lossy()]);
    assert!(text.contains("1 rule files found"), "{text}");
    let rules = deploy("sensor.rules.yml");
    let text = promtool(&["check", "rules", &rules.to_string_lossy()]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn alerting_rules_use_only_exported_metrics() {
    let rules = std::fs::read_to_string(deploy("sensor.rules.yml")).unwrap();
    let src = |f: &str| {
        std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../sensor/src/export")
                .join(f),
        )
        .unwrap()
    };
    let exported = src("metrics.rs");
    let mut checked = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(base) = word.strip_prefix("sensor_") {
            let name = format!("sensor_{base}");
            let name = name.trim_end_matches("_bucket");
            assert!(
                exported.contains(&format!("\"{name}\"")),
                "rule uses {name}, which the sensor does not export"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} metric references found");
}

#[test]
fn systemd_unit_runs_the_configured_sensor_with_least_privilege() {
    let unit = std::fs::read_to_string(deploy("sensor.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/sensor run --config /etc/sensor/sensor.toml"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    for cap in ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"] {
        assert!(unit.contains(cap), "{cap} missing");
    }
    assert!(
        !unit.contains("CAP_SYS_ADMIN"),
        "no blanket admin capability"
    );
}
