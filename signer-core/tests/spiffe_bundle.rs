//! SPIFFE bundles (SPIFFE Trust Domain and Bundle §4, X509-SVID §6): ours as the JWK Set a
//! foreign domain imports, and a foreign one read for the trust domain the operator
//! configured — every kind of bad bundle refused so that the last good one stays.

#![allow(clippy::disallowed_macros)]

use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use signer_core::bundle::{BundleError, SpiffeBundle};
use signer_core::{CaKeyType, CaPem, TrustDomain};

fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

/// A root CA of `domain` (with its URI name constraint), as DER.
fn root(key: CaKeyType, domain: &str) -> Vec<u8> {
    let pem = CaPem::generate(
        key,
        &td(domain),
        Duration::from_secs(86_400),
        SystemTime::now(),
    )
    .unwrap();
    pem::parse(&pem.cert_pem).unwrap().into_contents()
}

fn bundle(domain: &str, sequence: Option<u64>, roots: Vec<Vec<u8>>) -> SpiffeBundle {
    SpiffeBundle {
        trust_domain: td(domain),
        sequence,
        refresh_hint: Some(Duration::from_secs(300)),
        x509_authorities: roots,
    }
}

fn document(b: &SpiffeBundle) -> Value {
    serde_json::from_str(&b.to_json().unwrap()).unwrap()
}

#[test]
fn our_bundle_is_one_x509_svid_jwk_per_authority_and_reads_back_the_same() {
    let roots: Vec<Vec<u8>> = CaKeyType::ALL
        .iter()
        .map(|k| root(*k, "a.example"))
        .collect();
    let ours = bundle("a.example", Some(7), roots.clone());
    let doc = document(&ours);
    assert_eq!(doc["spiffe_sequence"], 7);
    assert_eq!(doc["spiffe_refresh_hint"], 300);
    let keys = doc["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 3);
    for (key, der) in keys.iter().zip(&roots) {
        assert_eq!(key["use"], "x509-svid");
        assert!(
            key.get("kid").is_none(),
            "X509-SVID §6.1: kid MUST NOT be set"
        );
        let x5c = key["x5c"].as_array().unwrap();
        assert_eq!(x5c.len(), 1, "exactly one certificate");
        assert_eq!(
            base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                x5c[0].as_str().unwrap()
            )
            .unwrap(),
            *der
        );
    }
    let kinds: Vec<(&str, &str)> = keys
        .iter()
        .map(|k| (k["kty"].as_str().unwrap(), k["crv"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("EC", "P-256"), ("EC", "P-384"), ("OKP", "Ed25519")]
    );
    // The EC coordinates are the key's: 32 bytes each for P-256, 48 for P-384.
    let len = |k: &Value, f: &str| {
        base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            k[f].as_str().unwrap(),
        )
        .unwrap()
        .len()
    };
    assert_eq!((len(&keys[0], "x"), len(&keys[0], "y")), (32, 32));
    assert_eq!((len(&keys[1], "x"), len(&keys[1], "y")), (48, 48));
    assert_eq!(len(&keys[2], "x"), 32);

    let read = SpiffeBundle::parse(ours.to_json().unwrap().as_bytes(), &td("a.example")).unwrap();
    assert_eq!(read, ours);
    assert_eq!(read.to_pem().matches("BEGIN CERTIFICATE").count(), 3);
}

#[test]
fn entries_of_other_uses_and_key_types_are_ignored_and_duplicates_kept_once() {
    let der = root(CaKeyType::EcdsaP256, "b.example");
    let mut doc = document(&bundle("b.example", Some(1), vec![der.clone()]));
    let entry = doc["keys"][0].clone();
    let keys = doc["keys"].as_array_mut().unwrap();
    keys.push(entry.clone());
    keys.push(
        json!({"kty": "EC", "use": "jwt-svid", "crv": "P-256", "x": "AA", "y": "AA", "kid": "k"}),
    );
    keys.push(json!({"kty": "future", "use": "x509-svid", "x5c": ["garbage"]}));
    keys.push(json!({"kty": "EC", "use": "x509-svid", "x5c": []}));
    keys.push(json!({"kty": "EC", "use": "wit-svid", "x5c": ["garbage"]}));
    doc["unknown_parameter"] = json!(true);
    let read = SpiffeBundle::parse(doc.to_string().as_bytes(), &td("b.example")).unwrap();
    assert_eq!(read.x509_authorities, [der]);
}

