//! The kubelet's pod certificate manager, as upstream's `pkg/kubelet/podcertificate` behaves,
//! on a scaled clock so that days of credential lifetime pass in seconds.
//!
//! A [`Release`] says how a kubelet files requests: 1.35 through `v1beta1` with a pkix key and
//! proof of possession, 1.36 through `v1beta1` with a stub CSR, 1.37 through `v1` with a stub
//! CSR. The [`Manager`] holds one credential per pod and behaves as `podcertificatemanager.go`:
//! it files a request with a **new key** for every credential; once issued, it refreshes at
//! `beginRefreshAt` plus a jitter in [0, 5 min) — again with a new key and a new request; a
//! `Denied` or `Failed` answer, even to a refresh, replaces the pod's credential with the
//! error (the pod loses its still-valid certificate); a request it has not seen for 10
//! minutes is assumed deleted and filed again; and a kubelet restart requests every
//! credential again at once.
//!
//! Time: the manager's clock runs `scale` times faster than the wall clock. A credential
//! received at virtual time `v` from a certificate whose `notAfter` lies `d` seconds after the
//! real moment it was seen expires at `v + d`; its refresh is due at `v + (beginRefreshAt −
//! seen) + jitter`. [`Manager::report`] gives what a soak asserts: whether every pod held a
//! valid credential at every moment, the smallest validity left when a refresh landed, and
//! how the refresh load spread over time.

mod manager;

pub use manager::Manager;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use serde_json::{Value, json};

use crate::kubelet::Format;

/// How a kubelet release files requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// v1beta1, pkixPublicKey + proofOfPossession.
    K1_35,
    /// v1beta1, stubPKCS10Request.
    K1_36,
    /// v1, stubPKCS10Request (v1 has no pkix fields).
    K1_37,
}

impl Release {
    pub fn api_version(self) -> &'static str {
        match self {
            Release::K1_35 | Release::K1_36 => "v1beta1",
            Release::K1_37 => "v1",
        }
    }

    pub fn format(self) -> Format {
        match self {
            Release::K1_35 => Format::Pkix,
            Release::K1_36 | Release::K1_37 => Format::Csr,
        }
    }
}

/// One pod's podCertificate source.
#[derive(Debug, Clone)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account: String,
    /// `ECDSAP256` or `ED25519`: the types the emulator makes fresh keys for.
    pub key_type: String,
}

/// A fresh key and the request fields that prove it, as the kubelet makes them.
fn fresh_key_material(key_type: &str, format: Format, pod_uid: &str) -> (Vec<u8>, Value) {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    match format {
        Format::Csr => {
            let alg = match key_type {
                "ED25519" => &rcgen::PKCS_ED25519,
                _ => &rcgen::PKCS_ECDSA_P256_SHA256,
            };
            let key = rcgen::KeyPair::generate_for(alg).expect("key generation");
            let mut params = rcgen::CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            let csr = params.serialize_request(&key).expect("a CSR");
            let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
            (spki, json!({"stubPKCS10Request": b64(csr.der())}))
        }
        Format::Pkix => {
            let rng = aws_lc_rs::rand::SystemRandom::new();
            let (spki, proof) = match key_type {
                "ED25519" => {
                    let key = aws_lc_rs::signature::Ed25519KeyPair::generate().expect("key");
                    let spki = key.public_key().as_der().expect("SPKI").as_ref().to_vec();
                    (spki, key.sign(pod_uid.as_bytes()).as_ref().to_vec())
                }
                _ => {
                    let alg = &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
                    let key = aws_lc_rs::signature::EcdsaKeyPair::generate(alg).expect("key");
                    let spki = key.public_key().as_der().expect("SPKI").as_ref().to_vec();
                    // ASN.1 ECDSA over SHA-256(pod UID), as the kubelet signs.
                    let sig = key.sign(&rng, pod_uid.as_bytes()).expect("signature");
                    (spki, sig.as_ref().to_vec())
                }
            };
            (
                spki.clone(),
                json!({"pkixPublicKey": b64(&spki), "proofOfPossession": b64(&proof)}),
            )
        }
    }
}

/// What a run of the manager measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RefreshReport {
    pub pods: usize,
    /// Credentials issued (first issuance and refreshes).
    pub issued: usize,
    /// The fewest refreshes any pod completed.
    pub min_refreshes_per_pod: usize,
    /// Moments a pod that had held a credential held none valid (must be empty).
    pub lapses: Vec<String>,
    /// Pods whose credential a Denied/Failed answer replaced.
    pub lost_to_denial: Vec<String>,
    /// The least validity left on the old credential when its refresh landed (virtual s).
    pub min_remaining_at_refresh_s: f64,
    /// Requests filed again after 10 minutes unseen.
    pub refiled: usize,
    /// Refresh requests filed per virtual hour, from the start.
    pub refreshes_per_virtual_hour: Vec<usize>,
    /// Virtual seconds from filing to issuance: median and max.
    pub issuance_p50_s: f64,
    pub issuance_max_s: f64,
}

/// `count` pods in `namespace`, alternating ECDSAP256 and ED25519.
pub fn pods(namespace: &str, count: usize) -> Vec<Pod> {
    (0..count)
        .map(|i| Pod {
            namespace: namespace.into(),
            name: format!("pod-{i}"),
            uid: crate::random_uid(),
            service_account: format!("sa-{}", i % 7),
            key_type: ["ECDSAP256", "ED25519"][i % 2].into(),
        })
        .collect()
}
