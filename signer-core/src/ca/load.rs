//! Loading a CA from PEM, and refusing what could not sign valid chains: the private key in
//! any of the forms operators bring, the certificate chain up to a root, the key matching the
//! first certificate, CA flags, key usage and path lengths, each refusal a [`CaError`] that
//! names the Secret key at fault and never quotes the key.

use std::sync::Arc;

use rcgen::{Issuer, KeyPair, PublicKeyData};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use rustls_pki_types::PrivateKeyDer;

use super::{Ca, CaError, CaKey, KeyDevice};
use crate::pem_reader::read_blocks;
use crate::x509::{certificate_pem, self_signed as is_self_signed};

/// What an operator reads of a published CA certificate: its subject and validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    pub subject: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
}

/// Every certificate of `pem_text` (a trust bundle, a `tls.crt`), in order, summarised.
pub fn summarize(pem_text: &str) -> Result<Vec<CertSummary>, CaError> {
    parse_certs(pem_text, CaError::Certificate)?
        .iter()
        .map(|c| {
            let x = c.parse()?;
            Ok(CertSummary {
                subject: x.subject().to_string(),
                not_before: x.validity().not_before.timestamp(),
                not_after: x.validity().not_after.timestamp(),
            })
        })
        .collect()
}

struct ParsedCert {
    der: Vec<u8>,
}

impl ParsedCert {
    /// Parsed once in `parse_certs` already; re-parsing borrowed DER is cheap and avoids a
    /// self-referential struct.
    fn parse(&self) -> Result<X509Certificate<'_>, CaError> {
        X509Certificate::from_der(&self.der)
            .map(|(_, c)| c)
            .map_err(|_| CaError::Certificate("a certificate does not parse".into()))
    }
}

fn parse_certs(pem_text: &str, what: fn(String) -> CaError) -> Result<Vec<ParsedCert>, CaError> {
    let blocks = read_blocks(pem_text).map_err(|e| what(e.to_string()))?;
    let mut certs = Vec::with_capacity(blocks.len());
    for (n, b) in (1u32..).zip(blocks) {
        if b.label() != "CERTIFICATE" {
            return Err(what(format!(
                "PEM block {n} is {}, not CERTIFICATE",
                b.label_for_humans()
            )));
        }
        // Certificates are public, but a key pasted under a CERTIFICATE label is not: say
        // what is wrong without the parser's own words.
        match X509Certificate::from_der(b.der()) {
            Ok(([], _)) => certs.push(ParsedCert { der: b.into_der() }),
            Ok(_) => return Err(what(format!("certificate {n} has trailing bytes"))),
            Err(_) => {
                return Err(what(format!(
                    "certificate {n} is not a DER X.509 certificate"
                )));
            }
        }
    }
    Ok(certs)
}

/// The one private key in `tls.key`: PKCS#8 (`PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or
/// PKCS#1 (`RSA PRIVATE KEY`), optionally after an `EC PARAMETERS` block (what `openssl
/// ecparam -genkey` writes). Errors say what is wrong and never quote the key.
fn load_key(key_pem: &str) -> Result<KeyPair, CaError> {
    let blocks = read_blocks(key_pem).map_err(|e| CaError::Key(e.to_string()))?;
    let mut keys = blocks.iter().filter(|b| b.label() != "EC PARAMETERS");
    let (Some(block), None) = (keys.next(), keys.next()) else {
        return Err(CaError::Key(
            "must hold exactly one private key PEM block".to_owned(),
        ));
    };
    // A copy for rustls' key type, wiped below whatever rcgen makes of it (the block wipes
    // its own when dropped).
    let der = block.der().to_vec();
    let (mut key, format) = match block.label() {
        "PRIVATE KEY" => (PrivateKeyDer::Pkcs8(der.into()), "PKCS#8"),
        "EC PRIVATE KEY" => (PrivateKeyDer::Sec1(der.into()), "SEC1"),
        "RSA PRIVATE KEY" => (PrivateKeyDer::Pkcs1(der.into()), "PKCS#1"),
        "ENCRYPTED PRIVATE KEY" => {
            return Err(CaError::Key(
                "is an encrypted PKCS#8 key; give it unencrypted (openssl pkcs8 -nocrypt)".into(),
            ));
        }
        _ => {
            return Err(CaError::Key(format!(
                "the PEM block is {}, not PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY",
                block.label_for_humans()
            )));
        }
    };
    // rcgen's error may describe the key's bytes; ours does not.
    let loaded = KeyPair::try_from(&key).map_err(|_| {
        CaError::Key(format!(
            "the {:?} block is not a valid {format} private key of a supported type (ECDSA P-256/P-384/P-521, Ed25519 or RSA)",
            block.label()
        ))
    });
    zeroize::Zeroize::zeroize(&mut key);
    loaded
}

