//! ClusterTrustBundle writes, as `ValidateClusterTrustBundle(Update)` checks them, and PEM
//! read the way Go's `encoding/pem` reads it (what kube-apiserver accepts as a bundle).

use base64::Engine;
use serde_json::Value;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::{Cause, cause, too_long};

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
