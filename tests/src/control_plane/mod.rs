//! The real Kubernetes control plane, as processes on loopback: etcd and kube-apiserver built
//! from Go modules (`scripts/build-kubernetes`), and the kubelet's own pod-certificate code
//! ([`kubelet::PodcertKubelet`]). Where [`crate::apiserver`] is our double, this is the real
//! thing: authentication, the Node and RBAC authorizers, NodeRestriction, validation,
//! defaulting, conversion, the watch cache and etcd's resourceVersions.
//!
//! ```text
//!   ControlPlane ── etcd (Unix socket) ◄── kube-apiserver (https://127.0.0.1:port)
//!        │                                     ▲            ▲             ▲
//!        ├─ admin kubeconfig (system:masters) ─┘            │             │
//!        ├─ node kubeconfigs (system:node:<n>) ── PodcertKubelet         │
//!        └─ service-account token kubeconfigs ─────── podcert-signer ────┘
//! ```
//!
//! No kube-controller-manager runs: nothing creates `default` ServiceAccounts, garbage-collects
//! or deletes old requests, so a test creates what its pods name. Every process is stopped when
//! its owner is dropped, whether the test passed or not.

pub mod apiserver;
pub mod binaries;
pub mod cert_manager;
pub mod etcd;
mod identity;
pub mod kubelet;
pub mod objects;
pub mod pki;
pub mod process;
pub mod vault;

use std::fmt;
use std::time::Duration;

use kube::api::{DynamicObject, PostParams};
use serde_json::{Value, json};

pub use apiserver::ApiServerOptions;
use apiserver::KubeApiServer;
use etcd::Etcd;
pub use identity::Identity;
use identity::{identity_with_cert, write_kubeconfig};
use pki::Pki;

/// A Kubernetes release the suite builds: its API server and its kubelet's pod-certificate code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Release {
    V1_35,
    V1_36,
    V1_37,
}

impl Release {
    pub const ALL: [Release; 3] = [Release::V1_35, Release::V1_36, Release::V1_37];

    pub fn minor(self) -> u32 {
        match self {
            Release::V1_35 => 35,
            Release::V1_36 => 36,
            Release::V1_37 => 37,
        }
    }

    /// The PodCertificateRequest API version this release's kubelet writes through.
    pub fn kubelet_api_version(self) -> &'static str {
        match self {
            Release::V1_35 | Release::V1_36 => "v1beta1",
            Release::V1_37 => "v1",
        }
    }

    /// Whether this release's kubelet writes `pkixPublicKey` + `proofOfPossession` (1.35)
    /// rather than a stub PKCS#10 request (1.36+).
    pub fn kubelet_writes_pkix(self) -> bool {
        self == Release::V1_35
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.minor())
    }
}

/// A Node object and the kubeconfig of its kubelet (`system:node:<name>`).
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub uid: String,
    pub identity: Identity,
}

/// etcd and kube-apiserver, with an admin.
pub struct ControlPlane {
    pub options: ApiServerOptions,
    pub dir: tempfile::TempDir,
    pki: Pki,
    etcd: Etcd,
    apiserver: tokio::sync::Mutex<KubeApiServer>,
    pub port: u16,
    pub admin: Identity,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("release", &self.options.release)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// etcd and kube-apiserver of `release`, serving the pod-certificate APIs (v1beta1 too).
    pub async fn start(release: Release) -> ControlPlane {
        Self::start_with(ApiServerOptions::new(release)).await
    }

    pub async fn start_with(options: ApiServerOptions) -> ControlPlane {
        let dir = tempfile::Builder::new()
            .prefix("podcert-k8s-")
            .tempdir()
            .unwrap();
        if std::env::var_os("PODCERT_E2E_KEEP").is_some() {
            eprintln!("the control plane's files are in {}", dir.path().display());
        }
        let pki = Pki::generate(&dir.path().join("pki"));
        let etcd = Etcd::start(dir.path()).await;
        // A port that was free a moment ago; another process may take it first, so a clash
        // is tried again on a new port before it is reported.
        let mut attempt = 0;
        let (apiserver, port, admin) = loop {
            attempt += 1;
            let port = crate::free_port();
            let url = format!("https://127.0.0.1:{port}");
            let admin_cert = pki.client("podcert-admin", Some("system:masters"));
            let admin =
                identity_with_cert(dir.path(), &url, &pki, "podcert-admin", &admin_cert).await;
            match KubeApiServer::start(&options, &pki, &etcd.url(), dir.path(), &admin.client, port)
                .await
            {
                Ok(server) => break (server, port, admin),
                Err(clash) if attempt < 3 => eprintln!("{clash}: trying another port"),
                Err(clash) => panic!("kube-apiserver could not start: {clash}, three times"),
            }
        };
        ControlPlane {
            options,
            dir,
            pki,
            etcd,
            apiserver: tokio::sync::Mutex::new(apiserver),
            port,
            admin,
        }
    }

