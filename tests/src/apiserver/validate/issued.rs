//! The Issued branch of the status update: the chain's PEM, the leaf certifying exactly the
//! requested key, its validity against `maxExpirationSeconds` and the request's times.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::{Cause, b64, cause, timestamp, too_long};

/// Algorithm OID, curve OID, key bits (RSA: modulus), RSA exponent.
type ParsedKey = (String, Option<String>, Vec<u8>, Vec<u8>);

/// A public key as Go's `PublicKey.Equal` compares it: the algorithm, the curve, and the key
/// itself (RSA modulus and exponent without leading zeros), not the encoding around them.
fn parsed_key(spki_der: &[u8]) -> Option<ParsedKey> {
    use x509_parser::public_key::PublicKey;
    let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    let alg = spki.algorithm.algorithm.to_id_string();
    let params = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let trim = |b: &[u8]| b[b.iter().take_while(|x| **x == 0).count()..].to_vec();
    Some(match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => (alg, None, trim(rsa.modulus), trim(rsa.exponent)),
        _ => (
            alg,
            params,
            spki.subject_public_key.data.to_vec(),
            Vec::new(),
        ),
    })
}

/// Go's `mail.ParseAddress` on a bare address: a local part, `@`, a domain, no spaces.
fn is_mail_address(e: &str) -> bool {
    match e.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !e.chars().any(|c| c.is_whitespace() || c == '<' || c == '>')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }
        None => false,
    }
}

/// The SubjectPublicKeyInfo DER the request asks for (pkix field or the stub CSR's key).
pub fn requested_spki(spec: &Value) -> Option<Vec<u8>> {
    if let Some(spki) = b64(spec.get("pkixPublicKey")) {
        return Some(spki);
    }
    let csr = b64(spec.get("stubPKCS10Request"))?;
    let (_, req) = X509CertificationRequest::from_der(&csr).ok()?;
    Some(req.certification_request_info.subject_pki.raw.to_vec())
}

/// The Issued branch of `ValidatePodCertificateRequestStatusUpdate`, in upstream's order and
/// with its early returns, so the first broken rule is the one reported.
pub(super) fn issued(old: &Value, status: &Value, now: Timestamp) -> Vec<Cause> {
    const CHAIN: &str = "status.certificateChain";
    let chain = status["certificateChain"].as_str().unwrap_or("");
    if let Some(c) = too_long(CHAIN, chain.len(), 100 * 1024) {
        return vec![c];
    }
    let blocks = pem::parse_many(chain).unwrap_or_default();
    let Some(first) = blocks.first() else {
        return vec![cause(
            CHAIN,
            "issued certificate chain must contain at least one certificate",
        )];
    };
    if first.tag() != "CERTIFICATE" {
        return vec![cause(
            CHAIN,
            "issued certificate chain must consist entirely of CERTIFICATE PEM blocks",
        )];
    }
    let Ok((_, leaf)) = X509Certificate::from_der(first.contents()) else {
        return vec![cause(
            CHAIN,
            "leaf certificate does not parse as valid X.509",
        )];
    };
    let mut causes = Vec::new();
    for ext in leaf.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d)
                        if d.is_empty()
                            || d.contains("..")
                            || d.starts_with('.')
                            || d.ends_with('.') =>
                    {
                        causes.push(cause(
                            CHAIN,
                            format!("leaf certificate's DNSName {d:?} is not valid"),
                        ));
                    }
                    GeneralName::RFC822Name(e) if !is_mail_address(e) => {
                        causes.push(cause(
                            CHAIN,
                            "leaf certificate should not contain invalid EmailAddress",
                        ));
                    }
                    _ => {}
                }
            }
        }
    }
    if requested_spki(&old["spec"]).and_then(|k| parsed_key(&k))
        != parsed_key(leaf.public_key().raw)
    {
        causes.push(cause(
            CHAIN,
            "leaf certificate was not issued to the requested public key",
        ));
        return causes;
    }
    let (nb, na, refresh) = (
        timestamp(status.get("notBefore")),
        timestamp(status.get("notAfter")),
        timestamp(status.get("beginRefreshAt")),
    );
    for (value, field, detail) in [
        (
            nb,
            "notBefore",
            "must be present and consistent with the issued certificate",
        ),
        (
            na,
            "notAfter",
            "must be present and consistent with the issued certificate",
        ),
        (
            refresh,
            "beginRefreshAt",
            "must be present and in the range [notbefore+10min, notafter-10min]",
        ),
    ] {
        if value.is_none() {
            causes.push(Cause::new(
                "FieldValueRequired",
                format!("status.{field}"),
                format!("Required value: {detail}"),
            ));
        }
    }
    let (Some(nb), Some(na), Some(refresh)) = (nb, na, refresh) else {
        return causes;
    };
    if !causes.is_empty() {
        return causes;
    }
    let leaf_nb = leaf.validity().not_before.timestamp();
    let leaf_na = leaf.validity().not_after.timestamp();
    let exact = |t: Timestamp, want: i64| t.as_second() == want && t.subsec_nanosecond() == 0;
    if !exact(nb, leaf_nb) {
        return vec![cause(
            "status.notBefore",
            "must be set to the NotBefore time encoded in the leaf certificate",
        )];
    }
    // timeNear: strictly within 5 minutes either way.
    if (nb.as_second() - now.as_second()).abs() >= 300 {
        return vec![cause(
            "status.notBefore",
            "must be set to within 5 minutes of kube-apiserver's current time",
        )];
    }
    if !exact(na, leaf_na) {
        return vec![cause(
            "status.notAfter",
            "must be set to the NotAfter time encoded in the leaf certificate",
        )];
    }
    let lifetime = leaf_na - leaf_nb;
    let max = old["spec"]["maxExpirationSeconds"]
        .as_i64()
        .unwrap_or(86_400);
    if lifetime < 3600 {
        return vec![cause(CHAIN, "leaf certificate lifetime must be >= 1 hour")];
    }
    if lifetime > max {
        return vec![cause(
            CHAIN,
            format!("leaf certificate lifetime must be <= spec.maxExpirationSeconds ({max})"),
        )];
    }
    if refresh.as_second() < nb.as_second() + 600 {
        return vec![cause(
            "status.beginRefreshAt",
            "must be at least 10 minutes after status.notBefore",
        )];
    }
    if refresh.as_second() > na.as_second() - 600 {
        return vec![cause(
            "status.beginRefreshAt",
            "must be at least 10 minutes before status.notAfter",
        )];
    }
    for b in &blocks[1..] {
        if b.tag() != "CERTIFICATE" {
            return vec![cause(
                CHAIN,
                "issued certificate chain must consist entirely of CERTFICATE PEM blocks",
            )];
        }
        if X509Certificate::from_der(b.contents()).is_err() {
            return vec![cause(
                CHAIN,
                "intermediate certificate does not parse as valid X.509",
            )];
        }
    }
    Vec::new()
}
