//! `sensor`: the command-line entry point. Each subcommand is one job of the product.
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sensor",
    version,
    about = "Network anomaly sensor (eBPF flows, KDD features, tree ensembles)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the KDD feature names of a feature set, in model input order.
    Features {
        #[arg(long, value_enum, default_value = "flow")]
        set: FeatureSetArg,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FeatureSetArg {
    Flow,
    All,
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match Cli::parse().command {
        Command::Features { set } => {
            let set = match set {
                FeatureSetArg::Flow => sensor::kdd::FeatureSet::Flow,
                FeatureSetArg::All => sensor::kdd::FeatureSet::All,
            };
            for name in set.names() {
                println!("{name}");
            }
        }
    }
    Ok(())
}
