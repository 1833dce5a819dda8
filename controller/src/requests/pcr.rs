//! PodCertificateRequests in whichever version the cluster serves, and their status.
//!
//! k8s-openapi's `v1beta1` spec is a superset of every version's (contract §1): `pkixPublicKey`
//! and `proofOfPossession` optional (v1alpha1, 1.35-style v1beta1), `stubPKCS10Request`
//! defaulted (1.36-style v1beta1, v1). So one [`Pcr`] type reads all of them, and one code path
//! writes status; its kube `DynamicType` is the [`PcrVersion`] served, one byte, so every key of
//! kube-runtime's cache, queue and scheduler (an `ObjectRef<Pcr>`, one per waiting request) is
//! only its name and namespace (a `kube::core::Object` would carry five strings of
//! `ApiResource` in each: issue 32's storm memory). [`crate::cluster`] finds the version
//! served; [`to_request`] turns an object into signer-core's [`Request`]; [`status_for`] turns a
//! [`Decision`] into the status the API server accepts.
//!
//! Upstream conversion to `v1` simply drops `pkixPublicKey` and `proofOfPossession` (there is
//! no annotation that carries them), so a request a 1.35 kubelet filed reads through `v1`
//! with no key material at all. That is not the requester's fault: [`Unreadable::KeyMaterialNotServed`]
//! leaves it pending (never denied) and says to serve `v1beta1`.

use std::borrow::Cow;

use k8s_openapi::api::certificates::v1beta1::{
    PodCertificateRequestSpec, PodCertificateRequestStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use signer_core::time::unix_seconds;
use signer_core::{Decision, Denial, KeyMaterial, Request};

pub const GROUP: &str = "certificates.k8s.io";
const KIND: &str = "PodCertificateRequest";

/// A version of the PodCertificateRequest API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PcrVersion {
    V1alpha1,
    V1beta1,
    V1,
}

impl PcrVersion {
    /// The versions the signer reads, best first: v1beta1 reads both the 1.35 (pkix + proof)
    /// and 1.36 (stub CSR) formats; v1 reads only the stub CSR (1.35 requests lose their key
    /// material in conversion); v1alpha1 is the 1.34 alpha.
    pub const PREFERENCE: [PcrVersion; 3] = [Self::V1beta1, Self::V1, Self::V1alpha1];

    /// The version's name, as in `apiVersion` after the group.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V1alpha1 => "v1alpha1",
            Self::V1beta1 => "v1beta1",
            Self::V1 => "v1",
        }
    }

    /// `certificates.k8s.io/<version>`, spelled out so each status write names it without
    /// building a string (kube's default would); a test checks it against kube's derivation.
    pub const fn api_version(self) -> &'static str {
        match self {
            Self::V1alpha1 => "certificates.k8s.io/v1alpha1",
            Self::V1beta1 => "certificates.k8s.io/v1beta1",
            Self::V1 => "certificates.k8s.io/v1",
        }
    }

    /// The version named `name`, if the signer reads it.
    pub fn named(name: &str) -> Option<Self> {
        Self::PREFERENCE.into_iter().find(|v| v.as_str() == name)
    }
}

/// A PodCertificateRequest of any served version: what the signer reads of one. Read-only
/// (no `Serialize`): the status write builds its own body ([`crate::requests::reconcile`]).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Pcr {
    pub metadata: ObjectMeta,
    pub spec: PodCertificateRequestSpec,
    #[serde(default)]
    pub status: Option<PodCertificateRequestStatus>,
}

impl kube::Resource for Pcr {
    type DynamicType = PcrVersion;
    /// Namespaced; kube's `Api::namespaced_with` asks for the scope of runtime-typed kinds.
    type Scope = kube::core::DynamicResourceScope;

    fn kind(_: &PcrVersion) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &PcrVersion) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(version: &PcrVersion) -> Cow<'_, str> {
        version.as_str().into()
    }
    fn api_version(version: &PcrVersion) -> Cow<'_, str> {
        version.api_version().into()
    }
    fn plural(_: &PcrVersion) -> Cow<'_, str> {
        "podcertificaterequests".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Whether the request already has a terminal status (a chain, or Issued/Denied/Failed):
/// the API server freezes such a status, so we never touch it again.
pub fn is_terminal(pcr: &Pcr) -> bool {
    pcr.status
        .as_ref()
        .and_then(|s| s.certificate_chain.as_deref())
        .is_some_and(|c| !c.is_empty())
        || terminal_condition(pcr).is_some()
}

/// The request's terminal condition (Issued, Denied or Failed, status True), if it has one.
pub fn terminal_condition(pcr: &Pcr) -> Option<&Condition> {
    pcr.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.status == "True" && matches!(c.type_.as_str(), "Issued" | "Denied" | "Failed"))
}

