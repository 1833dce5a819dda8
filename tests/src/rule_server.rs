//! The API server a rule test runs against — our double ([`crate::apiserver`]) or the real
//! kube-apiserver ([`crate::control_plane`]) — behind one interface, so the same HTTP
//! requests reach both and each case must get the same verdict from each: accepted or
//! refused, HTTP code, reason, field path. Where the double is wrong about Kubernetes, the
//! real server's run of the same case fails.
//!
//! Two things only the double can do directly: store an object without validation, and lose
//! its history on demand. On the real server an object is stored through the API (so a case
//! whose starting state the API would refuse cannot be set up there, and [`RuleServer::store`]
//! says so), and history is lost by compacting etcd and restarting kube-apiserver.

use std::time::Duration;

use serde_json::{Value, json};

use crate::apiserver::{Served, ServerOptions};
use crate::control_plane::{ControlPlane, Release};

/// The name rule tests use for the cluster admin, on either server.
pub const ADMIN: &str = crate::apiserver::authz::ADMIN;

#[derive(Debug)]
pub enum RuleServer {
    Double(Served),
    Real(Box<ControlPlane>),
}

/// Namespaces the rule tests write into (the real server refuses writes into a namespace
/// that does not exist).
const NAMESPACES: [&str; 2] = ["ns", "foo"];

impl RuleServer {
    /// The double, serving v1beta1.
    pub async fn double() -> RuleServer {
        RuleServer::Double(Served::start(ServerOptions::v1beta1()).await)
    }

    /// kube-apiserver of `release`, serving v1beta1 too.
    pub async fn real(release: Release) -> RuleServer {
        let cp = ControlPlane::start(release).await;
        for ns in NAMESPACES {
            cp.create(crate::control_plane::objects::namespace(ns))
                .await;
        }
        RuleServer::Real(Box::new(cp))
    }

    /// Which server this is, for messages.
    pub fn name(&self) -> String {
        match self {
            RuleServer::Double(_) => "the test API server".into(),
            RuleServer::Real(cp) => format!("kube-apiserver {}", cp.release()),
        }
    }

    pub fn is_real(&self) -> bool {
        matches!(self, RuleServer::Real(_))
    }

    /// The admin's client.
    pub fn client(&self) -> &kube::Client {
        match self {
            RuleServer::Double(s) => &s.client,
            RuleServer::Real(cp) => &cp.admin.client,
        }
    }

    /// `method` on `path` as the admin: the status code and the JSON answer.
    pub async fn send(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        crate::send_json(self.client(), method, path, body).await
    }

    /// GET of `path` as the admin; `None` on 404.
    pub async fn get(&self, path: &str) -> Option<Value> {
        let (code, body) = self.send("GET", path, &Value::Null).await;
        match code {
            200 => Some(body),
            404 => None,
            _ => panic!("GET {path} on {}: {code} {body}", self.name()),
        }
    }

    /// DELETE of `path` as the admin, if it exists.
    pub async fn delete(&self, path: &str) {
        let (code, body) = self.send("DELETE", path, &Value::Null).await;
        assert!(
            code == 200 || code == 202 || code == 404,
            "DELETE {path} on {}: {code} {body}",
            self.name()
        );
    }

