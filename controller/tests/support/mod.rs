//! Running the real `podcert-signer` binary against the test API server.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use podcert_tests::apiserver::{ServerOptions, TestApiServer};
use podcert_tests::kubelet::{
    Created, Format, Kubelet, PodRequest, Terminal, Tracker, check_issued,
};

pub const SIGNER: &str = "example.com/spiffe";
pub const TRUST_DOMAIN: &str = "example.org";
pub const CA_NS: &str = "podcert-signer";
pub const CA_NAME: &str = "podcert-signer-ca";
pub const CTB_NAME: &str = "example.com:spiffe:ca";
/// The bundle canary pods select (`k8s.spiffe.io/canarying: preview`).
pub const PREVIEW_CTB_NAME: &str = "example.com:spiffe:ca.preview";
/// The signers' identity: the service account manifests/ creates and binds.
pub const SIGNER_USER: &str = "system:serviceaccount:podcert-signer:podcert-signer";

/// What `kubectl kustomize manifests/` renders, once per test binary.
pub fn rendered_manifests() -> &'static [serde_json::Value] {
    static RENDERED: std::sync::OnceLock<Vec<serde_json::Value>> = std::sync::OnceLock::new();
    RENDERED.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests");
        serde_saphyr::from_multiple::<serde_json::Value>(&podcert_tests::oracles::kustomize(&dir))
            .expect("kustomize output is YAML")
    })
}

/// What `kubectl kustomize manifests/` renders once `components` (under
/// manifests/components/) are added to its kustomization.yaml, as their headers tell users to.
pub fn rendered_manifests_with(components: &[&str]) -> Vec<serde_json::Value> {
    if components.is_empty() {
        return rendered_manifests().to_vec();
    }
    let manifests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("manifests");
    podcert_tests::oracles::stdout_of(
        std::process::Command::new("cp")
            .arg("-r")
            .arg(&manifests)
            .arg(&copy),
    );
    let kustomization = copy.join("kustomization.yaml");
    let mut text = std::fs::read_to_string(&kustomization).unwrap();
    text.push_str("components:\n");
    for c in components {
        text.push_str(&format!("  - components/{c}\n"));
    }
    std::fs::write(&kustomization, text).unwrap();
    serde_saphyr::from_multiple::<serde_json::Value>(&podcert_tests::oracles::kustomize(&copy))
        .expect("kustomize output is YAML")
}

/// The example manifests users apply (`examples/pod.yaml`, `examples/mtls/deploy.yaml`): each
/// file with its objects.
pub fn example_objects() -> Vec<(&'static str, Vec<serde_json::Value>)> {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    [
        "pod.yaml",
        "mtls/deploy.yaml",
        "user-annotations-policy.yaml",
    ]
    .into_iter()
    .map(|file| {
        let text = std::fs::read_to_string(examples.join(file)).unwrap();
        (file, serde_saphyr::from_multiple(&text).unwrap())
    })
    .collect()
}

/// What `helm template podcert-signer charts/podcert-signer --namespace podcert-signer`
/// renders with `set` (`--set` pairs).
pub fn rendered_chart(set: &[(&str, &str)]) -> Vec<serde_json::Value> {
    rendered_chart_with(set, &[])
}

/// [`rendered_chart`] with `--set-file` pairs too.
pub fn rendered_chart_with(
    set: &[(&str, &str)],
    set_file: &[(&str, &std::path::Path)],
) -> Vec<serde_json::Value> {
    let chart = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/podcert-signer");
    let yaml =
        podcert_tests::oracles::helm_template(&chart, "podcert-signer", CA_NS, set, set_file);
    serde_saphyr::from_multiple::<serde_json::Value>(&yaml)
        .expect("helm output is YAML")
        .into_iter()
        .filter(|o| !o.is_null())
        .collect()
}