/// Why a request cannot become a signer-core [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// The request itself is malformed: deny it.
    Deny(Denial),
    /// Read through `v1`, which does not carry a 1.35 kubelet's pkix key and proof: not the
    /// requester's fault, so it stays pending until read through a version that has them.
    KeyMaterialNotServed,
}

/// Converts a request read through `served_version` into signer-core's model.
pub fn to_request(pcr: &Pcr, served_version: PcrVersion) -> Result<Request, Unreadable> {
    let spec = &pcr.spec;
    let pkix = spec.pkix_public_key.as_ref().map(|b| b.0.as_slice());
    let proof = spec.proof_of_possession.as_ref().map(|b| b.0.as_slice());
    let stub = spec.stub_pkc_s10_request.0.as_slice();
    let none = |f: Option<&[u8]>| f.is_none_or(<[u8]>::is_empty);
    if served_version == PcrVersion::V1 && none(pkix) && none(proof) && stub.is_empty() {
        return Err(Unreadable::KeyMaterialNotServed);
    }
    let key_material =
        KeyMaterial::from_fields(pkix, proof, Some(stub)).map_err(Unreadable::Deny)?;
    Ok(Request {
        namespace: pcr.metadata.namespace.clone().unwrap_or_default(),
        pod_uid: spec.pod_uid.clone(),
        service_account_name: spec.service_account_name.clone(),
        max_expiration_seconds: spec.max_expiration_seconds.map(i64::from).unwrap_or(86_400),
        unverified_user_annotations: spec.unverified_user_annotations.clone().unwrap_or_default(),
        key_material,
    })
}

fn time(t: std::time::SystemTime) -> Time {
    Time(Timestamp::from_second(unix_seconds(t)).expect("issued times are in range"))
}

/// The status for `decision`, with a condition timestamped `now` (contract §4: one condition,
/// status True, a valid reason, a non-zero lastTransitionTime; Denied carries nothing else).
pub fn status_for(
    decision: &Decision,
    pcr: &Pcr,
    now: std::time::SystemTime,
) -> PodCertificateRequestStatus {
    let condition = |type_: &str, reason: &str, message: String| Condition {
        type_: type_.into(),
        status: "True".into(),
        reason: reason.into(),
        message,
        last_transition_time: time(now),
        // The API server refuses a negative observedGeneration; a generation it set itself is
        // never negative, but the status must not depend on that.
        observed_generation: pcr.metadata.generation.filter(|g| *g >= 0),
    };
    match decision {
        Decision::Issue(i) => PodCertificateRequestStatus {
            certificate_chain: Some(i.chain_pem.clone()),
            not_before: Some(time(i.not_before)),
            not_after: Some(time(i.not_after)),
            begin_refresh_at: Some(time(i.begin_refresh_at)),
            conditions: Some(vec![condition(
                "Issued",
                "Issued",
                format!(
                    "issued {} for a {} key, serial {}",
                    i.spiffe_id, i.key_type, i.serial_hex
                ),
            )]),
        },
        Decision::Deny(d) => PodCertificateRequestStatus {
            conditions: Some(vec![condition(
                "Denied",
                d.reason.as_str(),
                d.message.clone(),
            )]),
            ..Default::default()
        },
    }
}

