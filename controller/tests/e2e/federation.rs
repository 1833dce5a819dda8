//! Federation: the SPIFFE bundle endpoint (`--bundle-endpoint-addr`, the `https_web` profile)
//! serves our bundle as published — the ClusterTrustBundle's roots and sequence, in the SPIFFE
//! bundle format — follows a CA rotation within seconds, and reloads its certificate.

use std::net::SocketAddr;
use std::time::Duration;

use podcert_tests::https::{WebCert, get};
use signer_core::TrustDomain;
use signer_core::bundle::SpiffeBundle;

use crate::support::*;

/// Writes `web`'s pair beside the cluster's files; the endpoint flags for `addr`.
pub(crate) fn endpoint_flags(cluster: &Cluster, web: &WebCert, addr: SocketAddr) -> Vec<String> {
    let (cert, key) = (
        cluster.dir.path().join("endpoint.crt"),
        cluster.dir.path().join("endpoint.key"),
    );
    std::fs::write(&cert, &web.cert_pem).unwrap();
    std::fs::write(&key, &web.key_pem).unwrap();
    [
        ("--bundle-endpoint-addr", addr.to_string()),
        ("--bundle-endpoint-cert", cert.display().to_string()),
        ("--bundle-endpoint-key", key.display().to_string()),
        ("--bundle-refresh-hint", "30s".into()),
    ]
    .into_iter()
    .flat_map(|(f, v)| [f.to_string(), v])
    .collect()
}

/// The bundle the endpoint serves, once it serves one.
async fn served(addr: SocketAddr, web: &WebCert) -> SpiffeBundle {
    for _ in 0..100 {
        if let Ok((200, body)) = get(addr, &web.ca_pem, "/").await {
            return SpiffeBundle::parse(&body, &TrustDomain::new(TRUST_DOMAIN).unwrap())
                .expect("the endpoint serves a valid SPIFFE bundle of our trust domain");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the bundle endpoint never served a bundle");
}

fn published(cluster: &Cluster) -> (Vec<Vec<u8>>, Option<u64>) {
    ctb_roots_and_sequence(&cluster.server, CTB_NAME).expect("our bundle is published")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_endpoint_serves_the_published_bundle_and_follows_a_rotation() {
    let (cluster, _clock, mut flags) = crate::lifecycle::compressed().await;
    let web = WebCert::generate("operator web CA");
    let addr: SocketAddr = format!("127.0.0.1:{}", podcert_tests::free_port())
        .parse()
        .unwrap();
    flags.extend(endpoint_flags(&cluster, &web, addr));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let signer = cluster.signer("a", &flags);
    signer.wait_ready(Duration::from_secs(30)).await;

    let first = served(addr, &web).await;
    let (roots, sequence) = published(&cluster);
    assert_eq!(first.x509_authorities, roots, "the published roots");
    assert_eq!(first.sequence, sequence, "the published sequence");
    assert!(first.sequence.is_some());
    assert_eq!(first.refresh_hint, Some(Duration::from_secs(30)));

    // Anything but GET / is refused, and a client that does not trust the operator's CA
    // does not get through.
    assert_eq!(get(addr, &web.ca_pem, "/other").await.unwrap().0, 404);
    let stranger = WebCert::generate("someone else's CA");
    let refused = get(addr, &stranger.ca_pem, "/").await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("TLS")),
        "{refused:?}"
    );

    // On this clock the next root is published 6 hours (18 s) into the first root's life:
    // the endpoint serves it within seconds of its publication, under a higher sequence.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (roots, sequence) = published(&cluster);
        if roots.len() > first.x509_authorities.len() {
            let mut now = served(addr, &web).await;
            let waited = tokio::time::Instant::now();
            while now.x509_authorities != roots && waited.elapsed() < Duration::from_secs(5) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                now = served(addr, &web).await;
            }
            assert_eq!(
                now.x509_authorities, roots,
                "the rotation was not served within 5 s"
            );
            assert!(
                now.sequence > first.sequence,
                "{:?} after {:?}",
                now.sequence,
                first.sequence
            );
            now.may_replace(&first).unwrap();
            assert!(now.sequence >= sequence);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no next root was published; the signer said:\n{}",
            signer.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A renewed certificate (another CA's, here) is served within the reload period.
    let renewed = WebCert::generate("renewed web CA");
    std::fs::write(cluster.dir.path().join("endpoint.crt"), &renewed.cert_pem).unwrap();
    std::fs::write(cluster.dir.path().join("endpoint.key"), &renewed.key_pem).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while get(addr, &renewed.ca_pem, "/").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_flags_are_checked_at_start() {
    let cluster = Cluster::start(podcert_tests::apiserver::ServerOptions::v1beta1()).await;
    let web = WebCert::generate("operator web CA");
    let addr = format!("127.0.0.1:{}", podcert_tests::free_port());
    let flags = endpoint_flags(&cluster, &web, addr.parse().unwrap());
    let garbage = cluster.dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key").unwrap();
    let other = cluster.dir.path().join("other.key");
    std::fs::write(&other, WebCert::generate("other").key_pem).unwrap();
    let with_key = |key: &std::path::Path| {
        [
            &flags[..4],
            &[
                "--bundle-endpoint-key".to_string(),
                key.display().to_string(),
            ],
        ]
        .concat()
    };
    let cases: [(Vec<String>, &str); 4] = [
        (
            flags[..2].to_vec(),
            "--bundle-endpoint-cert: is needed with --bundle-endpoint-addr",
        ),
        (
            flags[2..6].to_vec(),
            "--bundle-endpoint-cert: is only used with --bundle-endpoint-addr",
        ),
        (with_key(&garbage), "--bundle-endpoint-key"),
        (
            with_key(&other),
            "--bundle-endpoint-cert/--bundle-endpoint-key",
        ),
    ];
    for (args, said) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut signer = cluster.signer("flags", &args);
        let code = signer.wait_exit(Duration::from_secs(20));
        let stderr = signer.log_text();
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(said), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("not a key"),
            "a key file's content is never echoed"
        );
    }
}
