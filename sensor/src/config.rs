//! Configuration of `sensor run`: a TOML file, overridden field by field by command-line flags.
//!
//! Every field is optional in the file; what neither the file nor a flag sets takes the default
//! documented here (and in `deploy/sensor.toml`). Unknown keys are an error, so that a typo does
//! not silently leave a setting at its default.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::{
    capture::{CaptureConfig, XdpAttachMode},
    detect::{ChecksConfig, ThresholdOverride, VolumeConfig},
    incidents::IncidentConfig,
    lifecycle::{LifecycleConfig, Timeouts},
    suppress::{RuleError, Suppressions},
};

/// The configuration file's contents; see `deploy/sensor.toml` for an annotated example.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub interfaces: Option<Vec<String>>,
    pub xdp_mode: Option<XdpAttachMode>,
    pub table_size: Option<u32>,
    pub ring_bytes: Option<u32>,
    /// Capture loop tick: how late after its timeout an idle connection is finalised.
    pub tick_ms: Option<u64>,
    /// Period of the table scan that adopts connections whose events were lost (default: a
    /// quarter of the shortest idle timeout, 50 ms to 1 s).
    pub table_scan_interval_ms: Option<u64>,
    /// `host:port` of the Prometheus endpoint; `"off"` disables it.
    pub metrics_addr: Option<String>,
    pub model: Option<PathBuf>,
    #[serde(default)]
    pub timeouts: TimeoutsFile,
    #[serde(default)]
    pub thresholds: ThresholdsFile,
    #[serde(default)]
    pub alerts: AlertsFile,
    #[serde(default)]
    pub incidents: IncidentsFile,
    #[serde(default)]
    pub volume: VolumeFile,
    #[serde(default)]
    pub checks: ChecksFile,
    /// Where to write every scored connection (off by default).
    pub records: Option<String>,
    /// The records' layout: `jsonl` (default), `zeek` or `eve`.
    pub records_format: Option<RecordsFormat>,
    /// `[[suppress]]`: the operator's suppression rules ([`crate::suppress`]), validated by
    /// [`Suppressions::compile`] so that an error can name the rule and the field.
    #[serde(default)]
    pub suppress: Vec<toml::Table>,
}

/// What `sensor replay --config` takes of a configuration file
/// ([`FileConfig::load_for_replay`]).
#[derive(Clone, Debug, Default)]
pub struct ReplaySettings {
    pub suppressions: Suppressions,
    pub thresholds: ThresholdOverride,
    pub incidents: IncidentConfig,
    pub volume: VolumeConfig,
    pub checks: ChecksConfig,
}

/// `[checks]`: when the model's verdict on a check repeated on a schedule is withdrawn (see
/// `crate::detect::checks`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChecksFile {
    pub enabled: Option<bool>,
    pub repeats: Option<u32>,
    pub min_period_secs: Option<f64>,
}

/// `[volume]`: when one conversation's packet rate flags it (see `crate::detect::volume`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VolumeFile {
    pub enabled: Option<bool>,
    pub min_packets: Option<u64>,
    pub icmp_echo_pps: Option<f64>,
    pub udp_one_way_pps: Option<f64>,
    pub udp_one_way_per_source_pps: Option<f64>,
    pub tcp_attempts_per_sec: Option<f64>,
    pub tcp_attempts_per_source_per_sec: Option<f64>,
    pub login_sessions_per_min: Option<u32>,
    pub held_requests_per_min: Option<u32>,
}