/// A ClusterTrustBundle of `server`, if it exists: its roots (DER, in order) and its SPIFFE
/// sequence (annotation `podcert-signer/spiffe-sequence`).
pub fn ctb_roots_and_sequence(
    server: &TestApiServer,
    name: &str,
) -> Option<(Vec<Vec<u8>>, Option<u64>)> {
    let ctb = server.get("clustertrustbundles", "", name)?;
    let roots = pem::parse_many(ctb["spec"]["trustBundle"].as_str()?)
        .ok()?
        .into_iter()
        .map(|p| p.into_contents())
        .collect();
    let sequence = ctb["metadata"]["annotations"]["podcert-signer/spiffe-sequence"]
        .as_str()
        .and_then(|s| s.parse().ok());
    Some((roots, sequence))
}

/// The shipped Roles, ClusterRoles and bindings, stored in `server` as `kubectl apply -k`
/// would create them: every e2e signer runs under exactly this RBAC.
pub fn install_shipped_rbac(server: &TestApiServer) {
    server.install_rbac(rendered_manifests());
}

/// A test cluster: the API server, a kubeconfig for it and a client.
pub struct Cluster {
    pub server: TestApiServer,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    /// The signers' kubeconfig: their requests are logged as user [`SIGNER_USER`].
    pub signer_kubeconfig: PathBuf,
    pub client: kube::Client,
    /// An admin whose requests skip admission's cryptographic checks
    /// ([`podcert_tests::apiserver::authz::UNCHECKED`]).
    pub unchecked: kube::Client,
}

impl Cluster {
    /// Where `PODCERT_E2E_KEEP` keeps a finished scenario's kubeconfigs and signer logs.
    fn kept_dir(port: u16) -> PathBuf {
        std::env::temp_dir().join(format!("podcert-e2e-{port}"))
    }

    pub async fn start(options: ServerOptions) -> Cluster {
        let server = TestApiServer::start(options);
        install_shipped_rbac(&server);
        let dir = tempfile::tempdir().unwrap();
        if std::env::var_os("PODCERT_E2E_KEEP").is_some() {
            eprintln!(
                "the e2e files will be kept in {}",
                Self::kept_dir(server.port).display()
            );
        }
        let kubeconfig = server.write_kubeconfig(dir.path());
        let signer_kubeconfig = server.write_kubeconfig_as(dir.path(), SIGNER_USER);
        let client = podcert_tests::kube_client(&kubeconfig).await;
        let unchecked = podcert_tests::kube_client(
            &server.write_kubeconfig_as(dir.path(), podcert_tests::apiserver::authz::UNCHECKED),
        )
        .await;
        Cluster {
            unchecked,
            server,
            dir,
            kubeconfig,
            signer_kubeconfig,
            client,
        }
    }

    pub fn kubelet(&self, version: &str) -> Kubelet {
        Kubelet::new(self.client.clone(), version, SIGNER)
    }

    /// A kubelet emulator whose requests reach the signer even when kube-apiserver's admission
    /// would refuse them (a forged proof, a refused key type): what a privileged writer or a
    /// compromised API path could create, so the signer's own checks are tested.
    pub fn unchecked_kubelet(&self, version: &str) -> Kubelet {
        Kubelet::new(self.unchecked.clone(), version, SIGNER)
    }

    pub fn tracker(&self, version: &str) -> Tracker {
        Tracker::start(self.client.clone(), version)
    }

