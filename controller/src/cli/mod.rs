//! The command line: every setting as a flag with an environment variable, checked at start.
//!
//! [`Args`] is what clap parses: the signer name and the few settings of the request
//! controller, then one group per part of the [`Config`] — what a pod gets ([`policy`]), the
//! CA and its token ([`ca`]), federation ([`federation`]), the Lease ([`lease`]), and the
//! process's logs, cluster and clock ([`process`]). Each group turns itself into its part of
//! the Config, or a [`ConfigError`] naming the flag at fault, so a bad value stops the process
//! before it touches the cluster; `--help` shows the groups under their headings. `Args`
//! stops here: everything after start reads the [`Config`].

mod ca;
mod federation;
mod lease;
mod policy;
mod process;
pub mod status;
#[cfg(test)]
mod tests;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use signer_core::ConfigError;
use signer_core::names::{self, is_dns1123_label, is_dns1123_subdomain};

use crate::config::{Config, ObjectName};

/// What to do besides signing.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Why is my pod stuck? Lists PodCertificateRequests (of a namespace, or one pod) with
    /// their state, age, reason and message, then the signer's leader, CA Secret and trust
    /// bundle. Reads the cluster the signer's flags name; writes nothing.
    Status(crate::cli::status::Query),
}

/// Kubernetes PodCertificateRequest signer issuing SPIFFE X.509-SVIDs.
#[derive(Debug, Clone, Parser)]
#[command(name = "podcert-signer", version, about)]
pub struct Args {
    /// Run the signer (no subcommand), or a subcommand with the same settings.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The signerName this signer serves, `<domain>/<path>` (not under kubernetes.io).
    #[arg(long, env = "PODCERT_SIGNER_NAME")]
    pub signer_name: String,

    /// How many requests are decided at once.
    #[arg(long, env = "PODCERT_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// A request still without a status after this long gets a Warning Event `StillPending`
    /// (and counts towards the PodcertRequestsStuck alert's metric).
    #[arg(long, env = "PODCERT_PENDING_WARNING_AFTER", default_value = "60s", value_parser = parse_duration)]
    pub pending_warning_after: Duration,

    /// Address of the admin HTTP server (/live, /ready, and /metrics unless
    /// --secure-metrics-addr is set).
    #[arg(long, env = "PODCERT_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// Serve /metrics over HTTPS on this address instead of the admin port, only to callers
    /// the API server authenticates (TokenReview) and authorizes to get /metrics
    /// (SubjectAccessReview; ClusterRole podcert-signer-metrics-reader).
    #[arg(long, env = "PODCERT_SECURE_METRICS_ADDR")]
    pub secure_metrics_addr: Option<SocketAddr>,

    /// The serving certificate chain (PEM) for --secure-metrics-addr; unset: one made at
    /// start and signed by itself.
    #[arg(long, env = "PODCERT_SECURE_METRICS_CERT")]
    pub secure_metrics_cert: Option<std::path::PathBuf>,

    /// The serving certificate's private key (PEM) for --secure-metrics-cert.
    #[arg(long, env = "PODCERT_SECURE_METRICS_KEY")]
    pub secure_metrics_key: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub policy: policy::PolicyArgs,

    #[command(flatten)]
    pub ca: ca::CaArgs,

    #[command(flatten)]
    pub federation: federation::FederationArgs,

    #[command(flatten)]
    pub lease: lease::LeaseArgs,

    #[command(flatten)]
    pub log: process::LogArgs,

    #[command(flatten)]
    pub cluster: process::ClusterArgs,

    #[command(flatten)]
    pub clock: process::ClockArgs,
}