/// `[incidents]`: when anomalous connections become an incident (see `crate::incidents`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IncidentsFile {
    pub scan_ports: Option<u32>,
    pub sweep_hosts: Option<u32>,
    pub flood_connections: Option<u32>,
    pub source_connections: Option<u32>,
    pub quiet_secs: Option<f64>,
    pub update_secs: Option<f64>,
    pub horizon_secs: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsFile {
    pub tcp_secs: Option<f64>,
    pub tcp_attempt_secs: Option<f64>,
    pub udp_secs: Option<f64>,
    pub icmp_secs: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThresholdsFile {
    pub supervised: Option<f64>,
    pub unsupervised: Option<f64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlertsFile {
    /// `"stdout"`, `"off"`, or a file path (appended to).
    pub sink: Option<String>,
    /// Also one line per anomalous connection (incidents are always written).
    pub connections: Option<bool>,
    pub max_per_second: Option<f64>,
    pub burst: Option<u32>,
    /// `json` (default) or `eve`.
    pub format: Option<AlertFormat>,
}

/// The layout of the records stream (every scored connection).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RecordsFormat {
    /// One JSON line per connection (`"type": "connection"`), as the alert lines.
    #[default]
    Jsonl,
    /// Zeek's `conn.log` (TSV with its `#` headers and `#close` footer), plus the verdict.
    Zeek,
    /// Suricata EVE JSON `flow` events, plus the verdict.
    Eve,
}

/// The layout of the alert stream.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AlertFormat {
    /// The sensor's own JSON lines (`"type": "incident"`, `"alert"`, `"suppressed"`).
    #[default]
    Json,
    /// Suricata EVE JSON `alert` events (the sensor's line under `sensor`), which the
    /// Elastic and Splunk Suricata integrations ingest.
    Eve,
}

/// Where a stream of JSON lines goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sink {
    Off,
    Stdout,
    File(PathBuf),
}

impl Sink {
    pub fn parse(s: &str) -> Sink {
        match s {
            "off" | "" => Sink::Off,
            "stdout" | "-" => Sink::Stdout,
            path => Sink::File(PathBuf::from(path)),
        }
    }
}

/// The alert stream and its rate limit.
///
/// Incidents are the unit an operator pages on, so by default the stream carries incident
/// lines only: a flood is one incident, not two thousand lines. `connections` adds one line per
/// anomalous connection (rate-limited); every verdict is also in `records` and the metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertConfig {
    pub sink: Sink,
    /// Also one line per anomalous connection.
    pub connections: bool,
    /// Sustained connection alerts per second; above it, they are counted and summarised.
    pub max_per_second: f64,
    /// Connection alerts allowed in a burst above the sustained rate.
    pub burst: u32,
    pub format: AlertFormat,
}

impl Default for AlertConfig {
    fn default() -> Self {
        AlertConfig {
            sink: Sink::Stdout,
            connections: false,
            max_per_second: 50.0,
            burst: 200,
            format: AlertFormat::Json,
        }
    }
}

/// The resolved configuration of the agent.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub capture: CaptureConfig,
    /// Capture loop tick ([`crate::capture::run`]).
    pub tick: Duration,
    pub metrics_addr: Option<SocketAddr>,
    pub model: PathBuf,
    pub thresholds: ThresholdOverride,
    pub alerts: AlertConfig,
    pub incidents: IncidentConfig,
    pub volume: VolumeConfig,
    pub checks: ChecksConfig,
    pub records: Sink,
    pub records_format: RecordsFormat,
    pub suppressions: Suppressions,
    /// The file the configuration came from, read again for the suppressions on SIGHUP.
    pub file: Option<PathBuf>,
}