    /// The published trust bundle, once it exists.
    pub async fn trust_bundle(&self) -> String {
        for _ in 0..200 {
            if let Some(ctb) = self.server.get("clustertrustbundles", "", CTB_NAME) {
                return ctb["spec"]["trustBundle"].as_str().unwrap().to_string();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no ClusterTrustBundle {CTB_NAME} was published");
    }

    /// The CA Secret's data, decoded (key → text); None while there is no Secret.
    pub fn ca_secret_data(&self) -> Option<std::collections::BTreeMap<String, String>> {
        use base64::Engine;
        let secret = self.server.get("secrets", CA_NS, CA_NAME)?;
        let data = secret["data"].as_object()?;
        Some(
            data.iter()
                .map(|(k, v)| {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v.as_str().unwrap())
                        .unwrap();
                    (k.clone(), String::from_utf8(bytes).unwrap())
                })
                .collect(),
        )
    }

    /// The holder of the signers' leader Lease, if any.
    pub fn lease_holder(&self) -> Option<String> {
        self.server
            .get("leases", CA_NS, "podcert-signer")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
    }

    /// The first Event with `reason`, once one exists.
    pub async fn wait_for_event(&self, reason: &str, timeout: Duration) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if let Some(e) = self
                .server
                .list("events")
                .into_iter()
                .find(|e| e["reason"] == reason)
            {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no {reason} Event within {timeout:?}: {:#?}",
            self.server.list("events")
        );
    }

    /// How many times an Event with `reason` occurred: kube's Recorder patches a recurring
    /// Event into a series (`series.count`) rather than creating another.
    pub fn occurrences(&self, reason: &str) -> u64 {
        self.server
            .list("events")
            .into_iter()
            .filter(|e| e["reason"] == reason)
            .map(|e| e["series"]["count"].as_u64().unwrap_or(1))
            .sum()
    }

    /// At least `n` Events with `reason`, once there are.
    pub async fn wait_for_events(
        &self,
        reason: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found: Vec<_> = self
                .server
                .list("events")
                .into_iter()
                .filter(|e| e["reason"] == reason)
                .collect();
            if found.len() >= n {
                return found;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} {reason} Events within {timeout:?}",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn signer(&self, name: &str, extra: &[&str]) -> SignerProcess {
        SignerProcess::spawn(self, name, extra)
    }

    /// A signer from the binary `bin` (e.g. `podcert_tests::image_binary()`) instead of the test build's.
    pub fn signer_from(&self, bin: &std::path::Path, name: &str, extra: &[&str]) -> SignerProcess {
        SignerProcess::start(
            bin,
            &self.signer_kubeconfig,
            self.dir.path(),
            name,
            extra,
            &[],
        )
    }
}

/// The signer binary the tests are built with.
pub fn test_binary() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_podcert-signer"))
}

/// A running signer; killed when dropped. Its log is kept in the cluster's temp dir.
pub struct SignerProcess {
    pub child: Child,
    pub admin_port: u16,
    pub log: PathBuf,
    pub identity: String,
}

impl SignerProcess {
    pub fn spawn(cluster: &Cluster, name: &str, extra: &[&str]) -> SignerProcess {
        SignerProcess::start(
            test_binary(),
            &cluster.signer_kubeconfig,
            cluster.dir.path(),
            name,
            extra,
            &[],
        )
    }

