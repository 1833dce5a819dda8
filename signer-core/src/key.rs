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
use x509_cert::der::Decode;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::spki::SubjectPublicKeyInfoRef;

use crate::rsa::ModulusSize;
use crate::signature::{Digest, SignatureScheme};

const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const OID_P521: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
const OID_RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

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
    /// Classifies a DER SubjectPublicKeyInfo, read with a strict DER decoder. Anything but
    /// the six admitted types — RSA-2048, P-224, compressed points, unknown OIDs, truncated,
    /// trailing or extended DER, weak RSA keys — is refused.
    pub fn from_spki_der(spki_der: &'a [u8]) -> Result<Self, UnsupportedKey> {
        let spki = SubjectPublicKeyInfoRef::from_der(spki_der)
            .map_err(|e| UnsupportedKey::new(format_args!("public key is not valid DER ({e})")))?;
        let alg = &spki.algorithm;
        // Borrowed from the caller's buffer by the decoder itself.
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| UnsupportedKey::new("public key BIT STRING is not whole bytes"))?;

        let key_type = if alg.oid == OID_ED25519 {
            if alg.parameters.is_some() {
                return Err(UnsupportedKey::new("Ed25519 key must not carry parameters"));
            }
            if raw.len() != 32 {
                return Err(UnsupportedKey::new("Ed25519 key is not 32 bytes"));
            }
            KeyType::Ed25519
        } else if alg.oid == OID_EC_PUBLIC_KEY {
            let curve: ObjectIdentifier = alg
                .parameters
                .and_then(|p| p.decode_as().ok())
                .ok_or_else(|| UnsupportedKey::new("EC key does not name its curve"))?;
            // An uncompressed point: 0x04, then both coordinates.
            let (key_type, point_len) = match curve {
                OID_P256 => (KeyType::EcdsaP256, 1 + 2 * 32),
                OID_P384 => (KeyType::EcdsaP384, 1 + 2 * 48),
                OID_P521 => (KeyType::EcdsaP521, 1 + 2 * 66),
                other => {
                    return Err(UnsupportedKey::new(format_args!(
                        "EC curve {other} is not supported"
                    )));
                }
            };
            if raw.len() != point_len || raw.first() != Some(&0x04) {
                return Err(UnsupportedKey::new(format_args!(
                    "{key_type} key is not an uncompressed point"
                )));
            }
            key_type
        } else if alg.oid == OID_RSA_ENCRYPTION {
            match crate::rsa::check_public_key(raw).map_err(UnsupportedKey::new)? {
                ModulusSize::Bits3072 => KeyType::Rsa3072,
                ModulusSize::Bits4096 => KeyType::Rsa4096,
            }
        } else {
            return Err(UnsupportedKey::new(format_args!(
                "key algorithm {} is not supported",
                alg.oid
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

    /// Refuses an RSA modulus that is prime or a perfect square (anyone could derive the
    /// private key). Expensive, so [`crate::proof::verify_possession`] calls it only once the
    /// requester has proved possession; other key types pass.
    pub(crate) fn refuse_factorable(&self) -> Result<(), UnsupportedKey> {
        if self.is_rsa() {
            crate::rsa::check_not_prime_or_square(self.raw).map_err(UnsupportedKey::new)?;
        }
        Ok(())
    }

    /// The key as rcgen writes it into a certificate.
    pub(crate) fn as_rcgen(&self) -> RcgenPublicKey<'_, 'a> {
        RcgenPublicKey(self)
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The whole SubjectPublicKeyInfo DER, as requested.
    pub fn spki_der(&self) -> &'a [u8] {
        self.spki_der
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
        use SignatureScheme::{Ecdsa, RsaPkcs1, RsaPss};

        if let (SignatureScheme::Ed25519, KeyType::Ed25519) = (scheme, self.key_type) {
            let key: [u8; 32] = self.raw.try_into().map_err(|_| BadSignature)?;
            let sig = ed25519_dalek::Signature::from_slice(signature).map_err(|_| BadSignature)?;
            // verify_strict also refuses small-order keys and non-canonical signatures.
            return ed25519_dalek::VerifyingKey::from_bytes(&key)
                .and_then(|k| k.verify_strict(message, &sig))
                .map_err(|_| BadSignature);
        }

        if let (SignatureScheme::RsaPssSha256AnySalt, Rsa3072 | Rsa4096) = (scheme, self.key_type) {
            return self.verify_pss_sha256_any_salt(message, signature);
        }

        // Every (curve, digest) pair: Go's ecdsa.VerifyASN1 hashes with whatever the
        // algorithm names and truncates to the curve, and so does aws-lc.
        let alg: &'static dyn lc::VerificationAlgorithm = match (scheme, self.key_type) {
            (Ecdsa(Sha256), EcdsaP256) => &lc::ECDSA_P256_SHA256_ASN1,
            (Ecdsa(Sha384), EcdsaP256) => &lc::ECDSA_P256_SHA384_ASN1,
            (Ecdsa(Sha512), EcdsaP256) => &lc::ECDSA_P256_SHA512_ASN1,
            (Ecdsa(Sha256), EcdsaP384) => &lc::ECDSA_P384_SHA256_ASN1,
            (Ecdsa(Sha384), EcdsaP384) => &lc::ECDSA_P384_SHA384_ASN1,
            (Ecdsa(Sha512), EcdsaP384) => &lc::ECDSA_P384_SHA512_ASN1,
            (Ecdsa(Sha256), EcdsaP521) => &lc::ECDSA_P521_SHA256_ASN1,
            (Ecdsa(Sha384), EcdsaP521) => &lc::ECDSA_P521_SHA384_ASN1,
            (Ecdsa(Sha512), EcdsaP521) => &lc::ECDSA_P521_SHA512_ASN1,
            (RsaPkcs1(Sha256), Rsa3072 | Rsa4096) => &lc::RSA_PKCS1_2048_8192_SHA256,
            (RsaPkcs1(Sha384), Rsa3072 | Rsa4096) => &lc::RSA_PKCS1_2048_8192_SHA384,
            (RsaPkcs1(Sha512), Rsa3072 | Rsa4096) => &lc::RSA_PKCS1_2048_8192_SHA512,
            // aws-lc-rs's PSS verifiers default to a salt as long as the digest.
            (RsaPss(Sha256), Rsa3072 | Rsa4096) => &lc::RSA_PSS_2048_8192_SHA256,
            (RsaPss(Sha384), Rsa3072 | Rsa4096) => &lc::RSA_PSS_2048_8192_SHA384,
            (RsaPss(Sha512), Rsa3072 | Rsa4096) => &lc::RSA_PSS_2048_8192_SHA512,
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
// Evaluated at compile time: an index out of bounds would fail the build, not a request.
#[allow(clippy::indexing_slicing)]
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
        // The longest salt: emLen (⌈(modBits − 1) / 8⌉) − hLen (32) − 2.
        let max_salt: usize = match self.key_type {
            KeyType::Rsa3072 => 384 - 32 - 2,
            KeyType::Rsa4096 => 512 - 32 - 2,
            _ => return Err(BadSignature),
        };
        let ok = |salt: usize| {
            PSS_SHA256_BY_SALT.get(salt).is_some_and(|alg| {
                UnparsedPublicKey::new(alg, self.raw)
                    .verify(message, signature)
                    .is_ok()
            })
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
#[path = "key_tests.rs"]
mod tests;