/// The default Prometheus address: loopback only, so nothing is exposed until the operator
/// says so. 9464 is not claimed by a common exporter.
pub fn default_metrics_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9464))
}
/// The default model, relative to the working directory (the repository when run from it;
/// `deploy/sensor.service` passes an absolute path).
pub const DEFAULT_MODEL: &str = "models/nsl-kdd-flow.model";
/// The default capture loop tick: an idle connection is final at most this long after its
/// timeout, well inside the 50 ms detection latency target.
pub const DEFAULT_TICK: Duration = Duration::from_millis(10);
/// The shortest tick accepted.
pub const MIN_TICK: Duration = Duration::from_millis(1);

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration file {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Rule(#[from] RuleError),
}

impl FileConfig {
    pub fn load(path: &std::path::Path) -> Result<FileConfig, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    /// Parses TOML text; `origin` names it in errors (with the line and column of the fault).
    pub fn parse(text: &str, origin: &str) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            reason: e.to_string().trim_end().to_string(),
        })
    }

    /// Reads only the suppression rules of the file at `path` (SIGHUP):
    /// errors name the file, and the rule and field at fault.
    pub fn load_suppressions(path: &std::path::Path) -> Result<Suppressions, ConfigError> {
        let f = FileConfig::load(path)?;
        Suppressions::compile(&f.suppress).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// What `sensor replay --config` takes of the file at `path`: its suppression rules, its
    /// threshold overrides and its incident settings, so that a capture replayed with a site's
    /// file is judged and grouped with the site's settings. Its timeouts and table size are
    /// replay's own flags (they decide when connections end, so a site that changed them passes
    /// the same values there); its interfaces, outputs and model are the live agent's.
    pub fn load_for_replay(path: &std::path::Path) -> Result<ReplaySettings, ConfigError> {
        let f = FileConfig::load(path)?;
        let named = |e: ConfigError| ConfigError::Parse {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        check_thresholds(&f.thresholds).map_err(named)?;
        Ok(ReplaySettings {
            suppressions: Suppressions::compile(&f.suppress).map_err(|e| named(e.into()))?,
            thresholds: ThresholdOverride {
                supervised: f.thresholds.supervised,
                unsupervised: f.thresholds.unsupervised,
            },
            incidents: resolve_incidents(&f.incidents).map_err(named)?,
            volume: resolve_volume(&f.volume).map_err(named)?,
            checks: resolve_checks(&f.checks).map_err(named)?,
        })
    }

    /// Resolves into a run configuration; fields still unset take their defaults.
    pub fn resolve(self) -> Result<RunConfig, ConfigError> {
        let interfaces = self.interfaces.unwrap_or_default();
        if interfaces.is_empty() {
            return Err(invalid(
                "interfaces",
                "no interface to watch (set `interfaces` in the file or pass --iface)".into(),
            ));
        }
        let timeouts = resolve_timeouts(&self.timeouts)?;
        let base = CaptureConfig::default();
        let table_size = self.table_size.unwrap_or(base.table_size);
        if table_size == 0 {
            return Err(invalid("table_size", "must be at least 1".into()));
        }
        let ring_bytes = self.ring_bytes.unwrap_or(base.ring_bytes);
        if !ring_bytes.is_power_of_two() || ring_bytes < 4096 {
            return Err(invalid(
                "ring_bytes",
                format!("must be a power of two of at least 4096, got {ring_bytes}"),
            ));
        }
        let metrics_addr = resolve_metrics_addr(self.metrics_addr.as_deref())?;
        check_thresholds(&self.thresholds)?;
        let alerts = resolve_alerts(&self.alerts);
        let incidents = resolve_incidents(&self.incidents)?;
        let volume = resolve_volume(&self.volume)?;
        let checks = resolve_checks(&self.checks)?;
        if !(alerts.max_per_second.is_finite() && alerts.max_per_second > 0.0) {
            return Err(invalid(
                "alerts.max_per_second",
                format!("must be > 0, got {}", alerts.max_per_second),
            ));
        }
        let suppressions = Suppressions::compile(&self.suppress)?;
        let table_scan_interval = self
            .table_scan_interval_ms
            .map(Duration::from_millis)
            .unwrap_or_else(|| LifecycleConfig::default_table_scan_interval(&timeouts));
        Ok(RunConfig {
            capture: CaptureConfig {
                interfaces,
                xdp_mode: self.xdp_mode.unwrap_or_default(),
                table_size,
                ring_bytes,
                lifecycle: LifecycleConfig {
                    timeouts,
                    table_scan_interval: Some(table_scan_interval),
                    ..base.lifecycle
                },
            },
            tick: self
                .tick_ms
                .map_or(DEFAULT_TICK, Duration::from_millis)
                .max(MIN_TICK),
            metrics_addr,
            model: self.model.unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL)),
            thresholds: ThresholdOverride {
                supervised: self.thresholds.supervised,
                unsupervised: self.thresholds.unsupervised,
            },
            alerts,
            incidents,
            volume,
            checks,
            records: self
                .records
                .as_deref()
                .map(Sink::parse)
                .unwrap_or(Sink::Off),
            records_format: self.records_format.unwrap_or_default(),
            suppressions,
            file: None,
        })
    }
}