    /// The signer binary `bin` with `kubeconfig`, its log in `dir`, `extra` flags and `env`
    /// (settings as a ConfigMap gives them). The signer name, trust domain and short leases
    /// the scenarios share are added unless `extra` or `env` set them.
    pub fn start(
        bin: &std::path::Path,
        kubeconfig: &std::path::Path,
        dir: &std::path::Path,
        name: &str,
        extra: &[&str],
        env: &[(String, String)],
    ) -> SignerProcess {
        let admin_port = podcert_tests::free_port();
        let log = dir.join(format!("{name}.log"));
        let identity = format!("signer-{name}");
        let mut cmd = Command::new(bin);
        let set = |flag: &str| {
            let var = format!(
                "PODCERT_{}",
                flag.trim_start_matches("--")
                    .replace('-', "_")
                    .to_uppercase()
            );
            extra.contains(&flag) || env.iter().any(|(k, _)| *k == var)
        };
        // A test's own signer name or trust domain wins (federation runs two domains).
        for (flag, value) in [("--signer-name", SIGNER), ("--trust-domain", TRUST_DOMAIN)] {
            if !set(flag) {
                cmd.args([flag, value]);
            }
        }
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--admin-addr", &format!("127.0.0.1:{admin_port}")])
            .args(["--identity", &identity]);
        let log_level = std::env::var("PODCERT_E2E_LOG_LEVEL")
            .unwrap_or_else(|_| "info,podcert_signer=debug".into());
        // Short leases and resyncs keep scenarios fast; a test's own flags win.
        for (flag, value) in [
            ("--lease-duration", "3s"),
            ("--lease-renew-interval", "1s"),
            ("--trust-bundle-resync", "1s"),
            ("--log-level", log_level.as_str()),
        ] {
            if !extra.contains(&flag) {
                cmd.args([flag, value]);
            }
        }
        // stdout and stderr both go to the log: a test that reads it sees all the process said.
        let out = std::fs::File::create(&log).unwrap();
        cmd.args(extra)
            .env_remove("KUBECONFIG")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd.spawn().expect("podcert-signer starts");
        SignerProcess {
            child,
            admin_port,
            log,
            identity,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET on the admin port; the status code, or None if nothing answers.
    pub async fn admin(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.admin_port))
            .await
            .ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.ok()?;
        let code = buf.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, buf))
    }

    /// The value of an unlabelled metric, if exposed.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = self.admin("/metrics").await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// The value of the series of `name` whose labels are exactly `labels` (as exposed, e.g.
    /// `trust_domain="b.example.net",result="ok"`), if exposed.
    pub async fn labelled_metric(&self, name: &str, labels: &str) -> Option<f64> {
        let (_, text) = self.admin("/metrics").await?;
        let series = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
    }

    /// The sum of every series of `name` (0 when none is exposed).
    pub async fn metric_sum(&self, name: &str) -> f64 {
        let Some((_, text)) = self.admin("/metrics").await else {
            return 0.0;
        };
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until the unlabelled metric `name` reads `value`; panics with the log if not.
    pub async fn wait_metric(&self, name: &str, value: f64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.metric(name).await != Some(value) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not reach {value} within {timeout:?}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if let Some((200, _)) = self.admin("/ready").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "signer not ready within {timeout:?}; log:\n{}",
            self.log_text()
        );
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        None
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::env::var_os("PODCERT_E2E_KEEP").is_some() {
            let _ = std::fs::rename(self.dir.path(), Self::kept_dir(self.server.port));
        }
    }
}

impl Drop for SignerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---- Scenario helpers shared by the e2e themes.

pub const SUPPORTED: [&str; 6] = [
    "ED25519",
    "ECDSAP256",
    "ECDSAP384",
    "ECDSAP521",
    "RSA3072",
    "RSA4096",
];

pub fn spiffe_id(p: &PodRequest) -> String {
    format!(
        "spiffe://{TRUST_DOMAIN}/ns/{}/sa/{}",
        p.namespace, p.service_account
    )
}

/// Every key type in both formats, in namespace `ns`.
pub fn all_key_types(ns: &str) -> Vec<PodRequest> {
    let mut pods = Vec::new();
    for (i, kt) in SUPPORTED.iter().enumerate() {
        for format in [Format::Pkix, Format::Csr] {
            pods.push(PodRequest::new(
                ns,
                &format!("pod-{i}-{format:?}").to_lowercase(),
                &format!("sa-{i}"),
                kt,
                format,
            ));
        }
    }
    pods
}

/// The closing checks of every scenario.
pub fn assert_scenario_invariants(
    cluster: &Cluster,
    created: &[Created],
    outcomes: &[Option<Terminal>],
    trust_bundle: &str,
) {
    for (c, o) in created.iter().zip(outcomes) {
        let t = o.as_ref().unwrap_or_else(|| {
            let stored = cluster
                .server
                .get("podcertificaterequests", &c.namespace, &c.name);
            panic!(
                "{}/{} still pending for the kubelet; the server holds {stored:#?}",
                c.namespace, c.name
            )
        });
        assert_ne!(t.condition(), "Failed", "{}: Failed {:?}", c.name, t.status);
        if t.condition() == "Issued" {
            check_issued(&t.status, &c.spki_der, &spiffe_id(&c.request), trust_bundle)
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        }
    }
    let writes = cluster.server.writes();
    let rejected: Vec<_> = writes
        .iter()
        .filter(|w| w.path.ends_with("/status") && w.status == 422)
        .collect();
    assert!(
        rejected.is_empty(),
        "the API server rejected status writes: {rejected:#?}"
    );
    // A status, once terminal, cannot be rewritten (the server refuses it): so each request
    // was answered by exactly one accepted status write.
    for c in created {
        let accepted = writes
            .iter()
            .filter(|w| w.path.ends_with(&format!("/{}/status", c.name)) && w.status == 200)
            .count();
        assert!(
            accepted <= 1,
            "{}: {accepted} accepted status writes",
            c.name
        );
    }
    let secret = cluster
        .server
        .get("secrets", CA_NS, CA_NAME)
        .expect("the CA Secret exists");
    // Intact: a root certificate, and its key unless the key is in a PKCS#11 token.
    let data = &secret["data"];
    assert!(
        data["tls.crt"].as_str().is_some_and(|c| !c.is_empty())
            && (data.get("tls.key").is_none()
                || data["tls.key"].as_str().is_some_and(|k| !k.is_empty())),
        "CA Secret intact: {data}"
    );
}

