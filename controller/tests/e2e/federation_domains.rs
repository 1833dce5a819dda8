//! Federation between two trust domains: two signers, each against its own API server, each
//! serving its bundle (A with `https_web`, B with `https_spiffe`) and importing the other's
//! over loopback (A fetches B's with `https_spiffe`, B fetches A's with `https_web`). Their
//! workloads then speak SPIFFE mTLS across the domains with the example, and a certificate
//! that claims B's domain but chains to A's root is refused. Both run under the RBAC of the
//! kustomize base with the `federation` component, with the default CA profile.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use podcert_tests::https::WebCert;
use signer_core::TrustDomain;
use signer_core::bundle::SpiffeBundle;
use spiffe_mtls::{CredentialFiles, Served, exchange};

use crate::support::*;

const B: &str = "b.example.net";
/// Where each signer publishes the other's bundle.
const A_IN_B: &str = "example.com:spiffe:federated.example.org";
const B_IN_A: &str = "example.com:spiffe:federated.b.example.net";
const B_SIGNER_ID: &str = "spiffe://b.example.net/ns/podcert-signer/sa/podcert-signer";

/// A cluster whose RBAC is the base's with the federation component.
async fn federated_cluster(options: podcert_tests::apiserver::ServerOptions) -> Cluster {
    let cluster = Cluster::start(options).await;
    cluster
        .server
        .install_rbac(&rendered_manifests_with(&["federation"]));
    cluster
}

fn loopback() -> SocketAddr {
    format!("127.0.0.1:{}", podcert_tests::free_port())
        .parse()
        .unwrap()
}

