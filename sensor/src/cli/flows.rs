//! `sensor flows`: the live accounting alone, one JSON line per finished connection.
use std::{io::Write, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;

use crate::{
    capture::{self, Capture, CaptureConfig},
    export::Metrics,
    flows::ConnEvent,
};

/// What `sensor flows` watches and for how long.
#[derive(Clone, Debug)]
pub struct FlowsOptions {
    pub capture: CaptureConfig,
    /// Capture loop tick ([`capture::run`]).
    pub tick: Duration,
    /// Stop after this long (`None`: until SIGINT/SIGTERM).
    pub limit: Option<Duration>,
    /// Serve Prometheus metrics here.
    pub metrics_addr: Option<SocketAddr>,
}

/// Watches the interfaces and writes each finished connection to `out` as it finishes; the
/// health summary goes to stderr at the end.
pub fn flows(opts: FlowsOptions, mut out: impl Write) -> anyhow::Result<()> {
    let config = opts.capture;
    super::current_thread_runtime()?.block_on(async move {
        // The handlers before the programs are attached (see `shutdown_signal`): a SIGTERM
        // while they attach then stops the loop at its first poll, which detaches them.
        let stop = super::shutdown_signal(opts.limit);
        let capture = Capture::start(config.clone())
            .with_context(|| format!("starting the sensor on {}", config.interfaces.join(", ")))?;
        let metrics = match opts.metrics_addr {
            Some(addr) => {
                let m = Arc::new(
                    Metrics::new(capture.health_source(), config.table_size)
                        .context("building the metrics registry")?,
                );
                let bound = crate::export::http::serve(addr, Arc::clone(&m))?;
                log::info!("metrics on http://{bound}/metrics");
                Some(m)
            }
            None => None,
        };
        log::info!(
            "watching {} (table {} connections); finished connections follow as JSON lines",
            config.interfaces.join(", "),
            config.table_size
        );
        let mut write_error = None;
        let mut buf = Vec::new();
        let capture = capture::run(capture, opts.tick, stop, |events, stats| {
            buf.clear();
            for rec in events.iter().filter_map(|ev| match ev {
                ConnEvent::Finished(rec) => Some(rec),
                _ => None,
            }) {
                if let Some(m) = &metrics {
                    m.observe_connection(rec);
                }
                if let Err(e) = serde_json::to_writer(&mut buf, rec) {
                    write_error.get_or_insert(std::io::Error::from(e));
                }
                buf.push(b'\n');
            }
            if let Some(m) = &metrics {
                m.set_capture_stats(stats);
            }
            if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
                write_error.get_or_insert(e);
            }
        })
        .await
        .context("capture loop")?;
        if let Some(e) = write_error {
            return Err(e).context("writing records to stdout");
        }
        let summary = capture::summary_json(&capture).context("reading health counters")?;
        eprintln!("summary: {summary}");
        Ok(())
    })
}