pub fn plain_burst(ns: &str, n: usize) -> Vec<PodRequest> {
    (0..n)
        .map(|i| {
            let kt = ["ECDSAP256", "ED25519"][i % 2];
            let format = if i % 3 == 0 {
                Format::Pkix
            } else {
                Format::Csr
            };
            PodRequest::new(
                ns,
                &format!("pod-{i}"),
                &format!("sa-{}", i % 5),
                kt,
                format,
            )
        })
        .collect()
}

pub async fn run_burst(
    cluster: &Cluster,
    version: &str,
    pods: &[PodRequest],
    timeout: Duration,
) -> (Vec<Created>, Vec<Option<Terminal>>) {
    let tracker = cluster.tracker(version);
    let created = cluster.kubelet(version).create_all(pods, 16).await.unwrap();
    let outcomes = tracker.wait_all(&created, timeout).await;
    (created, outcomes)
}

pub fn count_issued(outcomes: &[Option<Terminal>]) -> usize {
    outcomes
        .iter()
        .flatten()
        .filter(|t| t.condition() == "Issued")
        .count()
}

/// Runs a burst of `n` requests while `fault` acts on the server, and checks that all are
/// issued with no transient cause ever written.
pub async fn burst_under(cluster: &Cluster, n: usize, fault: impl AsyncFnOnce(&Cluster)) {
    let tracker = cluster.tracker("v1beta1");
    let created = cluster
        .kubelet("v1beta1")
        .create_all(&plain_burst("faults", n), 16)
        .await
        .unwrap();
    fault(cluster).await;
    let outcomes = tracker.wait_all(&created, Duration::from_secs(60)).await;
    let bundle = cluster.trust_bundle().await;
    assert_scenario_invariants(cluster, &created, &outcomes, &bundle);
    assert_eq!(count_issued(&outcomes), n);
}

/// Lets the signer's service account use the Leases `names` too (the shipped Role names only
/// the default one), for scenarios where replicas lead at once under separate Leases.
pub fn grant_leases(cluster: &Cluster, names: &[&str]) {
    let grant = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "extra-leases", "namespace": CA_NS},
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": names, "verbs": ["get", "update"]}]});
    cluster.server.put("roles", CA_NS, grant);
    let binding = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "extra-leases", "namespace": CA_NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "extra-leases"},
        "subjects": [{"kind": "ServiceAccount", "name": "podcert-signer", "namespace": CA_NS}]});
    cluster.server.put("rolebindings", CA_NS, binding);
}

pub async fn ready_cluster() -> (Cluster, SignerProcess) {
    let cluster = Cluster::start(ServerOptions::v1beta1()).await;
    let signer = cluster.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(30)).await;
    (cluster, signer)
}

