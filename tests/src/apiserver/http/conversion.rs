//! An object as served in the version asked for: apiVersion and kind set, and a
//! PodCertificateRequest converted between v1alpha1, v1beta1 and v1.

use serde_json::Value;

use super::super::{ResourceType, Shared};

impl Shared {
    /// The object as served in `version`: apiVersion and kind set, PCR fields converted.
    pub(super) fn present(&self, rt: &ResourceType, version: &str, obj: &Value) -> Value {
        let mut obj = obj.clone();
        obj["apiVersion"] = Value::String(rt.api_version(version));
        obj["kind"] = Value::String(rt.kind.to_string());
        if rt.plural == "podcertificaterequests" {
            convert_pcr(&mut obj, version);
        }
        obj
    }
}

/// Version conversion of a stored PCR, as upstream's generated conversion does it: v1 has no
/// `pkixPublicKey`/`proofOfPossession` ("does not exist in peer-type": dropped, carried by no
/// annotation); v1alpha1 has no stub CSR and no user annotations.
fn convert_pcr(obj: &mut Value, version: &str) {
    let Some(spec) = obj["spec"].as_object_mut() else {
        return;
    };
    match version {
        "v1" => {
            spec.remove("pkixPublicKey");
            spec.remove("proofOfPossession");
        }
        "v1alpha1" => {
            spec.remove("stubPKCS10Request");
            spec.remove("unverifiedUserAnnotations");
        }
        _ => {}
    }
}
