//! `ValidatePodCertificateRequestCreate`: names, the signer name, user annotations, the
//! requested lifetime and the key material with its proof.

use serde_json::Value;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::FromDer;

use super::keys::{PkixKey, csr_scheme, key_type_causes, pkix_key};
use super::{Cause, b64, cause, too_long};

/// Upstream limits (`pkg/apis/certificates` types.go).
const MAX_PKIX_PUBLIC_KEY_SIZE: usize = 10 * 1024;
const MAX_PROOF_OF_POSSESSION_SIZE: usize = 10 * 1024;
const MAX_STUB_CSR_SIZE: usize = 10 * 1024;

/// `ValidatePodCertificateRequestCreate`: names and UIDs, the signer name, user annotations,
/// `maxExpirationSeconds` (24 h at most for `kubernetes.io` signers), and the key material:
/// exactly one of a stub CSR or a pkix key with its proof — `v1` has only the CSR — of an
/// admitted key type whose signature verifies. `check_crypto` false skips the key-material
/// checks (a privileged or compromised path; see `authz::UNCHECKED`).
pub fn pcr_create(obj: &Value, version: &str, check_crypto: bool) -> Vec<Cause> {
    use signer_core::names;
    let spec = &obj["spec"];
    let text = |f: &str| spec[f].as_str().unwrap_or("");
    let mut causes = Vec::new();
    for (field, errors) in [
        (
            "metadata.name",
            names::dns1123_subdomain_errors(obj["metadata"]["name"].as_str().unwrap_or("")),
        ),
        (
            "spec.signerName",
            names::signer_name_errors(text("signerName")),
        ),
        (
            "spec.podName",
            names::dns1123_subdomain_errors(text("podName")),
        ),
        (
            "spec.serviceAccountName",
            names::dns1123_subdomain_errors(text("serviceAccountName")),
        ),
        (
            "spec.nodeName",
            names::dns1123_subdomain_errors(text("nodeName")),
        ),
    ] {
        causes.extend(errors.into_iter().map(|e| cause(field, e)));
    }
    for uid in ["podUID", "serviceAccountUID", "nodeUID"] {
        let field = format!("spec.{uid}");
        if text(uid).is_empty() {
            causes.push(cause(&field, "must not be empty"));
        }
        causes.extend(too_long(&field, text(uid).len(), 128));
    }
    if let Some(annotations) = spec["unverifiedUserAnnotations"].as_object() {
        for key in annotations.keys() {
            if !is_qualified_name(key) {
                causes.push(cause(
                    "spec.unverifiedUserAnnotations",
                    format!("{key:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
                ));
            }
        }
    }
    let max = spec["maxExpirationSeconds"].as_i64().unwrap_or(0);
    let ceiling = if names::is_kubernetes_signer_name(text("signerName")) {
        86_400
    } else {
        7_862_400
    };
    if !(3600..=ceiling).contains(&max) {
        causes.push(cause(
            "spec.maxExpirationSeconds",
            format!("must be in the range [3600, {ceiling}]"),
        ));
    }
    if !causes.is_empty() || !check_crypto {
        return causes;
    }
    // Empty bytes are unset, as Go's len() sees them: "" decodes to no bytes. v1 has no pkix
    // fields: sent through v1 they are dropped in decoding, as unknown fields are.
    let set = |f: &str| {
        b64(spec.get(f))
            .filter(|b| !b.is_empty())
            .filter(|_| version != "v1" || f == "stubPKCS10Request")
    };
    match (
        set("pkixPublicKey"),
        set("proofOfPossession"),
        set("stubPKCS10Request"),
    ) {
        (None, None, Some(csr)) => causes.extend(stub_csr_causes(&csr)),
        (Some(spki), Some(proof), None) => {
            // Sizes first, as upstream's validateDeprecatedPKIXPublicKey checks them.
            if let Some(c) = too_long("spec.pkixPublicKey", spki.len(), MAX_PKIX_PUBLIC_KEY_SIZE)
                .or_else(|| {
                    too_long(
                        "spec.proofOfPossession",
                        proof.len(),
                        MAX_PROOF_OF_POSSESSION_SIZE,
                    )
                })
            {
                return vec![c];
            }
            causes.extend(pkix_causes(&spki, &proof, text("podUID")));
        }
        // Any other combination (v1 has no pkix fields: a v1 request without a stub CSR).
        _ => causes.push(cause(
            "spec",
            "exactly one of (stubPKCS10Request) or (pkixPublicKey, proofOfPossession) must be set",
        )),
    }
    causes
}

fn pkix_causes(spki: &[u8], proof: &[u8], pod_uid: &str) -> Vec<Cause> {
    use signer_core::signature::{Digest, SignatureScheme};
    let causes = key_type_causes("spec.pkixPublicKey", spki);
    if !causes.is_empty() {
        return causes;
    }
    let scheme = match pkix_key(spki) {
        Some(PkixKey::Ed25519) => SignatureScheme::Ed25519,
        Some(PkixKey::Ecdsa(_)) => SignatureScheme::Ecdsa(Digest::Sha256),
        _ => SignatureScheme::RsaPssSha256AnySalt,
    };
    let verified = signer_core::SubjectKey::from_spki_der(spki)
        .is_ok_and(|k| k.verify(scheme, pod_uid.as_bytes(), proof).is_ok());
    if verified {
        Vec::new()
    } else {
        vec![cause(
            "spec.proofOfPossession",
            "could not verify proof-of-possession signature",
        )]
    }
}

/// A stub CSR must parse, be of an admitted key type and carry a valid signature (the API
/// server does not check that it is empty: that is the signer's rule).
fn stub_csr_causes(csr: &[u8]) -> Vec<Cause> {
    const FIELD: &str = "spec.stubPKCS10Request";
    if let Some(c) = too_long(FIELD, csr.len(), MAX_STUB_CSR_SIZE) {
        return vec![c];
    }
    let Ok((_, req)) = X509CertificationRequest::from_der(csr) else {
        return vec![cause(FIELD, "must be a valid PKCS#10 CSR")];
    };
    let info = &req.certification_request_info;
    let causes = key_type_causes(FIELD, info.subject_pki.raw);
    if !causes.is_empty() {
        return causes;
    }
    let verified =
        csr_scheme(&req.signature_algorithm.algorithm.to_id_string()).is_some_and(|scheme| {
            signer_core::SubjectKey::from_spki_der(info.subject_pki.raw).is_ok_and(|k| {
                k.verify(scheme, info.raw, &req.signature_value.data)
                    .is_ok()
            })
        });
    if verified {
        Vec::new()
    } else {
        vec![cause(
            FIELD,
            "could not verify the certificate signing request's signature",
        )]
    }
}

/// `validation.IsQualifiedName`: `[prefix/]name`, the prefix a DNS-1123 subdomain, the name
/// at most 63 characters of `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let b = name.as_bytes();
    prefix.is_none_or(signer_core::names::is_dns1123_subdomain)
        && !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}
