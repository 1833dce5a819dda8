//! Proof of possession: does the requester hold the private key of the key it asks us to certify?
//!
//! Two formats exist (contract §3). The 1.34/1.35 kubelet signs the ASCII pod UID with the key
//! (Ed25519 plain; ECDSA with SHA-256 on every curve; RSA-PSS SHA-256 at any salt length, as the API server admits). The
//! 1.36+ kubelet sends a stub PKCS#10 request made by Go's `x509.CreateCertificateRequest`
//! with an empty template: its own signature is the proof, and it must carry nothing else —
//! no subject, no attributes, no extensions. The API server checks this at admission; we check
//! again so that a privileged user or a compromised API path cannot forge a request.

use crate::csr::StubCsr;
use crate::key::{self, KeyType, SubjectKey};
use crate::request::{Denial, DenyReason, KeyMaterial};
use crate::signature::{Digest, SignatureScheme};

/// Extracts the subject key from `material`, refuses it if its type is not in `allowed`, and
/// verifies the proof that the requester holds it; then, and only then, runs the costly check
/// that nobody else can derive the private key.
pub fn verify_possession<'a>(
    material: &'a KeyMaterial,
    pod_uid: &str,
    allowed: &[KeyType],
) -> Result<SubjectKey<'a>, Denial> {
    check_sizes(material)?;
    let key = verify_proof(material, pod_uid, allowed)?;
    key.refuse_factorable()
        .map_err(|e| Denial::new(DenyReason::UnsupportedKeyType, e.to_string()))?;
    Ok(key)
}

/// Upstream's limit on each key-material field (`MaxPKIXPublicKeySize`,
/// `MaxProofOfPossessionSize`, `MaxStubPKCS10RequestSize` in `pkg/apis/certificates`). The API
/// server enforces it at admission; we do not rely on that before parsing.
pub const MAX_KEY_MATERIAL_BYTES: usize = 10 * 1024;

fn check_sizes(material: &KeyMaterial) -> Result<(), Denial> {
    let fields: &[(&str, &[u8])] = match material {
        KeyMaterial::Pkix { spki_der, proof } => {
            &[("pkixPublicKey", spki_der), ("proofOfPossession", proof)]
        }
        KeyMaterial::StubCsr { der } => &[("stubPKCS10Request", der)],
    };
    match fields
        .iter()
        .find(|(_, b)| b.len() > MAX_KEY_MATERIAL_BYTES)
    {
        Some((field, bytes)) => Err(Denial::new(
            DenyReason::InvalidKeyMaterial,
            format!(
                "spec.{field} is {} bytes; the API allows at most {MAX_KEY_MATERIAL_BYTES}",
                bytes.len()
            ),
        )),
        None => Ok(()),
    }
}

fn verify_proof<'a>(
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
                KeyType::Rsa3072 | KeyType::Rsa4096 => SignatureScheme::RsaPssSha256AnySalt,
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

impl KeyMaterial {
    /// The key type the request names, read without verifying anything: for metrics and logs
    /// of requests that are denied (a denied request's key may be of any type, or unreadable:
    /// then `None`). Never a basis for a decision — [`verify_possession`] is.
    pub fn claimed_key_type(&self) -> Option<KeyType> {
        check_sizes(self).ok()?;
        let spki_der = match self {
            KeyMaterial::Pkix { spki_der, .. } => spki_der.as_slice(),
            KeyMaterial::StubCsr { der } => StubCsr::decode(der).ok()?.spki_der,
        };
        SubjectKey::from_spki_der(spki_der)
            .ok()
            .map(|k| k.key_type())
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
    let csr = StubCsr::decode(der).map_err(|e| bad_csr(format!("stubPKCS10Request {e}")))?;
    let key = classify(SubjectKey::from_spki_der(csr.spki_der), allowed)?;
    let scheme = SignatureScheme::identify(&csr.algorithm)
        .map_err(|e| bad_csr(format!("stubPKCS10Request: {e}")))?;
    let signature = csr
        .signature
        .as_bytes()
        .ok_or_else(|| bad_csr("stubPKCS10Request signature is not whole bytes"))?;
    key.verify(scheme, csr.signed, signature).map_err(|_| {
        Denial::new(
            DenyReason::InvalidProofOfPossession,
            format!(
                "stubPKCS10Request signature ({scheme}) does not verify with its own {} key",
                key.key_type()
            ),
        )
    })?;

    // Only now that the request is known to come from the key holder do we judge its contents.
    if csr.subject_rdns != 0 {
        return Err(bad_csr(format!(
            "stubPKCS10Request must have an empty subject, not {} RDN(s) ({:?}); the identity comes from the pod's service account",
            csr.subject_rdns, csr.subject
        )));
    }
    if csr.attributes != 0 {
        return Err(bad_csr(
            "stubPKCS10Request must have no attributes or requested extensions; the signer decides the certificate's contents",
        ));
    }
    Ok(key)
}
