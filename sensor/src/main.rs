//! `sensor`: the command-line entry point. Each subcommand is one job of the product; the work
//! itself lives in the library modules.
use std::{io::Write, process::ExitCode, time::Duration};

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sensor::{
    capture::{self, Capture, CaptureConfig, XdpAttachMode},
    dataset,
    export::Metrics,
    flows::ConnEvent,
    lifecycle::{LifecycleConfig, Timeouts},
    model::Model,
    train,
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
    /// The sensor: watch interfaces, score every finished connection, serve Prometheus metrics,
    /// write alerts. Settings from --config FILE (TOML), overridden by flags.
    Run(Box<RunArgs>),
    /// Learn the site's normal profile from its own connections and save it into the model.
    Baseline(BaselineArgs),
    /// Watch interfaces and print every finished connection as a JSON line.
    Flows(FlowsArgs),
    /// Inspect an NSL-KDD data file.
    Dataset {
        #[command(subcommand)]
        command: DatasetCommand,
    },
    /// Train the model on NSL-KDD (KDDTrain+), write it and its model card.
    Train(TrainArgs),
    /// Evaluate a model file on a labelled NSL-KDD file.
    Evaluate(EvaluateArgs),
    /// Replay pcap/pcapng captures through the live accounting, feature engine and model:
    /// one row per connection (NSL-KDD CSV or JSON lines).
    Replay(ReplayArgs),
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
    #[arg(long, default_value_t = CaptureConfig::DEFAULT_TABLE_CAPACITY)]
    table_size: u32,
    /// Ring buffer size for connection events, in bytes (power of two).
    #[arg(long, default_value_t = CaptureConfig::DEFAULT_RING_BYTES)]
    ring_bytes: u32,
    #[command(flatten)]
    timeouts: TimeoutArgs,
    /// Capture loop tick in milliseconds: how late after its timeout an idle connection is
    /// finalised.
    #[arg(long, default_value_t = sensor::config::DEFAULT_TICK.as_millis() as u64)]
    tick_ms: u64,
}

impl CaptureArgs {
    fn config(&self) -> anyhow::Result<CaptureConfig> {
        let timeouts = self.timeouts.timeouts()?;
        Ok(CaptureConfig {
            interfaces: self.interfaces.clone(),
            xdp_mode: self.xdp_mode,
            table_capacity: self.table_size,
            ring_bytes: self.ring_bytes,
            lifecycle: LifecycleConfig {
                table_scan_interval: Some(LifecycleConfig::default_table_scan_interval(&timeouts)),
                timeouts,
                ..LifecycleConfig::default()
            },
        })
    }

    fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms).max(sensor::config::MIN_TICK)
    }
}

/// Idle timeouts per protocol (Zeek's defaults), shared by the commands that finalise
/// connections: `flows`, `baseline` and `replay`.
#[derive(Args, Clone, Debug)]
struct TimeoutArgs {
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
}

/// A number of seconds from the command line, named in the error.
fn secs_arg(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{name} must be >= 0, got {v}"))
}

