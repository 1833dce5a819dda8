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
//! A run starts timing once the signer has issued a first request (its CA made, its watch
//! synced). Against the real kube-apiserver it also reports the signer's own requests to it,
//! from kube-apiserver's audit log (`audit`): per issued certificate, and by verb and resource.
//! `--peer hermetic` runs Kubernetes' reference signer (`peer`) in podcert-signer's place, under
//! the same account and load (`--kubernetes 1.37` only: it speaks the v1 API).
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

mod audit;
mod backend;
mod peer;
mod services;
mod signer;

use std::time::{Duration, Instant};

use crate::backend::Backend;
use crate::peer::Peer;
use crate::services::{names, pod_uid, populate};
use crate::signer::{issue_one, mib, process_usage, restart, spawn_signer, stop};
use podcert_tests::apiserver::{ServerOptions, TestApiServer};
use podcert_tests::control_plane::Release;
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
    peer: Option<Peer>,
}

fn usage() -> ! {
    eprintln!(
        "usage: podcert-load --signer-bin PATH [--requests N] [--concurrency C] [--rate PER_SECOND] \
         [--key-types ECDSAP256,ED25519] [--format csr|pkix|mixed] [--signer-concurrency N] [--restart] [--services N] \
         [--core-only] [--stall-probe SECONDS] [--kubernetes 1.35|1.36|1.37] [--peer hermetic]"
    );
    std::process::exit(2)
}

/// The one of `all` whose name is `given`, or the usage.
fn one_of<T, const N: usize>(all: [T; N], given: &str, name: impl Fn(&T) -> String) -> T {
    all.into_iter()
        .find(|t| name(t) == given)
        .unwrap_or_else(|| usage())
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
        peer: None,
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
                a.kubernetes = Some(one_of(Release::ALL, &value(), |r| r.to_string()))
            }
            "--peer" => a.peer = Some(one_of(Peer::ALL, &value(), |p| p.name().to_string())),
            _ => usage(),
        }
    }
    if let Some(peer) = a.peer
        && a.kubernetes != Some(peer.release())
    {
        eprintln!(
            "--peer {} runs against the real kube-apiserver {} only: add --kubernetes {}",
            peer.name(),
            peer.release(),
            peer.release()
        );
        std::process::exit(2);
    }
    a
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
                _server: server,
                kubeconfig,
                client,
            }
        }
        Some(release) => Backend::real(release).await,
    };
    let mut signer = spawn_signer(&args, backend.signer_kubeconfig());
    let client = backend.client().clone();
    let kubelet = Kubelet::new(client.clone(), "v1beta1", "example.com/spiffe");
    let tracker = Tracker::start(client, "v1beta1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Ready once a first request is issued: the CA made, the watch synced.
    if !issue_one(&kubelet, &tracker, "pod-warm-up").await {
        stop(&mut signer);
        eprintln!("the signer did not issue a first request within 60 s");
        std::process::exit(1);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = process_usage(signer.id());
    let apiserver_idle = backend.apiserver_usage().await;
    let audit_mark = backend.audit_mark();

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
    let api_requests = backend.audit_since(audit_mark);
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
        "signer_name": args.peer.map_or("podcert-signer", Peer::name),
        "signer_api_requests": api_requests.map(|counts| audit::summary(&counts, report.issued)),
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
