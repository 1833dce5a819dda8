//! cert-manager's controller — its CA issuer, built from cert-manager's Go module by
//! `scripts/build-kubernetes` — run against the real control plane as an upstream authority
//! for the signer's intermediates. [`CertManager::start`] installs cert-manager's CRDs (from
//! the same module) once per control plane and runs the controller as a `system:masters`
//! user; with `approver` it approves requests to its own issuers, as a default install does,
//! and without it the test approves or denies each request ([`CertManager::decide`]), as a
//! security team's approver would.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::process::Process;
use super::{ControlPlane, binaries};

#[derive(Debug)]
pub struct CertManager {
    process: Option<Process>,
    kubeconfig: std::path::PathBuf,
    log_dir: std::path::PathBuf,
    runs: u32,
}

/// An approver's verdict on a CertificateRequest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approved,
    Denied,
}

impl CertManager {
    /// Installs the CRDs (if absent) and starts the controller.
    pub async fn start(cp: &ControlPlane, approver: bool) -> CertManager {
        let crds = binaries::binary("cert-manager-crds");
        cp.kubectl(
            &["apply", "--server-side", "-f", crds.to_str().unwrap()],
            None,
        )
        .unwrap_or_else(|e| panic!("installing cert-manager's CRDs: {e}"));
        cp.kubectl(
            &[
                "wait",
                "--for=condition=established",
                "--timeout=60s",
                "crd/certificaterequests.cert-manager.io",
                "crd/issuers.cert-manager.io",
                "crd/clusterissuers.cert-manager.io",
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("cert-manager's CRDs not established: {e}"));
        let who = cp.user("cert-manager", Some("system:masters")).await;
        let mut cm = CertManager {
            process: None,
            kubeconfig: who.kubeconfig,
            log_dir: cp.dir.path().to_path_buf(),
            runs: 0,
        };
        cm.run(approver);
        cm
    }

    /// Starts the controller again after [`CertManager::stop`].
    pub fn run(&mut self, approver: bool) {
        assert!(self.process.is_none(), "cert-manager is running already");
        self.runs += 1;
        let mut cmd = Command::new(binaries::binary("cert-manager"));
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cluster-resource-namespace=cert-manager");
        if !approver {
            cmd.arg("--no-approver");
        }
        let log = self.log_dir.join(format!("cert-manager-{}.log", self.runs));
        self.process = Some(Process::spawn("cert-manager", cmd, &log));
    }

    /// Stops the controller (an upstream outage); requests wait unanswered meanwhile.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(10));
        }
    }

    /// The controller's log, for a failing test's message.
    pub fn log_tail(&self) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(40))
            .unwrap_or_default()
    }

    /// Waits for a CertificateRequest in `ns` with neither an Approved nor a Denied
    /// condition, and records `verdict` on it through the status subresource, as
    /// `cmctl approve`/`deny` do; returns its name.
    pub async fn decide(
        &self,
        cp: &ControlPlane,
        ns: &str,
        verdict: Verdict,
        timeout: Duration,
    ) -> String {
        let deadline = tokio::time::Instant::now() + timeout;
        let cr = loop {
            let undecided = cp
                .list("cert-manager.io/v1", "CertificateRequest")
                .await
                .into_iter()
                .find(|cr| {
                    cr["metadata"]["namespace"] == ns
                        && !["Approved", "Denied"]
                            .iter()
                            .any(|t| condition(cr, t).is_some())
                });
            if let Some(cr) = undecided {
                break cr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no undecided CertificateRequest in {ns} within {timeout:?}; cert-manager's log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let name = cr["metadata"]["name"].as_str().unwrap().to_string();
        let (type_, reason) = match verdict {
            Verdict::Approved => ("Approved", "SecurityTeamApproved"),
            Verdict::Denied => ("Denied", "SecurityTeamDenied"),
        };
        let mut conditions = cr["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conditions.push(json!({
            "type": type_, "status": "True", "reason": reason,
            "message": format!("{type_} by the test's approver"),
            "lastTransitionTime": now_rfc3339(),
        }));
        let patch = json!({"status": {"conditions": conditions}});
        cp.kubectl(
            &[
                "patch",
                "certificaterequest",
                &name,
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch.to_string(),
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{type_} {name}: {e}"));
        name
    }
}

/// The condition of `type_` of `cr`, if set.
pub fn condition<'a>(cr: &'a Value, type_: &str) -> Option<&'a Value> {
    cr["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The time now as Kubernetes writes it (RFC 3339, seconds, UTC).
fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}
