//! HashiCorp Vault — its server core with the PKI secrets engine and Kubernetes auth, built
//! from Vault's Go module by `scripts/build-kubernetes` — run on loopback as an upstream
//! authority for the signer's intermediates. [`Vault::start`] serves HTTPS with a
//! certificate from a CA of its own ([`Vault::ca_file`], what the signer is told to trust),
//! in-memory storage, initialised and unsealed; the test configures it over its HTTP API
//! with the root token ([`Vault::api`]), as an operator would with the `vault` CLI. An
//! outage is a sealed Vault ([`Vault::seal`]: every request answered 503) or a stopped one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::binaries;
use super::process::Process;
use crate::https::{WebCert, send};

#[derive(Debug)]
pub struct Vault {
    process: Option<Process>,
    pub addr: SocketAddr,
    /// The CA of Vault's TLS certificate (PEM file).
    pub ca_file: PathBuf,
    tls: WebCert,
    root_token: String,
    unseal_key: String,
}

impl Vault {
    /// Starts Vault in `dir` and waits until it answers, unsealed.
    pub async fn start(dir: &std::path::Path) -> Vault {
        let tls = WebCert::generate("Vault TLS CA");
        let (cert, key, ca_file) = (
            dir.join("vault.crt"),
            dir.join("vault.key"),
            dir.join("vault-ca.crt"),
        );
        std::fs::write(&cert, &tls.cert_pem).unwrap();
        std::fs::write(&key, &tls.key_pem).unwrap();
        std::fs::write(&ca_file, &tls.ca_pem).unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", crate::free_port()).parse().unwrap();
        let init = dir.join("vault-init.json");
        let mut cmd = Command::new(binaries::binary("vault"));
        cmd.arg(format!("--listen={addr}"))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--init-file")
            .arg(&init);
        let mut process = Process::spawn("vault", cmd, &dir.join("vault.log"));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let keys: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&init) {
                break serde_json::from_str(&text).unwrap();
            }
            process.assert_running("starting");
            assert!(
                tokio::time::Instant::now() < deadline,
                "Vault did not start:\n{}",
                process.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Vault {
            process: Some(process),
            addr,
            ca_file,
            tls,
            root_token: keys["root_token"].as_str().unwrap().to_owned(),
            unseal_key: keys["unseal_key"].as_str().unwrap().to_owned(),
        }
    }

    /// `https://127.0.0.1:port`.
    pub fn address(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// `method /v1/<path>` with the root token: the status and the answer's JSON (Null if none).
    pub async fn api(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        self.api_as(&self.root_token.clone(), method, path, body)
            .await
    }

    /// [`Vault::api`] with `token`.
    pub async fn api_as(&self, token: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
        let (code, answer) = send(
            self.addr,
            &self.tls.ca_pem,
            method,
            &format!("/v1/{path}"),
            &[
                ("x-vault-token", token),
                ("content-type", "application/json"),
            ],
            body.to_string().into_bytes(),
        )
        .await
        .unwrap_or_else(|e| panic!("Vault {method} {path}: {e}"));
        (code, serde_json::from_slice(&answer).unwrap_or(Value::Null))
    }

    /// [`Vault::api`], which must succeed; its JSON.
    pub async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (code, answer) = self.api(method, path, body).await;
        assert!(
            (200..300).contains(&code),
            "Vault {method} {path}: {code} {answer}\n{}",
            self.log_tail()
        );
        answer
    }

    /// Seals Vault: it answers every request 503 until [`Vault::unseal`].
    pub async fn seal(&self) {
        self.ok("PUT", "sys/seal", Value::Null).await;
    }

    pub async fn unseal(&self) {
        let body = serde_json::json!({"key": self.unseal_key});
        let answer = self.ok("PUT", "sys/unseal", body).await;
        assert_eq!(answer["sealed"], false, "{answer}");
    }

    /// Vault's log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(40))
            .unwrap_or_default()
    }
}
