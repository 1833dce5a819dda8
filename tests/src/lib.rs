//! The test kit of podcert-signer: what the suite runs the signer against, the oracles that
//! judge what it issues, and the tools built on them.
//!
//! Against: [`apiserver`], our double of kube-apiserver, and [`control_plane`], the real
//! kube-apiserver and etcd with the kubelet's own pod-certificate code; [`rule_server`] runs one
//! rule table on either. Kubelets: [`kubelet`] files requests and judges the answers,
//! [`podcertificate`] behaves as upstream's pod certificate manager on a scaled clock. Judges:
//! [`fixtures`] (keys, proofs and stub CSRs Go made as the kubelet does), [`oracles`] (Go's
//! `crypto/x509`, `openssl verify`, py-spiffe, and the tools they find), [`interop`] (our SVIDs
//! against Go, OpenSSL, rustls, Java and NSS), [`prometheus`] (a real
//! Prometheus over a signer's metrics), [`https`] (HTTPS as the tests serve and fetch it),
//! [`softhsm`] (a SoftHSM2 token), [`secrets`] (broken CA keys, and a detector of key material in text).
//!
//! The crate also ships three tools, as binaries: `podcert-demo` ([`demo`], `scripts/demo`),
//! `podcert-load` (the load benchmark, with [`baseline`]) and `podcert-apiserver` (the double
//! as a process, for `kubectl`).

pub mod apiserver;
pub mod baseline;
pub mod control_plane;
pub mod demo;
pub mod fixtures;
pub mod https;
pub mod interop;
pub mod kubelet;
pub mod oracles;
pub mod podcertificate;
pub mod prometheus;
pub mod rule_server;
pub mod secrets;
pub mod softhsm;

/// A random UUID (version 4 form), as the API server gives objects and pods.
pub fn random_uid() -> String {
    let mut b = [0u8; 16];
    aws_lc_rs::rand::fill(&mut b).expect("the system RNG does not fail");
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The binary the container image ships: `scripts/build-release`, which the Dockerfile's build
/// stage runs, leaves it in target/release (scripts/test runs the script before the tests).
/// Panics, saying what to run, when it is missing or older than what it is built from (the
/// sources and manifests of the crates it links, the workspace manifest and the lock file).
pub fn image_binary() -> std::path::PathBuf {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/release/podcert-signer");
    let built = std::fs::metadata(&bin)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: run scripts/build-release (scripts/test does)",
                bin.display()
            )
        });
    let newest = [
        "controller/src",
        "controller/Cargo.toml",
        "signer-core/src",
        "signer-core/Cargo.toml",
        "spiffe-tls/src",
        "spiffe-tls/Cargo.toml",
        "Cargo.toml",
        "Cargo.lock",
    ]
    .iter()
    .flat_map(|d| newest_files(&root.join(d)))
    .max_by_key(|(t, _)| *t);
    if let Some((changed, path)) = newest.filter(|(t, _)| *t > built) {
        panic!(
            "{} is older than {} ({changed:?}): run scripts/build-release (scripts/test does)",
            bin.display(),
            path.display()
        );
    }
    bin
}

/// Every file under `path` (or `path` itself) with its modification time.
fn newest_files(path: &std::path::Path) -> Vec<(std::time::SystemTime, std::path::PathBuf)> {
    let meta = std::fs::metadata(path).unwrap();
    if meta.is_file() {
        return vec![(meta.modified().unwrap(), path.to_path_buf())];
    }
    std::fs::read_dir(path)
        .unwrap()
        .flat_map(|e| newest_files(&e.unwrap().path()))
        .collect()
}

/// The kube-rs configuration a kubeconfig file describes (its current context).
pub async fn kube_config(kubeconfig: &std::path::Path) -> kube::Config {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .unwrap_or_else(|e| panic!("{}: {e}", kubeconfig.display()));
    kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("a usable kubeconfig")
}

/// A client for the cluster a kubeconfig file describes.
pub async fn kube_client(kubeconfig: &std::path::Path) -> kube::Client {
    kube::Client::try_from(kube_config(kubeconfig).await).expect("a kube client")
}

/// Sends `body` as JSON with `method` to `path` and returns the status code and the JSON
/// answer (`null` if it is not JSON): the raw REST calls the API rule tests make.
pub async fn send_json(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(body.to_string().into_bytes()))
        .expect("a valid request");
    let resp = client.send(req).await.expect("the server answers");
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("a body").to_bytes();
    (
        code,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}