impl Args {
    /// The validated configuration, or the first flag at fault.
    pub fn config(&self) -> Result<Config, ConfigError> {
        validate_signer_name(&self.signer_name)?;
        let policy = self.policy.policy(&self.signer_name)?;
        let trust_domain = policy.trust_domain().clone();
        let clock = self.clock.clock()?;
        let ca = self.ca.config(
            &self.signer_name,
            &trust_domain,
            policy.max_leaf_lifetime(),
            clock.scale(),
        )?;
        if self.concurrency == 0 {
            return Err(err("concurrency", "must be at least 1"));
        }
        if self.pending_warning_after < Duration::from_secs(1) {
            return Err(err("pending-warning-after", "must be at least 1s"));
        }
        Ok(Config {
            lease: self.lease.config(&ca.secret)?,
            log: self.log.config()?,
            identity_policy: self.policy.identity_file(&policy)?,
            cluster_domain: self.policy.cluster_domain()?,
            bundle_endpoint: self.federation.bundle_endpoint(&ca.secret)?,
            federation: self.federation.peers(&self.signer_name, &trust_domain)?,
            cluster: self.cluster.config(),
            signer_name: self.signer_name.clone(),
            clock,
            policy: Arc::new(policy),
            ca,
            concurrency: self.concurrency,
            pending_warning_after: self.pending_warning_after,
            admin_addr: self.admin_addr,
            secure_metrics: self.secure_metrics()?,
        })
    }

    /// The HTTPS metrics server, if asked for: its address and TLS configuration, the
    /// operator's pair read and checked now.
    fn secure_metrics(&self) -> Result<Option<crate::config::SecureMetricsConfig>, ConfigError> {
        use crate::runtime::http_server::PairError;
        let pair = match (&self.secure_metrics_cert, &self.secure_metrics_key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(err(
                    "secure-metrics-key",
                    "is needed with --secure-metrics-cert",
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    "secure-metrics-cert",
                    "is needed with --secure-metrics-key",
                ));
            }
            (Some(c), Some(k)) => {
                let read = |flag: &'static str, p: &std::path::Path| {
                    std::fs::read(p).map_err(|e| err(flag, format!("{}: {e}", p.display())))
                };
                Some((
                    read("secure-metrics-cert", c)?,
                    read("secure-metrics-key", k)?,
                ))
            }
        };
        let Some(addr) = self.secure_metrics_addr else {
            if pair.is_some() {
                return Err(err(
                    "secure-metrics-cert",
                    "is only used with --secure-metrics-addr",
                ));
            }
            return Ok(None);
        };
        let tls = crate::runtime::secure_metrics::tls(
            pair.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
        )
        .map_err(|e| match e {
            PairError::Cert(m) => err("secure-metrics-cert", m),
            PairError::Key(m) => err("secure-metrics-key", m),
            PairError::Pair(m) => err("secure-metrics-cert", m),
        })?;
        Ok(Some(crate::config::SecureMetricsConfig {
            addr,
            tls: Arc::new(tls),
        }))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (use e.g. 90s, 15m, 24h, 30d)"))
}

fn err(setting: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting,
        message: message.into(),
    }
}

/// Checks a signer name exactly as the API server does (`ValidateSignerName`), and refuses
/// the reserved `kubernetes.io` domain (those signers are the cluster's own).
pub fn validate_signer_name(name: &str) -> Result<(), ConfigError> {
    let errors = names::signer_name_errors(name);
    if !errors.is_empty() {
        return Err(err(
            "signer-name",
            format!(
                "{name:?} would be refused by the API server: {} (e.g. example.com/spiffe)",
                errors.join("; ")
            ),
        ));
    }
    if names::is_kubernetes_signer_name(name) {
        return Err(err(
            "signer-name",
            "signers under kubernetes.io are reserved for Kubernetes itself",
        ));
    }
    Ok(())
}

fn object_name(setting: &'static str, s: &str) -> Result<ObjectName, ConfigError> {
    match s.split_once('/') {
        Some((ns, name)) if is_dns1123_label(ns) && is_dns1123_subdomain(name) => Ok(ObjectName {
            namespace: ns.into(),
            name: name.into(),
        }),
        _ => Err(err(setting, format!("{s:?} is not namespace/name"))),
    }
}
