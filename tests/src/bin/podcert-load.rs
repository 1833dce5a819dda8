//! podcert-load: the kubelet emulator's load mode.
//!
//! Starts the test API server — or, with `--kubernetes RELEASE` (1.35, 1.36, 1.37), the real
//! kube-apiserver and etcd of the real-cluster tier, `manifests/` applied and the signer under
//! its ServiceAccount's token — starts the signer binary against it, files N requests with at most C in flight (or at a steady `--rate`),
//! waits until each is terminal, and prints one JSON report: counts, throughput, latency
//! percentiles (create sent → terminal status seen by the watching kubelet), and the signer
//! process's CPU time (user and kernel) and peak RSS. With `--restart` it then starts a second
//! signer against the same API server (CA stored, every request decided) and reports its
//! start-to-first-issuance time and peak RSS. With `--services N` the cluster also holds N
//! Services and 2N pods in ten labelled namespaces, and the signer runs an identity policy
//! that selects namespaces by label and asks for Service DNS names and pod IPs: every request
//! names one of those pods, which exactly one Service selects. The signer is stopped with
//! SIGTERM, so a profiler wrapped around it (`--signer-bin` a script) writes its data.
//!
//! Two baselines run without a cluster or a signer process (`podcert_tests::baseline`):
//! `--core-only` decides the same requests with signer-core alone, one at a time at `--rate`
//! (or back to back), and reports the CPU each cost — the floor of the signer's CPU per
//! certificate at that pace; `--stall-probe SECONDS` spins a thread per CPU and reports how
//! long this machine stopped them — the floor of any latency measured on it.
//!
//! ```text
//! cargo build --release -p podcert-signer -p podcert-tests
//! target/release/podcert-load --signer-bin target/release/podcert-signer --requests 2000 --concurrency 64
//! ```

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use podcert_tests::apiserver::{ServerOptions, TestApiServer};
use podcert_tests::control_plane::{ControlPlane, Release};
use podcert_tests::kubelet::{Format, Kubelet, PodRequest, Report, Tracker};

struct Args {
    signer_bin: String,
    requests: usize,
    concurrency: usize,
    rate: Option<f64>,
    key_types: Vec<String>,
    format: String,
    signer_concurrency: String,
    restart: bool,
    services: usize,
    core_only: bool,
    stall_probe: Option<f64>,
    kubernetes: Option<Release>,
}

fn usage() -> ! {
    eprintln!(
        "usage: podcert-load --signer-bin PATH [--requests N] [--concurrency C] [--rate PER_SECOND] \
         [--key-types ECDSAP256,ED25519] [--format csr|pkix|mixed] [--signer-concurrency N] [--restart] [--services N] \
         [--core-only] [--stall-probe SECONDS] [--kubernetes 1.35|1.36|1.37]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut a = Args {
        signer_bin: "target/release/podcert-signer".into(),
        requests: 1000,
        concurrency: 64,
        rate: None,
        key_types: vec!["ECDSAP256".into()],
        format: "csr".into(),
        signer_concurrency: "16".into(),
        restart: false,
        services: 0,
        core_only: false,
        stall_probe: None,
        kubernetes: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--signer-bin" => a.signer_bin = value(),
            "--requests" => a.requests = value().parse().unwrap_or_else(|_| usage()),
            "--concurrency" => a.concurrency = value().parse().unwrap_or_else(|_| usage()),
            "--rate" => a.rate = Some(value().parse().unwrap_or_else(|_| usage())),
            "--key-types" => a.key_types = value().split(',').map(str::to_string).collect(),
            "--format" => a.format = value(),
            "--signer-concurrency" => a.signer_concurrency = value(),
            "--restart" => a.restart = true,
            "--services" => a.services = value().parse().unwrap_or_else(|_| usage()),
            "--core-only" => a.core_only = true,
            "--stall-probe" => a.stall_probe = Some(value().parse().unwrap_or_else(|_| usage())),
            "--kubernetes" => {
                let v = value();
                a.kubernetes = Some(
                    Release::ALL
                        .into_iter()
                        .find(|r| r.to_string() == v)
                        .unwrap_or_else(|| usage()),
                )
            }
            _ => usage(),
        }
    }
    a
}

