//! The upstream authority's settings: who certifies the signing intermediates instead of a
//! root of ours — a cert-manager issuer (`--upstream-issuer*`) or a Vault/OpenBao PKI mount
//! (`--upstream-vault-*`) — and the roots an answer may chain to. Turned into the
//! [`UpstreamConfig`] of the CA's config; a flag of the other authority, a missing one or a
//! bad value is an error naming it. Credentials are named by file, never given as values.

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use signer_core::{ConfigError, names};

use super::err;
use crate::config::{IssuerRef, UpstreamAuthority, UpstreamConfig, VaultAuth, VaultConfig};

/// Where a pod's ServiceAccount token is mounted.
const SERVICE_ACCOUNT_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

/// The upstream authority that certifies signing intermediates, if any.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Upstream authority")]
pub struct UpstreamArgs {
    /// Who certifies the signing intermediates: `none` (our own root, kept in the CA Secret),
    /// `cert-manager` (a CertificateRequest to --upstream-issuer) or `vault` (the
    /// sign-intermediate endpoint of a Vault or OpenBao PKI mount); the upstream's root is
    /// then the trust anchor.
    #[arg(long, env = "PODCERT_UPSTREAM_AUTHORITY", default_value = "none", value_parser = ["none", "cert-manager", "vault"])]
    pub upstream_authority: String,

    /// The cert-manager issuer that certifies signing intermediates (its `issuerRef.name`).
    #[arg(long, env = "PODCERT_UPSTREAM_ISSUER")]
    pub upstream_issuer: Option<String>,

    /// `Issuer` (in the signer's namespace) or `ClusterIssuer`.
    #[arg(long, env = "PODCERT_UPSTREAM_ISSUER_KIND", default_value = "Issuer", value_parser = ["Issuer", "ClusterIssuer"])]
    pub upstream_issuer_kind: String,

    /// The issuer's API group: cert-manager.io, or an external issuer's.
    #[arg(
        long,
        env = "PODCERT_UPSTREAM_ISSUER_GROUP",
        default_value = "cert-manager.io"
    )]
    pub upstream_issuer_group: String,

    /// Vault's address, `https://host:port` (TLS is always verified).
    #[arg(long, env = "PODCERT_UPSTREAM_VAULT_ADDRESS")]
    pub upstream_vault_address: Option<String>,

    /// PEM file of the CA certificates Vault's TLS certificate is checked against; unset: the
    /// system's roots.
    #[arg(long, env = "PODCERT_UPSTREAM_VAULT_CA_FILE")]
    pub upstream_vault_ca_file: Option<PathBuf>,

    /// Path of the PKI secrets engine whose default issuer signs the intermediates.
    #[arg(long, env = "PODCERT_UPSTREAM_VAULT_PKI_MOUNT", default_value = "pki")]
    pub upstream_vault_pki_mount: String,

    /// Vault Enterprise or OpenBao namespace (`X-Vault-Namespace`), if any.
    #[arg(long, env = "PODCERT_UPSTREAM_VAULT_NAMESPACE")]
    pub upstream_vault_namespace: Option<String>,

    /// `kubernetes` (log in with the ServiceAccount token and --upstream-vault-role) or
    /// `token` (a Vault token in --upstream-vault-token-file).
    #[arg(long, env = "PODCERT_UPSTREAM_VAULT_AUTH", default_value = "kubernetes", value_parser = ["kubernetes", "token"])]
    pub upstream_vault_auth: String,

    /// The Kubernetes auth role to log in as.
    #[arg(long, env = "PODCERT_UPSTREAM_VAULT_ROLE")]
    pub upstream_vault_role: Option<String>,

    /// Path of the Kubernetes auth method.
    #[arg(
        long,
        env = "PODCERT_UPSTREAM_VAULT_AUTH_MOUNT",
        default_value = "kubernetes"
    )]
    pub upstream_vault_auth_mount: String,

    /// The ServiceAccount token Kubernetes auth presents (read at each login).
    #[arg(long, env = "PODCERT_UPSTREAM_VAULT_JWT_FILE", default_value = SERVICE_ACCOUNT_TOKEN)]
    pub upstream_vault_jwt_file: PathBuf,

    /// File holding a Vault token (read at each use; kept fresh by Vault Agent, say).
    #[arg(long, env = "PODCERT_UPSTREAM_VAULT_TOKEN_FILE")]
    pub upstream_vault_token_file: Option<PathBuf>,

    /// PEM file of the only roots an upstream's answer may chain to (and the bundle may
    /// publish); unset: the roots the upstream names. Read at start.
    #[arg(long, env = "PODCERT_UPSTREAM_TRUST_ANCHORS")]
    pub upstream_trust_anchors: Option<PathBuf>,
}

