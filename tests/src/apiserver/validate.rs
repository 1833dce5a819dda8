//! What the test API server refuses, rule by rule as kube-apiserver refuses it
//! (`docs/pcr-contract.md` §2, §4 and §6): each function names the upstream validation it
//! mirrors and reports each violation as a [`Cause`] with the field, the `field.ErrorType`
//! reason and the message the real server reports; any cause makes the write a 422 Invalid.
//! Upstream's own test cases check it (`tests/tests/upstream_conformance.rs`).

use std::str::FromStr;

use base64::Engine;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// One cause of a 422, as a `StatusCause`: the field, the `field.ErrorType` reason
/// (`FieldValueInvalid`, `FieldValueForbidden`, …) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub field: String,
    pub reason: &'static str,
    pub message: String,
}

impl Cause {
    pub fn new(reason: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Cause {
            field: field.into(),
            reason,
            message: message.into(),
        }
    }
}

/// `field.Invalid`.
pub fn cause(field: impl Into<String>, message: impl Into<String>) -> Cause {
    Cause::new("FieldValueInvalid", field, message)
}

const TERMINAL: [&str; 3] = ["Issued", "Denied", "Failed"];

fn is_valid_reason(r: &str) -> bool {
    let b = r.as_bytes();
    !b.is_empty()
        && b.len() <= 1024
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_,:".contains(c))
        && (b[b.len() - 1].is_ascii_alphanumeric() || b[b.len() - 1] == b'_')
}

fn timestamp(v: Option<&Value>) -> Option<Timestamp> {
    v.and_then(Value::as_str)
        .and_then(|s| Timestamp::from_str(s).ok())
}

fn b64(v: Option<&Value>) -> Option<Vec<u8>> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
}

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

pub fn is_terminal(status: &Value) -> bool {
    status
        .get("certificateChain")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty())
        || status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["status"] == "True" && TERMINAL.contains(&c["type"].as_str().unwrap_or("")))
}

/// Whether `status` is the stored PCR's status, as `equality.Semantic.DeepEqual` sees it
/// (an absent status and an empty one are the same).
pub fn same_status(old: &Value, status: &Value) -> bool {
    semantically_equal(old.get("status").unwrap_or(&Value::Null), status)
}

/// Semantic equality of two statuses as `apiequality.Semantic.DeepEqual` sees Go structs:
/// an absent field, `null`, `""`, `[]` and `{}` are all the zero value.
fn semantic(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), semantic(v)))
                .filter(|(_, v)| !is_zero(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(semantic).collect()),
        v => v.clone(),
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Bool(b) => !b,
    }
}

fn semantically_equal(a: &Value, b: &Value) -> bool {
    let zeroed = |v: &Value| {
        let v = semantic(v);
        if is_zero(&v) { Value::Null } else { v }
    };
    zeroed(a) == zeroed(b)
}

/// `metav1validation.ValidateConditions`: every Kubernetes condition's rules.
fn condition_causes(conditions: &[Value]) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut seen = Vec::new();
    for (i, c) in conditions.iter().enumerate() {
        let f = |name: &str| format!("status.conditions[{i}].{name}");
        let type_ = c["type"].as_str().unwrap_or("");
        if seen.contains(&type_) {
            causes.push(Cause::new(
                "FieldValueDuplicate",
                f("type"),
                format!("Duplicate value: {type_:?}"),
            ));
        }
        seen.push(type_);
        if !["True", "False", "Unknown"].contains(&c["status"].as_str().unwrap_or("")) {
            causes.push(Cause::new(
                "FieldValueNotSupported",
                f("status"),
                "supported values: \"False\", \"True\", \"Unknown\"",
            ));
        }
        if c["observedGeneration"].as_i64().is_some_and(|g| g < 0) {
            causes.push(cause(
                f("observedGeneration"),
                "must be greater than or equal to zero",
            ));
        }
        match timestamp(c.get("lastTransitionTime")) {
            Some(t) if t > Timestamp::UNIX_EPOCH => {}
            _ => causes.push(Cause::new(
                "FieldValueRequired",
                f("lastTransitionTime"),
                "must be set",
            )),
        }
        let reason = c["reason"].as_str().unwrap_or("");
        if reason.is_empty() {
            causes.push(Cause::new(
                "FieldValueRequired",
                f("reason"),
                "Required value",
            ));
        } else if !is_valid_reason(reason) {
            causes.push(cause(
                f("reason"),
                "a condition reason must start with alphabetic character, optionally followed by a string of alphanumeric characters or '_,:', and must end with an alphanumeric character or '_' (regex used for validation is '[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?')",
            ));
        }
        if c["message"].as_str().unwrap_or("").len() > 32 * 1024 {
            causes.push(Cause::new(
                "FieldValueTooLong",
                f("message"),
                "Too long: may not be more than 32768 bytes",
            ));
        }
    }
    causes
}

