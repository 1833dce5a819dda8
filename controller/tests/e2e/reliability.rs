//! Reliability: what an independent chaos run found, each as a scenario that failed before
//! the fix. A term always ends when leadership does; nothing transient ends the process; the
//! CA Secret is reconciled against what a relist shows; a bad CA Secret never stops a
//! replica that holds the CA.

use std::time::Duration;

use podcert_tests::apiserver::{ResourceFault, ServerOptions};

use crate::support::*;

/// A lease stolen from under the leader, as another replica's takeover would.
fn steal_lease(cluster: &Cluster) {
    let mut lease = cluster
        .server
        .get("leases", CA_NS, "podcert-signer")
        .expect("a Lease");
    lease["spec"]["holderIdentity"] = "someone-else".into();
    lease["spec"]["renewTime"] = k8s_openapi::jiff::Timestamp::now().to_string().into();
    cluster.server.put("leases", CA_NS, lease);
}

async fn wait_leader(cluster: &Cluster, identity: &str, timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    while cluster.lease_holder().as_deref() != Some(identity) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{identity} never led"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Item 1 of the chaos report (zombie leader): a term that ends before its request cache
/// ever synced must still end, or the process holds the Lease while signing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_term_that_never_synced_still_ends_and_the_next_term_signs() {
    let (cluster, a) = ready_cluster().await;
    // Lists of requests fail from now on; the next term's cache cannot sync.
    *cluster.server.faults().fail_resource.lock().unwrap() =
        Some(ResourceFault::Lists("podcertificaterequests"));
    steal_lease(&cluster);
    // a loses the Lease, waits the stolen one out, takes it back: its second term cannot list.
    wait_leader(&cluster, &a.identity, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // That term now loses its leadership too, before it ever synced.
    steal_lease(&cluster);
    tokio::time::sleep(Duration::from_secs(1)).await;
    *cluster.server.faults().fail_resource.lock().unwrap() = None;
    assert_burst_issued(
        &cluster,
        "zombie",
        20,
        Duration::from_secs(40),
        &a.log_text(),
    )
    .await;
    a.wait_ready(Duration::from_secs(10)).await;
    assert_eq!(a.admin("/live").await.map(|r| r.0), Some(200));
}

/// Item 2: transient API errors at start and at the start of a term are retried; only a
/// configuration error ends the process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_at_start_are_retried_never_fatal() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    // Discovery meets 500s first (kube-client does not retry a 500)...
    cluster
        .server
        .faults()
        .error_next
        .store(4, std::sync::atomic::Ordering::SeqCst);
    // ...and the start of its first term cannot create the CA Secret (a fresh install).
    *cluster.server.faults().fail_resource.lock().unwrap() = Some(ResourceFault::Writes("secrets"));
    let mut a = cluster.signer("a", &[]);
    let refused = |secret_creates: bool| {
        cluster
            .server
            .requests()
            .iter()
            .filter(|r| r.user == SIGNER_USER && r.status == 500)
            .filter(|r| !secret_creates || (r.method == "POST" && r.path.ends_with("/secrets")))
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while refused(true) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the term never tried to create the CA Secret"
        );
        assert_eq!(
            a.child.try_wait().unwrap(),
            None,
            "exited; log:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused(false) >= 4 + 3,
        "the discovery errors did not reach the signer"
    );
    *cluster.server.faults().fail_resource.lock().unwrap() = None;
    a.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(a.child.try_wait().unwrap(), None);
    assert_burst_issued(&cluster, "start", 10, Duration::from_secs(30), "").await;
}

/// Item 3: the CA Secret deleted while every watch is down. The relist after 410 shows it
/// absent without any Delete event; the leader must put the same CA back, and no replica may
/// ever generate another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_secret_deleted_during_a_watch_outage_is_put_back_and_never_replaced() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let mut a = cluster.signer("a", &[]);
    a.wait_ready(Duration::from_secs(30)).await;
    let b = cluster.signer("b", &[]);
    b.wait_ready(Duration::from_secs(30)).await;
    let original = cluster.server.get("secrets", CA_NS, CA_NAME).unwrap();
    // A restart drops every watch and the history; the deletion happens while they are down.
    cluster.server.restart(Duration::from_millis(800));
    cluster.server.delete("secrets", CA_NS, CA_NAME);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let restored = loop {
        if let Some(s) = cluster.server.get("secrets", CA_NS, CA_NAME) {
            break s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never recreated; log:\n{}",
            a.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        restored["data"], original["data"],
        "the same CA was put back"
    );
    // The next leader, too, signs with that CA.
    a.kill();
    let bundle = assert_burst_issued(&cluster, "after", 10, Duration::from_secs(40), "").await;
    assert_eq!(
        pem_blocks(&bundle),
        1,
        "one root: no second CA was ever generated"
    );
    assert_eq!(
        cluster.server.get("secrets", CA_NS, CA_NAME).unwrap()["data"],
        original["data"]
    );
    let generated = [a.log_text(), b.log_text()]
        .concat()
        .matches("generated a new root CA")
        .count();
    assert_eq!(generated, 1, "only the fresh install generated a CA");
}

/// Item 4: a garbage CA Secret and a leader change. The replica that takes over held the CA
/// already and goes on signing with it; a fresh replica that never saw a good CA waits
/// unready without crash-looping; nobody overwrites the Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_ca_secret_never_stops_a_replica_that_holds_the_ca() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let mut a = cluster.signer("a", &[]);
    a.wait_ready(Duration::from_secs(30)).await;
    let b = cluster.signer("b", &[]);
    b.wait_ready(Duration::from_secs(30)).await;
    let mut garbage = cluster.server.get("secrets", CA_NS, CA_NAME).unwrap();
    garbage["data"]["tls.key"] = "anVuaw==".into();
    let planted = cluster.server.put("secrets", CA_NS, garbage);
    cluster
        .wait_for_event("CASecretUnusable", Duration::from_secs(20))
        .await;
    a.kill();
    assert_burst_issued(
        &cluster,
        "garbage",
        20,
        Duration::from_secs(40),
        &b.log_text(),
    )
    .await;
    assert_eq!(cluster.lease_holder().as_deref(), Some(b.identity.as_str()));
    let mut c = cluster.signer("c", &[]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        c.child.try_wait().unwrap(),
        None,
        "c exited; log:\n{}",
        c.log_text()
    );
    assert_eq!(c.admin("/ready").await.map(|r| r.0), Some(503));
    assert_eq!(b.admin("/ready").await.map(|r| r.0), Some(200));
    let stored = cluster.server.get("secrets", CA_NS, CA_NAME).unwrap();
    assert_eq!(stored, planted, "the Secret was overwritten");
}
