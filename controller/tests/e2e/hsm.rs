//! The root key in a PKCS#11 token (a real SoftHSM2), end to end: the Secret holds the root's
//! certificate and no key, a restarted signer finds the key again by label and signs on
//! under the same root, and an install whose root key is in the Secret moves it into the
//! token by an ordinary rotation.

use std::time::Duration;

use podcert_tests::apiserver::ServerOptions;
use podcert_tests::softhsm::TestToken;

use crate::support::*;

fn token_flags(token: &TestToken) -> Vec<String> {
    vec![
        "--ca-pkcs11-module".into(),
        token.module.display().to_string(),
        "--ca-pkcs11-token-label".into(),
        token.label.clone(),
        "--ca-pkcs11-pin-file".into(),
        token.pin_file().display().to_string(),
    ]
}

fn args(flags: &[String]) -> Vec<&str> {
    flags.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_root_key_in_a_token_the_secret_holds_no_key_and_a_new_leader_signs_under_the_same_root()
 {
    key_in_a_token(test_binary(), "e2e-custody").await;
}

/// The binary the container image ships (glibc, built by scripts/build-release as the
/// Dockerfile builds it) loads the PKCS#11 module: a static musl build could not dlopen it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_binary_loads_the_token_module_and_signs_under_the_token_root() {
    key_in_a_token(&podcert_tests::image_binary(), "e2e-image").await;
}

async fn key_in_a_token(bin: &std::path::Path, label: &str) {
    let token = TestToken::new(label);
    let flags = token_flags(&token);
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let mut a = cluster.signer_from(bin, "a", &args(&flags));
    a.wait_ready(Duration::from_secs(30)).await;
    let first = assert_burst_issued(
        &cluster,
        "hsm-a",
        20,
        Duration::from_secs(60),
        &a.log_text(),
    )
    .await;
    let stored = cluster.ca_secret_data().unwrap();
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        ["ca.crt", "tls.crt"],
        "the Secret holds the root's certificate and no key"
    );
    assert!(
        !a.log_text().contains("PRIVATE KEY") && !a.log_text().contains(&token.pin),
        "{}",
        a.log_text()
    );
    assert_eq!(a.terminate(), Some(0), "{}", a.log_text());

    // A new process (the next leader) finds the root key by label and signs on under it.
    let b = cluster.signer_from(bin, "b", &args(&flags));
    b.wait_ready(Duration::from_secs(30)).await;
    let second = assert_burst_issued(
        &cluster,
        "hsm-b",
        20,
        Duration::from_secs(60),
        &b.log_text(),
    )
    .await;
    assert_eq!(first, second, "the trust bundle is unchanged");
    assert_eq!(
        cluster.ca_secret_data().unwrap(),
        stored,
        "the Secret is unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_whose_key_is_in_the_secret_moves_into_a_newly_configured_token_by_rotation() {
    let token = TestToken::new("e2e-migrate");
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let mut a = cluster.signer("a", &[]);
    a.wait_ready(Duration::from_secs(30)).await;
    assert!(cluster.ca_secret_data().unwrap().contains_key("tls.key"));
    assert_eq!(a.terminate(), Some(0));

    // The operator configures a token: the root is rotated into it, with the usual overlap.
    let mut flags = token_flags(&token);
    flags.extend(["--ca-preview-delay", "1s", "--ca-propagation-delay", "2s"].map(String::from));
    let b = cluster.signer("b", &args(&flags));
    b.wait_ready(Duration::from_secs(30)).await;
    cluster
        .wait_for_event("RootActivated", Duration::from_secs(30))
        .await;
    let stored = cluster.ca_secret_data().unwrap();
    assert!(
        !stored.contains_key("tls.key") && !stored.contains_key("next.key"),
        "the Secret still holds a key: {:?}",
        stored.keys().collect::<Vec<_>>()
    );
    // Leaves now chain to the token's root, which the bundle publishes (beside the old one
    // until its last leaf has expired).
    let bundle = assert_burst_issued(
        &cluster,
        "hsm-m",
        20,
        Duration::from_secs(60),
        &b.log_text(),
    )
    .await;
    assert!(bundle.contains(stored["tls.crt"].trim()), "{bundle}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_racing_on_a_fresh_install_leave_one_root_key_in_the_token() {
    use podcert_signer::{Pin, Token, TokenConfig};
    let token = TestToken::new("e2e-race");
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    grant_leases(&cluster, &["a", "b"]);
    // Separate Leases, so both lead and both make a root key before racing to store it.
    let mut a_flags = token_flags(&token);
    a_flags.extend(["--lease-name".into(), "a".into()]);
    let mut b_flags = token_flags(&token);
    b_flags.extend(["--lease-name".into(), "b".into()]);
    let a = cluster.signer("a", &args(&a_flags));
    let b = cluster.signer("b", &args(&b_flags));
    a.wait_ready(Duration::from_secs(30)).await;
    b.wait_ready(Duration::from_secs(30)).await;
    assert_burst_issued(&cluster, "hsm-race", 20, Duration::from_secs(60), "").await;
    let opened = Token::open(TokenConfig {
        module: token.module.clone(),
        token_label: token.label.clone(),
        key_label: "podcert-signer-root".into(),
        pin: Pin::new(token.pin.clone()),
    })
    .unwrap();
    let keys = opened.keys().unwrap();
    let logs = format!("{}\n{}", a.log_text(), b.log_text());
    assert_eq!(keys.len(), 1, "root keys left in the token; logs:\n{logs}");
}
