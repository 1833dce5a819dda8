//! Routing and handlers: the Kubernetes REST dialect for the resources the signer touches.
//!
//! Paths are `/api/v1/...` and `/apis/<group>/<version>/...`, namespaced
//! (`namespaces/<ns>/<plural>[/<name>[/status]]`) or cluster-scoped; verbs are get, list
//! (with `limit`/`continue`, field and label selectors), watch (`resourceVersion`,
//! `allowWatchBookmarks`, `timeoutSeconds`, 410 Gone as an ERROR event), create (with
//! `generateName`), update and merge/strategic-merge patch (optimistic concurrency: 409), and
//! delete. Errors are `Status` objects with the real reasons and codes.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Frame, Incoming};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::authz::{Attributes, Authorizer, User};
use super::store::{Change, Key, Selector};
use super::validate::{self, Cause};
use super::{ResourceFault, ResourceType, Shared, Snapshot};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

fn full(status: StatusCode, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())).boxed_unsync())
        .expect("valid response")
}

/// A `Status` failure object, as kube-apiserver returns.
pub fn status_error(
    code: u16,
    reason: &str,
    message: impl Into<String>,
    causes: &[Cause],
) -> Response<Body> {
    let causes: Vec<Value> = causes
        .iter()
        .map(|c| json!({"field": c.field, "message": c.message, "reason": c.reason}))
        .collect();
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message.into(), "reason": reason, "code": code,
    });
    if !causes.is_empty() {
        body["details"] = json!({"causes": causes});
    }
    full(StatusCode::from_u16(code).expect("valid code"), body)
}

fn not_found(what: &str) -> Response<Body> {
    status_error(404, "NotFound", format!("{what} not found"), &[])
}

