//! The bodies of the `sensor` subcommands that are not a stage of their own: each takes typed
//! options (built by `main.rs` from flags, or by a test) and writes to the writer it is given.
//! Training and evaluation live in [`crate::train::cli`].
pub mod baseline;
pub mod flows;
pub mod replay;
pub mod run;

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;

use crate::{config::DEFAULT_MODEL, dataset, kdd::FeatureSet};

/// Where the Debian package installs the model (`deploy/sensor.toml` names it too).
pub const INSTALLED_MODEL: &str = "/usr/share/sensor/nsl-kdd-flow.model";

/// `path` as given; for the default name when no such file exists here, the workspace's copy
/// (running from elsewhere in a checkout), then the installed one.
pub fn model_path(path: &Path) -> PathBuf {
    if path.exists() || path != Path::new(DEFAULT_MODEL) {
        return path.to_path_buf();
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DEFAULT_MODEL);
    if workspace.exists() || !Path::new(INSTALLED_MODEL).exists() {
        return workspace;
    }
    PathBuf::from(INSTALLED_MODEL)
}

/// A future that resolves on SIGINT, SIGTERM, or after `limit`.
///
/// The handlers are installed by this call, not when the future is first polled: the commands
/// log that they are watching before their loop polls it, and a SIGTERM in between (a service
/// manager's stop right after the start) would otherwise take the default action and kill the
/// process without its summary. Must be called inside the runtime.
pub fn shutdown_signal(limit: Option<Duration>) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(int), Ok(term)) => Some((int, term)),
        (Err(e), _) | (_, Err(e)) => {
            log::error!("cannot install signal handlers ({e}); stopping");
            None
        }
    };
    async move {
        let Some((mut int, mut term)) = handlers else {
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
}

/// The runtime of the live commands: one thread, since the capture loop, the scorer and the
/// metrics endpoint are each cheap enough to share it (see `cargo xtask bench`).
pub fn current_thread_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `sensor dataset summary`: rows, class balance, categories and labels of an NSL-KDD file.
pub fn dataset_summary(
    data: &Path,
    skip_malformed: bool,
    mut out: impl Write,
) -> anyhow::Result<()> {
    let loaded = dataset::load(data, dataset::LoadOptions { skip_malformed })?;
    write!(out, "{}", dataset::Summary::of(&loaded.samples))?;
    if loaded.skipped > 0 {
        writeln!(
            out,
            "skipped {} malformed rows; first errors:",
            loaded.skipped
        )?;
        for e in &loaded.first_errors {
            writeln!(out, "  {e}")?;
        }
    }
    Ok(())
}

/// `sensor features`: the KDD feature names of `set`, in model input order.
pub fn features(set: FeatureSet, mut out: impl Write) -> anyhow::Result<()> {
    for name in set.names() {
        writeln!(out, "{name}")?;
    }
    Ok(())
}
