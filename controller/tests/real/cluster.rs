//! A real cluster for one scenario: the control plane of one release, with `manifests/`
//! applied by `kubectl apply -k` exactly as a user installs the signer, and the signer binary
//! run under its ServiceAccount's token with the Deployment's arguments and the ConfigMap's
//! settings — so the shipped RBAC and configuration are what the real authorizers judge.

use std::time::Duration;

use podcert_tests::control_plane::kubelet::PodcertKubelet;
use podcert_tests::control_plane::objects::{self, CertificateSource};
use podcert_tests::control_plane::{ApiServerOptions, ControlPlane, Identity, Node, Release};
use serde_json::Value;

use crate::support::{
    CA_NAME, CA_NS, CTB_NAME, SIGNER, SignerProcess, rendered_manifests_with, test_binary,
};

/// The trust domain `manifests/config.env` ships.
pub const TRUST_DOMAIN: &str = "cluster.local";

pub struct RealCluster {
    pub cp: ControlPlane,
    /// The signer's ServiceAccount, with a token from the TokenRequest API.
    pub signer_identity: Identity,
    /// What `manifests/` rendered with the components in use, as applied.
    pub manifests: Vec<Value>,
}

impl RealCluster {
    /// A control plane of `release` (v1beta1 served too) with `manifests/` applied.
    pub async fn start(release: Release) -> RealCluster {
        Self::start_with(ApiServerOptions::new(release), &[]).await
    }

    /// With `components` (under manifests/components/) added, as their headers tell users.
    pub async fn start_with(options: ApiServerOptions, components: &[&str]) -> RealCluster {
        let cp = ControlPlane::start_with(options).await;
        let manifests = rendered_manifests_with(components);
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": manifests});
        cp.kubectl(&["apply", "-f", "-"], Some(&list.to_string()))
            .unwrap_or_else(|e| panic!("kubectl apply of manifests/ with {components:?}: {e}"));
        let signer_identity = cp.service_account(CA_NS, "podcert-signer").await;
        RealCluster {
            cp,
            signer_identity,
            manifests,
        }
    }

    /// The signer as the shipped Deployment runs it: its container's arguments and the
    /// ConfigMap's settings as environment, under the ServiceAccount's token; `extra` flags
    /// after them (a scenario's short leases, say).
    pub fn signer(&self, name: &str, extra: &[&str]) -> SignerProcess {
        let (args, env) = deployment_settings(&self.manifests);
        let mut all: Vec<&str> = args
            .iter()
            .map(String::as_str)
            // The Deployment listens on every interface; a test listens on loopback, and serves
            // /metrics over HTTPS only where it says so.
            .filter(|a| !a.starts_with("--admin-addr") && !a.starts_with("--secure-metrics-addr"))
            .collect();
        all.extend_from_slice(extra);
        SignerProcess::start(
            test_binary(),
            &self.signer_identity.kubeconfig,
            self.cp.dir.path(),
            name,
            &all,
            &env,
        )
    }

