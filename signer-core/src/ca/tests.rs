//! The CA's loading and checks, case by case.

use super::*;
use crate::spiffe::TrustDomain;
use std::time::{Duration, SystemTime};

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn new_ca(kt: CaKeyType) -> CaPem {
    CaPem::generate(
        kt,
        &td(),
        Duration::from_secs(86_400 * 365),
        SystemTime::now(),
    )
    .unwrap()
}

#[test]
fn generated_cas_load() {
    for kt in CaKeyType::ALL {
        let pem = new_ca(kt);
        let ca = Ca::from_pem(&pem.cert_pem, &pem.key_pem, None).unwrap();
        assert_eq!(ca.trust_bundle_pem(), pem.cert_pem.replace("\r\n", "\n"));
        assert!(ca.intermediates_pem().is_empty());
        assert!(!format!("{pem:?}{ca:?}").contains("PRIVATE"));
    }
}

#[test]
fn a_bundle_is_summarised_certificate_by_certificate() {
    let (a, b) = (new_ca(CaKeyType::EcdsaP256), new_ca(CaKeyType::Ed25519));
    let ca = Ca::from_pem(&a.cert_pem, &a.key_pem, None).unwrap();
    let summary = summarize(&format!("{}{}", a.cert_pem, b.cert_pem)).unwrap();
    assert_eq!(summary.len(), 2);
    assert_eq!(summary[0].subject, ca.subject());
    assert_eq!(summary[0].not_after, ca.not_after_unix());
    assert!(summary[0].not_before < summary[0].not_after);
    assert!(matches!(
        summarize(&a.key_pem),
        Err(CaError::Certificate(_))
    ));
}

#[test]
fn mismatched_key_is_refused() {
    let a = new_ca(CaKeyType::EcdsaP256);
    let b = new_ca(CaKeyType::EcdsaP256);
    assert!(matches!(
        Ca::from_pem(&a.cert_pem, &b.key_pem, None),
        Err(CaError::Key(_))
    ));
}

#[test]
fn garbage_is_refused_with_the_field_named() {
    let a = new_ca(CaKeyType::EcdsaP256);
    assert!(matches!(
        Ca::from_pem("junk", &a.key_pem, None),
        Err(CaError::Certificate(_))
    ));
    assert!(matches!(
        Ca::from_pem(&a.cert_pem, "junk", None),
        Err(CaError::Key(_))
    ));
    assert!(matches!(
        Ca::from_pem(&a.cert_pem, &a.key_pem, Some("junk")),
        Err(CaError::Roots(_))
    ));
    let e = Ca::from_pem(&a.key_pem, &a.key_pem, None).unwrap_err();
    assert!(e.to_string().starts_with("tls.crt: "), "{e}");
}
