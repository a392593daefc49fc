//! The sensor under test: `sensor run` on the gateway with the lab's overrides, its metrics
//! endpoint, and the files it writes.
use std::{path::Path, process::Command, time::Duration};

use super::{GatewayLab, ScenarioOptions};
use crate::lab::Proc;

/// Starts `sensor run` on the gateway, watching every gateway interface with the scenario's
/// configuration and model, writing `records` and `alerts`, serving metrics on `metrics_addr`
/// and stopping by itself after `bound_secs`; returns once it says it is watching.
pub(super) fn start(
    lab: &GatewayLab,
    opts: &ScenarioOptions,
    records: &Path,
    alerts: &Path,
    metrics_addr: &str,
    bound_secs: u64,
) -> Result<Proc, String> {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--config".into(),
        opts.config.to_string_lossy().into_owned(),
    ];
    for i in &lab.gw_ifaces {
        args.extend(["--iface".into(), i.clone()]);
    }
    args.extend([
        "--model".into(),
        opts.model.to_string_lossy().into_owned(),
        "--records".into(),
        records.to_string_lossy().into_owned(),
        "--alerts".into(),
        alerts.to_string_lossy().into_owned(),
        "--metrics-addr".into(),
        metrics_addr.into(),
        "--duration-secs".into(),
        bound_secs.to_string(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut sensor = lab.gateway.spawn(&opts.sensor.to_string_lossy(), &args)?;
    sensor
        .wait_for_stderr("watching", Duration::from_secs(30))
        .map_err(|e| format!("the sensor did not start: {e}"))?;
    Ok(sensor)
}

/// Stops the sensor (SIGTERM) and waits for its exit: its stderr, or an error if it failed.
pub(super) fn stop(mut sensor: Proc) -> Result<String, String> {
    sensor.terminate();
    let (status, _stdout, stderr) = sensor
        .wait_output(Duration::from_secs(30))
        .map_err(|e| format!("sensor: {e}"))?;
    if !status.success() {
        return Err(format!("the sensor failed ({status}): {stderr}"));
    }
    Ok(stderr)
}

/// The JSON lines of a file the sensor wrote (blank lines skipped).
pub(super) fn read_jsonl(p: &Path) -> Result<Vec<serde_json::Value>, String> {
    let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}: {l}", p.display())))
        .collect()
}

/// `promtool check metrics` on a scrape.
pub fn check_metrics(dir: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .current_dir(dir)
        .spawn()
        .map_err(|e| format!("promtool: {e} (installed by `cargo xtask bootstrap`)"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
