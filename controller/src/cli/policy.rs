//! What a pod gets: the signing policy (trust domain, SPIFFE ID template, lifetimes, key
//! types) handed to signer-core as its [`PolicyConfig`], and the identity policy file with the
//! cluster domain its Service names use.

use std::path::PathBuf;
use std::time::Duration;

use signer_core::{ConfigError, KeyType, Policy, PolicyConfig};

use super::{err, parse_duration};
use crate::identity_policy::IdentityFile;

/// What a pod gets, and who may get it.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Identity and policy")]
pub struct PolicyArgs {
    /// SPIFFE trust domain of issued identities.
    #[arg(long, env = "PODCERT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,

    /// Template of the SPIFFE ID; may use {namespace} and {service_account}, must use both.
    #[arg(long, env = "PODCERT_SPIFFE_ID_TEMPLATE", default_value = signer_core::SpiffeIdTemplate::DEFAULT)]
    pub spiffe_id_template: String,

    /// Certificate lifetime when the request allows more (e.g. 24h, 90m).
    #[arg(long, env = "PODCERT_DEFAULT_LIFETIME", default_value = "24h", value_parser = parse_duration)]
    pub default_lifetime: Duration,

    /// Fraction of the lifetime after which the kubelet should refresh, in (0, 1).
    #[arg(long, env = "PODCERT_REFRESH_FRACTION", default_value_t = 0.5)]
    pub refresh_fraction: f64,

    /// How far notBefore is set in the past, for clock skew (at most 3m).
    #[arg(long, env = "PODCERT_BACKDATE", default_value = "2m", value_parser = parse_duration)]
    pub backdate: Duration,

    /// Subject key types to issue for (comma-separated); others are denied UnsupportedKeyType.
    #[arg(
        long,
        env = "PODCERT_ALLOWED_KEY_TYPES",
        value_delimiter = ',',
        default_value = "ED25519,ECDSAP256,ECDSAP384,ECDSAP521,RSA3072,RSA4096"
    )]
    pub allowed_key_types: Vec<KeyType>,

    /// The identity policy file (YAML): which namespaces and service accounts get an SVID,
    /// with which settings, and which names beside it. Read again when it changes; see
    /// docs/identity-policy.md. Without it every namespace and service account gets one.
    #[arg(long, env = "PODCERT_IDENTITY_POLICY")]
    pub identity_policy: Option<PathBuf>,

    /// The cluster's DNS domain, for the long form of Service DNS names
    /// (`<svc>.<ns>.svc.<cluster-domain>`).
    #[arg(long, env = "PODCERT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
}

impl PolicyArgs {
    /// signer-core's policy for `signer_name`, checked by signer-core (its errors name these
    /// flags).
    pub fn policy(&self, signer_name: &str) -> Result<Policy, ConfigError> {
        Policy::new(&PolicyConfig {
            signer_name: signer_name.to_string(),
            trust_domain: self.trust_domain.clone(),
            spiffe_id_template: self.spiffe_id_template.clone(),
            default_lifetime: self.default_lifetime,
            refresh_fraction: self.refresh_fraction,
            backdate: self.backdate,
            allowed_key_types: self.allowed_key_types.clone(),
        })
    }

    /// The identity policy file, loaded and checked against the policy, if one is given.
    pub fn identity_file(&self, policy: &Policy) -> Result<Option<IdentityFile>, ConfigError> {
        self.identity_policy
            .as_deref()
            .map(|path| IdentityFile::load(path, policy.trust_domain(), policy.max_leaf_lifetime()))
            .transpose()
            .map_err(|e| err("identity-policy", e))
    }

    /// The cluster's DNS domain, a DNS name.
    pub fn cluster_domain(&self) -> Result<String, ConfigError> {
        if !signer_core::names::is_dns1123_subdomain(&self.cluster_domain) {
            return Err(err(
                "cluster-domain",
                format!("{:?} is not a DNS name", self.cluster_domain),
            ));
        }
        Ok(self.cluster_domain.clone())
    }
}
