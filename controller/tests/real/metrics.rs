//! `/metrics` over HTTPS on the real API server (issue 31): the signer asks kube-apiserver who
//! each caller is (TokenReview) and whether it may get `/metrics` (SubjectAccessReview), so a
//! ServiceAccount bound to the shipped ClusterRole `podcert-signer-metrics-reader` scrapes, one
//! without it gets 403, and no token or a token the API server does not know gets 401; the
//! plain admin port keeps the probes and no longer serves `/metrics`.

use std::net::SocketAddr;
use std::time::Duration;

use podcert_tests::control_plane::Release;
use podcert_tests::https::{WebCert, get_with};

use crate::cluster::RealCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_callers_the_api_server_authorizes_read_the_metrics() {
    let rc = RealCluster::start(Release::V1_37).await;
    let web = WebCert::generate("metrics CA");
    let (cert, key) = (
        rc.cp.dir.path().join("metrics.crt"),
        rc.cp.dir.path().join("metrics.key"),
    );
    std::fs::write(&cert, &web.cert_pem).unwrap();
    std::fs::write(&key, &web.key_pem).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", podcert_tests::free_port())
        .parse()
        .unwrap();
    let (addr_flag, cert_flag, key_flag) = (
        addr.to_string(),
        cert.display().to_string(),
        key.display().to_string(),
    );
    let signer = rc.signer(
        "a",
        &[
            "--secure-metrics-addr",
            &addr_flag,
            "--secure-metrics-cert",
            &cert_flag,
            "--secure-metrics-key",
            &key_flag,
        ],
    );
    signer.wait_ready(Duration::from_secs(60)).await;

    rc.namespace("monitoring", &["prometheus", "stranger"])
        .await;
    rc.cp
        .create(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "prometheus-reads-podcert-signer"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "podcert-signer-metrics-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}],
        }))
        .await;
    let token = |sa: &str| {
        std::fs::read_to_string(rc.cp.dir.path().join(format!("token-monitoring-{sa}"))).unwrap()
    };
    rc.cp.service_account("monitoring", "prometheus").await;
    rc.cp.service_account("monitoring", "stranger").await;
    let (prometheus, stranger) = (token("prometheus"), token("stranger"));
    let ca = web.ca_pem.clone();
    let scrape = async |bearer: Option<&str>| get_with(addr, &ca, "/metrics", bearer).await;

    // The binding reaches the API server's authorizer at once; allow it a moment all the same.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (code, body) = loop {
        let (code, body) = scrape(Some(&prometheus)).await.unwrap();
        if code == 200 || tokio::time::Instant::now() > deadline {
            break (code, body);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let body = String::from_utf8(body).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("podcert_leader"), "{body}");

    let (code, body) = scrape(Some(&stranger)).await.unwrap();
    let body = String::from_utf8(body).unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("system:serviceaccount:monitoring:stranger")
            && body.contains("podcert-signer-metrics-reader"),
        "{body}"
    );
    assert_eq!(scrape(None).await.unwrap().0, 401, "no token");
    assert_eq!(
        scrape(Some("not-a-token")).await.unwrap().0,
        401,
        "a token the API server does not know"
    );
    // The probes stay on the plain admin port, which no longer serves /metrics.
    assert_eq!(signer.admin("/ready").await.map(|r| r.0), Some(200));
    assert_eq!(signer.admin("/metrics").await.map(|r| r.0), Some(404));
}
