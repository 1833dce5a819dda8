//! Writes: create (with `generateName`), update and merge/strategic-merge patch with optimistic
//! concurrency (409 on a stale resourceVersion), delete; admission on the way in (validation,
//! the ClusterTrustBundleAttest plugin), as kube-apiserver's registry store and admission chain
//! do.

use http::{Response, StatusCode};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::super::Shared;
use super::super::authz::{Authorizer, User};
use super::super::validate::{self, Cause};
use super::{Body, Route, conflict, full, not_found, status_error};

fn now_rfc3339() -> String {
    Timestamp::from_second(Timestamp::now().as_second())
        .expect("now")
        .to_string()
}

/// Upstream's `maxNameGenerationCreateAttempts` (apiserver registry `store.go`).
const MAX_NAME_GENERATION_CREATE_ATTEMPTS: usize = 8;

fn random_suffix(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("rng");
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

impl Shared {
    pub(super) fn create(&self, user: &User, route: &Route<'_>, body: &[u8]) -> Response<Body> {
        let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
            return status_error(400, "BadRequest", "the body is not JSON", &[]);
        };
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let generate_name = obj["metadata"]["generateName"].as_str().map(str::to_owned);
        let mut generated = false;
        let mut name = match obj["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
            Some(n) => n.to_string(),
            None => match &generate_name {
                Some(prefix) => {
                    generated = true;
                    format!("{prefix}{}", random_suffix(5))
                }
                None => {
                    return status_error(
                        422,
                        "Invalid",
                        "name or generateName is required",
                        &[Cause::new(
                            "FieldValueRequired",
                            "metadata.name",
                            "Required value",
                        )],
                    );
                }
            },
        };
        if route.rt.namespaced != route.namespace.is_some() {
            return status_error(
                400,
                "BadRequest",
                "namespace does not fit the resource's scope",
                &[],
            );
        }
        let meta = obj["metadata"].as_object_mut().unwrap();
        meta.insert("name".into(), name.clone().into());
        if let Some(ns) = &route.namespace {
            meta.insert("namespace".into(), ns.clone().into());
        }
        meta.insert("uid".into(), crate::random_uid().into());
        meta.insert("creationTimestamp".into(), now_rfc3339().into());
        meta.insert("generation".into(), 1.into());
        meta.remove("resourceVersion");
        if route.rt.has_status {
            obj.as_object_mut().unwrap().remove("status");
        }
        if let Err(r) = self.admit(route, &mut obj, user.name != super::super::authz::UNCHECKED) {
            return *r;
        }
        obj["apiVersion"] = Value::String(route.rt.api_version(&route.version));
        let mut store = self.store.lock().unwrap();
        if let Some(refused) = attest(&Authorizer { store: &store }, user, &name, None, &obj) {
            return refused;
        }
        let mut key = self.key(route, &name);
        // Upstream's store (`createWithGenerateNameRetry`) tries a generated name that is
        // taken again with a new suffix, maxNameGenerationCreateAttempts (8) attempts in all.
        if let (true, Some(prefix)) = (generated, &generate_name) {
            for _ in 1..MAX_NAME_GENERATION_CREATE_ATTEMPTS {
                if store.get(&key).is_none() {
                    break;
                }
                name = format!("{prefix}{}", random_suffix(5));
                key = self.key(route, &name);
                obj["metadata"]["name"] = name.clone().into();
            }
        }
        if store.get(&key).is_some() {
            return status_error(
                409,
                "AlreadyExists",
                format!("{} {name:?} already exists", route.rt.plural),
                &[],
            );
        }
        let stored = store.put(key, obj);
        full(
            StatusCode::CREATED,
            self.present(route.rt, &route.version, &stored),
        )
    }

    /// Defaults and validation on create and update of the main resource. A PCR's key
    /// material is checked cryptographically at create unless `check_crypto` is false (see
    /// [`super::super::authz::UNCHECKED`]).
    pub(super) fn admit(
        &self,
        route: &Route<'_>,
        obj: &mut Value,
        check_crypto: bool,
    ) -> Result<(), Box<Response<Body>>> {
        let causes = match route.rt.plural {
            "clustertrustbundles" => validate::cluster_trust_bundle(obj),
            "podcertificaterequests" => {
                // Defaulting, as the versioned API defaults it before validation.
                if obj["spec"]["maxExpirationSeconds"].is_null() {
                    obj["spec"]["maxExpirationSeconds"] = json!(86_400);
                }
                validate::pcr_create(obj, &route.version, check_crypto)
            }
            _ => Vec::new(),
        };
        if causes.is_empty() {
            return Ok(());
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        let summary: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        Err(Box::new(status_error(
            422,
            "Invalid",
            format!(
                "{}.{} {name:?} is invalid: [{}]",
                route.rt.kind,
                route.rt.group,
                summary.join(", ")
            ),
            &causes,
        )))
    }

    /// PUT (patch = None) or merge PATCH of the main resource or its status.
    pub(super) fn update(
        &self,
        user: &User,
        route: &Route<'_>,
        body: &[u8],
        patch: Option<()>,
    ) -> Response<Body> {
        let Ok(input) = serde_json::from_slice::<Value>(body) else {
            return status_error(400, "BadRequest", "the body is not JSON", &[]);
        };
        let name = route.name.as_deref().unwrap();
        let key = self.key(route, name);
        let is_status = route.subresource.is_some();
        if is_status && self.faults.take(&self.faults.conflict_next_status_writes) {
            return conflict(name);
        }
        let mut store = self.store.lock().unwrap();
        let Some(old) = store.get(&key).cloned() else {
            return not_found(&format!("{} {name:?}", route.rt.plural));
        };
        let presented_old = self.present(route.rt, &route.version, &old);
        let new = match patch {
            Some(()) => {
                let mut n = presented_old.clone();
                merge_patch(&mut n, &input);
                n
            }
            None => input,
        };
        // PodCertificateRequests allow no unconditional update (their strategy's
        // AllowUnconditionalUpdate is false): a PUT must carry the resourceVersion it read.
        if patch.is_none()
            && route.rt.plural == "podcertificaterequests"
            && new["metadata"]["resourceVersion"]
                .as_str()
                .is_none_or(str::is_empty)
        {
            return status_error(
                422,
                "Invalid",
                format!(
                    "{} {name:?} is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                    route.rt.kind
                ),
                &[Cause::new(
                    "FieldValueInvalid",
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                )],
            );
        }
        // Optimistic concurrency: a stated resourceVersion must be the current one.
        if let Some(rv) = new["metadata"]["resourceVersion"]
            .as_str()
            .filter(|s| !s.is_empty())
            && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or("")
        {
            return conflict(name);
        }
        let mut stored = old.clone();
        if is_status {
            let status = new.get("status").cloned().unwrap_or(Value::Null);
            if route.rt.plural == "podcertificaterequests" {
                let causes = validate::pcr_status_update(
                    &old,
                    &status,
                    Timestamp::from_second(self.clock.unix_now()).unwrap_or(Timestamp::now()),
                );
                if !causes.is_empty() {
                    return status_error(
                        422,
                        "Invalid",
                        format!("PodCertificateRequest.certificates.k8s.io {name:?} is invalid"),
                        &causes,
                    );
                }
                // StatusStrategy.ValidateUpdate: changing the status needs "sign" for the
                // signer, refused as Invalid with a Forbidden cause (not 403).
                let signer = old["spec"]["signerName"].as_str().unwrap_or("");
                if !validate::same_status(&old, &status)
                    && !(Authorizer { store: &store }).allows_for_signer(user, "sign", signer)
                {
                    let message = format!(
                        "User {:?} is not permitted to \"sign\" for signer {signer:?}",
                        user.name
                    );
                    return status_error(
                        422,
                        "Invalid",
                        format!(
                            "PodCertificateRequest.certificates.k8s.io {name:?} is invalid: spec.signerName: Forbidden: {message}"
                        ),
                        &[Cause::new(
                            "FieldValueForbidden",
                            "spec.signerName",
                            format!("Forbidden: {message}"),
                        )],
                    );
                }
            }
            stored["status"] = status;
        } else {
            if route.rt.plural == "podcertificaterequests" && new["spec"] != presented_old["spec"] {
                return status_error(
                    422,
                    "Invalid",
                    "spec is immutable",
                    &[validate::cause("spec", "field is immutable")],
                );
            }
            let mut replacement = new.clone();
            for keep in ["uid", "creationTimestamp", "namespace", "name"] {
                replacement["metadata"][keep] = old["metadata"][keep].clone();
            }
            if route.rt.has_status {
                replacement["status"] = old.get("status").cloned().unwrap_or(Value::Null);
            }
            let mut candidate = replacement;
            if route.rt.plural == "clustertrustbundles" {
                let causes = validate::cluster_trust_bundle_update(&old, &candidate);
                if !causes.is_empty() {
                    return status_error(
                        422,
                        "Invalid",
                        format!("ClusterTrustBundle.certificates.k8s.io {name:?} is invalid"),
                        &causes,
                    );
                }
                if let Some(refused) = attest(
                    &Authorizer { store: &store },
                    user,
                    name,
                    Some(&old),
                    &candidate,
                ) {
                    return refused;
                }
            } else if let Err(r) = self.admit(route, &mut candidate, false) {
                // Spec fields are immutable (checked above): nothing cryptographic changes.
                return *r;
            }
            candidate["apiVersion"] = old["apiVersion"].clone();
            stored = candidate;
        }
        if stored.get("status").is_some_and(Value::is_null) {
            stored.as_object_mut().unwrap().remove("status");
        }
        let saved = store.put(key, stored);
        full(
            StatusCode::OK,
            self.present(route.rt, &route.version, &saved),
        )
    }

    pub(super) fn delete(&self, route: &Route<'_>) -> Response<Body> {
        let name = route.name.as_deref().unwrap();
        let mut store = self.store.lock().unwrap();
        match store.delete(&self.key(route, name)) {
            Some(obj) => full(StatusCode::OK, self.present(route.rt, &route.version, &obj)),
            None => not_found(&format!("{} {name:?}", route.rt.plural)),
        }
    }
}

/// The ClusterTrustBundleAttest admission plugin: writing a bundle that names a signer needs
/// "attest" for it (403 otherwise), unless an update changes neither the signer nor the bundle.
fn attest(
    authorizer: &Authorizer<'_>,
    user: &User,
    name: &str,
    old: Option<&Value>,
    new: &Value,
) -> Option<Response<Body>> {
    let signer = new["spec"]["signerName"]
        .as_str()
        .filter(|s| !s.is_empty())?;
    if old.is_some_and(|o| o["spec"] == new["spec"]) {
        return None;
    }
    if authorizer.allows_for_signer(user, "attest", signer) {
        return None;
    }
    Some(status_error(
        403,
        "Forbidden",
        format!(
            "clustertrustbundles.certificates.k8s.io {name:?} is forbidden: user not permitted to attest for signerName {signer:?}"
        ),
        &[],
    ))
}