impl TimeoutArgs {
    fn timeouts(&self) -> anyhow::Result<Timeouts> {
        Ok(Timeouts {
            tcp_established: secs_arg("tcp-timeout-secs", self.tcp_timeout_secs)?,
            tcp_attempt: secs_arg("tcp-attempt-timeout-secs", self.tcp_attempt_timeout_secs)?,
            udp: secs_arg("udp-timeout-secs", self.udp_timeout_secs)?,
            icmp: secs_arg("icmp-timeout-secs", self.icmp_timeout_secs)?,
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

/// `sensor run`: each flag overrides the same setting of the configuration file.
#[derive(Args, Debug)]
struct RunArgs {
    /// TOML configuration file (see deploy/sensor.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Interface to watch; repeat for several (replaces the file's list).
    #[arg(long = "iface")]
    interfaces: Vec<String>,
    #[arg(long, value_enum)]
    xdp_mode: Option<XdpAttachMode>,
    /// Flow table capacity, in connections [default 262144].
    #[arg(long)]
    table_size: Option<u32>,
    /// Ring buffer size in bytes, a power of two [default 4 MiB].
    #[arg(long)]
    ring_bytes: Option<u32>,
    /// Capture loop tick in milliseconds: how late after its timeout an idle connection is
    /// finalised [default 10].
    #[arg(long)]
    tick_ms: Option<u64>,
    /// Period of the table scan that adopts connections whose events were lost, in
    /// milliseconds [default: a quarter of the shortest idle timeout, 50 ms..1 s].
    #[arg(long)]
    table_scan_interval_ms: Option<u64>,
    /// Prometheus endpoint, host:port, or "off" [default 127.0.0.1:9464].
    #[arg(long)]
    metrics_addr: Option<String>,
    /// Model file [default models/nsl-kdd-flow.model].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Alert sink: "stdout", "off" or a file (appended) [default stdout].
    #[arg(long)]
    alerts: Option<String>,
    /// Sustained alerts per second before suppression [default 50].
    #[arg(long)]
    alerts_max_per_second: Option<f64>,
    /// Alerts allowed in a burst above the sustained rate [default 200].
    #[arg(long)]
    alerts_burst: Option<u32>,
    /// Every scored connection as a JSON line: "stdout", "off" or a file [default off].
    #[arg(long)]
    records: Option<String>,
    /// Override of the supervised threshold.
    #[arg(long)]
    threshold_supervised: Option<f64>,
    /// Override of the normal-profile threshold.
    #[arg(long)]
    threshold_unsupervised: Option<f64>,
    #[arg(long)]
    tcp_timeout_secs: Option<f64>,
    #[arg(long)]
    tcp_attempt_timeout_secs: Option<f64>,
    #[arg(long)]
    udp_timeout_secs: Option<f64>,
    #[arg(long)]
    icmp_timeout_secs: Option<f64>,
    /// Stop after this many seconds (default: until SIGINT/SIGTERM).
    #[arg(long)]
    duration_secs: Option<f64>,
}

impl RunArgs {
    /// The file's settings with every given flag applied on top.
    fn resolve(&self) -> anyhow::Result<sensor::config::RunConfig> {
        let mut f = match &self.config {
            Some(p) => sensor::config::FileConfig::load(p)?,
            None => sensor::config::FileConfig::default(),
        };
        fn set<T: Clone>(dst: &mut Option<T>, v: &Option<T>) {
            if v.is_some() {
                dst.clone_from(v);
            }
        }
        if !self.interfaces.is_empty() {
            f.interfaces = Some(self.interfaces.clone());
        }
        set(&mut f.xdp_mode, &self.xdp_mode);
        set(&mut f.table_size, &self.table_size);
        set(&mut f.ring_bytes, &self.ring_bytes);
        set(&mut f.tick_ms, &self.tick_ms);
        set(&mut f.table_scan_interval_ms, &self.table_scan_interval_ms);
        set(&mut f.metrics_addr, &self.metrics_addr);
        set(&mut f.model, &self.model);
        set(&mut f.alerts.sink, &self.alerts);
        set(&mut f.alerts.max_per_second, &self.alerts_max_per_second);
        set(&mut f.alerts.burst, &self.alerts_burst);
        set(&mut f.records, &self.records);
        set(&mut f.thresholds.supervised, &self.threshold_supervised);
        set(&mut f.thresholds.unsupervised, &self.threshold_unsupervised);
        set(&mut f.timeouts.tcp_secs, &self.tcp_timeout_secs);
        set(
            &mut f.timeouts.tcp_attempt_secs,
            &self.tcp_attempt_timeout_secs,
        );
        set(&mut f.timeouts.udp_secs, &self.udp_timeout_secs);
        set(&mut f.timeouts.icmp_secs, &self.icmp_timeout_secs);
        Ok(f.resolve()?)
    }
}

#[derive(Args)]
struct BaselineArgs {
    /// The model to add the site profile to.
    #[arg(long, default_value = sensor::config::DEFAULT_MODEL)]
    model: PathBuf,
    /// Where to write the model with the site profile.
    #[arg(long)]
    out: PathBuf,
    /// Connection records (JSON lines from `sensor flows`) recorded at the site.
    #[arg(long, conflicts_with = "interfaces")]
    records: Option<PathBuf>,
    /// Record live on these interfaces instead (with --duration-secs).
    #[arg(long = "iface")]
    interfaces: Vec<String>,
    /// How long to record live, in seconds.
    #[arg(long, default_value_t = 600.0)]
    duration_secs: f64,
    /// Also save the recorded connections (JSON lines) for later baselines.
    #[arg(long)]
    save_records: Option<PathBuf>,
    /// False-positive rate of the profile's threshold on held-out site connections.
    #[arg(long, default_value_t = 0.01)]
    target_fpr: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Idle timeouts while recording live.
    #[command(flatten)]
    timeouts: TimeoutArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FeatureSetArg {
    Flow,
    All,
}

impl FeatureSetArg {
    fn set(self) -> sensor::kdd::FeatureSet {
        match self {
            FeatureSetArg::Flow => sensor::kdd::FeatureSet::Flow,
            FeatureSetArg::All => sensor::kdd::FeatureSet::All,
        }
    }
}

#[derive(Subcommand)]
enum DatasetCommand {
    /// Rows, class balance, attack categories and labels.
    Summary {
        /// An NSL-KDD text file (43 fields) or ARFF file.
        #[arg(long)]
        data: PathBuf,
        /// Skip and count malformed rows instead of stopping at the first.
        #[arg(long)]
        skip_malformed: bool,
    },
}

#[derive(Args)]
struct TrainArgs {
    /// Directory holding KDDTrain+.txt (and KDDTest+.txt, evaluated for the model card only).
    #[arg(long, env = "NSL_KDD_DIR")]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// False-positive rate the thresholds are chosen for, on validation data.
    #[arg(long, default_value_t = sensor::train::TrainConfig::DEFAULT_TARGET_FPR)]
    target_fpr: f64,
    #[arg(long, value_enum, default_value = "flow")]
    feature_set: FeatureSetArg,
    /// Output model file; the model card (MODEL_CARD.md) and its figures (SVG) go beside it.
    #[arg(long, default_value = "models/nsl-kdd-flow.model")]
    out: PathBuf,
    /// A small, fast configuration (few trees, small samples) for smoke tests.
    #[arg(long)]
    quick: bool,
    /// Skip the comparison run on all 41 features (faster).
    #[arg(long)]
    no_compare: bool,
    /// Use KDDTrain+_20Percent.txt instead of KDDTrain+.txt.
    #[arg(long)]
    twenty_percent: bool,
}

#[derive(Args)]
struct EvaluateArgs {
    #[arg(long)]
    model: PathBuf,
    /// A labelled NSL-KDD text or ARFF file.
    #[arg(long)]
    data: PathBuf,
    /// Training file whose attack names count as "seen in training" (default: KDDTrain+.txt in
    /// the data directory: NSL_KDD_DIR, else ../shared/data/nsl-kdd beside the workspace).
    #[arg(long)]
    train_data: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl TrainArgs {
    fn options(self) -> train::cli::TrainOptions {
        train::cli::TrainOptions {
            data_dir: self.data.unwrap_or_else(dataset::default_data_dir),
            seed: self.seed,
            target_fpr: self.target_fpr,
            feature_set: self.feature_set.set(),
            out: self.out,
            quick: self.quick,
            compare: !self.no_compare,
            twenty_percent: self.twenty_percent,
            command: train::cli::command_line(),
        }
    }
}

impl EvaluateArgs {
    fn options(self) -> train::cli::EvaluateOptions {
        train::cli::EvaluateOptions {
            model: self.model,
            data: self.data,
            train_data: self.train_data,
            json: self.json,
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    exit_status(run(Cli::parse().command))
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run_cmd(*args),
        Command::Baseline(args) => baseline_cmd(args),
        Command::Flows(args) => flows(args),
        Command::Dataset {
            command:
                DatasetCommand::Summary {
                    data,
                    skip_malformed,
                },
        } => {
            let loaded = dataset::load(&data, dataset::LoadOptions { skip_malformed })?;
            print!("{}", dataset::Summary::of(&loaded.samples));
            if loaded.skipped > 0 {
                println!("skipped {} malformed rows; first errors:", loaded.skipped);
                for e in &loaded.first_errors {
                    println!("  {e}");
                }
            }
            Ok(())
        }
        Command::Train(args) => train::cli::train(&args.options(), std::io::stdout().lock()),
        Command::Evaluate(args) => train::cli::evaluate(&args.options(), std::io::stdout().lock()),
        Command::Replay(args) => replay_cmd(args),
        Command::Features { set } => {
            for name in set.set().names() {
                println!("{name}");
            }
            Ok(())
        }
    }
}

/// How a command's result ends the process. A closed stdout (`sensor ... | head`) is a normal
/// end, as for other Unix tools. Any other error is one line, `error: what was done: why`; with
/// RUST_BACKTRACE set, anyhow's full report with the backtrace.
fn exit_status(result: anyhow::Result<()>) -> ExitCode {
    let Err(e) = result else {
        return ExitCode::SUCCESS;
    };
    let closed_stdout = e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if closed_stdout {
        return ExitCode::SUCCESS;
    }
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
        eprintln!("Error: {e:?}");
    } else {
        eprintln!("error: {e:#}");
    }
    ExitCode::FAILURE
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

fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run_cmd(args: RunArgs) -> anyhow::Result<()> {
    let mut config = args.resolve()?;
    config.model = model_path(&config.model);
    let limit = args
        .duration_secs
        .map(Duration::try_from_secs_f64)
        .transpose()
        .context("--duration-secs must be >= 0")?;
    let summary = current_thread_runtime()?
        .block_on(sensor::agent::run(config, shutdown_signal(limit)))
        .map_err(anyhow::Error::new)?;
    eprintln!("run: {}", serde_json::to_string(&summary)?);
    Ok(())
}

fn baseline_cmd(args: BaselineArgs) -> anyhow::Result<()> {
    let model = Model::load(&model_path(&args.model))?;
    let (records, source) = match &args.records {
        Some(path) => (
            sensor::baseline::read_records(path).map_err(|e| anyhow::anyhow!(e))?,
            format!("site baseline from {}", path.display()),
        ),
        None => {
            if args.interfaces.is_empty() {
                anyhow::bail!("give --records FILE or --iface IF (with --duration-secs)");
            }
            let timeouts = args.timeouts.timeouts()?;
            let config = CaptureConfig {
                interfaces: args.interfaces.clone(),
                lifecycle: LifecycleConfig {
                    table_scan_interval: Some(LifecycleConfig::default_table_scan_interval(
                        &timeouts,
                    )),
                    timeouts,
                    ..LifecycleConfig::default()
                },
                ..CaptureConfig::default()
            };
            let limit = secs_arg("duration-secs", args.duration_secs)?;
            let mut recs = Vec::new();
            current_thread_runtime()?.block_on(async {
                let capture = Capture::start(config.clone()).with_context(|| {
                    format!("starting the capture on {}", config.interfaces.join(", "))
                })?;
                // Said once attached, so that whoever waits for it knows traffic is seen.
                log::info!(
                    "recording the site's connections on {} for {:.0} s",
                    config.interfaces.join(", "),
                    limit.as_secs_f64()
                );
                capture::run(
                    capture,
                    sensor::config::DEFAULT_TICK,
                    shutdown_signal(Some(limit)),
                    |events, _| {
                        recs.extend(events.iter().filter_map(|e| match e {
                            ConnEvent::Finished(r) => Some(r.clone()),
                            _ => None,
                        }))
                    },
                )
                .await
                .context("capture loop")?;
                anyhow::Ok(())
            })?;
            (
                recs,
                format!("site baseline on {}", args.interfaces.join(",")),
            )
        }
    };
    if let Some(p) = &args.save_records {
        let mut text = String::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    let (new, report) =
        sensor::baseline::fit(&model, &records, args.target_fpr, args.seed, &source)?;
    if let Some(parent) = args.out.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    new.save(&args.out)?;
    println!(
        "baseline: {} connections ({} fitted, {} held out); profile threshold {:.4} at target FPR {:.2}%",
        report.connections,
        report.fitted_on,
        report.held_out,
        report.threshold,
        100.0 * report.target_fpr
    );
    println!(
        "forest threshold {:.4} (raised only where the site's own traffic needs it)",
        report.supervised_threshold
    );
    println!(
        "held-out site connections flagged: by the profile {:.2}%, by the forest {:.2}%, by the model {:.2}% (before the baseline {:.2}%)",
        100.0 * report.held_out_flagged_by_profile,
        100.0 * report.held_out_flagged_by_forest,
        100.0 * report.held_out_flagged_by_model,
        100.0 * report.held_out_flagged_before
    );
    println!("model with site profile written to {}", args.out.display());
    Ok(())
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
            args.capture.tick(),
            shutdown_signal(limit),
            |events, stats| {
                let mut buf = Vec::new();
                for ev in events {
                    let ConnEvent::Finished(rec) = ev else {
                        continue;
                    };
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
                let mut out = stdout.lock();
                if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
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

#[derive(Args)]
struct ReplayArgs {
    /// Capture files (pcap or pcapng), replayed in this order as one capture.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Model file (default: the committed model, from the current directory or the workspace).
    #[arg(long, default_value = sensor::config::DEFAULT_MODEL)]
    model: PathBuf,
    /// Row format: csv (NSL-KDD layout, label = verdict), wide-csv (with header, 5-tuple, times,
    /// score) or jsonl.
    #[arg(long, value_enum, default_value = "csv")]
    format: sensor::replay::output::Format,
    /// Write rows here instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Also write the alert stream here: one JSON line per incident state change (open,
    /// update, closed), as `sensor run` writes it.
    #[arg(long)]
    alerts: Option<PathBuf>,
    /// Add one alert line per anomalous connection to the alert stream.
    #[arg(long)]
    connection_alerts: bool,
    /// Flow table capacity, in connections (as the live sensor's --table-size).
    #[arg(long, default_value_t = CaptureConfig::DEFAULT_TABLE_CAPACITY)]
    table_size: u32,
    #[command(flatten)]
    timeouts: TimeoutArgs,
}

/// `path` as given, or for the default model outside the workspace root, the workspace's copy.
fn model_path(path: &std::path::Path) -> PathBuf {
    use sensor::config::DEFAULT_MODEL;
    if path.exists() || path != std::path::Path::new(DEFAULT_MODEL) {
        return path.to_path_buf();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEFAULT_MODEL)
}

fn replay_cmd(args: ReplayArgs) -> anyhow::Result<()> {
    use sensor::replay::{self, ReplayConfig, output};
    anyhow::ensure!(args.table_size > 0, "--table-size must be at least 1");
    let config = ReplayConfig {
        table_capacity: args.table_size,
        timeouts: args.timeouts.timeouts()?,
    };
    let model_file = model_path(&args.model);
    let model = Model::load(&model_file)
        .with_context(|| format!("loading the model {}", model_file.display()))?;
    let mut pipeline =
        sensor::detect::Pipeline::new(Arc::new(model), sensor::features::FeatureConfig::default())
            .context("building the feature engine")?;
    let create = |p: &PathBuf| {
        std::fs::File::create(p)
            .map(std::io::BufWriter::new)
            .with_context(|| format!("creating {}", p.display()))
    };
    let mut rows: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(create(p)?),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut alerts = args.alerts.as_ref().map(create).transpose()?;
    output::write_header(&mut rows, args.format).context("writing rows")?;
    let mut incidents = sensor::incidents::IncidentTracker::new(Default::default());
    let report = replay::run(&args.files, config, &mut pipeline, &mut incidents, |o| {
        match o {
            replay::Output::Connection { record, scored } => {
                output::write_row(&mut rows, args.format, record, scored)?;
                if let Some(a) = alerts.as_mut()
                    && args.connection_alerts
                    && scored.verdict.anomalous
                {
                    // The live alert format, on the capture's clock (the connection's
                    // final moment); latency has no meaning offline and is 0.
                    let line = sensor::alerts::ScoredLine::new(
                        "alert",
                        record,
                        scored,
                        record.final_unix_ns,
                        0.0,
                    );
                    serde_json::to_writer(&mut *a, &line)?;
                    a.write_all(b"\n")?;
                }
            }
            replay::Output::Incident(line) => {
                if let Some(a) = alerts.as_mut() {
                    serde_json::to_writer(&mut *a, line)?;
                    a.write_all(b"\n")?;
                }
            }
        }
        Ok::<(), std::io::Error>(())
    })
    .context("writing rows")?;
    rows.flush().context("writing rows")?;
    if let Some(mut a) = alerts {
        a.flush().context("writing alerts")?;
    }
    eprintln!("summary: {}", report.summary_json());
    match report.error {
        // The rows above cover the packets before the damage; the exit status says it stopped.
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
