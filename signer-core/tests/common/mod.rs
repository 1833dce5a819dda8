//! What signer-core's integration tests share: a signer under a fresh P-256 CA, a request as a
//! 1.36+ kubelet files it, and the grant an identity policy gives it. Trust domain
//! `example.org`, service account `api`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use signer_core::*;

pub const TRUST_DOMAIN: &str = "example.org";

/// A signer under `config` (trust domain `example.org`), with a root of its own.
pub fn signer(config: PolicyConfig) -> Signer {
    let policy = Policy::new(&PolicyConfig {
        trust_domain: TRUST_DOMAIN.into(),
        ..config
    })
    .unwrap();
    let ca = CaProfile::new(policy.trust_domain().clone())
        .root(Duration::from_secs(86_400 * 30), SystemTime::now())
        .unwrap()
        .load()
        .unwrap();
    Signer::new(Arc::new(policy), Arc::new(ca))
}

/// An identity policy of `example.org` under a one-day `--default-lifetime`.
pub fn identity(yaml: &str) -> IdentityPolicy {
    IdentityPolicy::parse(
        yaml,
        &TrustDomain::new(TRUST_DOMAIN).unwrap(),
        Duration::from_secs(86_400),
    )
    .unwrap()
}

/// The grant `identity` gives service account `api` in `namespace`.
pub fn grant<'p>(identity: &'p IdentityPolicy, namespace: &str) -> &'p Grant {
    identity
        .decide(&Subject {
            namespace,
            namespace_labels: &BTreeMap::new(),
            service_account: "api",
        })
        .unwrap()
}

/// A request of service account `api` in `namespace` for a new `alg` key, as a stub CSR,
/// with the pod's `userAnnotations`.
pub fn request(
    namespace: &str,
    alg: &'static rcgen::SignatureAlgorithm,
    annotations: &[(&str, &str)],
) -> Request {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    Request {
        namespace: namespace.into(),
        pod_uid: "uid".into(),
        service_account_name: "api".into(),
        max_expiration_seconds: 86_400,
        unverified_user_annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        key_material: KeyMaterial::StubCsr {
            der: params.serialize_request(&key).unwrap().der().to_vec(),
        },
    }
}
