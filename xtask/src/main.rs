//! `cargo xtask`: everything a developer or CI runs. Each command bootstraps what it needs first.
mod bootstrap;
mod demo;

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "Bootstrap, build, test, demo and benchmark the sensor"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and the tests need (nightly rust-src, bpf-linker, Debian tools).
    Bootstrap,
    /// Build the sensor (release), including the eBPF object.
    Build,
    /// Build the Debian package (target/debian/sensor_<version>_<arch>.deb) and check it with
    /// lintian.
    Dist,
    /// Run every check: rustfmt, clippy, unit tests and the root integration tests.
    Test {
        /// Skip rustfmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter), after `--`.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Run the benchmarks (criterion) and print the figures as ratios against baselines.
    Bench,
    /// A lab of network namespaces with live traffic, watched by the sensor.
    Demo {
        /// How long the traffic runs, in seconds.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Bootstrap => bootstrap::ensure(),
        Cmd::Build => {
            bootstrap::ensure()?;
            cargo(&["build", "--release", "-p", "sensor"])
        }
        Cmd::Dist => {
            bootstrap::ensure()?;
            cargo(&["build", "--release", "-p", "sensor"])?;
            let root = workspace_root();
            let deb = xtask::dist::build_deb(&xtask::dist::DistOptions {
                sensor: root.join("target/release/sensor"),
                out_dir: root.join("target/debian"),
            })
            .map_err(|e| anyhow::anyhow!(e))
            .context("building the Debian package")?;
            let (clean, report) = xtask::dist::lintian(&deb).map_err(|e| anyhow::anyhow!(e))?;
            print!("{report}");
            if !clean {
                bail!("lintian found errors or warnings in {}", deb.display());
            }
            println!("{}", deb.display());
            Ok(())
        }
        Cmd::Test {
            no_lint,
            cargo_args,
        } => {
            bootstrap::ensure()?;
            require_root("the integration tests create network namespaces and load BPF programs")?;
            if !no_lint {
                cargo(&["fmt", "--all", "--check"]).context("rustfmt: run `cargo fmt --all`")?;
                // The eBPF crate only builds for the BPF target (nightly, build-std): linted apart.
                cargo(&[
                    "clippy",
                    "--workspace",
                    "--exclude",
                    "sensor-ebpf",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ])?;
                nightly_cargo(&[
                    "clippy",
                    "-p",
                    "sensor-ebpf",
                    "--target",
                    "bpfel-unknown-none",
                    "-Z",
                    "build-std=core",
                    "--",
                    "-D",
                    "warnings",
                ])?;
            }
            // The integration tests run the `sensor` binary itself; cargo only builds a package's
            // binaries for that package's own tests, so build it first.
            cargo(&["build", "--release", "-p", "sensor", "--bins"])?;
            let mut args = vec![
                "test",
                "--workspace",
                "--exclude",
                "sensor-ebpf",
                "--release",
            ];
            args.extend(cargo_args.iter().map(String::as_str));
            cargo_test_summarized(&args)
        }
        Cmd::Bench => {
            bootstrap::ensure()?;
            require_root("the XDP benchmark loads BPF programs")?;
            let started = std::time::SystemTime::now();
            cargo(&["bench", "--workspace", "--exclude", "sensor-ebpf"])?;
            demo::latency_bench()?;
            xtask::bench_report::report(&workspace_root().join("target"), started)
        }
        Cmd::Demo { seconds } => {
            bootstrap::ensure()?;
            require_root("the demo lab creates network namespaces and attaches XDP")?;
            cargo(&["build", "--release", "-p", "sensor"])?;
            demo::run(seconds)
        }
    }
}

/// Runs `cargo ARGS` in the workspace root, failing if it fails.
fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("+ cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .env("CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS", "fallback")
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs `cargo test ...`, passing its output through, and ends with one line totalling every
/// test binary's `test result:` line (`tests: N passed, N failed, N skipped`), so a reader (or
/// CI) sees the whole run's count at the bottom rather than the last crate's doc tests.
fn cargo_test_summarized(args: &[&str]) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("+ cargo {}", args.join(" "));
    let mut child = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .env("CARGO_RESOLVER_INCOMPATIBLE_RUST_VERSIONS", "fallback")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        writeln!(out, "{line}")?;
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| {
                rest.split(';')
                    .find_map(|part| {
                        part.trim()
                            .strip_suffix(word)?
                            .trim()
                            .rsplit(' ')
                            .next()?
                            .parse::<u64>()
                            .ok()
                    })
                    .unwrap_or(0)
            };
            passed += count("passed");
            failed += count("failed");
            ignored += count("ignored");
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    writeln!(
        out,
        "tests: {passed} passed, {failed} failed, {ignored} skipped"
    )?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs `cargo ARGS` with the nightly toolchain (`rustup run nightly cargo`).
fn nightly_cargo(args: &[&str]) -> Result<()> {
    eprintln!("+ cargo +nightly {}", args.join(" "));
    let status = Command::new("rustup")
        .args(["run", "nightly", "cargo"])
        .args(args)
        .current_dir(workspace_root())
        .env_remove("RUSTC")
        .env_remove("CARGO")
        .status()
        .with_context(|| format!("running cargo +nightly {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo +nightly {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Into::into)
        .unwrap_or_default()
}

fn require_root(why: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("this needs root: {why}. Run it as root (e.g. `sudo -E cargo xtask ...`).");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
