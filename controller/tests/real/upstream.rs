//! An upstream authority: cert-manager's CA issuer — its controller built from cert-manager's
//! Go module — certifies the signing intermediates, and pods trust the organisation's root,
//! never one of ours. The signer runs with `manifests/components/upstream-cert-manager` (its
//! RBAC and settings, as a user adds them); a security team's approver is played by the test,
//! which approves or denies each CertificateRequest as `cmctl approve`/`deny` would.

use std::time::Duration;

use podcert_tests::control_plane::cert_manager::{CertManager, Verdict};
use podcert_tests::control_plane::kubelet::PodcertKubelet;
use podcert_tests::control_plane::{ApiServerOptions, Release};
use podcert_tests::fixtures::intermediate_ca_pem_with_path_len;
use podcert_tests::oracles::openssl_verify;
use serde_json::json;

use crate::cluster::RealCluster;
use crate::issuance::{assert_mounted, same_certificates};
use crate::support::{CA_NS, SignerProcess};

/// The Issuer `manifests/components/upstream-cert-manager/upstream.env` names.
const ISSUER: &str = "podcert-signer-upstream";
const MINUTE: Duration = Duration::from_secs(60);

/// The organisation's CA as cert-manager's CA Issuer holds it in Secret `secret` (created, or
/// replaced): `tls.crt` the issuing CA followed by its root, `tls.key` the issuing CA's key.
/// Returns the root, PEM.
async fn org_ca(rc: &RealCluster, secret: &str, name: &str) -> String {
    let (issuing, key, root) = intermediate_ca_pem_with_path_len(name, 1);
    let object = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": secret, "namespace": CA_NS},
        "stringData": {"tls.crt": format!("{issuing}{root}"), "tls.key": key},
    });
    rc.cp
        .kubectl(&["apply", "-f", "-"], Some(&object.to_string()))
        .unwrap_or_else(|e| panic!("the organisation's CA Secret: {e}"));
    root
}

