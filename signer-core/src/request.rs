//! The plain request signer-core decides on, and the decision it returns.
//!
//! A [`Request`] carries the fields of a PodCertificateRequest that matter for signing, in no
//! particular API version; the controller converts each served version into it. A
//! [`Decision`] is either an issued chain with its times or a denial whose [`DenyReason`] is
//! one of the API's well-known reasons or one of ours. Denials are outcomes, not errors.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use crate::key::KeyType;
use crate::spiffe::SpiffeId;

/// The signing-relevant fields of a PodCertificateRequest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The PCR's own namespace (the pod's).
    pub namespace: String,
    pub pod_uid: String,
    pub service_account_name: String,
    /// `spec.maxExpirationSeconds` (the API server defaults it to 86400).
    pub max_expiration_seconds: i64,
    /// `spec.unverifiedUserAnnotations`: user-controlled, never trusted.
    pub unverified_user_annotations: BTreeMap<String, String>,
    pub key_material: KeyMaterial,
}

/// How the request names its key and proves possession of it.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// 1.34/1.35 kubelets: a DER SubjectPublicKeyInfo and a signature over the pod UID.
    Pkix { spki_der: Vec<u8>, proof: Vec<u8> },
    /// 1.36+ kubelets: a DER PKCS#10 request whose own signature is the proof.
    StubCsr { der: Vec<u8> },
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyMaterial::Pkix { spki_der, proof } => f
                .debug_struct("Pkix")
                .field("spki_len", &spki_der.len())
                .field("proof_len", &proof.len())
                .finish(),
            KeyMaterial::StubCsr { der } => f
                .debug_struct("StubCsr")
                .field("der_len", &der.len())
                .finish(),
        }
    }
}

impl KeyMaterial {
    /// Builds the key material from a spec's three optional fields (absent and empty are the
    /// same thing in the API). Exactly one of (stub CSR) or (pkix key and proof) must be set;
    /// a real API server guarantees it, but a signer must still deny anything else cleanly.
    pub fn from_fields(
        pkix_public_key: Option<&[u8]>,
        proof_of_possession: Option<&[u8]>,
        stub_pkcs10_request: Option<&[u8]>,
    ) -> Result<KeyMaterial, Denial> {
        fn set(f: Option<&[u8]>) -> Option<&[u8]> {
            f.filter(|b| !b.is_empty())
        }
        match (
            set(pkix_public_key),
            set(proof_of_possession),
            set(stub_pkcs10_request),
        ) {
            (None, None, Some(der)) => Ok(KeyMaterial::StubCsr { der: der.to_vec() }),
            (Some(spki), Some(proof), None) => Ok(KeyMaterial::Pkix {
                spki_der: spki.to_vec(),
                proof: proof.to_vec(),
            }),
            (None, None, None) => Err(Denial::new(
                DenyReason::InvalidKeyMaterial,
                "the request has neither stubPKCS10Request nor pkixPublicKey with proofOfPossession",
            )),
            (_, _, Some(_)) => Err(Denial::new(
                DenyReason::InvalidKeyMaterial,
                "the request sets stubPKCS10Request together with pkixPublicKey or proofOfPossession; set only one form",
            )),
            (Some(_), None, None) => Err(Denial::new(
                DenyReason::InvalidKeyMaterial,
                "the request has pkixPublicKey but no proofOfPossession",
            )),
            (None, Some(_), None) => Err(Denial::new(
                DenyReason::InvalidKeyMaterial,
                "the request has proofOfPossession but no pkixPublicKey",
            )),
        }
    }
}

/// What signer-core decided for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)]
pub enum Decision {
    Issue(Issued),
    Deny(Denial),
}

/// An issued certificate chain and the times the status must carry (contract §4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// PEM: the leaf first, then intermediates; never the root.
    pub chain_pem: String,
    /// The leaf's notBefore, in whole seconds.
    pub not_before: SystemTime,
    /// The leaf's notAfter, in whole seconds.
    pub not_after: SystemTime,
    /// When the kubelet should begin refreshing, in whole seconds.
    pub begin_refresh_at: SystemTime,
    pub spiffe_id: SpiffeId,
    pub key_type: KeyType,
    /// The leaf's serial number, lowercase hex, for logs and audit.
    pub serial_hex: String,
}

