//! What the test API server refuses, rule by rule as kube-apiserver refuses it
//! (`docs/pcr-contract.md` §2, §4 and §6): each function names the upstream validation it
//! mirrors and reports each violation as a [`Cause`] with the field, the `field.ErrorType`
//! reason and the message the real server reports; any cause makes the write a 422 Invalid.
//! Upstream's own test cases check it (`tests/tests/upstream_conformance.rs`).//!
//! By resource and write: `create` (a new PodCertificateRequest), `status` (its status update
//! and the terminal conditions), `issued` (the chain an Issued status carries), `trust_bundle`
//! (ClusterTrustBundle writes and Go's PEM reading) and `keys` (what key types the API admits).

mod create;
mod issued;
mod keys;
mod status;
mod trust_bundle;

use std::str::FromStr;

use base64::Engine;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

pub use create::pcr_create;
pub use status::{is_terminal, pcr_status_update, same_status};
pub use trust_bundle::{
    GoPemBlock, cluster_trust_bundle, cluster_trust_bundle_update, go_pem_blocks,
    trust_bundle_causes,
};

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

fn timestamp(v: Option<&Value>) -> Option<Timestamp> {
    v.and_then(Value::as_str)
        .and_then(|s| Timestamp::from_str(s).ok())
}

fn b64(v: Option<&Value>) -> Option<Vec<u8>> {
    v.and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
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
