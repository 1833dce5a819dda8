//! The API server a run uses: the test API server in this process, or the real kube-apiserver
//! and etcd with `manifests/` applied, the signer under its ServiceAccount's token and that
//! account's requests in kube-apiserver's audit log.

use crate::audit::{AuditLog, Mark};
use crate::services::NAMESPACES;
use crate::signer::{Usage, process_usage};
use podcert_tests::apiserver::TestApiServer;
use podcert_tests::control_plane::Release;
use podcert_tests::control_plane::{ApiServerOptions, ControlPlane};

/// The API server a run uses: the test API server in this process, or the real control plane.
pub(crate) enum Backend {
    Double {
        /// Serves for as long as the run holds it.
        _server: TestApiServer,
        kubeconfig: std::path::PathBuf,
        client: kube::Client,
    },
    Real {
        cp: Box<ControlPlane>,
        signer_kubeconfig: std::path::PathBuf,
        audit: AuditLog,
        _audit_dir: tempfile::TempDir,
    },
}

impl Backend {
    /// kube-apiserver and etcd of `release`, `manifests/` applied as a user applies them, and
    /// the namespaces the load files requests in.
    pub(crate) async fn real(release: Release) -> Backend {
        let audit_dir = tempfile::tempdir().expect("a directory for the audit log");
        let (audit, flags) = AuditLog::configure(audit_dir.path());
        let mut options = ApiServerOptions::new(release);
        options.extra_flags = flags;
        let cp = ControlPlane::start_with(options).await;
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
            audit,
            _audit_dir: audit_dir,
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

    /// Where the signer's requests to kube-apiserver stand now (the double keeps no log: None).
    pub(crate) fn audit_mark(&self) -> Option<Mark> {
        match self {
            Backend::Double { .. } => None,
            Backend::Real { audit, .. } => Some(audit.mark()),
        }
    }

    /// The signer's requests since `mark`, by verb and resource.
    pub(crate) fn audit_since(
        &self,
        mark: Option<Mark>,
    ) -> Option<std::collections::BTreeMap<String, u64>> {
        match (self, mark) {
            (Backend::Real { audit, .. }, Some(mark)) => Some(audit.since(mark)),
            _ => None,
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
