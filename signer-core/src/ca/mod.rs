//! A CA that can sign: loaded from PEM and checked, or made by [`issue`].
//!
//! Our CA has two tiers. The *root* (generated, or brought by the operator) lives as PEM in a
//! `kubernetes.io/tls` Secret: `tls.crt` (the root, or an operator's CA certificate optionally
//! followed by its intermediates), `tls.key`, and optionally `ca.crt` (the root(s) when
//! `tls.crt` is not itself a root — what cert-manager writes). The root signs only *signing
//! intermediates* ([`Ca::sign_intermediate`]), made in memory, which sign the leaves. A [`Ca`]
//! is either tier: [`Ca::from_pem`] is the one way to load a root, and it refuses anything that
//! could not sign valid chains (a key that does not match, a certificate that is not a CA, a
//! broken chain, no root). The chain we issue is the leaf plus every certificate between it
//! and the root; the roots go only into the trust bundle.

mod issue;
mod key;
mod load;
mod profile;
mod upstream;

pub use key::{CaKey, DeviceKey, KeyDevice};
pub use load::{CertSummary, summarize};
pub use profile::CaProfile;
pub use upstream::{Requested, UpstreamAnswerError};

use std::fmt;
use std::time::SystemTime;

use rcgen::Issuer;

use crate::time::from_unix_seconds;

/// Key types for a generated CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaKeyType {
    #[default]
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl CaKeyType {
    pub const ALL: [CaKeyType; 3] = [
        CaKeyType::EcdsaP256,
        CaKeyType::EcdsaP384,
        CaKeyType::Ed25519,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CaKeyType::EcdsaP256 => "ECDSAP256",
            CaKeyType::EcdsaP384 => "ECDSAP384",
            CaKeyType::Ed25519 => "ED25519",
        }
    }

    pub(crate) fn algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            CaKeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            CaKeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            CaKeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

impl fmt::Display for CaKeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for CaKeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CaKeyType::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown CA key type {s:?}; expected one of ECDSAP256, ECDSAP384, ED25519")
            })
    }
}

/// Why CA material cannot be used. The message names the Secret key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaError {
    #[error("tls.crt: {0}")]
    Certificate(String),
    #[error("tls.key: {0}")]
    Key(String),
    #[error("ca.crt: {0}")]
    Roots(String),
    #[error("generating a CA failed: {0}")]
    Generate(String),
    /// The key is held by a device (see [`KeyDevice`]), which is at fault.
    #[error("the CA key's device: {0}")]
    Device(String),
}

/// CA material as PEM text, the form in which it is stored (the keys of a
/// `kubernetes.io/tls` Secret). Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct CaPem {
    /// `tls.crt`: the signing certificate, optionally followed by intermediates.
    pub cert_pem: String,
    /// `tls.key`.
    pub key_pem: String,
    /// `ca.crt`: the root(s), when given.
    pub roots_pem: Option<String>,
}

impl fmt::Debug for CaPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaPem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .field("roots_pem", &self.roots_pem)
            .finish()
    }
}

impl CaPem {
    /// Loads and checks the CA (see [`Ca::from_pem`]).
    pub fn load(&self) -> Result<Ca, CaError> {
        Ca::from_pem(&self.cert_pem, &self.key_pem, self.roots_pem.as_deref())
    }
}

/// A loaded, checked CA that can sign leaves or (a root) signing intermediates.
pub struct Ca {
    issuer: Issuer<'static, CaKey>,
    /// PEM of the certificates that follow a certificate this CA signs, in every chain: the
    /// signing certificate when it is not a root, then its own intermediates (empty for a
    /// root).
    intermediates_pem: String,
    /// PEM of the root(s): the trust bundle.
    trust_bundle_pem: String,
    not_before: i64,
    not_after: i64,
    subject: String,
    /// Whether every path-length constraint above allows one more CA below this one.
    room_for_intermediate: bool,
    /// Whether a certificate of its path, up to the root, carries name constraints.
    name_constrained: bool,
    /// The signing certificate, as every leaf's self-check needs it.
    signing: crate::self_check::SigningCert,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.subject)
            .field("not_after", &self.not_after)
            .field("intermediates", &!self.intermediates_pem.is_empty())
            .field("room_for_intermediate", &self.room_for_intermediate)
            .field("name_constrained", &self.name_constrained)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Whether this CA may sign a signing intermediate: every path-length constraint from it
    /// up to its root leaves room for one more CA. Our own roots do; an operator's CA with
    /// `pathlen:0` (or a root made before two tiers) does not, and signs leaves itself.
    pub fn has_room_for_intermediate(&self) -> bool {
        self.room_for_intermediate
    }

    /// Whether a certificate of its path, up to its root, carries name constraints (which
    /// rustls-webpki refuses: see [`CaProfile::name_constraints`]).
    pub fn is_name_constrained(&self) -> bool {
        self.name_constrained
    }

    /// PEM of the root certificate(s), for the ClusterTrustBundle.
    pub fn trust_bundle_pem(&self) -> &str {
        &self.trust_bundle_pem
    }

    /// PEM of the intermediates that follow every leaf.
    pub fn intermediates_pem(&self) -> &str {
        &self.intermediates_pem
    }

    pub fn not_after(&self) -> SystemTime {
        from_unix_seconds(self.not_after)
    }

    /// notAfter as a Unix second.
    pub fn not_after_unix(&self) -> i64 {
        self.not_after
    }

    pub(crate) fn not_before_unix(&self) -> i64 {
        self.not_before
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The signing certificate's key, subject and validity, for the self-check.
    pub(crate) fn signing_cert(&self) -> &crate::self_check::SigningCert {
        &self.signing
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, CaKey> {
        &self.issuer
    }
}
#[cfg(test)]
mod tests;
