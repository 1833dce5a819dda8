//! Federation, importing (`--federation-config`): a foreign trust domain's bundle is fetched
//! from its bundle endpoint and published as a ClusterTrustBundle of our signer name,
//! labelled with that domain; a bad bundle or a failed fetch never replaces the last good one.
//! The endpoint here is a test server that answers whatever each case needs.

use std::time::{Duration, SystemTime};

use podcert_tests::https::{Answer, StaticServer, WebCert};
use signer_core::bundle::SpiffeBundle;
use signer_core::{CaProfile, TrustDomain};

use crate::support::*;

pub const FOREIGN: &str = "b.example.net";
/// Where the signer publishes `FOREIGN`'s bundle.
pub const FOREIGN_CTB: &str = "example.com:spiffe:federated.b.example.net";

/// A new root CA of `domain`, as DER.
fn root_of(domain: &str) -> Vec<u8> {
    let pem = CaProfile::new(TrustDomain::new(domain).unwrap())
        .root(Duration::from_secs(30 * 86_400), SystemTime::now())
        .unwrap()
        .cert_pem;
    pem::parse(pem).unwrap().into_contents()
}

/// The bundle document of `FOREIGN` with `roots`, `sequence` and a 1 s refresh hint.
fn document(roots: &[Vec<u8>], sequence: u64) -> Vec<u8> {
    SpiffeBundle {
        trust_domain: TrustDomain::new(FOREIGN).unwrap(),
        sequence: Some(sequence),
        refresh_hint: Some(Duration::from_secs(1)),
        x509_authorities: roots.to_vec(),
    }
    .to_json()
    .unwrap()
    .into_bytes()
}

