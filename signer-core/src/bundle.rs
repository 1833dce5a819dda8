//! SPIFFE bundles: the JWK Set of the SPIFFE Trust Domain and Bundle specification (§4), whose
//! `x509-svid` entries carry a trust domain's X.509 authorities (X509-SVID §6).
//!
//! [`SpiffeBundle::to_json`] writes ours: one JWK per CA certificate, `use: x509-svid`, no
//! `kid`, the certificate alone in `x5c`, the key's public parameters, and the optional
//! `spiffe_sequence` and `spiffe_refresh_hint`. [`SpiffeBundle::parse`] reads a foreign one
//! for the trust domain the operator configured: entries of unknown `use` or `kty` and
//! entries without `x5c` are ignored, as the specification requires; every authority left
//! must be a CA certificate (basic constraints `cA`, and `keyCertSign` if it has key usage)
//! whose SPIFFE names and URI name constraints, if any, are of that trust domain; a bundle
//! with none is refused (importing it would remove all trust). [`SpiffeBundle::may_replace`]
//! says whether a fetched bundle may replace the last good one: its sequence never goes
//! back, and content never changes under the same sequence.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::spiffe::TrustDomain;

/// The largest bundle document read: a few hundred authorities.
pub const MAX_BUNDLE_BYTES: usize = 1 << 20;

/// One trust domain's X.509 authorities, with the bundle's sequence and refresh hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpiffeBundle {
    pub trust_domain: TrustDomain,
    pub sequence: Option<u64>,
    pub refresh_hint: Option<Duration>,
    /// DER CA certificates, in the bundle's order, without duplicates.
    pub x509_authorities: Vec<Vec<u8>>,
}

/// Why a bundle was refused; the last good bundle stays.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("not a SPIFFE bundle: {0}")]
    Malformed(String),
    #[error("x509-svid entry {index}: {problem}")]
    BadAuthority { index: usize, problem: String },
    #[error(
        "x509-svid entry {index} is for trust domain {found:?}, not {expected:?} (the one configured for this bundle endpoint)"
    )]
    WrongTrustDomain {
        index: usize,
        found: String,
        expected: String,
    },
    #[error("the bundle has no X.509 authorities: importing it would remove all trust in {0:?}")]
    NoAuthorities(String),
    #[error("spiffe_sequence went back from {last} to {got}")]
    SequenceWentBack { last: u64, got: u64 },
    #[error("the authorities changed but spiffe_sequence stayed {0}")]
    ChangedUnderSameSequence(u64),
}

impl SpiffeBundle {
    /// Our bundle document. Fails only if an authority is not a certificate whose key a JWK
    /// can describe (EC P-256/384/521, Ed25519, RSA).
    pub fn to_json(&self) -> Result<String, BundleError> {
        let keys = self
            .x509_authorities
            .iter()
            .enumerate()
            .map(|(index, der)| {
                jwk(der).map_err(|problem| BundleError::BadAuthority { index, problem })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut doc = Map::new();
        doc.insert("keys".into(), Value::Array(keys));
        if let Some(s) = self.sequence {
            doc.insert("spiffe_sequence".into(), json!(s));
        }
        if let Some(h) = self.refresh_hint {
            doc.insert("spiffe_refresh_hint".into(), json!(h.as_secs().max(1)));
        }
        Ok(Value::Object(doc).to_string())
    }

    /// Reads a foreign bundle for `trust_domain` (see the module header for what is checked).
    pub fn parse(document: &[u8], trust_domain: &TrustDomain) -> Result<SpiffeBundle, BundleError> {
        let malformed = |m: &str| BundleError::Malformed(m.to_owned());
        if document.len() > MAX_BUNDLE_BYTES {
            return Err(malformed("larger than 1 MiB"));
        }
        let doc: Value =
            serde_json::from_slice(document).map_err(|e| BundleError::Malformed(e.to_string()))?;
        let doc = doc
            .as_object()
            .ok_or_else(|| malformed("not a JSON object"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| malformed("no \"keys\" array"))?;
        let number = |name: &str| -> Result<Option<u64>, BundleError> {
            match doc.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                    BundleError::Malformed(format!("{name} is not a non-negative integer: {v}"))
                }),
            }
        };
        let sequence = number("spiffe_sequence")?;
        let refresh_hint = number("spiffe_refresh_hint")?.map(Duration::from_secs);
        let mut x509_authorities: Vec<Vec<u8>> = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            let Some(der) = x509_entry(key) else { continue };
            let der = STANDARD
                .decode(der)
                .map_err(|e| BundleError::BadAuthority {
                    index,
                    problem: format!("x5c[0] is not base64: {e}"),
                })?;
            check_authority(&der, trust_domain).map_err(|e| match e {
                Problem::Bad(problem) => BundleError::BadAuthority { index, problem },
                Problem::Domain(found) => BundleError::WrongTrustDomain {
                    index,
                    found,
                    expected: trust_domain.as_str().to_owned(),
                },
            })?;
            if !x509_authorities.contains(&der) {
                x509_authorities.push(der);
            }
        }
        if x509_authorities.is_empty() {
            return Err(BundleError::NoAuthorities(trust_domain.as_str().to_owned()));
        }
        Ok(SpiffeBundle {
            trust_domain: trust_domain.clone(),
            sequence,
            refresh_hint,
            x509_authorities,
        })
    }

    /// Whether this (freshly fetched) bundle may replace `last`: a sequence never goes back,
    /// and the authorities never change under the same sequence (§4.1.1: it "MUST be changed
    /// whenever the contents of the bundle are updated"). A bundle without a sequence is
    /// ordered by nothing and may replace any.
    pub fn may_replace(&self, last: &SpiffeBundle) -> Result<(), BundleError> {
        match (last.sequence, self.sequence) {
            (Some(last_seq), Some(got)) if got < last_seq => Err(BundleError::SequenceWentBack {
                last: last_seq,
                got,
            }),
            (Some(last_seq), Some(got))
                if got == last_seq && self.x509_authorities != last.x509_authorities =>
            {
                Err(BundleError::ChangedUnderSameSequence(got))
            }
            _ => Ok(()),
        }
    }

    /// The authorities as PEM, one `CERTIFICATE` block each: a ClusterTrustBundle's
    /// `trustBundle`.
    pub fn to_pem(&self) -> String {
        self.x509_authorities
            .iter()
            .map(|der| crate::x509::certificate_pem(der))
            .collect()
    }
}

