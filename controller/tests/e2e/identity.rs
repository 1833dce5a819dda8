//! The identity policy (`--identity-policy`) with the real signer: who gets an SVID, with which
//! template, lifetime and usage, what a workload may narrow with user annotations, a bad reload
//! that keeps the last good policy, and Service DNS names read live — never from the request.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use podcert_tests::kubelet::{Created, Format, PodRequest, Terminal};
use podcert_tests::oracles::{IssuedCase, assert_go_accepts, openssl_verify};
use serde_json::{Value, json};

use crate::support::{self, Cluster, TRUST_DOMAIN};

const POLICY: &str = "\
rules:
  - name: payments
    namespaces:
      selector: {matchLabels: {team: payments}}
    serviceAccounts: {deny: [default]}
    spiffeIdTemplate: spiffe://{trust_domain}/pay/{namespace}/{service_account}
    lifetime: 6h
    userAnnotations: [lifetime, usage]
  - name: web
    namespaces: {names: [web]}
    serviceAccounts: {allow: [frontend]}
    usage: client
  - name: shop
    namespaces: {names: [shop]}
    dnsNames: {services: true, podIP: true}
";

/// Installs the RBAC of the base with the two kustomize components added, as
/// `kubectl apply -k` would.
fn install_component_rbac(cluster: &Cluster) {
    let rendered = support::rendered_manifests_with(&["identity-policy", "service-dns-names"]);
    cluster.server.install_rbac(&rendered);
}

/// Creates `object` through `api`; its UID, as the API server assigned it.
async fn create<K>(api: Api<K>, object: Value) -> String
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    let object: K = serde_json::from_value(object).unwrap();
    let made = api.create(&PostParams::default(), &object).await.unwrap();
    made.meta().uid.clone().unwrap()
}

async fn namespace(cluster: &Cluster, name: &str, labels: Value) {
    create(
        Api::<Namespace>::all(cluster.client.clone()),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
    )
    .await;
}

/// Creates a Pod or Service in `shop`; its UID.
async fn in_shop<K>(cluster: &Cluster, object: Value) -> String
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    create(Api::<K>::namespaced(cluster.client.clone(), "shop"), object).await
}

async fn outcomes(cluster: &Cluster, pods: &[PodRequest]) -> Vec<(Created, Terminal)> {
    let tracker = cluster.tracker("v1beta1");
    let created = cluster
        .kubelet("v1beta1")
        .create_all(pods, 4)
        .await
        .unwrap();
    let done = tracker.wait_all(&created, Duration::from_secs(30)).await;
    created
        .into_iter()
        .zip(done)
        .map(|(c, t)| {
            let t =
                t.unwrap_or_else(|| panic!("{}/{} got no answer", c.namespace, c.request.pod_name));
            (c, t)
        })
        .collect()
}

fn request(ns: &str, sa: &str) -> PodRequest {
    PodRequest::new(ns, &format!("{sa}-pod"), sa, "ECDSAP256", Format::Csr)
}

