//! The SPIFFE bundle endpoint (`--bundle-endpoint-addr`): our trust domain's bundle, in the
//! SPIFFE bundle format, over HTTPS with the `https_web` profile (a server certificate and key
//! the operator provides, `--bundle-endpoint-cert`/`--bundle-endpoint-key`).
//!
//! Every replica serves, and all serve the same document: the bundle as published in the
//! ClusterTrustBundle (its roots and its sequence, see [`crate::ca::trust_bundle`]), read again
//! every [`POLL`], so a CA rotation is served as soon as it is published. Requests are answered
//! from that copy and never reach the API server. `GET /` answers the JSON document; before
//! anything is published, 503. The certificate files are read again every [`RELOAD`]
//! (cert-manager renews them in place); a pair that does not load keeps the last good one and
//! says so in the log.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use signer_core::TrustDomain;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::ca::trust_bundle::TrustBundle;
use crate::config::BundleEndpointConfig;
use crate::supervisor::Ticks;

/// How often the published bundle is read again.
pub const POLL: Duration = Duration::from_secs(2);
/// How often the certificate files are read again.
pub const RELOAD: Duration = Duration::from_secs(5);
/// A client that has not finished its TLS handshake by then is dropped.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Reads the `https_web` certificate chain and key; an error names the flag and the file.
pub fn load_tls(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--bundle-endpoint-cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--bundle-endpoint-cert {}: no CERTIFICATE block",
            cert.display()
        ));
    }
    // Never the key's bytes in an error: only what kind of problem it is.
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "--bundle-endpoint-key {}: no private key ({e:?})",
            key.display()
        )
    })?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key_der)
    .map_err(|e| {
        format!(
            "--bundle-endpoint-cert/--bundle-endpoint-key {} and {}: {e}",
            cert.display(),
            key.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Binds the endpoint's address.
pub async fn bind(config: &BundleEndpointConfig) -> std::io::Result<TcpListener> {
    TcpListener::bind(config.addr).await
}

/// Serves until `token` is cancelled.
pub async fn serve(
    listener: TcpListener,
    config: BundleEndpointConfig,
    bundle: TrustBundle,
    trust_domain: TrustDomain,
    token: CancellationToken,
) {
    info!(addr = %config.addr, "serving the SPIFFE bundle endpoint (https_web)");
    let (doc_tx, doc_rx) = watch::channel::<Option<Bytes>>(None);
    let tls = Arc::new(RwLock::new(config.initial.clone()));
    // One task: the followers end with the endpoint, and a panic in either is its supervisor's.
    tokio::join!(
        follow_bundle(&bundle, &trust_domain, config.refresh_hint, &doc_tx, &token),
        follow_files(&config, &tls, &token),
        accept(listener, &tls, doc_rx, &token),
    );
}

/// Accepts connections until `token` is cancelled; each is served on its own.
async fn accept(
    listener: TcpListener,
    tls: &RwLock<Arc<ServerConfig>>,
    doc_rx: watch::Receiver<Option<Bytes>>,
    token: &CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "bundle endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = token.cancelled() => return,
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(
            tls.read()
                .map(|c| c.clone())
                .unwrap_or_else(|p| p.into_inner().clone()),
        );
        let doc = doc_rx.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return debug!(%peer, error = %e, "bundle endpoint: TLS handshake failed");
                }
                Err(_) => return debug!(%peer, "bundle endpoint: TLS handshake timed out"),
            };
            let service = service_fn(move |req| {
                let doc = doc.borrow().clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, doc)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                r = conn => if let Err(e) = r { debug!(%peer, error = %e, "bundle endpoint: connection ended") },
                _ = token.cancelled() => {}
            }
        });
    }
}

/// The answer to one request, given the current document.
fn answer(req: &Request<Incoming>, doc: Option<Bytes>) -> Response<Full<Bytes>> {
    let plain = |code: StatusCode, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
        *r.status_mut() = code;
        r
    };
    if req.uri().path() != "/" {
        return plain(StatusCode::NOT_FOUND, "not found: the bundle is at /\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match doc {
        None => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no trust bundle is published yet\n",
        ),
        Some(doc) => {
            let mut r = Response::new(Full::new(doc));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        }
    }
}

/// Keeps `doc` the published bundle's document, read every [`POLL`]; a failed read keeps the
/// last document (the roots it lists are still ours).
async fn follow_bundle(
    bundle: &TrustBundle,
    trust_domain: &TrustDomain,
    refresh_hint: Duration,
    doc: &watch::Sender<Option<Bytes>>,
    token: &CancellationToken,
) {
    let mut ticks = Ticks::every(POLL);
    while ticks.next(token).await {
        let Some(read) = token
            .run_until_cancelled(bundle.spiffe_bundle(trust_domain, refresh_hint))
            .await
        else {
            return;
        };
        match read {
            Ok(Some(b)) => match b.to_json() {
                Ok(json) => {
                    let json = Bytes::from(json);
                    doc.send_if_modified(|d| {
                        if d.as_ref() == Some(&json) {
                            return false;
                        }
                        info!(
                            sequence = b.sequence,
                            roots = b.x509_authorities.len(),
                            "bundle endpoint: serving the published bundle"
                        );
                        *d = Some(json);
                        true
                    });
                }
                Err(e) => {
                    error!(error = %e, "bundle endpoint: the published bundle cannot be served")
                }
            },
            Ok(None) => {}
            Err(e) => {
                debug!(error = %e, "bundle endpoint: reading the published bundle failed; serving the last")
            }
        }
    }
}

/// Reads the certificate pair again every [`RELOAD`] and swaps it in when it changed and loads.
async fn follow_files(
    config: &BundleEndpointConfig,
    tls: &RwLock<Arc<ServerConfig>>,
    token: &CancellationToken,
) {
    let read = || {
        (
            std::fs::read(&config.cert).ok(),
            std::fs::read(&config.key).ok(),
        )
    };
    let mut last = read();
    let mut ticks = Ticks::every(RELOAD);
    while ticks.next(token).await {
        let now = read();
        if now == last {
            continue;
        }
        last = now;
        match load_tls(&config.cert, &config.key) {
            Ok(c) => {
                if let Ok(mut t) = tls.write() {
                    *t = Arc::new(c);
                }
                info!(cert = %config.cert.display(), "bundle endpoint: certificate reloaded");
            }
            Err(e) => {
                error!(error = %e, "bundle endpoint: the new certificate pair does not load; keeping the last good one")
            }
        }
    }
}
