//! `podcert-signer status` against the real server, run as an operator would (an admin's
//! kubeconfig, the signer's flags): a pod's requests with their state and why — issued, denied
//! by the kubelet's own request, waiting — and then the signer: its Lease, CA Secret and
//! trust bundle as the real server keeps them.

use std::process::Command;
use std::time::Duration;

use podcert_tests::control_plane::Release;
use podcert_tests::control_plane::objects::CertificateSource;

use crate::cluster::RealCluster;
use crate::support::SIGNER;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_issued_denied_and_waiting_requests_and_the_signer() {
    let rc = RealCluster::start(Release::V1_37).await;
    let mut signer = rc.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(60)).await;
    rc.namespace("shop", &["web"]).await;
    let (_, _kubelet) = rc.node_with_kubelet("node-a", Release::V1_37).await;
    let mut annotated = CertificateSource::new(SIGNER, "ED25519");
    annotated.user_annotations = Some(serde_json::json!({"example.com/team": "shop"}));
    rc.pod_with(
        "shop",
        "web",
        "web",
        "node-a",
        &[CertificateSource::new(SIGNER, "ECDSAP256"), annotated],
    )
    .await;
    rc.terminal_pcrs("shop", "web", 2, Duration::from_secs(60), &signer)
        .await;
    // The signer goes; a new pod's request waits.
    signer.kill();
    rc.pod("shop", "late", "web", "node-a", &["ECDSAP256"])
        .await;
    rc.filed("shop", "late", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(4)).await; // the Lease (3 s) runs out

    let out = Command::new(env!("CARGO_BIN_EXE_podcert-signer"))
        .args(["--signer-name", SIGNER, "--kubeconfig"])
        .arg(&rc.cp.admin.kubeconfig)
        .args(["status", "--namespace", "shop"])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let row = |pod: &str, state: &str| {
        text.lines()
            .find(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 4 && f[0] == "shop" && f[2] == pod && f[4] == state
            })
            .unwrap_or_else(|| panic!("no {pod} {state} row in\n{text}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("web", "Issued")[3], SIGNER, "{text}");
    assert_eq!(
        row("web", "Denied")[6],
        "InvalidUnverifiedUserAnnotations",
        "{text}"
    );
    row("late", "Pending");
    for line in [
        "  leader:       none: signer-a's Lease podcert-signer/podcert-signer expired",
        "  CA Secret:    podcert-signer/podcert-signer-ca: present; no rotation under way",
        "  trust bundle: example.com:spiffe:ca: 1 root(s)",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
}
