//! What the test API server refuses, rule by rule as `../shared/SPEC.md` §4 and §6 state
//! kube-apiserver refuses it: each violation is a [`Cause`] with the field path the real
//! server reports, and any cause makes the write a 422 Invalid.

use std::str::FromStr;

use base64::Engine;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub field: String,
    pub message: String,
}

fn cause(field: impl Into<String>, message: impl Into<String>) -> Cause {
    Cause {
        field: field.into(),
        message: message.into(),
    }
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

/// SPEC §4: may `old` (the stored PCR) take `new_status`, written at `now`?
pub fn pcr_status_update(old: &Value, new_status: &Value, now: Timestamp) -> Vec<Cause> {
    let mut causes = Vec::new();
    let old_status = old.get("status").cloned().unwrap_or(Value::Null);
    if is_terminal(&old_status) {
        if *new_status != old_status {
            causes.push(cause(
                "status",
                "the status may not change once Issued, Denied or Failed is set",
            ));
        }
        return causes;
    }

    let conditions: &[Value] = new_status["conditions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut terminal = Vec::new();
    for (i, c) in conditions.iter().enumerate() {
        let f = |name: &str| format!("status.conditions[{i}].{name}");
        let type_ = c["type"].as_str().unwrap_or("");
        if !TERMINAL.contains(&type_) {
            causes.push(cause(
                f("type"),
                format!("unsupported condition type {type_:?}: only Issued, Denied and Failed"),
            ));
        } else {
            terminal.push(type_);
        }
        if c["status"] != "True" {
            causes.push(cause(f("status"), "must be \"True\""));
        }
        if !is_valid_reason(c["reason"].as_str().unwrap_or("")) {
            causes.push(cause(
                f("reason"),
                "must match ^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$ and be at most 1024 bytes",
            ));
        }
        match timestamp(c.get("lastTransitionTime")) {
            Some(t) if t > Timestamp::UNIX_EPOCH => {}
            _ => causes.push(cause(f("lastTransitionTime"), "must be set")),
        }
        if c["message"].as_str().unwrap_or("").len() > 32 * 1024 {
            causes.push(cause(f("message"), "must be at most 32768 bytes"));
        }
    }
    if terminal.len() > 1 {
        causes.push(cause(
            "status.conditions",
            "at most one of Issued, Denied and Failed may be set",
        ));
    }

    let fields = [
        "certificateChain",
        "notBefore",
        "notAfter",
        "beginRefreshAt",
    ];
    let set = |k: &str| {
        new_status
            .get(k)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    match terminal.first().copied() {
        Some("Denied" | "Failed") => {
            for k in fields.into_iter().filter(|k| set(k)) {
                causes.push(cause(
                    format!("status.{k}"),
                    "must be empty with a Denied or Failed condition",
                ));
            }
        }
        Some("Issued") => causes.extend(issued(old, new_status, now)),
        _ => {
            for k in fields.into_iter().filter(|k| set(k)) {
                causes.push(cause(
                    format!("status.{k}"),
                    "may only be set together with an Issued condition",
                ));
            }
        }
    }
    causes
}

fn issued(old: &Value, status: &Value, now: Timestamp) -> Vec<Cause> {
    let mut causes = Vec::new();
    let chain = status["certificateChain"].as_str().unwrap_or("");
    if chain.is_empty() {
        return vec![cause(
            "status.certificateChain",
            "is required with an Issued condition",
        )];
    }
    if chain.len() > 100 * 1024 {
        causes.push(cause("status.certificateChain", "must be at most 100 KiB"));
    }
    let blocks = match pem::parse_many(chain) {
        Ok(b) if !b.is_empty() => b,
        _ => {
            return vec![cause(
                "status.certificateChain",
                "must hold one or more PEM blocks",
            )];
        }
    };
    if blocks
        .iter()
        .any(|b| b.tag() != "CERTIFICATE" || b.headers().iter().next().is_some())
    {
        causes.push(cause(
            "status.certificateChain",
            "must hold only CERTIFICATE PEM blocks without headers",
        ));
    }
    let Ok((_, leaf)) = X509Certificate::from_der(blocks[0].contents()) else {
        return vec![cause(
            "status.certificateChain",
            "the first block is not a certificate",
        )];
    };
    for (i, b) in blocks.iter().enumerate().skip(1) {
        if X509Certificate::from_der(b.contents()).is_err() {
            causes.push(cause(
                "status.certificateChain",
                format!("block {i} is not a certificate"),
            ));
        }
    }
    if Some(leaf.public_key().raw.to_vec()) != requested_spki(&old["spec"]) {
        causes.push(cause(
            "status.certificateChain",
            "the leaf's public key does not match the requested key",
        ));
    }
    let leaf_nb = leaf.validity().not_before.timestamp();
    let leaf_na = leaf.validity().not_after.timestamp();
    let (nb, na, refresh) = (
        timestamp(status.get("notBefore")),
        timestamp(status.get("notAfter")),
        timestamp(status.get("beginRefreshAt")),
    );
    match nb {
        Some(t) if t.as_second() == leaf_nb && t.subsec_nanosecond() == 0 => {
            if (t.as_second() - now.as_second()).abs() > 300 {
                causes.push(cause(
                    "status.notBefore",
                    "must be within 5 minutes of the API server's clock",
                ));
            }
        }
        _ => causes.push(cause(
            "status.notBefore",
            "must equal the leaf certificate's notBefore",
        )),
    }
    if !matches!(na, Some(t) if t.as_second() == leaf_na && t.subsec_nanosecond() == 0) {
        causes.push(cause(
            "status.notAfter",
            "must equal the leaf certificate's notAfter",
        ));
    }
    let lifetime = leaf_na - leaf_nb;
    let max = old["spec"]["maxExpirationSeconds"]
        .as_i64()
        .unwrap_or(86_400);
    if lifetime < 3600 || lifetime > max {
        causes.push(cause(
            "status.notAfter",
            format!("the lifetime {lifetime}s must be in [3600, {max}]"),
        ));
    }
    match refresh {
        Some(t) if t.as_second() >= leaf_nb + 600 && t.as_second() <= leaf_na - 600 => {}
        _ => causes.push(cause(
            "status.beginRefreshAt",
            "must be between notBefore + 10m and notAfter - 10m",
        )),
    }
    for ext in leaf.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::DNSName(d) = name
                    && (d.is_empty() || d.contains("..") || d.starts_with('.') || d.ends_with('.'))
                {
                    causes.push(cause(
                        "status.certificateChain",
                        format!("invalid DNS SAN {d:?}"),
                    ));
                }
            }
        }
    }
    causes
}

