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
                // Every test binary runs even after one fails, so a run reports every failure.
                "--no-fail-fast",
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

/// The lines of a failed test's output that say why, gathered so that they can be repeated
/// at the end of the run: a log cut to its head and tail (a CI page) would otherwise show a
/// failing test's name and its backtrace but not its message.
#[derive(Default)]
struct FailureCauses {
    lines: Vec<String>,
    /// Lines still to take of the panic message being read.
    in_message: usize,
}

impl FailureCauses {
    /// At most this many lines of one panic message, and of all of them together.
    const MESSAGE_LINES: usize = 40;
    const TOTAL_LINES: usize = 200;

    fn read(&mut self, line: &str) {
        if self.lines.len() >= Self::TOTAL_LINES {
            return;
        }
        if line.starts_with("---- ") && line.ends_with(" ----") {
            self.lines.push(line.to_string());
            self.in_message = 0;
        } else if line.contains("' panicked at ") {
            self.lines.push(line.to_string());
            self.in_message = Self::MESSAGE_LINES;
        } else if self.in_message > 0 {
            if line.is_empty() || line.starts_with("stack backtrace:") || line.starts_with("note: ")
            {
                self.in_message = 0;
            } else {
                self.lines.push(line.to_string());
                self.in_message -= 1;
            }
        }
    }
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
    let mut causes = FailureCauses::default();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        writeln!(out, "{line}")?;
        causes.read(&line);
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
    if !causes.lines.is_empty() {
        writeln!(out, "\nwhy tests failed (repeated from above):")?;
        for l in &causes.lines {
            writeln!(out, "  {l}")?;
        }
    }
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

#[cfg(test)]
mod tests {
    use super::FailureCauses;

    /// libtest's failure section, as `cargo test` prints it with a backtrace.
    const FAILURE: &str = "\
running 2 tests
test a ... ok
test lab ... FAILED

failures:

---- lab stdout ----
ok   http: 90 connections
FAIL http: 1 of 90 normal connections flagged

thread 'lab' panicked at tests/tests/lab.rs:540:5:
1 of 2 checks failed:
  [goals] http: 1 of 90 normal connections flagged
stack backtrace:
   0: std::panicking::begin_panic
note: Some details are omitted.

failures:
    lab

test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out";

    #[test]
    fn a_failed_tests_name_and_message_are_kept_and_its_backtrace_and_output_are_not() {
        let mut causes = FailureCauses::default();
        for line in FAILURE.lines() {
            causes.read(line);
        }
        assert_eq!(
            causes.lines,
            [
                "---- lab stdout ----",
                "thread 'lab' panicked at tests/tests/lab.rs:540:5:",
                "1 of 2 checks failed:",
                "  [goals] http: 1 of 90 normal connections flagged",
            ]
        );
    }

    #[test]
    fn a_passing_run_has_no_causes() {
        let mut causes = FailureCauses::default();
        for line in [
            "running 1 test",
            "test a ... ok",
            "",
            "test result: ok. 1 passed",
        ] {
            causes.read(line);
        }
        assert!(causes.lines.is_empty());
    }
}
