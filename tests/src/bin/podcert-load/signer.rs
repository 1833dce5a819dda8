//! The signer process under load: started, stopped with SIGTERM (so a profiler around it
//! writes its data), restarted over a decided backlog, and what /proc says it used.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Args;
use crate::services::POLICY;
use podcert_tests::kubelet::{Format, Kubelet, PodRequest, Tracker};

/// What /proc says a process has used so far.
#[derive(Clone, Copy, Default)]
pub(crate) struct Usage {
    /// CPU seconds in user space and in the kernel.
    pub(crate) user: f64,
    pub(crate) system: f64,
    /// Peak resident set, KiB.
    pub(crate) peak_rss_kib: u64,
}

pub(crate) fn process_usage(pid: u32) -> Usage {
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
pub(crate) fn stop(signer: &mut std::process::Child) {
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

pub(crate) fn mib(kib: u64) -> f64 {
    (kib as f64 / 1024.0 * 10.0).round() / 10.0
}

/// Starts the signer under test: podcert-signer (`--signer-bin`), or the `--peer`.
pub(crate) fn spawn_signer(args: &Args, kubeconfig: &std::path::Path) -> std::process::Child {
    if let Some(peer) = args.peer {
        return peer.spawn(kubeconfig, "example.com/spiffe");
    }
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

/// Files one request (pod `pod` in the namespace `restart`) and says whether it was issued
/// within 60 s.
pub(crate) async fn issue_one(kubelet: &Kubelet, tracker: &Tracker, pod: &str) -> bool {
    let request = PodRequest::new("restart", pod, "sa", "ECDSAP256", Format::Csr);
    let created = kubelet.create_all(&[request], 1).await.unwrap();
    let outcome = tracker.wait_all(&created, Duration::from_secs(60)).await;
    outcome[0]
        .as_ref()
        .is_some_and(|t| t.condition() == "Issued")
}

/// A second signer started against the same API server, its CA already stored and every
/// request of the run decided: the time from its start to its first issuance (a request
/// filed as it starts), and its peak RSS once that request is issued, which is what holding
/// the run's decided requests costs it.
pub(crate) async fn restart(
    args: &Args,
    kubeconfig: &std::path::Path,
    kubelet: &Kubelet,
    tracker: &Tracker,
) -> serde_json::Value {
    let started = Instant::now();
    let mut signer = spawn_signer(args, kubeconfig);
    let issued = issue_one(kubelet, tracker, "pod-restart").await;
    let first_issuance = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used = process_usage(signer.id());
    stop(&mut signer);
    serde_json::json!({
        "issued": issued,
        "start_to_first_issuance_ms": (first_issuance.as_secs_f64() * 1000.0).round(),
        "decided_requests_listed": args.requests,
        "cpu_ms": ((used.user + used.system) * 1000.0).round(),
        "peak_rss_mib": mib(used.peak_rss_kib),
    })
}
