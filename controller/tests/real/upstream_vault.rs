//! An upstream authority: Vault's PKI secrets engine — Vault's own server code, built from
//! its Go module — certifies the signing intermediates, and pods trust the organisation's
//! root in Vault, never one of ours. The signer runs with `manifests/components/upstream-vault`
//! (its RBAC and settings, as a user adds them) and logs in with Kubernetes auth: Vault
//! reviews the signer's ServiceAccount token at the real kube-apiserver with the token itself,
//! which the component's system:auth-delegator binding allows. The test is Vault's operator:
//! it mounts the PKI engine, makes the root, writes the auth role and the policy, seals Vault
//! and rotates its root, over Vault's HTTP API as the `vault` CLI would.

use std::time::Duration;

use podcert_tests::control_plane::vault::Vault;
use podcert_tests::control_plane::{ApiServerOptions, Release};
use podcert_tests::oracles::openssl_verify;
use serde_json::{Value, json};

use crate::cluster::RealCluster;
use crate::issuance::{assert_mounted, same_certificates};
use crate::support::{CA_NS, SignerProcess};

const MINUTE: Duration = Duration::from_secs(60);

/// The policy the role grants: reading the mount's CA only, or signing intermediates too.
fn policy(sign: bool) -> Value {
    let mut hcl = String::from("path \"pki/cert/ca\" { capabilities = [\"read\"] }\n");
    if sign {
        hcl.push_str("path \"pki/root/sign-intermediate\" { capabilities = [\"update\"] }\n");
    }
    json!({"policy": hcl})
}

/// A new root in the PKI mount, made by `path` (`pki/root/generate/internal`, or
/// `pki/root/rotate/internal` beside the current one) as issuer `issuer`; its PEM.
async fn new_root(vault: &Vault, path: &str, name: &str, issuer: &str) -> String {
    let answer = vault
        .ok(
            "POST",
            path,
            json!({"common_name": name, "key_type": "ec", "ttl": "87600h", "issuer_name": issuer}),
        )
        .await;
    format!(
        "{}\n",
        answer["data"]["certificate"].as_str().unwrap().trim_end()
    )
}

/// Vault as its operator sets it up for the signer: a PKI mount with the organisation's root
/// (returned, PEM), and Kubernetes auth at the real API server with role `podcert-signer`
/// for the signer's ServiceAccount, under a policy that cannot sign yet.
async fn operator_setup(vault: &Vault, rc: &RealCluster) -> String {
    vault
        .ok(
            "POST",
            "sys/mounts/pki",
            json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}}),
        )
        .await;
    let root = new_root(vault, "pki/root/generate/internal", "Org Root 1", "first").await;
    vault
        .ok("POST", "sys/auth/kubernetes", json!({"type": "kubernetes"}))
        .await;
    vault
        .ok(
            "POST",
            "auth/kubernetes/config",
            json!({
                "kubernetes_host": rc.cp.url(),
                "kubernetes_ca_cert": rc.cp.ca_pem(),
                "disable_local_ca_jwt": true,
            }),
        )
        .await;
    vault
        .ok("PUT", "sys/policies/acl/podcert-signer", policy(false))
        .await;
    vault
        .ok(
            "POST",
            "auth/kubernetes/role/podcert-signer",
            json!({
                "bound_service_account_names": ["podcert-signer"],
                "bound_service_account_namespaces": [CA_NS],
                "token_policies": ["podcert-signer"],
                "token_ttl": "10m",
            }),
        )
        .await;
    root
}

/// The signer as the component runs it, pointed at this Vault (its address and TLS CA) and
/// at the ServiceAccount token the harness holds (a pod's is mounted where the default says).
fn signer(rc: &RealCluster, vault: &Vault, name: &str) -> SignerProcess {
    signer_with(rc, vault, name, &[])
}

/// [`signer`] with `extra` flags.
fn signer_with(rc: &RealCluster, vault: &Vault, name: &str, extra: &[String]) -> SignerProcess {
    let jwt = rc.cp.service_account_token_file(CA_NS, "podcert-signer");
    let mut flags = vec![
        "--upstream-vault-address".to_owned(),
        vault.address(),
        "--upstream-vault-ca-file".to_owned(),
        vault.ca_file.display().to_string(),
        "--upstream-vault-jwt-file".to_owned(),
        jwt.display().to_string(),
    ];
    flags.extend_from_slice(extra);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    rc.signer(name, &flags)
}

