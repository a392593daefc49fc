//! `sensor`: the command-line entry point. Each subcommand is one job of the product; this file
//! holds the flags and the dispatch, the work itself lives in the library ([`sensor::cli`],
//! [`sensor::train::cli`]).
use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use sensor::{
    capture::{CaptureConfig, XdpAttachMode},
    cli::{self, baseline::SiteRecords},
    dataset,
    lifecycle::{LifecycleConfig, Timeouts},
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
    #[arg(long, default_value_t = CaptureConfig::DEFAULT_TABLE_SIZE)]
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
            table_size: self.table_size,
            ring_bytes: self.ring_bytes,
            lifecycle: lifecycle_config(timeouts),
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
    #[arg(long, default_value_t = Timeouts::DEFAULT.tcp_established.as_secs_f64())]
    tcp_timeout_secs: f64,
    /// Idle timeout of TCP connection attempts (no handshake), in seconds.
    #[arg(long, default_value_t = Timeouts::DEFAULT.tcp_attempt.as_secs_f64())]
    tcp_attempt_timeout_secs: f64,
    /// Idle timeout of UDP conversations, in seconds.
    #[arg(long, default_value_t = Timeouts::DEFAULT.udp.as_secs_f64())]
    udp_timeout_secs: f64,
    /// Idle timeout of ICMP conversations, in seconds.
    #[arg(long, default_value_t = Timeouts::DEFAULT.icmp.as_secs_f64())]
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
    /// TOML configuration file (installed as /etc/sensor/sensor.toml; deploy/sensor.toml in the
    /// source tree).
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
    /// Alert stream layout [default json].
    #[arg(long, value_enum)]
    alerts_format: Option<sensor::config::AlertFormat>,
    /// Every scored connection: "stdout", "off" or a file [default off].
    #[arg(long)]
    records: Option<String>,
    /// Records layout: jsonl, zeek (conn.log TSV) or eve (Suricata flow events) [default jsonl].
    #[arg(long, value_enum)]
    records_format: Option<sensor::config::RecordsFormat>,
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
        set(&mut f.alerts.format, &self.alerts_format);
        set(&mut f.records, &self.records);
        set(&mut f.records_format, &self.records_format);
        set(&mut f.thresholds.supervised, &self.threshold_supervised);
        set(&mut f.thresholds.unsupervised, &self.threshold_unsupervised);
        set(&mut f.timeouts.tcp_secs, &self.tcp_timeout_secs);
        set(
            &mut f.timeouts.tcp_attempt_secs,
            &self.tcp_attempt_timeout_secs,
        );
        set(&mut f.timeouts.udp_secs, &self.udp_timeout_secs);
        set(&mut f.timeouts.icmp_secs, &self.icmp_timeout_secs);
        let mut c = match &self.config {
            Some(p) => f
                .resolve()
                .with_context(|| format!("configuration file {}", p.display()))?,
            None => f.resolve()?,
        };
        c.file.clone_from(&self.config);
        Ok(c)
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

#[derive(Args)]
struct ReplayArgs {
    /// Capture files (pcap or pcapng), replayed in this order as one capture.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Model file (default: the committed model, from the current directory or the workspace).
    #[arg(long, default_value = sensor::config::DEFAULT_MODEL)]
    model: PathBuf,
    /// Row format: csv (NSL-KDD layout, label = verdict), wide-csv (with header, 5-tuple, times,
    /// score), jsonl, zeek (Zeek conn.log TSV) or eve (Suricata EVE JSON flow events).
    #[arg(long, value_enum, default_value = "csv")]
    format: sensor::replay::output::Format,
    /// Seed of the Community IDs (jsonl, zeek and eve rows): 0, as Zeek and Suricata use by
    /// default, unless the logs to compare with used another.
    #[arg(long, default_value_t = 0)]
    community_id_seed: u16,
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
    /// Alert stream layout: json (the sensor's lines) or eve (Suricata `alert` events).
    #[arg(long, value_enum, default_value_t = sensor::config::AlertFormat::Json)]
    alerts_format: sensor::config::AlertFormat,
    /// A `sensor run` configuration file: its `[[suppress]]` rules, `[thresholds]`,
    /// `[incidents]` and `[volume]` apply as in `sensor run` (timeouts and table size are this
    /// command's flags).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Flow table capacity, in connections (as the live sensor's --table-size).
    #[arg(long, default_value_t = CaptureConfig::DEFAULT_TABLE_SIZE)]
    table_size: u32,
    #[command(flatten)]
    timeouts: TimeoutArgs,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    exit_status(dispatch(Cli::parse().command))
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    let stdout = || std::io::stdout().lock();
    match command {
        Command::Run(args) => cli::run::run_sensor(args.resolve()?, args.limit()?),
        Command::Baseline(args) => cli::baseline::baseline(args.options()?, stdout()),
        Command::Flows(args) => cli::flows::flows(args.options()?, stdout()),
        Command::Dataset {
            command:
                DatasetCommand::Summary {
                    data,
                    skip_malformed,
                },
        } => cli::dataset_summary(&data, skip_malformed, stdout()),
        Command::Train(args) => train::cli::train(&args.options(), stdout()),
        Command::Evaluate(args) => train::cli::evaluate(&args.options(), stdout()),
        Command::Replay(args) => cli::replay::replay(&args.options()?, stdout()),
        Command::Features { set } => cli::features(set.set(), stdout()),
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

/// `--duration-secs`, if given.
fn duration_limit(secs: Option<f64>) -> anyhow::Result<Option<Duration>> {
    secs.map(|v| secs_arg("duration-secs", v)).transpose()
}

impl RunArgs {
    fn limit(&self) -> anyhow::Result<Option<Duration>> {
        duration_limit(self.duration_secs)
    }
}

impl FlowsArgs {
    fn options(&self) -> anyhow::Result<cli::flows::FlowsOptions> {
        Ok(cli::flows::FlowsOptions {
            capture: self.capture.config()?,
            tick: self.capture.tick(),
            limit: duration_limit(self.duration_secs)?,
            metrics_addr: self.metrics_addr,
        })
    }
}

impl BaselineArgs {
    fn options(&self) -> anyhow::Result<cli::baseline::BaselineOptions> {
        let records = match (&self.records, self.interfaces.is_empty()) {
            (Some(path), _) => SiteRecords::File(path.clone()),
            (None, true) => {
                anyhow::bail!("give --records FILE or --iface IF (with --duration-secs)")
            }
            (None, false) => SiteRecords::Live {
                capture: CaptureConfig {
                    interfaces: self.interfaces.clone(),
                    lifecycle: lifecycle_config(self.timeouts.timeouts()?),
                    ..CaptureConfig::default()
                },
                tick: sensor::config::DEFAULT_TICK,
                duration: secs_arg("duration-secs", self.duration_secs)?,
            },
        };
        Ok(cli::baseline::BaselineOptions {
            model: self.model.clone(),
            out: self.out.clone(),
            records,
            save_records: self.save_records.clone(),
            target_fpr: self.target_fpr,
            seed: self.seed,
        })
    }
}

impl ReplayArgs {
    fn options(&self) -> anyhow::Result<cli::replay::ReplayOptions> {
        Ok(cli::replay::ReplayOptions {
            files: self.files.clone(),
            model: self.model.clone(),
            format: self.format,
            community_id_seed: self.community_id_seed,
            output: self.output.clone(),
            alerts: self.alerts.clone(),
            connection_alerts: self.connection_alerts,
            alerts_format: self.alerts_format,
            config: sensor::replay::ReplayConfig {
                table_size: self.table_size,
                timeouts: self.timeouts.timeouts()?,
                // Only the layouts whose rows wait for a connection's trailing packets.
                settled_records: sensor::replay::output::LogRows::uses_settled(self.format),
            },
            site: match &self.config {
                Some(p) => sensor::config::FileConfig::load_for_replay(p)?,
                None => Default::default(),
            },
        })
    }
}

/// The live lifecycle with `timeouts` and the table scan that goes with them.
fn lifecycle_config(timeouts: Timeouts) -> LifecycleConfig {
    LifecycleConfig {
        table_scan_interval: Some(LifecycleConfig::default_table_scan_interval(&timeouts)),
        timeouts,
        // `sensor flows` and `sensor baseline` write no `conn.log` or EVE rows.
        settled_records: false,
        ..LifecycleConfig::default()
    }
}
