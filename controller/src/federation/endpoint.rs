//! The SPIFFE bundle endpoint (`--bundle-endpoint-addr`): our trust domain's bundle, in the
//! SPIFFE bundle format, over HTTPS with the `https_web` profile (a server certificate and key
//! the operator provides, `--bundle-endpoint-cert`/`--bundle-endpoint-key`) or the
//! `https_spiffe` profile (the signer's own X.509-SVID, kept by the leader in a Secret, see
//! [`super::svid`]).
//!
//! Every replica serves, and all serve the same document: the bundle as published in the
//! ClusterTrustBundle (its roots and its sequence, see [`crate::ca::trust_bundle`]), read again
//! every [`POLL`], so a CA rotation is served as soon as it is published. Requests are answered
//! from that copy and never reach the API server. `GET /` answers the JSON document; before
//! anything is published, 503. The certificate — the files, or the SVID Secret — is read
//! again every [`RELOAD`] (cert-manager renews files in place, the leader renews the SVID); a
//! pair that does not load keeps the last good one and says so in the log. With
//! `https_spiffe`, connections are closed until the first SVID is there. Clients are held to
//! [`crate::runtime::http_server::Limits::DEFAULT`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use rustls::ServerConfig;
use signer_core::TrustDomain;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::ca::trust_bundle::TrustBundle;
use crate::config::{BundleEndpointConfig, EndpointTls};
use crate::runtime::http_server::{Gate, Limits, PairError, server_config};
use crate::runtime::supervisor::Ticks;

/// How often the published bundle is read again.
pub const POLL: Duration = Duration::from_secs(2);
/// How often the certificate files are read again.
pub const RELOAD: Duration = Duration::from_secs(5);

/// Reads the `https_web` certificate chain and key; an error names the flag and the file.
pub fn load_tls(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let read = |p: &Path, flag: &str| {
        std::fs::read(p).map_err(|e| format!("--{flag} {}: {e}", p.display()))
    };
    let (cert_pem, key_pem) = (
        read(cert, "bundle-endpoint-cert")?,
        read(key, "bundle-endpoint-key")?,
    );
    server_config(&cert_pem, &key_pem).map_err(|e| match e {
        PairError::Cert(e) => format!("--bundle-endpoint-cert {}: {e}", cert.display()),
        PairError::Key(e) => format!("--bundle-endpoint-key {}: {e}", key.display()),
        PairError::Pair(e) => format!(
            "--bundle-endpoint-cert/--bundle-endpoint-key {} and {}: {e}",
            cert.display(),
            key.display()
        ),
    })
}

/// Binds the endpoint's address.
pub async fn bind(config: &BundleEndpointConfig) -> std::io::Result<TcpListener> {
    TcpListener::bind(config.addr).await
}

/// Serves until `token` is cancelled; `client` reads the SVID Secret (`https_spiffe`).
pub async fn serve(
    listener: TcpListener,
    config: BundleEndpointConfig,
    bundle: TrustBundle,
    trust_domain: TrustDomain,
    client: kube::Client,
    token: CancellationToken,
) {
    let source = match &config.tls {
        EndpointTls::Files { cert, key, .. } => {
            info!(addr = %config.addr, "serving the SPIFFE bundle endpoint (https_web)");
            Source::Files {
                cert: cert.clone(),
                key: key.clone(),
            }
        }
        EndpointTls::Svid { secret, .. } => {
            info!(addr = %config.addr, secret = %secret, "serving the SPIFFE bundle endpoint (https_spiffe)");
            Source::Secret {
                api: Box::new(Api::namespaced(client, &secret.namespace)),
                name: secret.name.clone(),
            }
        }
    };
    let initial = match &config.tls {
        EndpointTls::Files { initial, .. } => Some(initial.clone()),
        EndpointTls::Svid { .. } => None,
    };
    let (doc_tx, doc_rx) = watch::channel::<Option<Bytes>>(None);
    let tls = Arc::new(RwLock::new(initial));
    // One task: the followers end with the endpoint, and a panic in either is its supervisor's.
    tokio::join!(
        follow_bundle(&bundle, &trust_domain, config.refresh_hint, &doc_tx, &token),
        follow_tls(&source, &tls, &token),
        accept(listener, &tls, doc_rx, &token),
    );
}

/// Where the endpoint's certificate pair is read from.
enum Source {
    Files { cert: PathBuf, key: PathBuf },
    Secret { api: Box<Api<Secret>>, name: String },
}

/// Accepts connections until `token` is cancelled; each is served on its own.
async fn accept(
    listener: TcpListener,
    tls: &RwLock<Option<Arc<ServerConfig>>>,
    doc_rx: watch::Receiver<Option<Bytes>>,
    token: &CancellationToken,
) {
    let gate = Gate::new("bundle endpoint", Limits::DEFAULT);
    while let Some((stream, place)) = gate.next(&listener, token).await {
        let current = tls
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        // No certificate yet (https_spiffe before the first SVID): the connection is closed.
        let Some(current) = current else {
            debug!(peer = %place.peer(), "bundle endpoint: no certificate yet; connection closed");
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(current);
        let doc = doc_rx.clone();
        let token = token.clone();
        let gate = gate.clone();
        tokio::spawn(async move {
            let Some(stream) = gate.handshake(&acceptor, stream, &place).await else {
                return;
            };
            let conn = gate.serve(stream, place, move |req| {
                let doc = doc.borrow().clone();
                std::future::ready(answer(&req, doc))
            });
            tokio::select! {
                () = conn => {}
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

/// Keeps `tls` the source's current pair: the files read again every [`RELOAD`], the SVID
/// Secret watched (the leader renews it, and a renewal is served at once).
async fn follow_tls(
    source: &Source,
    tls: &RwLock<Option<Arc<ServerConfig>>>,
    token: &CancellationToken,
) {
    match source {
        Source::Files { cert, key } => {
            // The key's bytes are wiped when dropped.
            let read = || {
                let key = zeroize::Zeroizing::new(std::fs::read(key).ok()?);
                Some((std::fs::read(cert).ok()?, key))
            };
            // The pair given at start was read and loaded then.
            let mut last = read();
            let mut ticks = Ticks::every(RELOAD);
            while ticks.next(token).await {
                let now = read();
                if let Some((c, k)) = now.as_ref().filter(|_| now != last) {
                    swap_in(tls, c, k, &cert.display().to_string());
                    last = now;
                }
            }
        }
        Source::Secret { api, name } => {
            let mut last = None;
            let mut secrets = std::pin::pin!(crate::ca::secret::follow(Api::clone(api), name));
            while let Some(Some(event)) = token.run_until_cancelled(secrets.next()).await {
                match event {
                    Ok(secret) => {
                        let now = secret.as_deref().and_then(super::svid::read);
                        if let Some((c, k)) = now.as_ref().filter(|_| now != last) {
                            swap_in(tls, c, k, &format!("Secret {name}"));
                            last = now;
                        }
                    }
                    Err(e) => debug!(error = %e, "bundle endpoint: watching the SVID Secret"),
                }
            }
        }
    }
}

/// Serves with the pair `cert`/`key` from now on if it loads; else keeps the last good one.
fn swap_in(tls: &RwLock<Option<Arc<ServerConfig>>>, cert: &[u8], key: &[u8], from: &str) {
    match server_config(cert, key) {
        Ok(c) => {
            if let Ok(mut t) = tls.write() {
                *t = Some(Arc::new(c));
            }
            info!(from, "bundle endpoint: certificate loaded");
        }
        Err(e) => {
            error!(from, error = %e, "bundle endpoint: the new certificate pair does not load; keeping the last good one")
        }
    }
}
