//! End to end: the real podcert-signer binary against the test API server, with requests
//! filed by the kubelet emulator. Every scenario ends with the same checks: nothing left
//! pending that should be issued, no `Failed` for a transient cause, no status the API server
//! rejected, no certificate issued twice, and the CA Secret intact.

mod support;

use std::time::Duration;

use podcert_tests::apiserver::ServerOptions;
use podcert_tests::fixtures::intermediate_ca_pem;
use podcert_tests::kubelet::{Created, Format, PodRequest, Tamper, Terminal, check_issued};
use podcert_tests::oracles::{IssuedCase, assert_go_accepts};
use support::*;

const SUPPORTED: [&str; 6] = [
    "ED25519",
    "ECDSAP256",
    "ECDSAP384",
    "ECDSAP521",
    "RSA3072",
    "RSA4096",
];

fn spiffe_id(p: &PodRequest) -> String {
    format!(
        "spiffe://{TRUST_DOMAIN}/ns/{}/sa/{}",
        p.namespace, p.service_account
    )
}

/// Every key type in both formats, in namespace `ns`.
fn all_key_types(ns: &str) -> Vec<PodRequest> {
    let mut pods = Vec::new();
    for (i, kt) in SUPPORTED.iter().enumerate() {
        for format in [Format::Pkix, Format::Csr] {
            pods.push(PodRequest::new(
                ns,
                &format!("pod-{i}-{format:?}").to_lowercase(),
                &format!("sa-{i}"),
                kt,
                format,
            ));
        }
    }
    pods
}