    pub fn release(&self) -> Release {
        self.options.release
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A user authenticated by a client certificate, in `group` if given.
    pub async fn user(&self, user: &str, group: Option<&str>) -> Identity {
        identity_with_cert(
            self.dir.path(),
            &self.url(),
            &self.pki,
            user,
            &self.pki.client(user, group),
        )
        .await
    }

    /// Creates the Node `name` and returns it with its kubelet's identity.
    pub async fn node(&self, name: &str) -> Node {
        let created = self.create(objects::node(name)).await;
        Node {
            name: name.to_string(),
            uid: created["metadata"]["uid"].as_str().unwrap().to_string(),
            identity: self
                .user(&format!("system:node:{name}"), Some("system:nodes"))
                .await,
        }
    }

    /// A kubeconfig that authenticates as ServiceAccount `namespace/name` with a token from
    /// the TokenRequest API in a file (`tokenFile`), as a pod's projected token is given to it.
    /// The cluster CA (PEM): what kube-apiserver's serving certificate chains to.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// Where [`Self::service_account`] keeps `namespace/name`'s token (as a pod's is mounted).
    pub fn service_account_token_file(&self, namespace: &str, name: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("token-{namespace}-{name}"))
    }

    pub async fn service_account(&self, namespace: &str, name: &str) -> Identity {
        let path = format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token");
        let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": 86_400}});
        let (code, body) = crate::send_json(&self.admin.client, "POST", &path, &request).await;
        assert_eq!(code, 201, "TokenRequest for {namespace}/{name}: {body}");
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let token_file = self.service_account_token_file(namespace, name);
        std::fs::write(&token_file, body["status"]["token"].as_str().unwrap()).unwrap();
        let kubeconfig = write_kubeconfig(
            self.dir.path(),
            &self.url(),
            &self.pki.ca_pem,
            &user,
            json!({"tokenFile": token_file}),
        );
        Identity {
            client: crate::kube_client(&kubeconfig).await,
            user,
            kubeconfig,
        }
    }

    /// Creates `obj` as the admin and returns what the server stored.
    pub async fn create(&self, obj: Value) -> Value {
        self.create_as(&self.admin, obj)
            .await
            .unwrap_or_else(|e| panic!("creating {e}"))
    }

    /// Creates `obj` as `who`; the server's refusal as text if it refuses.
    pub async fn create_as(&self, who: &Identity, obj: Value) -> Result<Value, String> {
        let object: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
        let api = self.api_for(&who.client, &obj).await;
        api.create(&PostParams::default(), &object)
            .await
            .map(|o| serde_json::to_value(o).unwrap())
            .map_err(|e| format!("{} {}: {e}", obj["kind"], obj["metadata"]["name"]))
    }

    /// GET of one object; `None` when it does not exist.
    pub async fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let probe = json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "namespace": namespace}});
        let api = self.api_for(&self.admin.client, &probe).await;
        api.get_opt(name)
            .await
            .expect("the API server answers")
            .map(|o| serde_json::to_value(o).unwrap())
    }

    /// Every object of a kind (in every namespace).
    pub async fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let probe = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}});
        let (resource, _) = self.resource_of(&probe).await;
        let api: kube::Api<DynamicObject> =
            kube::Api::all_with(self.admin.client.clone(), &resource);
        api.list(&Default::default())
            .await
            .expect("the API server answers")
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect()
    }

    async fn resource_of(&self, obj: &Value) -> (kube::discovery::ApiResource, bool) {
        let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (
                String::new(),
                obj["apiVersion"].as_str().unwrap().to_string(),
            ),
        };
        let gvk = kube::api::GroupVersionKind::gvk(&group, &version, obj["kind"].as_str().unwrap());
        let (resource, caps) = kube::discovery::pinned_kind(&self.admin.client, &gvk)
            .await
            .unwrap_or_else(|e| panic!("the server does not serve {gvk:?}: {e}"));
        (resource, caps.scope == kube::discovery::Scope::Namespaced)
    }

    async fn api_for(&self, client: &kube::Client, obj: &Value) -> kube::Api<DynamicObject> {
        let (resource, namespaced) = self.resource_of(obj).await;
        match obj["metadata"]["namespace"].as_str() {
            Some(ns) if namespaced => kube::Api::namespaced_with(client.clone(), ns, &resource),
            _ => kube::Api::all_with(client.clone(), &resource),
        }
    }

    /// `kubectl <args>` as the admin, with `stdin` piped in if given: its output, or
    /// everything it said when it fails.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        use std::io::Write;
        let mut child = std::process::Command::new(crate::oracles::kubectl_binary())
            .arg("--kubeconfig")
            .arg(&self.admin.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// Restarts kube-apiserver (same port, same etcd) after `downtime`.
    pub async fn restart_apiserver(&self, downtime: Duration) {
        self.apiserver
            .lock()
            .await
            .restart(&self.pki, &self.admin.client, downtime)
            .await;
    }

    /// Compacts etcd's history up to now (see [`Etcd::compact`]).
    pub async fn compact_etcd(&self) -> i64 {
        self.etcd.compact().await
    }

    /// kube-apiserver's process id (its CPU and memory are read from /proc by the load tool).
    pub async fn apiserver_pid(&self) -> u32 {
        self.apiserver.lock().await.process.pid()
    }

    /// kube-apiserver's log so far.
    pub async fn apiserver_log(&self) -> String {
        std::fs::read_to_string(&self.apiserver.lock().await.process.log).unwrap_or_default()
    }

    /// One counter of kube-apiserver's `/metrics`, summed over the series whose labels
    /// contain every `labels` pair (e.g. `("resource", "podcertificaterequests")`).
    pub async fn metric_sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let req = http::Request::get("/metrics").body(Vec::new()).unwrap();
        let text = self.admin.client.request_text(req).await.expect("/metrics");
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .filter(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // PODCERT_E2E_KEEP: the logs, kubeconfigs and volumes stay for a look afterwards.
        if std::env::var_os("PODCERT_E2E_KEEP").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            let _ = dir.keep();
        }
    }
}
