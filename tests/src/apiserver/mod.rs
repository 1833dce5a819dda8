//! An in-process Kubernetes API test server, behaving like kube-apiserver on every path the
//! signer and the kubelet touch.
//!
//! It serves HTTPS on a loopback address with a CA of its own, and
//! [`TestApiServer::write_kubeconfig`] writes an ordinary kubeconfig for it, so the real
//! `podcert-signer` binary (and `kubectl`, through `podcert-apiserver`) connects as to a
//! cluster. It serves discovery (no OpenAPI), PodCertificateRequests in the versions a given
//! release serves ([`ServerOptions`]) with upstream's conversion, ClusterTrustBundles or not,
//! Secrets, Leases, Events and RBAC objects. It authenticates by bearer token, impersonates,
//! and authorizes as the RBAC authorizer does, with `sign` and `attest` ([`authz`]); validates
//! creation, updates and status writes as upstream's validation and strategies do
//! ([`validate`], `docs/pcr-contract.md`); pages lists from snapshots; garbage-collects old
//! PCRs; and injects faults on demand ([`Faults`]): 429/500 storms, refused writes, slow
//! answers, failing lists, stalled or dropped watches, 409s on status writes, and restarts
//! that lose every watch and the change history.

pub mod authz;
mod http;
pub mod store;
pub mod validate;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tokio::net::TcpListener;

use store::Store;

/// A resource type the server serves.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: &'static str,
    pub versions: Vec<&'static str>,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub has_status: bool,
}

impl ResourceType {
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }
}

/// Which Kubernetes the server pretends to be.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Served versions of podcertificaterequests (empty: not served).
    pub pcr_versions: Vec<&'static str>,
    /// Served versions of clustertrustbundles (empty: not served).
    pub ctb_versions: Vec<&'static str>,
    /// How many changes are kept for watches before 410 Gone.
    pub history_limit: usize,
    /// PCRs older than this are deleted (kube-controller-manager does it at 30 minutes).
    pub pcr_gc_after: Duration,
    /// Where to listen: a loopback address (port 0 picks a free port).
    pub listen: std::net::SocketAddr,
    /// The wall clock status times are checked against ("within 5 minutes of
    /// kube-apiserver's current time"): the system's, or the signer's compressed clock in a
    /// time-compressed run. Object timestamps and garbage collection stay on real time.
    pub clock: signer_core::time::Clock,
}

impl ServerOptions {
    /// 1.35/1.36 with the beta APIs enabled.
    pub fn v1beta1() -> Self {
        ServerOptions {
            pcr_versions: vec!["v1beta1"],
            ctb_versions: vec!["v1beta1"],
            history_limit: 100_000,
            pcr_gc_after: Duration::from_secs(1800),
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            clock: signer_core::time::Clock::system(),
        }
    }

    /// 1.37: GA, v1 preferred and v1beta1 still served.
    pub fn v1_and_v1beta1() -> Self {
        ServerOptions {
            pcr_versions: vec!["v1", "v1beta1"],
            ctb_versions: vec!["v1", "v1beta1"],
            ..Self::v1beta1()
        }
    }

    /// Only v1 served (a future release without the beta).
    pub fn v1_only() -> Self {
        ServerOptions {
            pcr_versions: vec!["v1"],
            ctb_versions: vec!["v1"],
            ..Self::v1beta1()
        }
    }

    /// 1.34 with the alpha gate on.
    pub fn v1alpha1() -> Self {
        ServerOptions {
            pcr_versions: vec!["v1alpha1"],
            ctb_versions: vec!["v1beta1"],
            ..Self::v1beta1()
        }
    }

