//! Federation's settings: the SPIFFE bundle endpoint we serve (address, profile, certificate
//! or SVID identity, refresh hint) and the federation file of trust domains we import —
//! turned into the [`BundleEndpointConfig`] and [`FederationFile`] the federation wing reads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use signer_core::names::is_dns1123_subdomain;
use signer_core::{ConfigError, TrustDomain};

use super::{err, parse_duration};
use crate::config::{
    BundleEndpointConfig, EndpointIdentity, EndpointTls, FederationFile, ObjectName,
};

/// The bundle endpoint we serve and the trust domains we import.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Federation")]
pub struct FederationArgs {
    /// Serve our trust domain's SPIFFE bundle here (HTTPS, the `https_web` profile), for
    /// federated trust domains to import; see docs/federation.md. Off when unset.
    #[arg(long, env = "PODCERT_BUNDLE_ENDPOINT_ADDR")]
    pub bundle_endpoint_addr: Option<SocketAddr>,

    /// The bundle endpoint's server certificate chain (PEM), read again when it changes.
    #[arg(long, env = "PODCERT_BUNDLE_ENDPOINT_CERT")]
    pub bundle_endpoint_cert: Option<PathBuf>,

    /// The bundle endpoint's private key (PEM), read again when it changes.
    #[arg(long, env = "PODCERT_BUNDLE_ENDPOINT_KEY")]
    pub bundle_endpoint_key: Option<PathBuf>,

    /// How the bundle endpoint authenticates itself: `https_web`, with the certificate pair
    /// of --bundle-endpoint-cert/--bundle-endpoint-key; or `https_spiffe`, with an X.509-SVID
    /// the signer issues itself for --service-account in its namespace (renewed half-way
    /// through its life and kept in the Secret `<ca-secret>-bundle-endpoint`).
    #[arg(long, env = "PODCERT_BUNDLE_ENDPOINT_PROFILE", value_enum, default_value_t = EndpointProfile::HttpsWeb)]
    pub bundle_endpoint_profile: EndpointProfile,

    /// The signer's own service account (in the CA Secret's namespace): the identity of the
    /// `https_spiffe` bundle endpoint's SVID.
    #[arg(
        long,
        env = "PODCERT_SERVICE_ACCOUNT",
        default_value = "podcert-signer"
    )]
    pub service_account: String,

    /// `spiffe_refresh_hint` of the served bundle: how often importers should fetch it again.
    #[arg(long, env = "PODCERT_BUNDLE_REFRESH_HINT", default_value = "5m", value_parser = parse_duration)]
    pub bundle_refresh_hint: Duration,

    /// The federation file (YAML): foreign trust domains whose bundles this signer imports
    /// and publishes as ClusterTrustBundles, each with its bundle endpoint and profile; see
    /// docs/federation.md. Read at start.
    #[arg(long, env = "PODCERT_FEDERATION_CONFIG")]
    pub federation_config: Option<PathBuf>,
}

/// The bundle endpoint's profile (SPIFFE Federation §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EndpointProfile {
    #[value(name = "https_web")]
    HttpsWeb,
    #[value(name = "https_spiffe")]
    HttpsSpiffe,
}

impl FederationArgs {
    /// The federation file, loaded and checked, if one is given.
    pub fn peers(
        &self,
        signer_name: &str,
        trust_domain: &TrustDomain,
    ) -> Result<Option<FederationFile>, ConfigError> {
        self.federation_config
            .as_deref()
            .map(|path| crate::federation::peers::load(path, signer_name, trust_domain))
            .transpose()
            .map_err(|e| err("federation-config", e))
    }

    /// The bundle endpoint, if one is configured: with `https_web`, its certificate pair
    /// loads; with `https_spiffe`, no pair is given (the signer issues its own SVID).
    pub fn bundle_endpoint(
        &self,
        ca_secret: &ObjectName,
    ) -> Result<Option<BundleEndpointConfig>, ConfigError> {
        let (cert, key) = (&self.bundle_endpoint_cert, &self.bundle_endpoint_key);
        let Some(addr) = self.bundle_endpoint_addr else {
            if cert.is_some() {
                return Err(err(
                    "bundle-endpoint-cert",
                    "is only used with --bundle-endpoint-addr",
                ));
            }
            if key.is_some() {
                return Err(err(
                    "bundle-endpoint-key",
                    "is only used with --bundle-endpoint-addr",
                ));
            }
            return Ok(None);
        };
        if self.bundle_refresh_hint < Duration::from_secs(1) {
            return Err(err("bundle-refresh-hint", "must be at least 1s"));
        }
        let tls = match self.bundle_endpoint_profile {
            EndpointProfile::HttpsSpiffe => {
                for (flag, given) in [
                    ("bundle-endpoint-cert", cert.is_some()),
                    ("bundle-endpoint-key", key.is_some()),
                ] {
                    if given {
                        return Err(err(
                            flag,
                            "is not used with --bundle-endpoint-profile https_spiffe (the endpoint serves with the signer's own SVID)",
                        ));
                    }
                }
                if !is_dns1123_subdomain(&self.service_account) {
                    return Err(err(
                        "service-account",
                        format!("{:?} is not a service account name", self.service_account),
                    ));
                }
                EndpointTls::Svid {
                    secret: crate::federation::svid::secret_name(ca_secret),
                    identity: EndpointIdentity {
                        namespace: ca_secret.namespace.clone(),
                        service_account: self.service_account.clone(),
                    },
                }
            }
            EndpointProfile::HttpsWeb => {
                let cert = cert.clone().ok_or_else(|| {
                    err(
                        "bundle-endpoint-cert",
                        "is needed with --bundle-endpoint-addr (the https_web profile)",
                    )
                })?;
                let key = key.clone().ok_or_else(|| {
                    err(
                        "bundle-endpoint-key",
                        "is needed with --bundle-endpoint-addr (the https_web profile)",
                    )
                })?;
                let initial = crate::federation::endpoint::load_tls(&cert, &key)
                    .map_err(|e| err("bundle-endpoint-cert", e))?;
                EndpointTls::Files {
                    cert,
                    key,
                    initial: Arc::new(initial),
                }
            }
        };
        Ok(Some(BundleEndpointConfig {
            addr,
            refresh_hint: self.bundle_refresh_hint,
            tls,
        }))
    }
}
