//! API faults: restarts, dropped and stalled watches, throttling and server errors, refused
//! writes, requests garbage-collected before signing. Nothing is lost and nothing transient is
//! ever written as `Failed`.

use std::time::Duration;

use podcert_tests::apiserver::ServerOptions;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_restart_mid_burst_loses_nothing() {
    let (cluster, _signer) = ready_cluster().await;
    cluster
        .server
        .faults()
        .delay_ms
        .store(3, std::sync::atomic::Ordering::Relaxed);
    burst_under(&cluster, 100, async |c| {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.server.restart(Duration::from_millis(700));
        c.server
            .faults()
            .delay_ms
            .store(0, std::sync::atomic::Ordering::Relaxed);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_and_stalled_watches_lose_nothing() {
    let (cluster, _signer) = ready_cluster().await;
    burst_under(&cluster, 60, async |c| {
        for _ in 0..5 {
            c.server.faults().drop_watches();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.server
            .faults()
            .stall_watches
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.server
            .faults()
            .stall_watches
            .store(false, std::sync::atomic::Ordering::Relaxed);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_retried_never_failed() {
    let (cluster, signer) = ready_cluster().await;
    // Slow answers keep the burst in flight when the storm starts.
    let faults = cluster.server.faults();
    faults
        .delay_ms
        .store(3, std::sync::atomic::Ordering::Relaxed);
    burst_under(&cluster, 60, async |c| {
        // A storm measured in time, not in requests: a count of failing requests lasts as
        // long as the clients take to use it up, and once the leader's Lease renewal meets
        // it and the leader steps down, only its one Lease read a second is left to.
        let faults = c.server.faults();
        faults.throttle_for(Duration::from_secs(2));
        faults.fail_for(Duration::from_secs(3));
        faults
            .conflict_next_status_writes
            .store(20, std::sync::atomic::Ordering::Relaxed);
        faults
            .delay_ms
            .store(0, std::sync::atomic::Ordering::Relaxed);
    })
    .await;
    let (_, metrics) = signer.admin("/metrics").await.unwrap();
    assert!(
        metrics.contains("podcert_reconcile_errors_total{error=\"write_status\"}"),
        "the storm was not felt: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_writes_are_waited_out() {
    let (cluster, _signer) = ready_cluster().await;
    cluster
        .server
        .faults()
        .refuse_writes
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let tracker = cluster.tracker("v1beta1");
    let bodies = cluster
        .kubelet("v1beta1")
        .bodies(&plain_burst("refused", 10));
    // The kubelet's creates would be refused too: plant the requests directly.
    for (i, (mut body, _)) in bodies.into_iter().enumerate() {
        body["metadata"]["name"] = format!("req-{i}").into();
        cluster
            .server
            .put("podcertificaterequests", "refused", body);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        cluster
            .server
            .list("podcertificaterequests")
            .iter()
            .all(|p| p.get("status").is_none())
    );
    cluster
        .server
        .faults()
        .refuse_writes
        .store(false, std::sync::atomic::Ordering::Relaxed);
    for _ in 0..200 {
        if cluster
            .server
            .list("podcertificaterequests")
            .iter()
            .all(|p| p.get("status").is_some())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = cluster.server.list("podcertificaterequests");
    assert!(
        all.iter()
            .all(|p| p["status"]["conditions"][0]["type"] == "Issued"),
        "{all:#?}"
    );
    drop(tracker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_garbage_collected_before_signing_end_quietly() {
    let mut options = ServerOptions::v1beta1();
    options.pcr_gc_after = Duration::from_secs(1);
    let cluster = Cluster::start(options).await;
    // A lease long enough that 1.5 s answers do not make the leader step down.
    let signer = cluster.signer(
        "a",
        &["--lease-duration", "30s", "--lease-renew-interval", "5s"],
    );
    signer.wait_ready(Duration::from_secs(30)).await;
    // Every answer takes 1.5 s, longer than a request lives (GC at 1 s, checked every 250 ms),
    // so every status write finds its request already collected.
    cluster
        .server
        .faults()
        .delay_ms
        .store(1500, std::sync::atomic::Ordering::Relaxed);
    cluster
        .kubelet("v1beta1")
        .create_all(&plain_burst("gc", 20), 20)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster
        .server
        .faults()
        .delay_ms
        .store(0, std::sync::atomic::Ordering::Relaxed);
    assert!(
        cluster.server.list("podcertificaterequests").is_empty(),
        "GC ran"
    );
    let status_writes: Vec<u16> = cluster
        .server
        .writes()
        .iter()
        .filter(|w| w.path.contains("/namespaces/gc/") && w.path.ends_with("/status"))
        .map(|w| w.status)
        .collect();
    assert!(
        !status_writes.is_empty() && status_writes.iter().all(|s| *s == 404),
        "status writes: {status_writes:?}"
    );
    let (_, metrics) = signer.admin("/metrics").await.unwrap();
    let errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("podcert_reconcile_errors_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(errors.is_empty(), "a 404 is not an error: {errors:?}");
    // And the signer still serves new requests — left alive this time: a one-second window
    // counted in whole seconds can collect a request 100 ms after it was made, which would
    // measure the machine's load, not the signer.
    cluster
        .server
        .faults()
        .pcr_gc_paused
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (created, outcomes) = run_burst(
        &cluster,
        "v1beta1",
        &plain_burst("after-gc", 5),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(count_issued(&outcomes), 5);
    drop(created);
}

/// The signer's client gives a throttled or unavailable answer back to its caller at once,
/// which counts it and retries on the controller's own schedule. (kube's default client
/// would retry inside the call, up to 15 times with a backoff growing to minutes, so one
/// request could hang through an outage unseen.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signers_client_hands_throttling_and_outages_back_at_once() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let client = podcert_signer::connect(&podcert_signer::ClusterConfig {
        kubeconfig: Some(cluster.signer_kubeconfig.clone()),
        context: None,
    })
    .await
    .unwrap();
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client, CA_NS);
    let code = |r: Result<_, kube::Error>| match r {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    };
    cluster
        .server
        .faults()
        .throttle_next
        .store(1, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(code(leases.get("podcert-signer").await), 429);
    cluster.server.restart(Duration::from_secs(5));
    assert_eq!(code(leases.get("podcert-signer").await), 503);
    let asked: Vec<u16> = cluster
        .server
        .requests()
        .iter()
        .filter(|r| r.user == SIGNER_USER)
        .map(|r| r.status)
        .collect();
    assert_eq!(asked, [429, 503], "one request each, none retried inside");
}
