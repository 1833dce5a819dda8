//! spiffe-mtls: an example workload that speaks SPIFFE mTLS with the certificates
//! podcert-signer issues, read from the files the kubelet writes (no SPIFFE Workload API).
//!
//! [`credentials`] loads the credential bundle (key + chain) and trust bundle and re-reads
//! them when the kubelet rotates them; [`SpiffeVerifier`] (from the `spiffe-tls` crate) accepts a peer only if its chain verifies to
//! the bundle of the trust domain its SPIFFE ID names (ours, or a federated one) and that ID
//! is allowed. [`serve`] answers each
//! connection with `hello <peer-id> from <own-id>`; [`exchange`] is the client side.

pub mod credentials;

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

pub use credentials::{CredentialFiles, Credentials};
pub use spiffe_tls::SpiffeVerifier;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("credential files: {0}")]
    Files(String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Identity(String),
    #[error("{0}")]
    SpiffeId(#[from] spiffe_tls::SpiffeError),
    #[error("{0}")]
    Bundle(#[from] spiffe_tls::BundleError),
}

/// The SPIFFE ID of an X.509-SVID: its single URI SAN, a valid SPIFFE ID.
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Result<String, Error> {
    Ok(spiffe_tls::svid_id(cert)?.to_string())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server configuration for `creds` that requires a client SVID with an allowed ID.
pub fn server_config(
    creds: &Credentials,
    allowed_clients: &[String],
) -> Result<Arc<rustls::ServerConfig>, Error> {
    let provider = provider();
    let verifier = Arc::new(SpiffeVerifier::new(
        &creds.bundles,
        allowed_clients.to_vec(),
        &provider,
    )?);
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(creds.chain.clone(), creds.key.clone_key())?;
    Ok(Arc::new(config))
}

/// A client configuration for `creds` that accepts only servers with an allowed ID.
pub fn client_config(
    creds: &Credentials,
    allowed_servers: &[String],
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = provider();
    let verifier = Arc::new(SpiffeVerifier::new(
        &creds.bundles,
        allowed_servers.to_vec(),
        &provider,
    )?);
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous() // a custom verifier: SPIFFE IDs instead of DNS names
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(creds.chain.clone(), creds.key.clone_key())?;
    Ok(Arc::new(config))
}

/// What the server saw of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    Accepted { peer: String },
    Refused { error: String },
}

/// Serves connections on `listener` until it fails, calling `report` for each. The
/// credentials are re-read (when changed) for every connection, so rotation needs no restart.
pub async fn serve(
    listener: TcpListener,
    files: Arc<CredentialFiles>,
    allowed_clients: Vec<String>,
    report: impl Fn(Served) + Send + Sync + 'static,
) -> Result<(), Error> {
    let report = Arc::new(report);
    loop {
        let (tcp, _) = listener.accept().await?;
        // Each reply at once, not held back by Nagle's algorithm for the client's ACK.
        let _ = tcp.set_nodelay(true);
        let config = match files
            .current()
            .and_then(|c| server_config(&c, &allowed_clients).map(|cfg| (c, cfg)))
        {
            Ok(c) => c,
            Err(e) => {
                report(Served::Refused {
                    error: e.to_string(),
                });
                continue;
            }
        };
        let report = report.clone();
        tokio::spawn(async move {
            let (creds, config) = config;
            match tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                Ok(mut tls) => {
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(spiffe_id);
                    let Some(Ok(peer)) = peer else { return };
                    let mut line = String::new();
                    let _ = BufReader::new(&mut tls).read_line(&mut line).await;
                    let _ = tls
                        .write_all(format!("hello {peer} from {}\n", creds.spiffe_id).as_bytes())
                        .await;
                    let _ = tls.shutdown().await;
                    report(Served::Accepted { peer });
                }
                Err(e) => report(Served::Refused {
                    error: e.to_string(),
                }),
            }
        });
    }
}

/// What the client saw: the server's SPIFFE ID and certificate, and its reply.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub peer: String,
    pub peer_certificate: CertificateDer<'static>,
    pub reply: String,
}

/// Connects to `addr`, accepting only an allowed server, sends one line, reads the reply.
pub async fn exchange(
    addr: std::net::SocketAddr,
    files: &CredentialFiles,
    allowed_servers: &[String],
) -> Result<Exchange, Error> {
    let creds = files.current()?;
    let config = client_config(&creds, allowed_servers)?;
    let tcp = TcpStream::connect(addr).await?;
    // The name is not checked (see SpiffeVerifier); rustls needs one for SNI.
    let name = ServerName::try_from("spiffe-peer").expect("valid name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let peer_certificate = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or_else(|| Error::Identity("no server certificate".into()))?;
    let peer = spiffe_id(&peer_certificate)?;
    tls.write_all(format!("hello from {}\n", creds.spiffe_id).as_bytes())
        .await?;
    let mut reply = String::new();
    BufReader::new(&mut tls).read_line(&mut reply).await?;
    if reply.is_empty() {
        return Err(Error::Identity(
            "the server closed the connection (it refused our certificate)".into(),
        ));
    }
    Ok(Exchange {
        peer,
        peer_certificate: peer_certificate.into_owned(),
        reply: reply.trim_end().to_string(),
    })
}