/// The closing checks of every scenario.
fn assert_scenario_invariants(
    cluster: &Cluster,
    created: &[Created],
    outcomes: &[Option<Terminal>],
    trust_bundle: &str,
) {
    for (c, o) in created.iter().zip(outcomes) {
        let t = o.as_ref().unwrap_or_else(|| {
            let stored = cluster
                .server
                .get("podcertificaterequests", &c.namespace, &c.name);
            panic!(
                "{}/{} still pending for the kubelet; the server holds {stored:#?}",
                c.namespace, c.name
            )
        });
        assert_ne!(t.condition(), "Failed", "{}: Failed {:?}", c.name, t.status);
        if t.condition() == "Issued" {
            check_issued(&t.status, &c.spki_der, &spiffe_id(&c.request), trust_bundle)
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        }
    }
    let writes = cluster.server.writes();
    let rejected: Vec<_> = writes
        .iter()
        .filter(|w| w.path.ends_with("/status") && w.status == 422)
        .collect();
    assert!(
        rejected.is_empty(),
        "the API server rejected status writes: {rejected:#?}"
    );
    // A status, once terminal, cannot be rewritten (the server refuses it): so each request
    // was answered by exactly one accepted status write.
    for c in created {
        let accepted = writes
            .iter()
            .filter(|w| w.path.ends_with(&format!("/{}/status", c.name)) && w.status == 200)
            .count();
        assert!(
            accepted <= 1,
            "{}: {accepted} accepted status writes",
            c.name
        );
    }
    let secret = cluster
        .server
        .get("secrets", CA_NS, CA_NAME)
        .expect("the CA Secret exists");
    assert!(
        secret["data"]["tls.key"]
            .as_str()
            .is_some_and(|k| !k.is_empty()),
        "CA Secret intact"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_type_in_both_formats_is_issued_and_verifies() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let signer = cluster.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(30)).await;
    let tracker = cluster.tracker("v1beta1");
    let pods = all_key_types("payments");
    let created = cluster
        .kubelet("v1beta1")
        .create_all(&pods, 4)
        .await
        .unwrap();
    let outcomes = tracker.wait_all(&created, Duration::from_secs(30)).await;
    let bundle = cluster.trust_bundle().await;
    assert_scenario_invariants(&cluster, &created, &outcomes, &bundle);

    let mut cases = Vec::new();
    for (c, o) in created.iter().zip(&outcomes) {
        let t = o.as_ref().unwrap();
        assert_eq!(
            t.condition(),
            "Issued",
            "{}: {:?}",
            c.request.key_type,
            t.status
        );
        cases.push(IssuedCase::from_status(
            format!("{}/{:?}", c.request.key_type, c.request.format),
            &t.status,
            &bundle,
            &c.spki_der,
            &spiffe_id(&c.request),
            c.request.max_expiration_seconds,
        ));
    }
    assert_go_accepts(&cases);
    // The CA was created once, and the trust bundle names the signer.
    let creates = cluster
        .server
        .writes()
        .iter()
        .filter(|w| w.method == "POST" && w.path.ends_with("/secrets"))
        .count();
    assert_eq!(creates, 1);
    let ctb = cluster
        .server
        .get("clustertrustbundles", "", CTB_NAME)
        .unwrap();
    assert_eq!(ctb["spec"]["signerName"], SIGNER);
    let (code, metrics) = signer.admin("/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains(
            "podcert_requests_total{outcome=\"issued\",key_type=\"ECDSAP256\",reason=\"Issued\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_denied_with_the_right_reason() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let signer = cluster.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(30)).await;
    let tracker = cluster.tracker("v1beta1");
    let bad = |kt: &str, format, tamper| {
        let mut p = PodRequest::new("default", "bad", "sa", kt, format);
        p.tamper = tamper;
        p
    };
    let cases = [
        (
            bad("ECDSAP256", Format::Pkix, Tamper::ForgedProof),
            "InvalidProofOfPossession",
        ),
        (
            bad("RSA3072", Format::Pkix, Tamper::ForgedProof),
            "InvalidProofOfPossession",
        ),
        (
            bad("ED25519", Format::Pkix, Tamper::OtherPodUid),
            "InvalidProofOfPossession",
        ),
        (
            bad("ECDSAP384", Format::Csr, Tamper::NonEmptyCsr),
            "InvalidStubPKCS10Request",
        ),
        (
            bad("ECDSAP256", Format::Csr, Tamper::UnknownAnnotation),
            "InvalidUnverifiedUserAnnotations",
        ),
        (
            bad("RSA2048", Format::Pkix, Tamper::None),
            "UnsupportedKeyType",
        ),
        (
            bad("ECDSAP224", Format::Csr, Tamper::None),
            "UnsupportedKeyType",
        ),
    ];
    let pods: Vec<_> = cases.iter().map(|(p, _)| p.clone()).collect();
    let created = cluster
        .kubelet("v1beta1")
        .create_all(&pods, 4)
        .await
        .unwrap();
    let outcomes = tracker.wait_all(&created, Duration::from_secs(30)).await;
    let bundle = cluster.trust_bundle().await;
    assert_scenario_invariants(&cluster, &created, &outcomes, &bundle);
    for ((_, want), o) in cases.iter().zip(&outcomes) {
        let t = o.as_ref().unwrap();
        assert_eq!(
            (t.condition(), t.reason()),
            ("Denied", *want),
            "{:?}",
            t.status
        );
    }
    // Each denial also becomes a Warning Event.
    let events = cluster.server.list("events");
    assert!(
        events
            .iter()
            .any(|e| e["reason"] == "InvalidProofOfPossession" && e["type"] == "Warning"),
        "{events:#?}"
    );
}

fn plain_burst(ns: &str, n: usize) -> Vec<PodRequest> {
    (0..n)
        .map(|i| {
            let kt = ["ECDSAP256", "ED25519"][i % 2];
            let format = if i % 3 == 0 {
                Format::Pkix
            } else {
                Format::Csr
            };
            PodRequest::new(
                ns,
                &format!("pod-{i}"),
                &format!("sa-{}", i % 5),
                kt,
                format,
            )
        })
        .collect()
}

async fn run_burst(
    cluster: &Cluster,
    version: &str,
    pods: &[PodRequest],
    timeout: Duration,
) -> (Vec<Created>, Vec<Option<Terminal>>) {
    let tracker = cluster.tracker(version);
    let created = cluster.kubelet(version).create_all(pods, 16).await.unwrap();
    let outcomes = tracker.wait_all(&created, timeout).await;
    (created, outcomes)
}

fn count_issued(outcomes: &[Option<Terminal>]) -> usize {
    outcomes
        .iter()
        .flatten()
        .filter(|t| t.condition() == "Issued")
        .count()
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_ca_secret_is_refused_and_left_untouched() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let corrupt = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": CA_NAME, "namespace": CA_NS},
        "data": {"tls.crt": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmp1bmsKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=", "tls.key": "anVuaw=="},
    });
    let before = cluster.server.put("secrets", CA_NS, corrupt);
    let mut a = cluster.signer("a", &[]);
    let code = a.wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(1), "log:\n{}", a.log_text());
    let log = a.log_text();
    assert!(
        log.contains("CA Secret podcert-signer/podcert-signer-ca is unusable")
            && log.contains("tls.crt"),
        "{log}"
    );
    assert!(log.contains("never overwrites"), "{log}");
    assert_eq!(
        cluster.server.get("secrets", CA_NS, CA_NAME).unwrap(),
        before,
        "the Secret was modified"
    );
    let writes: Vec<_> = cluster
        .server
        .writes()
        .into_iter()
        .filter(|w| w.path.contains("/secrets"))
        .collect();
    assert!(writes.is_empty(), "{writes:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_starting_together_share_one_ca() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    // Separate Leases, so both lead and both race to create the CA Secret.
    let a = cluster.signer("a", &["--lease-name", "a"]);
    let b = cluster.signer("b", &["--lease-name", "b"]);
    a.wait_ready(Duration::from_secs(30)).await;
    b.wait_ready(Duration::from_secs(30)).await;
    let creates: Vec<_> = cluster
        .server
        .writes()
        .into_iter()
        .filter(|w| w.method == "POST" && w.path.ends_with("/secrets"))
        .collect();
    assert!(
        creates.iter().filter(|w| w.status == 201).count() == 1,
        "{creates:#?}"
    );
    let (created, outcomes) = run_burst(
        &cluster,
        "v1beta1",
        &plain_burst("race", 30),
        Duration::from_secs(20),
    )
    .await;
    let bundle = cluster.trust_bundle().await;
    // Whichever replica signed, every chain verifies against the one published CA.
    assert_scenario_invariants(&cluster, &created, &outcomes, &bundle);
    assert_eq!(count_issued(&outcomes), 30);
}

