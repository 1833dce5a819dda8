//! End to end: the real podcert-signer binary against the test API server, with requests
//! filed by the kubelet emulator. Every scenario ends with the same checks: nothing left
//! pending that should be issued, no `Failed` for a transient cause, no status the API server
//! rejected, no certificate issued twice, and the CA Secret intact.

mod support;

use std::time::Duration;

use podcert_tests::apiserver::ServerOptions;
use podcert_tests::kubelet::{Created, Format, PodRequest, Tamper, Terminal, check_issued};
use podcert_tests::oracles::{IssuedCase, go_judge};
use support::*;

const SUPPORTED: [&str; 6] = [
    "ED25519",
    "ECDSAP256",
    "ECDSAP384",
    "ECDSAP521",
    "RSA3072",
    "RSA4096",
];

fn spiffe_id(p: &PodRequest) -> String {
    format!(
        "spiffe://{TRUST_DOMAIN}/ns/{}/sa/{}",
        p.namespace, p.service_account
    )
}

/// Every key type in both formats, in namespace `ns`.
fn all_key_types(ns: &str) -> Vec<PodRequest> {
    let mut pods = Vec::new();
    for (i, kt) in SUPPORTED.iter().enumerate() {
        for format in [Format::Pkix, Format::Csr] {
            pods.push(PodRequest::new(
                ns,
                &format!("pod-{i}-{format:?}").to_lowercase(),
                &format!("sa-{i}"),
                kt,
                format,
            ));
        }
    }
    pods
}

/// The closing checks of every scenario.
fn assert_scenario_invariants(
    cluster: &Cluster,
    created: &[Created],
    outcomes: &[Option<Terminal>],
    trust_bundle: &str,
) {
    for (c, o) in created.iter().zip(outcomes) {
        let t = o
            .as_ref()
            .unwrap_or_else(|| panic!("{}/{} still pending", c.namespace, c.name));
        assert_ne!(t.condition(), "Failed", "{}: Failed {:?}", c.name, t.status);
        if t.condition() == "Issued" {
            check_issued(&t.status, &c.spki_der, &spiffe_id(&c.request), trust_bundle)
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        }
    }
    let writes = cluster.server.writes();
    let rejected: Vec<_> = writes
        .iter()
        .filter(|w| w.path.ends_with("/status") && w.status == 422)
        .collect();
    assert!(
        rejected.is_empty(),
        "the API server rejected status writes: {rejected:#?}"
    );
    // A status, once terminal, cannot be rewritten (the server refuses it): so each request
    // was answered by exactly one accepted status write.
    for c in created {
        let accepted = writes
            .iter()
            .filter(|w| w.path.ends_with(&format!("/{}/status", c.name)) && w.status == 200)
            .count();
        assert!(
            accepted <= 1,
            "{}: {accepted} accepted status writes",
            c.name
        );
    }
    let secret = cluster
        .server
        .get("secrets", CA_NS, CA_NAME)
        .expect("the CA Secret exists");
    assert!(
        secret["data"]["tls.key"]
            .as_str()
            .is_some_and(|k| !k.is_empty()),
        "CA Secret intact"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_type_in_both_formats_is_issued_and_verifies() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let signer = cluster.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(30)).await;
    let tracker = cluster.tracker("v1beta1");
    let pods = all_key_types("payments");
    let created = cluster
        .kubelet("v1beta1")
        .create_all(&pods, 4)
        .await
        .unwrap();
    let outcomes = tracker.wait_all(&created, Duration::from_secs(30)).await;
    let bundle = cluster.trust_bundle().await;
    assert_scenario_invariants(&cluster, &created, &outcomes, &bundle);

    let mut cases = Vec::new();
    for (c, o) in created.iter().zip(&outcomes) {
        let t = o.as_ref().unwrap();
        assert_eq!(
            t.condition(),
            "Issued",
            "{}: {:?}",
            c.request.key_type,
            t.status
        );
        let ts = |k: &str| {
            t.status[k]
                .as_str()
                .unwrap()
                .parse::<k8s_openapi::jiff::Timestamp>()
                .unwrap()
                .as_second()
        };
        cases.push(IssuedCase {
            name: format!("{}/{:?}", c.request.key_type, c.request.format),
            chain_pem: t.status["certificateChain"].as_str().unwrap().into(),
            roots_pem: bundle.clone(),
            spki_der: c.spki_der.clone(),
            spiffe_id: spiffe_id(&c.request),
            not_before: ts("notBefore"),
            not_after: ts("notAfter"),
            begin_refresh_at: ts("beginRefreshAt"),
            max_expiration_seconds: c.request.max_expiration_seconds,
        });
    }
    for v in go_judge(&cases) {
        assert!(
            v.error.is_empty(),
            "Go crypto/x509 rejects {}: {}",
            v.name,
            v.error
        );
    }
    // The CA was created once, and the trust bundle names the signer.
    let creates = cluster
        .server
        .writes()
        .iter()
        .filter(|w| w.method == "POST" && w.path.ends_with("/secrets"))
        .count();
    assert_eq!(creates, 1);
    let ctb = cluster
        .server
        .get("clustertrustbundles", "", CTB_NAME)
        .unwrap();
    assert_eq!(ctb["spec"]["signerName"], SIGNER);
    let (code, metrics) = signer.admin("/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains(
            "podcert_requests_total{outcome=\"issued\",key_type=\"ECDSAP256\",reason=\"Issued\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_denied_with_the_right_reason() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let signer = cluster.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(30)).await;
    let tracker = cluster.tracker("v1beta1");
    let bad = |kt: &str, format, tamper| {
        let mut p = PodRequest::new("default", "bad", "sa", kt, format);
        p.tamper = tamper;
        p
    };
    let cases = [
        (
            bad("ECDSAP256", Format::Pkix, Tamper::ForgedProof),
            "InvalidProofOfPossession",
        ),
        (
            bad("RSA3072", Format::Pkix, Tamper::ForgedProof),
            "InvalidProofOfPossession",
        ),
        (
            bad("ED25519", Format::Pkix, Tamper::OtherPodUid),
            "InvalidProofOfPossession",
        ),
        (
            bad("ECDSAP384", Format::Csr, Tamper::NonEmptyCsr),
            "InvalidStubPKCS10Request",
        ),
        (
            bad("ECDSAP256", Format::Csr, Tamper::UnknownAnnotation),
            "InvalidUnverifiedUserAnnotations",
        ),
        (
            bad("RSA2048", Format::Pkix, Tamper::None),
            "UnsupportedKeyType",
        ),
        (
            bad("ECDSAP224", Format::Csr, Tamper::None),
            "UnsupportedKeyType",
        ),
    ];
    let pods: Vec<_> = cases.iter().map(|(p, _)| p.clone()).collect();
    let created = cluster
        .kubelet("v1beta1")
        .create_all(&pods, 4)
        .await
        .unwrap();
    let outcomes = tracker.wait_all(&created, Duration::from_secs(30)).await;
    let bundle = cluster.trust_bundle().await;
    assert_scenario_invariants(&cluster, &created, &outcomes, &bundle);
    for ((_, want), o) in cases.iter().zip(&outcomes) {
        let t = o.as_ref().unwrap();
        assert_eq!(
            (t.condition(), t.reason()),
            ("Denied", *want),
            "{:?}",
            t.status
        );
    }
    // Each denial also becomes a Warning Event.
    let events = cluster.server.list("events");
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "InvalidProofOfPossession" && e["type"] == "Warning"),
        "{events:#?}"
    );
}
