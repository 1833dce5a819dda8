//! Proof of possession: does the requester hold the private key of the key it asks us to certify?
//!
//! Two formats exist (contract §3). The 1.34/1.35 kubelet signs the ASCII pod UID with the key
//! (Ed25519 plain; ECDSA with SHA-256 on every curve; RSA-PSS SHA-256 at any salt length, as the API server admits). The
//! 1.36+ kubelet sends a stub PKCS#10 request made by Go's `x509.CreateCertificateRequest`
//! with an empty template: its own signature is the proof, and it must carry nothing else —
//! no subject, no attributes, no extensions. The API server checks this at admission; we check
//! again so that a privileged user or a compromised API path cannot forge a request.

use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ECDSA_WITH_SHA512,
    OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::AlgorithmIdentifier;

use crate::key::{self, Digest, KeyType, SignatureScheme, SubjectKey};
use crate::request::{Denial, DenyReason, KeyMaterial};

/// Extracts the subject key from `material`, refuses it if its type is not in `allowed`, and
/// verifies the proof that the requester holds it.
pub fn verify_possession<'a>(
    material: &'a KeyMaterial,
    pod_uid: &str,
    allowed: &[KeyType],
) -> Result<SubjectKey<'a>, Denial> {
    match material {
        KeyMaterial::Pkix { spki_der, proof } => {
            let key = classify(SubjectKey::from_spki_der(spki_der), allowed)?;
            let scheme = match key.key_type() {
                KeyType::Ed25519 => SignatureScheme::Ed25519,
                KeyType::EcdsaP256 | KeyType::EcdsaP384 | KeyType::EcdsaP521 => {
                    SignatureScheme::Ecdsa(Digest::Sha256)
                }
                KeyType::Rsa3072 | KeyType::Rsa4096 => SignatureScheme::RsaPssSha256,
            };
            key.verify(scheme, pod_uid.as_bytes(), proof).map_err(|_| {
                Denial::new(
                    DenyReason::InvalidProofOfPossession,
                    format!(
                        "proofOfPossession is not a valid {} signature of the pod UID {pod_uid:?} by pkixPublicKey",
                        key.key_type()
                    ),
                )
            })?;
            Ok(key)
        }
        KeyMaterial::StubCsr { der } => verify_stub_csr(der, allowed),
    }
}

fn classify<'a>(
    key: Result<SubjectKey<'a>, key::UnsupportedKey>,
    allowed: &[KeyType],
) -> Result<SubjectKey<'a>, Denial> {
    let key = key.map_err(|e| Denial::new(DenyReason::UnsupportedKeyType, e.to_string()))?;
    if !allowed.contains(&key.key_type()) {
        return Err(Denial::new(
            DenyReason::UnsupportedKeyType,
            format!(
                "key type {} is not enabled on this signer; use one of {}",
                key.key_type(),
                key::list(allowed)
            ),
        ));
    }
    Ok(key)
}

fn bad_csr(message: impl Into<String>) -> Denial {
    Denial::new(DenyReason::InvalidStubPKCS10Request, message)
}

fn verify_stub_csr<'a>(der: &'a [u8], allowed: &[KeyType]) -> Result<SubjectKey<'a>, Denial> {
    // Go (the API server) parses strict DER; x509-parser tolerates wrong tags outside the
    // signed part. A strict decode first means we accept exactly what Go accepts.
    <x509_cert::request::CertReq as x509_cert::der::Decode>::from_der(der).map_err(|e| {
        bad_csr(format!(
            "stubPKCS10Request is not a valid DER PKCS#10 request ({e})"
        ))
    })?;
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|e| {
        bad_csr(format!(
            "stubPKCS10Request is not a valid PKCS#10 request ({e})"
        ))
    })?;
    if !rest.is_empty() {
        return Err(bad_csr(
            "stubPKCS10Request has trailing bytes after its DER",
        ));
    }
    let info = &csr.certification_request_info;
    if info.version.0 != 0 {
        return Err(bad_csr(format!(
            "stubPKCS10Request has version {}, not 1",
            info.version.0 + 1
        )));
    }
    let key = classify(
        SubjectKey::from_parsed(info.subject_pki.raw, &info.subject_pki),
        allowed,
    )?;

    let scheme = signature_scheme(&csr.signature_algorithm).ok_or_else(|| {
        bad_csr(format!(
            "stubPKCS10Request is signed with the unsupported algorithm {}",
            csr.signature_algorithm.algorithm
        ))
    })?;
    if csr.signature_value.unused_bits != 0 {
        return Err(bad_csr("stubPKCS10Request signature is not whole bytes"));
    }
    key.verify(scheme, info.raw, &csr.signature_value.data)
        .map_err(|_| {
            Denial::new(
                DenyReason::InvalidProofOfPossession,
                format!(
                    "stubPKCS10Request signature does not verify with its own {} key",
                    key.key_type()
                ),
            )
        })?;

    // Only now that the request is known to come from the key holder do we judge its contents.
    if info.subject.iter().next().is_some() {
        return Err(bad_csr(format!(
            "stubPKCS10Request must have an empty subject, not {:?}; the identity comes from the pod's service account",
            info.subject.to_string()
        )));
    }
    if !info.attributes().is_empty() {
        return Err(bad_csr(
            "stubPKCS10Request must have no attributes or requested extensions; the signer decides the certificate's contents",
        ));
    }
    Ok(key)
}

/// The signature schemes Go may put on a CSR for the admitted key types.
fn signature_scheme(alg: &AlgorithmIdentifier<'_>) -> Option<SignatureScheme> {
    let oid = &alg.algorithm;
    // RFC 5758 / RFC 8410: ECDSA and Ed25519 identifiers have absent parameters;
    // RFC 4055: PKCS#1 v1.5 identifiers carry NULL (some encoders omit it).
    let params_absent = alg.parameters.is_none();
    let params_null_or_absent = alg
        .parameters
        .as_ref()
        .is_none_or(|p| p.tag() == x509_parser::der_parser::asn1_rs::Tag::Null);
    let scheme = if *oid == OID_SIG_ED25519 && params_absent {
        SignatureScheme::Ed25519
    } else if *oid == OID_SIG_ECDSA_WITH_SHA256 && params_absent {
        SignatureScheme::Ecdsa(Digest::Sha256)
    } else if *oid == OID_SIG_ECDSA_WITH_SHA384 && params_absent {
        SignatureScheme::Ecdsa(Digest::Sha384)
    } else if *oid == OID_SIG_ECDSA_WITH_SHA512 && params_absent {
        SignatureScheme::Ecdsa(Digest::Sha512)
    } else if *oid == OID_PKCS1_SHA256WITHRSA && params_null_or_absent {
        SignatureScheme::RsaPkcs1(Digest::Sha256)
    } else if *oid == OID_PKCS1_SHA384WITHRSA && params_null_or_absent {
        SignatureScheme::RsaPkcs1(Digest::Sha384)
    } else if *oid == OID_PKCS1_SHA512WITHRSA && params_null_or_absent {
        SignatureScheme::RsaPkcs1(Digest::Sha512)
    } else {
        return None;
    };
    Some(scheme)
}