/// Writes the federation file (one `https_web` domain trusting `web`'s CA); its path.
fn federation_file(cluster: &Cluster, url: &str, web: &WebCert) -> String {
    let dir = cluster.dir.path();
    std::fs::write(dir.join("b-web-ca.pem"), &web.ca_pem).unwrap();
    let path = dir.join("federation.yaml");
    std::fs::write(
        &path,
        format!(
            "trustDomains:\n  - trustDomain: {FOREIGN}\n    bundleEndpointURL: {url}\n    profile: https_web\n    caFile: b-web-ca.pem\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// The imported ClusterTrustBundle's roots (DER) and sequence, if it exists.
fn imported(cluster: &Cluster) -> Option<(Vec<Vec<u8>>, Option<u64>)> {
    ctb_roots_and_sequence(&cluster.server, FOREIGN_CTB)
}

async fn fetches(signer: &SignerProcess, result: &str) -> f64 {
    signer
        .labelled_metric(
            "podcert_federation_fetches_total",
            &format!("trust_domain=\"{FOREIGN}\",result=\"{result}\""),
        )
        .await
        .unwrap_or(0.0)
}

/// `podcert_federation_bundle_current` of `FOREIGN`.
async fn bundle_current(signer: &SignerProcess) -> Option<f64> {
    signer
        .labelled_metric(
            "podcert_federation_bundle_current",
            &format!("trust_domain=\"{FOREIGN}\""),
        )
        .await
}

/// Waits until `result` was counted twice more (one fetch may have begun before the change).
async fn wait_fetches(signer: &SignerProcess, result: &str) {
    let before = fetches(signer, result).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while fetches(signer, result).await < before + 2.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {result} fetches; the signer said:\n{}",
            signer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_bundle_is_published_and_a_bad_one_never_replaces_it() {
    let cluster = Cluster::start(podcert_tests::apiserver::ServerOptions::v1beta1()).await;
    cluster
        .server
        .install_rbac(&rendered_manifests_with(&["federation"]));
    let web = WebCert::generate("b's web CA");
    let first_root = root_of(FOREIGN);
    let good = Answer {
        status: 200,
        body: document(std::slice::from_ref(&first_root), 10),
        cert: web.clone(),
    };
    let server = StaticServer::start(good.clone()).await;
    let file = federation_file(&cluster, &server.url(), &web);
    let signer = cluster.signer("a", &["--federation-config", &file]);
    signer.wait_ready(Duration::from_secs(30)).await;

    // Published as fetched, labelled with its trust domain, linked to our signer name.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (roots, sequence) = loop {
        if let Some(found) = imported(&cluster) {
            break found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing imported; the signer said:\n{}",
            signer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(roots, vec![first_root.clone()]);
    assert_eq!(sequence, Some(10));
    let ctb = cluster
        .server
        .get("clustertrustbundles", "", FOREIGN_CTB)
        .unwrap();
    assert_eq!(ctb["spec"]["signerName"], SIGNER);
    assert_eq!(
        ctb["metadata"]["labels"]["podcert-signer/trust-domain"],
        FOREIGN
    );
    assert_eq!(
        ctb["metadata"]["labels"]["podcert-signer/federated"],
        "true"
    );
    cluster
        .wait_for_event("FederatedBundleUpdated", Duration::from_secs(10))
        .await;
    wait_fetches(&signer, "ok").await;
    assert_eq!(bundle_current(&signer).await, Some(1.0));

    // Each bad answer keeps the last good bundle, says why, and counts.
    let next_root = root_of(FOREIGN);
    let leaf = pem::parse(&web.cert_pem).unwrap().into_contents();
    let stranger = WebCert::generate("not b's web CA");
    let bad: [(&str, Answer, &str); 6] = [
        (
            "a bundle of another trust domain",
            Answer {
                body: SpiffeBundle {
                    trust_domain: TrustDomain::new("c.example.net").unwrap(),
                    sequence: Some(11),
                    refresh_hint: None,
                    x509_authorities: vec![root_of("c.example.net")],
                }
                .to_json()
                .unwrap()
                .into_bytes(),
                ..good.clone()
            },
            "bundle",
        ),
        (
            "a certificate that is not a CA",
            Answer {
                body: document(&[first_root.clone(), leaf], 11),
                ..good.clone()
            },
            "bundle",
        ),
        (
            "a lower sequence number",
            Answer {
                body: document(std::slice::from_ref(&next_root), 9),
                ..good.clone()
            },
            "bundle",
        ),
        (
            "garbage JSON",
            Answer {
                body: b"{\"keys\": [ this is not JSON".to_vec(),
                ..good.clone()
            },
            "bundle",
        ),
        (
            "an endpoint whose certificate we do not trust",
            Answer {
                cert: stranger,
                ..good.clone()
            },
            "tls",
        ),
        (
            "an HTTP error",
            Answer {
                status: 500,
                body: b"oops".to_vec(),
                ..good.clone()
            },
            "http",
        ),
    ];
    for (case, answer, result) in bad {
        server.set(answer);
        wait_fetches(&signer, result).await;
        let (roots, sequence) = imported(&cluster).unwrap();
        assert_eq!(roots, vec![first_root.clone()], "{case}: replaced");
        assert_eq!(sequence, Some(10), "{case}: replaced");
        assert_eq!(bundle_current(&signer).await, Some(0.0), "{case}");
    }
    let warning = cluster
        .wait_for_event("FederatedBundleFetchFailed", Duration::from_secs(10))
        .await;
    assert_eq!(warning["type"], "Warning");
    assert_eq!(warning["regarding"]["name"], FOREIGN_CTB);
    assert!(
        cluster.occurrences("FederatedBundleFetchFailed") > 6,
        "each failed fetch is recorded (a series): {}",
        cluster.occurrences("FederatedBundleFetchFailed")
    );
    assert!(
        !signer.log_text().contains("could not publish an Event"),
        "{}",
        signer.log_text()
    );

    // A rotation under a higher sequence is taken within a refresh hint or two.
    server.set(Answer {
        body: document(&[first_root.clone(), next_root.clone()], 11),
        ..good.clone()
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (roots, sequence) = imported(&cluster).unwrap();
        if sequence == Some(11) {
            assert_eq!(roots, vec![first_root.clone(), next_root.clone()]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rotation was not imported; the signer said:\n{}",
            signer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_fetches(&signer, "ok").await;
    assert_eq!(bundle_current(&signer).await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_federation_file_is_checked_at_start() {
    let cluster = Cluster::start(podcert_tests::apiserver::ServerOptions::v1beta1()).await;
    let dir = cluster.dir.path();
    let cases: [(&str, &str); 6] = [
        (
            "trustDomains:\n  - trustDomain: example.org\n    bundleEndpointURL: https://x/\n    profile: https_web\n",
            "trustDomains[0]: trustDomain: \"example.org\" is this signer's own trust domain",
        ),
        (
            "trustDomains:\n  - trustDomain: b.example.net\n    bundleEndpointURL: http://x/\n    profile: https_web\n",
            "trustDomains[0]: bundleEndpointURL: \"http://x/\" is not an https:// URL",
        ),
        (
            "trustDomains:\n  - trustDomain: b.example.net\n    bundleEndpointURL: https://x/\n    profile: https_spiffe\n",
            "trustDomains[0]: endpointSPIFFEID: needed with https_spiffe",
        ),
        (
            "trustDomains:\n  - trustDomain: b.example.net\n    bundleEndpointURL: https://x/\n    profile: https_spiffe\n    endpointSPIFFEID: spiffe://c.example.net/x\n    bundleFile: none.json\n",
            "is not in trust domain \"b.example.net\"",
        ),
        (
            "trustDomains:\n  - trustDomain: b_example.net\n    bundleEndpointURL: https://x/\n    profile: https_web\n",
            "which the API server refuses",
        ),
        (
            "trustDomains:\n  - trustDomain: b.example.net\n    bundleEndpointURL: https://x/\n    profile: web\n",
            "profile: \"web\" is not https_web or https_spiffe",
        ),
    ];
    for (i, (text, said)) in cases.into_iter().enumerate() {
        let path = dir.join(format!("federation-{i}.yaml"));
        std::fs::write(&path, text).unwrap();
        let mut signer = cluster.signer("flags", &["--federation-config", path.to_str().unwrap()]);
        let code = signer.wait_exit(Duration::from_secs(20));
        let stderr = signer.log_text();
        assert_eq!(code, Some(2), "{text}: {stderr}");
        assert!(stderr.contains("--federation-config"), "{stderr}");
        assert!(stderr.contains(said), "{text}: {stderr}");
    }
}