/// The base64 certificate of an `x509-svid` entry whose key type we know; `None` for an
/// entry to ignore.
fn x509_entry(key: &Value) -> Option<&str> {
    let known_kty = matches!(
        key.get("kty").and_then(Value::as_str),
        Some("EC" | "RSA" | "OKP")
    );
    if key.get("use").and_then(Value::as_str) != Some("x509-svid") || !known_kty {
        return None;
    }
    key.get("x5c")?.as_array()?.first()?.as_str()
}

enum Problem {
    Bad(String),
    Domain(String),
}

/// A CA certificate whose SPIFFE names and URI name constraints, if any, are `trust_domain`'s.
fn check_authority(der: &[u8], trust_domain: &TrustDomain) -> Result<(), Problem> {
    let (rest, cert) = X509Certificate::from_der(der)
        .map_err(|e| Problem::Bad(format!("not an X.509 certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(Problem::Bad("trailing bytes after the certificate".into()));
    }
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(Problem::Bad(
            "not a CA certificate (basic constraints cA is not set): a bundle holds authorities only".into(),
        ));
    }
    if let Ok(Some(ku)) = cert.key_usage()
        && !ku.value.key_cert_sign()
    {
        return Err(Problem::Bad("a CA certificate without keyCertSign".into()));
    }
    let td = trust_domain.as_str();
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    if let GeneralName::URI(uri) = name
                        && let Some(rest) = uri.strip_prefix("spiffe://")
                    {
                        let host = rest.split('/').next().unwrap_or("");
                        if !host.eq_ignore_ascii_case(td) {
                            return Err(Problem::Domain(host.to_owned()));
                        }
                    }
                }
            }
            ParsedExtension::NameConstraints(nc) => {
                let uris: Vec<&str> = nc
                    .permitted_subtrees
                    .iter()
                    .flatten()
                    .filter_map(|s| match &s.base {
                        GeneralName::URI(u) => Some(*u),
                        _ => None,
                    })
                    .collect();
                if !uris.is_empty() && !uris.iter().any(|u| u.eq_ignore_ascii_case(td)) {
                    return Err(Problem::Domain(uris.join(", ")));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The JWK of a CA certificate (X509-SVID §6.1): its public key's parameters, `use`, `x5c`.
fn jwk(der: &[u8]) -> Result<Value, String> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let spki = cert.public_key();
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let mut key = match spki.parsed() {
        Ok(PublicKey::EC(point)) => {
            // An uncompressed point: 0x04, then x and y of the curve's size each.
            let (crv, size) = match point.data().len() {
                65 => ("P-256", 32),
                97 => ("P-384", 48),
                133 => ("P-521", 66),
                n => {
                    return Err(format!(
                        "an EC point of {n} bytes (P-256, P-384 or P-521 expected)"
                    ));
                }
            };
            let (x, y) = point
                .data()
                .strip_prefix(&[4])
                .and_then(|xy| xy.split_at_checked(size))
                .ok_or("a compressed EC point")?;
            json!({"kty": "EC", "crv": crv, "x": b64(x), "y": b64(y)})
        }
        Ok(PublicKey::RSA(rsa)) => json!({
            "kty": "RSA",
            "n": b64(strip_zeros(rsa.modulus)),
            "e": b64(strip_zeros(rsa.exponent)),
        }),
        _ if spki.algorithm.algorithm.to_id_string() == "1.3.101.112" => {
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&spki.subject_public_key.data)})
        }
        _ => return Err("a key type a JWK cannot describe here".into()),
    };
    if let Some(fields) = key.as_object_mut() {
        fields.insert("use".into(), json!("x509-svid"));
        fields.insert("x5c".into(), json!([STANDARD.encode(der)]));
    }
    Ok(key)
}

/// A big-endian unsigned integer without its leading zero bytes (RFC 7518 §6.3.1).
fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b
        .iter()
        .position(|&x| x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    b.get(first..).unwrap_or(b)
}