/// The basicConstraints pathLenConstraint, when there is one.
fn max_path_len(c: &X509Certificate<'_>) -> Option<u32> {
    c.extensions()
        .iter()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => bc.path_len_constraint,
            _ => None,
        })
}

/// Whether the certificate carries a nameConstraints extension.
fn is_name_constrained(c: &X509Certificate<'_>) -> bool {
    c.extensions()
        .iter()
        .any(|ext| matches!(ext.parsed_extension(), ParsedExtension::NameConstraints(_)))
}

fn is_ca(c: &X509Certificate<'_>) -> bool {
    let mut ca = false;
    let mut can_sign = true;
    for ext in c.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => ca = bc.ca,
            ParsedExtension::KeyUsage(ku) => can_sign = ku.key_cert_sign(),
            _ => {}
        }
    }
    ca && can_sign
}

impl Ca {
    /// Loads a CA from `tls.crt`, `tls.key` and optional `ca.crt` PEM (PKCS#8, SEC1 or PKCS#1
    /// keys), and checks that it can sign chains that verify: the key matches the first
    /// certificate, which is a CA with keyCertSign; each certificate of `tls.crt` is signed by
    /// the next; the last is signed by a root, which is itself if no `ca.crt` is given.
    pub fn from_pem(cert_pem: &str, key_pem: &str, roots_pem: Option<&str>) -> Result<Ca, CaError> {
        // The certificates first: a Secret broken in both is reported by its tls.crt.
        let chain = parse_certs(cert_pem, CaError::Certificate)?;
        let key = CaKey::Memory(load_key(key_pem)?);
        Ca::from_chain(chain, key, roots_pem)
    }

    /// [`Ca::from_pem`] for a key already loaded (or made here).
    pub(crate) fn from_pem_chain(
        cert_pem: &str,
        key: CaKey,
        roots_pem: Option<&str>,
    ) -> Result<Ca, CaError> {
        let chain = parse_certs(cert_pem, CaError::Certificate)?;
        Ca::from_chain(chain, key, roots_pem)
    }

    /// Loads a CA whose key is held by `device` (see [`KeyDevice`]), from `tls.crt` and
    /// optional `ca.crt` PEM, with the checks of [`Ca::from_pem`]: the device's public key
    /// must be the first certificate's.
    pub fn from_device(
        cert_pem: &str,
        device: Arc<dyn KeyDevice>,
        roots_pem: Option<&str>,
    ) -> Result<Ca, CaError> {
        Ca::from_pem_chain(cert_pem, CaKey::device(device), roots_pem)
    }