    /// The PodCertificateRequest version to read requests through: v1beta1 while served (a
    /// 1.35 kubelet's key material is lost in conversion to v1), else v1.
    pub fn pcr_version(&self) -> &'static str {
        if self.cp.options.serve_v1beta1 || self.cp.release() < Release::V1_37 {
            "v1beta1"
        } else {
            "v1"
        }
    }

    /// The ClusterTrustBundle version this release serves by default.
    pub fn ctb_version(&self) -> &'static str {
        if self.cp.release() >= Release::V1_37 {
            "v1"
        } else {
            "v1beta1"
        }
    }

    /// A namespace with these service accounts.
    pub async fn namespace(&self, ns: &str, service_accounts: &[&str]) {
        self.cp.create(objects::namespace(ns)).await;
        for sa in service_accounts {
            self.cp.create(objects::service_account(ns, sa)).await;
        }
    }

    /// A node and the kubelet code of `release` running as it.
    pub async fn node_with_kubelet(&self, name: &str, release: Release) -> (Node, PodcertKubelet) {
        let node = self.cp.node(name).await;
        let kubelet = PodcertKubelet::start(&self.cp, release, &node).await;
        (node, kubelet)
    }

    /// A pod on `node` with one `podCertificate` volume per key type (`svid-<i>`) and the
    /// signer's trust bundle (`trust`, selected by the label manifests/ gives it).
    pub async fn pod(
        &self,
        ns: &str,
        name: &str,
        sa: &str,
        node: &str,
        key_types: &[&str],
    ) -> Value {
        let sources: Vec<CertificateSource> = key_types
            .iter()
            .map(|kt| CertificateSource::new(SIGNER, kt))
            .collect();
        self.pod_with(ns, name, sa, node, &sources).await
    }

    pub async fn pod_with(
        &self,
        ns: &str,
        name: &str,
        sa: &str,
        node: &str,
        sources: &[CertificateSource],
    ) -> Value {
        let selector =
            serde_json::json!({"matchLabels": {"app.kubernetes.io/name": "podcert-signer"}});
        self.pod_selecting(ns, name, sa, node, sources, selector)
            .await
    }

    /// [`Self::pod_with`], its trust bundle selected by `selector`.
    pub async fn pod_selecting(
        &self,
        ns: &str,
        name: &str,
        sa: &str,
        node: &str,
        sources: &[CertificateSource],
        selector: Value,
    ) -> Value {
        self.cp
            .create(objects::pod(
                ns,
                name,
                sa,
                node,
                sources,
                Some((SIGNER, selector)),
            ))
            .await
    }

    /// The requests of namespace `ns`, through [`Self::pcr_version`].
    pub async fn pcrs(&self, ns: &str) -> Vec<Value> {
        self.cp
            .list(
                &format!("certificates.k8s.io/{}", self.pcr_version()),
                "PodCertificateRequest",
            )
            .await
            .into_iter()
            .filter(|p| p["metadata"]["namespace"] == ns)
            .collect()
    }

    /// Waits until the kubelet has filed a request for pod `ns/pod`; returns the first seen.
    pub async fn filed(&self, ns: &str, pod: &str, timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut of_pod = self.pcrs(ns).await;
            of_pod.retain(|p| p["spec"]["podName"] == pod);
            if let Some(pcr) = of_pod.pop() {
                return pcr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the kubelet filed no request for {ns}/{pod} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `n` requests of pod `ns/pod` are terminal; returns them oldest first.
    pub async fn terminal_pcrs(
        &self,
        ns: &str,
        pod: &str,
        n: usize,
        timeout: Duration,
        signer: &SignerProcess,
    ) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut done: Vec<Value> = self
                .pcrs(ns)
                .await
                .into_iter()
                .filter(|p| p["spec"]["podName"] == pod && terminal(p).is_some())
                .collect();
            if done.len() >= n {
                done.sort_by_key(|p| {
                    p["metadata"]["creationTimestamp"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                });
                return done;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} requests of {ns}/{pod} terminal within {timeout:?}: {:#}\nthe signer's log:\n{}",
                done.len(),
                Value::Array(self.pcrs(ns).await),
                signer.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The signer's (live) ClusterTrustBundle as stored, once it exists.
    pub async fn trust_bundle_object(&self) -> Value {
        self.trust_bundle_named(CTB_NAME).await
    }

    /// The ClusterTrustBundle `name` as stored, once it exists.
    pub async fn trust_bundle_named(&self, name: &str) -> Value {
        for _ in 0..300 {
            if let Some(ctb) = self
                .cp
                .get(
                    &format!("certificates.k8s.io/{}", self.ctb_version()),
                    "ClusterTrustBundle",
                    "",
                    name,
                )
                .await
            {
                return ctb;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no ClusterTrustBundle {name} was published");
    }

    pub async fn trust_bundle(&self) -> String {
        self.trust_bundle_object().await["spec"]["trustBundle"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The CA Secret as stored.
    pub async fn ca_secret(&self) -> Option<Value> {
        self.cp.get("v1", "Secret", CA_NS, CA_NAME).await
    }

    /// The latest Event whose reason is `reason`, waited for up to `timeout`; panics with the
    /// signer's log if none comes.
    pub async fn event(&self, reason: &str, timeout: Duration, signer: &SignerProcess) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let events = self.cp.list("v1", "Event").await;
            if let Some(e) = events.into_iter().rfind(|e| e["reason"] == reason) {
                return e;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {reason} Event within {timeout:?}; the signer's log:\n{}",
                signer.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// The terminal condition of a request (type, reason), if it has one.
pub fn terminal(pcr: &Value) -> Option<(String, String)> {
    pcr["status"]["conditions"]
        .as_array()?
        .iter()
        .find_map(|c| {
            let t = c["type"].as_str()?;
            matches!(t, "Issued" | "Denied" | "Failed").then(|| {
                (
                    t.to_string(),
                    c["reason"].as_str().unwrap_or("").to_string(),
                )
            })
        })
}

/// The key a request asked to be certified (SPKI DER): its `pkixPublicKey`, or the public key
/// of its stub PKCS#10 request.
pub fn requested_spki(pcr: &Value) -> Vec<u8> {
    use base64::Engine;
    let b64 = |k: &str| {
        pcr["spec"][k]
            .as_str()
            .map(|s| base64::engine::general_purpose::STANDARD.decode(s).unwrap())
    };
    if let Some(spki) = b64("pkixPublicKey") {
        return spki;
    }
    let csr = b64("stubPKCS10Request").expect("key material in the request");
    use x509_parser::prelude::FromDer;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(&csr)
        .expect("a PKCS#10 request");
    req.certification_request_info.subject_pki.raw.to_vec()
}

/// The Deployment's container arguments and, as environment, its ConfigMap's data.
fn deployment_settings(objects: &[Value]) -> (Vec<String>, Vec<(String, String)>) {
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("manifests/ renders a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let config_name = container["envFrom"][0]["configMapRef"]["name"]
        .as_str()
        .unwrap();
    let config = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == config_name)
        .expect("the ConfigMap the Deployment reads");
    let env = config["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    (args, env)
}