    fn resources(&self) -> Vec<ResourceType> {
        let mut r = vec![
            ResourceType {
                group: "",
                versions: vec!["v1"],
                plural: "secrets",
                kind: "Secret",
                namespaced: true,
                has_status: false,
            },
            ResourceType {
                group: "",
                versions: vec!["v1"],
                plural: "events",
                kind: "Event",
                namespaced: true,
                has_status: false,
            },
            ResourceType {
                group: "events.k8s.io",
                versions: vec!["v1"],
                plural: "events",
                kind: "Event",
                namespaced: true,
                has_status: false,
            },
            ResourceType {
                group: "coordination.k8s.io",
                versions: vec!["v1"],
                plural: "leases",
                kind: "Lease",
                namespaced: true,
                has_status: false,
            },
        ];
        // What the identity policy reads: namespace labels, pods, Services.
        for (plural, kind, namespaced) in [
            ("namespaces", "Namespace", false),
            ("pods", "Pod", true),
            ("services", "Service", true),
        ] {
            r.push(ResourceType {
                group: "",
                versions: vec!["v1"],
                plural,
                kind,
                namespaced,
                has_status: plural != "namespaces",
            });
        }
        for (plural, kind, namespaced) in [
            ("roles", "Role", true),
            ("rolebindings", "RoleBinding", true),
            ("clusterroles", "ClusterRole", false),
            ("clusterrolebindings", "ClusterRoleBinding", false),
        ] {
            r.push(ResourceType {
                group: "rbac.authorization.k8s.io",
                versions: vec!["v1"],
                plural,
                kind,
                namespaced,
                has_status: false,
            });
        }
        if !self.pcr_versions.is_empty() {
            r.push(ResourceType {
                group: "certificates.k8s.io",
                versions: self.pcr_versions.clone(),
                plural: "podcertificaterequests",
                kind: "PodCertificateRequest",
                namespaced: true,
                has_status: true,
            });
        }
        if !self.ctb_versions.is_empty() {
            r.push(ResourceType {
                group: "certificates.k8s.io",
                versions: self.ctb_versions.clone(),
                plural: "clustertrustbundles",
                kind: "ClusterTrustBundle",
                namespaced: false,
                has_status: false,
            });
        }
        r
    }
}

/// Which requests to one resource (by plural) fail while a [`Faults::fail_resource`] is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceFault {
    /// Lists (not watches).
    Lists(&'static str),
    /// Creates, updates, patches and deletes.
    Writes(&'static str),
}

/// Faults to inject; counters are consumed one per request.
#[derive(Debug)]
pub struct Faults {
    /// Answer the next N requests 429 Too Many Requests with Retry-After: 1 (`system:masters`
    /// is exempt, as API Priority and Fairness exempts it).
    pub throttle_next: AtomicU32,
    /// Answer the next N non-watch requests 500.
    pub error_next: AtomicU32,
    /// Answer the next N PCR status writes 409 Conflict.
    pub conflict_next_status_writes: AtomicU32,
    /// Refuse every write with 503 while set.
    pub refuse_writes: AtomicBool,
    /// Hold back watch events while set (delivered when cleared).
    pub stall_watches: AtomicBool,
    /// Delay every answer by this many milliseconds.
    pub delay_ms: AtomicU64,
    /// Answer 500 to one kind of request on one resource while set, as an API server whose
    /// storage times out on one resource does.
    pub fail_resource: Mutex<Option<ResourceFault>>,
    down_until: Mutex<Option<Instant>>,
    throttled_until: Mutex<Option<Instant>>,
    failing_until: Mutex<Option<Instant>>,
    watch_epoch: tokio::sync::watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            throttle_next: AtomicU32::new(0),
            error_next: AtomicU32::new(0),
            conflict_next_status_writes: AtomicU32::new(0),
            refuse_writes: AtomicBool::new(false),
            stall_watches: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            fail_resource: Mutex::new(None),
            down_until: Mutex::new(None),
            throttled_until: Mutex::new(None),
            failing_until: Mutex::new(None),
            watch_epoch: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Faults {
    fn take(&self, counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    fn is_down(&self) -> bool {
        Self::before(&self.down_until)
    }

    fn before(until: &Mutex<Option<Instant>>) -> bool {
        until.lock().unwrap().is_some_and(|t| Instant::now() < t)
    }

    /// Whether this request is throttled: one of [`Faults::throttle_next`], or within a
    /// [`Faults::throttle_for`] window.
    fn throttles(&self) -> bool {
        self.take(&self.throttle_next) || Self::before(&self.throttled_until)
    }

    /// Whether this (non-watch) request fails 500: one of [`Faults::error_next`], or within a
    /// [`Faults::fail_for`] window.
    fn fails(&self) -> bool {
        self.take(&self.error_next) || Self::before(&self.failing_until)
    }

    /// Throttles (as [`Faults::throttle_next`] does) every request for `period` from now, however
    /// many arrive: a fault whose length does not depend on how busy the clients are.
    pub fn throttle_for(&self, period: Duration) {
        *self.throttled_until.lock().unwrap() = Some(Instant::now() + period);
    }

    /// Answers 500 (as [`Faults::error_next`] does) to every non-watch request for `period`.
    pub fn fail_for(&self, period: Duration) {
        *self.failing_until.lock().unwrap() = Some(Instant::now() + period);
    }

    /// Ends every open watch (clients re-watch from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.watch_epoch.send_modify(|e| *e += 1);
    }
}

/// One request the server answered, for assertions.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The bearer token the client presented (each kubeconfig written names its user).
    pub user: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub body: String,
}

/// One list result, fixed at its first page so that later pages continue from it.
#[derive(Debug)]
pub struct Snapshot {
    pub resource_version: u64,
    pub items: Vec<Value>,
}

/// The snapshots that paged lists may still continue from: the newest few, forgotten on
/// compaction as etcd forgets old revisions.
#[derive(Debug, Default)]
pub struct Snapshots {
    next_id: u64,
    kept: std::collections::VecDeque<(String, Arc<Snapshot>)>,
}

impl Snapshots {
    const KEPT: usize = 64;

    fn keep(&mut self, snapshot: Arc<Snapshot>) -> String {
        if let Some((id, _)) = self.kept.iter().find(|(_, s)| Arc::ptr_eq(s, &snapshot)) {
            return id.clone();
        }
        self.next_id += 1;
        let id = format!("s{}", self.next_id);
        self.kept.push_back((id.clone(), snapshot));
        while self.kept.len() > Self::KEPT {
            self.kept.pop_front();
        }
        id
    }

    fn get(&self, id: &str) -> Option<Arc<Snapshot>> {
        self.kept
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, s)| s.clone())
    }
}

