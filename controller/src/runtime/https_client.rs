//! One bounded HTTPS exchange with a server we do not control: a foreign bundle endpoint
//! (`federation::fetch`) or an upstream authority (`ca::upstream::vault`).
//!
//! [`exchange`] connects, completes TLS as the given [`ClientConfig`] says, sends one HTTP/1.1
//! request and reads the answer's body up to a limit, all within a deadline; the connection
//! is not reused. [`web_pki`] builds the usual configuration: the server's certificate valid
//! for the URL's host under the given roots (or the system's), on the signer's certificate
//! clock. Errors name the step that failed and never carry the request's headers.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, RootCertStore};

use super::clock::Clock;

/// Why an exchange did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpsError {
    #[error("connecting to {0}")]
    Connect(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("no answer within {}s", .0.as_secs())]
    Timeout(Duration),
}

impl HttpsError {
    /// The step that failed, as a metric label: `connect`, `tls`, `http` or `timeout`.
    pub fn reason(&self) -> &'static str {
        match self {
            HttpsError::Connect(_) => "connect",
            HttpsError::Tls(_) => "tls",
            HttpsError::Http(_) => "http",
            HttpsError::Timeout(_) => "timeout",
        }
    }
}

/// The TLS provider every client of ours uses.
pub fn provider() -> Arc<CryptoProvider> {
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

/// A TLS client builder whose certificates are valid or not as `clock` reads.
pub fn builder(
    clock: Clock,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, String> {
    ClientConfig::builder_with_details(provider(), Arc::new(CertificateClock(clock)))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
}

/// Web PKI: the server's certificate must be valid for the URL's host under `roots` (PEM
/// certificates read by the caller, `setting` naming where they came from in errors), or
/// under the system's roots when None.
pub fn web_pki(
    roots: Option<&[CertificateDer<'static>]>,
    setting: &str,
    clock: Clock,
) -> Result<ClientConfig, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Some(roots) => {
            for r in roots {
                store
                    .add(r.clone())
                    .map_err(|e| format!("{setting}: {e}"))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(native.certs);
        }
    }
    if store.is_empty() {
        return Err(format!(
            "no root certificates to check the server with (the system has none; set {setting})"
        ));
    }
    Ok(builder(clock)?
        .with_root_certificates(store)
        .with_no_client_auth())
}

/// Sends `request` to `url` over TLS `tls` and returns the answer's status and body (at most
/// `limit` bytes), all within `deadline`.
pub async fn exchange(
    url: &http::Uri,
    tls: Arc<ClientConfig>,
    request: Request<Full<Bytes>>,
    limit: usize,
    deadline: Duration,
) -> Result<(StatusCode, Bytes), HttpsError> {
    tokio::time::timeout(deadline, exchange_unbounded(url, tls, request, limit))
        .await
        .map_err(|_| HttpsError::Timeout(deadline))?
}

async fn exchange_unbounded(
    url: &http::Uri,
    tls: Arc<ClientConfig>,
    mut request: Request<Full<Bytes>>,
    limit: usize,
) -> Result<(StatusCode, Bytes), HttpsError> {
    let host = url.host().unwrap_or_default();
    // An IPv6 literal comes bracketed in the URL.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| HttpsError::Connect(format!("{bare}:{port}: {e}")))?;
    let name = ServerName::try_from(bare.to_owned())
        .map_err(|e| HttpsError::Connect(format!("{bare}: {e}")))?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| HttpsError::Tls(e.to_string()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpsError::Http(e.to_string()))?;
    let driver = tokio::spawn(conn);
    let authority = url.authority().map(|a| a.as_str()).unwrap_or(host);
    let host_header = http::HeaderValue::from_str(authority)
        .map_err(|e| HttpsError::Http(format!("the URL's host: {e}")))?;
    request
        .headers_mut()
        .insert(http::header::HOST, host_header);
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| HttpsError::Http(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), limit)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| HttpsError::Http(format!("reading the body: {e}")))?;
        Ok((status, body))
    }
    .await;
    driver.abort();
    result
}
