//! The identity policy against real objects: namespaces selected by their labels (a label
//! added later takes effect), Service DNS names from the Services whose selectors match the
//! pod as the real server stores them, and the RBAC the two components add — and nothing more
//! — is what the real authorizers grant.

use std::time::Duration;

use podcert_tests::control_plane::{ApiServerOptions, Release};
use serde_json::json;

use crate::cluster::{RealCluster, TRUST_DOMAIN, terminal};

const POLICY: &str = "\
rules:
  - name: payments
    namespaces:
      selector: {matchLabels: {team: payments}}
    serviceAccounts:
      deny: [default]
    lifetime: 6h
    dnsNames: {services: true}
";

fn service(ns: &str, name: &str, selector: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": selector, "ports": [{"port": 443}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_by_label_and_service_names_from_real_services() {
    let rc = RealCluster::start_with(
        ApiServerOptions::new(Release::V1_37),
        &["identity-policy", "service-dns-names"],
    )
    .await;
    let policy = rc.cp.dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let signer = rc.signer("a", &["--identity-policy", policy.to_str().unwrap()]);
    signer.wait_ready(Duration::from_secs(60)).await;

    rc.cp
        .create(podcert_tests::control_plane::objects::namespace_labelled(
            "pay",
            json!({"team": "payments"}),
        ))
        .await;
    rc.cp
        .create(podcert_tests::control_plane::objects::service_account(
            "pay", "api",
        ))
        .await;
    rc.namespace("free", &["api"]).await;
    rc.cp
        .create(service("pay", "checkout", json!({"app": "web-0"})))
        .await;
    rc.cp
        .create(service("pay", "elsewhere", json!({"app": "nobody"})))
        .await;
    let (_, kubelet) = rc.node_with_kubelet("node-a", Release::V1_37).await;
    rc.pod("pay", "web-0", "api", "node-a", &["ECDSAP256"])
        .await;
    rc.pod("free", "web-0", "api", "node-a", &["ECDSAP256"])
        .await;

    let issued = rc
        .terminal_pcrs("pay", "web-0", 1, Duration::from_secs(60), &signer)
        .await;
    assert_eq!(
        terminal(&issued[0]).unwrap().0,
        "Issued",
        "{:#}",
        issued[0]["status"]
    );
    let chain = issued[0]["status"]["certificateChain"].as_str().unwrap();
    let leaf = pem::parse_many(chain).unwrap().remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.contents()).unwrap();
    let mut dns = Vec::new();
    let mut uris = Vec::new();
    for name in &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
    {
        match name {
            x509_parser::extensions::GeneralName::DNSName(d) => dns.push(d.to_string()),
            x509_parser::extensions::GeneralName::URI(u) => uris.push(u.to_string()),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    dns.sort();
    assert_eq!(dns, ["checkout.pay.svc", "checkout.pay.svc.cluster.local"]);
    assert_eq!(uris, [format!("spiffe://{TRUST_DOMAIN}/ns/pay/sa/api")]);
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 6 * 3600, "the rule's lifetime");
    kubelet
        .mounted("pay", "web-0", "svid-0", Duration::from_secs(30))
        .await;

    let denied = rc
        .terminal_pcrs("free", "web-0", 1, Duration::from_secs(60), &signer)
        .await;
    assert_eq!(
        terminal(&denied[0]),
        Some(("Denied".into(), "NotAllowedByPolicy".into()))
    );

    // The namespace gains the label: its next pod is allowed.
    rc.cp
        .kubectl(&["label", "namespace", "free", "team=payments"], None)
        .unwrap();
    // (The rule asks for Service names: a pod no Service selects waits for one.)
    rc.cp
        .create(service("free", "shop", json!({"app": "web-1"})))
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    rc.pod("free", "web-1", "api", "node-a", &["ED25519"]).await;
    let later = rc
        .terminal_pcrs("free", "web-1", 1, Duration::from_secs(60), &signer)
        .await;
    assert_eq!(
        terminal(&later[0]).unwrap().0,
        "Issued",
        "{:#}",
        later[0]["status"]
    );
}