    fn from_chain(
        chain: Vec<ParsedCert>,
        key: CaKey,
        roots_pem: Option<&str>,
    ) -> Result<Ca, CaError> {
        let first = chain
            .first()
            .ok_or_else(|| CaError::Certificate("no certificate".into()))?;
        let signing = first.parse()?;
        if key.subject_public_key_info() != signing.public_key().raw {
            let mismatch = "does not match the public key of the first certificate in tls.crt";
            return Err(match key {
                CaKey::Memory(_) => CaError::Key(mismatch.into()),
                CaKey::Device(_) => CaError::Device(mismatch.into()),
            });
        }
        if !is_ca(&signing) {
            return Err(CaError::Certificate(
                "the first certificate is not a CA (basicConstraints CA:TRUE and keyUsage keyCertSign)".into(),
            ));
        }

        // Split tls.crt into the signing certificate, intermediates and any root appended.
        let mut intermediates_pem = String::new();
        let mut roots: Vec<Vec<u8>> = Vec::new();
        for (n, pair) in (1u32..).zip(chain.windows(2)) {
            let [child, parent] = pair else { continue };
            let (child, parent) = (child.parse()?, parent.parse()?);
            child
                .verify_signature(Some(parent.public_key()))
                .map_err(|e| {
                    CaError::Certificate(format!(
                        "certificate {n} is not signed by the next one ({e})"
                    ))
                })?;
        }
        // The pathLen constraint of each certificate of the path, from the signing certificate
        // up to its root: whether one more CA may go below (see below).
        let mut path_lens = Vec::with_capacity(chain.len().saturating_add(1));
        let mut name_constrained = false;
        for (n, c) in (1usize..).zip(&chain) {
            let cert = c.parse()?;
            path_lens.push(max_path_len(&cert));
            name_constrained |= is_name_constrained(&cert);
            if is_self_signed(&cert) {
                if n != chain.len() {
                    return Err(CaError::Certificate(format!(
                        "certificate {n} is a self-signed root but is not last"
                    )));
                }
                roots.push(c.der.clone());
            } else {
                // Not a root, so a TLS peer needs it to build the path: this includes the
                // signing certificate itself when it is an intermediate.
                intermediates_pem.push_str(&certificate_pem(&c.der));
            }
        }
        if let Some(roots_pem) = roots_pem.filter(|p| !p.trim().is_empty()) {
            let extra = parse_certs(roots_pem, CaError::Roots)?;
            for r in &extra {
                if !is_ca(&r.parse()?) {
                    return Err(CaError::Roots("a certificate in ca.crt is not a CA".into()));
                }
            }
            if roots.is_empty() {
                // tls.crt holds no root: the root that signed its last certificate ends the path.
                let last = chain.last().unwrap_or(first).parse()?;
                let issuing_root = extra
                    .iter()
                    .filter_map(|r| r.parse().ok())
                    .find(|r| last.verify_signature(Some(r.public_key())).is_ok())
                    .ok_or_else(|| {
                        CaError::Roots(
                            "no certificate in ca.crt signed the last certificate of tls.crt"
                                .into(),
                        )
                    })?;
                path_lens.push(max_path_len(&issuing_root));
                name_constrained |= is_name_constrained(&issuing_root);
            }
            for r in extra {
                if !roots.contains(&r.der) {
                    roots.push(r.der);
                }
            }
        }
        if roots.is_empty() {
            return Err(CaError::Roots(
                "tls.crt does not end in a self-signed root, so ca.crt must hold the root that signed it".into(),
            ));
        }
        // One more CA below the signing certificate puts i + 1 CAs below the i-th certificate
        // of the path (the signing certificate is the 0th, its issuing root the last).
        let room_for_intermediate = (1u32..)
            .zip(&path_lens)
            .all(|(below, max)| max.is_none_or(|max| max >= below));
        let trust_bundle_pem = roots.iter().map(|r| certificate_pem(r)).collect();
        let validity = signing.validity();
        let (not_before, not_after) = (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        let subject = signing.subject().to_string();
        let signing_cert = crate::self_check::SigningCert::of(&signing);
        let issuer = Issuer::from_ca_cert_der(&first.der.clone().into(), key)
            .map_err(|e| CaError::Certificate(e.to_string()))?;
        Ok(Ca {
            issuer,
            intermediates_pem,
            trust_bundle_pem,
            not_before,
            not_after,
            subject,
            room_for_intermediate,
            name_constrained,
            signing: signing_cert,
        })
    }
}
