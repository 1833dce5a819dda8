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
//!
//! Or all of it is a SPIFFE credential folder ([`CredentialFiles::folder`], the SPIFFE
//! Filesystem Delivery draft, spiffe/spiffe#376): `credential-bundle.pem` and one
//! `<trust-domain>.spiffe-trust-bundle.pem` per trust domain, the folder named by
//! `SPIFFE_CREDENTIAL_FOLDER` unless configured.

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

/// What the cache holds: every file with its stamp, and the credentials read from them.
type Cached = (Vec<(PathBuf, Stamp)>, Arc<Credentials>);

fn stamp(path: &Path) -> Result<Stamp, Error> {
    let m =
        std::fs::metadata(path).map_err(|e| Error::Files(format!("{}: {e}", path.display())))?;
    Ok((m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
}

/// Where the files are: named one by one, or a SPIFFE credential folder.
#[derive(Debug)]
enum Source {
    Files {
        credential_bundle: PathBuf,
        /// Our own trust domain's bundle.
        trust_bundle: PathBuf,
    },
    Folder(PathBuf),
}

/// The files of one read: the credential bundle, our own domain's bundle when it is named
/// rather than found, and each trust domain's bundle found by name.
struct Layout {
    credential_bundle: PathBuf,
    own: Option<PathBuf>,
    bundles: Vec<(String, PathBuf)>,
}

/// The credential bundle's name in a credential folder, and the name the draft's latest
/// revision gives it (read when the first is absent).
pub const CREDENTIAL_BUNDLE: [&str; 2] =
    ["credential-bundle.pem", "credential-bundle.private-key.pem"];
/// A trust bundle's name in a credential folder is `<trust-domain>` and this suffix (or
/// `.trust-bundle.pem`, the draft's first revision).
pub const TRUST_BUNDLE_SUFFIXES: [&str; 2] = [".spiffe-trust-bundle.pem", ".trust-bundle.pem"];
/// The environment variable naming the credential folder.
pub const CREDENTIAL_FOLDER_ENV: &str = "SPIFFE_CREDENTIAL_FOLDER";

#[derive(Debug)]
pub struct CredentialFiles {
    source: Source,
    /// Trust domain → its bundle file, named beside the source.
    federated: Vec<(String, PathBuf)>,
    cached: Mutex<Option<Cached>>,
}

impl CredentialFiles {
    pub fn new(credential_bundle: impl Into<PathBuf>, trust_bundle: impl Into<PathBuf>) -> Self {
        Self::of(Source::Files {
            credential_bundle: credential_bundle.into(),
            trust_bundle: trust_bundle.into(),
        })
    }

    /// A SPIFFE credential folder (Filesystem Delivery): `credential-bundle.pem` and one
    /// `<trust-domain>.spiffe-trust-bundle.pem` per trust domain, ours among them. The folder
    /// is listed again on every read, so a bundle added or removed (federation, de-federation)
    /// counts from the next connection.
    pub fn folder(path: impl Into<PathBuf>) -> Self {
        Self::of(Source::Folder(path.into()))
    }

    fn of(source: Source) -> Self {
        CredentialFiles {
            source,
            federated: Vec::new(),
            cached: Mutex::new(None),
        }
    }

    /// Also trusts `trust_domain`'s peers, verified against the roots in `bundle` only (a
    /// credential folder also finds bundles by name; a domain with two is refused).
    pub fn with_federated(mut self, trust_domain: &str, bundle: impl Into<PathBuf>) -> Self {
        self.federated
            .push((trust_domain.to_owned(), bundle.into()));
        self
    }

    fn layout(&self) -> Result<Layout, Error> {
        match &self.source {
            Source::Files {
                credential_bundle,
                trust_bundle,
            } => Ok(Layout {
                credential_bundle: credential_bundle.clone(),
                own: Some(trust_bundle.clone()),
                bundles: self.federated.clone(),
            }),
            Source::Folder(folder) => {
                let listing = std::fs::read_dir(folder)
                    .map_err(|e| Error::Files(format!("{}: {e}", folder.display())))?;
                let mut names: Vec<String> = listing
                    .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                    .collect();
                // read_dir's order is not fixed: sorted, the stamps of two reads compare.
                names.sort();
                let credential_bundle = CREDENTIAL_BUNDLE
                    .iter()
                    .find(|n| names.iter().any(|name| name == *n))
                    .map(|n| folder.join(n))
                    .ok_or_else(|| {
                        Error::Files(format!(
                            "{}: no {} in the credential folder",
                            folder.display(),
                            CREDENTIAL_BUNDLE[0]
                        ))
                    })?;
                let found = names
                    .iter()
                    .filter_map(|name| {
                        let domain = TRUST_BUNDLE_SUFFIXES
                            .iter()
                            .find_map(|suffix| name.strip_suffix(suffix))?;
                        (!domain.is_empty() && !domain.starts_with('.'))
                            .then(|| (domain.to_owned(), folder.join(name)))
                    })
                    .collect::<Vec<_>>();
                Ok(Layout {
                    credential_bundle,
                    own: None,
                    bundles: found.into_iter().chain(self.federated.clone()).collect(),
                })
            }
        }
    }

    /// The current credentials, re-read if a file changed (or, in a folder, came or went)
    /// since the last call.
    pub fn current(&self) -> Result<Arc<Credentials>, Error> {
        let layout = self.layout()?;
        let stamps = std::iter::once(&layout.credential_bundle)
            .chain(&layout.own)
            .chain(layout.bundles.iter().map(|(_, p)| p))
            .map(|p| stamp(p).map(|s| (p.clone(), s)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut cached = self.cached.lock().expect("credentials lock");
        if let Some((s, c)) = cached.as_ref()
            && *s == stamps
        {
            return Ok(c.clone());
        }
        let creds = Arc::new(Self::load(&layout)?);
        *cached = Some((stamps, creds.clone()));
        Ok(creds)
    }

    fn load(layout: &Layout) -> Result<Credentials, Error> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| Error::Files(format!("{}: {e}", p.display())))
        };
        let bundle = pem::parse_many(read(&layout.credential_bundle)?)
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
        let mut bundles = BTreeMap::new();
        if let Some(path) = &layout.own {
            bundles.insert(own.clone(), roots(path)?);
        }
        for (domain, path) in &layout.bundles {
            if bundles.insert(domain.clone(), roots(path)?).is_some() {
                return Err(Error::Files(format!(
                    "trust domain {domain:?} has two bundles"
                )));
            }
        }
        if !bundles.contains_key(&own) {
            return Err(Error::Files(format!(
                "no trust bundle for our own trust domain {own:?} (in a credential folder: {own}{})",
                TRUST_BUNDLE_SUFFIXES[0]
            )));
        }
        Ok(Credentials {
            chain,
            key,
            bundles,
            spiffe_id,
        })
    }
}
