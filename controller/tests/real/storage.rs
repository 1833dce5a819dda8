//! What the real server stores and what the kubelet code does with it: the CA Secret and the
//! ClusterTrustBundles (live and preview) as kube-apiserver keeps them (validated, defaulted,
//! read back by a restarted signer, which signs under the same root; each selected by the
//! SPIFFE delivery draft's labels through the kubelet's own projection), and a refresh the kubelet's own code
//! acts on — its clock stepped past `beginRefreshAt` — with the pod's credential never absent.

use std::time::Duration;

use podcert_tests::control_plane::Release;
use podcert_tests::control_plane::objects::CertificateSource;
use serde_json::Value;

use crate::cluster::{RealCluster, TRUST_DOMAIN, terminal};
use crate::support::{CTB_NAME, PREVIEW_CTB_NAME, SIGNER};

fn rfc3339(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .expect("an RFC 3339 time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_secret_and_trust_bundle_as_stored_survive_a_signer_restart() {
    let rc = RealCluster::start(Release::V1_35).await;
    let mut first = rc.signer("a", &[]);
    first.wait_ready(Duration::from_secs(60)).await;
    let secret = rc.ca_secret().await.expect("the CA Secret is created");
    assert_eq!(secret["type"], "kubernetes.io/tls");
    let data = secret["data"].as_object().unwrap();
    assert!(
        data.contains_key("tls.crt") && data.contains_key("tls.key"),
        "{data:?}"
    );
    let ctb = rc.trust_bundle_object().await;
    assert_eq!(ctb["metadata"]["name"], CTB_NAME);
    assert_eq!(ctb["spec"]["signerName"], SIGNER);
    let labels = &ctb["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/name"], "podcert-signer");
    assert_eq!(labels["podcert-signer/trust-domain"], TRUST_DOMAIN);
    assert_eq!(labels["k8s.spiffe.io/canarying"], "live");
    let roots = pem::parse_many(ctb["spec"]["trustBundle"].as_str().unwrap()).unwrap();
    assert_eq!(roots.len(), 1, "one root on a fresh install");
    // The canaries' bundle: the draft's labels only, and outside a rotation the same roots.
    let preview = rc.trust_bundle_named(PREVIEW_CTB_NAME).await;
    assert_eq!(preview["spec"]["signerName"], SIGNER);
    assert_eq!(preview["spec"]["trustBundle"], ctb["spec"]["trustBundle"]);
    let preview_labels = preview["metadata"]["labels"].as_object().unwrap();
    assert_eq!(preview_labels["k8s.spiffe.io/canarying"], "preview");
    assert_eq!(
        preview_labels["k8s.spiffe.io/workload-trust-domain"],
        TRUST_DOMAIN
    );
    assert_eq!(
        preview_labels["k8s.spiffe.io/peer-trust-domain"],
        TRUST_DOMAIN
    );
    assert!(
        !preview_labels.contains_key("app.kubernetes.io/name")
            && !preview_labels.contains_key("podcert-signer/trust-domain"),
        "the older selectors must match the live bundle only: {preview_labels:?}"
    );

    // A new process reads the stored CA back: no second CA, the bundle untouched.
    first.terminate();
    let second = rc.signer("b", &[]);
    second.wait_ready(Duration::from_secs(60)).await;
    rc.namespace("shop", &["web"]).await;
    let (_, kubelet) = rc.node_with_kubelet("node-a", Release::V1_35).await;
    rc.pod("shop", "web-0", "web", "node-a", &["ECDSAP384"])
        .await;
    let mounted = kubelet
        .mounted("shop", "web-0", "trust", Duration::from_secs(60))
        .await;
    kubelet
        .mounted("shop", "web-0", "svid-0", Duration::from_secs(60))
        .await;
    let again = rc.ca_secret().await.unwrap();
    assert_eq!(
        again["metadata"]["resourceVersion"],
        secret["metadata"]["resourceVersion"]
    );
    let ctb_again = rc.trust_bundle_object().await;
    assert_eq!(ctb_again["spec"], ctb["spec"]);
    assert_eq!(
        mounted.file("bundle.pem"),
        ctb["spec"]["trustBundle"].as_str().unwrap()
    );
    // A canary pod selecting the draft's preview labels gets the preview bundle from the
    // kubelet's own projection code, and a pod selecting them with `live` the live one.
    for (pod, channel, bundle) in [("canary-0", "preview", &preview), ("web-1", "live", &ctb)] {
        let selector = serde_json::json!({"matchLabels": {
            "k8s.spiffe.io/canarying": channel,
            "k8s.spiffe.io/workload-trust-domain": TRUST_DOMAIN,
            "k8s.spiffe.io/peer-trust-domain": TRUST_DOMAIN,
        }});
        let source = CertificateSource::new(SIGNER, "ED25519");
        rc.pod_selecting("shop", pod, "web", "node-a", &[source], selector)
            .await;
        let mounted = kubelet
            .mounted("shop", pod, "trust", Duration::from_secs(60))
            .await;
        assert_eq!(
            mounted.file("bundle.pem"),
            bundle["spec"]["trustBundle"].as_str().unwrap(),
            "{pod} selecting {channel}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_refreshes_at_begin_refresh_at_and_the_credential_never_lapses() {
    let rc = RealCluster::start(Release::V1_37).await;
    let signer = rc.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(60)).await;
    rc.namespace("shop", &["web"]).await;
    let (_, kubelet) = rc.node_with_kubelet("node-a", Release::V1_37).await;
    rc.pod("shop", "web-0", "web", "node-a", &["ED25519"]).await;
    let first = kubelet
        .mounted("shop", "web-0", "svid-0", Duration::from_secs(60))
        .await;
    let first_bundle = first.file("credentialbundle.pem").to_string();
    let issued = rc
        .terminal_pcrs("shop", "web-0", 1, Duration::from_secs(10), &signer)
        .await;
    let status = &issued[0]["status"];
    let begin_refresh_at = rfc3339(&status["beginRefreshAt"]);
    let not_after = rfc3339(&status["notAfter"]);
    let now = signer_core::time::unix_seconds(std::time::SystemTime::now());

    // Past beginRefreshAt and the kubelet's jitter (up to 5 minutes), well before notAfter.
    let step = begin_refresh_at - now + 6 * 60;
    assert!(
        now + step < not_after - 3600,
        "the step stays inside the lifetime"
    );
    kubelet.advance(Duration::from_secs(step as u64)).await;

    // Until the refresh lands, the volume keeps the first credential: never empty.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let refreshed = loop {
        let now_on_disk = kubelet.read_volume("shop", "web-0", "svid-0");
        let bundle = now_on_disk.file("credentialbundle.pem");
        assert!(
            bundle.contains("PRIVATE KEY") && bundle.contains("CERTIFICATE"),
            "the credential lapsed: {bundle:?}"
        );
        if bundle != first_bundle {
            break bundle.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refresh within 60 s; the kubelet reported {:#?}",
            kubelet.lines()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The refresh is the request that is not the first (creation times have whole seconds,
    // and both may fall in one).
    let pcrs = rc
        .terminal_pcrs("shop", "web-0", 2, Duration::from_secs(10), &signer)
        .await;
    assert_eq!(pcrs.len(), 2, "one request, then one refresh: {pcrs:#?}");
    assert!(pcrs.iter().all(|p| terminal(p).unwrap().0 == "Issued"));
    let first_name = &issued[0]["metadata"]["name"];
    let refresh = pcrs
        .iter()
        .find(|p| p["metadata"]["name"] != *first_name)
        .expect("a request besides the first");
    // A refresh is a new key and a new request.
    assert_ne!(
        issued[0]["spec"]["stubPKCS10Request"],
        refresh["spec"]["stubPKCS10Request"]
    );
    let key = |b: &str| pem::parse_many(b).unwrap().remove(0);
    assert_ne!(key(&first_bundle), key(&refreshed));
    let chain: String = pem::parse_many(&refreshed).unwrap()[1..]
        .iter()
        .map(pem::encode)
        .collect();
    let stored: String = pem::parse_many(refresh["status"]["certificateChain"].as_str().unwrap())
        .unwrap()
        .iter()
        .map(pem::encode)
        .collect();
    assert_eq!(chain, stored, "the volume holds the refreshed chain");
    // Refreshed in time: the kubelet raised neither of its lateness Events.
    let late: Vec<_> = kubelet
        .events()
        .into_iter()
        .filter(|e| {
            e["reason"] == "CertificateOverdueForRefresh" || e["reason"] == "CertificateExpired"
        })
        .collect();
    assert!(late.is_empty(), "{late:#?}");
    let states = kubelet.states().await;
    assert_eq!(
        states.get(&format!("{SIGNER} fresh")),
        Some(&1),
        "{states:?}"
    );
}