/// A denial: a reason from the API or ours, and a message for the pod's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub reason: DenyReason,
    pub message: String,
}

impl Denial {
    /// Messages go into a condition (≤ 32 KiB); we keep them far shorter.
    const MAX_MESSAGE: usize = 1024;

    pub fn new(reason: DenyReason, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > Self::MAX_MESSAGE {
            let mut cut = Self::MAX_MESSAGE - 3;
            while !message.is_char_boundary(cut) {
                cut = cut.saturating_sub(1);
            }
            message.truncate(cut);
            message.push_str("...");
        }
        Denial { reason, message }
    }
}

/// Why a request was denied. Each value is a valid condition `reason`
/// (`^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// API-defined: the key type is not one we issue for (unsupported or switched off).
    UnsupportedKeyType,
    /// API-defined: `unverifiedUserAnnotations` has keys we do not accept.
    InvalidUnverifiedUserAnnotations,
    /// The proof of possession (PoP signature or CSR signature) does not verify.
    InvalidProofOfPossession,
    /// The stub PKCS#10 request is malformed or not empty (subject, attributes, extensions).
    InvalidStubPKCS10Request,
    /// Neither or both key-material forms are set.
    InvalidKeyMaterial,
    /// `maxExpirationSeconds` is below the 3600 s every certificate must last.
    InvalidMaxExpirationSeconds,
    /// The pod UID is missing, or the namespace or service account is not a valid Kubernetes
    /// name.
    InvalidIdentity,
    /// The identity policy (`--identity-policy`) gives this namespace and service account
    /// no identity from this signer.
    NotAllowedByPolicy,
}

impl DenyReason {
    pub const ALL: [DenyReason; 8] = [
        DenyReason::UnsupportedKeyType,
        DenyReason::InvalidUnverifiedUserAnnotations,
        DenyReason::InvalidProofOfPossession,
        DenyReason::InvalidStubPKCS10Request,
        DenyReason::InvalidKeyMaterial,
        DenyReason::InvalidMaxExpirationSeconds,
        DenyReason::InvalidIdentity,
        DenyReason::NotAllowedByPolicy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::UnsupportedKeyType => "UnsupportedKeyType",
            DenyReason::InvalidUnverifiedUserAnnotations => "InvalidUnverifiedUserAnnotations",
            DenyReason::InvalidProofOfPossession => "InvalidProofOfPossession",
            DenyReason::InvalidStubPKCS10Request => "InvalidStubPKCS10Request",
            DenyReason::InvalidKeyMaterial => "InvalidKeyMaterial",
            DenyReason::InvalidMaxExpirationSeconds => "InvalidMaxExpirationSeconds",
            DenyReason::InvalidIdentity => "InvalidIdentity",
            DenyReason::NotAllowedByPolicy => "NotAllowedByPolicy",
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// contract §4: reasons must match `^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$`.
    #[test]
    fn every_reason_is_a_valid_condition_reason() {
        for r in DenyReason::ALL {
            let s = r.as_str().as_bytes();
            assert!(s[0].is_ascii_alphabetic(), "{r}");
            assert!(
                s.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"_,:".contains(c)),
                "{r}"
            );
            assert!(
                s[s.len() - 1].is_ascii_alphanumeric() || s[s.len() - 1] == b'_',
                "{r}"
            );
        }
    }

    #[test]
    fn exactly_one_key_material_form() {
        let x = Some(&b"x"[..]);
        let empty = Some(&b""[..]);
        assert!(matches!(
            KeyMaterial::from_fields(None, None, x),
            Ok(KeyMaterial::StubCsr { .. })
        ));
        assert!(matches!(
            KeyMaterial::from_fields(x, x, empty),
            Ok(KeyMaterial::Pkix { .. })
        ));
        for (a, b, c) in [
            (None, None, None),
            (empty, empty, empty),
            (x, x, x),
            (x, None, None),
            (None, x, None),
            (x, None, x),
        ] {
            let d = KeyMaterial::from_fields(a, b, c).unwrap_err();
            assert_eq!(d.reason, DenyReason::InvalidKeyMaterial);
        }
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let d = Denial::new(DenyReason::InvalidIdentity, "é".repeat(2000));
        assert!(d.message.len() <= 1024);
        assert!(d.message.ends_with("..."));
    }
}