#[test]
fn a_bundle_for_another_trust_domain_is_refused() {
    let theirs = bundle(
        "b.example",
        Some(1),
        vec![root(CaKeyType::EcdsaP256, "b.example")],
    );
    let err = SpiffeBundle::parse(theirs.to_json().unwrap().as_bytes(), &td("a.example"));
    assert!(
        matches!(&err, Err(BundleError::WrongTrustDomain { found, .. }) if found == "b.example"),
        "{err:?}"
    );
}

#[test]
fn a_certificate_that_is_not_a_ca_is_refused() {
    let mut params = rcgen::CertificateParams::new(vec!["leaf.example".into()]).unwrap();
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = params.self_signed(&key).unwrap().der().to_vec();
    let mut doc = document(&bundle(
        "a.example",
        Some(1),
        vec![root(CaKeyType::EcdsaP256, "a.example")],
    ));
    let mut entry = doc["keys"][0].clone();
    entry["x5c"] = json!([base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        &leaf
    )]);
    doc["keys"].as_array_mut().unwrap().push(entry);
    let err = SpiffeBundle::parse(doc.to_string().as_bytes(), &td("a.example"));
    assert!(
        matches!(&err, Err(BundleError::BadAuthority { index: 1, problem }) if problem.contains("not a CA")),
        "{err:?}"
    );

    // A CA flag without keyCertSign cannot sign either.
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let odd = params.self_signed(&key).unwrap().der().to_vec();
    doc["keys"][1]["x5c"] = json!([base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        &odd
    )]);
    let err = SpiffeBundle::parse(doc.to_string().as_bytes(), &td("a.example"));
    assert!(
        matches!(&err, Err(BundleError::BadAuthority { problem, .. }) if problem.contains("keyCertSign")),
        "{err:?}"
    );
}

#[test]
fn garbage_and_empty_bundles_are_refused() {
    let a = td("a.example");
    let cases: [(&[u8], &str); 7] = [
        (b"", "not a SPIFFE bundle"),
        (b"{\"keys\": [", "not a SPIFFE bundle"),
        (b"[]", "not a JSON object"),
        (b"{}", "no \"keys\" array"),
        (
            b"{\"keys\": [], \"spiffe_sequence\": -1}",
            "spiffe_sequence is not a non-negative integer",
        ),
        (
            b"{\"keys\": [{\"kty\": \"EC\", \"use\": \"x509-svid\", \"x5c\": [\"%%%\"]}]}",
            "not base64",
        ),
        (
            b"{\"keys\": [{\"kty\": \"EC\", \"use\": \"jwt-svid\"}]}",
            "no X.509 authorities",
        ),
    ];
    for (doc, said) in cases {
        let err = SpiffeBundle::parse(doc, &a).unwrap_err();
        assert!(
            err.to_string().contains(said),
            "{:?}: {err}",
            String::from_utf8_lossy(doc)
        );
    }
    let huge = vec![b' '; signer_core::bundle::MAX_BUNDLE_BYTES + 1];
    assert!(
        SpiffeBundle::parse(&huge, &a)
            .unwrap_err()
            .to_string()
            .contains("larger than 1 MiB")
    );
}

#[test]
fn a_fetched_bundle_replaces_the_last_only_going_forward() {
    let (r1, r2) = (
        root(CaKeyType::EcdsaP256, "a.example"),
        root(CaKeyType::EcdsaP256, "a.example"),
    );
    let last = bundle("a.example", Some(5), vec![r1.clone()]);
    let same = bundle("a.example", Some(5), vec![r1.clone()]);
    let newer = bundle("a.example", Some(6), vec![r1.clone(), r2.clone()]);
    let older = bundle("a.example", Some(4), vec![r1.clone(), r2.clone()]);
    let changed_in_place = bundle("a.example", Some(5), vec![r2.clone()]);
    let unordered = bundle("a.example", None, vec![r2]);
    assert_eq!(same.may_replace(&last), Ok(()));
    assert_eq!(newer.may_replace(&last), Ok(()));
    assert_eq!(unordered.may_replace(&last), Ok(()));
    assert_eq!(
        older.may_replace(&last),
        Err(BundleError::SequenceWentBack { last: 5, got: 4 })
    );
    assert_eq!(
        changed_in_place.may_replace(&last),
        Err(BundleError::ChangedUnderSameSequence(5))
    );
}
