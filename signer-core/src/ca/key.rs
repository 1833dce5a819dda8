//! The private key a CA signs with: held in memory ([`CaKey::Memory`]), or by a device that
//! signs on request and never lets the key out ([`CaKey::Device`]).
//!
//! A signing intermediate's key is always in memory: it signs every leaf, so it must be fast,
//! and it is never stored. A root's key may instead live in a device — an HSM or a cloud KMS
//! reached over PKCS#11 — which is asked only for the few signatures a root makes (its own
//! certificate and each intermediate's), so leaf issuance never waits on it. signer-core
//! does not talk to devices: the controller implements [`KeyDevice`] for one, and a
//! [`CaKey`] makes rcgen sign through it.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use rcgen::{KeyPair, PublicKeyData, SigningKey};

use super::CaKeyType;

/// A private key held by a device, which signs on request.
pub trait KeyDevice: Send + Sync + fmt::Debug {
    /// The key's type: the signature algorithm of everything it signs.
    fn key_type(&self) -> CaKeyType;

    /// The public key as an X.509 subjectPublicKey holds it: the uncompressed point for
    /// ECDSA, the 32 key bytes for Ed25519.
    fn public_key(&self) -> &[u8];

    /// Signs `message` as the X.509 signature algorithm of [`KeyDevice::key_type`] requires:
    /// for ECDSA a DER `Ecdsa-Sig-Value` over the message's SHA-256 (P-256) or SHA-384
    /// (P-384) digest, for Ed25519 the 64-byte signature. The error says why, in words that
    /// never include key material.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, String>;
}

/// The key a [`super::Ca`] signs with.
pub enum CaKey {
    /// In this process's memory.
    Memory(KeyPair),
    /// In a device; see [`DeviceKey`].
    Device(DeviceKey),
}

/// A key in memory is wiped when dropped: rcgen keeps the PKCS#8 it was made from or read
/// as, which [`wipe`] clears (aws-lc clears its own copy when it frees it).
impl Drop for CaKey {
    fn drop(&mut self) {
        if let CaKey::Memory(key) = self {
            wipe(key);
        }
    }
}

/// Clears the private key bytes `key` holds.
fn wipe(key: &mut KeyPair) {
    zeroize::Zeroize::zeroize(key);
}

impl fmt::Debug for CaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaKey::Memory(_) => f.write_str("CaKey::Memory([redacted])"),
            CaKey::Device(d) => f.debug_tuple("CaKey::Device").field(d).finish(),
        }
    }
}

impl CaKey {
    /// A key held by `device`.
    pub fn device(device: Arc<dyn KeyDevice>) -> Self {
        CaKey::Device(DeviceKey {
            device,
            last_error: Mutex::new(None),
        })
    }

    /// Why the device last refused to sign, once (rcgen's error has no room for it).
    pub(crate) fn take_device_error(&self) -> Option<String> {
        match self {
            CaKey::Memory(_) => None,
            CaKey::Device(d) => d
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        }
    }
}

/// A device's key, with the reason of its last refusal.
#[derive(Debug)]
pub struct DeviceKey {
    device: Arc<dyn KeyDevice>,
    last_error: Mutex<Option<String>>,
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaKey::Memory(k) => k.der_bytes(),
            CaKey::Device(d) => d.device.public_key(),
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            CaKey::Memory(k) => k.algorithm(),
            CaKey::Device(d) => d.device.key_type().algorithm(),
        }
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaKey::Memory(k) => k.sign(msg),
            CaKey::Device(d) => d.device.sign(msg).map_err(|e| {
                *d.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                rcgen::Error::RemoteKeyError
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_in_memory_is_wiped_to_nothing() {
        let mut key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(!key.serialize_der().is_empty());
        wipe(&mut key);
        assert!(key.serialize_der().is_empty(), "the PKCS#8 bytes survived");
    }
}
