//! Root keys in a real PKCS#11 token (SoftHSM2): generated in it, never extractable, found
//! again by label, and signing intermediates whose leaves Go's crypto/x509 and `openssl
//! verify` accept.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use podcert_signer::{Pin, RootKeys, StoredKey, Token, TokenConfig, TokenError, Unusable};
use podcert_tests::fixtures::kubelet_keys;
use podcert_tests::oracles::{IssuedCase, assert_go_accepts, openssl_verify};
use podcert_tests::softhsm::TestToken;
use signer_core::*;

const KEY_LABEL: &str = "podcert-test-root";

fn config(token: &TestToken, pin: &str) -> TokenConfig {
    TokenConfig {
        module: token.module.clone(),
        token_label: token.label.clone(),
        key_label: KEY_LABEL.into(),
        pin: Pin::new(pin.into()),
    }
}

fn open(token: &TestToken) -> Arc<Token> {
    Token::open(config(token, &token.pin)).unwrap()
}

fn profile(key_type: CaKeyType) -> CaProfile {
    CaProfile {
        key_type,
        ..CaProfile::new(TrustDomain::new("example.org").unwrap())
    }
}

const DAY: u64 = 86_400;

#[test]
fn a_root_key_is_generated_in_the_token_sensitive_and_never_extractable() {
    let token = TestToken::new("custody");
    let keys = RootKeys::Token(open(&token));
    let root = keys
        .generate(
            &profile(CaKeyType::EcdsaP256),
            Duration::from_secs(365 * DAY),
            SystemTime::now(),
        )
        .unwrap();
    assert!(
        matches!(root.key, StoredKey::Token(_)),
        "the key is kept beside the certificate: {:?}",
        root.key
    );

    // Asked directly, as any other PKCS#11 application would: the one labelled private key
    // (the root's) can never leave the token, and its value is not given out.
    let session = podcert_tests::softhsm::pkcs11()
        .open_ro_session(token.slot())
        .unwrap();
    let _ = session.login(UserType::User, Some(&AuthPin::from(token.pin.as_str())));
    let private = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(KEY_LABEL.as_bytes().to_vec()),
        ])
        .unwrap();
    assert_eq!(private.len(), 1);
    let custody = session
        .get_attributes(
            private[0],
            &[
                AttributeType::Extractable,
                AttributeType::Sensitive,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
            ],
        )
        .unwrap();
    assert_eq!(
        custody,
        [
            Attribute::Extractable(false),
            Attribute::Sensitive(true),
            Attribute::NeverExtractable(true),
            Attribute::AlwaysSensitive(true),
        ]
    );
    let value = session
        .get_attributes(private[0], &[AttributeType::Value])
        .unwrap_or_default();
    assert!(
        !value.iter().any(|a| matches!(a, Attribute::Value(_))),
        "the token returned the private key's value"
    );
}

#[test]
fn roots_in_the_token_sign_intermediates_whose_leaves_go_and_openssl_accept() {
    let token = TestToken::new("issuance");
    let keys = RootKeys::Token(open(&token));
    let policy = Arc::new(
        Policy::new(&PolicyConfig {
            trust_domain: "example.org".into(),
            ..Default::default()
        })
        .unwrap(),
    );
    let kubelet_key = kubelet_keys()
        .into_iter()
        .find(|k| k.key_type == "ECDSAP256")
        .unwrap();
    let mut cases = Vec::new();
    for key_type in CaKeyType::ALL {
        let profile = profile(key_type);
        let root = keys
            .generate(&profile, Duration::from_secs(365 * DAY), SystemTime::now())
            .unwrap_or_else(|e| panic!("{key_type}: {e}"));
        let intermediate = root
            .ca
            .sign_intermediate(&profile, Duration::from_secs(7 * DAY), SystemTime::now())
            .unwrap();
        let signer = Signer::new(policy.clone(), Arc::new(intermediate));
        let request = Request {
            namespace: "payments".into(),
            pod_uid: kubelet_key.pod_uid.clone(),
            service_account_name: "api".into(),
            max_expiration_seconds: 86_400,
            unverified_user_annotations: BTreeMap::new(),
            key_material: KeyMaterial::StubCsr {
                der: kubelet_key.stub_csr_der.clone(),
            },
        };
        let Decision::Issue(issued) = signer.decide(&request, SystemTime::now()).unwrap() else {
            panic!("{key_type}: denied");
        };
        openssl_verify(&issued.chain_pem, root.ca.trust_bundle_pem())
            .unwrap_or_else(|e| panic!("{key_type}: {e}"));
        cases.push(IssuedCase::from_issued(
            format!("token-{key_type}-root/signing"),
            &issued,
            root.ca.trust_bundle_pem(),
            &kubelet_key.spki_der,
            86_400,
        ));
    }
    assert_go_accepts(&cases);
}

