//! Tests of the CA Secret: what each Secret content reads as, and how the store follows it.

use super::*;
use signer_core::{CaKeyType, CaPem, TrustDomain};
use std::time::{Duration, SystemTime};

fn pem() -> CaPem {
    CaPem::generate(
        CaKeyType::EcdsaP256,
        &TrustDomain::new("example.org").unwrap(),
        Duration::from_secs(86_400 * 30),
        SystemTime::now(),
    )
    .unwrap()
}

fn generated() -> LoadedCa {
    LoadedCa::generated(Root::load(pem()).unwrap())
}

fn name() -> ObjectName {
    ObjectName {
        namespace: "ns".into(),
        name: "ca".into(),
    }
}

#[test]
fn a_stored_ca_reads_back_as_usable_and_managed() {
    let ca = generated();
    match state_of(&to_secret(&ca, &name()), &RootKeys::Secret) {
        SecretState::Usable(loaded) => {
            assert_eq!(loaded, ca);
            assert!(loaded.managed);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_rotation_in_progress_reads_back_with_its_next_root_and_publication_time() {
    let mut ca = generated();
    ca.next = Some(NextRoot {
        root: Root::load(pem()).unwrap(),
        previewed_at: Some(1_799_900_000),
        published_at: Some(1_800_000_000),
    });
    match state_of(&to_secret(&ca, &name()), &RootKeys::Secret) {
        SecretState::Usable(loaded) => assert_eq!(loaded, ca),
        other => panic!("{other:?}"),
    }
    // Half a next root is not a CA we can reason about.
    let mut s = to_secret(&ca, &name());
    s.data.as_mut().unwrap().remove(NEXT_KEY);
    match state_of(&s, &RootKeys::Secret) {
        SecretState::Unusable(m) => assert_eq!(
            m,
            Unusable::Content("the next root: it has no next.key (and no PKCS#11 token is configured to hold the key of next.crt: --ca-pkcs11-module)".into())
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_operators_secret_is_not_managed() {
    let mut s = to_secret(&generated(), &name());
    s.metadata.labels = None;
    match state_of(&s, &RootKeys::Secret) {
        SecretState::Usable(loaded) => assert!(!loaded.managed),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_secret_without_a_key_is_unusable_and_says_which() {
    let mut s = to_secret(&generated(), &name());
    s.data.as_mut().unwrap().remove(TLS_KEY);
    match state_of(&s, &RootKeys::Secret) {
        SecretState::Unusable(m) => {
            assert!(m.to_string().starts_with("it has no tls.key"), "{m}");
            assert!(
                !SecretStore::may_mend(&SecretState::Unusable(m)),
                "wrong content does not mend by reading it again"
            );
        }
        other => panic!("{other:?}"),
    }
}