    /// Makes `obj` (at `collection`, its kind's collection path) the stored object, status
    /// included: the double stores it as is; the real server is asked to (create or update,
    /// then the status through its subresource), and `Err` says what it refused.
    pub async fn store(&self, collection: &str, obj: Value) -> Result<Value, String> {
        match self {
            RuleServer::Double(s) => {
                let plural = collection.rsplit('/').next().unwrap();
                let ns = obj["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                Ok(s.server.put(plural, &ns, obj))
            }
            RuleServer::Real(_) => {
                let name = obj["metadata"]["name"].as_str().unwrap();
                let path = format!("{collection}/{name}");
                let mut current = match self.get(&path).await {
                    Some(existing) => {
                        let mut update = obj.clone();
                        update["metadata"]["resourceVersion"] =
                            existing["metadata"]["resourceVersion"].clone();
                        let (code, body) = self.send("PUT", &path, &update).await;
                        if code != 200 {
                            return Err(format!("update: {code} {}", body["message"]));
                        }
                        body
                    }
                    None => {
                        let (code, body) = self.send("POST", collection, &obj).await;
                        if code != 201 {
                            return Err(format!("create: {code} {}", body["message"]));
                        }
                        body
                    }
                };
                if let Some(status) = obj.get("status").filter(|s| !s.is_null()) {
                    current["status"] = status.clone();
                    let (code, body) = self.send("PUT", &format!("{path}/status"), &current).await;
                    if code != 200 {
                        return Err(format!("status: {code} {}", body["message"]));
                    }
                    current = body;
                }
                Ok(current)
            }
        }
    }

    /// A client acting as `user` (a bearer token on the double, a client certificate on the
    /// real server; [`ADMIN`] is the admin), impersonating `impersonate` if given.
    pub async fn client_as(&self, user: &str, impersonate: Option<&str>) -> kube::Client {
        let mut config = match self {
            RuleServer::Double(s) => {
                let dir = tempfile::tempdir().unwrap();
                crate::kube_config(&s.server.write_kubeconfig_as(dir.path(), user)).await
            }
            RuleServer::Real(cp) => {
                let identity = if user == ADMIN {
                    cp.admin.clone()
                } else {
                    cp.user(user, None).await
                };
                crate::kube_config(&identity.kubeconfig).await
            }
        };
        if let Some(who) = impersonate {
            config.auth_info.impersonate = Some(who.to_string());
        }
        kube::Client::try_from(config).unwrap()
    }

    /// A ClusterRole `name` with `rules`, bound to `user`.
    pub async fn grant(&self, name: &str, user: &str, rules: Value) {
        let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name}, "rules": rules});
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]});
        match self {
            RuleServer::Double(s) => {
                s.server.put("clusterroles", "", role);
                s.server.put("clusterrolebindings", "", binding);
            }
            RuleServer::Real(cp) => {
                let list = json!({"apiVersion": "v1", "kind": "List", "items": [role, binding]});
                cp.kubectl(&["apply", "-f", "-"], Some(&list.to_string()))
                    .unwrap_or_else(|e| panic!("granting {name}: {e}"));
                // The authorizer reads RBAC from an informer: wait until it grants the last
                // rule (a SubjectAccessReview, as the admin).
                let rule = rules.as_array().and_then(|r| r.last()).unwrap();
                let (resource, subresource) = rule["resources"][0]
                    .as_str()
                    .unwrap()
                    .split_once('/')
                    .map_or((rule["resources"][0].as_str().unwrap(), ""), |(r, s)| {
                        (r, s)
                    });
                let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                    "spec": {"user": user, "resourceAttributes": {
                        "group": rule["apiGroups"][0], "resource": resource, "subresource": subresource,
                        "verb": rule["verbs"][0], "name": rule["resourceNames"][0].as_str().unwrap_or(""),
                        "namespace": "ns"}}});
                for _ in 0..200 {
                    let (_, body) = self
                        .send(
                            "POST",
                            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                            &review,
                        )
                        .await;
                    if body["status"]["allowed"] == true {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                panic!("{name} was not in force for {user} within 5 s");
            }
        }
    }

    /// Loses the history before now: watches and list continuations from an older
    /// resourceVersion get 410 Gone afterwards.
    pub async fn forget_history(&self) {
        match self {
            RuleServer::Double(s) => s.server.restart(Duration::ZERO),
            RuleServer::Real(cp) => {
                cp.compact_etcd().await;
                cp.restart_apiserver(Duration::ZERO).await;
            }
        }
    }
}

/// Runs one rule test body against the double and against kube-apiserver 1.37, as two tests.
#[macro_export]
macro_rules! against_both {
    ($body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_double() {
                super::$body(&$crate::rule_server::RuleServer::double().await).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kube_apiserver() {
                super::$body(
                    &$crate::rule_server::RuleServer::real($crate::control_plane::Release::V1_37)
                        .await,
                )
                .await
            }
        }
    };
}
