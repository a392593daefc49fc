//! `cargo xtask demo`: the gateway lab ([`xtask::gateway`]) with normal traffic and attacks,
//! `sensor run` on the gateway; then a table per traffic kind (connections, flagged, detection
//! latency), a few alerts, and where the metrics were served.
use std::path::Path;

use anyhow::{Result, anyhow};
use xtask::gateway::{self, ATTACK_KINDS, NORMAL_KINDS, ScenarioOptions, quantile};

pub fn run(seconds: u64) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let work_dir = root.join("target/demo");
    let opts = ScenarioOptions {
        sensor: root.join("target/release/sensor"),
        model: root.join("models/nsl-kdd-flow.model"),
        seconds,
        attacks: true,
        work_dir: work_dir.clone(),
        verbose: true,
    };
    let out = gateway::run(&opts).map_err(|e| anyhow!(e))?;
    let kinds = gateway::summarize(&out.connections);
    println!(
        "\n{:<11} {:>9} {:>11} {:>8} {:>8} {:>14} {:>14}",
        "traffic", "made", "connections", "flagged", "flagged%", "p50 latency", "p99 latency"
    );
    for k in NORMAL_KINDS
        .iter()
        .chain(ATTACK_KINDS.iter())
        .chain(["other"].iter())
    {
        let Some(s) = kinds.get(k) else { continue };
        let made = out
            .generated
            .get(k)
            .map_or("-".to_string(), |n| n.to_string());
        println!(
            "{:<11} {:>9} {:>11} {:>8} {:>7.1}% {:>11.1} ms {:>11.1} ms",
            k,
            made,
            s.connections,
            s.flagged,
            100.0 * s.flagged as f64 / s.connections.max(1) as f64,
            quantile(&s.latencies_ms, 0.5),
            quantile(&s.latencies_ms, 0.99),
        );
    }
    println!(
        "\n(latency: from the moment a connection was final - its last packet after FIN/RST, its last packet plus the idle timeout otherwise - to its verdict)"
    );
    let alerts: Vec<_> = out
        .alert_lines
        .iter()
        .filter(|a| a["type"] == "alert")
        .collect();
    println!(
        "\nalerts: {} lines in {}; the first:",
        alerts.len(),
        work_dir.join("alerts.jsonl").display()
    );
    if let Some(a) = alerts.first() {
        println!("{a}");
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
