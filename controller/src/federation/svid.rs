//! The bundle endpoint's own X.509-SVID, for the `https_spiffe` profile: the signer's
//! identity in its trust domain, issued by the signer to itself.
//!
//! The SVID names the signer as a pod of it would be named — the policy's template rendered
//! for the signer's namespace (the CA Secret's) and service account (`--service-account`),
//! e.g. `spiffe://example.org/ns/podcert-signer/sa/podcert-signer` — and is decided by the
//! same `Signer::decide` as every request: a fresh P-256 key, a proof of possession, the
//! signer's lifetime rules. Only the leader holds a signing CA, and every replica serves the
//! endpoint, so the leader keeps the SVID in the Secret [`secret_name`] (`kubernetes.io/tls`:
//! `tls.crt` the chain, `tls.key` the key) and renews it half-way through its life ([`keep`]);
//! every replica's endpoint reads it from there. The key is the endpoint's, never the CA's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use signer_core::{Decision, KeyMaterial, Request, Signer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use zeroize::{Zeroize, Zeroizing};

use crate::config::{EndpointIdentity as Identity, ObjectName};
use crate::runtime::clock::{Clock, sleep_until};
use crate::runtime::retry;
use crate::runtime::wiped::{WipedSecret, wipe};

/// The Secret that holds the endpoint's SVID, beside the CA Secret.
pub fn secret_name(ca_secret: &ObjectName) -> ObjectName {
    ObjectName {
        namespace: ca_secret.namespace.clone(),
        name: format!("{}-bundle-endpoint", ca_secret.name),
    }
}

/// A new SVID for `identity` from `signer` as of `now`: the chain and the key, PEM (wiped
/// when dropped; aws-lc wipes its own copy, the generated PKCS#8 document, likewise).
pub fn issue(
    signer: &Signer,
    identity: &Identity,
    now: SystemTime,
) -> Result<(String, Zeroizing<String>), String> {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
        .map_err(|e| format!("generating a key: {e}"))?;
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref())
        .map_err(|e| format!("reading the key: {e}"))?;
    let spki = key
        .public_key()
        .as_der()
        .map_err(|e| format!("encoding the public key: {e}"))?;
    // The proof a kubelet gives: a signature over the (here random) pod UID.
    let mut uid = [0u8; 16];
    aws_lc_rs::rand::fill(&mut uid).map_err(|e| format!("randomness: {e}"))?;
    let pod_uid: String = uid.iter().map(|b| format!("{b:02x}")).collect();
    let proof = key
        .sign(&rng, pod_uid.as_bytes())
        .map_err(|e| format!("signing the proof: {e}"))?;
    let request = Request {
        namespace: identity.namespace.clone(),
        pod_uid,
        service_account_name: identity.service_account.clone(),
        max_expiration_seconds: 86_400,
        unverified_user_annotations: BTreeMap::new(),
        key_material: KeyMaterial::Pkix {
            spki_der: spki.as_ref().to_vec(),
            proof: proof.as_ref().to_vec(),
        },
    };
    match signer.decide(&request, now).map_err(|e| e.to_string())? {
        Decision::Issue(issued) => {
            let block = pem::Pem::new("PRIVATE KEY", pkcs8.as_ref());
            let key_pem = Zeroizing::new(pem::encode(&block));
            block.into_contents().zeroize();
            Ok((issued.chain_pem, key_pem))
        }
        Decision::Deny(d) => Err(format!(
            "the signer denies its own endpoint SVID: {}: {}",
            d.reason.as_str(),
            d.message
        )),
    }
}

/// When the SVID in `chain_pem` is due for renewal: half-way through its life. None when it
/// cannot be read (then it is replaced at once).
pub fn renew_at(chain_pem: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(chain_pem).ok()?;
    let leaf = signer_core::ca::summarize(text).ok()?.into_iter().next()?;
    let half = leaf.not_before + (leaf.not_after - leaf.not_before) / 2;
    Some(signer_core::time::from_unix_seconds(half))
}

/// The Secret's chain and key, if it holds both (the key's copy wiped when dropped).
pub fn read(secret: &Secret) -> Option<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    let data = secret.data.as_ref()?;
    Some((
        data.get("tls.crt")?.0.clone(),
        Zeroizing::new(data.get("tls.key")?.0.clone()),
    ))
}