#[tokio::test]
async fn vault_certifies_the_intermediates_through_a_denial_a_sealed_vault_and_a_root_rotation() {
    let rc =
        RealCluster::start_with(ApiServerOptions::new(Release::V1_37), &["upstream-vault"]).await;
    let vault = Vault::start(rc.cp.dir.path()).await;
    let root1 = operator_setup(&vault, &rc).await;
    let signer_a = signer(&rc, &vault, "a");

    // The policy does not yet allow signing: Vault answers 403, the signer counts a denial,
    // says so, and does not sign without a certified intermediate.
    let deadline = tokio::time::Instant::now() + MINUTE;
    while signer_a
        .labelled_metric("podcert_upstream_requests_total", "outcome=\"denied\"")
        .await
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no denial counted; log:\n{}\nVault:\n{}",
            signer_a.log_text(),
            vault.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        signer_a.log_text().contains("permission denied"),
        "Vault's reason is logged:\n{}",
        signer_a.log_text()
    );
    assert_ne!(signer_a.admin("/ready").await.map(|(c, _)| c), Some(200));

    // The operator grants sign-intermediate; the signer's next attempt is certified, and
    // pods get certificates that verify — with openssl and Go — to the organisation's root,
    // which is all the trust bundle holds. No root of ours exists: no CA Secret.
    vault
        .ok("PUT", "sys/policies/acl/podcert-signer", policy(true))
        .await;
    signer_a.wait_ready(2 * MINUTE).await;
    assert_eq!(
        same_certificates(&rc.trust_bundle().await),
        same_certificates(&root1)
    );
    assert!(rc.ca_secret().await.is_none(), "no root of ours");
    rc.namespace("shop", &["web"]).await;
    let (_, kubelet) = rc.node_with_kubelet("node-a", Release::V1_37).await;
    rc.pod("shop", "web-1", "web", "node-a", &["ECDSAP256", "RSA3072"])
        .await;
    let pcrs = assert_mounted(&rc, &kubelet, &signer_a, ("shop", "web-1", "web"), 2).await;
    for pcr in &pcrs {
        let chain = pcr["status"]["certificateChain"].as_str().unwrap();
        assert_eq!(
            same_certificates(chain).len(),
            2,
            "the leaf and our intermediate; the root is the anchor, not sent"
        );
        openssl_verify(chain, &root1).unwrap();
    }
    // The intermediate is what the signer asked for: a CA that signs leaves only (path length
    // 0), for the intermediate validity (7 days by default), with the request's subject.
    let chain = pem::parse_many(pcrs[0]["status"]["certificateChain"].as_str().unwrap()).unwrap();
    let (_, intermediate) = x509_parser::parse_x509_certificate(chain[1].contents()).unwrap();
    let constraints = intermediate.basic_constraints().unwrap().unwrap().value;
    assert!(constraints.ca);
    assert_eq!(constraints.path_len_constraint, Some(0));
    // (Vault backdates notBefore by its not_before_duration, 30 s by default.)
    let validity = intermediate.validity();
    let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
    assert!(
        (7 * 86_400..=7 * 86_400 + 60).contains(&lifetime),
        "{validity:?}"
    );
    assert!(
        intermediate
            .subject()
            .to_string()
            .contains("podcert-signer"),
        "{}",
        intermediate.subject()
    );

    // A standby logs in and holds its own certified intermediate before it may lead.
    let standby = signer(&rc, &vault, "b");
    standby.wait_ready(MINUTE).await;

    // Every token the signers logged in for was revoked after use: only the root token is left.
    let (code, accessors) = vault
        .api("GET", "auth/token/accessors?list=true", Value::Null)
        .await;
    assert_eq!(code, 200, "{accessors}");
    assert_eq!(
        accessors["data"]["keys"].as_array().map(Vec::len),
        Some(1),
        "{accessors}"
    );
    // No credential reaches a log: not the ServiceAccount token, not a Vault token.
    let jwt =
        std::fs::read_to_string(rc.cp.service_account_token_file(CA_NS, "podcert-signer")).unwrap();
    for log in [signer_a.log_text(), standby.log_text()] {
        assert!(
            !log.contains(jwt.trim()),
            "the ServiceAccount token is logged"
        );
        assert!(!log.contains("hvs."), "a Vault token is logged:\n{log}");
    }

    // An outage: Vault is sealed (every request answered 503), and signing goes on with the
    // current intermediate — and through a failover: the leader killed, the standby takes
    // over and signs at once with the intermediate it holds.
    vault.seal().await;
    rc.pod("shop", "web-2", "web", "node-a", &["ED25519"]).await;
    assert_mounted(&rc, &kubelet, &signer_a, ("shop", "web-2", "web"), 1).await;
    let mut signer_a = signer_a;
    signer_a.kill();
    rc.pod("shop", "web-3", "web", "node-a", &["ECDSAP256"])
        .await;
    assert_mounted(&rc, &kubelet, &standby, ("shop", "web-3", "web"), 1).await;
    assert!(
        standby.log_text().contains("became the leader"),
        "the standby signed as the leader"
    );

    // The operator unseals Vault and rotates the organisation's root (a new issuer made the
    // mount's default). A new leadership term is certified under it, and the trust bundle
    // publishes the new root — beside the old one, kept for the leaves already issued under
    // it — before any leaf chains to it.
    vault.unseal().await;
    let root2 = new_root(&vault, "pki/root/rotate/internal", "Org Root 2", "next").await;
    vault
        .ok("POST", "pki/root/replace", json!({"default": "next"}))
        .await;
    let mut standby = standby;
    standby.terminate();
    let signer_c = signer(&rc, &vault, "c");
    signer_c.wait_ready(2 * MINUTE).await;
    crate::upstream::a_rotated_root_reaches_pods_before_leaves_use_it(
        &rc, &kubelet, &signer_c, &root1, &root2,
    )
    .await;
}

