//! `/metrics` over HTTPS, for callers the API server vouches for (`--secure-metrics-addr`), as
//! controller-runtime's secure metrics and kube-rbac-proxy serve it.
//!
//! Each request must carry a bearer token. The API server says who it is (a TokenReview) and
//! whether that user may `get` the non-resource URL `/metrics` (a SubjectAccessReview; the
//! ClusterRole `podcert-signer-metrics-reader` grants it): no or an unknown token is 401, a
//! user without the grant 403, and the API server unreachable 503. Answers are kept for
//! [`REMEMBER`] by the token's SHA-256 (never the token), so a scrape every few seconds costs
//! the API server two reviews a token per [`REMEMBER`]. The serving certificate is the
//! operator's (`--secure-metrics-cert`/`--secure-metrics-key`) or one made at start and
//! signed by itself, whose key never leaves memory. Clients are held to
//! [`super::http_server::Limits::DEFAULT`]; the probes stay on the plain admin port.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::http_server::{Gate, Limits, PairError, server_config};
use super::metrics::Exposition;

/// How long an answer about a token is kept.
pub const REMEMBER: Duration = Duration::from_secs(10);
/// At most this many tokens' answers are kept; past it, all are forgotten.
const REMEMBERED: usize = 1024;

/// What the API server says of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Authenticated and allowed to get /metrics.
    Allowed,
    /// Authenticated as this user, who may not.
    Forbidden(String),
    /// Not a token the API server knows.
    Unauthenticated,
}

/// Asks the API server about tokens, remembering its answers for [`REMEMBER`].
pub struct Reviewer {
    client: Client,
    remembered: Mutex<HashMap<Vec<u8>, (Instant, Verdict)>>,
}

impl Reviewer {
    pub fn new(client: Client) -> Self {
        Reviewer {
            client,
            remembered: Mutex::default(),
        }
    }

    async fn review(&self, token: &str) -> Result<Verdict, kube::Error> {
        let key = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes())
            .as_ref()
            .to_vec();
        if let Some((at, verdict)) = self.lock().get(&key)
            && at.elapsed() < REMEMBER
        {
            return Ok(verdict.clone());
        }
        let verdict = self.ask(token).await?;
        let mut remembered = self.lock();
        if remembered.len() >= REMEMBERED {
            remembered.clear();
        }
        remembered.insert(key, (Instant::now(), verdict.clone()));
        Ok(verdict)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, (Instant, Verdict)>> {
        self.remembered.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn ask(&self, token: &str) -> Result<Verdict, kube::Error> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = reviewed.status.unwrap_or_default();
        let Some(user) = status.user.filter(|_| status.authenticated == Some(true)) else {
            return Ok(Verdict::Unauthenticated);
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                uid: user.uid.clone(),
                groups: user.groups.clone(),
                extra: user.extra.clone(),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".into()),
                    verb: Some("get".into()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let decided = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await?;
        Ok(if decided.status.is_some_and(|s| s.allowed) {
            Verdict::Allowed
        } else {
            Verdict::Forbidden(user.username.unwrap_or_default())
        })
    }
}

/// The serving configuration: the operator's pair, or a certificate made now for
/// `localhost` and the metrics Service's names, signed by itself.
pub fn tls(pair: Option<(&[u8], &[u8])>) -> Result<rustls::ServerConfig, PairError> {
    match pair {
        Some((cert, key)) => server_config(cert, key),
        None => {
            let names = [
                "localhost",
                "podcert-signer-metrics",
                "podcert-signer-metrics.podcert-signer.svc",
            ];
            let made = rcgen::generate_simple_self_signed(names.map(String::from).to_vec())
                .map_err(|e| PairError::Pair(format!("making a serving certificate: {e}")))?;
            // The key's PEM is cleared when dropped (rustls keeps its own copy).
            let key = zeroize::Zeroizing::new(made.signing_key.serialize_pem());
            server_config(made.cert.pem().as_bytes(), key.as_bytes())
        }
    }
}

fn plain(code: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = code;
    r
}

/// The answer to one request.
async fn answer(
    req: Request<Incoming>,
    reviewer: &Reviewer,
    metrics: &Exposition,
) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: this port serves /metrics\n".into(),
        );
    }
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        let mut r = plain(
            StatusCode::UNAUTHORIZED,
            "a bearer token is required (Authorization: Bearer <token>)\n".into(),
        );
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return r;
    };
    match reviewer.review(token).await {
        Ok(Verdict::Allowed) => {
            let mut r = plain(StatusCode::OK, metrics.encode());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        Ok(Verdict::Forbidden(user)) => plain(
            StatusCode::FORBIDDEN,
            format!(
                "{user:?} may not get /metrics: bind it to the ClusterRole podcert-signer-metrics-reader\n"
            ),
        ),
        Ok(Verdict::Unauthenticated) => plain(
            StatusCode::UNAUTHORIZED,
            "the API server does not authenticate this token\n".into(),
        ),
        Err(e) => {
            warn!(error = %e, "cannot review a metrics caller's token with the API server");
            plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot reach the API server to review the token\n".into(),
            )
        }
    }
}

/// Binds the HTTPS metrics address, failing at once if it cannot.
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "serving /metrics over HTTPS to callers the API server authorizes");
    Ok(listener)
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    reviewer: Arc<Reviewer>,
    metrics: Arc<Exposition>,
    shutdown: CancellationToken,
) {
    let gate = Gate::new("metrics", Limits::DEFAULT);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    while let Some((stream, place)) = gate.next(&listener, &shutdown).await {
        let (acceptor, gate) = (acceptor.clone(), gate.clone());
        let (reviewer, metrics) = (reviewer.clone(), metrics.clone());
        tokio::spawn(async move {
            let Some(stream) = gate.handshake(&acceptor, stream, &place).await else {
                return;
            };
            gate.serve(stream, place, move |req| {
                let (reviewer, metrics) = (reviewer.clone(), metrics.clone());
                async move { answer(req, &reviewer, &metrics).await }
            })
            .await;
        });
    }
}
