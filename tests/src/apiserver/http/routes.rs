//! The path, parsed into a route, and the verb dispatched: faults the test injects (delay,
//! outage, API Priority and Fairness throttling) come first, then authorization, then the
//! handler; discovery documents for the groups and versions served.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, Response, StatusCode};
use serde_json::{Value, json};

use super::super::authz::{Attributes, Authorizer, User};
use super::super::{ResourceFault, Shared};
use super::{Body, Route, full, not_found, query_param, status_error};

impl Shared {
    pub(super) async fn dispatch(
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

    pub(super) fn group_list(&self) -> Value {
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

    pub(super) fn resource_list(&self, group: &str, version: &str) -> Value {
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
}
