//! The election's settings: the Lease, its timing and this replica's name in it — turned into
//! the [`LeaseConfig`] the election reads, the renewal checked to fit the duration twice.

use std::time::Duration;

use signer_core::ConfigError;

use super::{err, object_name, parse_duration};
use crate::config::{LeaseConfig, ObjectName};

/// The leader-election Lease.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Leader election")]
pub struct LeaseArgs {
    /// Name of the leader-election Lease.
    #[arg(long, env = "PODCERT_LEASE_NAME", default_value = "podcert-signer")]
    pub lease_name: String,

    /// Namespace of the Lease (default: the CA Secret's namespace).
    #[arg(long, env = "PODCERT_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// How long a leader's Lease lasts without renewal; a standby takes over after it.
    #[arg(long, env = "PODCERT_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How often the leader renews (and a standby retries) the Lease.
    #[arg(long, env = "PODCERT_LEASE_RENEW_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub lease_renew_interval: Duration,

    /// This replica's identity in the Lease (default: $POD_NAME or the hostname, and the process id).
    #[arg(long, env = "PODCERT_IDENTITY")]
    pub identity: Option<String>,
}

impl LeaseArgs {
    /// The election's part of the configuration; the Lease lives beside the CA Secret unless
    /// told otherwise.
    pub fn config(&self, ca_secret: &ObjectName) -> Result<LeaseConfig, ConfigError> {
        let namespace = self
            .lease_namespace
            .clone()
            .unwrap_or_else(|| ca_secret.namespace.clone());
        let name = object_name("lease-name", &format!("{namespace}/{}", self.lease_name))?;
        if self.lease_renew_interval.is_zero()
            || self.lease_renew_interval * 2 > self.lease_duration
        {
            return Err(err(
                "lease-renew-interval",
                "must be positive and at most half of --lease-duration",
            ));
        }
        Ok(LeaseConfig {
            name,
            identity: self.identity.clone().unwrap_or_else(default_identity),
            duration: self.lease_duration,
            renew_interval: self.lease_renew_interval,
        })
    }
}

fn default_identity() -> String {
    // The process id tells apart two replicas on one host, and a restarted process from its
    // predecessor.
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "podcert-signer".into());
    format!("{host}_{}", std::process::id())
}