impl UpstreamArgs {
    /// The upstream, if one is configured; CertificateRequests go to `namespace`.
    pub fn config(&self, namespace: &str) -> Result<Option<UpstreamConfig>, ConfigError> {
        // Each optional flag, whether it is set, and the authorities it belongs to.
        let flags = [
            (
                "upstream-issuer",
                self.upstream_issuer.is_some(),
                "cert-manager",
            ),
            (
                "upstream-vault-address",
                self.upstream_vault_address.is_some(),
                "vault",
            ),
            (
                "upstream-vault-ca-file",
                self.upstream_vault_ca_file.is_some(),
                "vault",
            ),
            (
                "upstream-vault-namespace",
                self.upstream_vault_namespace.is_some(),
                "vault",
            ),
            (
                "upstream-vault-role",
                self.upstream_vault_role.is_some(),
                "vault",
            ),
            (
                "upstream-vault-token-file",
                self.upstream_vault_token_file.is_some(),
                "vault",
            ),
            (
                "upstream-trust-anchors",
                self.upstream_trust_anchors.is_some(),
                "cert-manager or vault",
            ),
        ];
        let authority = self.upstream_authority.as_str();
        if let Some((setting, _, only)) = flags
            .iter()
            .find(|(_, set, only)| *set && !only.split(" or ").any(|a| a == authority))
        {
            return Err(err(
                setting,
                format!("is only used with --upstream-authority {only} (it is {authority})"),
            ));
        }
        if authority == "none" {
            return Ok(None);
        }
        let authority = match authority {
            "vault" => UpstreamAuthority::Vault(self.vault()?),
            _ => self.cert_manager(namespace)?,
        };
        Ok(Some(UpstreamConfig {
            authority,
            trust_anchors: self.trust_anchors()?,
        }))
    }

    fn cert_manager(&self, namespace: &str) -> Result<UpstreamAuthority, ConfigError> {
        let Some(name) = self.upstream_issuer.as_deref() else {
            return Err(err(
                "upstream-issuer",
                "is required with --upstream-authority cert-manager (the Issuer or ClusterIssuer that certifies signing intermediates)",
            ));
        };
        if !names::is_dns1123_subdomain(name) {
            return Err(err(
                "upstream-issuer",
                format!("{name:?} is not a valid object name (a DNS-1123 subdomain)"),
            ));
        }
        if !names::is_dns1123_subdomain(&self.upstream_issuer_group) {
            return Err(err(
                "upstream-issuer-group",
                format!(
                    "{:?} is not an API group (a DNS subdomain)",
                    self.upstream_issuer_group
                ),
            ));
        }
        Ok(UpstreamAuthority::CertManager {
            namespace: namespace.to_owned(),
            issuer: IssuerRef {
                name: name.to_owned(),
                kind: self.upstream_issuer_kind.clone(),
                group: self.upstream_issuer_group.clone(),
            },
        })
    }