/// The roots a ClusterTrustBundle of `cluster` holds (DER), once it exists.
async fn ctb_roots(cluster: &Cluster, name: &str, within: Duration) -> Vec<Vec<u8>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some((roots, _)) = ctb_roots_and_sequence(&cluster.server, name) {
            return roots;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no ClusterTrustBundle {name} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The trust bundle (PEM) of ClusterTrustBundle `name` of `cluster`; empty when absent.
fn bundle_pem(cluster: &Cluster, name: &str) -> String {
    cluster
        .server
        .get("clustertrustbundles", "", name)
        .map(|c| c["spec"]["trustBundle"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// What a `clusterTrustBundle` projection selecting the SPIFFE Filesystem Delivery draft's
/// labels mounts in a workload of `workload_td` for peers of `peer_td`: the one live bundle so
/// labelled (the kubelet would merge several; exactly one must match).
fn bundle_for(cluster: &Cluster, workload_td: &str, peer_td: &str) -> String {
    let selected: Vec<String> = cluster
        .server
        .list("clustertrustbundles")
        .into_iter()
        .filter(|c| {
            let l = &c["metadata"]["labels"];
            l["k8s.spiffe.io/canarying"] == "live"
                && l["k8s.spiffe.io/workload-trust-domain"] == workload_td
                && l["k8s.spiffe.io/peer-trust-domain"] == peer_td
        })
        .map(|c| c["spec"]["trustBundle"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        selected.len(),
        1,
        "bundles labelled for {workload_td} workloads and {peer_td} peers: {selected:?}"
    );
    selected.into_iter().next().unwrap()
}

/// Writes a federation file with one entry (YAML lines after `- `) into `dir`; its path.
fn federation_file(dir: &Path, entry: &str) -> String {
    let path = dir.join("federation.yaml");
    std::fs::write(&path, format!("trustDomains:\n  - {entry}")).unwrap();
    path.display().to_string()
}

/// B's bundle as an operator would take it out of band for A's first fetch.
fn bootstrap_bundle(roots: Vec<Vec<u8>>) -> String {
    SpiffeBundle {
        trust_domain: TrustDomain::new(B).unwrap(),
        sequence: None,
        refresh_hint: None,
        x509_authorities: roots,
    }
    .to_json()
    .unwrap()
}

/// The two domains, federated: (A, B, A's signer, B's signer).
struct Domains {
    a: Cluster,
    b: Cluster,
    signer_a: SignerProcess,
    signer_b: SignerProcess,
}

/// Starts B (serving `https_spiffe`, importing A over `https_web`), takes B's bundle as the
/// bootstrap of A's federation file, then starts A (serving `https_web`, importing B over
/// `https_spiffe`). `extra_*` are more flags for each signer (a compressed clock).
async fn federate(
    a: Cluster,
    b: Cluster,
    extra_a: &[String],
    extra_b: &[String],
    refresh_hint: &str,
) -> Domains {
    let (addr_a, addr_b) = (loopback(), loopback());
    let web = WebCert::generate("A's web CA");
    let (dir_a, dir_b) = (a.dir.path(), b.dir.path());
    std::fs::write(dir_a.join("endpoint.crt"), &web.cert_pem).unwrap();
    std::fs::write(dir_a.join("endpoint.key"), &web.key_pem).unwrap();
    std::fs::write(dir_b.join("a-web-ca.pem"), &web.ca_pem).unwrap();

    let b_file = federation_file(
        dir_b,
        &format!(
            "trustDomain: {TRUST_DOMAIN}\n    bundleEndpointURL: https://{addr_a}/\n    profile: https_web\n    caFile: a-web-ca.pem\n"
        ),
    );
    let mut flags_b: Vec<String> = [
        "--trust-domain",
        B,
        "--bundle-endpoint-addr",
        &addr_b.to_string(),
        "--bundle-endpoint-profile",
        "https_spiffe",
        "--bundle-refresh-hint",
        refresh_hint,
        "--federation-config",
        &b_file,
    ]
    .map(String::from)
    .to_vec();
    flags_b.extend_from_slice(extra_b);
    let flags: Vec<&str> = flags_b.iter().map(String::as_str).collect();
    let signer_b = b.signer("b", &flags);
    signer_b.wait_ready(Duration::from_secs(30)).await;

    let b_roots = ctb_roots(&b, CTB_NAME, Duration::from_secs(10)).await;
    std::fs::write(dir_a.join("b-bundle.json"), bootstrap_bundle(b_roots)).unwrap();
    let a_file = federation_file(
        dir_a,
        &format!(
            "trustDomain: {B}\n    bundleEndpointURL: https://{addr_b}/\n    profile: https_spiffe\n    endpointSPIFFEID: {B_SIGNER_ID}\n    bundleFile: b-bundle.json\n"
        ),
    );
    let mut flags_a: Vec<String> = [
        "--bundle-endpoint-addr",
        &addr_a.to_string(),
        "--bundle-endpoint-cert",
        &dir_a.join("endpoint.crt").display().to_string(),
        "--bundle-endpoint-key",
        &dir_a.join("endpoint.key").display().to_string(),
        "--bundle-refresh-hint",
        refresh_hint,
        "--federation-config",
        &a_file,
    ]
    .map(String::from)
    .to_vec();
    flags_a.extend_from_slice(extra_a);
    let flags: Vec<&str> = flags_a.iter().map(String::as_str).collect();
    let signer_a = a.signer("a", &flags);
    signer_a.wait_ready(Duration::from_secs(30)).await;
    Domains {
        a,
        b,
        signer_a,
        signer_b,
    }
}

impl Domains {
    /// Waits until each imported the other's roots as published; panics with both logs if not.
    async fn wait_imported(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let b_in_a = self.a.server.get("clustertrustbundles", "", B_IN_A);
            let a_in_b = self.b.server.get("clustertrustbundles", "", A_IN_B);
            let same = |imported: Option<serde_json::Value>, own: &Cluster| {
                imported.is_some_and(|i| i["spec"]["trustBundle"] == bundle_pem(own, CTB_NAME))
            };
            if same(b_in_a, &self.b) && same(a_in_b, &self.a) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the domains did not import each other's bundles within {within:?}\nA said:\n{}\nB said:\n{}",
                self.signer_a.log_text(),
                self.signer_b.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_trust_domains_federate_and_their_workloads_speak_mtls() {
    let options = podcert_tests::apiserver::ServerOptions::v1beta1;
    let d = federate(
        federated_cluster(options()).await,
        federated_cluster(options()).await,
        &[],
        &[],
        "2s",
    )
    .await;
    d.wait_imported(Duration::from_secs(30)).await;
    // B's endpoint served with the SVID its signer issued itself, kept in a Secret.
    assert!(
        d.b.server
            .get("secrets", CA_NS, "podcert-signer-ca-bundle-endpoint")
            .is_some()
    );

    // Workloads: each reads a SPIFFE credential folder, as the examples' manifests lay it out:
    // its SVID, its own domain's bundle and the other's, each in a file of its own named for
    // its trust domain and selected by the draft's labels, as projections would mount them.
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| dir.path().join(n);
    let folder = |name: &str, cluster: &Cluster, own: &str, peer: &str| {
        std::fs::create_dir(file(name)).unwrap();
        for td in [own, peer] {
            let pem = bundle_for(cluster, own, td);
            std::fs::write(file(&format!("{name}/{td}.spiffe-trust-bundle.pem")), pem).unwrap();
        }
        file(&format!("{name}/credential-bundle.pem"))
    };
    for (name, cluster, own, peer, sa, key_type) in [
        ("a-web", &d.a, TRUST_DOMAIN, B, "web", "ECDSAP256"),
        ("b-api", &d.b, B, TRUST_DOMAIN, "api", "ED25519"),
        ("b-web", &d.b, B, TRUST_DOMAIN, "web", "ECDSAP384"),
        ("a-api", &d.a, TRUST_DOMAIN, B, "api", "ECDSAP256"),
    ] {
        issue(cluster, sa, key_type, &folder(name, cluster, own, peer)).await;
    }
    // For our own peers the draft's labels select our own bundle; so does the label pods
    // selected before them, which no imported bundle carries.
    assert_eq!(
        bundle_for(&d.a, TRUST_DOMAIN, TRUST_DOMAIN),
        bundle_pem(&d.a, CTB_NAME)
    );
    let by_old_label: Vec<serde_json::Value> =
        d.a.server
            .list("clustertrustbundles")
            .into_iter()
            .filter(|c| c["metadata"]["labels"]["app.kubernetes.io/name"] == "podcert-signer")
            .collect();
    assert_eq!(by_old_label.len(), 1);
    assert_eq!(by_old_label[0]["metadata"]["name"], CTB_NAME);
    std::fs::write(file("b-own.pem"), bundle_pem(&d.b, CTB_NAME)).unwrap();
    let workload = |name: &str| CredentialFiles::folder(file(name));
    const A_WEB: &str = "spiffe://example.org/ns/shop/sa/web";
    const A_API: &str = "spiffe://example.org/ns/shop/sa/api";
    const B_API: &str = "spiffe://b.example.net/ns/shop/sa/api";
    const B_WEB: &str = "spiffe://b.example.net/ns/shop/sa/web";

    // A's client with B's server, and B's client with A's server.
    let b_server = start_server(Arc::new(workload("b-api")), &[A_WEB, B_WEB]).await;
    let x = exchange(b_server.addr, &workload("a-web"), &[B_API.to_string()])
        .await
        .expect("A's client with B's server");
    assert_eq!(x.reply, format!("hello {A_WEB} from {B_API}"));
    let a_server = start_server(Arc::new(workload("a-api")), &[B_WEB]).await;
    let x = exchange(a_server.addr, &workload("b-web"), &[A_API.to_string()])
        .await
        .expect("B's client with A's server");
    assert_eq!(x.reply, format!("hello {B_WEB} from {A_API}"));

    // De-federation: with B's bundle gone from its folder, A's client refuses B's server from
    // the next connection on.
    std::fs::remove_file(file(&format!("a-web/{B}.spiffe-trust-bundle.pem"))).unwrap();
    let err = exchange(b_server.addr, &workload("a-web"), &[B_API.to_string()])
        .await
        .expect_err("a peer of a domain whose bundle was removed");
    assert!(err.to_string().contains(B), "{err}");

    // A certificate that claims B's domain but chains to A's root: B's server allows the ID
    // and trusts A's roots — for A's IDs only — so it is refused.
    let a_root = d.a.ca_secret_data().unwrap();
    let forger = {
        use signer_core::*;
        let policy = Policy::new(&PolicyConfig {
            trust_domain: B.into(),
            ..Default::default()
        })
        .unwrap();
        Signer::new(
            Arc::new(policy),
            Arc::new(Ca::from_pem(&a_root["tls.crt"], &a_root["tls.key"], None).unwrap()),
        )
    };
    issue_outside(&forger, "web", &file("forged.pem"));
    assert!(
        // The forger trusts B's real roots, so only B's server can stop it.
        exchange(
            b_server.addr,
            &CredentialFiles::new(file("forged.pem"), file("b-own.pem")),
            &[B_API.to_string()]
        )
        .await
        .is_err(),
        "a certificate claiming B but chaining to A was accepted"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let served = b_server.served.lock().unwrap().clone();
    assert!(
        served.iter().any(|s| matches!(s, Served::Refused { error }
            if error.contains(B_WEB) && error.contains("does not chain to the trust bundle of b.example.net"))),
        "{served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_rotation_in_b_reaches_a_within_one_refresh_hint_and_a_keeps_trusting_b() {
    // Both domains on one compressed clock (1,200×): B's root is replaced 6 hours (18 s)
    // into its life, published 2 hours (6 s) before it signs anything.
    let (a, clock, flags) = crate::lifecycle::compressed().await;
    a.server
        .install_rbac(&rendered_manifests_with(&["federation"]));
    let b = federated_cluster(podcert_tests::apiserver::ServerOptions {
        clock,
        ..podcert_tests::apiserver::ServerOptions::v1beta1()
    })
    .await;
    const HINT: Duration = Duration::from_secs(2);
    let d = federate(a, b, &flags, &flags, "2s").await;
    d.wait_imported(Duration::from_secs(15)).await;
    let first = bundle_pem(&d.b, CTB_NAME);

    // Every change of B's bundle, and when A's copy first matched it (real time), watched
    // every 100 ms beside the leaf checks — never behind them: an issuance that takes a second
    // on a busy machine must not delay the moment a change is seen.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let watch = async {
        let mut changes: Vec<(String, tokio::time::Instant, Option<tokio::time::Instant>)> =
            vec![(first.clone(), tokio::time::Instant::now(), None)];
        // Changes in the last moments get their hint (and the fetch's slack) to arrive.
        let settle = deadline + HINT + Duration::from_secs(2);
        while tokio::time::Instant::now() < settle {
            let (b_now, copy) = (bundle_pem(&d.b, CTB_NAME), bundle_pem(&d.a, B_IN_A));
            let now = tokio::time::Instant::now();
            if now < deadline && changes.last().is_some_and(|(pem, _, _)| *pem != b_now) {
                changes.push((b_now, now, None));
            }
            for (pem, _, seen) in changes.iter_mut() {
                if seen.is_none() && *pem == copy {
                    *seen = Some(now);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        changes
    };
    // A's clients keep trusting B's servers: every 3 s a leaf B issues now verifies, on the
    // certificate clock, against the bundle A imported for B.
    let leaves = async {
        let dir = tempfile::tempdir().unwrap();
        let leaf = dir.path().join("b-api.pem");
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let mut checked_leaves = 0;
        let mut every = tokio::time::interval(Duration::from_secs(3));
        while every.tick().await < deadline {
            issue(&d.b, "api", "ECDSAP256", &leaf).await;
            let chain: Vec<rustls::pki_types::CertificateDer<'static>> =
                pem::parse_many(std::fs::read_to_string(&leaf).unwrap())
                    .unwrap()
                    .into_iter()
                    .filter(|p| p.tag() == "CERTIFICATE")
                    .map(|p| p.into_contents().into())
                    .collect();
            let roots = |pem: &str| -> Vec<rustls::pki_types::CertificateDer<'static>> {
                pem::parse_many(pem)
                    .unwrap()
                    .into_iter()
                    .map(|p| p.into_contents().into())
                    .collect()
            };
            let bundles = std::collections::BTreeMap::from([
                (TRUST_DOMAIN.to_string(), roots(&bundle_pem(&d.a, CTB_NAME))),
                (B.to_string(), roots(&bundle_pem(&d.a, B_IN_A))),
            ]);
            let verifier = spiffe_tls::SpiffeVerifier::new(
                &bundles,
                vec!["spiffe://b.example.net/ns/shop/sa/api".into()],
                &provider,
            )
            .unwrap();
            let at = clock.now().duration_since(std::time::UNIX_EPOCH).unwrap();
            use rustls::client::danger::ServerCertVerifier;
            verifier
                .verify_server_cert(
                    &chain[0],
                    &chain[1..],
                    &rustls::pki_types::ServerName::try_from("b").unwrap(),
                    &[],
                    rustls::pki_types::UnixTime::since_unix_epoch(at),
                )
                .unwrap_or_else(|e| {
                    panic!("A no longer trusts a leaf of B (after {checked_leaves} leaves): {e}")
                });
            checked_leaves += 1;
        }
        checked_leaves
    };
    let (changes, checked_leaves) = tokio::join!(watch, leaves);
    assert!(
        !d.signer_a.log_text().contains("could not publish an Event"),
        "{}",
        d.signer_a.log_text()
    );
    assert!(
        changes.len() >= 3,
        "B's bundle changed {} times (publish and activate a root at least); B said:\n{}",
        changes.len() - 1,
        d.signer_b.log_text()
    );
    assert!(checked_leaves >= 10, "{checked_leaves}");
    // One fetch of slack beyond the hint: the fetch that sees the change takes its own time.
    for (i, (_, at, seen)) in changes.iter().enumerate().skip(1) {
        let seen = seen.unwrap_or_else(|| {
            panic!(
                "B's bundle change {i} never reached A; A said:\n{}",
                d.signer_a.log_text()
            )
        });
        let lag = seen.duration_since(*at);
        assert!(
            lag <= HINT + Duration::from_secs(2),
            "B's bundle change {i} reached A after {lag:?} (hint {HINT:?})"
        );
    }
    let sequence = |c: &Cluster, n: &str| {
        c.server.get("clustertrustbundles", "", n).unwrap()["metadata"]["annotations"]
            ["podcert-signer/spiffe-sequence"]
            .clone()
    };
    assert_eq!(sequence(&d.a, B_IN_A), sequence(&d.b, CTB_NAME));
}
