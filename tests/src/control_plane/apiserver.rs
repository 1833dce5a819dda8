//! kube-apiserver on loopback, configured as upstream's own PodCertificateRequest integration
//! tests configure it (`--authorization-mode=Node,RBAC`, NodeRestriction, the feature gates
//! and runtime-config the release needs) and as `hack/local-up-cluster.sh` does for the rest:
//! client certificates from the test CA, a service-account issuer and key, a service range.
//! It can be stopped and started again on the same port with the same etcd (a restart).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::Release;
use super::binaries::binary;
use super::pki::Pki;
use super::process::Process;

/// What a control plane serves beyond its release's defaults.
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    pub release: Release,
    /// Serve `certificates.k8s.io/v1beta1` PodCertificateRequests and ClusterTrustBundles.
    /// Before 1.37 they are the only versions and always on; 1.37 serves `v1` by default and
    /// `v1beta1` only when asked (clusters with 1.35 kubelets must ask: conversion to `v1`
    /// drops their key material).
    pub serve_v1beta1: bool,
    /// More flags, appended last (so they win).
    pub extra_flags: Vec<String>,
}

impl ApiServerOptions {
    pub fn new(release: Release) -> Self {
        ApiServerOptions {
            release,
            serve_v1beta1: true,
            extra_flags: Vec::new(),
        }
    }

    /// The flags that switch the pod-certificate APIs on for this release.
    pub fn api_flags(&self) -> Vec<String> {
        let beta = "certificates.k8s.io/v1beta1/podcertificaterequests=true,\
                    certificates.k8s.io/v1beta1/clustertrustbundles=true";
        match self.release {
            // Beta, off by default: both gates (the projection gate governs the
            // clusterTrustBundle volume source in pod validation) and the beta resources.
            Release::V1_35 | Release::V1_36 => vec![
                "--feature-gates=PodCertificateRequest=true,ClusterTrustBundle=true,ClusterTrustBundleProjection=true".into(),
                format!("--runtime-config={beta}"),
            ],
            // GA and on by default in v1; v1beta1 (deprecated) only on request.
            Release::V1_37 if self.serve_v1beta1 => vec![format!("--runtime-config={beta}")],
            Release::V1_37 => vec![],
        }
    }
}

/// Another process took the port kube-apiserver was to listen on.
#[derive(Debug)]
pub struct PortClash(pub u16);

impl std::fmt::Display for PortClash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "port clash: 127.0.0.1:{} is taken by another process (address already in use)",
            self.0
        )
    }
}

#[derive(Debug)]
pub struct KubeApiServer {
    pub process: Process,
    pub port: u16,
    options: ApiServerOptions,
    etcd_url: String,
    dir: PathBuf,
}

impl KubeApiServer {
    /// Starts kube-apiserver on `port` and returns once it is ready (`/readyz`); `Err` when
    /// another process holds the port (any other failure panics with the server's log).
    pub async fn start(
        options: &ApiServerOptions,
        pki: &Pki,
        etcd_url: &str,
        dir: &Path,
        admin: &kube::Client,
        port: u16,
    ) -> Result<KubeApiServer, PortClash> {
        let mut server = KubeApiServer {
            process: Self::spawn(options, pki, etcd_url, dir, port),
            port,
            options: options.clone(),
            etcd_url: etcd_url.to_string(),
            dir: dir.to_path_buf(),
        };
        server.wait_ready(admin).await?;
        Ok(server)
    }

    fn spawn(
        options: &ApiServerOptions,
        pki: &Pki,
        etcd_url: &str,
        dir: &Path,
        port: u16,
    ) -> Process {
        let path = |f: &str| pki.path(f).display().to_string();
        let mut cmd = Command::new(binary(&format!("kube-apiserver@{}", options.release)));
        cmd.args([
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // A loopback address cannot be the kubernetes Service's endpoint; no pod dials it.
            "--endpoint-reconciler-type=none".into(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            format!("--tls-cert-file={}", path("apiserver.crt")),
            format!("--tls-private-key-file={}", path("apiserver.key")),
            format!("--client-ca-file={}", path("ca.crt")),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", path("sa.pub")),
            format!("--service-account-signing-key-file={}", path("sa.key")),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--authorization-mode=Node,RBAC".into(),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--profiling=false".into(),
            "--v=1".into(),
        ]);
        cmd.args(options.api_flags()).args(&options.extra_flags);
        Process::spawn("kube-apiserver", cmd, &dir.join("kube-apiserver.log"))
    }

    async fn wait_ready(&mut self, admin: &kube::Client) -> Result<(), PortClash> {
        // A cold start on two busy cores (bootstrap RBAC, the watch caches) takes seconds.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.process.exited() {
                let tail = self.process.log_tail(40);
                if tail.contains("address already in use") {
                    return Err(PortClash(self.port));
                }
                panic!(
                    "kube-apiserver {} exited ({status}) while starting; the last of {}:\n{tail}",
                    self.options.release,
                    self.process.log.display()
                );
            }
            let req = http::Request::get("/readyz").body(Vec::new()).unwrap();
            if let Ok(text) = admin.request_text(req).await
                && text.trim() == "ok"
            {
                return Ok(());
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver {} not ready within 120 s; the last of its log:\n{}",
                self.options.release,
                self.process.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops the server (SIGTERM, as a rolling restart does), waits `downtime`, and starts it
    /// again on the same port with the same etcd. Every watch is cut; clients reconnect.
    pub async fn restart(&mut self, pki: &Pki, admin: &kube::Client, downtime: Duration) {
        // It stops listening at once on SIGTERM, as in a rolling restart, then spends half a
        // minute winding down; what clients see is over by then.
        self.process.stop(Duration::from_secs(3));
        // The log of the last run stays beside the new one.
        let _ = std::fs::rename(
            &self.process.log,
            self.process.log.with_extension("previous.log"),
        );
        tokio::time::sleep(downtime).await;
        self.process = Self::spawn(&self.options, pki, &self.etcd_url, &self.dir, self.port);
        if let Err(clash) = self.wait_ready(admin).await {
            panic!("restarting kube-apiserver: {clash}");
        }
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        // At a test's end nobody waits on its graceful wind-down.
        self.process.kill();
    }
}
