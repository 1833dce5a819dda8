//! The peer benchmark's machinery, small enough for every run (`scripts/bench-peers` is the
//! full one): podcert-signer and Kubernetes' reference signer each take the same small burst
//! on a fresh real kube-apiserver 1.37, answer every request, and are counted from
//! kube-apiserver's audit log — podcert-signer at exactly one PodCertificateRequest write per
//! certificate and no reads, the claim docs/performance.md makes for it.

use std::process::Command;

fn load(peer: Option<&str>) -> serde_json::Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_podcert-load"));
    cmd.arg("--signer-bin")
        .arg(podcert_tests::image_binary())
        .args([
            "--kubernetes",
            "1.37",
            "--requests",
            "40",
            "--concurrency",
            "16",
        ]);
    if let Some(peer) = peer {
        cmd.args(["--peer", peer]);
    }
    let out = cmd.output().expect("podcert-load runs");
    assert!(
        out.status.success(),
        "podcert-load {peer:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).expect("podcert-load prints one JSON report")
}

#[test]
fn podcert_signer_and_the_reference_signer_answer_the_same_load_and_their_api_calls_are_counted() {
    let ours = load(None);
    let reference = load(Some("hermetic"));
    for (report, name) in [(&ours, "podcert-signer"), (&reference, "hermetic")] {
        assert_eq!(report["signer_name"], name);
        assert_eq!(report["report"]["issued"], 40, "{name}: {report:#}");
        assert!(
            report["signer"]["cpu_seconds"].as_f64() > Some(0.0),
            "{name} was measured: {report:#}"
        );
        // Both write each certificate as a status update, which the audit log saw.
        let calls = &report["signer_api_requests"];
        assert_eq!(
            calls["by_kind"]["update podcertificaterequests/status"], 40,
            "{name}: {calls:#}"
        );
    }
    let calls = &ours["signer_api_requests"];
    assert_eq!(calls["pcr_writes_per_issued"], 1.0, "{calls:#}");
    assert_eq!(calls["reads"], 0, "no reads on the hot path: {calls:#}");
}
