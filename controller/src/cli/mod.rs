//! The command line: every setting as a flag with an environment variable, checked at start.
//!
//! [`Args`] is what clap parses; [`Args::config`] turns it into a validated [`Config`] or a
//! [`ConfigError`] naming the flag at fault, so a bad value stops the process before it
//! touches the cluster. `Args` stops here: everything after start reads the [`Config`].
//! Policy settings are signer-core's [`PolicyConfig`] under the same names.

pub mod status;

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use signer_core::ConfigError;
use signer_core::names::{self, is_dns1123_label, is_dns1123_subdomain};
use signer_core::{CaKeyType, CaProfile, KeyType, Policy, PolicyConfig};

use crate::config::{
    CaConfig, CaLifecycle, ClusterConfig, Config, EndpointIdentity, EndpointTls, LeaseConfig,
    LogConfig, LogFormat, ObjectName, Pin, TokenConfig,
};
use crate::runtime::clock::Clock;

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

    /// The CA Secret, `namespace/name` (type kubernetes.io/tls; created if missing).
    #[arg(
        long,
        env = "PODCERT_CA_SECRET",
        default_value = "podcert-signer/podcert-signer-ca"
    )]
    pub ca_secret: String,

    /// Key type of the roots and signing intermediates we generate: ECDSAP256, ECDSAP384 or ED25519.
    #[arg(long, env = "PODCERT_CA_KEY_TYPE", default_value = "ECDSAP256")]
    pub ca_key_type: CaKeyType,

    /// Validity of a root we generate.
    #[arg(long, env = "PODCERT_CA_VALIDITY", default_value = "365d", value_parser = parse_duration)]
    pub ca_validity: Duration,

    /// A root we generated is replaced automatically once it has less than this left.
    #[arg(long, env = "PODCERT_CA_ROTATE_BEFORE", default_value = "90d", value_parser = parse_duration)]
    pub ca_rotate_before: Duration,

    /// How long a new root is published in the trust bundle beside the old one before it signs.
    #[arg(long, env = "PODCERT_CA_PROPAGATION_DELAY", default_value = "24h", value_parser = parse_duration)]
    pub ca_propagation_delay: Duration,

    /// Validity of a signing intermediate (made in memory by the leader, renewed half-way).
    #[arg(long, env = "PODCERT_INTERMEDIATE_VALIDITY", default_value = "7d", value_parser = parse_duration)]
    pub intermediate_validity: Duration,

    /// Whether generated roots and intermediates carry a URI name constraint for the trust
    /// domain (rustls-webpki refuses chains with one: turn it off for rustls workloads).
    #[arg(long, env = "PODCERT_CA_NAME_CONSTRAINTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub ca_name_constraints: bool,

    /// PKCS#11 module (shared library) of the token that holds root keys, e.g.
    /// /usr/lib/softhsm/libsofthsm2.so; unset: root keys are kept in the CA Secret.
    #[arg(long, env = "PODCERT_CA_PKCS11_MODULE")]
    pub ca_pkcs11_module: Option<std::path::PathBuf>,

    /// Label of the PKCS#11 token that holds root keys.
    #[arg(
        long,
        env = "PODCERT_CA_PKCS11_TOKEN_LABEL",
        default_value = "podcert-signer"
    )]
    pub ca_pkcs11_token_label: String,

    /// Label under which root keys are generated in, and found in, the token.
    #[arg(
        long,
        env = "PODCERT_CA_PKCS11_KEY_LABEL",
        default_value = "podcert-signer-root"
    )]
    pub ca_pkcs11_key_label: String,

    /// File holding the token user's PIN (e.g. a mounted Secret); required with
    /// --ca-pkcs11-module.
    #[arg(long, env = "PODCERT_CA_PKCS11_PIN_FILE")]
    pub ca_pkcs11_pin_file: Option<std::path::PathBuf>,

    /// Runs certificate and CA time this many times faster than the system clock, from
    /// --time-origin. For time-compressed tests only; never in production.
    #[arg(long, env = "PODCERT_TIME_SCALE", default_value_t = 1, hide = true)]
    pub time_scale: u32,

    /// Unix second from which --time-scale runs faster.
    #[arg(long, env = "PODCERT_TIME_ORIGIN", default_value_t = 0, hide = true)]
    pub time_origin: u64,

    /// Suffix of the ClusterTrustBundle name (`<signer-name with / as :>:<suffix>`).
    #[arg(long, env = "PODCERT_TRUST_BUNDLE_SUFFIX", default_value = "ca")]
    pub trust_bundle_suffix: String,

    /// How often the published ClusterTrustBundle is checked for drift and repaired.
    #[arg(long, env = "PODCERT_TRUST_BUNDLE_RESYNC", default_value = "60s", value_parser = parse_duration)]
    pub trust_bundle_resync: Duration,

    /// How many requests are decided at once.
    #[arg(long, env = "PODCERT_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,

    /// A request still without a status after this long gets a Warning Event `StillPending`
    /// (and counts towards the PodcertRequestsStuck alert's metric).
    #[arg(long, env = "PODCERT_PENDING_WARNING_AFTER", default_value = "60s", value_parser = parse_duration)]
    pub pending_warning_after: Duration,

    /// The identity policy file (YAML): which namespaces and service accounts get an SVID,
    /// with which settings, and which names beside it. Read again when it changes; see the
    /// docs/identity-policy.md. Without it every namespace and service account gets one.
    #[arg(long, env = "PODCERT_IDENTITY_POLICY")]
    pub identity_policy: Option<std::path::PathBuf>,

    /// The cluster's DNS domain, for the long form of Service DNS names
    /// (`<svc>.<ns>.svc.<cluster-domain>`).
    #[arg(long, env = "PODCERT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// Serve our trust domain's SPIFFE bundle here (HTTPS, the `https_web` profile), for
    /// federated trust domains to import; see docs/federation.md. Off when unset.
    #[arg(long, env = "PODCERT_BUNDLE_ENDPOINT_ADDR")]
    pub bundle_endpoint_addr: Option<SocketAddr>,

    /// The bundle endpoint's server certificate chain (PEM), read again when it changes.
    #[arg(long, env = "PODCERT_BUNDLE_ENDPOINT_CERT")]
    pub bundle_endpoint_cert: Option<std::path::PathBuf>,

    /// The bundle endpoint's private key (PEM), read again when it changes.
    #[arg(long, env = "PODCERT_BUNDLE_ENDPOINT_KEY")]
    pub bundle_endpoint_key: Option<std::path::PathBuf>,

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
    pub federation_config: Option<std::path::PathBuf>,

    /// Address of the admin HTTP server (/live, /ready, /metrics).
    #[arg(long, env = "PODCERT_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    pub admin_addr: SocketAddr,

    /// Log filter (tracing EnvFilter syntax, e.g. info or podcert_signer=debug).
    #[arg(long, env = "PODCERT_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format.
    #[arg(long, env = "PODCERT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,

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

    /// Path of a kubeconfig file (default: $KUBECONFIG, which may list several files, then
    /// ~/.kube/config, then the in-cluster config).
    #[arg(long, env = "PODCERT_KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,

    /// kubeconfig context to use.
    #[arg(long, env = "PODCERT_CONTEXT")]
    pub context: Option<String>,
}

