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
mod faults;
mod http;
mod paging;
mod resources;
pub mod store;
pub mod validate;

pub use faults::{Faults, ResourceFault};
pub use paging::{Snapshot, Snapshots};
pub use resources::{ResourceType, ServerOptions};

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tokio::net::TcpListener;

use store::Store;

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
        if shared
            .faults
            .pcr_gc_paused
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            continue;
        }
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