/// State shared by the handlers.
#[derive(Debug)]
pub struct Shared {
    resources: Vec<ResourceType>,
    pub store: Mutex<Store>,
    snapshots: Mutex<Snapshots>,
    pub faults: Faults,
    log: Mutex<Vec<Logged>>,
    pub clock: signer_core::time::Clock,
}

impl Shared {
    fn log(
        &self,
        user: &str,
        method: &::http::Method,
        path: &str,
        query: &str,
        status: u16,
        body: &[u8],
    ) {
        let body = if method == ::http::Method::GET {
            String::new()
        } else {
            String::from_utf8_lossy(body).into_owned()
        };
        self.log.lock().unwrap().push(Logged {
            user: user.to_string(),
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            status,
            body,
        });
    }
}

/// A server and an admin client for it: what tests that speak REST to the server need.
pub struct Served {
    pub server: TestApiServer,
    pub client: kube::Client,
    _kubeconfig_dir: tempfile::TempDir,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Served {
    pub async fn start(options: ServerOptions) -> Served {
        let server = TestApiServer::start(options);
        let dir = tempfile::tempdir().expect("a temp dir");
        let client = crate::kube_client(&server.write_kubeconfig(dir.path())).await;
        Served {
            server,
            client,
            _kubeconfig_dir: dir,
        }
    }
}

/// A running test API server; stops when dropped.
#[derive(Debug)]
pub struct TestApiServer {
    pub shared: Arc<Shared>,
    pub port: u16,
    ca_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The server's TLS: a certificate for `localhost` and 127.0.0.1 from a CA of its own, whose
/// PEM the kubeconfigs carry.
fn tls_config() -> (Arc<rustls::ServerConfig>, String) {
    use rustls::pki_types::pem::PemObject;
    let web = crate::https::WebCert::generate("podcert test apiserver CA");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![
                rustls::pki_types::CertificateDer::from_pem_slice(web.cert_pem.as_bytes()).unwrap(),
            ],
            rustls::pki_types::PrivateKeyDer::from_pem_slice(web.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (Arc::new(config), web.ca_pem)
}

impl TestApiServer {
    /// Starts a server on its own thread and runtime, so it outlives any test's runtime.
    ///
    /// # Panics
    /// If `options.listen` is not a loopback address: this server is for tests only.
    pub fn start(options: ServerOptions) -> TestApiServer {
        assert!(
            options.listen.ip().is_loopback(),
            "the test API server listens on loopback only, not {}",
            options.listen
        );
        let shared = Arc::new(Shared {
            resources: options.resources(),
            store: Mutex::new(Store::new(options.history_limit)),
            snapshots: Mutex::default(),
            faults: Faults::default(),
            log: Mutex::new(Vec::new()),
            clock: options.clock,
        });
        let (tls, ca_pem) = tls_config();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let s = shared.clone();
        let gc_after = options.pcr_gc_after;
        let listen = options.listen;
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::bind(listen).await.expect("the listen address is free");
                port_tx.send(listener.local_addr().unwrap().port()).unwrap();
                let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                tokio::spawn(gc(s.clone(), gc_after));
                let serve = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else { continue };
                        // Go's net package turns Nagle's algorithm off on every TCP connection
                        // (TCPConn.SetNoDelay's default), so kube-apiserver writes each watch
                        // event at once; with it on, a small write waits for the ACK of the
                        // last, which the watching client delays by up to 40 ms.
                        let _ = tcp.set_nodelay(true);
                        let (acceptor, s) = (acceptor.clone(), s.clone());
                        tokio::spawn(async move {
                            let Ok(tls) = acceptor.accept(tcp).await else { return };
                            let service = service_fn(move |req| {
                                let s = s.clone();
                                async move { Ok::<_, std::convert::Infallible>(s.handle(req).await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
                        });
                    }
                };
                tokio::select! {
                    _ = serve => {}
                    _ = stop_rx => {}
                }
            });
            rt.shutdown_timeout(Duration::from_millis(100));
        });
        let port = port_rx.recv().expect("test API server starts");
        TestApiServer {
            shared,
            port,
            ca_pem,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Writes a kubeconfig for this server into `dir` and returns its path.
    pub fn write_kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        self.write_kubeconfig_as(dir, "podcert-test")
    }

    /// The same, for a client identified as `user` in [`TestApiServer::requests`].
    pub fn write_kubeconfig_as(&self, dir: &std::path::Path, user: &str) -> std::path::PathBuf {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url(), "certificate-authority-data": ca}}],
            "users": [{"name": "test", "user": {"token": user}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": "default"}}],
        });
        let path = dir.join(format!("kubeconfig-{}-{user}.json", self.port));
        std::fs::write(&path, kubeconfig.to_string()).unwrap();
        path
    }

    /// A restart: every watch is lost, the change history is gone (watches from old
    /// resourceVersions get 410 and must relist), and for `downtime` every request gets 503.
    pub fn restart(&self, downtime: Duration) {
        *self.shared.faults.down_until.lock().unwrap() = Some(Instant::now() + downtime);
        self.shared.store.lock().unwrap().compact();
        self.shared.snapshots.lock().unwrap().kept.clear();
        self.shared.faults.drop_watches();
    }

    /// Stores every Role, RoleBinding, ClusterRole and ClusterRoleBinding among `objects`
    /// (other kinds are skipped); returns how many.
    pub fn install_rbac<'a>(&self, objects: impl IntoIterator<Item = &'a Value>) -> usize {
        let mut installed = 0;
        for obj in objects {
            let plural = match obj["kind"].as_str() {
                Some("Role") => "roles",
                Some("RoleBinding") => "rolebindings",
                Some("ClusterRole") => "clusterroles",
                Some("ClusterRoleBinding") => "clusterrolebindings",
                _ => continue,
            };
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
            self.put(plural, ns, obj.clone());
            installed += 1;
        }
        installed
    }

    /// The stored object, as stored.
    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .store
            .lock()
            .unwrap()
            .get(&(plural.into(), namespace.into(), name.into()))
            .cloned()
    }

    pub fn list(&self, plural: &str) -> Vec<Value> {
        self.shared
            .store
            .lock()
            .unwrap()
            .list(plural, None)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Stores `obj` directly, bypassing validation (to plant corrupt data).
    pub fn put(&self, plural: &str, namespace: &str, obj: Value) -> Value {
        let name = obj["metadata"]["name"].as_str().expect("name").to_string();
        let mut obj = obj;
        if obj["metadata"]["creationTimestamp"].is_null() {
            obj["metadata"]["creationTimestamp"] = Value::String(
                Timestamp::from_second(Timestamp::now().as_second())
                    .unwrap()
                    .to_string(),
            );
        }
        self.shared
            .store
            .lock()
            .unwrap()
            .put((plural.into(), namespace.into(), name), obj)
    }

    pub fn delete(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .store
            .lock()
            .unwrap()
            .delete(&(plural.into(), namespace.into(), name.into()))
    }

    /// Every write (non-GET request) the server answered so far.
    pub fn writes(&self) -> Vec<Logged> {
        self.shared
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.method != "GET")
            .cloned()
            .collect()
    }

    /// Every request the server answered so far, reads and watches included.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared.log.lock().unwrap().clone()
    }
}

impl Drop for TestApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Deletes PCRs older than `after`, as kube-controller-manager does.
async fn gc(shared: Arc<Shared>, after: Duration) {
    let mut tick = tokio::time::interval(
        (after / 4).clamp(Duration::from_millis(100), Duration::from_secs(10)),
    );
    loop {
        tick.tick().await;
        let cutoff = Timestamp::now().as_second() - after.as_secs() as i64;
        let mut store = shared.store.lock().unwrap();
        let old: Vec<_> = store
            .list("podcertificaterequests", None)
            .filter(|(_, o)| {
                o["metadata"]["creationTimestamp"]
                    .as_str()
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .is_some_and(|t| t.as_second() <= cutoff)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in old {
            store.delete(&k);
        }
    }
}
