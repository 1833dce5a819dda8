//! The validated configuration: what every part of the controller reads after start.
//!
//! [`crate::cli`] parses flags and checks them; what comes out is a [`Config`], and nothing
//! after start-up looks at a flag again. Each part takes only its own piece: the CA's life
//! [`CaConfig`] (with its schedule, [`CaLifecycle`], the token of root keys,
//! [`TokenConfig`], and the upstream authority, [`UpstreamConfig`]), the election [`LeaseConfig`], the
//! cluster connection [`ClusterConfig`], and federation: the bundle endpoint
//! [`BundleEndpointConfig`] and the trust domains to import, [`FederationFile`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cryptoki::types::AuthPin;
use signer_core::{CaProfile, IdentityPolicy, Policy, TrustDomain};

use signer_core::time::Clock;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub signer_name: String,
    /// Shared by every signer this process builds (one per CA it signs with).
    pub policy: Arc<Policy>,
    pub ca: CaConfig,
    pub concurrency: u16,
    /// A request waiting longer than this gets a `StillPending` Warning Event.
    pub pending_warning_after: Duration,
    /// The identity policy file, loaded (`--identity-policy`); None: everyone gets an SVID.
    pub identity_policy: Option<IdentityFile>,
    /// For `<svc>.<ns>.svc.<cluster-domain>`.
    pub cluster_domain: String,
    pub admin_addr: SocketAddr,
    /// `/metrics` over HTTPS for authorized callers (`--secure-metrics-addr`); None: on the
    /// admin port.
    pub secure_metrics: Option<SecureMetricsConfig>,
    /// The SPIFFE bundle endpoint (`--bundle-endpoint-addr`); None: not served.
    pub bundle_endpoint: Option<BundleEndpointConfig>,
    /// The foreign trust domains to import (`--federation-config`); None: none.
    pub federation: Option<FederationFile>,
    pub lease: LeaseConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
    /// The wall clock: the system's, or compressed for tests (see [`Clock`]).
    pub clock: Clock,
}

/// The HTTPS metrics server (`crate::runtime::secure_metrics`), as configured and checked at
/// start.
#[derive(Debug, Clone)]
pub struct SecureMetricsConfig {
    pub addr: SocketAddr,
    pub tls: Arc<rustls::ServerConfig>,
}

/// The SPIFFE bundle endpoint (`crate::federation::endpoint`), as configured and checked at
/// start.
#[derive(Debug, Clone)]
pub struct BundleEndpointConfig {
    pub addr: SocketAddr,
    /// `spiffe_refresh_hint` of the served bundle.
    pub refresh_hint: Duration,
    pub tls: EndpointTls,
}

/// What the bundle endpoint presents.
#[derive(Debug, Clone)]
pub enum EndpointTls {
    /// `https_web`: the operator's certificate pair, read again when the files change.
    Files {
        cert: PathBuf,
        key: PathBuf,
        /// The pair as read at start (a bad one is a flag error).
        initial: Arc<rustls::ServerConfig>,
    },
    /// `https_spiffe`: the signer's own SVID for `identity`, kept by the leader in `secret`
    /// (`crate::federation::svid`).
    Svid {
        secret: ObjectName,
        identity: EndpointIdentity,
    },
}

/// Who the `https_spiffe` endpoint is: the signer's namespace and service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointIdentity {
    pub namespace: String,
    pub service_account: String,
}

/// One foreign trust domain to import, checked (`crate::federation::import`).
#[derive(Debug, Clone)]
pub struct Peer {
    pub trust_domain: signer_core::TrustDomain,
    /// `https://host[:port]/path`.
    pub url: http::Uri,
    pub profile: Profile,
    /// The ClusterTrustBundle its bundle is published in.
    pub bundle_name: String,
}

/// How a bundle endpoint is authenticated (SPIFFE Federation §5.2).
#[derive(Debug, Clone)]
pub enum Profile {
    /// Web PKI: the endpoint's certificate must be valid for the URL's host, issued by `roots`
    /// (the system's roots when None).
    HttpsWeb {
        roots: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
    },
    /// The endpoint presents an X.509-SVID of the foreign domain with this SPIFFE ID, checked
    /// against that domain's last good bundle — at first, `bootstrap`.
    HttpsSpiffe {
        endpoint_id: signer_core::SpiffeId,
        bootstrap: signer_core::bundle::SpiffeBundle,
    },
}

/// The federation file (`--federation-config`), loaded and checked by
/// `crate::federation::peers::load`.
#[derive(Debug, Clone)]
pub struct FederationFile {
    pub path: PathBuf,
    pub peers: Vec<Peer>,
}

/// The CA Secret, how the CAs we make look and live, and the trust bundle.
#[derive(Debug, Clone)]
pub struct CaConfig {
    pub secret: ObjectName,
    /// Key type, trust domain and name constraint of the roots and intermediates we make.
    pub profile: CaProfile,
    pub lifecycle: CaLifecycle,
    /// The PKCS#11 token that holds root keys; None: they are kept in the CA Secret.
    pub pkcs11: Option<TokenConfig>,
    pub trust_bundle_name: String,
    pub trust_bundle_resync: Duration,
    /// Who certifies the signing intermediates: None, our own root (the CA Secret); else the
    /// upstream authority (`--upstream-authority`), whose roots are the trust anchors.
    pub upstream: Option<UpstreamConfig>,
}

