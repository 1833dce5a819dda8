//! A real Prometheus server (Debian's `prometheus`) scraping test processes.
//!
//! [`Prometheus::start`] writes a configuration that scrapes each target's `/metrics` every
//! second and loads the given rule files, starts the server on a free loopback port with its
//! storage in a temporary directory, and waits until it answers. [`Prometheus::query`] runs an
//! instant query through the HTTP API, as Grafana does. The server is killed when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::oracles::prometheus_binary;

#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `targets` (`host:port`) as job `podcert-signer`, evaluating `rule_files`.
    pub async fn start(targets: &[String], rule_files: &[&Path]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": rule_files,
            "scrape_configs": [{
                "job_name": "podcert-signer",
                "static_configs": [{"targets": targets}],
            }],
        });
        // JSON is YAML.
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let port = crate::free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(prometheus_binary())
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        let server = Prometheus { child, port, dir };
        for _ in 0..300 {
            if server.get("/-/ready").await.is_some_and(|(c, _)| c == 200) {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "prometheus did not become ready; its log:\n{}",
            server.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's `data.result` (a vector or a scalar); panics if Prometheus refuses
    /// the expression.
    pub async fn query(&self, expr: &str) -> Value {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("query", expr)
            .finish();
        let (code, body) = self
            .get(&format!("/api/v1/query?{query}"))
            .await
            .expect("prometheus answers");
        let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(
            (code, answer["status"].as_str()),
            (200, Some("success")),
            "query {expr:?}: {body}"
        );
        answer["data"]["result"].clone()
    }

    /// The `/api/v1/<path>` document's `data`.
    pub async fn api(&self, path: &str) -> Value {
        let (_, body) = self
            .get(&format!("/api/v1/{path}"))
            .await
            .expect("prometheus answers");
        serde_json::from_str::<Value>(&body).unwrap()["data"].clone()
    }

    /// GET on the server: the status code and body, or None if nothing answers.
    async fn get(&self, path_and_query: &str) -> Option<(u16, String)> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(connection);
        let request = http::Request::get(path_and_query)
            .header(http::header::HOST, "127.0.0.1")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        let code = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((code, String::from_utf8_lossy(&body).into_owned()))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