fn invalid(field: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { field, reason }
}

/// A duration in seconds from the file, or `default` when unset.
fn secs(field: &'static str, v: Option<f64>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => Duration::try_from_secs_f64(s)
            .map_err(|_| invalid(field, format!("must be a number of seconds >= 0, got {s}"))),
    }
}

/// The idle timeouts, each defaulting to [`Timeouts::default`]'s.
fn resolve_timeouts(t: &TimeoutsFile) -> Result<Timeouts, ConfigError> {
    let d = Timeouts::default();
    Ok(Timeouts {
        tcp_established: secs("timeouts.tcp_secs", t.tcp_secs, d.tcp_established)?,
        tcp_attempt: secs(
            "timeouts.tcp_attempt_secs",
            t.tcp_attempt_secs,
            d.tcp_attempt,
        )?,
        udp: secs("timeouts.udp_secs", t.udp_secs, d.udp)?,
        icmp: secs("timeouts.icmp_secs", t.icmp_secs, d.icmp)?,
    })
}

/// The metrics endpoint's address: `off` for none, the default when unset.
fn resolve_metrics_addr(addr: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
    Ok(match addr {
        Some("off") => None,
        Some(a) => Some(
            a.parse()
                .map_err(|e| invalid("metrics_addr", format!("{a:?}: {e}")))?,
        ),
        None => Some(default_metrics_addr()),
    })
}

/// Threshold overrides, when set, must be numbers above 0.
fn check_thresholds(t: &ThresholdsFile) -> Result<(), ConfigError> {
    check_positive(&[
        ("thresholds.supervised", t.supervised),
        ("thresholds.unsupervised", t.unsupervised),
    ])
}