fn has_condition(status: &Value, type_: &str) -> bool {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == type_ && c["status"] == "True")
}

/// `ValidatePodCertificateRequestStatusUpdate`: may `old` (the stored PCR) take `new_status`
/// at `now`? The rules in upstream's order: the known condition types (at most one, status
/// True), every condition's own rules, a terminal status frozen, Denied/Failed carrying
/// nothing else, Issued carrying a consistent chain, and any other write leaving the status
/// exactly as it was.
pub fn pcr_status_update(old: &Value, new_status: &Value, now: Timestamp) -> Vec<Cause> {
    let mut causes = Vec::new();
    let old_status = old.get("status").cloned().unwrap_or(Value::Null);
    let conditions: &[Value] = new_status["conditions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut known = 0;
    for (i, c) in conditions.iter().enumerate() {
        // Upstream builds these paths with formatIndex(i) as a child name, so they read
        // "status.conditions.[0].type" — unlike metav1validation's "status.conditions[0]".
        let f = |name: &str| format!("status.conditions.[{i}].{name}");
        let type_ = c["type"].as_str().unwrap_or("");
        if TERMINAL.contains(&type_) {
            known += 1;
            if known > 1 {
                causes.push(cause(f("type"), "There may be at most one condition with type \"Issued\", \"Denied\", or \"Failed\""));
            }
            if c["status"] != "True" {
                causes.push(Cause::new(
                    "FieldValueNotSupported",
                    f("status"),
                    "supported values: \"True\"",
                ));
            }
        } else {
            causes.push(Cause::new(
                "FieldValueNotSupported",
                f("type"),
                "supported values: \"Issued\", \"Denied\", \"Failed\"",
            ));
        }
    }
    causes.extend(condition_causes(conditions));
    if !causes.is_empty() {
        return causes;
    }
    let terminal = |s: &Value| TERMINAL.iter().any(|t| has_condition(s, t));
    if terminal(&old_status) {
        if !semantically_equal(new_status, &old_status) {
            causes.push(cause(
                "status",
                "immutable after PodCertificateRequest is issued, denied, or failed",
            ));
        }
        return causes;
    }
    if has_condition(new_status, "Denied") || has_condition(new_status, "Failed") {
        let only_conditions = serde_json::json!({"conditions": new_status["conditions"]});
        if !semantically_equal(new_status, &only_conditions) {
            causes.push(cause(
                "status",
                "non-condition status fields must be empty when denying or failing the PodCertificateRequest",
            ));
        }
        return causes;
    }
    if has_condition(new_status, "Issued") {
        return issued(old, new_status, now);
    }
    if !semantically_equal(new_status, &old_status) {
        causes.push(cause(
            "status",
            "status is immutable unless transitioning to \"Issued\", \"Denied\", or \"Failed\"",
        ));
    }
    causes
}

/// The Issued branch of `ValidatePodCertificateRequestStatusUpdate`, in upstream's order and
/// with its early returns, so the first broken rule is the one reported.
fn issued(old: &Value, status: &Value, now: Timestamp) -> Vec<Cause> {
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

/// `ValidateClusterTrustBundleUpdate`: the bundle's own rules — its PEM parsed only if it
/// changed — and `spec.signerName` immutable.
pub fn cluster_trust_bundle_update(old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = cluster_trust_bundle(new);
    if new["spec"]["trustBundle"] == old["spec"]["trustBundle"] {
        causes.retain(|c| c.field != "spec.trustBundle");
    }
    if new["spec"]["signerName"] != old["spec"]["signerName"] {
        causes.push(cause("spec.signerName", "field is immutable"));
    }
    causes
}

/// `ValidateClusterTrustBundle`: the name (`ValidateClusterTrustBundleName`), the signer name
/// (`ValidateSignerName`) and the bundle (`validateTrustBundle`).
pub fn cluster_trust_bundle(obj: &Value) -> Vec<Cause> {
    use signer_core::names;
    let mut causes = Vec::new();
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    let signer = obj["spec"]["signerName"].as_str().unwrap_or("");
    causes.extend(
        names::cluster_trust_bundle_name_errors(signer, name)
            .into_iter()
            .map(|e| cause("metadata.name", e)),
    );
    if !signer.is_empty() {
        causes.extend(
            names::signer_name_errors(signer)
                .into_iter()
                .map(|e| cause("spec.signerName", e)),
        );
    }
    causes.extend(trust_bundle_causes(
        obj["spec"]["trustBundle"].as_str().unwrap_or(""),
    ));
    causes
}

/// `validateTrustBundle`: at most 1 MiB; every PEM block a CERTIFICATE without headers that
/// parses as a CA; no duplicates; at least one.
pub fn trust_bundle_causes(bundle: &str) -> Vec<Cause> {
    const FIELD: &str = "spec.trustBundle";
    if let Some(c) = too_long(FIELD, bundle.len(), 1024 * 1024) {
        return vec![c];
    }
    let mut causes = Vec::new();
    let mut seen: Vec<(Vec<u8>, Vec<usize>)> = Vec::new();
    for (i, block) in go_pem_blocks(bundle).into_iter().enumerate() {
        if block.kind != "CERTIFICATE" {
            causes.push(cause(
                FIELD,
                format!("entry {i} has bad block type: {}", block.kind),
            ));
            continue;
        }
        if block.has_headers {
            causes.push(cause(FIELD, format!("entry {i} has PEM block headers")));
            continue;
        }
        match X509Certificate::from_der(&block.bytes) {
            Err(_) => {
                causes.push(cause(FIELD, format!("entry {i} does not parse as X.509")));
                continue;
            }
            Ok((_, c)) if !c.is_ca() => {
                causes.push(cause(
                    FIELD,
                    format!("entry {i} does not have the CA bit set"),
                ));
                continue;
            }
            Ok(_) => {}
        }
        match seen.iter_mut().find(|(b, _)| *b == block.bytes) {
            Some((_, indices)) => indices.push(i),
            None => seen.push((block.bytes, vec![i])),
        }
    }
    if !causes.is_empty() {
        return causes;
    }
    if seen.is_empty() {
        causes.push(cause(FIELD, "at least one trust anchor must be provided"));
    }
    for (_, indices) in seen.iter().filter(|(_, i)| i.len() > 1) {
        let list: Vec<String> = indices.iter().map(usize::to_string).collect();
        causes.push(cause(
            FIELD,
            format!("duplicate trust anchor (indices [{}])", list.join(" ")),
        ));
    }
    causes
}

/// One PEM block as Go's `encoding/pem.Decode` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoPemBlock {
    pub kind: String,
    pub has_headers: bool,
    pub bytes: Vec<u8>,
}

/// The blocks Go's `encoding/pem` finds in `text`, in order: text between blocks is
/// skipped, `Key: Value` lines at the start of a block are headers, and spaces, tabs and
/// line breaks inside the base64 body are ignored. A block whose body is not base64 is
/// skipped, as Go skips it.
pub fn go_pem_blocks(text: &str) -> Vec<GoPemBlock> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(begin) = rest.find("-----BEGIN ") {
        let after = &rest[begin + "-----BEGIN ".len()..];
        let Some(type_end) = after.find("-----") else {
            break;
        };
        let kind = &after[..type_end];
        let body_start = &after[type_end + 5..];
        let end_marker = format!("-----END {kind}-----");
        let Some(end) = body_start.find(&end_marker) else {
            rest = body_start;
            continue;
        };
        let body = &body_start[..end];
        rest = &body_start[end + end_marker.len()..];
        let lines: Vec<&str> = body.lines().skip_while(|l| l.trim().is_empty()).collect();
        let headers = lines.iter().take_while(|l| l.contains(':')).count();
        let data: String = lines[headers..]
            .iter()
            .flat_map(|l| l.chars())
            .filter(|c| !c.is_whitespace())
            .collect();
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) {
            blocks.push(GoPemBlock {
                kind: kind.to_string(),
                has_headers: headers > 0,
                bytes,
            });
        }
    }
    blocks
}