#[tokio::test]
async fn the_policy_decides_who_gets_which_identity_and_a_bad_reload_keeps_the_last_good_one() {
    let cluster = Cluster::start(podcert_tests::apiserver::ServerOptions::v1beta1()).await;
    install_component_rbac(&cluster);
    namespace(&cluster, "checkout", json!({"team": "payments"})).await;
    namespace(&cluster, "search", json!({"team": "search"})).await;
    namespace(&cluster, "web", json!({})).await;
    let policy = cluster.dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let signer = cluster.signer("a", &["--identity-policy", policy.to_str().unwrap()]);
    signer.wait_ready(Duration::from_secs(30)).await;

    let answers = outcomes(
        &cluster,
        &[
            request("checkout", "api"),
            request("checkout", "default"),
            request("search", "api"),
            request("web", "frontend"),
            request("web", "batch"),
            // The signer's domain is its name's (example.com/spiffe): within the grant, taken;
            // outside it or unlisted, denied.
            request("checkout", "narrow").with_user_annotations(&[
                ("example.com/lifetime", "2h"),
                ("example.com/usage", "server"),
            ]),
            request("checkout", "longer").with_user_annotations(&[("example.com/lifetime", "8h")]),
            PodRequest::new("web", "wider-pod", "frontend", "ECDSAP256", Format::Csr)
                .with_user_annotations(&[("example.com/usage", "both")]),
        ],
    )
    .await;
    let reasons: Vec<(&str, &str)> = answers
        .iter()
        .map(|(_, t)| (t.condition(), t.reason()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("Issued", "Issued"),
            ("Denied", "NotAllowedByPolicy"),
            ("Denied", "NotAllowedByPolicy"),
            ("Issued", "Issued"),
            ("Denied", "NotAllowedByPolicy"),
            ("Issued", "Issued"),
            ("Denied", "InvalidUnverifiedUserAnnotations"),
            ("Denied", "InvalidUnverifiedUserAnnotations"),
        ]
    );
    let message = |i: usize| {
        answers[i].1.status["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        message(6),
        "unverifiedUserAnnotations: example.com/lifetime: 8h is longer than rule \"payments\" allows (6h)"
    );
    assert_eq!(
        message(7),
        "unverifiedUserAnnotations: the key \"example.com/usage\" is not allowed: rule \"web\" allows none (its userAnnotations lists the keys workloads may set)"
    );
    let (_, pay) = &answers[0];
    assert_eq!(
        pay.sans().0,
        [format!("spiffe://{TRUST_DOMAIN}/pay/checkout/api")]
    );
    let lifetime = |s: &Value| {
        let t = |k: &str| {
            s[k].as_str()
                .unwrap()
                .parse::<k8s_openapi::jiff::Timestamp>()
                .unwrap()
                .as_second()
        };
        t("notAfter") - t("notBefore")
    };
    assert_eq!(lifetime(&pay.status), 6 * 3600, "the rule's lifetime");
    assert_eq!(lifetime(&answers[5].1.status), 2 * 3600, "the workload's");
    let usage = |t: &Terminal| {
        let chain = t.status["certificateChain"].as_str().unwrap();
        let der = pem::parse(chain).unwrap().into_contents();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        (eku.server_auth, eku.client_auth)
    };
    assert_eq!(usage(&answers[0].1), (true, true), "the default: both");
    assert_eq!(usage(&answers[3].1), (false, true), "web's rule: client");
    assert_eq!(
        usage(&answers[5].1),
        (true, false),
        "the workload's: server"
    );
    assert_eq!(
        lifetime(&answers[3].1.status),
        86_400,
        "the signer's lifetime"
    );
    assert_eq!(
        answers[3].1.sans().0,
        [format!("spiffe://{TRUST_DOMAIN}/ns/web/sa/frontend")]
    );
    let denied = answers[2].1.status["conditions"][0]["message"]
        .as_str()
        .unwrap();
    assert!(
        denied.contains(
            "no rule of the identity policy allows service account \"api\" in namespace \"search\""
        ),
        "{denied}"
    );

    // A broken file: the signer says so and keeps deciding under the last good policy.
    std::fs::write(&policy, POLICY.replace("lifetime: 6h", "lifetime: forever")).unwrap();
    signer
        .wait_metric(
            "podcert_identity_policy_loaded",
            0.0,
            Duration::from_secs(20),
        )
        .await;
    let log = signer.log_text();
    assert!(
        log.contains("the identity policy file cannot be used")
            && log.contains("policy.yaml line 7: rule \"payments\": lifetime: \"forever\""),
        "the log names the line:\n{log}"
    );
    let again = outcomes(
        &cluster,
        &[request("checkout", "api2"), request("web", "batch")],
    )
    .await;
    assert_eq!(again[0].1.condition(), "Issued");
    assert_eq!(
        lifetime(&again[0].1.status),
        6 * 3600,
        "still the last good policy"
    );
    assert_eq!(again[1].1.reason(), "NotAllowedByPolicy");

    // A good file replaces it: web's batch service account is now allowed.
    std::fs::write(
        &policy,
        POLICY.replace("allow: [frontend]", "allow: [frontend, batch]"),
    )
    .unwrap();
    signer
        .wait_metric(
            "podcert_identity_policy_loaded",
            1.0,
            Duration::from_secs(20),
        )
        .await;
    let last = outcomes(&cluster, &[request("web", "batch")]).await;
    assert_eq!(last[0].1.condition(), "Issued");
}

/// A pod `name` in `shop` with `labels`, on the kubelet emulator's node.
fn pod(name: &str, sa: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": labels},
        "spec": {"serviceAccountName": sa, "nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]},
    })
}

/// Gives pod `name` in `shop` an IP, as the kubelet reports it through the status.
async fn pod_ip(cluster: &Cluster, name: &str, ip: &str) {
    use k8s_openapi::api::core::v1::{PodIP, PodStatus};
    let api = Api::<Pod>::namespaced(cluster.client.clone(), "shop");
    let mut pod = api.get(name).await.unwrap();
    pod.status = Some(PodStatus {
        pod_ips: Some(vec![PodIP { ip: ip.into() }]),
        ..Default::default()
    });
    api.replace_status(name, &PostParams::default(), &pod)
        .await
        .unwrap();
}

fn service(name: &str, selector: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"selector": selector, "ports": [{"port": 443}]}
    })
}

