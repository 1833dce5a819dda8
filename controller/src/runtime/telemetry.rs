//! Logs: structured `tracing` output on stderr, plain or JSON, filtered by `--log-level`.
//!
//! Metrics live in [`crate::runtime::metrics`] and are served with `/live` and `/ready` by
//! [`crate::runtime::admin`]; this module only installs the log subscriber.

use signer_core::ConfigError;

use crate::config::{LogConfig, LogFormat};

/// Installs the subscriber; a bad filter is a configuration error naming `--log-level`.
pub fn init_logging(config: &LogConfig) -> Result<(), ConfigError> {
    let filter =
        tracing_subscriber::EnvFilter::try_new(&config.filter).map_err(|e| ConfigError {
            setting: "log-level",
            message: e.to_string(),
        })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Already initialised (tests running several instances in one process) is fine.
    drop(result);
    Ok(())
}
