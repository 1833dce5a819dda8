//! The process's own settings: its logs, which cluster it talks to, and (hidden, for the
//! time-compressed tests) the clock certificates are issued by — each turned into its part of
//! the configuration: [`LogConfig`], [`ClusterConfig`], [`Clock`].

use std::path::PathBuf;
use std::time::Duration;

use signer_core::ConfigError;

use super::err;
use crate::config::{ClusterConfig, LogConfig, LogFormat};
use crate::runtime::clock::Clock;

/// Logs.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Logging")]
pub struct LogArgs {
    /// Log filter (tracing EnvFilter syntax, e.g. info or podcert_signer=debug).
    #[arg(long, env = "PODCERT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "PODCERT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
}

impl LogArgs {
    pub fn config(&self) -> Result<LogConfig, ConfigError> {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(err("log-level", e.to_string()));
        }
        Ok(LogConfig {
            filter: self.log_level.clone(),
            format: self.log_format,
        })
    }
}

/// Which cluster.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Cluster")]
pub struct ClusterArgs {
    /// Path of a kubeconfig file (default: $KUBECONFIG, which may list several files, then
    /// ~/.kube/config, then the in-cluster config).
    #[arg(long, env = "PODCERT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// kubeconfig context to use.
    #[arg(long, env = "PODCERT_CONTEXT")]
    pub context: Option<String>,
}

impl ClusterArgs {
    pub fn config(&self) -> ClusterConfig {
        ClusterConfig {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
        }
    }
}

/// The certificate clock, compressed for tests only.
#[derive(Debug, Clone, clap::Args)]
pub struct ClockArgs {
    /// Runs certificate and CA time this many times faster than the system clock, from
    /// --time-origin. For time-compressed tests only; never in production.
    #[arg(long, env = "PODCERT_TIME_SCALE", default_value_t = 1, hide = true)]
    pub time_scale: u32,

    /// Unix second from which --time-scale runs faster.
    #[arg(long, env = "PODCERT_TIME_ORIGIN", default_value_t = 0, hide = true)]
    pub time_origin: u64,
}

impl ClockArgs {
    pub fn clock(&self) -> Result<Clock, ConfigError> {
        Ok(match self.time_scale {
            0 => return Err(err("time-scale", "must be at least 1")),
            1 => Clock::system(),
            n => Clock::scaled(
                std::time::UNIX_EPOCH + Duration::from_secs(self.time_origin),
                n,
            ),
        })
    }
}
