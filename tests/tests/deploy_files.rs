//! The deployment files in `deploy/` are valid for the tools that read them: Prometheus's
//! scrape configuration and alerting rules (`promtool`, installed by `cargo xtask bootstrap`),
//! the rules refer only to metrics the sensor exports, and the systemd unit is hardened
//! (`systemd-analyze security`). None of these needs root.
use integration_tests::deploy::{
    Unit, as_promql, dashboard_queries, deploy_path as deploy, expand_syscall_group, exposure,
    promtool, registered_metric_names, sensor_metric_names,
};

#[test]
fn prometheus_config_with_file_discovery_and_rules_pass_promtool() {
    let cfg = deploy("prometheus.yml");
    let text = promtool(&["check", "config", &cfg.to_string_lossy()]);
    assert!(text.contains("1 rule files found"), "{text}");
    // Targets come from files (file-based service discovery), and the example file matches
    // the configuration's pattern and is valid for it.
    let yml = std::fs::read_to_string(&cfg).unwrap();
    assert!(yml.contains("file_sd_configs:"), "{yml}");
    assert!(!yml.contains("static_configs:"), "{yml}");
    assert!(yml.contains("- sensor-targets*.yml"), "{yml}");
    let targets = std::fs::read_to_string(deploy("sensor-targets.yml")).unwrap();
    assert!(targets.contains("- targets:"), "{targets}");
    let rules = deploy("sensor.rules.yml");
    let text = promtool(&["check", "rules", &rules.to_string_lossy()]);
    assert!(text.contains("SUCCESS"), "{text}");
}

/// The alerts of a rules file, by name.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn every_alert_fires_when_it_should_and_not_otherwise() {
    let tests = deploy("sensor.rules.test.yml");
    let text = promtool(&["test", "rules", &tests.to_string_lossy()]);
    assert!(text.contains("SUCCESS"), "{text}");
    // Each alert has a case where it fires (a non-empty `exp_alerts`) and one where it does not
    // (`exp_alerts: []`): an `alertname:` line is followed by its `exp_alerts` line.
    let cases = std::fs::read_to_string(&tests).unwrap();
    let lines: Vec<&str> = cases.lines().map(str::trim).collect();
    let mut fires = std::collections::BTreeSet::new();
    let mut quiet = std::collections::BTreeSet::new();
    for (i, l) in lines.iter().enumerate() {
        let Some(name) = l.strip_prefix("alertname:") else {
            continue;
        };
        let exp = lines[i + 1..]
            .iter()
            .find(|l| l.starts_with("exp_alerts:"))
            .unwrap_or_else(|| panic!("no exp_alerts after {l}"));
        if *exp == "exp_alerts: []" {
            quiet.insert(name.trim().to_string());
        } else {
            fires.insert(name.trim().to_string());
        }
    }
    let rules = std::fs::read_to_string(deploy("sensor.rules.yml")).unwrap();
    let names = alert_names(&rules);
    assert!(names.len() >= 8, "{names:?}");
    for name in &names {
        assert!(fires.contains(name), "no case in which {name} fires");
        assert!(quiet.contains(name), "no case in which {name} stays quiet");
    }
    // Incidents page; single connections do not.
    assert!(
        !rules.contains("sensor_verdicts_total"),
        "a rule alerts on single connections"
    );
    assert!(rules.contains("alert: SensorIncident"));
}

#[test]
fn alerting_rules_use_only_exported_metrics() {
    let rules = std::fs::read_to_string(deploy("sensor.rules.yml")).unwrap();
    let registered = registered_metric_names();
    let used = sensor_metric_names(&rules, &registered);
    let unknown: Vec<_> = used.difference(&registered).collect();
    assert!(
        unknown.is_empty(),
        "the rules use metrics the sensor does not export: {unknown:?}"
    );
    assert!(used.len() >= 6, "only {used:?} referenced");
}

/// The capabilities the sensor needs (see the unit's comment and `service_unit.rs`, which
/// proves each is needed and that they suffice).
const CAPABILITIES: [&str; 3] = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"];
/// Highest `systemd-analyze security` exposure allowed for the unit (issue 14).
const MAX_EXPOSURE: f64 = 3.0;

