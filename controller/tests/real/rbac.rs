//! Least privilege, judged by the real RBAC and Node authorizers: the shipped RBAC is enough
//! (every other theme runs under it), and a ClusterRole without `sign` or without `attest`
//! gives the specific answer the signer promises — nothing issued under an unpublished root,
//! the refusal named in an Event and a metric — and work resumes once the grant is back.

use std::time::Duration;

use podcert_tests::control_plane::Release;
use serde_json::Value;

use crate::cluster::{RealCluster, terminal};
use crate::support::CTB_NAME;

/// The shipped ClusterRole with `verb` taken off its signers rule; returns the original.
fn revoke(rc: &RealCluster, verb: &str) -> Value {
    let text = rc
        .cp
        .kubectl(
            &["get", "clusterrole", "podcert-signer", "-o", "json"],
            None,
        )
        .unwrap();
    let original: Value = serde_json::from_str(&text).unwrap();
    let mut role = original.clone();
    for rule in role["rules"].as_array_mut().unwrap() {
        if rule["resources"][0] == "signers" {
            let verbs = rule["verbs"].as_array_mut().unwrap();
            assert!(
                verbs.iter().any(|v| v == verb),
                "the shipped rule grants {verb}"
            );
            verbs.retain(|v| v != verb);
        }
    }
    rc.cp
        .kubectl(&["replace", "-f", "-"], Some(&role.to_string()))
        .unwrap();
    original
}

fn restore(rc: &RealCluster, original: &Value) {
    let mut role = original.clone();
    role["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    rc.cp
        .kubectl(&["apply", "-f", "-"], Some(&role.to_string()))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_sign_the_status_write_is_refused_by_name_then_issued_once_granted() {
    let rc = RealCluster::start(Release::V1_37).await;
    let original = revoke(&rc, "sign");
    let signer = rc.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(60)).await;
    rc.namespace("shop", &["web"]).await;
    let (_, kubelet) = rc.node_with_kubelet("node-a", Release::V1_37).await;
    rc.pod("shop", "web-0", "web", "node-a", &["ECDSAP256"])
        .await;

    let event = rc
        .event("SignForbidden", Duration::from_secs(60), &signer)
        .await;
    assert_eq!(
        event["involvedObject"]["kind"], "PodCertificateRequest",
        "{event:#}"
    );
    assert!(
        event["message"].as_str().unwrap().contains("sign"),
        "{event:#}"
    );
    assert!(
        signer
            .labelled_metric("podcert_reconcile_errors_total", "error=\"sign_forbidden\"")
            .await
            .unwrap()
            >= 1.0
    );
    // Nothing was written: the request still waits, and the pod has no credential.
    let pcrs = rc.pcrs("shop").await;
    assert_eq!(pcrs.len(), 1);
    assert_eq!(terminal(&pcrs[0]), None, "{:#}", pcrs[0]);
    assert!(
        kubelet
            .read_volume("shop", "web-0", "svid-0")
            .files
            .is_empty()
    );

    restore(&rc, &original);
    let issued = rc
        .terminal_pcrs("shop", "web-0", 1, Duration::from_secs(120), &signer)
        .await;
    assert_eq!(terminal(&issued[0]).unwrap().0, "Issued");
    kubelet
        .mounted("shop", "web-0", "svid-0", Duration::from_secs(30))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_attest_nothing_is_signed_and_the_refusal_is_named_then_published_once_granted() {
    let rc = RealCluster::start(Release::V1_37).await;
    let original = revoke(&rc, "attest");
    let signer = rc.signer("a", &[]);
    rc.namespace("shop", &["web"]).await;
    let (_, kubelet) = rc.node_with_kubelet("node-a", Release::V1_37).await;
    rc.pod("shop", "web-0", "web", "node-a", &["ED25519"]).await;

    let event = rc
        .event("AttestForbidden", Duration::from_secs(60), &signer)
        .await;
    assert!(
        event["message"].as_str().unwrap().contains("attest"),
        "{event:#}"
    );
    let ctb_version = format!("certificates.k8s.io/{}", rc.ctb_version());
    assert!(
        rc.cp
            .get(&ctb_version, "ClusterTrustBundle", "", CTB_NAME)
            .await
            .is_none()
    );
    // Never a certificate under a root nobody can trust yet: the request the kubelet files
    // (perhaps after the Event, which refusing the bundle raises) is left waiting while the
    // signer keeps trying to publish.
    rc.filed("shop", "web-0", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pcrs = rc.pcrs("shop").await;
    assert_eq!(pcrs.len(), 1);
    assert_eq!(terminal(&pcrs[0]), None, "{:#}", pcrs[0]);

    restore(&rc, &original);
    let issued = rc
        .terminal_pcrs("shop", "web-0", 1, Duration::from_secs(120), &signer)
        .await;
    assert_eq!(terminal(&issued[0]).unwrap().0, "Issued");
    kubelet
        .mounted("shop", "web-0", "svid-0", Duration::from_secs(30))
        .await;
}
