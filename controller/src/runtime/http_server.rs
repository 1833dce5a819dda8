//! Serving HTTP/1.1 to clients we do not trust: the admin server (probes, `/metrics`) and the
//! SPIFFE bundle endpoint, which other organisations reach over the Internet.
//!
//! A [`Gate`] accepts the connections ([`Gate::next`]), shakes hands ([`Gate::handshake`])
//! and serves them ([`Gate::serve`]), and bounds what clients can hold. At most [`Limits::connections`] connections at
//! once, and [`Limits::per_peer`] from one IP address, so one abusive host cannot crowd out the
//! kubelet's probes or Prometheus; over either cap a new connection is closed at once. A
//! request's head must arrive whole within [`Limits::header_timeout`], which also closes a
//! keep-alive connection idle that long (slowloris, floods of idle connections); a head over
//! [`Limits::max_header_bytes`] is refused with 431; a connection serves at most
//! [`Limits::requests_per_connection`] requests (a pipelining flood is answered, then closed)
//! and lives at most [`Limits::connection_lifetime`]; a TLS handshake must be done within
//! [`Limits::handshake_timeout`]. Bodies are never read: the servers
//! answer `GET` only. What this costs at most: `connections` × (a task, hyper's buffers of
//! at most `max_header_bytes` plus one response).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// What one server allows its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, from everyone.
    pub connections: usize,
    /// Connections open at once from one IP address.
    pub per_peer: usize,
    /// The longest a request's head may take to arrive, counted from when the server is ready
    /// for it (so also the longest a keep-alive connection may sit idle).
    pub header_timeout: Duration,
    /// The largest request head.
    pub max_header_bytes: usize,
    /// Requests served on one connection before it is closed.
    pub requests_per_connection: usize,
    /// The longest a connection is kept, however busy.
    pub connection_lifetime: Duration,
    /// The longest a TLS handshake may take.
    pub handshake_timeout: Duration,
}

impl Limits {
    /// For the admin server and the bundle endpoint alike: a probe, a scrape or a bundle
    /// fetch is one small GET, so none of these bounds touches a well-behaved client.
    pub const DEFAULT: Limits = Limits {
        connections: 256,
        per_peer: 16,
        header_timeout: Duration::from_secs(5),
        max_header_bytes: 16 * 1024,
        requests_per_connection: 100,
        connection_lifetime: Duration::from_secs(60),
        handshake_timeout: Duration::from_secs(10),
    };
}

/// Admits connections within [`Limits`] and serves them.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The server's name, in logs.
    server: &'static str,
    limits: Limits,
    open: Arc<Semaphore>,
    per_peer: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// An admitted connection's place; given back when it is dropped.
#[derive(Debug)]
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    peer: SocketAddr,
    per_peer: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Admitted {
    /// Who connected.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.per_peer.lock().unwrap_or_else(|p| p.into_inner());
        let ip = self.peer.ip();
        if let Some(n) = counts.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }
}

impl Gate {
    /// A gate for the server named `server` (in logs).
    pub fn new(server: &'static str, limits: Limits) -> Self {
        Gate {
            server,
            limits,
            open: Arc::new(Semaphore::new(limits.connections)),
            per_peer: Arc::default(),
        }
    }

