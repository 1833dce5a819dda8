//! The self-check: every leaf is verified after signing and before it leaves the signer, so a
//! bug in issuance (a wrong key, name, usage or time; a signature that does not verify) can
//! never reach a pod.
//!
//! [`leaf`] reads the signed DER back with x509-parser — a different code path from rcgen,
//! which wrote it — and holds it to what [`crate::signer`] decided ([`Expected`]): it is signed
//! by the signing CA's key and names that CA as issuer (the CA's own path up to the root it
//! publishes was checked when the CA was loaded or made, [`crate::Ca`]); it certifies exactly
//! the requested key; it carries exactly the decided SANs, in order, the decided keyUsage and
//! extendedKeyUsage and `CA:FALSE`; and its validity is the decided one, inside the signing
//! CA's. A failure is an [`crate::IssueError::SelfCheck`]: never written, retried by the
//! controller, counted and logged with the request's name.

use std::net::IpAddr;

use rcgen::SanType;
use x509_parser::prelude::*;

use crate::policy::Validity;
use crate::usage::Usage;

/// What the signer decided a leaf must be.
#[derive(Debug)]
pub(crate) struct Expected<'a> {
    /// The requested SubjectPublicKeyInfo, DER.
    pub spki_der: &'a [u8],
    /// The SANs in order: the one URI, then DNS names and IPs.
    pub sans: &'a [SanType],
    pub validity: Validity,
    pub usage: Usage,
    pub rsa: bool,
}

/// What the leaf must be signed by: the signing CA's key, subject and validity.
#[derive(Debug, Clone)]
pub(crate) struct SigningCert {
    /// Its SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    /// Its subject Name, DER.
    pub subject_der: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
}

impl SigningCert {
    pub(crate) fn of(cert: &X509Certificate<'_>) -> Self {
        let validity = cert.validity();
        SigningCert {
            spki_der: cert.public_key().raw.to_vec(),
            subject_der: cert.subject().as_raw().to_vec(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        }
    }
}

/// Checks the leaf `der` against `expected`, signed by `ca`; Err says the first difference.
pub(crate) fn leaf(der: &[u8], ca: &SigningCert, expected: &Expected<'_>) -> Result<(), String> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("the leaf does not parse ({e})"))?;
    if !rest.is_empty() {
        return Err("the leaf has bytes after its DER".into());
    }
    let (_, ca_key) = SubjectPublicKeyInfo::from_der(&ca.spki_der)
        .map_err(|e| format!("the signing CA's key does not parse ({e})"))?;
    cert.verify_signature(Some(&ca_key)).map_err(|e| {
        format!("the leaf's signature does not verify under the signing CA's key ({e})")
    })?;
    if cert.issuer().as_raw() != ca.subject_der.as_slice() {
        return Err("the leaf's issuer is not the signing CA's subject".into());
    }
    if cert.public_key().raw != expected.spki_der {
        return Err("the leaf does not certify the requested key".into());
    }
    let validity = cert.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if (not_before, not_after) != (expected.validity.not_before, expected.validity.not_after) {
        return Err(format!(
            "the leaf is valid {not_before}..{not_after}, not the decided {}..{}",
            expected.validity.not_before, expected.validity.not_after
        ));
    }
    if not_before < ca.not_before || not_after > ca.not_after {
        return Err("the leaf's validity is not inside the signing CA's".into());
    }
    let mut sans = None;
    let (mut ku, mut eku, mut bc) = (None, None, None);
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(s) => sans = Some(&s.general_names),
            ParsedExtension::KeyUsage(k) => ku = Some(k),
            ParsedExtension::ExtendedKeyUsage(e) => eku = Some(e),
            ParsedExtension::BasicConstraints(b) => bc = Some(b),
            _ => {}
        }
    }
    if bc.is_none_or(|b| b.ca) {
        return Err("the leaf is not marked CA:FALSE".into());
    }
    let ku = ku.ok_or("the leaf has no keyUsage")?;
    let wants_encipherment = expected.rsa && expected.usage.serves();
    if !ku.digital_signature()
        || ku.key_encipherment() != wants_encipherment
        || ku.flags & !(KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT) != 0
    {
        return Err(format!("the leaf's keyUsage is {ku}, not the decided one"));
    }
    let eku = eku.ok_or("the leaf has no extendedKeyUsage")?;
    if eku.server_auth != expected.usage.serves()
        || eku.client_auth != expected.usage.calls()
        || eku.any
        || eku.code_signing
        || eku.email_protection
        || eku.time_stamping
        || eku.ocsp_signing
        || !eku.other.is_empty()
    {
        return Err(format!(
            "the leaf's extendedKeyUsage is not the decided {}",
            expected.usage
        ));
    }
    let sans = sans.ok_or("the leaf has no subjectAltName")?;
    let same = sans.len() == expected.sans.len()
        && sans
            .iter()
            .zip(expected.sans)
            .all(|(got, want)| same_name(got, want));
    if !same {
        return Err("the leaf's subjectAltName is not the decided one".into());
    }
    Ok(())
}

/// keyUsage bits as x509-parser numbers them (bit 0 is digitalSignature).
const KU_DIGITAL_SIGNATURE: u16 = 1;
const KU_KEY_ENCIPHERMENT: u16 = 1 << 2;

fn same_name(got: &GeneralName<'_>, want: &SanType) -> bool {
    match (got, want) {
        (GeneralName::URI(g), SanType::URI(w)) => *g == w.as_str(),
        (GeneralName::DNSName(g), SanType::DnsName(w)) => *g == w.as_str(),
        (GeneralName::IPAddress(g), SanType::IpAddress(w)) => match w {
            IpAddr::V4(v4) => *g == v4.octets().as_slice(),
            IpAddr::V6(v6) => *g == v6.octets().as_slice(),
        },
        _ => false,
    }
}
