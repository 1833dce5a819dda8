//! Issuance: every key type in both proof formats is issued and verifies with Go, openssl and
//! py-spiffe; bad requests are denied with the reason the API defines.

use std::time::Duration;

use podcert_tests::apiserver::ServerOptions;
use podcert_tests::kubelet::{Format, PodRequest, Tamper};
use podcert_tests::oracles::{IssuedCase, assert_go_accepts};

use crate::support::*;

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
        cases.push(IssuedCase::from_status(
            format!("{}/{:?}", c.request.key_type, c.request.format),
            &t.status,
            &bundle,
            &c.spki_der,
            &spiffe_id(&c.request),
            c.request.max_expiration_seconds,
        ));
    }
    assert_go_accepts(&cases);
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
    // kube-apiserver refuses most of these at admission; a privileged or compromised path
    // could still create them, and the signer must deny them itself.
    let created = cluster
        .unchecked_kubelet("v1beta1")
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
    // Each denial also becomes a Warning Event (published just after its status write).
    let event = cluster
        .wait_for_event("InvalidProofOfPossession", Duration::from_secs(10))
        .await;
    assert_eq!(event["type"], "Warning", "{event:#}");
}