    /// The next connection on `listener` within the limits (with Nagle's algorithm off, so
    /// each answer goes at once), or None once `token` is cancelled. A failed accept (most
    /// likely out of file descriptors) is logged and waited out; a connection over a cap is
    /// closed.
    pub async fn next(
        &self,
        listener: &TcpListener,
        token: &CancellationToken,
    ) -> Option<(TcpStream, Admitted)> {
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(server = self.server, error = %e, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = token.cancelled() => return None,
            };
            let Some(place) = self.admit(peer) else {
                debug!(server = self.server, %peer, "over the connection limit; closed");
                continue;
            };
            let _ = stream.set_nodelay(true);
            return Some((stream, place));
        }
    }

    /// The TLS session `acceptor` makes on `stream` within the handshake timeout; None (the
    /// connection closed) if it fails or takes too long.
    pub async fn handshake(
        &self,
        acceptor: &TlsAcceptor,
        stream: TcpStream,
        place: &Admitted,
    ) -> Option<TlsStream<TcpStream>> {
        let peer = place.peer;
        match tokio::time::timeout(self.limits.handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                debug!(server = self.server, %peer, error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                debug!(server = self.server, %peer, "TLS handshake timed out");
                None
            }
        }
    }

    /// A place for a connection from `peer`, or None over a cap (close the connection).
    pub fn admit(&self, peer: SocketAddr) -> Option<Admitted> {
        let permit = self.open.clone().try_acquire_owned().ok()?;
        let mut counts = self.per_peer.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(peer.ip()).or_insert(0);
        if *n >= self.limits.per_peer {
            return None;
        }
        *n += 1;
        Some(Admitted {
            _permit: permit,
            peer,
            per_peer: self.per_peer.clone(),
        })
    }

    /// Serves HTTP/1.1 on `io` (admitted as `place`) within the limits, answering each request
    /// with `respond`, until the client leaves or a limit closes the connection.
    pub async fn serve<I, F, A>(&self, io: I, place: Admitted, respond: F)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        F: Fn(Request<Incoming>) -> A + Send + Sync + 'static,
        A: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let limits = self.limits;
        let served = Arc::new(AtomicUsize::new(0));
        let service = service_fn(move |req: Request<Incoming>| {
            let answer = respond(req);
            let served = served.clone();
            async move {
                let mut response = answer.await;
                if served.fetch_add(1, Ordering::Relaxed) + 1 >= limits.requests_per_connection {
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_header_size(limits.max_header_bytes);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        match tokio::time::timeout(limits.connection_lifetime, conn.as_mut()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(server = self.server, peer = %place.peer, error = %e, "connection ended")
            }
            Err(_) => {
                // Long enough: finish the request under way, if any, then close.
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(limits.header_timeout, conn).await;
            }
        }
        drop(place);
    }
}

/// What is wrong with a certificate pair.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("{0}")]
    Cert(String),
    #[error("{0}")]
    Key(String),
    #[error("{0}")]
    Pair(String),
}

/// A TLS server configuration (HTTP/1.1) for a PEM chain and key; an error never quotes the
/// key.
pub fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<rustls::ServerConfig, PairError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PairError::Cert(e.to_string()))?;
    if certs.is_empty() {
        return Err(PairError::Cert("no CERTIFICATE block".into()));
    }
    // Never the key's bytes in an error: only what kind of problem it is. Our DER copy is
    // wiped once aws-lc holds the key (aws-lc wipes its own when it frees it).
    let mut key_der = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| PairError::Key(format!("no private key ({e:?})")))?;
    let signing_key = rustls::crypto::aws_lc_rs::sign::any_supported_type(&key_der);
    zeroize::Zeroize::zeroize(&mut key_der);
    let certified = rustls::sign::CertifiedKey::new(
        certs,
        signing_key.map_err(|e| PairError::Key(e.to_string()))?,
    );
    // As rustls' own with_single_cert: a mismatch is refused, an undecidable match is not.
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(PairError::Pair(e.to_string())),
    }
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| PairError::Pair(e.to_string()))?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_share_and_everyone_the_total_and_places_come_back() {
        let gate = Gate::new(
            "test",
            Limits {
                connections: 3,
                per_peer: 2,
                ..Limits::DEFAULT
            },
        );
        // Two peers, each connecting from several ports.
        let a = |port| SocketAddr::from(([10, 0, 0, 1], port));
        let b = |port| SocketAddr::from(([10, 0, 0, 2], port));
        let a1 = gate.admit(a(1)).unwrap();
        let _a2 = gate.admit(a(2)).unwrap();
        assert!(gate.admit(a(3)).is_none(), "a third from one peer");
        let _b1 = gate.admit(b(1)).unwrap();
        assert!(gate.admit(b(2)).is_none(), "a fourth in all");
        drop(a1);
        assert!(gate.admit(a(4)).is_some(), "a's place came back");
    }
}
