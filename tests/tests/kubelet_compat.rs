//! signer-core against the real thing: requests made by Go exactly as the kubelet makes them
//! (contract §3), certificates judged by Go's crypto/x509, `openssl verify` and py-spiffe
//! (contract §4, §7).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use podcert_tests::fixtures::{KubeletKey, intermediate_ca_pem, kubelet_keys};
use podcert_tests::kubelet::Format;
use podcert_tests::oracles::{IssuedCase, assert_go_accepts, openssl_verify, py_spiffe_parse};
use signer_core::time::unix_seconds;
use signer_core::*;

fn request(k: &KubeletKey, format: Format) -> Request {
    Request {
        namespace: "payments".into(),
        pod_uid: k.pod_uid.clone(),
        service_account_name: "api".into(),
        max_expiration_seconds: 86_400,
        unverified_user_annotations: BTreeMap::new(),
        key_material: match format {
            Format::Pkix => KeyMaterial::Pkix {
                spki_der: k.spki_der.clone(),
                proof: k.proof.clone(),
            },
            Format::Csr => KeyMaterial::StubCsr {
                der: k.stub_csr_der.clone(),
            },
        },
    }
}

fn policy() -> Arc<Policy> {
    Arc::new(
        Policy::new(&PolicyConfig {
            trust_domain: "example.org".into(),
            ..Default::default()
        })
        .unwrap(),
    )
}

fn generated_ca(kt: CaKeyType) -> Ca {
    let pem = CaPem::generate(
        kt,
        policy().trust_domain(),
        Duration::from_secs(86_400 * 365),
        SystemTime::now(),
    )
    .unwrap();
    Ca::from_pem(&pem.cert_pem, &pem.key_pem, None).unwrap()
}

/// A generated root's signing intermediate, as a leader makes it: the two-tier default.
fn signing_intermediate(kt: CaKeyType) -> Ca {
    let profile = CaProfile {
        key_type: kt,
        ..CaProfile::new(policy().trust_domain().clone())
    };
    generated_ca(kt)
        .sign_intermediate(&profile, Duration::from_secs(86_400 * 7), SystemTime::now())
        .unwrap()
}

/// What cert-manager gives a BYO user: `tls.crt` an intermediate, `ca.crt` the root.
fn intermediate_ca() -> Ca {
    let (crt, key, root) = intermediate_ca_pem("BYO");
    Ca::from_pem(&crt, &key, Some(&root)).unwrap()
}

fn signers() -> Vec<(&'static str, Signer)> {
    vec![
        (
            "p256-root",
            Signer::new(policy(), Arc::new(generated_ca(CaKeyType::EcdsaP256))),
        ),
        (
            "p384-root",
            Signer::new(policy(), Arc::new(generated_ca(CaKeyType::EcdsaP384))),
        ),
        (
            "ed25519-root",
            Signer::new(policy(), Arc::new(generated_ca(CaKeyType::Ed25519))),
        ),
        (
            "p256-root/p256-signing",
            Signer::new(
                policy(),
                Arc::new(signing_intermediate(CaKeyType::EcdsaP256)),
            ),
        ),
        (
            "ed25519-root/ed25519-signing",
            Signer::new(policy(), Arc::new(signing_intermediate(CaKeyType::Ed25519))),
        ),
        (
            "byo-p384-root/p256-intermediate",
            Signer::new(policy(), Arc::new(intermediate_ca())),
        ),
    ]
}

fn supported() -> Vec<KubeletKey> {
    let keys: Vec<_> = kubelet_keys().into_iter().filter(|k| k.supported).collect();
    assert_eq!(keys.len(), 6, "fixtures hold all six supported key types");
    keys
}

fn issue(signer: &Signer, req: &Request) -> Issued {
    match signer.decide(req, SystemTime::now()).unwrap() {
        Decision::Issue(i) => i,
        Decision::Deny(d) => panic!("denied: {d:?}"),
    }
}

fn deny_reason(signer: &Signer, req: &Request) -> DenyReason {
    match signer.decide(req, SystemTime::now()).unwrap() {
        Decision::Deny(d) => d.reason,
        Decision::Issue(i) => panic!("issued {}", i.spiffe_id),
    }
}

#[test]
fn every_kubelet_key_in_both_formats_is_issued_and_accepted_by_go_openssl_and_py_spiffe() {
    let mut cases = Vec::new();
    let mut svids = Vec::new();
    for (ca_name, signer) in signers() {
        for k in supported() {
            for format in [Format::Pkix, Format::Csr] {
                let req = request(&k, format);
                let issued = issue(&signer, &req);
                assert_eq!(
                    issued.spiffe_id.as_str(),
                    "spiffe://example.org/ns/payments/sa/api"
                );
                assert_eq!(issued.key_type.as_str(), k.key_type);
                let name = format!("{ca_name}/{}/{format:?}", k.key_type);
                openssl_verify(&issued.chain_pem, signer.ca().trust_bundle_pem())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                svids.push((issued.chain_pem.clone(), k.key_pem()));
                cases.push(IssuedCase::from_issued(
                    name,
                    &issued,
                    signer.ca().trust_bundle_pem(),
                    &k.spki_der,
                    req.max_expiration_seconds,
                ));
            }
        }
    }
    assert_eq!(cases.len(), 6 * 6 * 2);
    assert_go_accepts(&cases);
    for (r, case) in py_spiffe_parse(&svids).into_iter().zip(&cases) {
        assert_eq!(
            r.as_deref(),
            Ok("spiffe://example.org/ns/payments/sa/api"),
            "py-spiffe on {}",
            case.name
        );
    }
}

