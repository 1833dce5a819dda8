//! The API server a run uses: the test API server in this process, or the real kube-apiserver
//! and etcd with `manifests/` applied and the signer under its ServiceAccount's token.

use crate::services::NAMESPACES;
use crate::signer::{Usage, process_usage};
use podcert_tests::apiserver::TestApiServer;
use podcert_tests::control_plane::{ControlPlane, Release};

/// The API server a run uses: the test API server in this process, or the real control plane.
pub(crate) enum Backend {
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
    pub(crate) async fn real(release: Release) -> Backend {
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

    pub(crate) fn signer_kubeconfig(&self) -> &std::path::Path {
        match self {
            Backend::Double { kubeconfig, .. } => kubeconfig,
            Backend::Real {
                signer_kubeconfig, ..
            } => signer_kubeconfig,
        }
    }

    /// The admin's client (the emulated kubelets and the tracker use it).
    pub(crate) fn client(&self) -> &kube::Client {
        match self {
            Backend::Double { client, .. } => client,
            Backend::Real { cp, .. } => &cp.admin.client,
        }
    }

    pub(crate) async fn trust_bundle_published(&self) -> bool {
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
    pub(crate) async fn apiserver_usage(&self) -> Option<Usage> {
        match self {
            Backend::Double { .. } => None,
            Backend::Real { cp, .. } => Some(process_usage(cp.apiserver_pid().await)),
        }
    }
}
