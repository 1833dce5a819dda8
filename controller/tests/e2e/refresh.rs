//! Refresh soak: pods' credentials through several refresh cycles, with the kubelet emulated
//! as upstream's pod certificate manager (new key per request, jittered refresh, the
//! Denied/Failed-refresh rule, re-filing unseen requests, a kubelet restart) on a clock that
//! runs 1,800 times faster than the wall clock (a 24 h credential's 12 h refresh margin is 24 s
//! of wall time, twice the slowest leader failover under faults seen here), while the API
//! server and the signers fail. Every pod must hold a valid credential at every moment after
//! its first one.

use std::sync::Arc;
use std::time::Duration;

use podcert_tests::apiserver::ServerOptions;
use podcert_tests::podcertificate::{Manager, Release, pods};

use crate::support::*;

/// Runs `manager` until every pod refreshed `cycles` times or `limit` passes, calling
/// `chaos` with the elapsed wall time on every pass; when it answers true, the kubelet
/// restarts.
async fn soak(
    cluster: &Cluster,
    manager: &Arc<Manager>,
    cycles: usize,
    limit: Duration,
    mut chaos: impl FnMut(Duration) -> bool,
) {
    let bundle = cluster.trust_bundle().await;
    let started = tokio::time::Instant::now();
    while manager.min_refreshes().await < cycles && started.elapsed() < limit {
        if chaos(started.elapsed()) {
            manager.restart().await;
        }
        // The bundle follows CA changes; a stale copy would fail chain checks.
        let current = cluster.trust_bundle().await;
        manager
            .tick(if current.is_empty() {
                &bundle
            } else {
                &current
            })
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A 1.35/1.36 cluster with one ready signer, and a manager for `count` pods of `release`
/// in `namespace` on a clock 3,600 times the wall clock.
async fn one_signer_and(
    release: Release,
    namespace: &str,
    count: usize,
) -> (Cluster, SignerProcess, Arc<Manager>) {
    let (cluster, signer) = ready_cluster().await;
    let manager = Manager::start(
        cluster.client.clone(),
        release,
        SIGNER,
        pods(namespace, count),
        3600.0,
    );
    (cluster, signer, manager)
}

fn assert_every_pod_always_held_a_credential(
    report: &podcert_tests::podcertificate::RefreshReport,
    cycles: usize,
) {
    eprintln!("refresh soak: {}", serde_json::to_string(report).unwrap());
    assert!(report.lapses.is_empty(), "{:#?}", report.lapses);
    assert!(
        report.lost_to_denial.is_empty(),
        "{:#?}",
        report.lost_to_denial
    );
    assert!(report.min_refreshes_per_pod >= cycles, "{report:#?}");
    // A refresh landed with at least half the lifetime left (24 h leaves, refresh at 12 h).
    assert!(
        report.min_remaining_at_refresh_s > 6.0 * 3600.0,
        "{report:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_1_37_kubelet_pods_refresh_five_times_through_faults_without_a_lapse() {
    let _machine = heavy_scenario().await;
    let cluster = Cluster::start(ServerOptions::v1_and_v1beta1()).await;
    let mut a = cluster.signer("a", &[]);
    a.wait_ready(Duration::from_secs(30)).await;
    let b = cluster.signer("b", &[]);
    b.wait_ready(Duration::from_secs(30)).await;
    let manager = Manager::start(
        cluster.client.clone(),
        Release::K1_37,
        SIGNER,
        pods("soak", 200),
        1800.0,
    );
    let faults = cluster.server.faults();
    let mut done = [false; 6];
    let mut once = |i: usize, at: u64, elapsed: Duration| {
        let due = !done[i] && elapsed >= Duration::from_secs(at);
        done[i] |= due;
        due
    };
    let mut restarted = false;
    soak(&cluster, &manager, 5, Duration::from_secs(240), |t| {
        if once(0, 30, t) {
            cluster.server.restart(Duration::from_millis(500));
        }
        if once(1, 50, t) {
            faults.drop_watches();
        }
        let restart = once(2, 60, t);
        restarted |= restart;
        // Faults last a fixed wall time, not a number of requests: how long "the next 30
        // requests" lasts depends on how busy the signers are, and on this clock every wall
        // second is half a virtual hour.
        if once(3, 80, t) {
            faults.throttle_for(Duration::from_secs(2));
        }
        if once(4, 90, t) {
            faults.fail_for(Duration::from_secs(2));
        }
        if once(5, 100, t) {
            a.kill();
        }
        restart
    })
    .await;
    assert!(restarted, "the soak ended before the kubelet restart");
    assert!(
        done.iter().all(|d| *d),
        "the soak ended before every fault: {done:?}"
    );
    let report = manager.report().await;
    assert_every_pod_always_held_a_credential(&report, 5);
    assert!(report.issued >= 200 * 6);
}

/// A kubelet restart on its own: every credential is requested again at once, and none
/// lapses meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubelet_restart_requests_every_credential_again_and_none_lapses() {
    let (cluster, _signer, manager) = one_signer_and(Release::K1_36, "restart", 40).await;
    soak(&cluster, &manager, 1, Duration::from_secs(60), |_| false).await;
    let before = manager.report().await;
    assert_eq!(before.min_refreshes_per_pod, 1, "{before:#?}");
    manager.restart().await;
    // The next refreshes are due 12 virtual hours (12 s) away: within 4 s only the restart
    // can bring every pod a new credential.
    soak(&cluster, &manager, 2, Duration::from_secs(4), |_| false).await;
    let report = manager.report().await;
    assert_eq!(
        report.min_refreshes_per_pod, 2,
        "every credential requested again at once: {report:#?}"
    );
    assert!(report.issued >= before.issued + 40, "{report:#?}");
    assert_every_pod_always_held_a_credential(&report, 2);
}

/// 1.35 kubelets (pkix key + proof through v1beta1) refresh the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_1_35_kubelet_pods_refresh_twice_without_a_lapse() {
    let (cluster, _signer, manager) = one_signer_and(Release::K1_35, "old", 50).await;
    soak(&cluster, &manager, 2, Duration::from_secs(60), |_| false).await;
    assert_every_pod_always_held_a_credential(&manager.report().await, 2);
}

/// Upstream's rule, and why the signer never writes `Failed` for a transient cause: a
/// `Denied` answer to a *refresh* replaces the pod's still-valid credential. Here the
/// operator stops allowing ED25519 mid-life: those pods lose their credentials at their next
/// refresh, the ECDSA pods keep theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_refresh_replaces_a_still_valid_credential_as_the_kubelet_does() {
    let (cluster, mut first, manager) = one_signer_and(Release::K1_36, "policy", 20).await;
    // Everyone gets a first credential.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while manager.report().await.issued < 20 && tokio::time::Instant::now() < deadline {
        manager.tick(&cluster.trust_bundle().await).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(manager.report().await.issued, 20);
    first.terminate();
    let second = cluster.signer("b", &["--allowed-key-types", "ECDSAP256"]);
    second.wait_ready(Duration::from_secs(30)).await;
    // Refreshes fall due 12 virtual hours (12 s) after issuance; the denied pods never
    // complete one, so the soak runs to its limit.
    soak(&cluster, &manager, 1, Duration::from_secs(20), |_| false).await;
    let report = manager.report().await;
    assert_eq!(report.lost_to_denial.len(), 10, "{report:#?}");
    assert!(
        report
            .lost_to_denial
            .iter()
            .all(|l| l.contains("Denied UnsupportedKeyType")),
        "{report:#?}"
    );
    assert!(report.lapses.is_empty(), "{report:#?}");
}
