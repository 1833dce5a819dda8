//! Fetching one foreign bundle: an HTTPS GET of the peer's bundle endpoint, authenticated by
//! its profile, and the document read as that trust domain's bundle.
//!
//! `https_web`: the server certificate must be valid for the URL's host under Web PKI (the
//! system's roots, or the `caFile` of the federation file). `https_spiffe`: the server must
//! present an X.509-SVID that chains to the domain's *last good* bundle — what we imported
//! last, or at first the bootstrap bundle — and carries exactly the configured SPIFFE ID,
//! checked by the workspace's SPIFFE verifier (`spiffe_tls::SpiffeVerifier`, as the mTLS example); the
//! URL's host is not checked (SPIFFE Federation §5.2.2). Every fetch is bounded: [`TIMEOUT`]
//! for the whole exchange and `signer_core::bundle::MAX_BUNDLE_BYTES` for the body.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use signer_core::bundle::{BundleError, MAX_BUNDLE_BYTES, SpiffeBundle};

use crate::config::{Peer, Profile};
use crate::runtime::clock::Clock;
use crate::runtime::https_client::{self, HttpsError};

/// The longest one fetch may take, connection to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a fetch did not yield a bundle; the last good one stays.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connecting, TLS, HTTP (a non-200 answer among them) or the deadline.
    #[error(transparent)]
    Exchange(#[from] HttpsError),
    #[error("the bundle is refused: {0}")]
    Bundle(#[from] BundleError),
}

impl FetchError {
    /// The `reason` label of `podcert_federation_fetches_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Exchange(e) => e.reason(),
            FetchError::Bundle(_) => "bundle",
        }
    }
}

/// The TLS client configuration `peer`'s profile asks for, given its last good bundle;
/// certificates are valid or not as `clock` reads.
pub fn client_config(
    peer: &Peer,
    last_good: Option<&SpiffeBundle>,
    clock: Clock,
) -> Result<ClientConfig, String> {
    let config = match &peer.profile {
        Profile::HttpsWeb { roots } => https_client::web_pki(roots.as_deref(), "caFile", clock)?,
        Profile::HttpsSpiffe {
            endpoint_id,
            bootstrap,
        } => {
            // The workspace's SPIFFE verifier: the chain against the domain's bundle, and
            // exactly the configured ID.
            let bundle = last_good.unwrap_or(bootstrap);
            let roots = bundle
                .x509_authorities
                .iter()
                .map(|der| CertificateDer::from(der.clone()))
                .collect();
            let verifier = spiffe_tls::SpiffeVerifier::new(
                &BTreeMap::from([(bundle.trust_domain.as_str().to_owned(), roots)]),
                vec![endpoint_id.to_string()],
                &https_client::provider(),
            )
            .map_err(|e| e.to_string())?;
            https_client::builder(clock)?
                .dangerous() // an SVID names a SPIFFE ID, not the host we dialled
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// Fetches and reads `peer`'s bundle, authenticating the endpoint with `tls`.
pub async fn fetch(peer: &Peer, tls: Arc<ClientConfig>) -> Result<SpiffeBundle, FetchError> {
    let request = Request::get(peer.url.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| HttpsError::Http(e.to_string()))?;
    let (status, body) =
        https_client::exchange(&peer.url, tls, request, MAX_BUNDLE_BYTES, TIMEOUT).await?;
    if status != StatusCode::OK {
        return Err(HttpsError::Http(format!("the endpoint answered {status}")).into());
    }
    Ok(SpiffeBundle::parse(&body, &peer.trust_domain)?)
}
