//! examples/: the SPIFFE mTLS workload with certificates the real signer issued, written as
//! the kubelet writes them: for `api` and `web`, SPIFFE credential folders as the examples'
//! manifests lay them out (`credential-bundle.pem` = PKCS#8 key + chain, and
//! `<trust-domain>.spiffe-trust-bundle.pem` from the ClusterTrustBundle); for the others, files
//! named one by one. Handshakes over loopback succeed for allowed peers, fail for a disallowed
//! SPIFFE ID and for a certificate from another CA, and pick up rotation without a restart.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use podcert_tests::apiserver::ServerOptions;
use spiffe_mtls::{CredentialFiles, Served, exchange};
use support::*;

const API: &str = "spiffe://example.org/ns/shop/sa/api";
const WEB: &str = "spiffe://example.org/ns/shop/sa/web";

fn serial(cert: &[u8]) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    x509_parser::certificate::X509Certificate::from_der(cert)
        .unwrap()
        .1
        .raw_serial()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spiffe_mtls_between_two_workloads_with_rotation() {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    // With the default CA profile, as the README's quick start deploys it.
    let signer = cluster.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(30)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = |n: &str| -> PathBuf { dir.path().join(n) };
    let trust_bundle = cluster.trust_bundle().await;
    for folder in ["api", "web"] {
        std::fs::create_dir(file(folder)).unwrap();
        std::fs::write(
            file(&format!("{folder}/example.org.spiffe-trust-bundle.pem")),
            &trust_bundle,
        )
        .unwrap();
    }
    // Without its credential bundle, a folder says what is missing.
    let err = CredentialFiles::folder(file("api")).current().unwrap_err();
    assert!(err.to_string().contains("credential-bundle.pem"), "{err}");
    issue(
        &cluster,
        "api",
        "ECDSAP256",
        &file("api/credential-bundle.pem"),
    )
    .await;
    issue(
        &cluster,
        "web",
        "ED25519",
        &file("web/credential-bundle.pem"),
    )
    .await;
    issue(&cluster, "intruder", "ECDSAP384", &file("intruder.pem")).await;
    std::fs::write(file("trust.pem"), &trust_bundle).unwrap();

    let api = Arc::new(CredentialFiles::folder(file("api")));
    let web = CredentialFiles::folder(file("web"));
    let server = start_server(api.clone(), &[WEB]).await;

    // The allowed client talks to the allowed server; each sees the other's SPIFFE ID.
    let x = exchange(server.addr, &web, &[API.to_string()])
        .await
        .expect("handshake");
    assert_eq!(x.peer, API);
    assert_eq!(x.reply, format!("hello {WEB} from {API}"));
    let first_serial = serial(&x.peer_certificate);

    // A client whose SPIFFE ID the server does not allow is refused.
    let intruder = CredentialFiles::new(file("intruder.pem"), file("trust.pem"));
    assert!(
        exchange(server.addr, &intruder, &[API.to_string()])
            .await
            .is_err()
    );
    // A client that does not allow the server's ID refuses it.
    let err = exchange(
        server.addr,
        &web,
        &["spiffe://example.org/ns/shop/sa/other".to_string()],
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("is not allowed"), "{err}");

    // A certificate for the allowed ID but from another CA is refused by the server (the
    // client trusts the real bundle, so only the server's check can stop it).
    {
        let rogue = podcert_tests::fixtures::signer_with(&signer_core::PolicyConfig {
            trust_domain: "example.org".into(),
            ..Default::default()
        });
        issue_outside(&rogue, "web", &file("rogue.pem"));
        let rogue_files = CredentialFiles::new(file("rogue.pem"), file("trust.pem"));
        assert!(
            exchange(server.addr, &rogue_files, &[API.to_string()])
                .await
                .is_err(),
            "a foreign CA's certificate was accepted"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    {
        let served = server.served.lock().unwrap();
        assert!(
            matches!(&served[0], Served::Accepted { peer } if peer == WEB),
            "{served:?}"
        );
        let refused: Vec<&str> = served
            .iter()
            .filter_map(|s| match s {
                Served::Refused { error } => Some(error.as_str()),
                Served::Accepted { .. } => None,
            })
            .collect();
        assert_eq!(refused.len(), 3, "{served:?}");
        // Reports come from concurrent tasks, in any order.
        for want in [
            "sa/intruder is not allowed",
            "alert",
            "does not chain to the trust bundle",
        ] {
            assert!(
                refused.iter().any(|r| r.contains(want)),
                "no refusal mentions {want:?}: {refused:?}"
            );
        }
    }

    // The kubelet rotates the server's certificate: the next handshake presents the new one,
    // without restarting the server.
    issue(
        &cluster,
        "api",
        "ECDSAP256",
        &file("api/credential-bundle.pem"),
    )
    .await;
    let x = exchange(server.addr, &web, &[API.to_string()])
        .await
        .expect("handshake after rotation");
    assert_ne!(
        serial(&x.peer_certificate),
        first_serial,
        "the rotated certificate was not picked up"
    );
    assert_eq!(x.peer, API);

    // A folder that lost our own trust domain's bundle refuses to go on, naming the file.
    std::fs::remove_file(file("web/example.org.spiffe-trust-bundle.pem")).unwrap();
    let err = exchange(server.addr, &web, &[API.to_string()])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("example.org.spiffe-trust-bundle.pem"),
        "{err}"
    );
}