#[test]
fn the_root_is_found_again_by_label_and_certificate_and_a_stranger_is_named() {
    let token = TestToken::new("reload");
    let keys = RootKeys::Token(open(&token));
    let p = profile(CaKeyType::EcdsaP384);
    let old = keys
        .generate(&p, Duration::from_secs(DAY), SystemTime::now())
        .unwrap();
    let new = keys
        .generate(&p, Duration::from_secs(DAY), SystemTime::now())
        .unwrap();
    // Another process (a restarted leader) opens the token and reads the Secret's tls.crt:
    // of the two labelled keys, it signs with the one whose public key is the certificate's.
    let again = RootKeys::Token(open(&token));
    for root in [&old, &new] {
        let loaded = again
            .load(
                root.cert_pem.clone(),
                None,
                root.roots_pem.clone(),
                ("tls.crt", "tls.key"),
            )
            .unwrap();
        assert_eq!(&loaded, root);
        let intermediate = loaded
            .ca
            .sign_intermediate(&p, Duration::from_secs(3600), SystemTime::now())
            .unwrap();
        openssl_verify(intermediate.intermediates_pem(), root.ca.trust_bundle_pem()).unwrap();
    }
    // A certificate whose key is not in the token: refused, naming where we looked, as a
    // refusal that may mend (another replica may be writing that key).
    let stranger = profile(CaKeyType::EcdsaP384)
        .root(Duration::from_secs(DAY), SystemTime::now())
        .unwrap();
    let e = again
        .load(stranger.cert_pem, None, None, ("tls.crt", "tls.key"))
        .unwrap_err();
    assert_eq!(
        e,
        Unusable::Token(format!(
            "it has no tls.key, and no key in token {:?} (keys labelled {KEY_LABEL:?}) is the key of tls.crt",
            token.label
        ))
    );
}

#[test]
fn a_wrong_pin_or_token_label_stops_with_what_was_wrong_and_never_the_pin() {
    let token = TestToken::new("login");
    let e = Token::open(config(&token, "not-the-pin")).unwrap_err();
    assert!(matches!(e, TokenError::Login(..)), "{e}");
    let message = e.to_string();
    assert!(message.contains(&token.label), "{message}");
    assert!(!message.contains("not-the-pin"), "{message}");

    let mut missing = config(&token, &token.pin);
    missing.token_label = "no-such-token".into();
    let e = Token::open(missing).unwrap_err().to_string();
    assert!(
        e.starts_with("no token labelled \"no-such-token\"") && e.contains(&token.label),
        "{e}"
    );
}

#[test]
fn a_root_generated_but_never_stored_leaves_no_key_behind() {
    // Two replicas race on a fresh install (or a rotation step): the loser's root never
    // reaches the Secret, and its key must not stay in the token.
    let token = TestToken::new("discard");
    let token_handle = open(&token);
    let keys = RootKeys::Token(token_handle.clone());
    let p = profile(CaKeyType::EcdsaP256);
    let kept = keys
        .generate(&p, Duration::from_secs(DAY), SystemTime::now())
        .unwrap();
    let lost = keys
        .generate(&p, Duration::from_secs(DAY), SystemTime::now())
        .unwrap();
    assert_eq!(token_handle.keys().unwrap().len(), 2);
    keys.discard(&lost);
    let left = token_handle.keys().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(StoredKey::Token(left[0].clone()), kept.key);
}

#[test]
fn a_fresh_install_adopts_the_one_key_made_beforehand_under_the_label() {
    let token = TestToken::new("adopt");
    let keys = RootKeys::Token(open(&token));
    // Nothing under the label: a key is made.
    let p = profile(CaKeyType::EcdsaP256);
    let made = keys
        .first_root(&p, Duration::from_secs(DAY), SystemTime::now())
        .unwrap();
    assert!(made.new_key);
    // One key there already (made by the operator, e.g. in a KMS; here a P-384 key while
    // the profile says P-256): it is adopted as it is, and no key is added.
    let token = TestToken::new("adopt-existing");
    let keys = RootKeys::Token(open(&token));
    let RootKeys::Token(handle) = &keys else {
        unreachable!()
    };
    let existing = handle.generate(CaKeyType::EcdsaP384).unwrap();
    let adopted = keys
        .first_root(&p, Duration::from_secs(DAY), SystemTime::now())
        .unwrap();
    assert!(!adopted.new_key);
    assert_eq!(adopted.root.key, StoredKey::Token(existing));
    assert_eq!(handle.keys().unwrap().len(), 1);
    openssl_verify(&adopted.root.cert_pem, adopted.root.ca.trust_bundle_pem())
        .unwrap_or_else(|e| panic!("{e}"));
    // Two: which one is meant is the operator's to say.
    handle.generate(CaKeyType::EcdsaP256).unwrap();
    let e = keys
        .first_root(&p, Duration::from_secs(DAY), SystemTime::now())
        .unwrap_err();
    assert!(
        e.to_string().contains("2 keys in token")
            && e.to_string().contains("--ca-pkcs11-key-label"),
        "{e}"
    );
}
