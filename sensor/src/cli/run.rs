//! `sensor run`: the agent with its resolved configuration.
use std::time::Duration;

use crate::config::RunConfig;

/// Runs the agent until SIGINT, SIGTERM or `limit`; its summary goes to stderr as one JSON
/// line.
pub fn run_sensor(mut config: RunConfig, limit: Option<Duration>) -> anyhow::Result<()> {
    config.model = super::model_path(&config.model);
    let summary = super::current_thread_runtime()?.block_on(async {
        // The handlers before the agent starts (see `shutdown_signal`).
        let stop = super::shutdown_signal(limit);
        crate::agent::run(config, stop).await
    })?;
    eprintln!("run: {}", serde_json::to_string(&summary)?);
    Ok(())
}
