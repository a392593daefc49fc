//! `sensor`: the command-line entry point. Each subcommand is one job of the product; the work
//! itself lives in the library modules.
use std::{io::Write, time::Duration};

use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sensor::{
    capture::{self, Capture, CaptureConfig, Timeouts, XdpAttachMode},
    export::Metrics,
};

#[derive(Parser)]
#[command(
    name = "sensor",
    version,
    about = "Network anomaly sensor: eBPF flow accounting, KDD features, tree-ensemble scoring"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch interfaces and print every finished connection as a JSON line.
    Flows(FlowsArgs),
    /// Print the KDD feature names of a feature set, in model input order.
    Features {
        #[arg(long, value_enum, default_value = "flow")]
        set: FeatureSetArg,
    },
}

/// Capture options shared by the live commands.
#[derive(Args, Clone, Debug)]
struct CaptureArgs {
    /// Interface to watch (XDP on ingress, TC on egress); repeat for several.
    #[arg(long = "iface", required = true)]
    interfaces: Vec<String>,
    /// XDP attach mode.
    #[arg(long, value_enum, default_value = "auto")]
    xdp_mode: XdpAttachMode,
    /// Flow table capacity, in connections.
    #[arg(long, default_value_t = 262_144)]
    table_size: u32,
    /// Ring buffer size for finished-connection events, in bytes (power of two).
    #[arg(long, default_value_t = 4 << 20)]
    ring_bytes: u32,
    /// Idle timeout of established TCP connections, in seconds.
    #[arg(long, default_value_t = 300.0)]
    tcp_timeout_secs: f64,
    /// Idle timeout of TCP connection attempts (no handshake), in seconds.
    #[arg(long, default_value_t = 5.0)]
    tcp_attempt_timeout_secs: f64,
    /// Idle timeout of UDP conversations, in seconds.
    #[arg(long, default_value_t = 60.0)]
    udp_timeout_secs: f64,
    /// Idle timeout of ICMP conversations, in seconds.
    #[arg(long, default_value_t = 60.0)]
    icmp_timeout_secs: f64,
    /// How often idle connections are swept, in milliseconds.
    #[arg(long, default_value_t = 250)]
    sweep_interval_ms: u64,
}

impl CaptureArgs {
    fn config(&self) -> anyhow::Result<CaptureConfig> {
        let secs = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .with_context(|| format!("--{name} must be >= 0, got {v}"))
        };
        Ok(CaptureConfig {
            interfaces: self.interfaces.clone(),
            xdp_mode: self.xdp_mode,
            table_capacity: self.table_size,
            ring_bytes: self.ring_bytes,
            timeouts: Timeouts {
                tcp_established: secs("tcp-timeout-secs", self.tcp_timeout_secs)?,
                tcp_attempt: secs("tcp-attempt-timeout-secs", self.tcp_attempt_timeout_secs)?,
                udp: secs("udp-timeout-secs", self.udp_timeout_secs)?,
                icmp: secs("icmp-timeout-secs", self.icmp_timeout_secs)?,
            },
            ..CaptureConfig::default()
        })
    }
}

#[derive(Args)]
struct FlowsArgs {
    #[command(flatten)]
    capture: CaptureArgs,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464); off by default.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FeatureSetArg {
    Flow,
    All,
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match Cli::parse().command {
        Command::Flows(args) => flows(args),
        Command::Features { set } => {
            let set = match set {
                FeatureSetArg::Flow => sensor::kdd::FeatureSet::Flow,
                FeatureSetArg::All => sensor::kdd::FeatureSet::All,
            };
            for name in set.names() {
                println!("{name}");
            }
            Ok(())
        }
    }
}

/// Resolves on SIGINT, SIGTERM, or after `limit`.
async fn shutdown_signal(limit: Option<Duration>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        log::error!("cannot install signal handlers; stopping");
        return;
    };
    let timer = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        _ = timer => {}
    }
}

fn flows(args: FlowsArgs) -> anyhow::Result<()> {
    let config = args.capture.config()?;
    let limit = args
        .duration_secs
        .map(Duration::try_from_secs_f64)
        .transpose()
        .context("--duration-secs must be >= 0")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let capture = Capture::start(config.clone())
            .with_context(|| format!("starting the sensor on {}", config.interfaces.join(", ")))?;
        let metrics = match args.metrics_addr {
            Some(addr) => {
                let m = Arc::new(
                    Metrics::new(capture.health_source(), config.table_capacity)
                        .context("building the metrics registry")?,
                );
                let bound = sensor::export::http::serve(addr, Arc::clone(&m))?;
                log::info!("metrics on http://{bound}/metrics");
                Some(m)
            }
            None => None,
        };
        log::info!(
            "watching {} (table {} connections); finished connections follow as JSON lines",
            config.interfaces.join(", "),
            config.table_capacity
        );
        let stdout = std::io::stdout();
        let mut write_error = None;
        let capture = capture::run(
            capture,
            Duration::from_millis(args.capture.sweep_interval_ms.max(10)),
            shutdown_signal(limit),
            |rec, stats| {
                if let Some(m) = &metrics {
                    m.observe_connection(&rec);
                    m.set_capture_stats(stats);
                }
                let mut out = stdout.lock();
                let res = serde_json::to_writer(&mut out, &rec)
                    .map_err(std::io::Error::from)
                    .and_then(|()| out.write_all(b"\n"))
                    .and_then(|()| out.flush());
                if let Err(e) = res {
                    write_error.get_or_insert(e);
                }
            },
        )
        .await
        .context("capture loop")?;
        if let Some(e) = write_error {
            return Err(e).context("writing records to stdout");
        }
        let summary = sensor::capture::summary_json(&capture).context("reading health counters")?;
        eprintln!("summary: {summary}");
        Ok(())
    })
}