fn conflict(name: &str) -> Response<Body> {
    status_error(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {name}: the object has been modified; please apply your changes to the latest version and try again"
        ),
        &[],
    )
}

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
pub fn merge_patch(target: &mut Value, patch: &Value) {
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

struct Route<'a> {
    rt: &'a ResourceType,
    version: String,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 3 <= b.len())
            .then(|| {
                std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .flatten();
        match (hex, b[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Shared {
    /// The object as served in `version`: apiVersion and kind set, PCR fields converted.
    fn present(&self, rt: &ResourceType, version: &str, obj: &Value) -> Value {
        let mut obj = obj.clone();
        obj["apiVersion"] = Value::String(rt.api_version(version));
        obj["kind"] = Value::String(rt.kind.to_string());
        if rt.plural == "podcertificaterequests" {
            convert_pcr(&mut obj, version);
        }
        obj
    }

    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let user = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("")
            .to_string();
        let impersonate_user = req
            .headers()
            .get("impersonate-user")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let impersonate_groups: Vec<String> = req
            .headers()
            .get_all("impersonate-group")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let body = match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        let response = match self.authenticate(&user, impersonate_user, impersonate_groups) {
            Ok(who) => {
                self.clone()
                    .dispatch(&who, &method, &path, &query, &content_type, &body)
                    .await
            }
            Err(refused) => *refused,
        };
        if std::env::var_os("PODCERT_TEST_SERVER_TRACE").is_some() {
            eprintln!(
                "test-apiserver: {method} {path}?{query} -> {}",
                response.status()
            );
        }
        self.log(
            &user,
            &method,
            &path,
            &query,
            response.status().as_u16(),
            &body,
        );
        response
    }

    /// The user a request acts as: its token's, or the one it impersonates if it may.
    fn authenticate(
        &self,
        token: &str,
        impersonate_user: Option<String>,
        impersonate_groups: Vec<String>,
    ) -> Result<User, Box<Response<Body>>> {
        let caller = User::from_token(token);
        let Some(name) = impersonate_user else {
            return Ok(caller);
        };
        let store = self.store.lock().unwrap();
        let authorizer = Authorizer { store: &store };
        let may = |resource: &str, target: &str| {
            authorizer.allows(
                &caller,
                &Attributes {
                    verb: "impersonate".into(),
                    api_group: String::new(),
                    resource: resource.into(),
                    namespace: None,
                    name: Some(target.into()),
                },
            )
        };
        if let Some(refused) = std::iter::once(("users", name.as_str()))
            .chain(impersonate_groups.iter().map(|g| ("groups", g.as_str())))
            .find(|(resource, target)| !may(resource, target))
        {
            return Err(Box::new(status_error(
                403,
                "Forbidden",
                format!(
                    "{} {:?} is forbidden: User {:?} cannot impersonate resource {:?} in API group \"\" at the cluster scope",
                    refused.0, refused.1, caller.name, refused.0
                ),
                &[],
            )));
        }
        let mut groups = impersonate_groups;
        groups.push("system:authenticated".into());
        Ok(User { name, groups })
    }

    async fn dispatch(
        self: Arc<Self>,
        user: &User,
        method: &Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: &[u8],
    ) -> Response<Body> {
        let delay = self.faults.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if self.faults.is_down() {
            return status_error(
                503,
                "ServiceUnavailable",
                "the API server is restarting",
                &[],
            );
        }
        let is_watch = matches!(query_param(query, "watch").as_deref(), Some("true" | "1"));
        let is_write = !matches!(*method, Method::GET | Method::HEAD);
        // API Priority and Fairness: `system:masters` is in the mandatory `exempt` FlowSchema
        // (apiserver/pkg/apis/flowcontrol/bootstrap/default.go) and is never answered 429;
        // the throttle falls on everyone else, as a saturated priority level's does.
        if !user.is_master() && self.faults.throttles() {
            let mut r = status_error(
                429,
                "TooManyRequests",
                "too many requests, please try again later",
                &[],
            );
            r.headers_mut()
                .insert("retry-after", http::HeaderValue::from_static("1"));
            return r;
        }
        if !is_watch && self.faults.fails() {
            return status_error(500, "InternalError", "injected internal error", &[]);
        }
        if is_write && self.faults.refuse_writes.load(Ordering::Relaxed) {
            return status_error(
                503,
                "ServiceUnavailable",
                "writes are refused for now (injected)",
                &[],
            );
        }

        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segs.as_slice() {
            ["version"] => {
                return full(
                    StatusCode::OK,
                    json!({"major": "1", "minor": "37", "gitVersion": "v1.37.0-podcert-test", "platform": "linux/amd64"}),
                );
            }
            ["api"] => {
                return full(
                    StatusCode::OK,
                    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
                );
            }
            ["apis"] => return full(StatusCode::OK, self.group_list()),
            ["apis", g] => {
                return match self.group_list()["groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|x| x["name"] == *g)
                {
                    Some(grp) => full(
                        StatusCode::OK,
                        json!({"kind": "APIGroup", "apiVersion": "v1", "name": grp["name"], "versions": grp["versions"], "preferredVersion": grp["preferredVersion"]}),
                    ),
                    None => not_found(&format!("group {g}")),
                };
            }
            ["api", "v1"] => return full(StatusCode::OK, self.resource_list("", "v1")),
            ["apis", g, v] => {
                let list = self.resource_list(g, v);
                return if list["resources"].as_array().is_some_and(|r| !r.is_empty()) {
                    full(StatusCode::OK, list)
                } else {
                    not_found(&format!("{g}/{v}"))
                };
            }
            _ => {}
        }
        let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
            ["api", v, rest @ ..] => ("", v, rest),
            ["apis", g, v, rest @ ..] => (g, v, rest),
            _ => return not_found(path),
        };
        let (namespace, rest) = match rest {
            ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
            rest => (None, rest),
        };
        let Some((plural, rest)) = rest.split_first() else {
            return not_found(path);
        };
        let Some(rt) = self
            .resources
            .iter()
            .find(|r| r.group == group && r.plural == *plural && r.versions.contains(&version))
        else {
            return not_found(&format!(
                "the server could not find the requested resource ({path})"
            ));
        };
        let route = Route {
            rt,
            version: version.to_string(),
            namespace,
            name: rest.first().map(|s| s.to_string()),
            subresource: rest.get(1).map(|s| s.to_string()),
        };
        if route
            .subresource
            .as_deref()
            .is_some_and(|s| !rt.has_status || s != "status")
        {
            return not_found(path);
        }
        let failing = match *self.faults.fail_resource.lock().unwrap() {
            Some(ResourceFault::Lists(p)) => {
                p == rt.plural && *method == Method::GET && route.name.is_none() && !is_watch
            }
            Some(ResourceFault::Writes(p)) => p == rt.plural && is_write,
            None => false,
        };
        if failing {
            return status_error(
                500,
                "InternalError",
                "injected: this resource's storage fails",
                &[],
            );
        }
        let verb = match (method.clone(), route.name.is_some()) {
            (Method::GET, false) if is_watch => "watch",
            (Method::GET, false) => "list",
            (Method::GET, true) => "get",
            (Method::POST, _) => "create",
            (Method::PUT, _) => "update",
            (Method::PATCH, _) => "patch",
            (Method::DELETE, _) => "delete",
            _ => "unknown",
        };
        let attributes = Attributes {
            verb: verb.into(),
            api_group: rt.group.to_string(),
            resource: match &route.subresource {
                Some(sub) => format!("{}/{sub}", rt.plural),
                None => rt.plural.to_string(),
            },
            namespace: route.namespace.clone(),
            // A list or watch selecting one name by field is authorized for that name.
            name: route.name.clone().or_else(|| {
                query_param(query, "fieldSelector")
                    .and_then(|f| f.strip_prefix("metadata.name=").map(str::to_string))
            }),
        };
        let allowed = Authorizer {
            store: &self.store.lock().unwrap(),
        }
        .allows(user, &attributes);
        if !allowed {
            return status_error(403, "Forbidden", attributes.forbidden_message(user), &[]);
        }
        match (method.clone(), route.name.is_some()) {
            (Method::GET, false) if is_watch => Arc::clone(&self).watch(&route, query).await,
            (Method::GET, false) => self.list(&route, query),
            (Method::GET, true) => self.get(&route),
            (Method::POST, false) => self.create(user, &route, body),
            (Method::PUT, true) => self.update(user, &route, body, None),
            (Method::PATCH, true) => {
                if !(content_type.starts_with("application/merge-patch+json")
                    || content_type.starts_with("application/strategic-merge-patch+json"))
                {
                    return status_error(
                        415,
                        "UnsupportedMediaType",
                        format!("the test API server does not support patch type {content_type:?}"),
                        &[],
                    );
                }
                self.update(user, &route, body, Some(()))
            }
            (Method::DELETE, true) => self.delete(&route),
            _ => status_error(
                405,
                "MethodNotAllowed",
                format!("{method} is not supported on {path}"),
                &[],
            ),
        }
    }

    fn group_list(&self) -> Value {
        let mut groups: Vec<Value> = Vec::new();
        for rt in self.resources.iter().filter(|r| !r.group.is_empty()) {
            if groups.iter().any(|g| g["name"] == rt.group) {
                let g = groups.iter_mut().find(|g| g["name"] == rt.group).unwrap();
                for v in &rt.versions {
                    let gv = format!("{}/{v}", rt.group);
                    let versions = g["versions"].as_array_mut().unwrap();
                    if !versions.iter().any(|x| x["groupVersion"] == gv) {
                        versions.push(json!({"groupVersion": gv, "version": v}));
                    }
                }
                continue;
            }
            let versions: Vec<Value> = rt
                .versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{}/{v}", rt.group), "version": v}))
                .collect();
            groups.push(json!({"name": rt.group, "versions": versions.clone(), "preferredVersion": versions[0]}));
        }
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    fn resource_list(&self, group: &str, version: &str) -> Value {
        let mut resources = Vec::new();
        for rt in self
            .resources
            .iter()
            .filter(|r| r.group == group && r.versions.contains(&version))
        {
            let verbs = [
                "create", "delete", "get", "list", "patch", "update", "watch",
            ];
            resources.push(json!({"name": rt.plural, "singularName": "", "namespaced": rt.namespaced, "kind": rt.kind, "verbs": verbs}));
            if rt.has_status {
                resources.push(json!({"name": format!("{}/status", rt.plural), "singularName": "", "namespaced": rt.namespaced, "kind": rt.kind, "verbs": ["get", "patch", "update"]}));
            }
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
    }

    fn key(&self, route: &Route<'_>, name: &str) -> Key {
        (
            route.rt.plural.to_string(),
            route.namespace.clone().unwrap_or_default(),
            name.to_string(),
        )
    }

    fn get(&self, route: &Route<'_>) -> Response<Body> {
        let name = route.name.as_deref().unwrap();
        let store = self.store.lock().unwrap();
        match store.get(&self.key(route, name)) {
            Some(obj) => full(StatusCode::OK, self.present(route.rt, &route.version, obj)),
            None => not_found(&format!("{} {name:?}", route.rt.plural)),
        }
    }

    /// A list, paged as kube-apiserver pages it: the first page fixes a snapshot (the objects
    /// and the resourceVersion at that moment) and every later page continues from that same
    /// snapshot, reporting its resourceVersion; a watch from it then sees every change since.
    /// A continue token that outlived its snapshot (compaction, restart) is 410 Expired.
    fn list(&self, route: &Route<'_>, query: &str) -> Response<Body> {
        let limit = query_param(query, "limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0);
        let (snapshot, offset) = match query_param(query, "continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let found = token.split_once(':').and_then(|(id, offset)| {
                    let snapshot = self.snapshots.lock().unwrap().get(id)?;
                    Some((snapshot, offset.parse::<usize>().ok()?))
                });
                match found {
                    Some(f) => f,
                    None => {
                        return status_error(
                            410,
                            "Expired",
                            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                            &[],
                        );
                    }
                }
            }
            None => {
                let fields = Selector::parse(query_param(query, "fieldSelector").as_deref());
                let labels = Selector::parse(query_param(query, "labelSelector").as_deref());
                let store = self.store.lock().unwrap();
                let items: Vec<Value> = store
                    .list(route.rt.plural, route.namespace.as_deref())
                    .map(|(_, o)| self.present(route.rt, &route.version, o))
                    .filter(|o| fields.matches_fields(o) && labels.matches_labels(o))
                    .collect();
                let snapshot = Arc::new(Snapshot {
                    resource_version: store.resource_version(),
                    items,
                });
                (snapshot, 0)
            }
        };
        let total = snapshot.items.len();
        let end = limit.map(|l| (offset + l).min(total)).unwrap_or(total);
        let page = snapshot
            .items
            .get(offset.min(total)..end)
            .unwrap_or(&[])
            .to_vec();
        let mut metadata = json!({"resourceVersion": snapshot.resource_version.to_string()});
        if end < total {
            let id = self.snapshots.lock().unwrap().keep(snapshot.clone());
            metadata["continue"] = Value::String(format!("{id}:{end}"));
            metadata["remainingItemCount"] = json!(total - end);
        }
        full(
            StatusCode::OK,
            json!({"kind": format!("{}List", route.rt.kind), "apiVersion": route.rt.api_version(&route.version), "metadata": metadata, "items": page}),
        )
    }

    fn create(&self, user: &User, route: &Route<'_>, body: &[u8]) -> Response<Body> {
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
        if let Err(r) = self.admit(route, &mut obj, user.name != super::authz::UNCHECKED) {
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
    /// [`super::authz::UNCHECKED`]).
    fn admit(
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
    fn update(
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

    fn delete(&self, route: &Route<'_>) -> Response<Body> {
        let name = route.name.as_deref().unwrap();
        let mut store = self.store.lock().unwrap();
        match store.delete(&self.key(route, name)) {
            Some(obj) => full(StatusCode::OK, self.present(route.rt, &route.version, &obj)),
            None => not_found(&format!("{} {name:?}", route.rt.plural)),
        }
    }

    async fn watch(self: Arc<Self>, route: &Route<'_>, query: &str) -> Response<Body> {
        let fields = Selector::parse(query_param(query, "fieldSelector").as_deref());
        let labels = Selector::parse(query_param(query, "labelSelector").as_deref());
        let bookmarks = query_param(query, "allowWatchBookmarks").as_deref() == Some("true");
        let timeout = Duration::from_secs(
            query_param(query, "timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .unwrap_or(1800),
        );
        let since = query_param(query, "resourceVersion")
            .and_then(|rv| rv.parse::<u64>().ok())
            .filter(|rv| *rv > 0);
        let rt = route.rt.clone();
        let (version, namespace) = (route.version.clone(), route.namespace.clone());

        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
        let (initial, mut live, last_rv) = {
            let store = self.store.lock().unwrap();
            let live = store.changes.subscribe();
            let initial: Option<Vec<Value>> = match since {
                Some(rv) => store.changes_since(rv).map(|cs| {
                    cs.iter()
                        .filter(|c| c.plural == rt.plural)
                        .map(|c| json!({"type": c.kind.as_str(), "object": c.object}))
                        .collect()
                }),
                None => Some(
                    store
                        .list(rt.plural, namespace.as_deref())
                        .map(|(_, o)| json!({"type": "ADDED", "object": o}))
                        .collect(),
                ),
            };
            (initial, live, store.resource_version())
        };
        let Some(initial) = initial else {
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {} ({})", since.unwrap_or(0), self.store.lock().unwrap().oldest_watchable()),
                "reason": "Expired", "code": 410}});
            return full(StatusCode::OK, gone);
        };
        let shared = self.clone();
        let mut epoch = self.faults.watch_epoch.subscribe();
        tokio::spawn(async move {
            let matches = |obj: &Value| {
                namespace
                    .as_deref()
                    .is_none_or(|ns| obj["metadata"]["namespace"] == ns)
                    && fields.matches_fields(obj)
                    && labels.matches_labels(obj)
            };
            let line = |kind: &str, obj: &Value| {
                let mut s =
                    json!({"type": kind, "object": shared.present(&rt, &version, obj)}).to_string();
                s.push('\n');
                Bytes::from(s)
            };
            let mut sent_rv = since.unwrap_or(last_rv).max(last_rv);
            // Every change up to `read_rv` has been taken from the stream by this watch (sent,
            // filtered out, or held while stalled): the furthest a bookmark may point. The store's
            // current resourceVersion may be further, with this watch's changes still queued; a
            // bookmark there would let a client resume past them, which kube-apiserver never does.
            let mut read_rv = last_rv;
            for ev in initial {
                let presented = shared.present(&rt, &version, &ev["object"]);
                if matches(&presented)
                    && tx
                        .send(line(ev["type"].as_str().unwrap(), &ev["object"]))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut ticker = tokio::time::interval(Duration::from_millis(500));
            let mut held: Vec<Arc<Change>> = Vec::new();
            loop {
                tokio::select! {
                    change = live.recv() => match change.inspect(|c| read_rv = read_rv.max(c.rv)) {
                        Ok(c) if c.plural == rt.plural && c.rv > sent_rv => {
                            if shared.faults.stall_watches.load(Ordering::Relaxed) {
                                held.push(c);
                                continue;
                            }
                            for c in held.drain(..).chain(std::iter::once(c)) {
                                sent_rv = c.rv;
                                let presented = shared.present(&rt, &version, &c.object);
                                if matches(&presented) && tx.send(line(c.kind.as_str(), &c.object)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(_) => {}
                        // Too slow a reader: end the watch; the client re-watches or relists.
                        Err(_) => return,
                    },
                    _ = ticker.tick() => {
                        if !shared.faults.stall_watches.load(Ordering::Relaxed) {
                            for c in held.drain(..) {
                                sent_rv = c.rv;
                                let presented = shared.present(&rt, &version, &c.object);
                                if matches(&presented) && tx.send(line(c.kind.as_str(), &c.object)).await.is_err() {
                                    return;
                                }
                            }
                            if bookmarks {
                                let rv = read_rv.max(sent_rv);
                                let bm = json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version(&version), "metadata": {"resourceVersion": rv.to_string()}}});
                                if tx.send(Bytes::from(format!("{bm}\n"))).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    _ = epoch.changed() => return,
                    _ = &mut deadline => return,
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("transfer-encoding", "chunked")
            .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
            .expect("valid response")
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
