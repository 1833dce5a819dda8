//! Subject keys: which public keys a pod may ask us to certify, and how their signatures are checked.
//!
//! The API server admits exactly six key types (contract §2): Ed25519, ECDSA P-256/P-384/P-521 and
//! RSA with a 3072- or 4096-bit modulus. [`SubjectKey::from_spki_der`] classifies a DER
//! SubjectPublicKeyInfo into one of them or refuses it with a message that suggests a supported
//! type. [`SubjectKey::verify`] checks a signature made by that key with one of the
//! [`SignatureScheme`]s the kubelet (Go) uses; Ed25519 goes through `ed25519-dalek`, everything
//! else through `aws-lc-rs` (the only Rust backend here with P-521 and RSA-PSS at any salt length).

use std::fmt;

use aws_lc_rs::signature::{self as lc, RsaParameters, RsaPssSaltLength, UnparsedPublicKey};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
    OID_PKCS1_RSAENCRYPTION, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// A subject key type the API server admits, named as the kubelet's `keyType` field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyType {
    Ed25519,
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    Rsa3072,
    Rsa4096,
}

impl KeyType {
    /// Every supported type, in the order we suggest them.
    pub const ALL: [KeyType; 6] = [
        KeyType::EcdsaP256,
        KeyType::Ed25519,
        KeyType::EcdsaP384,
        KeyType::EcdsaP521,
        KeyType::Rsa3072,
        KeyType::Rsa4096,
    ];

    /// The name used by the `podCertificate` projected volume source (`keyType`), our CLI and
    /// our metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ED25519",
            KeyType::EcdsaP256 => "ECDSAP256",
            KeyType::EcdsaP384 => "ECDSAP384",
            KeyType::EcdsaP521 => "ECDSAP521",
            KeyType::Rsa3072 => "RSA3072",
            KeyType::Rsa4096 => "RSA4096",
        }
    }

    /// The rcgen algorithm whose SubjectPublicKeyInfo encoding matches this key type; used to
    /// write the requested key into the leaf unchanged.
    pub(crate) fn rcgen_algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::EcdsaP521 => &rcgen::PKCS_ECDSA_P521_SHA512,
            KeyType::Rsa3072 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
        }
    }

    fn is_rsa(self) -> bool {
        matches!(self, KeyType::Rsa3072 | KeyType::Rsa4096)
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for KeyType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "unknown key type {s:?}; expected one of {}",
                    list(&KeyType::ALL)
                )
            })
    }
}

/// Comma-separated names of `types`, for messages.
pub fn list(types: &[KeyType]) -> String {
    types
        .iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A signature algorithm a subject key can prove possession with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// Pure Ed25519 (no prehash).
    Ed25519,
    /// ECDSA over the key's own curve with the given digest, ASN.1 DER `Ecdsa-Sig-Value`.
    Ecdsa(Digest),
    /// RSASSA-PSS with SHA-256 and MGF1-SHA-256, with any salt length: what Go's
    /// `rsa.VerifyPSS(pub, crypto.SHA256, hash, sig, nil)` — the API server's admission check
    /// of a proof of possession — admits. The kubelet signs with the maximum salt.
    RsaPssSha256,
    /// RSASSA-PKCS1-v1_5.
    RsaPkcs1(Digest),
}

/// The digests Go pairs with signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha256,
    Sha384,
    Sha512,
}

/// Why a SubjectPublicKeyInfo was refused; its message is written into the `Denied` condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnsupportedKey(String);

impl UnsupportedKey {
    fn new(what: impl fmt::Display) -> Self {
        UnsupportedKey(format!(
            "{what}; supported key types are {} (ECDSAP256 recommended)",
            list(&KeyType::ALL)
        ))
    }
}

/// A classified subject public key, borrowed from the request.
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectKey<'a> {
    key_type: KeyType,
    /// The whole SubjectPublicKeyInfo DER, as requested.
    spki_der: &'a [u8],
    /// The `subjectPublicKey` BIT STRING contents: an uncompressed EC point, a PKCS#1
    /// RSAPublicKey or the 32 raw Ed25519 bytes.
    raw: &'a [u8],
}

impl fmt::Debug for SubjectKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubjectKey")
            .field("key_type", &self.key_type)
            .field("spki_len", &self.spki_der.len())
            .finish()
    }
}