/// With a PKCS#11 token configured (a real SoftHSM2) and an upstream authority, the token
/// holds each signing intermediate's key — there is no root of ours for it to hold — and
/// signs every leaf: the key Vault certifies is one the token made, under the label
/// `<key label>.intermediate`, and an intermediate key past its end date (a gone replica's)
/// is destroyed before a new one is made.
#[tokio::test]
async fn with_a_token_vault_certifies_an_intermediate_key_the_token_made_and_holds() {
    use podcert_signer::{Pin, Token, TokenConfig};
    use podcert_tests::softhsm::TestToken;
    use signer_core::{CaKeyType, KeyDevice};

    let rc =
        RealCluster::start_with(ApiServerOptions::new(Release::V1_37), &["upstream-vault"]).await;
    let vault = Vault::start(rc.cp.dir.path()).await;
    let root = operator_setup(&vault, &rc).await;
    vault
        .ok("PUT", "sys/policies/acl/podcert-signer", policy(true))
        .await;
    let hsm = TestToken::new("real-vault");
    let intermediates = Token::open(TokenConfig {
        module: hsm.module.clone(),
        token_label: hsm.label.clone(),
        key_label: "podcert-signer-root.intermediate".into(),
        pin: Pin::new(hsm.pin.clone()),
    })
    .unwrap();
    let two_days_ago = std::time::SystemTime::now() - 2 * 86_400 * Duration::from_secs(1);
    let ended = intermediates
        .generate_until(CaKeyType::EcdsaP256, Some(two_days_ago))
        .unwrap();
    let flags = [
        "--ca-pkcs11-module".to_owned(),
        hsm.module.display().to_string(),
        "--ca-pkcs11-token-label".to_owned(),
        hsm.label.clone(),
        "--ca-pkcs11-pin-file".to_owned(),
        hsm.pin_file().display().to_string(),
    ];
    let signer = signer_with(&rc, &vault, "a", &flags);
    signer.wait_ready(2 * MINUTE).await;

    rc.namespace("shop", &["web"]).await;
    let (_, kubelet) = rc.node_with_kubelet("node-a", Release::V1_37).await;
    rc.pod("shop", "web-1", "web", "node-a", &["ECDSAP256"])
        .await;
    let pcrs = assert_mounted(&rc, &kubelet, &signer, ("shop", "web-1", "web"), 1).await;
    let chain = pcrs[0]["status"]["certificateChain"].as_str().unwrap();
    openssl_verify(chain, &root).unwrap();

    let keys = intermediates.keys().unwrap();
    assert!(
        keys.iter().all(|k| k.public_key() != ended.public_key()),
        "the ended key is destroyed; {} keys; log:\n{}",
        keys.len(),
        signer.log_text()
    );
    assert_eq!(
        keys.len(),
        1,
        "one intermediate key; log:\n{}",
        signer.log_text()
    );
    let certs = pem::parse_many(chain).unwrap();
    let (_, intermediate) = x509_parser::parse_x509_certificate(certs[1].contents()).unwrap();
    assert_eq!(
        intermediate.public_key().subject_public_key.data.as_ref(),
        keys[0].public_key(),
        "Vault certified the token's key"
    );
    assert!(
        rc.ca_secret().await.is_none(),
        "no root of ours, in the token or elsewhere"
    );
}