/// Our CertificateRequests still stored.
async fn requests(rc: &RealCluster) -> Vec<String> {
    rc.cp
        .list("cert-manager.io/v1", "CertificateRequest")
        .await
        .into_iter()
        .filter(|cr| cr["metadata"]["namespace"] == CA_NS)
        .map(|cr| cr["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

async fn not_ready_for(signer: &SignerProcess, d: Duration) {
    let until = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < until {
        assert_ne!(
            signer.admin("/ready").await.map(|(c, _)| c),
            Some(200),
            "ready without a certified intermediate; log:\n{}",
            signer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn cert_manager_certifies_the_intermediates_through_denial_outage_and_a_root_rotation() {
    let rc = RealCluster::start_with(
        ApiServerOptions::new(Release::V1_37),
        &["upstream-cert-manager"],
    )
    .await;
    let mut cm = CertManager::start(&rc.cp, false).await;
    let root1 = org_ca(&rc, "org-ca", "Org CA 1").await;
    rc.cp
        .create(json!({
            "apiVersion": "cert-manager.io/v1", "kind": "Issuer",
            "metadata": {"name": ISSUER, "namespace": CA_NS},
            "spec": {"ca": {"secretName": "org-ca"}},
        }))
        .await;
    let mut signer = rc.signer("a", &[]);

    // The security team denies the first request: a Warning Event on it, counted, and no
    // signing without a certified intermediate.
    let denied = cm.decide(&rc.cp, CA_NS, Verdict::Denied, MINUTE).await;
    let event = rc.event("UpstreamDenied", MINUTE, &signer).await;
    assert_eq!(
        event["involvedObject"]["name"],
        denied.as_str(),
        "{event:#}"
    );
    assert_eq!(event["involvedObject"]["kind"], "CertificateRequest");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .contains("Denied by the test's approver"),
        "{event:#}"
    );
    assert_eq!(
        signer
            .labelled_metric("podcert_upstream_requests_total", "outcome=\"denied\"")
            .await,
        Some(1.0)
    );
    not_ready_for(&signer, Duration::from_secs(2)).await;

    // It asks again (replacing the denied request); approved, cert-manager issues, and pods
    // get certificates that verify — with openssl and Go — to the organisation's root, which
    // is all the trust bundle holds. No root of ours exists: no CA Secret.
    let approved = cm.decide(&rc.cp, CA_NS, Verdict::Approved, MINUTE).await;
    assert_ne!(approved, denied);
    signer.wait_ready(MINUTE).await;
    assert_eq!(
        same_certificates(&rc.trust_bundle().await),
        same_certificates(&root1)
    );
    assert!(rc.ca_secret().await.is_none(), "no root of ours");
    assert!(
        requests(&rc).await.is_empty(),
        "answered and refused requests are cleaned up: {:?}",
        requests(&rc).await
    );
    rc.namespace("shop", &["web"]).await;
    let (_, kubelet) = rc.node_with_kubelet("node-a", Release::V1_37).await;
    rc.pod("shop", "web-1", "web", "node-a", &["ECDSAP256", "RSA3072"])
        .await;
    let pcrs = assert_mounted(&rc, &kubelet, &signer, ("shop", "web-1", "web"), 2).await;
    for pcr in &pcrs {
        let chain = pcr["status"]["certificateChain"].as_str().unwrap();
        let certs = same_certificates(chain);
        assert_eq!(
            certs.len(),
            3,
            "leaf, our intermediate, the org's issuing CA"
        );
        openssl_verify(chain, &root1).unwrap();
    }

    // A standby holds its own certified intermediate before it may lead: its request is
    // approved too, and then it is ready.
    let standby = rc.signer("b", &[]);
    cm.decide(&rc.cp, CA_NS, Verdict::Approved, MINUTE).await;
    standby.wait_ready(MINUTE).await;

    // An upstream outage: cert-manager stops, and signing goes on with the current
    // intermediate — and through a failover: the leader killed, the standby takes over and
    // signs at once with the intermediate it holds.
    cm.stop();
    rc.pod("shop", "web-2", "web", "node-a", &["ED25519"]).await;
    assert_mounted(&rc, &kubelet, &signer, ("shop", "web-2", "web"), 1).await;
    signer.kill();
    let signer = standby;
    rc.pod("shop", "web-3", "web", "node-a", &["ECDSAP256"])
        .await;
    assert_mounted(&rc, &kubelet, &signer, ("shop", "web-3", "web"), 1).await;
    assert!(
        signer.log_text().contains("became the leader"),
        "the standby signed as the leader"
    );

    // The organisation rotates its CA while cert-manager is down. With cert-manager back (its
    // own approver on, as a default install runs), a new leadership term is certified under
    // the new CA, and the trust bundle publishes the new root — beside the old one, kept for
    // the leaves already issued under it — before any leaf chains to it.
    let root2 = org_ca(&rc, "org-ca", "Org CA 2").await;
    cm.run(true);
    let mut signer = signer;
    signer.terminate();
    let signer = rc.signer("c", &[]);
    signer.wait_ready(2 * MINUTE).await;
    a_rotated_root_reaches_pods_before_leaves_use_it(&rc, &kubelet, &signer, &root1, &root2).await;
    assert!(requests(&rc).await.is_empty(), "{:?}", requests(&rc).await);
}

/// After an upstream's root changed from `old` to `new` and a new term of `signer` is
/// certified under it: the bundle publishes the new root beside the old one (kept for the
/// leaves issued under it), the kubelet projects it into the running pod `shop/web-1`'s trust
/// volume (its refresh pass, stepped here) before the next pod starts, and that pod's leaf
/// (`shop/web-4`) chains to the new root only.
pub async fn a_rotated_root_reaches_pods_before_leaves_use_it(
    rc: &RealCluster,
    kubelet: &PodcertKubelet,
    signer: &SignerProcess,
    old: &str,
    new: &str,
) {
    let published = same_certificates(&rc.trust_bundle().await);
    assert!(
        published.is_superset(&same_certificates(new)),
        "the new root is published"
    );
    assert!(
        published.is_superset(&same_certificates(old)),
        "the old root stays while its leaves are valid"
    );
    let deadline = tokio::time::Instant::now() + MINUTE;
    while same_certificates(
        kubelet
            .read_volume("shop", "web-1", "trust")
            .file("bundle.pem"),
    ) != published
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kubelet did not project the new bundle"
        );
        kubelet.advance(Duration::from_secs(1)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rc.pod("shop", "web-4", "web", "node-a", &["ECDSAP384"])
        .await;
    let pcrs = assert_mounted(rc, kubelet, signer, ("shop", "web-4", "web"), 1).await;
    let chain = pcrs[0]["status"]["certificateChain"].as_str().unwrap();
    openssl_verify(chain, new).unwrap();
    assert!(
        openssl_verify(chain, old).is_err(),
        "the new leaf chains to the new root only"
    );
}
