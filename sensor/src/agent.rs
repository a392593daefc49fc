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
    capture::{self, Capture, CaptureError},
    config::{RunConfig, Sink},
    detect::Pipeline,
    export::Metrics,
    features::FeatureConfig,
    flows::{ConnEvent, EndReason},
    model::{Model, ModelError},
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
    pub alerts_written: u64,
    pub alerts_suppressed: u64,
    pub model_reloads_ok: u64,
    pub model_reloads_failed: u64,
    pub output_errors: u64,
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

/// Runs the agent until `shutdown` resolves.
pub async fn run(
    cfg: RunConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<RunSummary, AgentError> {
    let model = Arc::new(Model::load(&cfg.model)?);
    let model_path = cfg.model.display().to_string();
    let interfaces = cfg.capture.interfaces.join(", ");
    let capture = Capture::start(cfg.capture.clone()).map_err(|source| AgentError::Capture {
        interfaces: interfaces.clone(),
        source: Box::new(source),
    })?;
    let metrics = Arc::new(Metrics::new(
        capture.health_source(),
        cfg.capture.table_capacity,
    )?);
    let mut pipeline =
        Pipeline::new(Arc::clone(&model), FeatureConfig::default())?.with_overrides(cfg.thresholds);
    metrics.set_model(pipeline.model(), &model_path);
    if let Some(addr) = cfg.metrics_addr {
        let bound = crate::export::http::serve(addr, Arc::clone(&metrics))?;
        log::info!("metrics on http://{bound}/metrics");
    }
    let mut alerts = open_sink(&cfg.alerts.sink)?
        .map(|out| AlertSink::new(out, cfg.alerts.max_per_second, cfg.alerts.burst));
    let mut records = open_sink(&cfg.records)?;

    // SIGHUP: load the model file again off the capture thread; a good one waits in `slot`.
    let slot: Arc<Mutex<Option<Arc<Model>>>> = Arc::default();
    let reloader = spawn_reloader(cfg.model.clone(), Arc::clone(&slot), Arc::clone(&metrics));

    let t = pipeline.model().thresholds();
    log::info!(
        "watching {interfaces} (table {} connections); model {model_path} ({:?} features, thresholds supervised {:.4}, unsupervised {:.4}{})",
        cfg.capture.table_capacity,
        pipeline.model().feature_set(),
        t.supervised,
        t.unsupervised,
        if pipeline.model().data().normal_profile.is_some() {
            ""
        } else {
            ", no normal profile"
        }
    );
    // "Now" on the records' own time base (the kernel's monotonic clock shifted by the offset
    // taken at start), so that a wall clock slewed by NTP during the run does not skew latency.
    let mono_to_unix_ns = capture.mono_to_unix_ns();
    let unix_now_ns = move || {
        capture::monotonic_now_ns()
            .map(|m| (i128::from(m) + mono_to_unix_ns).max(0) as u64)
            .unwrap_or_else(|_| wall_clock_unix_ns())
    };
    let mut summary = RunSummary::default();
    let capture = capture::run(capture, cfg.tick, shutdown, |events, stats| {
        if let Some(m) = slot.lock().map(|mut s| s.take()).unwrap_or(None) {
            pipeline.set_model(m);
            metrics.set_model(pipeline.model(), &model_path);
            log::info!("model reloaded from {model_path}");
        }
        metrics.set_capture_stats(stats);
        // Lines are built in memory and written once per batch: one write per sink, not one
        // per JSON token (serde writes piecewise).
        let (mut rec_buf, mut alert_buf) = (Vec::new(), Vec::new());
        let scored_batch = pipeline.process_events(events);
        // The verdicts exist from here: latency counts the whole batch's processing.
        let now = unix_now_ns();
        let finished = events.iter().filter_map(|e| match e {
            ConnEvent::Finished(r) => Some(r),
            _ => None,
        });
        for (rec, scored) in finished.zip(scored_batch) {
            let latency_ms = now.saturating_sub(rec.final_unix_ns) as f64 / 1e6;
            metrics.observe_connection(rec);
            if rec.end_reason != EndReason::Shutdown {
                metrics.observe_scored(rec, &scored, latency_ms / 1e3);
            }
            summary.connections += 1;
            if records.is_some() {
                let line = ScoredLine::new("connection", rec, &scored, now, latency_ms);
                push_line(&mut rec_buf, &line);
            }
            if let Some(a) = alerts.as_mut() {
                if scored.verdict.anomalous {
                    let line = ScoredLine::new("alert", rec, &scored, now, latency_ms);
                    a.offer(&line, now, &mut alert_buf);
                } else {
                    a.tick(now, &mut alert_buf);
                }
            }
            if scored.verdict.anomalous {
                summary.anomalous += 1;
            }
        }
        let mut failed = 0;
        if let Some(out) = records.as_mut() {
            failed += u64::from(out.write_all(&rec_buf).and_then(|()| out.flush()).is_err());
        }
        if let Some(a) = alerts.as_mut() {
            failed += u64::from(a.write(&alert_buf).is_err());
            metrics.set_alert_counts(a.written_total, a.suppressed_total);
        }
        if failed > 0 {
            summary.output_errors += failed;
            metrics.output_error();
        }
        metrics.set_engine_stats(&pipeline.engine().stats());
    })
    .await
    .map_err(|e| AgentError::Loop(Box::new(e)))?;
    reloader.abort();
    if let Some(a) = alerts.as_mut() {
        let mut buf = Vec::new();
        a.flush_suppressed(&mut buf);
        if a.write(&buf).is_err() {
            summary.output_errors += 1;
        }
        summary.alerts_written = a.written_total;
        summary.alerts_suppressed = a.suppressed_total;
    }
    let (ok, failed) = metrics.model_reload_counts();
    summary.model_reloads_ok = ok;
    summary.model_reloads_failed = failed;
    match capture::summary_json(&capture) {
        Ok(s) => eprintln!("summary: {s}"),
        Err(e) => log::warn!("reading the final health counters: {e}"),
    }
    drop(capture);
    Ok(summary)
}

/// Reloads the model on each SIGHUP. A file that fails to load or validate keeps the running
/// model: the error is logged and counted (`sensor_model_reloads_total{result="error"}`).
fn spawn_reloader(
    path: PathBuf,
    slot: Arc<Mutex<Option<Arc<Model>>>>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            log::error!("cannot install the SIGHUP handler; model reload disabled");
            return;
        };
        while hup.recv().await.is_some() {
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