/// How many PEM blocks `pem` holds.
pub fn pem_blocks(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

/// Files `n` plain requests in `namespace` through v1beta1, checks the scenario invariants and
/// that every one was issued (showing `context`, e.g. a signer's log, if not), and returns the
/// trust bundle they verified against.
pub async fn assert_burst_issued(
    cluster: &Cluster,
    namespace: &str,
    n: usize,
    timeout: Duration,
    context: &str,
) -> String {
    let (created, outcomes) =
        run_burst(cluster, "v1beta1", &plain_burst(namespace, n), timeout).await;
    let bundle = cluster.trust_bundle().await;
    assert_scenario_invariants(cluster, &created, &outcomes, &bundle);
    assert_eq!(count_issued(&outcomes), n, "{context}");
    bundle
}

/// Held by the heavy scenarios (chaos, the 200-pod refresh soak) so that they run one at a
/// time: on two cores, two of them at once starve each other's signers and measure the
/// machine, not the signer. Shorter scenarios still run beside them.
pub async fn heavy_scenario() -> tokio::sync::MutexGuard<'static, ()> {
    static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    HEAVY.lock().await
}

/// How often the leader looks at its waiting requests (`podcert_signer::BACKLOG_LOOK_EVERY`).
pub const PENDING_LOOK: Duration = podcert_signer::BACKLOG_LOOK_EVERY;

// The SPIFFE mTLS example's workloads, with certificates the real signer issued
// (examples_mtls.rs, e2e federation).

/// Writes `contents` to `path` as the kubelet does: a new file moved into place.
pub fn write_atomically(path: &std::path::Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Has the signer of `cluster` issue a certificate for service account `sa` of namespace
/// `shop` with fixture key `key_type`, and writes the credential bundle (key, then chain) to
/// `path`.
pub async fn issue(cluster: &Cluster, sa: &str, key_type: &str, path: &std::path::Path) {
    let tracker = cluster.tracker("v1beta1");
    let pod = PodRequest::new("shop", &format!("{sa}-0"), sa, key_type, Format::Csr);
    let created = cluster
        .kubelet("v1beta1")
        .create_all(&[pod], 1)
        .await
        .unwrap();
    let outcome = tracker
        .wait_all(&created, Duration::from_secs(20))
        .await
        .remove(0)
        .expect("terminal");
    assert_eq!(outcome.condition(), "Issued");
    let key = podcert_tests::fixtures::kubelet_keys()
        .into_iter()
        .find(|k| k.key_type == key_type)
        .unwrap();
    write_atomically(
        path,
        &format!(
            "{}{}",
            key.key_pem(),
            outcome.status["certificateChain"].as_str().unwrap()
        ),
    );
}

/// Has `signer` itself — no cluster, no admission — issue a certificate for service account
/// `sa` of namespace `shop` with the Ed25519 fixture key, and writes the credential bundle to
/// `path`: what a stolen or foreign CA could mint.
pub fn issue_outside(signer: &signer_core::Signer, sa: &str, path: &std::path::Path) {
    let key = podcert_tests::fixtures::kubelet_keys()
        .into_iter()
        .find(|k| k.key_type == "ED25519")
        .unwrap();
    let request = signer_core::Request {
        namespace: "shop".into(),
        pod_uid: "u".into(),
        service_account_name: sa.into(),
        max_expiration_seconds: 86_400,
        unverified_user_annotations: Default::default(),
        key_material: signer_core::KeyMaterial::StubCsr {
            der: key.stub_csr_der.clone(),
        },
    };
    let signer_core::Decision::Issue(issued) = signer
        .decide(&request, std::time::SystemTime::now())
        .unwrap()
    else {
        panic!("the signer denied {sa}")
    };
    write_atomically(path, &format!("{}{}", key.key_pem(), issued.chain_pem));
}

/// An example server workload on 127.0.0.1; what it saw of each connection.
pub struct Workload {
    pub addr: std::net::SocketAddr,
    pub served: std::sync::Arc<std::sync::Mutex<Vec<spiffe_mtls::Served>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start_server(
    files: std::sync::Arc<spiffe_mtls::CredentialFiles>,
    allowed: &[&str],
) -> Workload {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served: std::sync::Arc<std::sync::Mutex<Vec<spiffe_mtls::Served>>> = Default::default();
    let s = served.clone();
    let allowed = allowed.iter().map(|a| a.to_string()).collect();
    let task = tokio::spawn(async move {
        let _ =
            spiffe_mtls::serve(listener, files, allowed, move |r| s.lock().unwrap().push(r)).await;
    });
    Workload { addr, served, task }
}