#[test]
fn systemd_unit_runs_the_packaged_sensor_unprivileged_and_hardened() {
    let unit = Unit::shipped();
    assert_eq!(
        unit.value("ExecStart"),
        "/usr/bin/sensor run --config /etc/sensor/sensor.toml"
    );
    assert_eq!(unit.value("ExecReload"), "/bin/kill -HUP $MAINPID");
    let user = unit.value("User");
    assert!(!["root", "0"].contains(&user), "runs as {user}");
    for key in ["CapabilityBoundingSet", "AmbientCapabilities"] {
        let mut caps = unit.words(key);
        caps.sort_unstable();
        assert_eq!(caps, CAPABILITIES, "{key}");
    }
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("LimitMEMLOCK", "infinity"),
        ("ProtectSystem", "strict"),
        ("ProtectClock", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictNamespaces", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(unit.value(key), value, "{key}");
    }
    assert_eq!(unit.value("UMask"), "0027");

    // The filter allows bpf() and none of the groups a sensor has no business with.
    let allowed = unit.allowed_syscalls();
    assert!(allowed.contains("bpf"), "bpf() not allowed");
    for group in [
        "@mount",
        "@module",
        "@reboot",
        "@swap",
        "@raw-io",
        "@clock",
        "@debug",
        "@cpu-emulation",
        "@obsolete",
    ] {
        let calls = expand_syscall_group(group);
        let open: Vec<_> = calls.intersection(&allowed).collect();
        assert!(open.is_empty(), "{group} calls allowed: {open:?}");
    }
    for call in [
        "setuid",
        "capset",
        "setrlimit",
        "sched_setscheduler",
        "ptrace",
        "kexec_load",
    ] {
        assert!(!allowed.contains(call), "{call} allowed");
    }

    let (score, report) = exposure(&unit.path);
    println!("{report}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} above {MAX_EXPOSURE}:\n{report}"
    );
    // systemd reads the filter's lines in order as `allowed_syscalls` does: bpf, which
    // `~@privileged` takes away, is allowed again by the line after it.
    assert!(
        report.contains("@privileged is included (e.g. bpf is allowed)"),
        "{report}"
    );
}

#[test]
fn grafana_dashboard_queries_parse_and_use_only_exported_metrics() {
    let (exprs, variables) = dashboard_queries();
    assert!(exprs.len() >= 20, "only {} queries", exprs.len());
    // Each query parses: promtool checks them as recording rules.
    let dir = integration_tests::lab::TempDir::new("dashboard").unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let expr = serde_json::to_string(&as_promql(e)).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {expr}\n"
        ));
    }
    let file = dir.join("dashboard.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let text = promtool(&["check", "rules", &file.to_string_lossy()]);
    assert!(
        text.contains(&format!("SUCCESS: {} rules found", exprs.len())),
        "{text}"
    );
    // They name only metrics the sensor exports (and Prometheus's own `up`).
    let registered = registered_metric_names();
    let all = format!("{} {}", exprs.join("\n"), variables.join("\n"));
    let used = sensor_metric_names(&all, &registered);
    let unknown: Vec<_> = used.difference(&registered).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses metrics the sensor does not export: {unknown:?}"
    );
    for name in &variables {
        assert!(registered.contains(name), "variable queries {name}");
    }
    // And it covers what the operator watches: incidents, verdicts by protocol and service,
    // scores, detection latency, kernel health, the model and its reloads.
    for (name, label) in [
        ("sensor_incidents_total", "kind"),
        ("sensor_incidents_open", "kind"),
        ("sensor_verdicts_total", "protocol"),
        ("sensor_verdicts_total", "service"),
        ("sensor_score", "le"),
        ("sensor_detection_latency_seconds", "le"),
        ("sensor_flow_table_entries", ""),
        ("sensor_kernel_packets_total", "table_full"),
        ("sensor_kernel_ringbuf_drops_total", ""),
        ("sensor_model_info", ""),
        ("sensor_model_reloads_total", "result"),
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(name) && e.contains(label)),
            "no panel shows {name} ({label})"
        );
    }
}
