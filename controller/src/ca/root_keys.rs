//! Where root keys are kept: in the CA Secret beside their certificate (`tls.key`, the
//! default), or in a PKCS#11 token ([`super::pkcs11`]), where they are generated and from
//! which they never leave.
//!
//! [`RootKeys`] is the one place that knows: it makes new roots ([`RootKeys::generate`]; on a
//! fresh install [`RootKeys::first_root`], which adopts a key made beforehand in the token)
//! and turns what the Secret holds into a [`Root`] ([`RootKeys::load`]). With a token, the Secret
//! holds the root's certificate and no key, and the key is the one under the configured label
//! whose public key is the certificate's. A root whose key is in the Secret still loads with
//! a token configured — that is how an install moves its root into the token: the rotation
//! replaces such a root we manage by one generated in the token ([`RootKeys::wants_rotation`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use signer_core::{Ca, CaError, CaPem, CaProfile, KeyDevice};

use super::pkcs11::{Token, TokenKey};

/// Why the CA Secret holds no usable CA. The message names the key at fault and never quotes
/// key material; the kind says whether reading the same Secret again may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// What the Secret holds is wrong, and stays wrong until the Secret changes.
    #[error("{0}")]
    Content(String),
    /// The root key is to be found in the PKCS#11 token, which could not be read or does not
    /// hold it as this process sees it: another replica may just have written it, or the
    /// token may be briefly unreachable.
    #[error("{0}")]
    Token(String),
}

/// A root as stored and as loaded: its certificate (and the roots above it, for an
/// operator's CA), where its key is, and the CA it loads as.
#[derive(Debug, Clone)]
pub struct Root {
    /// `tls.crt` (or `next.crt`).
    pub cert_pem: String,
    /// `ca.crt`, when given.
    pub roots_pem: Option<String>,
    pub key: StoredKey,
    pub ca: Arc<Ca>,
}

/// Where a root's private key is.
#[derive(Clone)]
pub enum StoredKey {
    /// PEM in the Secret (`tls.key` or `next.key`), cleared when dropped.
    Secret(zeroize::Zeroizing<String>),
    /// In the PKCS#11 token; the Secret holds no key.
    Token(Arc<TokenKey>),
}

impl PartialEq for StoredKey {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (StoredKey::Secret(a), StoredKey::Secret(b)) => a == b,
            (StoredKey::Token(a), StoredKey::Token(b)) => a.public_key() == b.public_key(),
            _ => false,
        }
    }
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredKey::Secret(_) => f.write_str("Secret([redacted])"),
            StoredKey::Token(k) => f.debug_tuple("Token").field(k).finish(),
        }
    }
}

impl PartialEq for Root {
    fn eq(&self, other: &Self) -> bool {
        self.cert_pem == other.cert_pem
            && self.roots_pem == other.roots_pem
            && self.key == other.key
    }
}

impl Root {
    /// A new self-signed root of `profile` for `key`, which is in the token and signs it.
    fn in_token(
        profile: &CaProfile,
        key: Arc<TokenKey>,
        validity: Duration,
        now: SystemTime,
    ) -> Result<Self, CaError> {
        let ca = profile.root_for_device(key.clone(), validity, now)?;
        Ok(Root {
            cert_pem: ca.trust_bundle_pem().to_owned(),
            roots_pem: Some(ca.trust_bundle_pem().to_owned()),
            key: StoredKey::Token(key),
            ca: Arc::new(ca),
        })
    }

    /// A root whose key is PEM (a generated or an operator's CA): loaded and checked.
    pub fn load(pem: CaPem) -> Result<Self, CaError> {
        let ca = pem.load()?;
        Ok(Root {
            cert_pem: pem.cert_pem,
            roots_pem: pem.roots_pem,
            key: StoredKey::Secret(zeroize::Zeroizing::new(pem.key_pem)),
            ca: Arc::new(ca),
        })
    }
}

/// A fresh install's first root, and whether its key is new: made now by this process, so
/// that it may be destroyed if another replica's root is stored instead.
#[derive(Debug)]
pub struct FirstRoot {
    pub root: Root,
    pub new_key: bool,
}

/// Where this process keeps root keys.
#[derive(Debug, Clone)]
pub enum RootKeys {
    /// In the CA Secret.
    Secret,
    /// In this PKCS#11 token.
    Token(Arc<Token>),
}

impl RootKeys {
    /// A new self-signed root of `profile`, its key made where keys are kept.
    pub fn generate(
        &self,
        profile: &CaProfile,
        validity: Duration,
        now: SystemTime,
    ) -> Result<Root, CaError> {
        match self {
            RootKeys::Secret => Root::load(profile.root(validity, now)?),
            RootKeys::Token(token) => {
                let key = token
                    .generate(profile.key_type)
                    .map_err(|e| CaError::Device(e.to_string()))?;
                Root::in_token(profile, key.clone(), validity, now).inspect_err(|_| key.destroy())
            }
        }
    }