    fn vault(&self) -> Result<VaultConfig, ConfigError> {
        let flag = "upstream-vault-address";
        let Some(address) = self.upstream_vault_address.as_deref() else {
            return Err(err(
                flag,
                "is required with --upstream-authority vault (https://host:port of Vault or OpenBao)",
            ));
        };
        let address: http::Uri = address
            .parse()
            .map_err(|e| err(flag, format!("{address:?} is not a URL: {e}")))?;
        if address.scheme_str() != Some("https") || address.host().is_none() {
            return Err(err(
                flag,
                format!(
                    "{address} is not an https:// URL with a host (the signer verifies Vault's TLS)"
                ),
            ));
        }
        if address.query().is_some() || !matches!(address.path(), "" | "/") {
            return Err(err(
                flag,
                format!("{address}: give the server's address only, without a path or query"),
            ));
        }
        let ca = self
            .upstream_vault_ca_file
            .as_deref()
            .map(|path| certificates("upstream-vault-ca-file", path))
            .transpose()?;
        for (setting, path) in [
            ("upstream-vault-pki-mount", &self.upstream_vault_pki_mount),
            ("upstream-vault-auth-mount", &self.upstream_vault_auth_mount),
        ] {
            check_mount(setting, path)?;
        }
        if let Some(ns) = &self.upstream_vault_namespace {
            check_mount("upstream-vault-namespace", ns)?;
        }
        let auth = if self.upstream_vault_auth == "token" {
            if self.upstream_vault_role.is_some() {
                return Err(err(
                    "upstream-vault-role",
                    "is only used with --upstream-vault-auth kubernetes",
                ));
            }
            let Some(file) = self.upstream_vault_token_file.clone() else {
                return Err(err(
                    "upstream-vault-token-file",
                    "is required with --upstream-vault-auth token",
                ));
            };
            VaultAuth::Token { file }
        } else {
            if self.upstream_vault_token_file.is_some() {
                return Err(err(
                    "upstream-vault-token-file",
                    "is only used with --upstream-vault-auth token",
                ));
            }
            let Some(role) = self.upstream_vault_role.clone().filter(|r| !r.is_empty()) else {
                return Err(err(
                    "upstream-vault-role",
                    "is required with --upstream-vault-auth kubernetes (the Kubernetes auth role the signer logs in as)",
                ));
            };
            VaultAuth::Kubernetes {
                mount: self.upstream_vault_auth_mount.clone(),
                role,
                jwt_file: self.upstream_vault_jwt_file.clone(),
            }
        };
        Ok(VaultConfig {
            address,
            ca,
            pki_mount: self.upstream_vault_pki_mount.clone(),
            namespace: self.upstream_vault_namespace.clone(),
            auth,
        })
    }

    /// The pinned roots, read and checked: CA certificates, at least one.
    fn trust_anchors(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.upstream_trust_anchors else {
            return Ok(None);
        };
        let flag = "upstream-trust-anchors";
        let pem = read(flag, path)?;
        let certs = signer_core::ca::summarize(&pem)
            .map_err(|e| err(flag, format!("{}: {}", path.display(), e)))?;
        if certs.is_empty() {
            return Err(err(
                flag,
                format!("{} holds no certificate", path.display()),
            ));
        }
        Ok(Some(pem))
    }
}

fn read(flag: &'static str, path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| {
        err(
            flag,
            format!("cannot read {}: {}", path.display(), e.kind()),
        )
    })
}

/// The PEM certificates of `path`, at least one.
fn certificates(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(flag, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(err(
            flag,
            format!("{} holds no CERTIFICATE block", path.display()),
        ));
    }
    Ok(certs)
}

/// A Vault path: segments of letters, digits, `-`, `_` and `.`, joined by `/`.
fn check_mount(flag: &'static str, path: &str) -> Result<(), ConfigError> {
    let ok = !path.is_empty()
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if ok {
        Ok(())
    } else {
        Err(err(
            flag,
            format!(
                "{path:?} is not a Vault path (segments of letters, digits, '-', '_' and '.', joined by '/')"
            ),
        ))
    }
}