/// What /proc says a process has used so far.
#[derive(Clone, Copy, Default)]
struct Usage {
    /// CPU seconds in user space and in the kernel.
    user: f64,
    system: f64,
    /// Peak resident set, KiB.
    peak_rss_kib: u64,
}

fn process_usage(pid: u32) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on Linux.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Usage {
        user: ticks(11) as f64 / 100.0,
        system: ticks(12) as f64 / 100.0,
        peak_rss_kib: hwm,
    }
}

/// Stops the signer as Kubernetes would (SIGTERM, then SIGKILL after a grace period), so a
/// wrapper such as a profiler sees a normal exit.
fn stop(signer: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &signer.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = signer.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = signer.kill();
    let _ = signer.wait();
}

fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

const NAMESPACES: usize = 10;

/// Request `i`'s namespace, pod and service account.
fn names(i: usize) -> (String, String, String) {
    (
        format!("ns-{}", i % NAMESPACES),
        format!("pod-{i}"),
        format!("sa-{}", i % 20),
    )
}

fn pod_uid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// The identity policy of a `--services` run.
const POLICY: &str = "\
rules:
  - name: load
    namespaces:
      selector: {matchLabels: {podcert: enabled}}
    dnsNames: {services: true, podIP: true}
";

/// Stores `services` Services and twice as many pods (pod `i` as [`names`] says, labelled
/// `app: app-<i mod services>`, so exactly the Service of that number selects it) in ten
/// labelled namespaces, straight into the API server's storage. Objects carry what real
/// ones carry that the signer must not keep: ports, cluster IPs, a last-applied annotation.
fn populate(server: &TestApiServer, services: usize) {
    let applied = "x".repeat(600);
    for n in 0..NAMESPACES {
        server.put(
            "namespaces",
            "",
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": format!("ns-{n}"), "uid": format!("ns-uid-{n}"),
                             "labels": {"podcert": "enabled", "kubernetes.io/metadata.name": format!("ns-{n}")}}}),
        );
    }
    for j in 0..services {
        let ns = format!("ns-{}", j % NAMESPACES);
        server.put(
            "services",
            &ns,
            serde_json::json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("svc-{j}"), "namespace": ns, "uid": format!("svc-uid-{j}"),
                             "labels": {"app": format!("app-{j}")},
                             "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied}},
                "spec": {"selector": {"app": format!("app-{j}")}, "type": "ClusterIP",
                         "clusterIP": format!("10.96.{}.{}", j / 250, j % 250),
                         "ports": [{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]}}),
        );
    }
    for i in 0..2 * services {
        let (ns, pod, sa) = names(i);
        server.put(
            "pods",
            &ns,
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "uid": pod_uid(i),
                             "labels": {"app": format!("app-{}", i % services)}},
                "spec": {"serviceAccountName": sa, "nodeName": "node-1",
                         "containers": [{"name": "app", "image": "registry.example/app:1"}]},
                "status": {"phase": "Running", "podIP": format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256),
                           "podIPs": [{"ip": format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256)}]}}),
        );
    }
}

fn spawn_signer(args: &Args, kubeconfig: &std::path::Path) -> std::process::Child {
    let admin_port = podcert_tests::free_port();
    let mut cmd = Command::new(&args.signer_bin);
    if args.services > 0 {
        let policy = kubeconfig.with_file_name("identity-policy.yaml");
        std::fs::write(&policy, POLICY).expect("the policy file is written");
        cmd.arg("--identity-policy").arg(policy);
    }
    cmd.args([
        "--signer-name",
        "example.com/spiffe",
        "--trust-domain",
        "example.org",
        "--log-level",
        "warn",
    ])
    .arg("--kubeconfig")
    .arg(kubeconfig)
    .args([
        "--admin-addr",
        &format!("127.0.0.1:{admin_port}"),
        "--concurrency",
        &args.signer_concurrency,
    ])
    .stdin(Stdio::null())
    .spawn()
    .unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build it with cargo build --release -p podcert-signer)",
            args.signer_bin
        )
    })
}

