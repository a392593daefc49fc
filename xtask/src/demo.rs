//! `cargo xtask demo`: the gateway lab ([`xtask::gateway`]) with real services, normal traffic
//! and attacks, `sensor run` on the gateway with the shipped settings; then a table per traffic
//! kind (connections, flagged, incidents, detection latency), a few alerts, and where the
//! metrics were served.
use std::path::Path;

use anyhow::{Result, anyhow};
use xtask::gateway::{self, ScenarioOptions, quantile};

pub fn run(seconds: u64) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().unwrap_or(root);
    let work_dir = root.join("target/demo");
    let opts = ScenarioOptions {
        sensor: root.join("target/release/sensor"),
        config: gateway::shipped_config(),
        model: root.join("models/nsl-kdd-flow.model"),
        seconds,
        attacks: true,
        work_dir: work_dir.clone(),
        verbose: true,
        prometheus: None,
    };
    let out = gateway::run_scenario(&opts).map_err(|e| anyhow!(e))?;
    let rows = gateway::summarize(&out);
    println!("\n{}", gateway::table(&out, &rows));
    let incidents = gateway::incident_summary(&out.alert_lines);
    println!(
        "incidents: {} in {} (a line for each opening, update and close); each one's latest:",
        incidents.len(),
        work_dir.join("alerts.jsonl").display()
    );
    for line in &incidents {
        println!("  {line}");
    }
    let alerts: Vec<_> = out
        .alert_lines
        .iter()
        .filter(|a| a["type"] == "alert")
        .collect();
    let suppressed: u64 = out
        .alert_lines
        .iter()
        .filter(|a| a["type"] == "suppressed")
        .filter_map(|a| a["suppressed"].as_u64())
        .sum();
    // Per-connection alert lines are off in the shipped settings (`[alerts] connections`).
    if !alerts.is_empty() || suppressed > 0 {
        println!(
            "per-connection alerts: {} lines ({suppressed} more held back by the rate limit and summarised); the first:",
            alerts.len(),
        );
        if let Some(a) = alerts.first() {
            println!("  {a}");
        }
    }
    println!(
        "every scored connection: {}",
        work_dir.join("connections.jsonl").display()
    );
    println!(
        "metrics were served on http://{}/metrics in the gateway namespace; promtool check metrics: {}",
        out.metrics_addr,
        match &out.promtool {
            Ok(()) => "ok".to_string(),
            Err(e) => format!("FAILED: {e}"),
        }
    );
    for line in out.sensor_stderr.lines().filter(|l| l.starts_with("run:")) {
        println!("{line}");
    }
    if out.connections.is_empty() {
        return Err(anyhow!("the sensor reported no connections"));
    }
    Ok(())
}

/// The detection-latency part of `cargo xtask bench`: the demo lab's scenario, then the p50 and
/// p99 latency (connection final -> verdict) per traffic kind and over all connections, by how
/// the connection was finalised. Written to `target/bench-lab-latency.json`.
pub fn latency_bench() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let opts = ScenarioOptions {
        sensor: root.join("target/release/sensor"),
        config: gateway::shipped_config(),
        model: root.join("models/nsl-kdd-flow.model"),
        seconds: 30,
        attacks: true,
        work_dir: root.join("target/bench-lab"),
        verbose: false,
        prometheus: None,
    };
    println!("detection latency in the gateway lab (about two minutes)...");
    let out = gateway::run_scenario(&opts).map_err(|e| anyhow!(e))?;
    let mut all = Vec::new();
    let (mut event, mut idle) = (Vec::new(), Vec::new());
    for c in out
        .connections
        .iter()
        .filter(|c| c["end_reason"] != "shutdown")
    {
        let Some(l) = c["latency_ms"].as_f64() else {
            continue;
        };
        all.push(l);
        if c["end_reason"] == "idle" {
            idle.push(l)
        } else {
            event.push(l)
        }
    }
    let row = |name: &str, v: &[f64]| {
        println!(
            "lab latency {name:<22} n={:>5}  p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms",
            v.len(),
            quantile(v, 0.5),
            quantile(v, 0.99),
            quantile(v, 1.0)
        );
        serde_json::json!({"n": v.len(), "p50_ms": quantile(v, 0.5), "p99_ms": quantile(v, 0.99), "max_ms": quantile(v, 1.0)})
    };
    let json = serde_json::json!({
        "all": row("all connections", &all),
        "fin_rst_events": row("FIN/RST (ring buffer)", &event),
        "idle_timeout": row("idle (after timeout)", &idle),
        "target_p99_ms": 50.0,
    });
    let path = root.join("target/bench-lab-latency.json");
    std::fs::write(&path, json.to_string())?;
    Ok(())
}
