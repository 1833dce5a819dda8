//! Leadership on the real server: two replicas under the shipped Lease RBAC; the leader
//! killed with `kill -9` mid-burst leaves no request issued twice and none waiting; and a new
//! leader that inherits a backlog, with nothing new arriving, issues it at once — the real
//! server sends watch bookmarks about once a minute, so a wake-up that waited for a later
//! event would show here as a minute's stall.

use std::time::{Duration, Instant};

use podcert_tests::control_plane::Release;
use podcert_tests::control_plane::process::signal;

use crate::cluster::{RealCluster, terminal};
use crate::support::{CA_NS, SignerProcess};

async fn lease_holder(rc: &RealCluster) -> Option<String> {
    rc.cp
        .get("coordination.k8s.io/v1", "Lease", CA_NS, "podcert-signer")
        .await
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

async fn wait_holder(rc: &RealCluster, want: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while lease_holder(rc).await.as_deref() != Some(want) {
        assert!(
            Instant::now() < deadline,
            "{want} did not take the Lease within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The pods `web-0..n` on `node`, one Ed25519 certificate each.
async fn pods(rc: &RealCluster, n: usize, node: &str) {
    for i in 0..n {
        rc.pod("shop", &format!("web-{i}"), "web", node, &["ED25519"])
            .await;
    }
}

async fn accepted_status_writes(rc: &RealCluster) -> f64 {
    rc.cp
        .metric_sum(
            "apiserver_request_total",
            &[
                ("resource", "podcertificaterequests"),
                ("subresource", "status"),
                ("code", "200"),
            ],
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_burst_leaves_nothing_issued_twice_or_waiting() {
    let rc = RealCluster::start(Release::V1_37).await;
    let mut a = rc.signer("a", &[]);
    wait_holder(&rc, &a.identity, Duration::from_secs(60)).await;
    let b = rc.signer("b", &[]);
    b.wait_ready(Duration::from_secs(60)).await;
    rc.namespace("shop", &["web"]).await;
    let (_, kubelet) = rc.node_with_kubelet("node-a", Release::V1_37).await;
    let n = 30;
    pods(&rc, n, "node-a").await;
    // Mid-burst: once the first certificates are out, the leader dies without a word.
    kubelet
        .mounted("shop", "web-0", "svid-0", Duration::from_secs(60))
        .await;
    a.kill();
    wait_holder(&rc, &b.identity, Duration::from_secs(30)).await;
    for i in 0..n {
        rc.terminal_pcrs("shop", &format!("web-{i}"), 1, Duration::from_secs(60), &b)
            .await;
        kubelet
            .mounted(
                "shop",
                &format!("web-{i}"),
                "svid-0",
                Duration::from_secs(30),
            )
            .await;
    }
    let pcrs = rc.pcrs("shop").await;
    assert_eq!(
        pcrs.len(),
        n,
        "one request per pod: none failed and was filed again"
    );
    assert!(pcrs.iter().all(|p| terminal(p).unwrap().0 == "Issued"));
    // A terminal status is never rewritten (the server would refuse it), so one accepted
    // status write per request means none was issued twice.
    assert_eq!(
        accepted_status_writes(&rc).await as usize,
        n,
        "b's log:\n{}",
        b.log_text()
    );
}

/// Files `n` requests while the leader is frozen (it holds the Lease but does nothing),
/// then kills it: the standby inherits a backlog and nothing new arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_issues_an_inherited_backlog_at_once() {
    let rc = RealCluster::start(Release::V1_37).await;
    // The default lease: the backlog is filed well before the frozen leader's Lease expires.
    let lease = ["--lease-duration", "15s", "--lease-renew-interval", "5s"];
    let mut a = rc.signer("a", &lease);
    wait_holder(&rc, &a.identity, Duration::from_secs(60)).await;
    let b = rc.signer("b", &lease);
    b.wait_ready(Duration::from_secs(60)).await;
    rc.namespace("shop", &["web"]).await;
    let (_, _kubelet) = rc.node_with_kubelet("node-a", Release::V1_37).await;
    signal(a.child.id(), "STOP");
    let n = 20;
    pods(&rc, n, "node-a").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while rc.pcrs("shop").await.len() < n {
        assert!(
            Instant::now() < deadline,
            "the kubelet did not file {n} requests"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rc.pcrs("shop").await.iter().all(|p| terminal(p).is_none()));
    a.kill();
    let waited = Instant::now();
    wait_holder(&rc, &b.identity, Duration::from_secs(30)).await;
    let took_over = Instant::now();
    let last = backlog_issued(&rc, n, &b).await;
    eprintln!(
        "takeover {:?} after the kill; backlog of {n} issued {:?} after the takeover",
        took_over - waited,
        last - took_over
    );
    assert!(
        last - took_over < Duration::from_secs(15),
        "the backlog took {:?} after the takeover; b's log:\n{}",
        last - took_over,
        b.log_text()
    );
}

/// Waits until all `n` requests of namespace shop are Issued; when the last one was seen.
async fn backlog_issued(rc: &RealCluster, n: usize, signer: &SignerProcess) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pcrs = rc.pcrs("shop").await;
        let issued = pcrs
            .iter()
            .filter(|p| terminal(p).is_some_and(|t| t.0 == "Issued"))
            .count();
        if issued == n {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{issued} of {n} issued; the signer's log:\n{}",
            signer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
