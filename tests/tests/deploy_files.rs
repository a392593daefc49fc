//! The deployment files in `deploy/` are valid for the tools that read them: Prometheus's
//! scrape configuration and alerting rules (`promtool`, installed by `cargo xtask bootstrap`),
//! the rules refer only to metrics the sensor exports, and the systemd unit is hardened
//! (`systemd-analyze security`). None of these needs root.
use integration_tests::deploy::{
    Unit, deploy_path as deploy, expand_syscall_group, exposure, promtool, registered_metric_names,
    sensor_metric_names,
};

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
