//! A root key pair in the token, as a [`KeyDevice`]: the token signs (`CKM_ECDSA` over a digest
//! made here, or `CKM_EDDSA`) and its raw signature becomes what X.509 carries; the curve
//! parameters and EC points PKCS#11 stores, read and written.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, ObjectClass};
use der::asn1::{ObjectIdentifier, OctetString, SequenceOf, UintRef};
use der::{Decode, Encode};
use signer_core::{CaKeyType, KeyDevice};

use super::Token;

/// The DER `ECParameters` (a named curve's OID) of `key_type`, as `CKA_EC_PARAMS` holds it.
pub(super) fn curve_params(key_type: CaKeyType) -> Vec<u8> {
    let oid = match key_type {
        CaKeyType::EcdsaP256 => ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7"),
        CaKeyType::EcdsaP384 => ObjectIdentifier::new_unwrap("1.3.132.0.34"),
        // id-Ed25519 (RFC 8410), which PKCS#11 3.0 accepts for edwards25519.
        CaKeyType::Ed25519 => ObjectIdentifier::new_unwrap("1.3.101.112"),
    };
    oid.to_der().unwrap_or_default()
}

/// The public key from `CKA_EC_POINT`: a DER OCTET STRING around the point (what the
/// standard says), or the bare point (what some modules return).
pub(super) fn public_point(ec_point: &[u8], key_type: CaKeyType) -> Option<Vec<u8>> {
    let len = match key_type {
        CaKeyType::EcdsaP256 => 65,
        CaKeyType::EcdsaP384 => 97,
        CaKeyType::Ed25519 => 32,
    };
    let point = match OctetString::from_der(ec_point) {
        Ok(o) if o.as_bytes().len() == len => o.as_bytes().to_vec(),
        _ if ec_point.len() == len => ec_point.to_vec(),
        _ => return None,
    };
    (key_type == CaKeyType::Ed25519 || point.first() == Some(&0x04)).then_some(point)
}

/// A root key pair in the token, found by label and `CKA_ID`.
pub struct TokenKey {
    pub(super) token: Arc<Token>,
    pub(super) id: Vec<u8>,
    pub(super) key_type: CaKeyType,
    pub(super) public_key: Vec<u8>,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenKey")
            .field("token", &self.token.config.token_label)
            .field("label", &self.token.config.key_label)
            .field("key_type", &self.key_type)
            .finish_non_exhaustive()
    }
}

impl TokenKey {
    /// Destroys the key pair in the token (a failure is logged: the key is then left unused).
    pub fn destroy(&self) {
        let label = self.token.config.key_label.as_bytes().to_vec();
        self.token.wrote.store(true, Ordering::SeqCst);
        let destroyed = self
            .token
            .with_session("destroying an unused key pair", |s| {
                for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
                    let template = [
                        Attribute::Class(class),
                        Attribute::Label(label.clone()),
                        Attribute::Id(self.id.clone()),
                    ];
                    for handle in s.find_objects(&template)? {
                        s.destroy_object(handle)?;
                    }
                }
                Ok(())
            });
        match destroyed {
            Ok(()) => {
                tracing::info!(token = %self.token, "destroyed a root key that was never used")
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not destroy a root key that was never used; it stays in the token, unused")
            }
        }
    }
}

impl KeyDevice for TokenKey {
    fn key_type(&self) -> CaKeyType {
        self.key_type
    }

    fn public_key(&self) -> &[u8] {
        &self.public_key
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        use aws_lc_rs::digest;
        let (mechanism, input) = match self.key_type {
            CaKeyType::EcdsaP256 => (
                Mechanism::Ecdsa,
                digest::digest(&digest::SHA256, message).as_ref().to_vec(),
            ),
            CaKeyType::EcdsaP384 => (
                Mechanism::Ecdsa,
                digest::digest(&digest::SHA384, message).as_ref().to_vec(),
            ),
            CaKeyType::Ed25519 => (
                Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
                message.to_vec(),
            ),
        };
        let raw = self
            .token
            .with_session("signing", |s| {
                let handle = self.token.private_key(s, &self.id)?;
                s.sign(&mechanism, handle, &input)
            })
            .map_err(|e| e.to_string())?;
        match self.key_type {
            CaKeyType::Ed25519 => Ok(raw),
            _ => ecdsa_signature_der(&raw),
        }
    }
}

/// The DER `Ecdsa-Sig-Value` (RFC 3279: SEQUENCE { r INTEGER, s INTEGER }) of a PKCS#11
/// ECDSA signature, which is r and s as two big-endian halves of equal length.
pub(super) fn ecdsa_signature_der(raw: &[u8]) -> Result<Vec<u8>, String> {
    let half = raw.len() / 2;
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(format!(
            "the token returned a {}-byte ECDSA signature",
            raw.len()
        ));
    }
    let (r, s) = raw.split_at(half);
    let mut pair = SequenceOf::<UintRef<'_>, 2>::new();
    for half in [r, s] {
        let int = UintRef::new(half).map_err(|e| e.to_string())?;
        pair.add(int).map_err(|e| e.to_string())?;
    }
    pair.to_der().map_err(|e| e.to_string())
}
