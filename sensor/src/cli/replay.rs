//! `sensor replay`: captures through the live accounting, features, model and incidents; one
//! row per connection, and the alert stream as `sensor run` writes it.
use std::{io::Write, path::PathBuf, sync::Arc};

use anyhow::Context;

use crate::{
    alerts::{ScoredLine, write_connection_alert, write_incident},
    config::{AlertFormat, ReplaySettings},
    detect::Pipeline,
    features::FeatureConfig,
    incidents::IncidentTracker,
    model::Model,
    replay::{self, Output, ReplayConfig, output::Format},
};

/// What `sensor replay` reads and writes.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Capture files, replayed in this order as one capture.
    pub files: Vec<PathBuf>,
    pub model: PathBuf,
    pub format: Format,
    /// Seed of the Community IDs in `jsonl`, `zeek` and `eve` rows.
    pub community_id_seed: u16,
    /// Rows go here (`None`: the writer given to [`replay()`]).
    pub output: Option<PathBuf>,
    /// The alert stream: incident lines, and with `connection_alerts` one line per anomalous
    /// connection.
    pub alerts: Option<PathBuf>,
    pub connection_alerts: bool,
    /// The alert stream's layout: the sensor's JSON lines or Suricata EVE `alert` events.
    pub alerts_format: AlertFormat,
    pub config: ReplayConfig,
    /// The operator's suppression rules, threshold overrides and incident settings (a `sensor
    /// run` configuration file's), applied as `sensor run` applies them.
    pub site: ReplaySettings,
}

/// Replays `opts.files`; rows go to `opts.output` or else `stdout`, the summary to stderr. A
/// damaged capture ends the replay with an error after the rows of the packets before it.
pub fn replay(opts: &ReplayOptions, stdout: impl Write) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.config.table_size > 0,
        "--table-size must be at least 1"
    );
    let model_file = super::model_path(&opts.model);
    let model = Model::load(&model_file)
        .with_context(|| format!("loading the model {}", model_file.display()))?;
    let model = Arc::new(model);
    let mut pipeline = Pipeline::new(Arc::clone(&model), FeatureConfig::default())
        .context("building the feature engine")?
        .with_overrides(opts.site.thresholds)
        .with_volume(opts.site.volume)
        .with_checks(opts.site.checks);
    // The model as it judges, the site's threshold overrides in place, as live alerts use it.
    let model = Arc::clone(pipeline.model());
    let suppressions = Arc::new(opts.site.suppressions.clone());
    pipeline.set_suppressions(Arc::clone(&suppressions));
    // Suppressions by rule and what was silenced, for the summary.
    let mut suppressed: std::collections::BTreeMap<(String, &str), u64> = Default::default();
    let create = |p: &PathBuf| {
        std::fs::File::create(p)
            .map(std::io::BufWriter::new)
            .with_context(|| format!("creating {}", p.display()))
    };
    let mut rows: Box<dyn Write> = match &opts.output {
        Some(p) => Box::new(create(p)?),
        None => Box::new(std::io::BufWriter::new(stdout)),
    };
    let mut alerts = opts.alerts.as_ref().map(create).transpose()?;
    let mut writer = replay::output::LogRows::new(replay::output::RowWriter::new(
        opts.format,
        opts.community_id_seed,
    ));
    writer.header(&mut rows).context("writing rows")?;
    let mut incidents = IncidentTracker::new(opts.site.incidents.clone());
    let report = replay::replay_files(
        &opts.files,
        opts.config.clone(),
        &mut pipeline,
        &mut incidents,
        |o| {
            match o {
                Output::Connection { record, scored } => {
                    writer.row(&mut rows, record, scored)?;
                    if let Some(rule) = &scored.suppressed_by {
                        *suppressed
                            .entry((rule.to_string(), "connection"))
                            .or_default() += 1;
                    } else if let Some(a) = alerts.as_mut()
                        && opts.connection_alerts
                        && scored.verdict.anomalous
                    {
                        // The live alert format, on the capture's clock (the connection's
                        // final moment); latency has no meaning offline and is 0.
                        let line =
                            ScoredLine::alert(record, scored, &model, record.final_unix_ns, 0.0);
                        let mut buf = Vec::new();
                        write_connection_alert(opts.alerts_format, &mut buf, &line);
                        a.write_all(&buf)?;
                    }
                }
                Output::Settled(record) => writer.settled(&mut rows, record)?,
                Output::Incident(line) => {
                    if let Some(rule) = suppressions.incident(line) {
                        *suppressed
                            .entry((rule.to_string(), "incident"))
                            .or_default() += 1;
                    } else if let Some(a) = alerts.as_mut() {
                        let mut line = line.clone();
                        line.explain(&model);
                        let mut buf = Vec::new();
                        write_incident(opts.alerts_format, &mut buf, &line);
                        a.write_all(&buf)?;
                    }
                }
            }
            Ok::<(), std::io::Error>(())
        },
    )
    .context("writing rows")?;
    writer.finish(&mut rows).context("writing rows")?;
    rows.flush().context("writing rows")?;
    if let Some(mut a) = alerts {
        a.flush().context("writing alerts")?;
    }
    eprintln!("summary: {}", report.summary_json());
    if !suppressions.is_empty() {
        let counts: Vec<_> = suppressed
            .iter()
            .map(|((rule, what), n)| serde_json::json!({"rule": rule, "what": what, "count": n}))
            .collect();
        eprintln!("suppressed: {}", serde_json::Value::Array(counts));
    }
    match report.error {
        // The rows above cover the packets before the damage; the exit status says it stopped.
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