/// Helpers for other modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    /// A waiting v1beta1 request named `name`, with a stub CSR.
    pub fn pcr(name: &str) -> super::Pcr {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "certificates.k8s.io/v1beta1", "kind": "PodCertificateRequest",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "resourceVersion": "7"},
            "spec": {
                "signerName": "example.com/spiffe", "podName": "p", "podUID": "pod-uid",
                "serviceAccountName": "sa", "serviceAccountUID": "sau", "nodeName": "n", "nodeUID": "nu",
                "maxExpirationSeconds": 3600, "stubPKCS10Request": "AAEC"
            }
        }))
        .expect("a valid request")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signer_core::DenyReason;

    fn pcr(json: serde_json::Value) -> Pcr {
        serde_json::from_value(json).expect("valid PCR JSON")
    }

    fn base(api_version: &str, spec_extra: serde_json::Value) -> serde_json::Value {
        let mut spec = serde_json::json!({
            "signerName": "example.com/spiffe", "podName": "p", "podUID": "uid",
            "serviceAccountName": "sa", "serviceAccountUID": "sau", "nodeName": "n", "nodeUID": "nu",
            "maxExpirationSeconds": 3600
        });
        spec.as_object_mut()
            .unwrap()
            .extend(spec_extra.as_object().unwrap().clone());
        serde_json::json!({
            "apiVersion": format!("certificates.k8s.io/{api_version}"), "kind": "PodCertificateRequest",
            "metadata": {"name": "req-1", "namespace": "ns", "resourceVersion": "7"},
            "spec": spec
        })
    }

    #[test]
    fn every_version_converts() {
        // v1alpha1 / 1.35-style v1beta1: pkix + proof.
        for v in [PcrVersion::V1alpha1, PcrVersion::V1beta1] {
            let r = to_request(
                &pcr(base(
                    v.as_str(),
                    serde_json::json!({"pkixPublicKey": "AQI=", "proofOfPossession": "AwQ="}),
                )),
                v,
            )
            .unwrap();
            assert_eq!(
                r.key_material,
                KeyMaterial::Pkix {
                    spki_der: vec![1, 2],
                    proof: vec![3, 4]
                }
            );
            assert_eq!(r.namespace, "ns");
            assert_eq!(r.max_expiration_seconds, 3600);
        }
        // 1.36-style v1beta1 and v1: the stub CSR.
        for v in [PcrVersion::V1beta1, PcrVersion::V1] {
            let r = to_request(
                &pcr(base(
                    v.as_str(),
                    serde_json::json!({"stubPKCS10Request": "BQY="}),
                )),
                v,
            )
            .unwrap();
            assert_eq!(r.key_material, KeyMaterial::StubCsr { der: vec![5, 6] });
        }
    }

    /// Upstream conversion drops pkix and proof on the way to v1: such a request is not
    /// denied (not the requester's fault), and no annotation is read in their place.
    #[test]
    fn a_1_35_request_read_through_v1_is_unreadable_not_denied() {
        let mut j = base("v1", serde_json::json!({}));
        j["metadata"]["annotations"] = serde_json::json!({
            "certificates.k8s.io/initial-pkix-public-key": "AQI=",
            "certificates.k8s.io/initial-proof-of-possession": "AwQ="
        });
        assert_eq!(
            to_request(&pcr(j), PcrVersion::V1).unwrap_err(),
            Unreadable::KeyMaterialNotServed
        );
    }

    #[test]
    fn no_key_material_through_v1beta1_is_a_denial() {
        let d = to_request(
            &pcr(base("v1beta1", serde_json::json!({}))),
            PcrVersion::V1beta1,
        )
        .unwrap_err();
        assert!(matches!(d, Unreadable::Deny(d) if d.reason == DenyReason::InvalidKeyMaterial));
    }

    #[test]
    fn versions_name_themselves_as_kube_does() {
        use kube::Resource;
        for v in PcrVersion::PREFERENCE {
            assert_eq!(PcrVersion::named(v.as_str()), Some(v));
            assert_eq!(
                Pcr::api_version(&v),
                kube::core::api_version_from_group_version(GROUP.into(), v.as_str().into())
            );
        }
        assert_eq!(PcrVersion::named("v2"), None);
        assert_eq!(
            Pcr::url_path(&PcrVersion::V1, Some("ns")),
            "/apis/certificates.k8s.io/v1/namespaces/ns/podcertificaterequests"
        );
    }

    #[test]
    fn terminal_states() {
        let mut j = base("v1", serde_json::json!({}));
        assert!(!is_terminal(&pcr(j.clone())));
        j["status"] = serde_json::json!({"conditions": [{"type": "Denied", "status": "True", "reason": "X", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        assert!(is_terminal(&pcr(j.clone())));
        j["status"] = serde_json::json!({"certificateChain": "-----BEGIN CERTIFICATE-----"});
        assert!(is_terminal(&pcr(j)));
    }

    /// Found by the `status_builder` fuzz target: a negative `metadata.generation` copied
    /// into `observedGeneration` is a status the API server refuses.
    #[test]
    fn a_negative_generation_is_not_observed() {
        let mut obj = base("v1beta1", serde_json::json!({}));
        obj["metadata"]["generation"] = (-1).into();
        let denial = Decision::Deny(Denial::new(DenyReason::InvalidIdentity, "x"));
        let status = status_for(&denial, &pcr(obj), std::time::SystemTime::now());
        let conditions = status.conditions.unwrap();
        assert_eq!(conditions[0].observed_generation, None);
    }

    #[test]
    fn a_denied_status_has_only_its_condition() {
        let p = pcr(base("v1", serde_json::json!({})));
        let d = Decision::Deny(Denial::new(DenyReason::UnsupportedKeyType, "use ECDSAP256"));
        let s = status_for(&d, &p, std::time::SystemTime::now());
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(
            j.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["conditions"]
        );
        assert_eq!(j["conditions"][0]["reason"], "UnsupportedKeyType");
        assert_eq!(j["conditions"][0]["status"], "True");
    }
}
