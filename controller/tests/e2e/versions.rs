//! Served versions: v1alpha1 (1.34), v1beta1 (1.35/1.36), v1 + v1beta1 (1.37), and clusters
//! that serve no ClusterTrustBundle or no PodCertificateRequest API.

use std::time::Duration;

use podcert_tests::apiserver::ServerOptions;
use podcert_tests::kubelet::Format;

use crate::support::*;

/// Runs all key types through `version` on a server serving `options`, expecting all issued.
async fn issue_all_through(options: ServerOptions, version: &str, formats: &[Format]) -> Cluster {
    let cluster = Cluster::start(options).await;
    let signer = cluster.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(30)).await;
    let pods: Vec<_> = all_key_types("versions")
        .into_iter()
        .filter(|p| formats.contains(&p.format))
        .collect();
    let (created, outcomes) = run_burst(&cluster, version, &pods, Duration::from_secs(30)).await;
    let bundle = cluster.trust_bundle().await;
    assert_scenario_invariants(&cluster, &created, &outcomes, &bundle);
    assert_eq!(
        count_issued(&outcomes),
        pods.len(),
        "log:\n{}",
        signer.log_text()
    );
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_1_37_serving_v1_and_v1beta1() {
    issue_all_through(ServerOptions::v1_and_v1beta1(), "v1", &[Format::Csr]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_1_34_serving_v1alpha1() {
    issue_all_through(ServerOptions::v1alpha1(), "v1alpha1", &[Format::Pkix]).await;
}

/// A cluster that serves only v1, holding requests a 1.35 kubelet filed (pkix + proof).
/// Upstream conversion drops their key material on the way to v1, so the signer cannot read
/// them: it must not deny them (not the requester's fault) but leave them pending and say
/// so, while it issues the stub-CSR requests beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_1_35_kubelets_read_through_v1_stay_pending_and_are_reported() {
    let cluster = Cluster::start(ServerOptions::v1_only()).await;
    let signer = cluster.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(30)).await;
    let pkix: Vec<_> = all_key_types("upgraded")
        .into_iter()
        .filter(|p| p.format == Format::Pkix)
        .collect();
    let bodies = cluster.kubelet("v1beta1").bodies(&pkix);
    for (i, (mut body, _)) in bodies.into_iter().enumerate() {
        body["metadata"]["name"] = format!("req-old-{i}").into();
        body["metadata"]["uid"] = format!("uid-{i}").into();
        cluster
            .server
            .put("podcertificaterequests", "upgraded", body);
    }
    let fresh: Vec<_> = all_key_types("fresh")
        .into_iter()
        .filter(|p| p.format == Format::Csr)
        .collect();
    let (created, outcomes) = run_burst(&cluster, "v1", &fresh, Duration::from_secs(30)).await;
    assert_eq!(count_issued(&outcomes), created.len());
    let reported = cluster
        .wait_for_events("KeyMaterialNotServed", pkix.len(), Duration::from_secs(20))
        .await;
    assert!(reported[0]["note"].as_str().unwrap().contains("v1beta1"));
    for old in cluster
        .server
        .list("podcertificaterequests")
        .iter()
        .filter(|p| p["metadata"]["namespace"] == "upgraded")
    {
        assert!(old.get("status").is_none(), "written: {old:#}");
    }
    assert!(
        signer
            .metric("podcert_unreadable_requests_total{reason=\"KeyMaterialNotServed\"}")
            .await
            >= Some(pkix.len() as f64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_cluster_trust_bundle_api_signing_goes_on() {
    let mut options = ServerOptions::v1beta1();
    options.ctb_versions.clear();
    let cluster = Cluster::start(options).await;
    let signer = cluster.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(30)).await;
    let (_, outcomes) = run_burst(
        &cluster,
        "v1beta1",
        &plain_burst("no-ctb", 5),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(count_issued(&outcomes), 5);
    assert!(
        signer
            .log_text()
            .contains("the cluster serves no ClusterTrustBundle API"),
        "{}",
        signer.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pod_certificate_api_the_signer_says_what_to_enable() {
    let mut options = ServerOptions::v1beta1();
    options.pcr_versions.clear();
    let cluster = Cluster::start(options).await;
    let mut signer = cluster.signer("a", &[]);
    assert_eq!(signer.wait_exit(Duration::from_secs(20)), Some(1));
    let log = signer.log_text();
    assert!(
        log.contains("PodCertificateRequest=true")
            && log.contains(
                "--runtime-config=certificates.k8s.io/v1beta1/podcertificaterequests=true"
            ),
        "{log}"
    );
}
