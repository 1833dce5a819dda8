//! Name constraints are enforced by verifiers, not only by us (issue 9): a signing
//! intermediate of our profile that is stolen and made to sign an identity outside the trust
//! domain yields a chain that Go's crypto/x509 and `openssl verify` both reject; the same
//! leaf under the default, unconstrained profile is accepted, so the rejection is the
//! constraint's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use podcert_tests::fixtures::kubelet_keys;
use podcert_tests::oracles::{IssuedCase, go_judge, openssl_verify};
use signer_core::*;

fn policy(trust_domain: &str) -> Arc<Policy> {
    Arc::new(
        Policy::new(&PolicyConfig {
            trust_domain: trust_domain.into(),
            ..Default::default()
        })
        .unwrap(),
    )
}

/// A leaf for `spiffe://<minted_domain>/...` signed by an intermediate of `profile`'s root.
fn minted(profile: &CaProfile, minted_domain: &str) -> (Issued, String, Vec<u8>) {
    let now = SystemTime::now();
    let root = profile
        .root(Duration::from_secs(86_400 * 365), now)
        .unwrap()
        .load()
        .unwrap();
    let intermediate = root
        .sign_intermediate(profile, Duration::from_secs(86_400 * 7), now)
        .unwrap();
    // Whoever holds the intermediate's key can sign any name: here, with another domain.
    let thief = Signer::new(policy(minted_domain), Arc::new(intermediate));
    let k = kubelet_keys().into_iter().find(|k| k.supported).unwrap();
    let request = Request {
        namespace: "payments".into(),
        pod_uid: k.pod_uid.clone(),
        service_account_name: "api".into(),
        max_expiration_seconds: 86_400,
        unverified_user_annotations: BTreeMap::new(),
        key_material: KeyMaterial::Pkix {
            spki_der: k.spki_der.clone(),
            proof: k.proof.clone(),
        },
    };
    let Decision::Issue(issued) = thief.decide(&request, now).unwrap() else {
        panic!("denied");
    };
    (issued, root.trust_bundle_pem().to_owned(), k.spki_der)
}

fn go_verdict(issued: &Issued, roots: &str, spki: &[u8]) -> String {
    let case = IssuedCase::from_issued("minted", issued, roots, spki, 86_400);
    go_judge(&[case]).remove(0).error
}

#[test]
fn a_leaf_outside_the_trust_domain_from_a_constrained_intermediate_is_rejected_by_go_and_openssl() {
    let profile = CaProfile {
        name_constraints: true,
        ..CaProfile::new(TrustDomain::new("example.org").unwrap())
    };
    let (issued, roots, spki) = minted(&profile, "evil.example.com");
    assert_eq!(
        issued.spiffe_id.as_str(),
        "spiffe://evil.example.com/ns/payments/sa/api"
    );
    let go = go_verdict(&issued, &roots, &spki);
    assert!(
        go.contains("constraint"),
        "Go crypto/x509 must refuse it by the name constraint, said: {go:?}"
    );
    let openssl = openssl_verify(&issued.chain_pem, &roots).unwrap_err();
    assert!(
        openssl.contains("name constraint") || openssl.contains("permitted subtree"),
        "openssl must refuse it by the name constraint, said: {openssl}"
    );

    // A subdomain is another host: OpenSSL follows RFC 5280 (a constraint without a leading
    // period names one host) and refuses it; Go's crypto/x509 matches URI hosts by DNS label
    // suffix (constraints.go, dnsHasSuffix) and admits it. docs/ca-lifecycle.md says so.
    let (issued, roots, spki) = minted(&profile, "a.example.org");
    assert!(openssl_verify(&issued.chain_pem, &roots).is_err());
    assert_eq!(go_verdict(&issued, &roots, &spki), "");

    // Inside the trust domain, the constrained chain verifies.
    let (issued, roots, spki) = minted(&profile, "example.org");
    assert_eq!(go_verdict(&issued, &roots, &spki), "");
    openssl_verify(&issued.chain_pem, &roots).unwrap();
}

#[test]
fn under_the_default_profile_without_the_constraint_the_same_theft_verifies() {
    let profile = CaProfile::new(TrustDomain::new("example.org").unwrap());
    assert!(!profile.name_constraints);
    let (issued, roots, spki) = minted(&profile, "evil.example.com");
    assert_eq!(go_verdict(&issued, &roots, &spki), "");
    openssl_verify(&issued.chain_pem, &roots).unwrap();
}