/// A second signer started against the same API server, its CA already stored and every
/// request of the run decided: the time from its start to its first issuance (a request
/// filed as it starts), and its peak RSS once that request is issued, which is what holding
/// the run's decided requests costs it.
async fn restart(
    args: &Args,
    kubeconfig: &std::path::Path,
    kubelet: &Kubelet,
    tracker: &Tracker,
) -> serde_json::Value {
    let pod = PodRequest::new("restart", "pod-restart", "sa", "ECDSAP256", Format::Csr);
    let started = Instant::now();
    let mut signer = spawn_signer(args, kubeconfig);
    let created = kubelet.create_all(&[pod], 1).await.unwrap();
    let outcome = tracker.wait_all(&created, Duration::from_secs(60)).await;
    let first_issuance = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used = process_usage(signer.id());
    stop(&mut signer);
    let issued = outcome[0]
        .as_ref()
        .is_some_and(|t| t.condition() == "Issued");
    serde_json::json!({
        "issued": issued,
        "start_to_first_issuance_ms": (first_issuance.as_secs_f64() * 1000.0).round(),
        "decided_requests_listed": args.requests,
        "cpu_ms": ((used.user + used.system) * 1000.0).round(),
        "peak_rss_mib": mib(used.peak_rss_kib),
    })
}

/// The API server a run uses: the test API server in this process, or the real control plane.
enum Backend {
    Double {
        server: TestApiServer,
        kubeconfig: std::path::PathBuf,
        client: kube::Client,
    },
    Real {
        cp: Box<ControlPlane>,
        signer_kubeconfig: std::path::PathBuf,
    },
}

impl Backend {
    /// kube-apiserver and etcd of `release`, `manifests/` applied as a user applies them, and
    /// the namespaces the load files requests in.
    async fn real(release: Release) -> Backend {
        let cp = ControlPlane::start(release).await;
        let manifests = podcert_tests::control_plane::binaries::workspace().join("manifests");
        let yaml = podcert_tests::oracles::kustomize(&manifests);
        cp.kubectl(&["apply", "-f", "-"], Some(&yaml))
            .unwrap_or_else(|e| panic!("applying manifests/: {e}"));
        for n in 0..NAMESPACES {
            cp.create(podcert_tests::control_plane::objects::namespace(&format!(
                "ns-{n}"
            )))
            .await;
        }
        cp.create(podcert_tests::control_plane::objects::namespace("restart"))
            .await;
        let signer = cp.service_account("podcert-signer", "podcert-signer").await;
        Backend::Real {
            cp: Box::new(cp),
            signer_kubeconfig: signer.kubeconfig,
        }
    }

    fn signer_kubeconfig(&self) -> &std::path::Path {
        match self {
            Backend::Double { kubeconfig, .. } => kubeconfig,
            Backend::Real {
                signer_kubeconfig, ..
            } => signer_kubeconfig,
        }
    }

    /// The admin's client (the emulated kubelets and the tracker use it).
    fn client(&self) -> &kube::Client {
        match self {
            Backend::Double { client, .. } => client,
            Backend::Real { cp, .. } => &cp.admin.client,
        }
    }

    async fn trust_bundle_published(&self) -> bool {
        const NAME: &str = "example.com:spiffe:ca";
        match self {
            Backend::Double { server, .. } => server.get("clustertrustbundles", "", NAME).is_some(),
            Backend::Real { cp, .. } => {
                let version = if cp.release() >= Release::V1_37 {
                    "v1"
                } else {
                    "v1beta1"
                };
                cp.get(
                    &format!("certificates.k8s.io/{version}"),
                    "ClusterTrustBundle",
                    "",
                    NAME,
                )
                .await
                .is_some()
            }
        }
    }

