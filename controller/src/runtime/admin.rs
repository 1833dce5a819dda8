//! The admin HTTP server: `/live`, `/ready` and `/metrics`.
//!
//! `/live` answers 200 while the process makes progress: the election loop and the leadership
//! loop each [`Health::beat`] at least every second or so, and if either has not beaten for
//! the stall limit the process is stuck (not merely idle) and `/live` answers 503, so the
//! kubelet restarts it. `/ready` answers 200 once this replica is doing its job: a standby
//! once it has taken part in an election round and could sign if it led (it holds the CA, or
//! may create one on a fresh install), the leader once its watch of PodCertificateRequests
//! has synced; 503 otherwise. `/metrics` is
//! the Prometheus exposition. Clients are held to [`super::http_server::Limits::DEFAULT`]: a
//! slow, flooding or idle client cannot starve the probes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::runtime::http_server::{Gate, Limits};
use crate::runtime::metrics::Exposition;

/// A loop whose progress `/live` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loop {
    Election = 0,
    Leadership = 1,
}

#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    /// The election has completed a round: a standby knows whether another replica leads.
    campaigned: AtomicBool,
    started: Instant,
    /// Milliseconds since `started` of each loop's last beat.
    beats: [AtomicU64; 2],
    stall_after: Duration,
}

impl Health {
    /// `/live` fails once a loop has not beaten for `stall_after`.
    pub fn new(stall_after: Duration) -> Self {
        Health {
            ready: AtomicBool::new(false),
            campaigned: AtomicBool::new(false),
            started: Instant::now(),
            beats: [AtomicU64::new(0), AtomicU64::new(0)],
            stall_after,
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The election completed a round.
    pub fn set_campaigned(&self) {
        self.campaigned.store(true, Ordering::Release);
    }

    pub fn has_campaigned(&self) -> bool {
        self.campaigned.load(Ordering::Acquire)
    }

    /// `which` made progress now.
    pub fn beat(&self, which: Loop) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.beats[which as usize].store(ms, Ordering::Release);
    }

    /// The loops that have not beaten within the stall limit.
    pub fn stalled(&self) -> Vec<Loop> {
        let now = self.started.elapsed().as_millis() as u64;
        let limit = self.stall_after.as_millis() as u64;
        [Loop::Election, Loop::Leadership]
            .into_iter()
            .filter(|l| now.saturating_sub(self.beats[*l as usize].load(Ordering::Acquire)) > limit)
            .collect()
    }
}

/// The answer on `path`; `/metrics` only when `metrics` is served here (not over HTTPS).
fn respond(health: &Health, metrics: Option<&Exposition>, path: &str) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match path {
        "/live" | "/livez" | "/healthz" => match health.stalled().as_slice() {
            [] => (StatusCode::OK, "text/plain", "ok\n".to_string()),
            stalled => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("stuck: {stalled:?} made no progress\n"),
            ),
        },
        "/ready" | "/readyz" if health.is_ready() => {
            (StatusCode::OK, "text/plain", "ready\n".to_string())
        }
        "/ready" | "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".to_string(),
        ),
        "/metrics" => match metrics {
            Some(metrics) => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                metrics.encode(),
            ),
            None => (
                StatusCode::NOT_FOUND,
                "text/plain",
                "not here: /metrics is served over HTTPS on --secure-metrics-addr\n".to_string(),
            ),
        },
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

/// Binds `addr`, failing at once if it cannot, so a taken port is a start-up error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr = %listener.local_addr()?, "admin server listening");
    Ok(listener)
}

/// Serves `/live`, `/ready` and `/metrics` (when `metrics` is given: not when it is served
/// over HTTPS, see [`super::secure_metrics`]) on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Option<Arc<Exposition>>,
    shutdown: CancellationToken,
) {
    let gate = Gate::new("admin", Limits::DEFAULT);
    while let Some((stream, place)) = gate.next(&listener, &shutdown).await {
        let (health, metrics, gate) = (health.clone(), metrics.clone(), gate.clone());
        tokio::spawn(async move {
            gate.serve(stream, place, move |req| {
                std::future::ready(respond(&health, metrics.as_deref(), req.uri().path()))
            })
            .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_fails_when_a_loop_stops_beating() {
        let h = Health::new(Duration::from_millis(50));
        let m = crate::runtime::metrics::Registrar::default().finish();
        assert_eq!(respond(&h, Some(&m), "/live").status(), StatusCode::OK);
        std::thread::sleep(Duration::from_millis(120));
        h.beat(Loop::Election);
        let r = respond(&h, Some(&m), "/live");
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(h.stalled(), [Loop::Leadership]);
        h.beat(Loop::Leadership);
        assert_eq!(respond(&h, Some(&m), "/live").status(), StatusCode::OK);
    }

    #[test]
    fn ready_follows_health() {
        let (h, m) = (
            Health::new(Duration::from_secs(60)),
            crate::runtime::metrics::Registrar::default().finish(),
        );
        assert_eq!(respond(&h, Some(&m), "/live").status(), StatusCode::OK);
        assert_eq!(
            respond(&h, Some(&m), "/ready").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        h.set_ready(true);
        assert_eq!(respond(&h, Some(&m), "/ready").status(), StatusCode::OK);
        assert_eq!(respond(&h, Some(&m), "/metrics").status(), StatusCode::OK);
        assert_eq!(
            respond(&h, Some(&m), "/nope").status(),
            StatusCode::NOT_FOUND
        );
        // Served over HTTPS instead (--secure-metrics-addr): not here.
        assert_eq!(
            respond(&h, None, "/metrics").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(respond(&h, None, "/ready").status(), StatusCode::OK);
    }
}
