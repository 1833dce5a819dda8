//! The control plane restarting under the signer: kube-apiserver stopped and started again,
//! and etcd's history compacted meanwhile — so the signer's watch must start again from a
//! list (410 Gone) — while pods keep asking. Watches resume, every request is issued, none
//! twice.

use std::time::Duration;

use podcert_tests::control_plane::Release;

use crate::cluster::{RealCluster, terminal};

async fn pods(rc: &RealCluster, range: std::ops::Range<usize>) {
    for i in range {
        rc.pod("shop", &format!("web-{i}"), "web", "node-a", &["ECDSAP256"])
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_apiserver_restarted_and_etcd_compacted_mid_run() {
    let rc = RealCluster::start(Release::V1_37).await;
    let signer = rc.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(60)).await;
    rc.namespace("shop", &["web"]).await;
    let (_, kubelet) = rc.node_with_kubelet("node-a", Release::V1_37).await;
    pods(&rc, 0..10).await;
    kubelet
        .mounted("shop", "web-0", "svid-0", Duration::from_secs(60))
        .await;

    // Compacted up to now, then a restart: the new server's watch cache cannot serve the
    // signer's last resourceVersion, so its watch is answered 410 and it lists again.
    rc.cp.compact_etcd().await;
    rc.cp.restart_apiserver(Duration::from_secs(2)).await;
    pods(&rc, 10..20).await;
    rc.cp.compact_etcd().await;
    pods(&rc, 20..25).await;

    for i in 0..25 {
        kubelet
            .mounted(
                "shop",
                &format!("web-{i}"),
                "svid-0",
                Duration::from_secs(90),
            )
            .await;
    }
    let pcrs = rc.pcrs("shop").await;
    assert_eq!(pcrs.len(), 25);
    assert!(pcrs.iter().all(|p| terminal(p).unwrap().0 == "Issued"));
    // The signer counts a decision only when its status write was accepted; the server
    // accepts one terminal status per request. 25 decisions: none lost, none written twice.
    assert_eq!(
        signer.metric_sum("podcert_requests_total").await,
        25.0,
        "the signer's log:\n{}",
        signer.log_text()
    );
    assert!(signer.admin("/ready").await.is_some_and(|(c, _)| c == 200));
}