    /// kube-apiserver's CPU and memory so far (the double runs in this process: None).
    async fn apiserver_usage(&self) -> Option<Usage> {
        match self {
            Backend::Double { .. } => None,
            Backend::Real { cp, .. } => Some(process_usage(cp.apiserver_pid().await)),
        }
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    if let Some(seconds) = args.stall_probe {
        let stalls = podcert_tests::baseline::stalls(seconds);
        println!("{}", serde_json::json!({ "stalls": stalls }));
        return;
    }
    if args.core_only {
        let core = podcert_tests::baseline::core_alone(args.requests, args.rate);
        println!("{}", serde_json::json!({ "core_only": core }));
        return;
    }
    if args.services > 0 && args.kubernetes.is_some() {
        eprintln!(
            "--services needs the test API server (it stores the pods and Services directly); leave out --kubernetes"
        );
        std::process::exit(2);
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = match args.kubernetes {
        None => {
            let server = TestApiServer::start(ServerOptions::v1beta1());
            if args.services > 0 {
                if args.requests > 2 * args.services {
                    eprintln!("--requests must not exceed twice --services (one request per pod)");
                    std::process::exit(2);
                }
                populate(&server, args.services);
            }
            let kubeconfig = server.write_kubeconfig(dir.path());
            let client = podcert_tests::kube_client(&kubeconfig).await;
            Backend::Double {
                server,
                kubeconfig,
                client,
            }
        }
        Some(release) => Backend::real(release).await,
    };
    let mut signer = spawn_signer(&args, backend.signer_kubeconfig());
    let client = backend.client().clone();
    // Ready once the CA exists and the watch has synced.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !backend.trust_bundle_published().await && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = process_usage(signer.id());
    let apiserver_idle = backend.apiserver_usage().await;

    let pods: Vec<PodRequest> = (0..args.requests)
        .map(|i| {
            let kt = &args.key_types[i % args.key_types.len()];
            let format = match args.format.as_str() {
                "pkix" => Format::Pkix,
                "mixed" if i % 2 == 0 => Format::Pkix,
                _ => Format::Csr,
            };
            let (ns, pod, sa) = names(i);
            let mut request = PodRequest::new(&ns, &pod, &sa, kt, format);
            if args.services > 0 {
                request.pod_uid = Some(pod_uid(i));
            }
            request
        })
        .collect();
    let kubelet = Kubelet::new(client.clone(), "v1beta1", "example.com/spiffe");
    let tracker = Tracker::start(client, "v1beta1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let created = match args.rate {
        None => kubelet.create_all(&pods, args.concurrency).await.unwrap(),
        Some(rate) => {
            let mut created = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            for chunk in pods.chunks(1) {
                tick.tick().await;
                created.extend(kubelet.create_all(chunk, 1).await.unwrap());
            }
            created
        }
    };
    let outcomes = tracker.wait_all(&created, Duration::from_secs(300)).await;
    let report = Report::new(&created, &outcomes, started);
    // With `--services`, every leaf must name the one Service that selects its pod.
    let wrong_names = if args.services > 0 {
        created
            .iter()
            .zip(&outcomes)
            .filter(|(c, t)| {
                let i: usize = c.request.pod_name["pod-".len()..].parse().expect("pod-<i>");
                let svc = format!("svc-{}.{}.svc", i % args.services, c.request.namespace);
                t.as_ref().is_none_or(|t| {
                    t.condition() != "Issued"
                        || t.sans().1 != [svc.clone(), format!("{svc}.cluster.local")]
                })
            })
            .count()
    } else {
        0
    };
    let used = process_usage(signer.id());
    let apiserver_used = backend.apiserver_usage().await;
    stop(&mut signer);
    let restart = if args.restart {
        Some(restart(&args, backend.signer_kubeconfig(), &kubelet, &tracker).await)
    } else {
        None
    };
    let round2 = |x: f64| (x * 100.0).round() / 100.0;
    let (user, system) = (used.user - idle.user, used.system - idle.system);
    let per_request_ms = |seconds: f64| round2(seconds * 1000.0 / args.requests as f64);
    let out = serde_json::json!({
        "report": report,
        "load": {"requests": args.requests, "concurrency": args.concurrency, "rate": args.rate,
                 "key_types": args.key_types, "format": args.format, "signer_concurrency": args.signer_concurrency,
                 "services": args.services, "pods": 2 * args.services},
        "signer": {"cpu_seconds": round2(user + system),
                   "cpu_ms_per_request": per_request_ms(user + system),
                   "user_ms_per_request": per_request_ms(user),
                   "system_ms_per_request": per_request_ms(system),
                   "peak_rss_mib": mib(used.peak_rss_kib)},
        "restart": restart,
        "leaves_without_their_service_names": wrong_names,
        "api_server": match (&backend, apiserver_idle, apiserver_used) {
            (Backend::Real { cp, .. }, Some(idle), Some(used)) => serde_json::json!({
                "kube_apiserver": cp.release().to_string(),
                "cpu_ms_per_request": per_request_ms(used.user + used.system - idle.user - idle.system),
                "peak_rss_mib": mib(used.peak_rss_kib),
            }),
            _ => serde_json::json!("the test API server (in process)"),
        },
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
    if report.pending > 0 || report.issued != args.requests || wrong_names > 0 {
        std::process::exit(1);
    }
}
