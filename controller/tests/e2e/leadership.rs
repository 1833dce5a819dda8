//! Leadership: one leader among replicas, takeover, graceful release, kill mid-burst.

use std::time::Duration;

use podcert_tests::apiserver::ServerOptions;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_elect_one_leader_and_a_standby_takes_over() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let mut a = cluster.signer("a", &[]);
    a.wait_ready(Duration::from_secs(30)).await;
    let b = cluster.signer("b", &[]);
    b.wait_ready(Duration::from_secs(30)).await;
    let lease = cluster
        .server
        .get("leases", CA_NS, "podcert-signer")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], a.identity);

    let (created, outcomes) = run_burst(
        &cluster,
        "v1beta1",
        &plain_burst("first", 40),
        Duration::from_secs(30),
    )
    .await;
    let bundle = cluster.trust_bundle().await;
    assert_scenario_invariants(&cluster, &created, &outcomes, &bundle);
    assert_eq!(count_issued(&outcomes), 40);
    assert!(
        !b.log_text().contains("issued"),
        "the standby signed something"
    );

    // The leader is killed without releasing its Lease: the standby takes over within the
    // lease duration (3 s here) and serves the next requests with the same CA.
    a.kill();
    let (created, outcomes) = run_burst(
        &cluster,
        "v1beta1",
        &plain_burst("second", 20),
        Duration::from_secs(20),
    )
    .await;
    assert_scenario_invariants(&cluster, &created, &outcomes, &bundle);
    assert_eq!(
        count_issued(&outcomes),
        20,
        "standby log:\n{}",
        b.log_text()
    );
    let lease = cluster
        .server
        .get("leases", CA_NS, "podcert-signer")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], b.identity);
    assert_eq!(cluster.server.list("secrets").len(), 1, "still one CA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_releases_the_lease_at_once() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let mut a = cluster.signer(
        "a",
        &["--lease-duration", "30s", "--lease-renew-interval", "1s"],
    );
    a.wait_ready(Duration::from_secs(30)).await;
    let b = cluster.signer(
        "b",
        &["--lease-duration", "30s", "--lease-renew-interval", "1s"],
    );
    assert_eq!(
        a.terminate(),
        Some(0),
        "SIGTERM exits 0; log:\n{}",
        a.log_text()
    );
    // With a 30 s lease, only the release lets b lead within a few seconds.
    let (created, outcomes) = run_burst(
        &cluster,
        "v1beta1",
        &plain_burst("after", 5),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(count_issued(&outcomes), 5, "b log:\n{}", b.log_text());
    let bundle = cluster.trust_bundle().await;
    assert_scenario_invariants(&cluster, &created, &outcomes, &bundle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signer_killed_mid_burst_and_restarted_leaves_nothing_pending() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let mut a = cluster.signer("a", &["--concurrency", "2"]);
    a.wait_ready(Duration::from_secs(30)).await;
    let tracker = cluster.tracker("v1beta1");
    let kubelet = cluster.kubelet("v1beta1");
    let pods = plain_burst("burst", 150);
    let created = kubelet.create_all(&pods, 32).await.unwrap();
    // Slow answers (150 writes, 2 at a time, 20 ms each: over 1.5 s) stretch the burst; the
    // kill comes as soon as the first requests are issued, whatever the machine's speed.
    cluster
        .server
        .faults()
        .delay_ms
        .store(20, std::sync::atomic::Ordering::Relaxed);
    let mut issued_before_restart = 0;
    for _ in 0..600 {
        issued_before_restart = count_issued(&tracker.wait_all(&created, Duration::ZERO).await);
        if issued_before_restart >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.kill();
    let issued_before_restart = issued_before_restart.max(count_issued(
        &tracker.wait_all(&created, Duration::ZERO).await,
    ));
    cluster
        .server
        .faults()
        .delay_ms
        .store(0, std::sync::atomic::Ordering::Relaxed);
    let a2 = cluster.signer("a2", &[]);
    let outcomes = tracker.wait_all(&created, Duration::from_secs(40)).await;
    let bundle = cluster.trust_bundle().await;
    assert_scenario_invariants(&cluster, &created, &outcomes, &bundle);
    assert_eq!(
        count_issued(&outcomes),
        150,
        "issued before the kill: {issued_before_restart}; a2 log:\n{}",
        a2.log_text()
    );
    assert!(
        issued_before_restart < 150,
        "the kill came too late to prove anything"
    );
}
