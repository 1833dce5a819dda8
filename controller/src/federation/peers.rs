//! The federation file (`--federation-config`): the foreign trust domains whose bundles this
//! signer imports, where their bundle endpoints are, and how each is authenticated.
//!
//! ```yaml
//! trustDomains:
//!   - trustDomain: b.example.org
//!     bundleEndpointURL: https://bundle.b.example.org/
//!     profile: https_web            # the endpoint's server certificate, checked by Web PKI
//!     caFile: b-endpoint-ca.pem     # optional: trust this CA instead of the system's roots
//!   - trustDomain: c.example.org
//!     bundleEndpointURL: https://10.0.0.7:8443/
//!     profile: https_spiffe         # the endpoint's SVID, checked against C's own bundle
//!     endpointSPIFFEID: spiffe://c.example.org/ns/podcert-signer/sa/podcert-signer
//!     bundleFile: c-bundle.json     # C's bundle as obtained out of band, used until the first fetch
//! ```
//!
//! Relative paths are read beside the file. [`load`] reads everything once at
//! start and checks it as the API server will: each domain's ClusterTrustBundle name
//! (`<signer name with / as :>:federated.<trust domain>`) and trust-domain label value must be
//! valid, so a domain that could not be published is a start-up error naming the entry, not a
//! failure later. A mistake names the file, the entry and the field (exit code 2).

use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;
use signer_core::bundle::SpiffeBundle;
use signer_core::names;
use signer_core::{SpiffeId, TrustDomain};

use crate::config::{FederationFile, Peer, Profile};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    trust_domains: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Entry {
    trust_domain: String,
    #[serde(rename = "bundleEndpointURL")]
    bundle_endpoint_url: String,
    profile: String,
    ca_file: Option<PathBuf>,
    #[serde(rename = "endpointSPIFFEID")]
    endpoint_spiffe_id: Option<String>,
    bundle_file: Option<PathBuf>,
}

/// The name of the ClusterTrustBundle that carries `trust_domain`'s imported bundle.
pub fn bundle_name(signer_name: &str, trust_domain: &TrustDomain) -> String {
    format!(
        "{}:federated.{}",
        signer_name.replace('/', ":"),
        trust_domain.as_str()
    )
}

/// Reads and checks `path`; `own` is our trust domain (importing it is a mistake).
pub fn load(path: &Path, signer_name: &str, own: &TrustDomain) -> Result<FederationFile, String> {
    let at = |m: String| format!("{}: {m}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| at(e.to_string()))?;
    let file: File = serde_saphyr::from_str(&text).map_err(|e| at(e.to_string()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut peers: Vec<Peer> = Vec::with_capacity(file.trust_domains.len());
    for (i, entry) in file.trust_domains.into_iter().enumerate() {
        let peer = entry
            .check(dir, signer_name, own)
            .map_err(|m| at(format!("trustDomains[{i}]: {m}")))?;
        if peers.iter().any(|p| p.trust_domain == peer.trust_domain) {
            return Err(at(format!(
                "trustDomains[{i}]: trust domain {:?} is listed twice",
                peer.trust_domain.as_str()
            )));
        }
        peers.push(peer);
    }
    Ok(FederationFile {
        path: path.to_owned(),
        peers,
    })
}

impl Entry {
    fn check(self, dir: &Path, signer_name: &str, own: &TrustDomain) -> Result<Peer, String> {
        let trust_domain =
            TrustDomain::new(&self.trust_domain).map_err(|e| format!("trustDomain: {e}"))?;
        if &trust_domain == own {
            return Err(format!(
                "trustDomain: {:?} is this signer's own trust domain",
                own.as_str()
            ));
        }
        let td = trust_domain.as_str();
        // It labels the ClusterTrustBundle, so pods select it by trust domain.
        if td.len() > 63 || !td.ends_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "trustDomain: {td:?} cannot be a label value (at most 63 characters, ending in a letter or digit), and pods select the imported bundle by it"
            ));
        }
        let bundle_name = bundle_name(signer_name, &trust_domain);
        let name_errors = names::cluster_trust_bundle_name_errors(signer_name, &bundle_name);
        if !name_errors.is_empty() {
            return Err(format!(
                "trustDomain: {td:?} would make the ClusterTrustBundle name {bundle_name:?}, which the API server refuses: {}",
                name_errors.join("; ")
            ));
        }
        let url: http::Uri = self
            .bundle_endpoint_url
            .parse()
            .map_err(|e| format!("bundleEndpointURL: {:?}: {e}", self.bundle_endpoint_url))?;
        if url.scheme_str() != Some("https") || url.host().is_none() {
            return Err(format!(
                "bundleEndpointURL: {:?} is not an https:// URL with a host",
                self.bundle_endpoint_url
            ));
        }
        let read = |field: &str, p: &Path| {
            let p = dir.join(p);
            std::fs::read(&p).map_err(|e| format!("{field}: {}: {e}", p.display()))
        };
        let unused = |field: &str, profile: &str| {
            Err(format!(
                "{field} is not used with profile {profile}; remove it"
            ))
        };
        let profile = match self.profile.as_str() {
            "https_web" => {
                if self.endpoint_spiffe_id.is_some() {
                    return unused("endpointSPIFFEID", "https_web");
                }
                if self.bundle_file.is_some() {
                    return unused("bundleFile", "https_web");
                }
                let roots = match &self.ca_file {
                    None => None,
                    Some(f) => {
                        let pem = read("caFile", f)?;
                        let roots = CertificateDer::pem_slice_iter(&pem)
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(|e| format!("caFile: {}: {e}", f.display()))?;
                        if roots.is_empty() {
                            return Err(format!("caFile: {}: no CERTIFICATE block", f.display()));
                        }
                        Some(roots)
                    }
                };
                Profile::HttpsWeb { roots }
            }
            "https_spiffe" => {
                if self.ca_file.is_some() {
                    return unused("caFile", "https_spiffe");
                }
                let id = self.endpoint_spiffe_id.as_deref().ok_or(
                    "endpointSPIFFEID: needed with https_spiffe (the SPIFFE ID the endpoint's SVID carries)",
                )?;
                let endpoint_id =
                    SpiffeId::parse(id).map_err(|e| format!("endpointSPIFFEID: {e}"))?;
                if endpoint_id.trust_domain() != td {
                    return Err(format!(
                        "endpointSPIFFEID: {id:?} is not in trust domain {td:?}"
                    ));
                }
                let file = self.bundle_file.as_deref().ok_or(
                    "bundleFile: needed with https_spiffe (the domain's bundle obtained out of band, to check the endpoint's SVID the first time)",
                )?;
                let doc = read("bundleFile", file)?;
                let bootstrap = SpiffeBundle::parse(&doc, &trust_domain)
                    .map_err(|e| format!("bundleFile: {}: {e}", file.display()))?;
                Profile::HttpsSpiffe {
                    endpoint_id,
                    bootstrap,
                }
            }
            other => {
                return Err(format!(
                    "profile: {other:?} is not https_web or https_spiffe"
                ));
            }
        };
        Ok(Peer {
            trust_domain,
            url,
            profile,
            bundle_name,
        })
    }
}
