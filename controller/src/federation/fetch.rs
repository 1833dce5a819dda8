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
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, RootCertStore};
use signer_core::bundle::{BundleError, MAX_BUNDLE_BYTES, SpiffeBundle};

use crate::config::{Peer, Profile};
use crate::runtime::clock::Clock;

/// The longest one fetch may take, connection to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a fetch did not yield a bundle; the last good one stays.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("connecting to {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("no answer within {}s", TIMEOUT.as_secs())]
    Timeout,
    #[error("the bundle is refused: {0}")]
    Bundle(#[from] BundleError),
}

impl FetchError {
    /// The `reason` label of `podcert_federation_fetches_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Connect(_) => "connect",
            FetchError::Tls(_) => "tls",
            FetchError::Http(_) => "http",
            FetchError::Timeout => "timeout",
            FetchError::Bundle(_) => "bundle",
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Certificates are checked on the signer's certificate clock (compressed only in tests).
#[derive(Debug)]
struct CertificateClock(Clock);

impl rustls::time_provider::TimeProvider for CertificateClock {
    fn current_time(&self) -> Option<UnixTime> {
        let since = self.0.now().duration_since(std::time::UNIX_EPOCH).ok()?;
        Some(UnixTime::since_unix_epoch(since))
    }
}

/// The TLS client configuration `peer`'s profile asks for, given its last good bundle;
/// certificates are valid or not as `clock` reads.
pub fn client_config(
    peer: &Peer,
    last_good: Option<&SpiffeBundle>,
    clock: Clock,
) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder =
        ClientConfig::builder_with_details(provider.clone(), Arc::new(CertificateClock(clock)))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
    let config = match &peer.profile {
        Profile::HttpsWeb { roots } => {
            let mut store = RootCertStore::empty();
            match roots {
                Some(roots) => {
                    for r in roots {
                        store.add(r.clone()).map_err(|e| format!("caFile: {e}"))?;
                    }
                }
                None => {
                    let native = rustls_native_certs::load_native_certs();
                    store.add_parsable_certificates(native.certs);
                }
            }
            if store.is_empty() {
                return Err("no root certificates to check the endpoint with (the system has none; set caFile)".into());
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
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
                &provider,
            )
            .map_err(|e| e.to_string())?;
            builder
                .dangerous() // an SVID names a SPIFFE ID, not the host we dialled
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// Fetches and reads `peer`'s bundle, authenticating the endpoint with `tls`.
pub async fn fetch(peer: &Peer, tls: Arc<ClientConfig>) -> Result<SpiffeBundle, FetchError> {
    let body = tokio::time::timeout(TIMEOUT, get(&peer.url, tls))
        .await
        .map_err(|_| FetchError::Timeout)??;
    Ok(SpiffeBundle::parse(&body, &peer.trust_domain)?)
}

async fn get(url: &http::Uri, tls: Arc<ClientConfig>) -> Result<Bytes, FetchError> {
    let host = url.host().unwrap_or_default();
    // An IPv6 literal comes bracketed in the URL.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| FetchError::Connect(format!("{bare}:{port}: {e}")))?;
    let name = ServerName::try_from(bare.to_owned())
        .map_err(|e| FetchError::Connect(format!("{bare}: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| FetchError::Tls(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let authority = url.authority().map(|a| a.as_str()).unwrap_or(host);
    let request = Request::get(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Http(format!(
                "the endpoint answered {}",
                response.status()
            )));
        }
        Limited::new(response.into_body(), MAX_BUNDLE_BYTES)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| FetchError::Http(format!("reading the body: {e}")))
    }
    .await;
    driver.abort();
    result
}