/// The bundle endpoint's profile (SPIFFE Federation §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EndpointProfile {
    #[value(name = "https_web")]
    HttpsWeb,
    #[value(name = "https_spiffe")]
    HttpsSpiffe,
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

impl Args {
    pub fn config(&self) -> Result<Config, ConfigError> {
        validate_signer_name(&self.signer_name)?;
        let policy = Policy::new(&PolicyConfig {
            trust_domain: self.trust_domain.clone(),
            spiffe_id_template: self.spiffe_id_template.clone(),
            default_lifetime: self.default_lifetime,
            refresh_fraction: self.refresh_fraction,
            backdate: self.backdate,
            allowed_key_types: self.allowed_key_types.clone(),
        })?;
        let ca_secret = object_name("ca-secret", &self.ca_secret)?;
        let trust_domain = policy.trust_domain().clone();
        let clock = match self.time_scale {
            0 => return Err(err("time-scale", "must be at least 1")),
            1 => Clock::system(),
            n => Clock::scaled(
                std::time::UNIX_EPOCH + Duration::from_secs(self.time_origin),
                n,
            ),
        };
        let lifecycle = self.lifecycle(policy.max_leaf_lifetime(), clock.scale())?;
        let trust_bundle_name = format!(
            "{}:{}",
            self.signer_name.replace('/', ":"),
            self.trust_bundle_suffix
        );
        let name_errors =
            names::cluster_trust_bundle_name_errors(&self.signer_name, &trust_bundle_name);
        if !name_errors.is_empty() {
            return Err(err(
                "trust-bundle-suffix",
                format!(
                    "{:?} would make the ClusterTrustBundle name {trust_bundle_name:?}, which the API server refuses: {}",
                    self.trust_bundle_suffix,
                    name_errors.join("; ")
                ),
            ));
        }
        if self.concurrency == 0 {
            return Err(err("concurrency", "must be at least 1"));
        }
        if self.pending_warning_after < Duration::from_secs(1) {
            return Err(err("pending-warning-after", "must be at least 1s"));
        }
        let lease_namespace = self
            .lease_namespace
            .clone()
            .unwrap_or_else(|| ca_secret.namespace.clone());
        let lease_name = object_name(
            "lease-name",
            &format!("{lease_namespace}/{}", self.lease_name),
        )?;
        if self.lease_renew_interval.is_zero()
            || self.lease_renew_interval * 2 > self.lease_duration
        {
            return Err(err(
                "lease-renew-interval",
                "must be positive and at most half of --lease-duration",
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(err("log-level", e.to_string()));
        }
        let identity = self.identity.clone().unwrap_or_else(default_identity);
        let identity_policy = self
            .identity_policy
            .as_deref()
            .map(|path| {
                crate::identity_policy::IdentityFile::load(
                    path,
                    &trust_domain,
                    policy.max_leaf_lifetime(),
                )
            })
            .transpose()
            .map_err(|e| err("identity-policy", e))?;
        if !names::is_dns1123_subdomain(&self.cluster_domain) {
            return Err(err(
                "cluster-domain",
                format!("{:?} is not a DNS name", self.cluster_domain),
            ));
        }
        let bundle_endpoint = self.bundle_endpoint(&ca_secret)?;
        let federation = self
            .federation_config
            .as_deref()
            .map(|path| crate::federation::peers::load(path, &self.signer_name, &trust_domain))
            .transpose()
            .map_err(|e| err("federation-config", e))?;
        Ok(Config {
            bundle_endpoint,
            federation,
            identity_policy,
            cluster_domain: self.cluster_domain.clone(),
            signer_name: self.signer_name.clone(),
            clock,
            policy: std::sync::Arc::new(policy),
            ca: CaConfig {
                secret: ca_secret,
                profile: CaProfile {
                    key_type: self.ca_key_type,
                    trust_domain: trust_domain.clone(),
                    name_constraints: self.ca_name_constraints,
                },
                lifecycle,
                pkcs11: self.pkcs11()?,
                trust_bundle_name,
                trust_bundle_resync: self.trust_bundle_resync.max(Duration::from_secs(1)),
            },
            concurrency: self.concurrency,
            pending_warning_after: self.pending_warning_after,
            admin_addr: self.admin_addr,
            lease: LeaseConfig {
                name: lease_name,
                identity,
                duration: self.lease_duration,
                renew_interval: self.lease_renew_interval,
            },
            cluster: ClusterConfig {
                kubeconfig: self.kubeconfig.clone(),
                context: self.context.clone(),
            },
            log: LogConfig {
                filter: self.log_level.clone(),
                format: self.log_format,
            },
        })
    }
}

impl Args {
    /// The bundle endpoint, if one is configured: with `https_web`, its certificate pair
    /// loads; with `https_spiffe`, no pair is given (the signer issues its own SVID).
    fn bundle_endpoint(
        &self,
        ca_secret: &ObjectName,
    ) -> Result<Option<crate::config::BundleEndpointConfig>, ConfigError> {
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
                    initial: std::sync::Arc::new(initial),
                }
            }
        };
        Ok(Some(crate::config::BundleEndpointConfig {
            addr,
            refresh_hint: self.bundle_refresh_hint,
            tls,
        }))
    }

    /// The token that holds root keys, if one is configured: the module exists and the PIN
    /// file is read (its content is never shown).
    fn pkcs11(&self) -> Result<Option<TokenConfig>, ConfigError> {
        let Some(module) = &self.ca_pkcs11_module else {
            if self.ca_pkcs11_pin_file.is_some() {
                return Err(err(
                    "ca-pkcs11-pin-file",
                    "is only used with --ca-pkcs11-module",
                ));
            }
            return Ok(None);
        };
        if !module.is_file() {
            return Err(err(
                "ca-pkcs11-module",
                format!(
                    "{} is not a file (the token's PKCS#11 shared library)",
                    module.display()
                ),
            ));
        }
        let Some(pin_file) = &self.ca_pkcs11_pin_file else {
            return Err(err(
                "ca-pkcs11-pin-file",
                "is required with --ca-pkcs11-module (a file holding the token user's PIN)",
            ));
        };
        let pin = std::fs::read_to_string(pin_file).map_err(|e| {
            err(
                "ca-pkcs11-pin-file",
                format!("cannot read {}: {}", pin_file.display(), e.kind()),
            )
        })?;
        let pin = pin.trim_end_matches(['\r', '\n']);
        if pin.is_empty() {
            return Err(err(
                "ca-pkcs11-pin-file",
                format!("{} is empty", pin_file.display()),
            ));
        }
        for (setting, label) in [
            ("ca-pkcs11-token-label", &self.ca_pkcs11_token_label),
            ("ca-pkcs11-key-label", &self.ca_pkcs11_key_label),
        ] {
            // A token label is at most 32 bytes (CK_TOKEN_INFO.label).
            if label.is_empty() || (setting == "ca-pkcs11-token-label" && label.len() > 32) {
                return Err(err(setting, "must be 1 to 32 bytes"));
            }
        }
        Ok(Some(TokenConfig {
            module: module.clone(),
            token_label: self.ca_pkcs11_token_label.clone(),
            key_label: self.ca_pkcs11_key_label.clone(),
            pin: Pin::new(pin.to_owned()),
        }))
    }

    /// The CA schedule, checked so that every step has room.
    fn lifecycle(
        &self,
        longest_leaf: Duration,
        time_scale: u32,
    ) -> Result<CaLifecycle, ConfigError> {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        if self.intermediate_validity < longest_leaf * 2 {
            return Err(err(
                "intermediate-validity",
                format!(
                    "must be at least twice the longest leaf lifetime ({}), so a leaf never outlives its intermediate",
                    show(longest_leaf * 2)
                ),
            ));
        }
        let least_rotate_before = self.ca_propagation_delay + self.intermediate_validity;
        if self.ca_rotate_before <= least_rotate_before {
            return Err(err(
                "ca-rotate-before",
                format!(
                    "must be more than --ca-propagation-delay plus --intermediate-validity ({}), so the old root can sign until the new one is trusted",
                    show(least_rotate_before)
                ),
            ));
        }
        if self.ca_validity <= self.ca_rotate_before * 2 {
            return Err(err(
                "ca-validity",
                format!(
                    "must be more than twice --ca-rotate-before ({}), or a root would be replaced as soon as it is made",
                    show(self.ca_rotate_before * 2)
                ),
            ));
        }
        // A deposed leader's term stops signing within GRACE of real time after it lost the
        // Lease (it steps down before anyone may take over); on a compressed clock that is
        // `time_scale` times more certificate time.
        let deposed_grace = crate::leadership::term::GRACE * time_scale;
        Ok(CaLifecycle {
            root_validity: self.ca_validity,
            root_rotate_before: self.ca_rotate_before,
            propagation_delay: self.ca_propagation_delay,
            intermediate_validity: self.intermediate_validity,
            retain_retired_roots: longest_leaf + deposed_grace,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_definition_is_consistent() {
        Args::command().debug_assert();
    }

    /// The flags of `cmd` and its subcommands, as `--name`, with their environment
    /// variables; a subcommand's own flags (`status --pod`) have none.
    fn flags(cmd: &clap::Command, out: &mut Vec<(String, Option<String>)>, top: bool) {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long().filter(|l| !["help", "version"].contains(l)) {
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                out.push((
                    format!("--{long}"),
                    if top { env } else { Some(String::new()) },
                ));
            }
        }
        for sub in cmd.get_subcommands() {
            flags(sub, out, false);
        }
    }

    /// docs/configuration.md's flag tables: the `--flags` named in each row's first cell.
    fn documented_flags() -> (String, std::collections::BTreeSet<String>) {
        let page =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md");
        let page = std::fs::read_to_string(&page).expect("docs/configuration.md");
        let mut documented = std::collections::BTreeSet::new();
        for row in page.lines().filter(|l| l.starts_with("| `--")) {
            let first = row.split('|').nth(1).unwrap_or_default();
            for part in first.split('`').filter(|p| p.starts_with("--")) {
                documented.insert(part.to_string());
            }
        }
        (page, documented)
    }

    #[test]
    fn every_flag_is_documented_and_every_documented_flag_exists() {
        let mut all = Vec::new();
        flags(&Args::command(), &mut all, true);
        let (page, documented) = documented_flags();
        let names: std::collections::BTreeSet<String> =
            all.iter().map(|(f, _)| f.clone()).collect();
        let undocumented: Vec<_> = names.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "flags missing from docs/configuration.md: {undocumented:?}"
        );
        let unknown: Vec<_> = documented.difference(&names).collect();
        assert!(
            unknown.is_empty(),
            "docs/configuration.md documents no such flag: {unknown:?}"
        );
        // The page says every flag has a PODCERT_<FLAG> variable; hold the code to it.
        assert!(page.contains("`PODCERT_<FLAG>`"));
        for (flag, env) in all.iter().filter(|(_, env)| env.as_deref() != Some("")) {
            let want = format!("PODCERT_{}", flag[2..].replace('-', "_").to_uppercase());
            assert_eq!(env.as_deref(), Some(want.as_str()), "{flag}");
        }
    }

    fn args(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["podcert-signer", "--signer-name", "example.com/spiffe"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).expect("parses").config()
    }

    #[test]
    fn defaults_make_a_valid_config() {
        let c = args(&[]).unwrap();
        assert_eq!(c.ca.trust_bundle_name, "example.com:spiffe:ca");
        assert_eq!(c.ca.secret.to_string(), "podcert-signer/podcert-signer-ca");
        assert_eq!(c.lease.name.to_string(), "podcert-signer/podcert-signer");
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (flags, setting) in [
            (&["--trust-domain", "Bad"][..], "trust-domain"),
            (&["--default-lifetime", "10m"], "default-lifetime"),
            (&["--refresh-fraction", "0"], "refresh-fraction"),
            (&["--ca-secret", "no-slash"], "ca-secret"),
            (&["--concurrency", "0"], "concurrency"),
            (&["--pending-warning-after", "0s"], "pending-warning-after"),
            (&["--lease-renew-interval", "10s"], "lease-renew-interval"),
            (&["--log-level", "a=b=c"], "log-level"),
            (&["--intermediate-validity", "36h"], "intermediate-validity"),
            (&["--ca-rotate-before", "8d"], "ca-rotate-before"),
            (&["--ca-validity", "150d"], "ca-validity"),
            (&["--time-scale", "0"], "time-scale"),
            (
                &["--spiffe-id-template", "spiffe://{trust_domain}/x"],
                "spiffe-id-template",
            ),
        ] {
            let e = args(flags).unwrap_err();
            assert_eq!(e.setting, setting, "{flags:?}");
            assert!(e.to_string().starts_with(&format!("--{setting}: ")));
        }
    }

    #[test]
    fn the_pkcs11_flags_are_checked_together_and_the_pin_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("module.so");
        std::fs::write(&module, b"").unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, "s3cret-pin\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let (module, pin, empty) = (
            module.to_str().unwrap(),
            pin.to_str().unwrap(),
            empty.to_str().unwrap(),
        );
        let missing = dir.path().join("missing");
        let missing = missing.to_str().unwrap();
        for (flags, setting) in [
            (&["--ca-pkcs11-pin-file", pin][..], "ca-pkcs11-pin-file"),
            (&["--ca-pkcs11-module", module], "ca-pkcs11-pin-file"),
            (
                &["--ca-pkcs11-module", missing, "--ca-pkcs11-pin-file", pin],
                "ca-pkcs11-module",
            ),
            (
                &[
                    "--ca-pkcs11-module",
                    module,
                    "--ca-pkcs11-pin-file",
                    missing,
                ],
                "ca-pkcs11-pin-file",
            ),
            (
                &["--ca-pkcs11-module", module, "--ca-pkcs11-pin-file", empty],
                "ca-pkcs11-pin-file",
            ),
            (
                &[
                    "--ca-pkcs11-module",
                    module,
                    "--ca-pkcs11-pin-file",
                    pin,
                    "--ca-pkcs11-token-label",
                    "a-token-label-longer-than-32-bytes",
                ],
                "ca-pkcs11-token-label",
            ),
        ] {
            let e = args(flags).unwrap_err();
            assert_eq!(e.setting, setting, "{flags:?}: {e}");
        }
        let c = args(&["--ca-pkcs11-module", module, "--ca-pkcs11-pin-file", pin]).unwrap();
        let token = c.ca.pkcs11.as_ref().expect("a token is configured");
        assert_eq!(token.token_label, "podcert-signer");
        assert_eq!(token.key_label, "podcert-signer-root");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(args(&[]).unwrap().ca.pkcs11.is_none());
    }

    #[test]
    fn signer_names_follow_the_api_rules() {
        for bad in [
            "spiffe",
            "example/spiffe",
            "kubernetes.io/spiffe",
            "x.kubernetes.io/a",
            "example.com/",
            "Example.com/a",
            "example.com/a b",
            // Accepted by this signer once, refused by kube-apiserver's ValidateSignerName.
            "a.example/x/y",
            "Example.com/X_y",
            "podcert.example.org/a/b-c_d.e",
        ] {
            assert_eq!(
                validate_signer_name(bad).unwrap_err().setting,
                "signer-name",
                "{bad}"
            );
        }
        for good in ["example.com/spiffe", "podcert.example.org/a.b-c"] {
            validate_signer_name(good).unwrap();
        }
    }

    #[test]
    fn the_trust_bundle_suffix_must_make_a_name_the_api_server_accepts() {
        for bad in ["-ca", "ca-", "CA", "c_a", ""] {
            let flag = format!("--trust-bundle-suffix={bad}");
            let e = args(&[flag.as_str()]).unwrap_err();
            assert_eq!(e.setting, "trust-bundle-suffix", "{bad:?}");
        }
        assert_eq!(
            args(&["--trust-bundle-suffix", "roots.v2"])
                .unwrap()
                .ca
                .trust_bundle_name,
            "example.com:spiffe:roots.v2"
        );
    }

    #[test]
    fn unparseable_flags_are_refused_by_clap_naming_the_flag() {
        let e = Args::try_parse_from([
            "podcert-signer",
            "--signer-name",
            "a.b/c",
            "--allowed-key-types",
            "RSA2048",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--allowed-key-types"), "{e}");
        let e = Args::try_parse_from([
            "podcert-signer",
            "--signer-name",
            "a.b/c",
            "--default-lifetime",
            "soon",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--default-lifetime"), "{e}");
    }
}