/// Runs a burst of `n` requests while `fault` acts on the server, and checks that all are
/// issued with no transient cause ever written.
async fn burst_under(cluster: &Cluster, n: usize, fault: impl AsyncFnOnce(&Cluster)) {
    let tracker = cluster.tracker("v1beta1");
    let created = cluster
        .kubelet("v1beta1")
        .create_all(&plain_burst("faults", n), 16)
        .await
        .unwrap();
    fault(cluster).await;
    let outcomes = tracker.wait_all(&created, Duration::from_secs(60)).await;
    let bundle = cluster.trust_bundle().await;
    assert_scenario_invariants(cluster, &created, &outcomes, &bundle);
    assert_eq!(count_issued(&outcomes), n);
}

async fn ready_cluster() -> (Cluster, SignerProcess) {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let signer = cluster.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(30)).await;
    (cluster, signer)
}

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
    burst_under(&cluster, 60, async |c| {
        c.server
            .faults()
            .throttle_next
            .store(40, std::sync::atomic::Ordering::Relaxed);
        c.server
            .faults()
            .error_next
            .store(40, std::sync::atomic::Ordering::Relaxed);
        c.server
            .faults()
            .conflict_next_status_writes
            .store(20, std::sync::atomic::Ordering::Relaxed);
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
    assert!(
        !metrics.contains("podcert_reconcile_errors_total{"),
        "a 404 is not an error: {metrics}"
    );
    // And the signer still serves new requests.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_from_1_35_kubelets_are_read_through_v1_by_their_conversion_annotations() {
    let cluster = Cluster::start(ServerOptions::v1_only()).await;
    let signer = cluster.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(30)).await;
    // Stored as a 1.35 kubelet made them (pkix + proof); served through v1, which has no
    // such fields, they carry the initial-* annotations instead.
    let pods: Vec<_> = all_key_types("upgraded")
        .into_iter()
        .filter(|p| p.format == Format::Pkix)
        .collect();
    let bodies = cluster.kubelet("v1beta1").bodies(&pods);
    for (i, (mut body, _)) in bodies.into_iter().enumerate() {
        body["metadata"]["name"] = format!("req-old-{i}").into();
        body["metadata"]["uid"] = format!("uid-{i}").into();
        cluster
            .server
            .put("podcertificaterequests", "upgraded", body);
    }
    let mut issued = 0;
    for _ in 0..200 {
        issued = cluster
            .server
            .list("podcertificaterequests")
            .iter()
            .filter(|p| p["status"]["conditions"][0]["type"] == "Issued")
            .count();
        if issued == pods.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        issued,
        pods.len(),
        "{:#?}\nlog:\n{}",
        cluster.server.list("podcertificaterequests"),
        signer.log_text()
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

fn ca_secret_json(tls_crt: &str, tls_key: &str, ca_crt: Option<&str>) -> serde_json::Value {
    use base64::Engine;
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut data = serde_json::json!({"tls.crt": b(tls_crt), "tls.key": b(tls_key)});
    if let Some(ca) = ca_crt {
        data["ca.crt"] = b(ca).into();
    }
    serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": CA_NAME, "namespace": CA_NS}, "data": data})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byo_intermediate_ca_is_used_and_followed_when_it_changes() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let (crt, key, root) = intermediate_ca_pem("first");
    cluster
        .server
        .put("secrets", CA_NS, ca_secret_json(&crt, &key, Some(&root)));
    let signer = cluster.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(30)).await;
    let (created, outcomes) = run_burst(
        &cluster,
        "v1beta1",
        &plain_burst("byo", 4),
        Duration::from_secs(20),
    )
    .await;
    // The chain is leaf + intermediate, verifying up to the BYO root, which is what is published.
    let bundle = cluster.trust_bundle().await;
    assert_eq!(
        pem::parse_many(&bundle).unwrap()[0].contents(),
        pem::parse(&root).unwrap().contents()
    );
    assert_scenario_invariants(&cluster, &created, &outcomes, &bundle);
    let chain = outcomes[0].as_ref().unwrap().status["certificateChain"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        pem::parse_many(&chain).unwrap().len(),
        2,
        "leaf + intermediate"
    );

    // cert-manager rotates it: the signer follows, and the trust bundle follows.
    let (crt2, key2, root2) = intermediate_ca_pem("second");
    cluster
        .server
        .put("secrets", CA_NS, ca_secret_json(&crt2, &key2, Some(&root2)));
    for _ in 0..100 {
        if cluster
            .trust_bundle()
            .await
            .contains(root2.lines().nth(1).unwrap())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (created, outcomes) = run_burst(
        &cluster,
        "v1beta1",
        &plain_burst("byo2", 4),
        Duration::from_secs(20),
    )
    .await;
    let bundle = cluster.trust_bundle().await;
    assert_scenario_invariants(&cluster, &created, &outcomes, &bundle);
    // SPEC §6: the old root stays published (leaves under it are still valid), and the new
    // root was published before the first certificate was signed under the new CA.
    let first_line = |pem: &str| pem.lines().nth(1).unwrap().to_string();
    assert!(
        bundle.contains(&first_line(&root)) && bundle.contains(&first_line(&root2)),
        "{bundle}"
    );
    let writes = cluster.server.writes();
    let published = writes
        .iter()
        .position(|w| {
            w.path.contains("clustertrustbundles")
                && w.status < 300
                && w.body.contains(&first_line(&root2))
        })
        .expect("the new root was published");
    let first_signed = writes
        .iter()
        .position(|w| {
            w.path.ends_with("/status") && w.status == 200 && w.body.contains(&first_line(&crt2))
        })
        .expect("something was signed under the new CA");
    assert!(
        published < first_signed,
        "signed under the new CA (write {first_signed}) before publishing its root (write {published})"
    );

    // A broken update is ignored: signing goes on with the last good CA.
    cluster
        .server
        .put("secrets", CA_NS, ca_secret_json("junk", "junk", None));
    let (created, outcomes) = run_burst(
        &cluster,
        "v1beta1",
        &plain_burst("byo3", 4),
        Duration::from_secs(20),
    )
    .await;
    assert_scenario_invariants(&cluster, &created, &outcomes, &bundle);
    assert_eq!(count_issued(&outcomes), 4);
    assert!(
        signer
            .log_text()
            .contains("still signing with the last good CA")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_ca_secret_is_recreated_and_trust_bundle_drift_repaired() {
    let (cluster, _signer) = ready_cluster().await;
    let before = cluster.server.get("secrets", CA_NS, CA_NAME).unwrap();
    // Writes are refused for longer than kube-client's own retries last (about 1.6 s): only a
    // signer that keeps trying gets the Secret back.
    cluster
        .server
        .faults()
        .refuse_writes
        .store(true, std::sync::atomic::Ordering::Relaxed);
    cluster.server.delete("secrets", CA_NS, CA_NAME);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(cluster.server.get("secrets", CA_NS, CA_NAME).is_none());
    cluster
        .server
        .faults()
        .refuse_writes
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let mut after = None;
    for _ in 0..200 {
        after = cluster.server.get("secrets", CA_NS, CA_NAME);
        if after.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = after.expect("the CA Secret was recreated");
    assert_eq!(after["data"], before["data"], "recreated with the same CA");

    let good = cluster.trust_bundle().await;
    let mut ctb = cluster
        .server
        .get("clustertrustbundles", "", CTB_NAME)
        .unwrap();
    let (_, _, other_root) = intermediate_ca_pem("drift");
    ctb["spec"]["trustBundle"] = other_root.into();
    cluster.server.put("clustertrustbundles", "", ctb);
    for _ in 0..100 {
        if cluster.trust_bundle().await == good {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the trust bundle drift was not repaired");
}
