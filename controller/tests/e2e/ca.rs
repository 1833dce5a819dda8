//! The CA's life end to end: one CA among racing replicas, a BYO intermediate followed when it
//! changes, a deleted Secret put back, a corrupt Secret never overwritten.

use std::time::Duration;

use podcert_tests::apiserver::ServerOptions;
use podcert_tests::fixtures::intermediate_ca_pem;
use podcert_tests::secrets::{broken_ca_keys, leak};
use signer_core::{CaKeyType, CaPem, TrustDomain};

use crate::support::*;

/// A corrupt Secret on a fresh install: the replica reports it and waits, it never overwrites
/// it, never leads, and never exits (no CrashLoopBackOff that would hide the cause).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_ca_secret_is_reported_left_untouched_and_no_replica_crash_loops() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let corrupt = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": CA_NAME, "namespace": CA_NS},
        "data": {"tls.crt": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCmp1bmsKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo=", "tls.key": "anVuaw=="},
    });
    let before = cluster.server.put("secrets", CA_NS, corrupt);
    let mut a = cluster.signer("a", &[]);
    let event = cluster
        .wait_for_event("CASecretUnusable", Duration::from_secs(20))
        .await;
    assert!(
        event["note"].as_str().unwrap().contains("tls.crt"),
        "{event}"
    );
    // Several lease durations later: still running, not ready, not the leader.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        a.child.try_wait().unwrap(),
        None,
        "exited; log:\n{}",
        a.log_text()
    );
    assert_eq!(a.admin("/ready").await.map(|r| r.0), Some(503));
    assert_eq!(a.metric("podcert_ca_secret_usable").await, Some(0.0));
    assert_eq!(a.metric("podcert_ca_loaded").await, Some(0.0));
    assert_eq!(a.metric("podcert_leader").await, Some(0.0));
    assert_eq!(cluster.lease_holder(), None, "it did not take the Lease");
    let log = a.log_text();
    assert!(
        log.contains("the CA Secret holds no usable CA") && log.contains("tls.crt"),
        "{log}"
    );
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
    a.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_starting_together_share_one_ca() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    // Separate Leases, so both lead and both race to create the CA Secret.
    grant_leases(&cluster, &["a", "b"]);
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

/// Broken CA keys of every format we read (PKCS#8, SEC1, PKCS#1; blank lines, headers, CRLF,
/// truncation, wrong labels, corrupt DER), in each of the Secret's three keys, at start and
/// while the replica follows the Secret: no byte of any of them reaches the process's output
/// (stdout and stderr), an Event or /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_byte_of_a_broken_ca_key_reaches_the_logs_an_event_or_the_metrics() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let good = CaPem::generate(
        CaKeyType::EcdsaP256,
        &TrustDomain::new(TRUST_DOMAIN).unwrap(),
        Duration::from_secs(86_400 * 30),
        std::time::SystemTime::now(),
    )
    .unwrap();
    let cases = broken_ca_keys();
    let secret_with = |i: usize, text: &str| match i % 3 {
        0 => ca_secret_json(&good.cert_pem, text, None),
        1 => ca_secret_json(text, &good.key_pem, None),
        _ => ca_secret_json(&good.cert_pem, &good.key_pem, Some(text)),
    };
    const UNUSABLE: &str = "the CA Secret holds no usable CA";
    // The first case is in place before the process starts: the start path.
    cluster
        .server
        .put("secrets", CA_NS, secret_with(0, &cases[0].text));
    let a = cluster.signer("a", &[]);
    for (i, case) in cases.iter().enumerate() {
        if i > 0 {
            cluster
                .server
                .put("secrets", CA_NS, secret_with(i, &case.text));
        }
        // Each change is read and reported before the next is written.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while a.log_text().matches(UNUSABLE).count() <= i {
            assert!(
                std::time::Instant::now() < deadline,
                "case {i} ({}) was not reported; log:\n{}",
                case.name,
                a.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let events = cluster
        .wait_for_event("CASecretUnusable", Duration::from_secs(5))
        .await;
    let outputs = [
        ("the log", a.log_text()),
        (
            "the Events",
            serde_json::to_string(&cluster.server.list("events")).unwrap(),
        ),
        (
            "/metrics",
            a.admin("/metrics").await.expect("metrics answer").1,
        ),
    ];
    assert!(outputs[1].1.contains("tls.key"), "{events}");
    for case in &cases {
        for (what, text) in &outputs {
            if let Some(piece) = leak(text, &case.secret_der) {
                panic!(
                    "{what} shows the key broken in {:?} (and other cases): {piece}",
                    case.name
                );
            }
        }
    }
    assert!(
        outputs[0].1.contains("blank line"),
        "the log names the paste mistake: {}",
        outputs[0].1
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
    // contract §6: the old root stays published (leaves under it are still valid), and the new
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
            w.path.ends_with(&format!("clustertrustbundles/{CTB_NAME}"))
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
