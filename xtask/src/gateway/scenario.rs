//! What a scenario run is given ([`ScenarioOptions`], the configuration's [`IdleTimeouts`]) and
//! what it returns ([`Outcome`]).
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use super::{PrometheusOptions, PrometheusOutcome};

/// The idle timeouts of a configuration file and its capture tick, which decide how long the
/// scenario waits after its traffic. Read from the file rather than restated here, so that the
/// lab follows the shipped settings when they change.
#[derive(Clone, Copy, Debug)]
pub struct IdleTimeouts {
    pub tcp: Duration,
    pub tcp_attempt: Duration,
    pub udp: Duration,
    pub icmp: Duration,
    /// How late after its timeout an idle connection is finalised: the file's `tick_ms`
    /// (10 ms if unset, the sensor's default).
    pub tick: Duration,
}

impl IdleTimeouts {
    pub fn from_file(path: &Path) -> Result<IdleTimeouts, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let number = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
        let secs = |key: &str| -> Result<Duration, String> {
            let v = table
                .get("timeouts")
                .and_then(|t| t.get(key))
                .and_then(number)
                .ok_or_else(|| format!("{}: no [timeouts] {key}", path.display()))?;
            Duration::try_from_secs_f64(v)
                .map_err(|e| format!("{}: [timeouts] {key} = {v}: {e}", path.display()))
        };
        let tick = match table.get("tick_ms").and_then(number) {
            Some(ms) => Duration::try_from_secs_f64(ms / 1e3)
                .map_err(|e| format!("{}: tick_ms = {ms}: {e}", path.display()))?,
            None => Duration::from_millis(10),
        };
        Ok(IdleTimeouts {
            tcp: secs("tcp_secs")?,
            tcp_attempt: secs("tcp_attempt_secs")?,
            udp: secs("udp_secs")?,
            icmp: secs("icmp_secs")?,
            tick,
        })
    }

    /// How long after its last packet every lab connection has been finalised by its own end:
    /// the longest idle timeout it can end by, the tick that notices, and a second for the
    /// capture loop to hand the records over. Established TCP connections in the lab all close
    /// with FIN or RST, so the established timeout (300 s shipped) is not waited for; one that
    /// did not close would show in the table's `shutdown` column.
    pub fn settle(&self) -> Duration {
        self.tcp_attempt.max(self.udp).max(self.icmp) + self.tick + Duration::from_secs(1)
    }
}

/// What the scenario runs.
#[derive(Clone, Debug)]
pub struct ScenarioOptions {
    /// The `sensor` binary.
    pub sensor: PathBuf,
    /// The configuration file given to `sensor run` (the shipped `deploy/sensor.toml`).
    pub config: PathBuf,
    /// Model file given to `sensor run`.
    pub model: PathBuf,
    /// How long the normal traffic runs, seconds (attacks happen within it).
    pub seconds: u64,
    pub attacks: bool,
    /// Directory for the records and alerts files.
    pub work_dir: PathBuf,
    /// Print progress lines.
    pub verbose: bool,
    /// Run a Prometheus server on the gateway with the shipped configuration and alert rules,
    /// scraping the sensor, and ask it at the end what fired ([`Outcome::prometheus`]).
    pub prometheus: Option<PrometheusOptions>,
}

/// What a generator reports: rounds run (one connection each) and how many succeeded.
#[derive(Clone, Copy, Debug, Default)]
pub struct Made {
    pub connections: u64,
    pub succeeded: u64,
}

/// One attack as it ran.
#[derive(Clone, Debug)]
pub struct AttackRun {
    pub kind: &'static str,
    /// When the tool was started (wall clock, Unix ns).
    pub start_unix_ns: u64,
    pub made: Made,
}

/// How long the phases took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Lab, services and sensor start.
    pub setup: Duration,
    /// Normal traffic (the attacks run within it).
    pub traffic: Duration,
    /// After the traffic: the longest idle timeout and an idle scan.
    pub settle: Duration,
    /// The whole scenario, up to the sensor's exit.
    pub total: Duration,
}

/// What came out of a run.
#[derive(Debug)]
pub struct Outcome {
    /// Every scored connection (`"type": "connection"` lines of `--records`).
    pub connections: Vec<serde_json::Value>,
    /// The alert file's lines (alerts, suppression summaries, incidents).
    pub alert_lines: Vec<serde_json::Value>,
    /// `/metrics` scraped after the traffic had ended and timed out, while the sensor still ran.
    pub metrics: String,
    /// `promtool check metrics` on that scrape: Ok, or its complaint.
    pub promtool: Result<(), String>,
    /// Connections each generator made, by kind.
    pub generated: BTreeMap<&'static str, Made>,
    pub attacks: Vec<AttackRun>,
    pub timings: Timings,
    /// The configuration file the sensor ran with, and its idle timeouts.
    pub config: PathBuf,
    pub timeouts: IdleTimeouts,
    pub sensor_stderr: String,
    pub metrics_addr: String,
    /// What the Prometheus server reported, if the options asked for one.
    pub prometheus: Option<PrometheusOutcome>,
    /// When the traffic started (Unix seconds).
    pub traffic_start_unix: f64,
}