/// Each value that is set must be a finite number above 0; the error names the first field
/// that is not.
fn check_positive(fields: &[(&'static str, Option<f64>)]) -> Result<(), ConfigError> {
    for &(field, v) in fields {
        if let Some(v) = v
            && !(v.is_finite() && v > 0.0)
        {
            return Err(invalid(field, format!("must be a number > 0, got {v}")));
        }
    }
    Ok(())
}

/// The alert settings, each defaulting to [`AlertConfig::default`]'s.
fn resolve_alerts(a: &AlertsFile) -> AlertConfig {
    let da = AlertConfig::default();
    AlertConfig {
        sink: a.sink.as_deref().map(Sink::parse).unwrap_or(da.sink),
        connections: a.connections.unwrap_or(da.connections),
        max_per_second: a.max_per_second.unwrap_or(da.max_per_second),
        burst: a.burst.unwrap_or(da.burst),
        format: a.format.unwrap_or(da.format),
    }
}

/// The volume rule's settings, each defaulting to [`VolumeConfig::default`]'s. A rate must be
/// a number above 0 (`enabled = false` turns the rule off), and `min_packets` and
/// `login_sessions_per_min` and `held_requests_per_min` at least 2: a rate over one packet or
/// one session means nothing.
fn resolve_volume(f: &VolumeFile) -> Result<VolumeConfig, ConfigError> {
    let d = VolumeConfig::default();
    check_positive(&[
        ("volume.icmp_echo_pps", f.icmp_echo_pps),
        ("volume.udp_one_way_pps", f.udp_one_way_pps),
        (
            "volume.udp_one_way_per_source_pps",
            f.udp_one_way_per_source_pps,
        ),
        ("volume.tcp_attempts_per_sec", f.tcp_attempts_per_sec),
        (
            "volume.tcp_attempts_per_source_per_sec",
            f.tcp_attempts_per_source_per_sec,
        ),
    ])?;
    if let Some(n) = f.min_packets
        && n < 2
    {
        return Err(invalid(
            "volume.min_packets",
            format!("must be at least 2, got {n}"),
        ));
    }
    for (name, n) in [
        ("volume.login_sessions_per_min", f.login_sessions_per_min),
        ("volume.held_requests_per_min", f.held_requests_per_min),
    ] {
        if let Some(n) = n
            && n < 2
        {
            return Err(invalid(name, format!("must be at least 2, got {n}")));
        }
    }
    Ok(VolumeConfig {
        enabled: f.enabled.unwrap_or(d.enabled),
        login_sessions_per_min: f.login_sessions_per_min.unwrap_or(d.login_sessions_per_min),
        held_requests_per_min: f.held_requests_per_min.unwrap_or(d.held_requests_per_min),
        min_packets: f.min_packets.unwrap_or(d.min_packets),
        icmp_echo_pps: f.icmp_echo_pps.unwrap_or(d.icmp_echo_pps),
        udp_one_way_pps: f.udp_one_way_pps.unwrap_or(d.udp_one_way_pps),
        udp_one_way_per_source_pps: f
            .udp_one_way_per_source_pps
            .unwrap_or(d.udp_one_way_per_source_pps),
        tcp_attempts_per_sec: f.tcp_attempts_per_sec.unwrap_or(d.tcp_attempts_per_sec),
        tcp_attempts_per_source_per_sec: f
            .tcp_attempts_per_source_per_sec
            .unwrap_or(d.tcp_attempts_per_source_per_sec),
    })
}

/// The routine-check rule's settings, each defaulting to [`ChecksConfig::default`]'s:
/// `repeats` 2 to 1,000 (the first exchange of a pace has no pace yet; a count is kept to
/// 65,535), `min_period_secs` at
/// least 0.1 (faster is a flood's pace, which the rule must never take for a schedule).
fn resolve_checks(f: &ChecksFile) -> Result<ChecksConfig, ConfigError> {
    let d = ChecksConfig::default();
    if let Some(n) = f.repeats
        && !(2..=1_000).contains(&n)
    {
        return Err(invalid(
            "checks.repeats",
            format!("must be 2 to 1000, got {n}"),
        ));
    }
    let min_period_ns = match f.min_period_secs {
        None => d.min_period_ns,
        Some(s)
            if s.is_finite()
                && (0.1..=crate::detect::checks::MAX_PERIOD_SECS as f64).contains(&s) =>
        {
            (s * 1e9) as u64
        }
        Some(s) => {
            return Err(invalid(
                "checks.min_period_secs",
                format!(
                    "must be 0.1 to {} seconds, got {s}",
                    crate::detect::checks::MAX_PERIOD_SECS
                ),
            ));
        }
    };
    Ok(ChecksConfig {
        enabled: f.enabled.unwrap_or(d.enabled),
        repeats: f.repeats.unwrap_or(d.repeats),
        min_period_ns,
    })
}

/// The incident settings, each defaulting to [`IncidentConfig::default`]'s.
fn resolve_incidents(f: &IncidentsFile) -> Result<IncidentConfig, ConfigError> {
    let di = IncidentConfig::default();
    Ok(IncidentConfig {
        scan_ports: f.scan_ports.unwrap_or(di.scan_ports).max(1),
        sweep_hosts: f.sweep_hosts.unwrap_or(di.sweep_hosts).max(1),
        flood_connections: f.flood_connections.unwrap_or(di.flood_connections).max(1),
        source_connections: f.source_connections.unwrap_or(di.source_connections).max(1),
        quiet: secs("incidents.quiet_secs", f.quiet_secs, di.quiet)?,
        update_every: secs("incidents.update_secs", f.update_secs, di.update_every)?,
        horizon: match secs("incidents.horizon_secs", f.horizon_secs, di.horizon)? {
            // Evidence would start again at every connection: no incident could open.
            d if d.is_zero() => {
                return Err(invalid(
                    "incidents.horizon_secs",
                    "must be > 0 (the evidence of one connection could never add up)".into(),
                ));
            }
            d => d,
        },
        ..di
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_resolves_every_field() {
        let text = r#"
            interfaces = ["eth0", "eth1"]
            xdp_mode = "generic"
            table_size = 1000
            ring_bytes = 65536
            tick_ms = 50
            table_scan_interval_ms = 500
            metrics_addr = "0.0.0.0:9500"
            model = "/var/lib/sensor/site.model"
            records = "/var/log/sensor/conn.log"
            records_format = "zeek"
            [timeouts]
            tcp_secs = 60
            tcp_attempt_secs = 2.5
            udp_secs = 10
            icmp_secs = 3
            [thresholds]
            supervised = 0.4
            [alerts]
            sink = "/var/log/sensor/alerts.jsonl"
            max_per_second = 5
            burst = 10
            format = "eve"
            [incidents]
            scan_ports = 15
            quiet_secs = 60
            horizon_secs = 120
            [volume]
            udp_one_way_pps = 20000
            udp_one_way_per_source_pps = 2500
            tcp_attempts_per_sec = 8000
            tcp_attempts_per_source_per_sec = 300
            min_packets = 500
            login_sessions_per_min = 30
            held_requests_per_min = 20
            [checks]
            repeats = 6
            min_period_secs = 2.5
        "#;
        let c = FileConfig::parse(text, "t.toml")
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(c.capture.interfaces, ["eth0", "eth1"]);
        assert_eq!(c.capture.xdp_mode, XdpAttachMode::Generic);
        assert_eq!(c.capture.table_size, 1000);
        assert_eq!(c.capture.ring_bytes, 65536);
        let l = &c.capture.lifecycle;
        assert_eq!(l.timeouts.tcp_attempt, Duration::from_millis(2500));
        assert_eq!(l.timeouts.icmp, Duration::from_secs(3));
        assert_eq!(l.table_scan_interval, Some(Duration::from_millis(500)));
        assert_eq!(c.tick, Duration::from_millis(50));
        assert_eq!(c.metrics_addr, Some("0.0.0.0:9500".parse().unwrap()));
        assert_eq!(c.model, PathBuf::from("/var/lib/sensor/site.model"));
        assert_eq!(c.thresholds.supervised, Some(0.4));
        assert_eq!(c.thresholds.unsupervised, None);
        assert_eq!(
            c.alerts.sink,
            Sink::File("/var/log/sensor/alerts.jsonl".into())
        );
        assert_eq!(c.alerts.burst, 10);
        assert_eq!(c.alerts.format, AlertFormat::Eve);
        assert_eq!(c.records, Sink::File("/var/log/sensor/conn.log".into()));
        assert_eq!(c.records_format, RecordsFormat::Zeek);
        assert_eq!(c.incidents.scan_ports, 15);
        assert_eq!(c.incidents.quiet, Duration::from_secs(60));
        assert_eq!(c.incidents.horizon, Duration::from_secs(120));
        assert_eq!(
            c.incidents.flood_connections,
            IncidentConfig::default().flood_connections
        );
        let v = VolumeConfig::default();
        assert_eq!(
            c.volume,
            VolumeConfig {
                udp_one_way_pps: 20_000.0,
                udp_one_way_per_source_pps: 2_500.0,
                tcp_attempts_per_sec: 8_000.0,
                tcp_attempts_per_source_per_sec: 300.0,
                min_packets: 500,
                login_sessions_per_min: 30,
                held_requests_per_min: 20,
                ..v
            }
        );
        assert_eq!(
            c.checks,
            ChecksConfig {
                enabled: true,
                repeats: 6,
                min_period_ns: 2_500_000_000,
            }
        );
    }

    #[test]
    fn volume_settings_that_mean_nothing_are_refused_by_name() {
        for (text, field) in [
            ("[volume]\nicmp_echo_pps = 0\n", "volume.icmp_echo_pps"),
            ("[volume]\nudp_one_way_pps = -5\n", "volume.udp_one_way_pps"),
            (
                "[volume]\nudp_one_way_pps = nan\n",
                "volume.udp_one_way_pps",
            ),
            ("[volume]\nmin_packets = 1\n", "volume.min_packets"),
            (
                "[volume]\nlogin_sessions_per_min = 1\n",
                "volume.login_sessions_per_min",
            ),
            (
                "[volume]\nheld_requests_per_min = 0\n",
                "volume.held_requests_per_min",
            ),
            (
                "[volume]\ntcp_attempts_per_sec = 0\n",
                "volume.tcp_attempts_per_sec",
            ),
            ("[checks]\nrepeats = 1\n", "checks.repeats"),
            ("[checks]\nrepeats = 100000\n", "checks.repeats"),
            (
                "[checks]\nmin_period_secs = 0.01\n",
                "checks.min_period_secs",
            ),
            (
                "[checks]\nmin_period_secs = 1e9\n",
                "checks.min_period_secs",
            ),
        ] {
            let text = format!("interfaces = [\"lo\"]\n{text}");
            let e = FileConfig::parse(&text, "t")
                .unwrap()
                .resolve()
                .unwrap_err();
            assert!(e.to_string().contains(field), "{text}: {e}");
        }
        let off = FileConfig::parse("interfaces = [\"lo\"]\n[volume]\nenabled = false\n", "t")
            .unwrap()
            .resolve()
            .unwrap();
        assert!(!off.volume.enabled);
    }

    #[test]
    fn a_zero_incident_horizon_is_refused_by_name() {
        let text = "interfaces = [\"lo\"]\n[incidents]\nhorizon_secs = 0\n";
        let e = FileConfig::parse(text, "t").unwrap().resolve().unwrap_err();
        assert!(e.to_string().contains("incidents.horizon_secs"), "{e}");
    }

    #[test]
    fn defaults_are_loopback_metrics_stdout_alerts_and_zeek_timeouts() {
        let c = FileConfig::parse("interfaces = [\"lo\"]", "t")
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(c.metrics_addr, Some(default_metrics_addr()));
        assert!(c.metrics_addr.unwrap().ip().is_loopback());
        assert_eq!(c.alerts.sink, Sink::Stdout);
        assert_eq!(c.alerts.format, AlertFormat::Json);
        assert_eq!(c.records_format, RecordsFormat::Jsonl);
        assert_eq!(c.records, Sink::Off);
        assert_eq!(c.capture.lifecycle.timeouts, Timeouts::default());
        assert_eq!(c.tick, DEFAULT_TICK);
        assert_eq!(c.model, PathBuf::from(DEFAULT_MODEL));
    }

    #[test]
    fn mistakes_are_errors_that_name_the_field_or_line() {
        let e = FileConfig::parse("interfaces = [\"a\"]\ntable_sise = 5\n", "site.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("site.toml") && e.contains("table_sise") && e.contains("line 2"),
            "{e}"
        );
        let e = FileConfig::default().resolve().unwrap_err().to_string();
        assert!(e.contains("interfaces"), "{e}");
        let bad = |text: &str, field: &str| {
            let e = FileConfig::parse(text, "t")
                .unwrap()
                .resolve()
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{text}: {e}");
        };
        bad("interfaces=[\"a\"]\nring_bytes = 5000", "ring_bytes");
        bad(
            "interfaces=[\"a\"]\nmetrics_addr = \"nowhere\"",
            "metrics_addr",
        );
        bad(
            "interfaces=[\"a\"]\n[timeouts]\nudp_secs = -1",
            "timeouts.udp_secs",
        );
        bad(
            "interfaces=[\"a\"]\n[thresholds]\nsupervised = 0",
            "thresholds.supervised",
        );
        bad("interfaces=[\"a\"]\ntable_size = 0", "table_size");
    }
}

#[cfg(test)]
mod deploy_example {
    use super::*;

    /// The annotated example shipped in `deploy/` must stay a valid configuration.
    #[test]
    fn the_shipped_example_configuration_parses_and_resolves() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sensor.toml");
        let c = FileConfig::load(&path).unwrap().resolve().unwrap();
        assert_eq!(c.capture.interfaces, ["eth0", "eth1"]);
        assert_eq!(c.metrics_addr, Some(default_metrics_addr()));
        assert_eq!(
            c.alerts.sink,
            Sink::File("/var/log/sensor/alerts.jsonl".into())
        );
        assert_eq!(c.capture.lifecycle.timeouts, Timeouts::default());
        assert_eq!(c.tick, DEFAULT_TICK);
    }
}