/// SPEC §6: a ClusterTrustBundle's name and contents.
pub fn cluster_trust_bundle(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    match obj["spec"]["signerName"].as_str().filter(|s| !s.is_empty()) {
        Some(signer) => {
            let prefix = format!("{}:", signer.replace('/', ":"));
            if !name.starts_with(&prefix) || name.len() == prefix.len() {
                causes.push(cause(
                    "metadata.name",
                    format!("must be {prefix}<suffix> for signer {signer}"),
                ));
            }
        }
        None if name.contains(':') => causes.push(cause(
            "metadata.name",
            "may contain ':' only with spec.signerName",
        )),
        None => {}
    }
    let bundle = obj["spec"]["trustBundle"].as_str().unwrap_or("");
    if bundle.len() > 1024 * 1024 {
        causes.push(cause("spec.trustBundle", "must be at most 1 MiB"));
    }
    let blocks = match pem::parse_many(bundle) {
        Ok(b) if !b.is_empty() => b,
        _ => {
            return [
                causes,
                vec![cause(
                    "spec.trustBundle",
                    "must hold at least one PEM certificate",
                )],
            ]
            .concat();
        }
    };
    let mut seen = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        if b.tag() != "CERTIFICATE" || b.headers().iter().next().is_some() {
            causes.push(cause(
                "spec.trustBundle",
                format!("block {i} is not a CERTIFICATE block without headers"),
            ));
            continue;
        }
        match X509Certificate::from_der(b.contents()) {
            Ok((_, c)) if c.is_ca() => {}
            Ok(_) => causes.push(cause(
                "spec.trustBundle",
                format!("certificate {i} is not a CA"),
            )),
            Err(_) => causes.push(cause(
                "spec.trustBundle",
                format!("block {i} does not parse"),
            )),
        }
        if seen.contains(&b.contents()) {
            causes.push(cause(
                "spec.trustBundle",
                format!("certificate {i} is a duplicate"),
            ));
        }
        seen.push(b.contents());
    }
    causes
}
