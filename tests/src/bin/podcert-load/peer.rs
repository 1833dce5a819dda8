//! The signers podcert-signer is measured against (`--peer NAME`): other PodCertificateRequest
//! signers, built from their Go modules by `scripts/build-kubernetes`, started against the same
//! API server under the same ServiceAccount, signer name and kubelet load as podcert-signer.
//! `scripts/bench-peers` runs each in turn and prints them side by side.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use podcert_tests::control_plane::Release;
use podcert_tests::control_plane::binaries::binary;

/// A peer signer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    /// Kubernetes' reference signer, `k8s.io/kubernetes/test/utils/hermeticpodcertificatesigner`,
    /// in the main upstream's e2e image gives it (`tests/kubernetes/cmd/hermetic-signer`).
    Hermetic,
}

impl Peer {
    pub(crate) const ALL: [Peer; 1] = [Peer::Hermetic];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Peer::Hermetic => "hermetic",
        }
    }

    /// The one release whose API the peer's module speaks.
    pub(crate) fn release(self) -> Release {
        match self {
            Peer::Hermetic => Release::V1_37,
        }
    }

    /// Starts the peer for `signer_name` with `kubeconfig`; its log goes beside the kubeconfig.
    pub(crate) fn spawn(self, kubeconfig: &Path, signer_name: &str) -> Child {
        let log = kubeconfig.with_file_name(format!("{}-signer.log", self.name()));
        let log = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut cmd = match self {
            Peer::Hermetic => {
                let mut cmd = Command::new(binary("hermetic-signer@1.37"));
                // client-go's default limit (5/s, bursts of 10) would measure its rate limiter,
                // not the signer; podcert-signer has none.
                cmd.args(["--kube-api-qps", "100000", "--kube-api-burst", "100000"]);
                cmd
            }
        };
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--signer-name", signer_name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the {} peer: {e}", self.name()))
    }
}
