//! Routing and handlers: the Kubernetes REST dialect for the resources the signer touches.
//!
//! Paths are `/api/v1/...` and `/apis/<group>/<version>/...`, namespaced
//! (`namespaces/<ns>/<plural>[/<name>[/status]]`) or cluster-scoped; verbs are get, list
//! (with `limit`/`continue`, field and label selectors), watch (`resourceVersion`,
//! `allowWatchBookmarks`, `timeoutSeconds`, 410 Gone as an ERROR event), create (with
//! `generateName`), update and merge/strategic-merge patch (optimistic concurrency: 409), and
//! delete. Errors are `Status` objects with the real reasons and codes.
//!
//! The wing, by the verb's way through it: this module takes the request (authentication,
//! impersonation, the access log) and holds the response shapes; `routes` parses the path and
//! dispatches, with discovery; `reads` gets and lists; `writes` creates, updates, patches and
//! deletes, with admission; `watch` streams events; `conversion` serves an object in the version
//! asked for.

mod conversion;
mod reads;
mod routes;
mod watch;
mod writes;

use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use hyper::body::{Bytes, Incoming};
use serde_json::{Value, json};

use super::authz::{Attributes, Authorizer, User};
use super::validate::Cause;
use super::{ResourceType, Shared};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

pub(super) fn full(status: StatusCode, body: Value) -> Response<Body> {
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

pub(super) fn not_found(what: &str) -> Response<Body> {
    status_error(404, "NotFound", format!("{what} not found"), &[])
}

pub(super) fn conflict(name: &str) -> Response<Body> {
    status_error(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {name}: the object has been modified; please apply your changes to the latest version and try again"
        ),
        &[],
    )
}

pub(super) struct Route<'a> {
    pub(super) rt: &'a ResourceType,
    pub(super) version: String,
    pub(super) namespace: Option<String>,
    pub(super) name: Option<String>,
    pub(super) subresource: Option<String>,
}

pub(super) fn query_param(query: &str, key: &str) -> Option<String> {
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
}
