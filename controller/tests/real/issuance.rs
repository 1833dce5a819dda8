//! Issuance through the kubelet's own code: every key type, from kubelets of 1.35 (pkix +
//! proof through v1beta1), 1.36 (stub CSR through v1beta1) and 1.37 (stub CSR through v1),
//! against API server 1.37 (old kubelets, new control plane) and 1.35. Each pod's volume is
//! checked as the pod would use it: the mounted key certified by the mounted chain, which
//! verifies (openssl, Go's crypto/x509) to the mounted trust bundle.

use std::time::Duration;

use podcert_tests::control_plane::kubelet::PodcertKubelet;
use podcert_tests::control_plane::{ApiServerOptions, Release};
use podcert_tests::oracles::{IssuedCase, assert_go_accepts, openssl, openssl_verify};
use serde_json::Value;

use crate::cluster::{RealCluster, TRUST_DOMAIN, requested_spki, terminal};
use crate::support::{SUPPORTED, SignerProcess};

/// Waits for every `podCertificate` volume (`svid-0..n`) and the trust volume of `ns/pod` as
/// `kubelet` mounts them, and checks each request and file; returns the requests.
pub async fn assert_mounted(
    rc: &RealCluster,
    kubelet: &PodcertKubelet,
    signer: &SignerProcess,
    (ns, pod, sa): (&str, &str, &str),
    n: usize,
) -> Vec<Value> {
    let timeout = Duration::from_secs(90);
    let trust = kubelet.mounted(ns, pod, "trust", timeout).await;
    let bundle = trust.file("bundle.pem").to_string();
    assert_eq!(
        same_certificates(&bundle),
        same_certificates(&rc.trust_bundle().await),
        "the mounted trust bundle holds the published roots (in the kubelet's order)"
    );
    let pcrs = rc.terminal_pcrs(ns, pod, n, timeout, signer).await;
    let spiffe_id = format!("spiffe://{TRUST_DOMAIN}/ns/{ns}/sa/{sa}");
    let mut cases = Vec::new();
    for pcr in &pcrs {
        let name = pcr["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            terminal(pcr).unwrap().0,
            "Issued",
            "{name}: {:#}",
            pcr["status"]
        );
        let spki = requested_spki(pcr);
        podcert_tests::kubelet::check_issued(&pcr["status"], &spki, &spiffe_id, &bundle)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        cases.push(IssuedCase::from_status(
            name,
            &pcr["status"],
            &bundle,
            &spki,
            &spiffe_id,
            pcr["spec"]["maxExpirationSeconds"].as_i64().unwrap(),
        ));
    }
    assert_go_accepts(&cases);
    for i in 0..n {
        let volume = kubelet
            .mounted(ns, pod, &format!("svid-{i}"), timeout)
            .await;
        let credential = volume.file("credentialbundle.pem");
        let blocks = pem::parse_many(credential).unwrap();
        assert_eq!(blocks[0].tag(), "PRIVATE KEY", "the key comes first");
        assert!(blocks[1..].iter().all(|b| b.tag() == "CERTIFICATE") && blocks.len() >= 2);
        let chain: String = blocks[1..].iter().map(pem::encode).collect();
        openssl_verify(&chain, &bundle).unwrap_or_else(|e| panic!("{pod} svid-{i}: {e}"));
        let key_spki = openssl(
            &["pkey", "-pubout", "-outform", "DER"],
            pem::encode(&blocks[0]).as_bytes(),
        );
        let (_, leaf) = x509_parser::parse_x509_certificate(blocks[1].contents()).unwrap();
        assert_eq!(
            key_spki,
            leaf.public_key().raw,
            "{pod} svid-{i}: the mounted key is the one the leaf certifies"
        );
    }
    pcrs
}