#[test]
fn short_max_expiration_gives_exactly_an_hour_and_go_agrees() {
    let (_, signer) = signers().remove(0);
    let k = &supported()[1];
    let mut req = request(k, Format::Csr);
    req.max_expiration_seconds = 3600;
    let issued = issue(&signer, &req);
    assert_eq!(
        unix_seconds(issued.not_after) - unix_seconds(issued.not_before),
        3600
    );
    let case = IssuedCase::from_issued(
        "3600",
        &issued,
        signer.ca().trust_bundle_pem(),
        &k.spki_der,
        3600,
    );
    assert_go_accepts(&[case]);
}

#[test]
fn forged_proofs_of_possession_are_denied() {
    let (_, signer) = signers().remove(0);
    let keys = supported();
    for (i, k) in keys.iter().enumerate() {
        let mut flipped = request(k, Format::Pkix);
        if let KeyMaterial::Pkix { proof, .. } = &mut flipped.key_material {
            let mid = proof.len() / 2;
            proof[mid] ^= 0x01;
        }
        assert_eq!(
            deny_reason(&signer, &flipped),
            DenyReason::InvalidProofOfPossession,
            "{} flipped",
            k.key_type
        );

        let mut other_pod = request(k, Format::Pkix);
        other_pod.pod_uid = "00000000-0000-4000-8000-000000000001".into();
        assert_eq!(
            deny_reason(&signer, &other_pod),
            DenyReason::InvalidProofOfPossession,
            "{} other UID",
            k.key_type
        );

        // Another key's valid proof for its own pod, presented with this key and that pod.
        let other = &keys[(i + 1) % keys.len()];
        let mut other_key = request(k, Format::Pkix);
        other_key.pod_uid = other.pod_uid.clone();
        if let KeyMaterial::Pkix { proof, .. } = &mut other_key.key_material {
            *proof = other.proof.clone();
        }
        assert_eq!(
            deny_reason(&signer, &other_key),
            DenyReason::InvalidProofOfPossession,
            "{} other key",
            k.key_type
        );

        let mut csr = request(k, Format::Csr);
        if let KeyMaterial::StubCsr { der } = &mut csr.key_material {
            let last = der.len() - 1;
            der[last] ^= 0x01;
        }
        assert_eq!(
            deny_reason(&signer, &csr),
            DenyReason::InvalidProofOfPossession,
            "{} CSR signature",
            k.key_type
        );
    }
}

#[test]
fn non_empty_stub_csrs_are_denied() {
    let (_, signer) = signers().remove(0);
    for k in supported() {
        let mut req = request(&k, Format::Csr);
        req.key_material = KeyMaterial::StubCsr {
            der: k.non_empty_csr_der.clone(),
        };
        assert_eq!(
            deny_reason(&signer, &req),
            DenyReason::InvalidStubPKCS10Request,
            "{}",
            k.key_type
        );
    }
}

#[test]
fn key_types_the_api_refuses_are_denied_unsupported_with_a_suggestion() {
    let (_, signer) = signers().remove(0);
    let refused: Vec<_> = kubelet_keys()
        .into_iter()
        .filter(|k| !k.supported)
        .collect();
    assert_eq!(refused.len(), 2);
    for k in refused {
        for format in [Format::Pkix, Format::Csr] {
            match signer
                .decide(&request(&k, format), SystemTime::now())
                .unwrap()
            {
                Decision::Deny(d) => {
                    assert_eq!(
                        d.reason,
                        DenyReason::UnsupportedKeyType,
                        "{} {format:?}",
                        k.key_type
                    );
                    assert!(d.message.contains("ECDSAP256"), "{}", d.message);
                }
                Decision::Issue(_) => panic!("{} issued", k.key_type),
            }
        }
    }
}

#[test]
fn key_types_switched_off_by_policy_are_denied_unsupported() {
    let policy = Policy::new(&PolicyConfig {
        allowed_key_types: vec![KeyType::EcdsaP256, KeyType::Ed25519],
        ..Default::default()
    })
    .unwrap();
    let signer = Signer::new(
        Arc::new(policy),
        Arc::new(generated_ca(CaKeyType::EcdsaP256)),
    );
    for k in supported() {
        let req = request(&k, Format::Csr);
        let decision = signer.decide(&req, SystemTime::now()).unwrap();
        match (k.key_type.as_str(), decision) {
            ("ECDSAP256" | "ED25519", Decision::Issue(_)) => {}
            (_, Decision::Deny(d)) if !matches!(k.key_type.as_str(), "ECDSAP256" | "ED25519") => {
                assert_eq!(d.reason, DenyReason::UnsupportedKeyType);
                assert!(
                    d.message
                        .contains("is not enabled on this signer; use one of ED25519, ECDSAP256"),
                    "{}",
                    d.message
                );
            }
            (kt, d) => panic!("{kt}: {d:?}"),
        }
    }
}

#[test]
fn identity_comes_only_from_verified_fields() {
    let (_, signer) = signers().remove(0);
    let k = &supported()[0];
    let mut req = request(k, Format::Csr);
    req.unverified_user_annotations = BTreeMap::from([(
        "example.com/spiffe-id".into(),
        "spiffe://example.org/ns/kube-system/sa/admin".into(),
    )]);
    assert_eq!(
        deny_reason(&signer, &req),
        DenyReason::InvalidUnverifiedUserAnnotations
    );

    let mut req = request(k, Format::Csr);
    req.service_account_name = "api/../../kube-system/sa/admin".into();
    assert_eq!(deny_reason(&signer, &req), DenyReason::InvalidIdentity);

    let mut req = request(k, Format::Csr);
    req.namespace = "kube-system".into();
    req.service_account_name = "coredns".into();
    assert_eq!(
        issue(&signer, &req).spiffe_id.as_str(),
        "spiffe://example.org/ns/kube-system/sa/coredns"
    );
}
