//! A real Prometheus server (Debian's package) on the gateway, for the end-to-end alerting
//! test: it runs the shipped configuration (`deploy/prometheus.yml`, file-based discovery, with
//! the shipped alert rules), finds the lab's sensor through a targets file, scrapes it while
//! the scenario runs, and is asked through its HTTP API what fired. Bounded by `timeout`, on
//! loopback inside the gateway namespace, with its data in the scenario's temporary directory.
use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use super::GatewayLab;
use crate::lab::{Proc, TempDir};

/// Where Prometheus listens, inside the gateway namespace.
pub const PROMETHEUS_ADDR: &str = "127.0.0.1:9090";

/// What to ask Prometheus at the end of the scenario.
#[derive(Clone, Debug, Default)]
pub struct PrometheusOptions {
    /// PromQL expressions evaluated once at the end (e.g. a dashboard's queries).
    pub queries: Vec<String>,
}

/// What Prometheus reported at the end of the scenario.
#[derive(Clone, Debug)]
pub struct PrometheusOutcome {
    /// Scrape targets and their health (`up`, `down`, `unknown`), by scrape URL.
    pub targets: BTreeMap<String, String>,
    /// `/api/v1/alerts`: every alert pending or firing at the end.
    pub alerts: Vec<serde_json::Value>,
    /// For each alert name and `kind` label (empty if none): when it first fired (Unix
    /// seconds), from the `ALERTS` series over the whole scenario.
    pub first_fired: BTreeMap<(String, String), f64>,
    /// Each requested query: the number of series it returned, or Prometheus's error.
    pub queries: Vec<(String, Result<usize, String>)>,
}

pub(super) struct Prometheus {
    _proc: Proc,
}

/// `GET` on Prometheus's API from the gateway namespace, with URL-encoded parameters; the
/// `data` of a successful answer.
fn api(lab: &GatewayLab, path: &str, params: &[(&str, &str)]) -> Result<serde_json::Value, String> {
    let mut args = vec![
        "-s".to_string(),
        "--max-time".into(),
        "10".into(),
        "-G".into(),
    ];
    for (k, v) in params {
        args.push("--data-urlencode".into());
        args.push(format!("{k}={v}"));
    }
    args.push(format!("http://{PROMETHEUS_ADDR}{path}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let text = lab.gateway.run("curl", &args)?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}: {text}"))?;
    if v["status"] != "success" {
        return Err(format!(
            "{path} {params:?}: {}",
            v["error"].as_str().unwrap_or(&text)
        ));
    }
    Ok(v["data"].clone())
}

impl Prometheus {
    /// Starts Prometheus with the shipped configuration and rules, and a targets file naming
    /// the sensor at `metrics_addr`; waits until it has scraped the sensor once.
    pub(super) fn start(
        lab: &GatewayLab,
        dir: &TempDir,
        metrics_addr: &str,
        bound_secs: u64,
    ) -> Result<Prometheus, String> {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
        let conf = dir.join("prometheus");
        std::fs::create_dir(&conf).map_err(|e| format!("{}: {e}", conf.display()))?;
        for f in ["prometheus.yml", "sensor.rules.yml"] {
            std::fs::copy(deploy.join(f), conf.join(f)).map_err(|e| format!("{f}: {e}"))?;
        }
        std::fs::write(
            conf.join("sensor-targets.yml"),
            format!("- targets: [\"{metrics_addr}\"]\n  labels:\n    gateway: lab\n"),
        )
        .map_err(|e| e.to_string())?;
        let bound = bound_secs.to_string();
        let config = conf.join("prometheus.yml");
        let data = conf.join("data");
        let args = [
            bound.as_str(),
            "prometheus",
            &format!("--config.file={}", config.display()),
            &format!("--storage.tsdb.path={}", data.display()),
            &format!("--web.listen-address={PROMETHEUS_ADDR}"),
            "--log.level=warn",
        ];
        let proc = lab
            .gateway
            .spawn_logged("timeout", &args, &conf.join("prometheus.log"))?;
        let start = Instant::now();
        while lab
            .gateway
            .run(
                "curl",
                &[
                    "-sf",
                    "--max-time",
                    "2",
                    &format!("http://{PROMETHEUS_ADDR}/-/ready"),
                ],
            )
            .is_err()
        {
            if start.elapsed() > Duration::from_secs(30) {
                let log = std::fs::read_to_string(conf.join("prometheus.log")).unwrap_or_default();
                return Err(format!("Prometheus did not become ready: {log}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // Wait for the first scrape, so that Prometheus watches the sensor before the traffic
        // starts, as it does in production: a counter's first sample must precede its first
        // increase for increase() to see it.
        let scraped = || {
            api(lab, "/api/v1/targets", &[]).is_ok_and(|d| {
                d["activeTargets"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t["health"] == "up"))
            })
        };
        while !scraped() {
            if start.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(conf.join("prometheus.log")).unwrap_or_default();
                return Err(format!("Prometheus did not scrape the sensor: {log}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(Prometheus { _proc: proc })
    }

    /// Asks Prometheus what it saw since `since_unix` (seconds): targets, alerts, when each
    /// alert first fired, and the requested queries.
    pub(super) fn collect(
        &self,
        lab: &GatewayLab,
        since_unix: f64,
        queries: &[String],
    ) -> Result<PrometheusOutcome, String> {
        let targets = api(lab, "/api/v1/targets", &[])?["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["scrapeUrl"].as_str().unwrap_or_default().to_string(),
                    t["health"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let alerts = api(lab, "/api/v1/alerts", &[])?["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let now = super::unix_now_ns() as f64 / 1e9;
        let (start, end) = (format!("{since_unix:.3}"), format!("{now:.3}"));
        let range = api(
            lab,
            "/api/v1/query_range",
            &[
                ("query", "ALERTS{alertstate=\"firing\"}"),
                ("start", &start),
                ("end", &end),
                ("step", "1"),
            ],
        )?;
        let mut first_fired = BTreeMap::new();
        for series in range["result"].as_array().into_iter().flatten() {
            let m = &series["metric"];
            let key = (
                m["alertname"].as_str().unwrap_or_default().to_string(),
                m["kind"].as_str().unwrap_or_default().to_string(),
            );
            if let Some(t) = series["values"][0][0].as_f64() {
                let e = first_fired.entry(key).or_insert(t);
                *e = f64::min(*e, t);
            }
        }
        let queries = queries
            .iter()
            .map(|q| {
                let r = api(lab, "/api/v1/query", &[("query", q)])
                    .map(|d| d["result"].as_array().map_or(0, Vec::len));
                (q.clone(), r)
            })
            .collect();
        Ok(PrometheusOutcome {
            targets,
            alerts,
            first_fired,
            queries,
        })
    }
}