    /// The first root of a fresh install. With a token that already holds a key under the
    /// label (one made beforehand, e.g. in a cloud KMS), that key is adopted, whatever its
    /// curve, and the root certificate made for it; with none, a key is generated. More than
    /// one labelled key is refused: which one is meant is the operator's to say.
    pub fn first_root(
        &self,
        profile: &CaProfile,
        validity: Duration,
        now: SystemTime,
    ) -> Result<FirstRoot, CaError> {
        let RootKeys::Token(token) = self else {
            return Ok(FirstRoot {
                root: self.generate(profile, validity, now)?,
                new_key: true,
            });
        };
        let keys = token.keys().map_err(|e| CaError::Device(e.to_string()))?;
        match keys.as_slice() {
            [] => Ok(FirstRoot {
                root: self.generate(profile, validity, now)?,
                new_key: true,
            }),
            [key] => {
                let profile = CaProfile {
                    key_type: key.key_type(),
                    ..profile.clone()
                };
                Ok(FirstRoot {
                    root: Root::in_token(&profile, key.clone(), validity, now)?,
                    new_key: false,
                })
            }
            more => Err(CaError::Device(format!(
                "{} keys in {token} and no CA Secret: a fresh install adopts a key only when it is the one under the label; delete the others or name another with --ca-pkcs11-key-label",
                more.len()
            ))),
        }
    }

    /// The root stored as `cert_pem` (`roots_pem`) with `key_pem`, or — with no key in the
    /// Secret — with the token's key whose public key is the certificate's. `cert_name` and
    /// `key_name` are the Secret keys, for the error.
    pub fn load(
        &self,
        cert_pem: String,
        key_pem: Option<String>,
        roots_pem: Option<String>,
        (cert_name, key_name): (&str, &str),
    ) -> Result<Root, Unusable> {
        if let Some(key_pem) = key_pem {
            return Root::load(CaPem {
                cert_pem,
                key_pem,
                roots_pem,
            })
            .map_err(|e| Unusable::Content(e.to_string()));
        }
        let RootKeys::Token(token) = self else {
            return Err(Unusable::Content(format!(
                "it has no {key_name} (and no PKCS#11 token is configured to hold the key of {cert_name}: --ca-pkcs11-module)"
            )));
        };
        let found = match token_ca(token, &cert_pem, roots_pem.as_deref())? {
            // Looked for again after the module has read the token afresh, if this process
            // wrote to it: it may have missed a key another replica generated meanwhile
            // ([`Token::reload_if_written`]).
            None if token
                .reload_if_written()
                .map_err(|e| Unusable::Token(e.to_string()))? =>
            {
                tracing::info!(%token, "the root's key was not among the token's keys as this process saw them; read the token afresh");
                token_ca(token, &cert_pem, roots_pem.as_deref())?
            }
            found => found,
        };
        let Some((key, ca)) = found else {
            return Err(Unusable::Token(format!(
                "it has no {key_name}, and no key in {token} is the key of {cert_name}"
            )));
        };
        Ok(Root {
            cert_pem,
            roots_pem,
            key: StoredKey::Token(key),
            ca: Arc::new(ca),
        })
    }

    /// Destroys the key of `root`, a root whose key this process generated and that never got
    /// stored (another replica's won the race): a key in a token would otherwise be left
    /// there, unused, for good. A key in the Secret needs nothing: it was only ever in memory.
    /// Never call it for an adopted key, or one the stored CA uses.
    pub fn discard(&self, root: &Root) {
        if let StoredKey::Token(key) = &root.key {
            key.destroy();
        }
    }

    /// Whether a root we manage, holding its key as `key`, must be replaced because its key
    /// is not where keys are kept: a PEM key while a token is configured.
    pub fn wants_rotation(&self, key: &StoredKey) -> bool {
        matches!((self, key), (RootKeys::Token(_), StoredKey::Secret(_)))
    }
}

/// The token's key whose public key is `cert_pem`'s, with the CA it makes; None if no key is.
fn token_ca(
    token: &Arc<Token>,
    cert_pem: &str,
    roots_pem: Option<&str>,
) -> Result<Option<(Arc<TokenKey>, Ca)>, Unusable> {
    for key in token.keys().map_err(|e| Unusable::Token(e.to_string()))? {
        let device: Arc<dyn KeyDevice> = key.clone();
        match Ca::from_device(cert_pem, device, roots_pem) {
            Ok(ca) => return Ok(Some((key, ca))),
            Err(CaError::Device(_)) => {}
            // The certificate itself is at fault: no key will mend it.
            Err(e) => return Err(Unusable::Content(e.to_string())),
        }
    }
    Ok(None)
}
