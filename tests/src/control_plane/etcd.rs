//! etcd as upstream's integration framework runs it (`test/integration/framework/etcd.go`):
//! one member, its client URL a Unix socket in the test's directory (no port to clash), peers
//! on an ephemeral loopback port nobody dials. Its gRPC gateway on the same socket answers the
//! health check and compacts the history on demand, as kube-apiserver's own compactor does
//! every five minutes in a cluster.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::binaries::binary;
use super::process::Process;

#[derive(Debug)]
pub struct Etcd {
    pub process: Process,
    pub socket: PathBuf,
}

impl Etcd {
    /// Starts etcd with its data and socket under `dir` and waits until it is healthy.
    pub async fn start(dir: &Path) -> Etcd {
        let data = dir.join("etcd-data");
        let socket = dir.join("etcd.sock");
        let url = format!("unix://{}", socket.display());
        let mut cmd = Command::new(binary("etcd"));
        cmd.arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &url])
            // Upstream's framework advertises an address nobody can reach: clients are given
            // the socket, and a stray connection to the default URL would be a bug.
            .args(["--advertise-client-urls", "http://127.0.0.111:0"])
            .args(["--listen-peer-urls", "http://127.0.0.1:0"])
            .args(["--log-level", "warn"])
            .args(["--quota-backend-bytes", &(8u64 << 30).to_string()]);
        let mut etcd = Etcd {
            process: Process::spawn("etcd", cmd, &dir.join("etcd.log")),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            etcd.process.assert_running("starting");
            if let Ok((200, body)) = etcd.call("GET", "/health", None).await
                && body["health"] == "true"
            {
                return etcd;
            }
            assert!(
                Instant::now() < deadline,
                "etcd not healthy within 30 s; its log:\n{}",
                etcd.process.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The URL kube-apiserver's `--etcd-servers` names.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// One HTTP call to etcd's gRPC gateway over the socket.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let code = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((code, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// The store's current revision.
    pub async fn revision(&self) -> i64 {
        // A range over one key that need not exist: the header carries the revision.
        let (code, body) = self
            .call("POST", "/v3/kv/range", Some(json!({"key": "AA=="})))
            .await
            .expect("etcd answers");
        assert_eq!(code, 200, "etcd range: {body}");
        body["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .expect("a revision")
    }

    /// Compacts the whole history up to now: a watch from any older resourceVersion then gets
    /// 410 Gone from kube-apiserver and must list again. Returns the compacted revision.
    pub async fn compact(&self) -> i64 {
        let revision = self.revision().await;
        let (code, body) = self
            .call(
                "POST",
                "/v3/kv/compaction",
                Some(json!({"revision": revision.to_string(), "physical": true})),
            )
            .await
            .expect("etcd answers");
        assert_eq!(code, 200, "etcd compaction: {body}");
        revision
    }
}
