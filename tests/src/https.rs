//! HTTPS as the tests serve and fetch it: a Web PKI server certificate (a CA of its own and a
//! `localhost`/127.0.0.1 certificate) — the test API server's, the one an operator gives
//! the bundle endpoint, Vault's — and a client that sends a request trusting only a given CA.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// A server certificate for `localhost` and 127.0.0.1, and the CA that issued it (PEM).
#[derive(Debug, Clone)]
pub struct WebCert {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl WebCert {
    pub fn generate(ca_name: &str) -> WebCert {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, ca_name);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca.clone().self_signed(&ca_key).unwrap().pem();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        let cert_pem = leaf
            .signed_by(&key, &Issuer::new(ca, &ca_key))
            .unwrap()
            .pem();
        WebCert {
            ca_pem,
            cert_pem,
            key_pem: key.serialize_pem(),
        }
    }
}

/// GETs `path` from `addr` over HTTPS, trusting only `ca_pem`: the status and body, or why
/// the connection failed (a refused certificate among them).
pub async fn get(addr: SocketAddr, ca_pem: &str, path: &str) -> Result<(u16, Vec<u8>), String> {
    get_with(addr, ca_pem, path, None).await
}

/// [`get`] with `Authorization: Bearer <bearer>` when given.
pub async fn get_with(
    addr: SocketAddr,
    ca_pem: &str,
    path: &str,
    bearer: Option<&str>,
) -> Result<(u16, Vec<u8>), String> {
    let auth = bearer.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| ("authorization", a))
        .into_iter()
        .collect();
    send(addr, ca_pem, "GET", path, &headers, Vec::new()).await
}

/// One `method` request for `path` to `addr` over HTTPS, trusting only `ca_pem`, with
/// `headers` and `body`: the status and body, or why the connection failed.
pub async fn send(
    addr: SocketAddr,
    ca_pem: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes()
        .to_vec();
    Ok((code, body))
}

/// What a [`StaticServer`] answers: a status and body, over a certificate.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The certificate pair it presents (PEM), e.g. one its clients do not trust.
    pub cert: WebCert,
}

/// An HTTPS server on 127.0.0.1 answering every request with the current [`Answer`], which the
/// test changes at will ([`StaticServer::set`]): a bundle endpoint that serves what a test
/// needs it to, good or bad. Stops when dropped.
#[derive(Debug)]
pub struct StaticServer {
    pub addr: SocketAddr,
    answer: Arc<std::sync::Mutex<Answer>>,
    task: tokio::task::JoinHandle<()>,
}

impl StaticServer {
    pub async fn start(answer: Answer) -> StaticServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = Arc::new(std::sync::Mutex::new(answer));
        let current = answer.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                // As a Go server (SPIRE's bundle endpoint): no Nagle (TCPConn's default).
                let _ = tcp.set_nodelay(true);
                let now = current.lock().unwrap().clone();
                tokio::spawn(async move {
                    use rustls::pki_types::pem::PemObject;
                    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(
                        now.cert.cert_pem.as_bytes(),
                    )
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(
                        now.cert.key_pem.as_bytes(),
                    )
                    .unwrap();
                    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                        rustls::crypto::aws_lc_rs::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(certs, key)
                    .unwrap();
                    let Ok(tls) = tokio_rustls::TlsAcceptor::from(Arc::new(config))
                        .accept(tcp)
                        .await
                    else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |_req| {
                        let now = now.clone();
                        async move {
                            let mut r = http::Response::new(http_body_util::Full::new(
                                Bytes::from(now.body),
                            ));
                            *r.status_mut() = http::StatusCode::from_u16(now.status).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        StaticServer { addr, answer, task }
    }

    /// What every later request is answered.
    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// The `https://` URL it serves.
    pub fn url(&self) -> String {
        format!("https://{}/", self.addr)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
