//! The files the kubelet writes, loaded and re-loaded when they rotate.
//!
//! A `podCertificate` projected source with `credentialBundlePath` yields one PEM file: the
//! PKCS#8 `PRIVATE KEY`, then the chain (leaf first). A `clusterTrustBundle` source yields the
//! trust bundle PEM. The kubelet replaces both atomically (a symlink swap), so a change of the
//! file's inode, size or mtime means new contents: [`CredentialFiles::current`] checks that on
//! every call and re-reads only then.
//!
//! The trust bundle verifies peers of our own trust domain; each federated trust domain has
//! a bundle file of its own ([`CredentialFiles::with_federated`], a `clusterTrustBundle`
//! projection selecting `podcert-signer/trust-domain: <domain>`), so a peer is verified
//! against the roots of the trust domain its SPIFFE ID names and no other.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{Error, spiffe_id};

/// One consistent set: our key and chain, our SPIFFE ID, the roots we trust by trust domain.
#[derive(Debug)]
pub struct Credentials {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Trust domain → its roots: ours, and each federated domain's.
    pub bundles: BTreeMap<String, Vec<CertificateDer<'static>>>,
    pub spiffe_id: String,
}

/// (inode, size, mtime seconds, mtime nanoseconds): changes when the kubelet swaps the file.
type Stamp = (u64, u64, i64, i64);

/// What the cache holds: the stamps of every file and the credentials read from them.
type Cached = (Vec<Stamp>, Arc<Credentials>);

fn stamp(path: &Path) -> Result<Stamp, Error> {
    let m =
        std::fs::metadata(path).map_err(|e| Error::Files(format!("{}: {e}", path.display())))?;
    Ok((m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

#[derive(Debug)]
pub struct CredentialFiles {
    credential_bundle: PathBuf,
    trust_bundle: PathBuf,
    /// Trust domain → its bundle file.
    federated: Vec<(String, PathBuf)>,
    cached: Mutex<Option<Cached>>,
}

impl CredentialFiles {
    pub fn new(credential_bundle: impl Into<PathBuf>, trust_bundle: impl Into<PathBuf>) -> Self {
        CredentialFiles {
            credential_bundle: credential_bundle.into(),
            trust_bundle: trust_bundle.into(),
            federated: Vec::new(),
            cached: Mutex::new(None),
        }
    }

    /// Also trusts `trust_domain`'s peers, verified against the roots in `bundle` only.
    pub fn with_federated(mut self, trust_domain: &str, bundle: impl Into<PathBuf>) -> Self {
        self.federated
            .push((trust_domain.to_owned(), bundle.into()));
        self
    }

    /// The current credentials, re-read if either file changed since the last call.
    pub fn current(&self) -> Result<Arc<Credentials>, Error> {
        let stamps = [&self.credential_bundle, &self.trust_bundle]
            .into_iter()
            .chain(self.federated.iter().map(|(_, p)| p))
            .map(|p| stamp(p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut cached = self.cached.lock().expect("credentials lock");
        if let Some((s, c)) = cached.as_ref()
            && *s == stamps
        {
            return Ok(c.clone());
        }
        let creds = Arc::new(self.load()?);
        *cached = Some((stamps, creds.clone()));
        Ok(creds)
    }

    fn load(&self) -> Result<Credentials, Error> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| Error::Files(format!("{}: {e}", p.display())))
        };
        let bundle = pem::parse_many(read(&self.credential_bundle)?)
            .map_err(|e| Error::Files(e.to_string()))?;
        let mut key = None;
        let mut chain = Vec::new();
        for block in bundle {
            match block.tag() {
                "PRIVATE KEY" => {
                    key = Some(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                        block.into_contents(),
                    )))
                }
                "CERTIFICATE" => chain.push(CertificateDer::from(block.into_contents())),
                other => {
                    return Err(Error::Files(format!(
                        "unexpected PEM block {other:?} in the credential bundle"
                    )));
                }
            }
        }
        let key =
            key.ok_or_else(|| Error::Files("the credential bundle has no PRIVATE KEY".into()))?;
        let leaf = chain
            .first()
            .ok_or_else(|| Error::Files("the credential bundle has no certificate".into()))?;
        let spiffe_id = spiffe_id(leaf)?;
        let roots = |p: &Path| -> Result<Vec<CertificateDer<'static>>, Error> {
            let roots = pem::parse_many(read(p)?)
                .map_err(|e| Error::Files(e.to_string()))?
                .into_iter()
                .filter(|b| b.tag() == "CERTIFICATE")
                .map(|b| CertificateDer::from(b.into_contents()))
                .collect::<Vec<_>>();
            if roots.is_empty() {
                return Err(Error::Files(format!(
                    "the trust bundle {} has no certificate",
                    p.display()
                )));
            }
            Ok(roots)
        };
        let own = spiffe_tls::svid_id(leaf)
            .map_err(|e| Error::Identity(e.to_string()))?
            .trust_domain()
            .to_owned();
        let mut bundles = BTreeMap::from([(own, roots(&self.trust_bundle)?)]);
        for (domain, path) in &self.federated {
            if bundles.insert(domain.clone(), roots(path)?).is_some() {
                return Err(Error::Files(format!(
                    "trust domain {domain:?} has two bundles"
                )));
            }
        }
        Ok(Credentials {
            chain,
            key,
            bundles,
            spiffe_id,
        })
    }
}