impl<'a> SubjectKey<'a> {
    /// Classifies a DER SubjectPublicKeyInfo. Anything but the six admitted types — RSA-2048,
    /// P-224, compressed points, unknown OIDs, truncated or trailing DER — is refused.
    pub fn from_spki_der(spki_der: &'a [u8]) -> Result<Self, UnsupportedKey> {
        let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(|e| UnsupportedKey::new(format_args!("public key is not valid DER ({e})")))?;
        if !rest.is_empty() {
            return Err(UnsupportedKey::new(
                "public key has trailing bytes after its DER",
            ));
        }
        Self::from_parsed(spki_der, &spki)
    }

    /// Classifies an already parsed SubjectPublicKeyInfo whose DER is `spki_der`.
    pub(crate) fn from_parsed(
        spki_der: &'a [u8],
        spki: &SubjectPublicKeyInfo<'_>,
    ) -> Result<Self, UnsupportedKey> {
        let alg = &spki.algorithm.algorithm;
        let bits = &spki.subject_public_key;
        if bits.unused_bits != 0 {
            return Err(UnsupportedKey::new(
                "public key BIT STRING is not whole bytes",
            ));
        }
        // Borrow the key bytes from the caller's buffer, not from the parsed structure.
        let raw_len = bits.data.len();
        let raw = &spki_der[spki_der.len() - raw_len..];
        debug_assert_eq!(raw, &*bits.data);

        let key_type = if *alg == OID_SIG_ED25519 {
            if spki.algorithm.parameters.is_some() {
                return Err(UnsupportedKey::new("Ed25519 key must not carry parameters"));
            }
            if raw.len() != 32 {
                return Err(UnsupportedKey::new("Ed25519 key is not 32 bytes"));
            }
            KeyType::Ed25519
        } else if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or_else(|| UnsupportedKey::new("EC key does not name its curve"))?;
            let (key_type, coord) = if curve == OID_EC_P256 {
                (KeyType::EcdsaP256, 32)
            } else if curve == OID_NIST_EC_P384 {
                (KeyType::EcdsaP384, 48)
            } else if curve == OID_NIST_EC_P521 {
                (KeyType::EcdsaP521, 66)
            } else {
                return Err(UnsupportedKey::new(format_args!(
                    "EC curve {curve} is not supported"
                )));
            };
            if raw.len() != 1 + 2 * coord || raw[0] != 0x04 {
                return Err(UnsupportedKey::new(format_args!(
                    "{key_type} key is not an uncompressed point"
                )));
            }
            key_type
        } else if *alg == OID_PKCS1_RSAENCRYPTION {
            let bits = RsaParameters::public_modulus_len(raw)
                .map_err(|_| UnsupportedKey::new("RSA public key is malformed"))?;
            match bits {
                3072 => KeyType::Rsa3072,
                4096 => KeyType::Rsa4096,
                n => {
                    return Err(UnsupportedKey::new(format_args!(
                        "RSA modulus of {n} bits is not supported (only 3072 or 4096)"
                    )));
                }
            }
        } else {
            return Err(UnsupportedKey::new(format_args!(
                "key algorithm {alg} is not supported"
            )));
        };
        let key = SubjectKey {
            key_type,
            spki_der,
            raw,
        };
        // The leaf will carry rcgen's encoding of this key; insisting that it is the request's
        // own bytes means the leaf's key always equals the requested key, byte for byte.
        if rcgen::PublicKeyData::subject_public_key_info(&key.as_rcgen()) != spki_der {
            return Err(UnsupportedKey::new(format_args!(
                "{key_type} public key is not in canonical DER form"
            )));
        }
        Ok(key)
    }

    /// The key as rcgen writes it into a certificate.
    pub(crate) fn as_rcgen(&self) -> RcgenPublicKey<'_, 'a> {
        RcgenPublicKey(self)
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// Whether the key may be used for RSA key transport (keyEncipherment in the leaf).
    pub fn is_rsa(&self) -> bool {
        self.key_type.is_rsa()
    }

    /// Verifies `signature` over `message` with `scheme`. A scheme that does not fit the key
    /// type (ECDSA for an RSA key, SHA-384 where aws-lc-rs has no such pairing) fails.
    pub fn verify(
        &self,
        scheme: SignatureScheme,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), BadSignature> {
        use Digest::*;
        use KeyType::*;
        use SignatureScheme::{Ecdsa, RsaPkcs1};

        if let (SignatureScheme::Ed25519, KeyType::Ed25519) = (scheme, self.key_type) {
            let key: [u8; 32] = self.raw.try_into().map_err(|_| BadSignature)?;
            let sig = ed25519_dalek::Signature::from_slice(signature).map_err(|_| BadSignature)?;
            // verify_strict also refuses small-order keys and non-canonical signatures.
            return ed25519_dalek::VerifyingKey::from_bytes(&key)
                .and_then(|k| k.verify_strict(message, &sig))
                .map_err(|_| BadSignature);
        }

        if let (SignatureScheme::RsaPssSha256, Rsa3072 | Rsa4096) = (scheme, self.key_type) {
            return self.verify_pss_sha256_any_salt(message, signature);
        }

        let alg: &'static dyn lc::VerificationAlgorithm = match (scheme, self.key_type) {
            (Ecdsa(Sha256), EcdsaP256) => &lc::ECDSA_P256_SHA256_ASN1,
            (Ecdsa(Sha384), EcdsaP256) => &lc::ECDSA_P256_SHA384_ASN1,
            (Ecdsa(Sha256), EcdsaP384) => &lc::ECDSA_P384_SHA256_ASN1,
            (Ecdsa(Sha384), EcdsaP384) => &lc::ECDSA_P384_SHA384_ASN1,
            (Ecdsa(Sha256), EcdsaP521) => &lc::ECDSA_P521_SHA256_ASN1,
            (Ecdsa(Sha384), EcdsaP521) => &lc::ECDSA_P521_SHA384_ASN1,
            (Ecdsa(Sha512), EcdsaP521) => &lc::ECDSA_P521_SHA512_ASN1,
            (RsaPkcs1(Sha256), Rsa3072 | Rsa4096) => &lc::RSA_PKCS1_2048_8192_SHA256,
            (RsaPkcs1(Sha384), Rsa3072 | Rsa4096) => &lc::RSA_PKCS1_2048_8192_SHA384,
            (RsaPkcs1(Sha512), Rsa3072 | Rsa4096) => &lc::RSA_PKCS1_2048_8192_SHA512,
            _ => return Err(BadSignature),
        };
        UnparsedPublicKey::new(alg, self.raw)
            .verify(message, signature)
            .map_err(|_| BadSignature)
    }
}

