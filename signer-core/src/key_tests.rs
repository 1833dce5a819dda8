//! Tests of subject keys: which keys are admitted, and how their signatures are checked.

use super::*;

#[test]
fn key_type_names_round_trip() {
    for k in KeyType::ALL {
        assert_eq!(k.as_str().parse::<KeyType>(), Ok(k));
    }
    assert!(
        "RSA2048"
            .parse::<KeyType>()
            .unwrap_err()
            .contains("ECDSAP256")
    );
}

#[test]
fn garbage_is_unsupported_with_a_suggestion() {
    for bad in [&b""[..], b"\x30", b"\x30\x03\x02\x01\x00", &[0xff; 40]] {
        let err = SubjectKey::from_spki_der(bad).unwrap_err();
        assert!(err.0.contains("supported key types are"), "{err}");
    }
}

#[test]
fn generated_keys_classify() {
    for (alg, want) in [
        (&rcgen::PKCS_ED25519, KeyType::Ed25519),
        (&rcgen::PKCS_ECDSA_P256_SHA256, KeyType::EcdsaP256),
        (&rcgen::PKCS_ECDSA_P384_SHA384, KeyType::EcdsaP384),
        (&rcgen::PKCS_ECDSA_P521_SHA512, KeyType::EcdsaP521),
    ] {
        use rcgen::PublicKeyData;
        let kp = rcgen::KeyPair::generate_for(alg).unwrap();
        let spki = kp.subject_public_key_info();
        assert_eq!(SubjectKey::from_spki_der(&spki).unwrap().key_type(), want);
    }
}

#[test]
fn non_canonical_encodings_of_a_good_key_are_refused() {
    use rcgen::PublicKeyData;
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let spki = kp.subject_public_key_info();
    assert_eq!(spki[1], 0x59);
    // The same SEQUENCE with a long-form length: valid BER, not DER.
    let mut ber = vec![0x30, 0x81, 0x59];
    ber.extend_from_slice(&spki[2..]);
    assert!(SubjectKey::from_spki_der(&ber).is_err());
    // A compressed point is refused too.
    let mut compressed = spki.clone();
    compressed[26] = 0x02;
    assert!(SubjectKey::from_spki_der(&compressed).is_err());
}

/// The API server admits RSA-PSS proofs at any salt length (Go's `rsa.VerifyPSS(.., nil)`),
/// so a proof with the digest-length salt — what most libraries other than Go write —
/// must verify too, and a proof over another message must not.
#[test]
fn rsa_pss_proofs_verify_at_any_salt_length() {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::KeyPair as _;
    let key = KeyPair::generate(KeySize::Rsa3072).unwrap();
    let spki = key.public_key().as_der().unwrap();
    let subject = SubjectKey::from_spki_der(spki.as_ref()).unwrap();
    let mut sig = vec![0; key.public_modulus_len()];
    let rng = aws_lc_rs::rand::SystemRandom::new();
    // aws-lc-rs signs PSS with a salt as long as the digest (32 bytes).
    key.sign(&lc::RSA_PSS_SHA256, &rng, b"pod-uid-1", &mut sig)
        .unwrap();
    assert_eq!(
        subject.verify(SignatureScheme::RsaPssSha256AnySalt, b"pod-uid-1", &sig),
        Ok(())
    );
    assert_eq!(
        subject.verify(SignatureScheme::RsaPssSha256AnySalt, b"pod-uid-2", &sig),
        Err(BadSignature)
    );
}
