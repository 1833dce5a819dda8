//! `ValidatePodCertificateRequestStatusUpdate`: a status moves once, from pending to one
//! terminal condition (Issued, Denied or Failed) with a well-formed reason, and is immutable
//! after; equality as `apiequality.Semantic.DeepEqual` sees it.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::issued::issued;
use super::{Cause, cause, timestamp};

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