/// RSA-PSS SHA-256 verifiers for every salt length an RSA-4096 key can carry (0 ..= 478:
/// emLen 512 − hLen 32 − 2), each fixed at compile time, because aws-lc-rs verifies PSS with
/// one stated salt length and has no "detect it" mode.
static PSS_SHA256_BY_SALT: [RsaParameters; 479] = {
    let mut table = [lc::RSA_PSS_2048_8192_SHA256; 479];
    let mut salt = 0;
    while salt < table.len() {
        table[salt] = lc::RSA_PSS_2048_8192_SHA256
            .with_pss_salt_length(RsaPssSaltLength::Custom(salt as u16));
        salt += 1;
    }
    table
};

impl SubjectKey<'_> {
    /// Verifies RSA-PSS SHA-256 at any salt length, as Go's `rsa.VerifyPSS(.., nil)` does:
    /// the kubelet's maximum salt first, then the digest length, then every other length.
    /// A bad signature costs at most one verification per possible length (≤ 479).
    fn verify_pss_sha256_any_salt(
        &self,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), BadSignature> {
        let modulus_bits = match self.key_type {
            KeyType::Rsa3072 => 3072,
            KeyType::Rsa4096 => 4096,
            _ => return Err(BadSignature),
        };
        let em_len = (modulus_bits - 1_usize).div_ceil(8);
        let max_salt = em_len - 32 - 2;
        let ok = |salt: usize| {
            UnparsedPublicKey::new(&PSS_SHA256_BY_SALT[salt], self.raw)
                .verify(message, signature)
                .is_ok()
        };
        let mut order = [max_salt, 32]
            .into_iter()
            .chain((0..max_salt).filter(|s| *s != 32));
        if order.any(ok) {
            Ok(())
        } else {
            Err(BadSignature)
        }
    }
}

/// A [`SubjectKey`] as rcgen writes it: the same algorithm identifier and key bits.
pub(crate) struct RcgenPublicKey<'k, 'a>(&'k SubjectKey<'a>);

impl rcgen::PublicKeyData for RcgenPublicKey<'_, '_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.raw
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.0.key_type.rcgen_algorithm()
    }
}

/// A signature did not verify (or its scheme does not fit the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("signature does not verify")]
pub struct BadSignature;

#[cfg(test)]
mod tests {
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
            subject.verify(SignatureScheme::RsaPssSha256, b"pod-uid-1", &sig),
            Ok(())
        );
        assert_eq!(
            subject.verify(SignatureScheme::RsaPssSha256, b"pod-uid-2", &sig),
            Err(BadSignature)
        );
    }
}