/// The upstream authority that certifies signing intermediates ([`crate::ca::upstream`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub authority: UpstreamAuthority,
    /// `--upstream-trust-anchors`: PEM of the only roots an answer may chain to; None: the
    /// roots the upstream names.
    pub trust_anchors: Option<String>,
}

/// Who the upstream is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAuthority {
    /// A cert-manager Issuer or ClusterIssuer, asked through CertificateRequests filed in
    /// `namespace` (the signer's own).
    CertManager {
        namespace: String,
        issuer: IssuerRef,
    },
    /// A Vault (or OpenBao) PKI mount's `sign-intermediate`.
    Vault(VaultConfig),
}

/// Where Vault is and how the signer logs in (`--upstream-vault-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultConfig {
    /// The server's base URL, `https://`.
    pub address: http::Uri,
    /// `--upstream-vault-ca-file`: the roots its TLS certificate is checked against (DER);
    /// None: the system's roots.
    pub ca: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
    /// The PKI secrets engine's path, `pki` by default.
    pub pki_mount: String,
    /// `X-Vault-Namespace` (Vault Enterprise and OpenBao namespaces), when set.
    pub namespace: Option<String>,
    pub auth: VaultAuth,
}

/// How the signer gets a Vault token. Files are read at each use, so a rotated credential
/// is picked up; their contents are never logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuth {
    /// Kubernetes auth: the ServiceAccount token in `jwt_file` exchanged for a Vault token
    /// of `role` at `auth/<mount>/login`.
    Kubernetes {
        mount: String,
        role: String,
        jwt_file: PathBuf,
    },
    /// A Vault token kept in `file` (by Vault Agent, say).
    Token { file: PathBuf },
}

/// A cert-manager `issuerRef`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerRef {
    pub name: String,
    /// `Issuer` (in the signer's namespace) or `ClusterIssuer`.
    pub kind: String,
    /// `cert-manager.io` for cert-manager's own issuers; an external issuer's group otherwise.
    pub group: String,
}

/// When CAs are made, activated and retired (see [`crate::ca::rotation`]). Checked at start
/// so that each step has room: `root_validity > root_rotate_before > preview_delay +
/// propagation_delay + intermediate_validity`, and `intermediate_validity ≥ 2 × the longest leaf lifetime`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaLifecycle {
    /// Validity of a root we generate.
    pub root_validity: Duration,
    /// A root we generated is replaced once it has less than this left.
    pub root_rotate_before: Duration,
    /// How long a new root is published in the preview bundle before it joins the live one.
    pub preview_delay: Duration,
    /// How long a new root is published beside the old one before it signs anything.
    pub propagation_delay: Duration,
    /// Validity of a signing intermediate; a new one is made half-way through.
    pub intermediate_validity: Duration,
    /// How long a root stays in the bundle after it stopped signing: the longest leaf
    /// lifetime plus the longest a deposed leader's term may still sign (its grace).
    pub retain_retired_roots: Duration,
}

/// The PKCS#11 token that holds root keys, and how to log in to it (`--ca-pkcs11-*`; see
/// [`crate::ca::pkcs11`]).
#[derive(Clone)]
pub struct TokenConfig {
    /// The PKCS#11 module (shared library) path.
    pub module: PathBuf,
    /// The label of the token that holds the root keys.
    pub token_label: String,
    /// The label of root keys in it.
    pub key_label: String,
    /// The token user's PIN.
    pub pin: Pin,
}

impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("key_label", &self.key_label)
            .field("pin", &"[redacted]")
            .finish()
    }
}

/// A token user's PIN; never shown.
#[derive(Clone)]
pub struct Pin(Arc<AuthPin>);

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin([redacted])")
    }
}

impl Pin {
    pub fn new(pin: String) -> Self {
        Pin(Arc::new(AuthPin::from(pin)))
    }

    /// The PIN, for the token's login only.
    pub fn secret(&self) -> &AuthPin {
        &self.0
    }
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

/// The identity policy file (`--identity-policy`), read and validated at start, and what it is
/// validated against when [`crate::identity_policy::follow`] reads it again.
#[derive(Debug, Clone)]
pub struct IdentityFile {
    pub path: PathBuf,
    trust_domain: TrustDomain,
    max_lifetime: Duration,
    /// The policy as loaded at start, and the text it came from.
    pub initial: Arc<IdentityPolicy>,
    pub initial_text: String,
}

impl IdentityFile {
    /// Reads and validates `path`; the error names the file and the line.
    pub fn load(
        path: &Path,
        trust_domain: &TrustDomain,
        max_lifetime: Duration,
    ) -> Result<Self, String> {
        let initial_text = read(path)?;
        let initial = parse(path, &initial_text, trust_domain, max_lifetime)?;
        Ok(IdentityFile {
            path: path.to_owned(),
            trust_domain: trust_domain.clone(),
            max_lifetime,
            initial: Arc::new(initial),
            initial_text,
        })
    }

    /// The file's text now.
    pub fn read(&self) -> Result<String, String> {
        read(&self.path)
    }

    /// `text` as a policy; the error names the file and the line.
    pub fn parse(&self, text: &str) -> Result<IdentityPolicy, String> {
        parse(&self.path, text, &self.trust_domain, self.max_lifetime)
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse(
    path: &Path,
    text: &str,
    trust_domain: &TrustDomain,
    max_lifetime: Duration,
) -> Result<IdentityPolicy, String> {
    IdentityPolicy::parse(text, trust_domain, max_lifetime)
        .map_err(|e| format!("{} {e}", path.display()))
}