/// The certificates of a PEM bundle as a set: the kubelet merges the bundles a pod selects
/// and writes their certificates in its own order.
pub fn same_certificates(pem_text: &str) -> std::collections::BTreeSet<Vec<u8>> {
    pem::parse_many(pem_text)
        .unwrap()
        .into_iter()
        .map(|b| b.into_contents())
        .collect()
}

/// Every release's kubelet, every key type, against the control plane of `server`.
async fn every_kubelet_against(server: Release, kubelets: &[Release]) {
    every_kubelet_against_with(ApiServerOptions::new(server), kubelets).await;
}

async fn every_kubelet_against_with(options: ApiServerOptions, kubelets: &[Release]) {
    let rc = RealCluster::start_with(options, &[]).await;
    let signer = rc.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(60)).await;
    rc.namespace("shop", &["web"]).await;
    let mut running = Vec::new();
    for release in kubelets {
        let node = format!("node-{}", release.minor());
        let (_, kubelet) = rc.node_with_kubelet(&node, *release).await;
        rc.pod(
            "shop",
            &format!("web-{}", release.minor()),
            "web",
            &node,
            &SUPPORTED,
        )
        .await;
        running.push((release, kubelet));
    }
    for (release, kubelet) in &running {
        let pod = format!("web-{}", release.minor());
        let pcrs = assert_mounted(
            &rc,
            kubelet,
            &signer,
            ("shop", &pod, "web"),
            SUPPORTED.len(),
        )
        .await;
        // The format is the kubelet's own, as the signer read it.
        for pcr in &pcrs {
            let pkix = pcr["spec"]["pkixPublicKey"].is_string();
            assert_eq!(
                pkix,
                release.kubelet_writes_pkix(),
                "{release} kubelet: {:#}",
                pcr["spec"]
            );
        }
        let mut key_types: Vec<String> = pcrs
            .iter()
            .map(|p| key_type_of(&requested_spki(p)))
            .collect();
        key_types.sort();
        let mut want: Vec<String> = SUPPORTED.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(key_types, want, "{release} kubelet");
    }
    // One accepted status write per request, none refused (a terminal status cannot be
    // written twice: the server would have answered 422).
    let pcr = [
        ("resource", "podcertificaterequests"),
        ("subresource", "status"),
    ];
    let refused = rc
        .cp
        .metric_sum(
            "apiserver_request_total",
            &[pcr[0], pcr[1], ("code", "422")],
        )
        .await;
    assert_eq!(
        refused,
        0.0,
        "status writes refused; the signer's log:\n{}",
        signer.log_text()
    );
    let written = rc
        .cp
        .metric_sum(
            "apiserver_request_total",
            &[pcr[0], pcr[1], ("code", "200")],
        )
        .await;
    assert_eq!(written as usize, kubelets.len() * SUPPORTED.len());
}

/// The kubelet's keyType name for a subject key.
fn key_type_of(spki: &[u8]) -> String {
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).unwrap();
    match spki.parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(rsa) => format!("RSA{}", rsa.key_size()),
        x509_parser::public_key::PublicKey::EC(ec) => format!(
            "ECDSAP{}",
            match ec.key_size() {
                256 => 256,
                384 => 384,
                _ => 521,
            }
        ),
        _ => "ED25519".into(),
    }
}

use x509_parser::prelude::FromDer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelets_of_1_35_1_36_and_1_37_against_api_server_1_37() {
    every_kubelet_against(Release::V1_37, &Release::ALL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_of_1_35_against_api_server_1_35() {
    every_kubelet_against(Release::V1_35, &[Release::V1_35]).await;
}

/// A 1.37 cluster as it comes: `v1` only (no `--runtime-config`), so the signer reads
/// requests through `v1`, and kubelets of 1.36 (which write through `v1beta1`) cannot file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_of_1_37_against_api_server_1_37_serving_v1_only() {
    let mut options = ApiServerOptions::new(Release::V1_37);
    options.serve_v1beta1 = false;
    every_kubelet_against_with(options, &[Release::V1_37]).await;
}
