//! Hostile input never panics and never gets a certificate: property tests over arbitrary
//! bytes for the SubjectPublicKeyInfo, the proof, the stub CSR, names and CA PEM.

// Tests assert; the crate's no-assertion rule (clippy.toml) is for its library code.
#![allow(clippy::disallowed_macros)]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use signer_core::*;

fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let policy = Policy::new(&PolicyConfig::default()).unwrap();
        let pem = CaPem::generate(
            CaKeyType::EcdsaP256,
            policy.trust_domain(),
            Duration::from_secs(86_400),
            SystemTime::now(),
        )
        .unwrap();
        let ca = Ca::from_pem(&pem.cert_pem, &pem.key_pem, None).unwrap();
        Signer::new(Arc::new(policy), Arc::new(ca))
    })
}

/// A valid empty-template CSR for a fresh P-256 key, made with rcgen.
fn valid_csr() -> &'static [u8] {
    static CSR: OnceLock<Vec<u8>> = OnceLock::new();
    CSR.get_or_init(|| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.serialize_request(&key).unwrap().der().to_vec()
    })
}

fn request(ns: &str, sa: &str, key_material: KeyMaterial) -> Request {
    Request {
        namespace: ns.into(),
        pod_uid: "uid".into(),
        service_account_name: sa.into(),
        max_expiration_seconds: 86_400,
        unverified_user_annotations: BTreeMap::new(),
        key_material,
    }
}

fn assert_denied(req: &Request) {
    // Metrics read the claimed key type of every denied request: it must never panic either.
    let _ = req.key_material.claimed_key_type();
    match signer().decide(req, SystemTime::now()) {
        Ok(Decision::Deny(_)) => {}
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn the_valid_csr_used_below_is_issued() {
    let req = request(
        "ns",
        "sa",
        KeyMaterial::StubCsr {
            der: valid_csr().to_vec(),
        },
    );
    assert!(matches!(
        signer().decide(&req, SystemTime::now()),
        Ok(Decision::Issue(_))
    ));
}

#[test]
fn a_denied_request_still_names_its_key_type_when_its_key_is_readable() {
    // Denied for its service account name, before the proof is checked.
    let req = request(
        "ns",
        "Not_A_Name",
        KeyMaterial::StubCsr {
            der: valid_csr().to_vec(),
        },
    );
    assert_denied(&req);
    assert_eq!(
        req.key_material.claimed_key_type(),
        Some(KeyType::EcdsaP256)
    );
    let garbage = KeyMaterial::StubCsr {
        der: b"not a CSR".to_vec(),
    };
    assert_eq!(garbage.claimed_key_type(), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_spki_and_proof_are_denied(spki in prop::collection::vec(any::<u8>(), 0..600),
                                           proof in prop::collection::vec(any::<u8>(), 0..600)) {
        assert_denied(&request("ns", "sa", KeyMaterial::Pkix { spki_der: spki, proof }));
    }

    #[test]
    fn arbitrary_csr_is_denied(der in prop::collection::vec(any::<u8>(), 0..1200)) {
        assert_denied(&request("ns", "sa", KeyMaterial::StubCsr { der }));
    }

    #[test]
    fn any_single_byte_change_to_a_valid_csr_is_denied(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut der = valid_csr().to_vec();
        let i = pos.index(der.len());
        prop_assume!(der[i] != byte);
        der[i] = byte;
        assert_denied(&request("ns", "sa", KeyMaterial::StubCsr { der }));
    }

    #[test]
    fn truncated_or_extended_csrs_are_denied(cut in 0usize..200, tail in prop::collection::vec(any::<u8>(), 1..8)) {
        let valid = valid_csr();
        let cut = cut.min(valid.len() - 1);
        assert_denied(&request("ns", "sa", KeyMaterial::StubCsr { der: valid[..cut].to_vec() }));
        let mut extended = valid.to_vec();
        extended.extend(tail);
        assert_denied(&request("ns", "sa", KeyMaterial::StubCsr { der: extended }));
    }

    #[test]
    fn arbitrary_names_never_panic(ns in ".{0,80}", sa in ".{0,300}") {
        let req = request(&ns, &sa, KeyMaterial::StubCsr { der: valid_csr().to_vec() });
        let decision = signer().decide(&req, SystemTime::now()).unwrap();
        if let Decision::Issue(i) = decision {
            prop_assert!(SpiffeId::parse(i.spiffe_id.as_str()).is_ok());
            prop_assert_eq!(i.spiffe_id.as_str(), format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"));
        }
    }

    #[test]
    fn arbitrary_ca_pem_is_an_error_not_a_panic(cert in ".{0,400}", key in ".{0,400}") {
        prop_assert!(Ca::from_pem(&cert, &key, Some(&cert)).is_err());
    }

    #[test]
    fn arbitrary_max_expiration_never_panics(max in any::<i64>()) {
        let mut req = request("ns", "sa", KeyMaterial::StubCsr { der: valid_csr().to_vec() });
        req.max_expiration_seconds = max;
        match signer().decide(&req, SystemTime::now()).unwrap() {
            Decision::Issue(i) => {
                let life = signer_core::time::unix_seconds(i.not_after) - signer_core::time::unix_seconds(i.not_before);
                prop_assert!((3600..=max).contains(&life));
            }
            Decision::Deny(d) => prop_assert_eq!(d.reason, DenyReason::InvalidMaxExpirationSeconds),
        }
    }
}
