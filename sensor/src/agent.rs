//! The live agent (`sensor run`): capture -> features -> verdict -> metrics, alerts, records.
//!
//! One current-thread tokio runtime drives the capture loop; every finished connection is
//! scored as soon as the capture stage hands it over, on the same thread, so the verdict
//! follows the connection's end by the time it takes to compute it (microseconds) plus the
//! time the capture stage needed to learn that it ended (the ring-buffer event for FIN/RST,
//! the idle deadline's tick for the rest). The `/metrics` endpoint runs on its own thread; a
//! SIGHUP task loads a new model off the hot path and hands it over through a slot.
use std::{
    fs::OpenOptions,
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use crate::{
    alerts::{AlertSink, ScoredLine},
    capture::{self, Capture, CaptureError, nat::NatCheck},
    config::{RecordsFormat, RunConfig, Sink},
    detect::{Pipeline, Scored},
    export::{Metrics, metrics::ScoredBatch},
    features::FeatureConfig,
    flows::{ConnEvent, ConnectionRecord, EndReason},
    incidents::{IncidentLine, IncidentTracker},
    lifecycle::LifecycleStats,
    model::{Model, ModelError},
    replay::output::{Format, LogRows, RowWriter},
    suppress::Suppressions,
};

/// Why the agent could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("loading the model")]
    Model(#[from] ModelError),
    #[error("starting the capture on {interfaces}")]
    Capture {
        interfaces: String,
        #[source]
        source: Box<CaptureError>,
    },
    #[error("capture loop")]
    Loop(#[source] Box<CaptureError>),
    #[error("building the metrics registry")]
    Metrics(#[from] crate::export::metrics::MetricsError),
    #[error(transparent)]
    Serve(#[from] crate::export::http::ServeError),
    #[error("opening {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("feature engine settings")]
    Features(#[from] crate::features::FeatureConfigError),
}

/// What a run did, printed at exit and returned to tests.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct RunSummary {
    pub connections: u64,
    pub anomalous: u64,
    /// Incidents opened, and incident lines written.
    pub incidents: u64,
    pub incident_lines: u64,
    pub alerts_written: u64,
    pub alerts_suppressed: u64,
    pub model_reloads_ok: u64,
    pub model_reloads_failed: u64,
    pub output_errors: u64,
    /// Anomalous connections and incident lines silenced by a suppression rule.
    pub suppressed_connections: u64,
    pub suppressed_incident_lines: u64,
}

/// Opens a JSON-lines sink (files are appended to, so a restart keeps earlier lines).
fn open_sink(sink: &Sink) -> Result<Option<Box<dyn Write + Send>>, AgentError> {
    Ok(match sink {
        Sink::Off => None,
        Sink::Stdout => Some(Box::new(std::io::stdout())),
        Sink::File(p) => Some(Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|source| AgentError::Open {
                    path: p.display().to_string(),
                    source,
                })?,
        )),
    })
}

/// The records' row writer for a layout other than the sensor's JSON lines.
fn record_rows(format: RecordsFormat) -> Option<LogRows> {
    let format = match format {
        RecordsFormat::Jsonl => return None,
        RecordsFormat::Zeek => Format::Zeek,
        RecordsFormat::Eve => Format::Eve,
    };
    // Community IDs with seed 0, as the alert lines and Zeek and Suricata by default.
    Some(LogRows::new(RowWriter::new(format, 0)))
}

/// Opens the records sink and writes the layout's header (Zeek's `#` lines) at once.
fn open_records(
    sink: &Sink,
    rows: Option<&LogRows>,
) -> Result<Option<Box<dyn Write + Send>>, AgentError> {
    let mut out = open_sink(sink)?;
    if let (Some(o), Some(w)) = (out.as_mut(), rows) {
        w.header(o)
            .and_then(|()| o.flush())
            .map_err(|source| AgentError::Open {
                path: match sink {
                    Sink::File(p) => p.display().to_string(),
                    _ => "stdout".into(),
                },
                source,
            })?;
    }
    Ok(out)
}

fn push_line<T: serde::Serialize>(buf: &mut Vec<u8>, v: &T) {
    // Serialising our own structs to memory cannot fail.
    if serde_json::to_writer(&mut *buf, v).is_ok() {
        buf.push(b'\n');
    }
}

fn wall_clock_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The stages after capture, fed one wake-up of the capture loop at a time.
struct Stages {
    pipeline: Pipeline,
    metrics: Arc<Metrics>,
    alerts: Option<AlertSink>,
    connection_alerts: bool,
    records: Option<Box<dyn Write + Send>>,
    /// The records' layout other than the sensor's JSON lines (`zeek`, `eve`).
    record_rows: Option<LogRows>,
    incidents: IncidentTracker,
    /// Connections split by address translation between the watched interfaces.
    nat: NatCheck,
    summary: RunSummary,
    /// A model loaded by SIGHUP, waiting to be swapped in.
    reloaded: Arc<Mutex<Option<Arc<Model>>>>,
    /// Suppression rules loaded by SIGHUP, waiting likewise.
    reloaded_rules: Arc<Mutex<Option<Arc<Suppressions>>>>,
    model_path: String,
}

impl Stages {
    /// One wake-up: swap a reloaded model in, score the events, count, write, group into
    /// incidents. `now` is the verdicts' time on the records' clock.
    fn handle(&mut self, events: &[ConnEvent], stats: &LifecycleStats, now: impl Fn() -> u64) {
        if let Some(m) = self.reloaded.lock().map(|mut s| s.take()).unwrap_or(None) {
            self.pipeline.set_model(m);
            self.metrics
                .set_model(self.pipeline.model(), &self.model_path);
            log::info!("model reloaded from {}", self.model_path);
        }
        if let Some(r) = self
            .reloaded_rules
            .lock()
            .map(|mut s| s.take())
            .unwrap_or(None)
        {
            self.metrics.set_suppressions(&r);
            self.pipeline.set_suppressions(r);
        }
        self.metrics.set_capture_stats(stats);
        // Lines are built in memory and written once per wake-up: one write per sink, not one
        // per JSON token (serde writes piecewise).
        let (mut rec_buf, mut alert_buf, mut lines) = (Vec::new(), Vec::new(), Vec::new());
        let scored = self.pipeline.process_events(events);
        // The verdicts exist from here: latency counts the whole batch's processing.
        let now = now();
        let metrics = Arc::clone(&self.metrics);
        let mut observed = metrics.scored_batch();
        let mut verdicts = scored.iter();
        self.nat.refresh();
        for ev in events {
            if let (ConnEvent::Settled(last), Some(w)) = (ev, self.record_rows.as_mut()) {
                // Writing to memory cannot fail.
                drop(w.settled(&mut rec_buf, last));
                continue;
            }
            let Some(rec) = ev.record() else { continue };
            let Some(s) = verdicts.next() else { break };
            self.incidents
                .observe(rec, s, rec.final_unix_ns, &mut lines);
            if let ConnEvent::Finished(rec) = ev {
                if let Some(line) = self.nat.observe(rec) {
                    log::warn!("{line}");
                }
                self.finished(rec, s, now, &mut observed, &mut rec_buf, &mut alert_buf);
            }
        }
        drop(observed);
        self.metrics.set_nat_split(self.nat.split_total);
        self.incidents.tick(now, &mut lines);
        self.metrics.set_incident_stats(self.incidents.stats());
        self.write(&rec_buf, alert_buf, &lines, now);
        self.metrics
            .set_engine_stats(&self.pipeline.engine().stats());
        self.metrics.set_volume_targets(self.pipeline.targets());
        self.metrics.set_login_sources(self.pipeline.logins());
        self.metrics.set_held_sources(self.pipeline.held());
        self.metrics
            .set_routine_checks(self.pipeline.routine_checks());
    }

    /// A finished connection's metrics, record line and connection alert.
    fn finished(
        &mut self,
        rec: &ConnectionRecord,
        s: &Scored,
        now: u64,
        observed: &mut ScoredBatch<'_>,
        rec_buf: &mut Vec<u8>,
        alert_buf: &mut Vec<u8>,
    ) {
        let latency_ms = now.saturating_sub(rec.final_unix_ns) as f64 / 1e6;
        self.metrics.observe_connection(rec);
        if rec.end_reason != EndReason::Shutdown {
            observed.observe(rec, s, latency_ms / 1e3);
        }
        self.summary.connections += 1;
        self.summary.anomalous += u64::from(s.verdict.anomalous);
        if self.records.is_some() {
            match self.record_rows.as_mut() {
                None => push_line(
                    rec_buf,
                    &ScoredLine::new("connection", rec, s, now, latency_ms),
                ),
                // Writing to memory cannot fail.
                Some(w) => drop(w.row(rec_buf, rec, s)),
            }
        }
        if let Some(rule) = &s.suppressed_by {
            self.metrics.suppressed(rule, "connection");
            self.summary.suppressed_connections += 1;
            return;
        }
        if let Some(a) = self.alerts.as_mut().filter(|_| self.connection_alerts) {
            if s.verdict.anomalous {
                let line = ScoredLine::alert(rec, s, self.pipeline.model(), now, latency_ms);
                a.offer(&line, now, alert_buf);
            } else {
                a.tick(now, alert_buf);
            }
        }
    }

    /// Writes the lines of one wake-up; a failed write is counted.
    fn write(&mut self, rec_buf: &[u8], mut alert_buf: Vec<u8>, lines: &[IncidentLine], now: u64) {
        let mut failed = 0;
        if let Some(out) = self.records.as_mut().filter(|_| !rec_buf.is_empty()) {
            failed += u64::from(out.write_all(rec_buf).and_then(|()| out.flush()).is_err());
        }
        let lines = self.unsuppressed(lines);
        if let Some(a) = self.alerts.as_mut() {
            for line in &lines {
                a.incident(line, &mut alert_buf);
            }
            a.tick(now, &mut alert_buf);
            failed += u64::from(a.write(&alert_buf).is_err());
            self.metrics
                .set_alert_counts(a.written_total, a.suppressed_total);
        }
        self.summary.incident_lines += lines.len() as u64;
        if failed > 0 {
            self.summary.output_errors += failed;
            self.metrics.output_error();
        }
    }

    /// The incident lines to write: those no rule silences (the others counted), explained
    /// by the running model. Explanations only where there is an alert stream to carry them.
    fn unsuppressed(&mut self, lines: &[IncidentLine]) -> Vec<IncidentLine> {
        let mut out = Vec::with_capacity(lines.len());
        for line in lines {
            if let Some(rule) = self.pipeline.suppressions().incident(line) {
                self.metrics.suppressed(rule, "incident");
                self.summary.suppressed_incident_lines += 1;
                continue;
            }
            let mut line = line.clone();
            if self.alerts.is_some() {
                line.explain(self.pipeline.model());
            }
            out.push(line);
        }
        out
    }

    /// The end of the run: open incidents close, held-back alerts are summarised.
    fn finish(&mut self) {
        if let (Some(out), Some(w)) = (self.records.as_mut(), self.record_rows.as_mut())
            && w.finish(out).and_then(|()| out.flush()).is_err()
        {
            self.summary.output_errors += 1;
        }
        let mut lines = Vec::new();
        self.incidents.finish(&mut lines);
        self.metrics.set_incident_stats(self.incidents.stats());
        let lines = self.unsuppressed(&lines);
        let mut buf = Vec::new();
        if let Some(a) = self.alerts.as_mut() {
            for line in &lines {
                a.incident(line, &mut buf);
            }
            a.flush_suppressed(&mut buf);
            if a.write(&buf).is_err() {
                self.summary.output_errors += 1;
            }
            self.summary.alerts_written = a.written_total;
            self.summary.alerts_suppressed = a.suppressed_total;
        }
        self.summary.incident_lines += lines.len() as u64;
        self.summary.incidents = self.incidents.stats().opened.values().sum();
        let (ok, failed) = self.metrics.model_reload_counts();
        self.summary.model_reloads_ok = ok;
        self.summary.model_reloads_failed = failed;
    }
}

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    cfg: RunConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<RunSummary, AgentError> {
    let model = Arc::new(Model::load(&cfg.model)?);
    let model_path = cfg.model.display().to_string();
    let interfaces = cfg.capture.interfaces.join(", ");
    let mut capture_config = cfg.capture.clone();
    // Trailing packets are handed on only for records in Zeek's or Suricata's layout.
    capture_config.lifecycle.settled_records = record_rows(cfg.records_format).is_some();
    let capture = Capture::start(capture_config).map_err(|source| AgentError::Capture {
        interfaces: interfaces.clone(),
        source: Box::new(source),
    })?;
    let metrics = Arc::new(Metrics::new(
        capture.health_source(),
        cfg.capture.table_size,
    )?);
    let mut pipeline = Pipeline::new(Arc::clone(&model), FeatureConfig::default())?
        .with_overrides(cfg.thresholds)
        .with_volume(cfg.volume)
        .with_checks(cfg.checks);
    pipeline.set_suppressions(Arc::new(cfg.suppressions.clone()));
    metrics.set_suppressions(&cfg.suppressions);
    metrics.set_model(pipeline.model(), &model_path);
    metrics.set_incident_stats(&Default::default());
    if let Some(addr) = cfg.metrics_addr {
        let bound = crate::export::http::serve(addr, Arc::clone(&metrics))?;
        log::info!("metrics on http://{bound}/metrics");
    }
    // SIGHUP: load the model file again off the capture thread; a good one waits in the slot.
    let reloaded: Arc<Mutex<Option<Arc<Model>>>> = Arc::default();
    let reloaded_rules: Arc<Mutex<Option<Arc<Suppressions>>>> = Arc::default();
    let reloader = spawn_reloader(
        Reload {
            model: cfg.model.clone(),
            config: cfg.file.clone(),
        },
        Arc::clone(&reloaded),
        Arc::clone(&reloaded_rules),
        Arc::clone(&metrics),
    );
    if !cfg.suppressions.is_empty() {
        log::info!(
            "{} suppression rule(s): {}",
            cfg.suppressions.rules().len(),
            rule_names(&cfg.suppressions)
        );
    }
    let t = pipeline.model().thresholds();
    log::info!(
        "watching {interfaces} (table {} connections); model {model_path} ({:?} features, thresholds supervised {:.4}, unsupervised {:.4}{}{})",
        cfg.capture.table_size,
        pipeline.model().feature_set(),
        t.supervised,
        t.unsupervised,
        pipeline
            .model()
            .cold_thresholds()
            .map(|c| format!(
                "; in a host window not seen yet {:.4} and {:.4}",
                c.supervised, c.unsupervised
            ))
            .unwrap_or_default(),
        if pipeline.model().data().normal_profile.is_some() {
            ""
        } else {
            ", no normal profile"
        }
    );
    let record_rows = record_rows(cfg.records_format);
    let mut stages = Stages {
        pipeline,
        metrics,
        alerts: open_sink(&cfg.alerts.sink)?.map(|out| {
            AlertSink::new(out, cfg.alerts.max_per_second, cfg.alerts.burst)
                .with_format(cfg.alerts.format)
        }),
        connection_alerts: cfg.alerts.connections,
        records: open_records(&cfg.records, record_rows.as_ref())?,
        record_rows,
        incidents: IncidentTracker::new(cfg.incidents.clone()),
        nat: NatCheck::new(&cfg.capture.interfaces),
        summary: RunSummary::default(),
        reloaded,
        reloaded_rules,
        model_path,
    };
    // "Now" on the records' own time base (the kernel's monotonic clock shifted by the offset
    // taken at start), so that a wall clock slewed by NTP during the run does not skew latency.
    let mono_to_unix_ns = capture.mono_to_unix_ns();
    let unix_now_ns = move || {
        capture::monotonic_now_ns()
            .map(|m| (i128::from(m) + mono_to_unix_ns).max(0) as u64)
            .unwrap_or_else(|_| wall_clock_unix_ns())
    };
    let capture = capture::run(capture, cfg.tick, shutdown, |events, stats| {
        stages.handle(events, stats, unix_now_ns)
    })
    .await;
    reloader.abort();
    // Also when the loop failed: the rows held for their connections' last counts, the open
    // incidents and the held-back alerts are written before the error is returned.
    stages.finish();
    let capture = capture.map_err(|e| AgentError::Loop(Box::new(e)))?;
    match capture::summary_json(&capture) {
        Ok(s) => eprintln!("summary: {s}"),
        Err(e) => log::warn!("reading the final health counters: {e}"),
    }
    drop(capture);
    Ok(stages.summary)
}

/// The files SIGHUP reads again.
struct Reload {
    model: PathBuf,
    /// The configuration file, for its suppression rules (none when run without one).
    config: Option<PathBuf>,
}

fn rule_names(s: &Suppressions) -> String {
    let names: Vec<&str> = s.rules().iter().map(|r| &*r.name).collect();
    names.join(", ")
}

/// Reloads the model and the configuration's suppression rules on each SIGHUP, each on its
/// own: a file that fails to load or validate keeps what is running, and the error is logged
/// with the file's name and counted (`sensor_model_reloads_total{result="error"}`,
/// `sensor_config_reloads_total{result="error"}`). The rest of the configuration (interfaces,
/// table size, sinks) needs a restart.
fn spawn_reloader(
    files: Reload,
    slot: Arc<Mutex<Option<Arc<Model>>>>,
    rules_slot: Arc<Mutex<Option<Arc<Suppressions>>>>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let path = files.model;
    // Installed here, before the agent says it is watching, not in the task when it first
    // runs: SIGHUP's default action ends the process, and a reload sent right after the start
    // (`systemctl reload`) must not.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    tokio::spawn(async move {
        let mut hup = match hup {
            Ok(h) => h,
            Err(e) => {
                log::error!("cannot install the SIGHUP handler ({e}); model reload disabled");
                return;
            }
        };
        while hup.recv().await.is_some() {
            if let Some(c) = files.config.clone() {
                let loaded = tokio::task::spawn_blocking(move || {
                    crate::config::FileConfig::load_suppressions(&c)
                })
                .await;
                match loaded {
                    Ok(Ok(r)) => {
                        metrics.config_reload(true);
                        log::info!(
                            "SIGHUP: {} suppression rule(s) from {}: {}",
                            r.rules().len(),
                            show(files.config.as_deref().unwrap_or(Path::new("?"))),
                            rule_names(&r)
                        );
                        if let Ok(mut s) = rules_slot.lock() {
                            *s = Some(Arc::new(r));
                        }
                    }
                    Ok(Err(e)) => {
                        metrics.config_reload(false);
                        log::error!(
                            "SIGHUP: keeping the running suppression rules: {}",
                            anyhow_chain(&e)
                        );
                    }
                    Err(e) => {
                        metrics.config_reload(false);
                        log::error!("SIGHUP: configuration loader failed: {e}");
                    }
                }
            }
            let p = path.clone();
            let loaded = tokio::task::spawn_blocking(move || Model::load(&p)).await;
            match loaded {
                Ok(Ok(m)) => {
                    metrics.model_reload(true);
                    if let Ok(mut s) = slot.lock() {
                        *s = Some(Arc::new(m));
                    }
                    log::info!(
                        "SIGHUP: {} loaded; in use from the next connection",
                        show(&path)
                    );
                }
                Ok(Err(e)) => {
                    metrics.model_reload(false);
                    log::error!("SIGHUP: keeping the running model: {}", anyhow_chain(&e));
                }
                Err(e) => {
                    metrics.model_reload(false);
                    log::error!("SIGHUP: model loader failed: {e}");
                }
            }
        }
    })
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

/// An error with its causes, `: `-separated.
fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
