//! `sensor baseline`: the site's own connections (recorded live, or from a file) make the
//! model's normal profile and calibrate both thresholds (see [`crate::baseline`]).
use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::Context;

use crate::{
    baseline::{self, BaselineReport},
    capture::{self, Capture, CaptureConfig},
    flows::{ConnEvent, ConnectionRecord},
    model::Model,
};

/// Where the site's connections come from.
#[derive(Clone, Debug)]
pub enum SiteRecords {
    /// JSON lines written by `sensor flows` (or `--save-records`).
    File(PathBuf),
    /// Recorded live for `duration`, with `tick` as the capture loop's.
    Live {
        capture: CaptureConfig,
        tick: Duration,
        duration: Duration,
    },
}

/// What `sensor baseline` reads, fits and writes.
#[derive(Clone, Debug)]
pub struct BaselineOptions {
    pub model: PathBuf,
    pub out: PathBuf,
    pub records: SiteRecords,
    /// Also save the recorded connections (JSON lines) for later baselines.
    pub save_records: Option<PathBuf>,
    pub target_fpr: f64,
    pub seed: u64,
}

/// Fits the site profile, writes the new model to `opts.out` and a report to `out`.
pub fn baseline(opts: BaselineOptions, mut out: impl Write) -> anyhow::Result<()> {
    let model_file = super::model_path(&opts.model);
    let model = Model::load(&model_file)
        .with_context(|| format!("loading the model {}", model_file.display()))?;
    let (records, source) = match &opts.records {
        SiteRecords::File(path) => (
            baseline::read_records(path).map_err(|e| anyhow::anyhow!(e))?,
            format!("site baseline from {}", path.display()),
        ),
        SiteRecords::Live {
            capture,
            tick,
            duration,
        } => (
            record_live(capture, *tick, *duration)?,
            format!("site baseline on {}", capture.interfaces.join(",")),
        ),
    };
    if let Some(p) = &opts.save_records {
        let mut text = String::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    let (new, report) = baseline::fit(&model, &records, opts.target_fpr, opts.seed, &source)?;
    if let Some(parent) = opts.out.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    new.save(&opts.out)
        .with_context(|| format!("writing {}", opts.out.display()))?;
    write_report(&report, &mut out)?;
    writeln!(
        out,
        "model with site profile written to {}",
        opts.out.display()
    )?;
    Ok(())
}

/// The finished connections seen on the interfaces during `duration`.
fn record_live(
    config: &CaptureConfig,
    tick: Duration,
    duration: Duration,
) -> anyhow::Result<Vec<ConnectionRecord>> {
    let mut records = Vec::new();
    super::current_thread_runtime()?.block_on(async {
        // The handlers before the programs are attached (see `shutdown_signal`).
        let stop = super::shutdown_signal(Some(duration));
        let capture = Capture::start(config.clone())
            .with_context(|| format!("starting the capture on {}", config.interfaces.join(", ")))?;
        // Said once attached (and the signal handlers installed), so that whoever waits for it
        // knows traffic is seen.
        log::info!(
            "recording the site's connections on {} for {:.0} s",
            config.interfaces.join(", "),
            duration.as_secs_f64()
        );
        capture::run(capture, tick, stop, |events, _| {
            records.extend(events.iter().filter_map(|e| match e {
                ConnEvent::Finished(r) => Some(r.clone()),
                _ => None,
            }))
        })
        .await
        .context("capture loop")?;
        anyhow::Ok(())
    })?;
    Ok(records)
}

fn write_report(report: &BaselineReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "baseline: {} connections ({} fitted, {} held out, {} first ones of a cold host window left out); profile threshold {:.4} at target FPR {:.2}%",
        report.connections,
        report.fitted_on,
        report.held_out,
        report.cold_left_out,
        report.threshold,
        100.0 * report.target_fpr
    )?;
    writeln!(
        out,
        "forest threshold {:.4} (raised only where the site's own traffic needs it)",
        report.supervised_threshold
    )?;
    writeln!(
        out,
        "held-out site connections flagged: by the profile {:.2}%, by the forest {:.2}%, by the model {:.2}% (before the baseline {:.2}%)",
        100.0 * report.held_out_flagged_by_profile,
        100.0 * report.held_out_flagged_by_forest,
        100.0 * report.held_out_flagged_by_model,
        100.0 * report.held_out_flagged_before
    )
}
