//! The validated configuration: what every part of the controller reads after start.
//!
//! [`crate::cli`] parses flags and checks them; what comes out is a [`Config`], and nothing
//! after start-up looks at a flag again. Each part takes only its own piece: the CA's life
//! [`CaConfig`], the election [`LeaseConfig`], the cluster connection [`ClusterConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use signer_core::{CaKeyType, Policy};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub signer_name: String,
    /// Shared by every signer this process builds (one per CA it signs with).
    pub policy: Arc<Policy>,
    pub ca: CaConfig,
    pub concurrency: u16,
    pub admin_addr: SocketAddr,
    pub lease: LeaseConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
}

/// The CA Secret, how to generate a CA on a fresh install, and the trust bundle.
#[derive(Debug, Clone)]
pub struct CaConfig {
    pub secret: ObjectName,
    pub key_type: CaKeyType,
    pub validity: Duration,
    pub trust_bundle_name: String,
    pub trust_bundle_resync: Duration,
}

#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub name: ObjectName,
    pub identity: String,
    pub duration: Duration,
    pub renew_interval: Duration,
}

/// Where the cluster is: an explicit kubeconfig file, a context, or inferred (KUBECONFIG,
/// ~/.kube/config, then in-cluster).
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub filter: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Plain,
    Json,
}

/// A namespaced object's `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectName {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
