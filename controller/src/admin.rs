//! The admin HTTP server: `/live`, `/ready` and `/metrics`.
//!
//! `/live` answers 200 while the process runs. `/ready` answers 200 once this replica is doing
//! its job: a standby once it has taken part in leader election, the leader once its CA is
//! loaded and its watch of PodCertificateRequests has synced; 503 otherwise. `/metrics` is the
//! Prometheus exposition.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::metrics::Metrics;

#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

fn respond(health: &Health, metrics: &Metrics, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/live" | "/livez" | "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/ready" | "/readyz" if health.is_ready() => {
            (StatusCode::OK, "text/plain", "ready\n".to_string())
        }
        "/ready" | "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".to_string(),
        ),
        "/metrics" => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.encode(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

/// Binds `addr` (failing at once if it cannot) and serves until `shutdown`.
pub async fn bind(
    addr: SocketAddr,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "admin server listening");
    Ok(tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(s) => s,
                    Err(e) => { debug!(error = %e, "admin accept failed"); continue; }
                },
                _ = shutdown.cancelled() => return,
            };
            let (health, metrics) = (health.clone(), metrics.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let response = respond(&health, &metrics, req.uri().path());
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(error = %e, "admin connection ended");
                }
            });
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_follows_health() {
        let (h, m) = (Health::default(), Metrics::default());
        assert_eq!(respond(&h, &m, "/live").status(), StatusCode::OK);
        assert_eq!(
            respond(&h, &m, "/ready").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.set_ready(true);
        assert_eq!(respond(&h, &m, "/ready").status(), StatusCode::OK);
        assert_eq!(respond(&h, &m, "/metrics").status(), StatusCode::OK);
        assert_eq!(respond(&h, &m, "/nope").status(), StatusCode::NOT_FOUND);
    }
}