/// What kind of key a SubjectPublicKeyInfo holds, as Go's `x509.ParsePKIXPublicKey` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PkixKey {
    Ed25519,
    Ecdsa(&'static str),
    Rsa(usize),
    Other,
}

fn pkix_key(spki_der: &[u8]) -> Option<PkixKey> {
    use x509_parser::x509::SubjectPublicKeyInfo;
    let (rest, spki) = SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let alg = spki.algorithm.algorithm.to_id_string();
    Some(match alg.as_str() {
        "1.3.101.112" => PkixKey::Ed25519,
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            PkixKey::Ecdsa(match curve.as_deref() {
                Some("1.3.132.0.33") => "P-224",
                Some("1.2.840.10045.3.1.7") => "P-256",
                Some("1.3.132.0.34") => "P-384",
                Some("1.3.132.0.35") => "P-521",
                _ => return None,
            })
        }
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => {
                let m = rsa.modulus;
                let m = &m[m.iter().take_while(|b| **b == 0).count()..];
                PkixKey::Rsa(m.len() * 8 - m.first().map_or(8, |b| b.leading_zeros() as usize))
            }
            _ => return None,
        },
        _ => PkixKey::Other,
    })
}

/// The key-type rules of `ValidatePodCertificateRequestCreate`, with its messages: only
/// Ed25519, ECDSA P-256/P-384/P-521 and RSA-3072/4096 keys.
fn key_type_causes(field: &str, spki_der: &[u8]) -> Vec<Cause> {
    match pkix_key(spki_der) {
        None => vec![cause(field, "must be a valid PKIX-serialized public key")],
        Some(PkixKey::Ecdsa(curve)) if !["P-256", "P-384", "P-521"].contains(&curve) => {
            vec![cause(
                field,
                format!("curve {curve}: elliptic public keys must use curve P256 or P384"),
            )]
        }
        Some(PkixKey::Rsa(bits)) if bits != 3072 && bits != 4096 => vec![cause(
            field,
            format!("{bits}-bit modulus: RSA keys must have modulus size 3072 or 4096"),
        )],
        Some(PkixKey::Other) => vec![cause(
            field,
            "unknown public key type; supported types are Ed25519, ECDSA, and RSA",
        )],
        Some(_) => Vec::new(),
    }
}

/// The signature scheme Go would verify `oid` with, for a key of `key`'s type.
fn csr_scheme(oid: &str) -> Option<signer_core::signature::SignatureScheme> {
    use signer_core::signature::{Digest, SignatureScheme as S};
    Some(match oid {
        "1.3.101.112" => S::Ed25519,
        "1.2.840.10045.4.3.2" => S::Ecdsa(Digest::Sha256),
        "1.2.840.10045.4.3.3" => S::Ecdsa(Digest::Sha384),
        "1.2.840.10045.4.3.4" => S::Ecdsa(Digest::Sha512),
        "1.2.840.113549.1.1.11" => S::RsaPkcs1(Digest::Sha256),
        "1.2.840.113549.1.1.12" => S::RsaPkcs1(Digest::Sha384),
        "1.2.840.113549.1.1.13" => S::RsaPkcs1(Digest::Sha512),
        _ => return None,
    })
}

fn too_long(field: &str, len: usize, max: usize) -> Option<Cause> {
    (len > max).then(|| {
        Cause::new(
            "FieldValueTooLong",
            field,
            format!("Too long: may not be more than {max} bytes"),
        )
    })
}

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
