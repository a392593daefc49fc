//! `sensor run` as a user runs it, in the gateway lab ([`xtask::gateway::GatewayLab`]: client,
//! attacker, gateway and server namespaces): the shipped settings (`deploy/sensor.toml`), every
//! gateway interface watched, records and alerts written to files, `/metrics` on the gateway;
//! a real HTTP server (Python's `http.server`) on the server host. The lab's guards remove
//! every namespace, process and file on every exit path.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use xtask::{
    gateway::{self, CLIENT, GatewayLab, HTTP_SERVER},
    lab::{Proc, TempDir},
    metrics,
};

use crate::sensor_bin;

/// Where the sensor serves `/metrics`, in the gateway's namespace.
pub const METRICS: &str = "127.0.0.1:9464";

/// The sensor, the HTTP server and the lab, in the order they must go.
pub struct Lab {
    pub sensor: Proc,
    _http: Proc,
    pub lab: GatewayLab,
    pub dir: TempDir,
}

impl Lab {
    /// Runs `script` with `sh -c` on the client, bounded to 60 s; its output.
    pub fn client_sh(&self, script: &str) -> std::process::Output {
        self.lab
            .client
            .cmd("timeout")
            .args(["60", "sh", "-c", script])
            .output()
            .expect("client script")
    }

    /// The gateway lab with an HTTP server on the server host and `sensor run` on the gateway
    /// with the shipped configuration and `extra` test-size flags.
    pub fn start(extra: &[&str], bound_secs: u64) -> Lab {
        Lab::start_watching(|_| true, extra, bound_secs)
    }

    /// [`Lab::start`] with the sensor watching only the gateway interfaces `watch` picks (by
    /// index in [`GatewayLab::gw_ifaces`]: towards client, client2, attacker, server).
    pub fn start_watching(watch: impl Fn(usize) -> bool, extra: &[&str], bound_secs: u64) -> Lab {
        let dir = TempDir::new("shipped").expect("temp dir");
        let lab = GatewayLab::new().expect("gateway lab");
        let bound = bound_secs.to_string();
        let http = gateway::start_http(&lab, &dir, &bound).expect("http.server");
        crate::wait_listening(&lab.server, 80);
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let (records, alerts) = (dir.join("records.jsonl"), dir.join("alerts.jsonl"));
        let mut args: Vec<String> = vec![
            "run".into(),
            "--config".into(),
            gateway::shipped_config().to_string_lossy().into_owned(),
        ];
        for (_, i) in lab.gw_ifaces.iter().enumerate().filter(|(k, _)| watch(*k)) {
            args.extend(["--iface".into(), i.clone()]);
        }
        for (k, v) in [
            ("--model", root.join("models/nsl-kdd-flow.model")),
            ("--records", records),
            ("--alerts", alerts),
        ] {
            args.extend([k.into(), v.to_string_lossy().into_owned()]);
        }
        args.extend([
            "--metrics-addr".into(),
            METRICS.into(),
            "--duration-secs".into(),
            bound.clone(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut sensor = lab
            .gateway
            .spawn(&sensor_bin().to_string_lossy(), &args)
            .expect("spawn sensor");
        sensor
            .wait_for_stderr("watching", Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("the sensor did not start: {e}"));
        Lab {
            sensor,
            _http: http,
            lab,
            dir,
        }
    }

    /// Runs `command` (a tool and its arguments) on the attacker, bounded to 20 s, and checks
    /// that it sent `packets` (its "N packets transmitted" statistics line).
    pub fn attack(&self, command: &str, packets: u32) {
        let out = self
            .lab
            .attacker
            .cmd("timeout")
            .arg("20")
            .args(command.split_whitespace())
            .output()
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&format!("{packets} packets transmitted")),
            "{command}: {text}"
        );
    }

    /// The alert file so far (incidents as they open), for a failure's message.
    pub fn alerts_so_far(&self) -> String {
        std::fs::read_to_string(self.dir.join("alerts.jsonl")).unwrap_or_default()
    }

    /// Incidents opened so far whose line contains `needle` (`""` for all).
    pub fn opened(&self, needle: &str) -> usize {
        self.alerts_so_far()
            .lines()
            .filter(|l| l.contains("\"state\":\"open\"") && l.contains(needle))
            .count()
    }

    pub fn pid(&self) -> u32 {
        self.sensor.child.as_ref().expect("running").id()
    }

    pub fn scrape(&self) -> String {
        metrics::scrape(&self.lab.gateway, METRICS, 5).expect("scrape /metrics")
    }

    /// Stops the sensor and reads what it wrote; then the lab goes.
    pub fn stop(self) -> Outcome {
        let Lab {
            mut sensor,
            _http: http,
            lab,
            dir,
        } = self;
        sensor.terminate();
        let (status, _, stderr) = sensor
            .wait_output(Duration::from_secs(60))
            .expect("sensor exit");
        assert!(status.success(), "sensor failed ({status}): {stderr}");
        let read = |p: &Path| -> Vec<serde_json::Value> {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
                .collect()
        };
        let summary: serde_json::Value = stderr
            .lines()
            .find_map(|l| l.strip_prefix("summary: "))
            .map(|l| serde_json::from_str(l).expect("summary json"))
            .unwrap_or_else(|| panic!("no summary line: {stderr}"));
        let out = Outcome {
            records: read(&dir.join("records.jsonl")),
            alerts: read(&dir.join("alerts.jsonl")),
            summary,
            stderr,
        };
        drop(http);
        drop(lab);
        drop(dir);
        out
    }
}

/// What the sensor wrote, and its exit summary.
pub struct Outcome {
    /// Every scored connection (`--records`, JSON lines).
    pub records: Vec<serde_json::Value>,
    /// The alert file's lines.
    pub alerts: Vec<serde_json::Value>,
    /// The `summary:` line of its exit (capture and health counters).
    pub summary: serde_json::Value,
    pub stderr: String,
}

impl Outcome {
    pub fn health(&self, name: &str) -> u64 {
        self.summary["health"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no health counter {name}: {}", self.summary))
    }

    pub fn capture(&self, name: &str) -> u64 {
        self.summary["capture"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no capture counter {name}: {}", self.summary))
    }

    /// The `open` lines of its incidents, in the order they opened.
    pub fn opened(&self) -> Vec<&serde_json::Value> {
        self.alerts
            .iter()
            .filter(|a| a["type"] == "incident" && a["state"] == "open")
            .collect()
    }

    /// The client's page fetches.
    pub fn normal(&self) -> Vec<&serde_json::Value> {
        self.records
            .iter()
            .filter(|r| {
                r["orig_addr"] == CLIENT && r["resp_addr"] == HTTP_SERVER && r["resp_port"] == 80
            })
            .collect()
    }
}