#[tokio::test]
async fn service_dns_names_come_from_services_that_select_the_pod_and_nowhere_else() {
    let cluster = Cluster::start(podcert_tests::apiserver::ServerOptions::v1beta1()).await;
    install_component_rbac(&cluster);
    namespace(&cluster, "shop", json!({})).await;
    let policy = cluster.dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let signer = cluster.signer("a", &["--identity-policy", policy.to_str().unwrap()]);
    signer.wait_ready(Duration::from_secs(30)).await;

    let api_uid = in_shop::<Pod>(
        &cluster,
        pod("api-0", "api", json!({"app": "api", "tier": "web"})),
    )
    .await;
    pod_ip(&cluster, "api-0", "10.4.0.7").await;
    in_shop::<Service>(&cluster, service("api", json!({"app": "api"}))).await;
    in_shop::<Service>(&cluster, service("web", json!({"tier": "web"}))).await;
    in_shop::<Service>(&cluster, service("db", json!({"app": "db"}))).await;

    // A request whose metadata names another Service: the names still come from selectors.
    let kubelet = cluster.kubelet("v1beta1");
    let mut p = PodRequest::new("shop", "api-0", "api", "ECDSAP256", Format::Csr);
    p.pod_uid = Some(api_uid);
    let (mut body, spki) = kubelet.bodies(std::slice::from_ref(&p)).remove(0);
    body["metadata"]["annotations"] = json!({"podcert.example.com/dns-names": "db.shop.svc"});
    let tracker = cluster.tracker("v1beta1");
    let api = Api::<DynamicObject>::namespaced_with(
        cluster.client.clone(),
        "shop",
        &podcert_tests::kubelet::pcr_resource("v1beta1"),
    );
    let made = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
    let created = Created {
        namespace: "shop".into(),
        name: made.metadata.name.clone().unwrap(),
        request: p.clone(),
        spki_der: spki.clone(),
        sent_at: std::time::Instant::now(),
    };
    let done = tracker
        .wait_all(std::slice::from_ref(&created), Duration::from_secs(30))
        .await;
    let issued = done[0]
        .as_ref()
        .unwrap_or_else(|| panic!("no answer; the signer said:\n{}", signer.log_text()));
    assert_eq!(issued.condition(), "Issued", "{}", issued.status);
    let (uris, dns, ips) = issued.sans();
    assert_eq!(
        uris,
        [format!("spiffe://{TRUST_DOMAIN}/ns/shop/sa/api")],
        "exactly one URI SAN"
    );
    assert_eq!(
        dns,
        [
            "api.shop.svc",
            "api.shop.svc.cluster.local",
            "web.shop.svc",
            "web.shop.svc.cluster.local"
        ]
    );
    assert_eq!(ips, ["10.4.0.7"]);
    let roots = cluster.trust_bundle().await;
    openssl_verify(issued.status["certificateChain"].as_str().unwrap(), &roots)
        .expect("openssl accepts the leaf");
    let mut case = IssuedCase::from_status(
        "dns",
        &issued.status,
        &roots,
        &spki,
        &support::spiffe_id(&p),
        86_400,
    );
    (case.dns_names, case.ips) = (dns, ips);
    assert_go_accepts(&[case]);

    // The pod's labels change: its next request (a refresh) names the Services that select
    // it now.
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), "shop");
    let mut relabelled = pods.get("api-0").await.unwrap();
    relabelled.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
    pods.replace("api-0", &PostParams::default(), &relabelled)
        .await
        .unwrap();
    let refresh = kubelet
        .create_all(std::slice::from_ref(&p), 1)
        .await
        .unwrap();
    let done = tracker.wait_all(&refresh, Duration::from_secs(30)).await;
    let refreshed = done[0].as_ref().expect("the refresh is answered");
    assert_eq!(refreshed.condition(), "Issued", "{}", refreshed.status);
    assert_eq!(
        refreshed.sans().1,
        ["db.shop.svc", "db.shop.svc.cluster.local"]
    );

    // A pod no Service selects yet waits, and is issued once one does.
    let cron_uid = in_shop::<Pod>(&cluster, pod("cron-0", "cron", json!({"app": "cron"}))).await;
    let mut cron = PodRequest::new("shop", "cron-0", "cron", "ECDSAP256", Format::Csr);
    cron.pod_uid = Some(cron_uid);
    let tracker = cluster.tracker("v1beta1");
    let created = kubelet
        .create_all(std::slice::from_ref(&cron), 1)
        .await
        .unwrap();
    let early = tracker.wait_all(&created, Duration::from_secs(3)).await;
    assert!(
        early[0].is_none(),
        "no Service selects the pod yet: it waits, never denied"
    );
    in_shop::<Service>(&cluster, service("cron", json!({"app": "cron"}))).await;
    let done = tracker.wait_all(&created, Duration::from_secs(60)).await;
    let t = done[0]
        .as_ref()
        .expect("issued once a Service selects the pod");
    assert_eq!(t.sans().1, ["cron.shop.svc", "cron.shop.svc.cluster.local"]);

    // A request for a pod that is not the live one (another UID) is denied.
    let mut stale = PodRequest::new("shop", "api-0", "api", "ECDSAP256", Format::Csr);
    stale.pod_uid = Some("uid-of-a-deleted-pod".into());
    let created = kubelet.create_all(&[stale], 1).await.unwrap();
    let done = tracker.wait_all(&created, Duration::from_secs(30)).await;
    let t = done[0].as_ref().unwrap();
    assert_eq!((t.condition(), t.reason()), ("Denied", "InvalidIdentity"));
}