/// Keeps a valid SVID in the Secret until `token` is cancelled: issues one when it is
/// missing, unreadable or half-way through its life, with the term's current signer.
pub async fn keep(
    secrets: Api<Secret>,
    name: ObjectName,
    identity: Identity,
    signer: watch::Receiver<Arc<Signer>>,
    clock: Clock,
    token: CancellationToken,
) {
    loop {
        let what = "keeping the bundle endpoint's SVID";
        let Some(due) = retry::retry(what, &token, || {
            renew_if_due(&secrets, &name, &identity, &signer, clock)
        })
        .await
        else {
            return;
        };
        tokio::select! {
            () = sleep_until(&clock, due) => {}
            _ = token.cancelled() => return,
        }
    }
}

/// Renews the SVID if it is due; when the next look is due.
async fn renew_if_due(
    secrets: &Api<Secret>,
    name: &ObjectName,
    identity: &Identity,
    signer: &watch::Receiver<Arc<Signer>>,
    clock: Clock,
) -> Result<SystemTime, String> {
    let now = clock.now();
    let found = secrets
        .get_opt(&name.name)
        .await
        .map_err(|e| format!("reading {name}: {e}"))?
        .map(WipedSecret::new);
    if let Some(due) = found
        .as_ref()
        .and_then(|s| s.data.as_ref()?.get("tls.crt"))
        .and_then(|crt| renew_at(&crt.0))
        .filter(|t| *t > now)
    {
        return Ok(due);
    }
    let current = signer.borrow().clone();
    let (chain, key) = issue(&current, identity, now)?;
    let due = renew_at(chain.as_bytes()).ok_or("the issued SVID cannot be read back")?;
    let data = BTreeMap::from([
        ("tls.crt".to_string(), ByteString(chain.into_bytes())),
        ("tls.key".to_string(), ByteString(key.as_bytes().to_vec())),
    ]);
    let written = match found {
        None => {
            let secret = WipedSecret::new(Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.name.clone()),
                    namespace: Some(name.namespace.clone()),
                    labels: Some(BTreeMap::from([(
                        crate::ca::trust_bundle::LABEL_MANAGED_BY.to_string(),
                        "podcert-signer".to_string(),
                    )])),
                    ..Default::default()
                },
                type_: Some("kubernetes.io/tls".into()),
                data: Some(data),
                ..Default::default()
            });
            secrets.create(&PostParams::default(), &secret).await
        }
        Some(mut secret) => {
            wipe(&mut secret);
            secret.data = Some(data);
            secret.metadata.managed_fields = None;
            secrets
                .replace(&name.name, &PostParams::default(), &secret)
                .await
        }
    };
    match written.map(WipedSecret::new) {
        Ok(_echo) => {
            info!(secret = %name, "issued the bundle endpoint's SVID");
            Ok(due)
        }
        Err(e) => {
            warn!(secret = %name, error = %e, "storing the bundle endpoint's SVID failed");
            Err(format!("writing {name}: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use podcert_tests::fixtures::test_signer;

    use super::*;

    #[test]
    fn the_endpoint_svid_names_the_signers_service_account_and_is_renewed_half_way() {
        let identity = Identity {
            namespace: "podcert-signer".into(),
            service_account: "podcert-signer".into(),
        };
        let now = SystemTime::now();
        let (chain, key) = issue(test_signer(), &identity, now).unwrap();
        let leaf = pem::parse(&chain).unwrap();
        assert_eq!(
            signer_core::spiffe::svid_id(leaf.contents())
                .unwrap()
                .as_str(),
            "spiffe://cluster.local/ns/podcert-signer/sa/podcert-signer"
        );
        // The key is the leaf's: rustls accepts the pair.
        crate::runtime::http_server::server_config(chain.as_bytes(), key.as_bytes()).unwrap();
        let summary = &signer_core::ca::summarize(&chain).unwrap()[0];
        let half = summary.not_before + (summary.not_after - summary.not_before) / 2;
        assert_eq!(
            renew_at(chain.as_bytes()),
            Some(signer_core::time::from_unix_seconds(half))
        );
        assert!(renew_at(chain.as_bytes()).unwrap() > now);
        assert_eq!(renew_at(b"garbage"), None);
    }

    #[test]
    fn a_service_account_the_signer_would_deny_is_an_error_not_an_svid() {
        let identity = Identity {
            namespace: "podcert-signer".into(),
            service_account: "Not/A/Name".into(),
        };
        let e = issue(test_signer(), &identity, SystemTime::now()).unwrap_err();
        assert!(e.contains("denies its own endpoint SVID"), "{e}");
    }
}
