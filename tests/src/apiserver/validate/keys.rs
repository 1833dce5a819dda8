//! The key types the API admits (`pkg/apis/certificates` validation): what a
//! SubjectPublicKeyInfo holds, as Go's `x509.ParsePKIXPublicKey` sees it, and the signature
//! scheme a stub CSR names.

use x509_parser::prelude::FromDer;

use super::{Cause, cause};

/// What kind of key a SubjectPublicKeyInfo holds, as Go's `x509.ParsePKIXPublicKey` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum PkixKey {
    Ed25519,
    Ecdsa(&'static str),
    Rsa(usize),
    Other,
}

pub(super) fn pkix_key(spki_der: &[u8]) -> Option<PkixKey> {
    use x509_parser::x509::SubjectPublicKeyInfo;
    let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let alg = spki.algorithm.algorithm.to_id_string();
    Some(match alg.as_str() {
        "1.3.101.112" => PkixKey::Ed25519,
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            PkixKey::Ecdsa(match curve.as_deref() {
                Some("1.3.132.0.33") => "P-224",
                Some("1.2.840.10045.3.1.7") => "P-256",
                Some("1.3.132.0.34") => "P-384",
                Some("1.3.132.0.35") => "P-521",
                _ => return None,
            })
        }
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                let m = rsa.modulus;
                let m = &m[m.iter().take_while(|b| **b == 0).count()..];
                PkixKey::Rsa(m.len() * 8 - m.first().map_or(8, |b| b.leading_zeros() as usize))
            }
            _ => return None,
        },
        _ => PkixKey::Other,
    })
}

/// The key-type rules of `ValidatePodCertificateRequestCreate`, with its messages: only
/// Ed25519, ECDSA P-256/P-384/P-521 and RSA-3072/4096 keys.
pub(super) fn key_type_causes(field: &str, spki_der: &[u8]) -> Vec<Cause> {
    match pkix_key(spki_der) {
        None => vec![cause(field, "must be a valid PKIX-serialized public key")],
        Some(PkixKey::Ecdsa(curve)) if !["P-256", "P-384", "P-521"].contains(&curve) => {
            vec![cause(
                field,
                format!("curve {curve}: elliptic public keys must use curve P256 or P384"),
            )]
        }
        Some(PkixKey::Rsa(bits)) if bits != 3072 && bits != 4096 => vec![cause(
            field,
            format!("{bits}-bit modulus: RSA keys must have modulus size 3072 or 4096"),
        )],
        Some(PkixKey::Other) => vec![cause(
            field,
            "unknown public key type; supported types are Ed25519, ECDSA, and RSA",
        )],
        Some(_) => Vec::new(),
    }
}

/// The signature scheme Go would verify `oid` with, for a key of `key`'s type.
pub(super) fn csr_scheme(oid: &str) -> Option<signer_core::signature::SignatureScheme> {
    use signer_core::signature::{Digest, SignatureScheme as S};
    Some(match oid {
        "1.3.101.112" => S::Ed25519,
        "1.2.840.10045.4.3.2" => S::Ecdsa(Digest::Sha256),
        "1.2.840.10045.4.3.3" => S::Ecdsa(Digest::Sha384),
        "1.2.840.10045.4.3.4" => S::Ecdsa(Digest::Sha512),
        "1.2.840.113549.1.1.11" => S::RsaPkcs1(Digest::Sha256),
        "1.2.840.113549.1.1.12" => S::RsaPkcs1(Digest::Sha384),
        "1.2.840.113549.1.1.13" => S::RsaPkcs1(Digest::Sha512),
        _ => return None,
    })
}
