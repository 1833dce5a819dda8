//! Who talks to the control plane: an [`Identity`] is a kubeconfig and a client, made for a
//! client certificate (the admin, a node) or a ServiceAccount token.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{Pki, pki};
use base64::Engine;
use serde_json::{Value, json};

/// A Kubernetes identity's kubeconfig and client.
#[derive(Clone)]
pub struct Identity {
    pub user: String,
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

pub(super) async fn identity_with_cert(
    dir: &Path,
    url: &str,
    pki: &Pki,
    user: &str,
    cert: &pki::ClientCert,
) -> Identity {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let kubeconfig = write_kubeconfig(
        dir,
        url,
        &pki.ca_pem,
        user,
        json!({"client-certificate-data": b64(&cert.cert_pem), "client-key-data": b64(&cert.key_pem)}),
    );
    Identity {
        client: crate::kube_client(&kubeconfig).await,
        user: user.to_string(),
        kubeconfig,
    }
}

/// A kubeconfig for `url` trusting `ca_pem`, authenticating with `auth` (a kubeconfig `user`).
pub(super) fn write_kubeconfig(
    dir: &Path,
    url: &str,
    ca_pem: &str,
    user: &str,
    auth: Value,
) -> PathBuf {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let kubeconfig = json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "real",
        "clusters": [{"name": "real", "cluster": {"server": url, "certificate-authority-data": ca}}],
        "users": [{"name": "real", "user": auth}],
        "contexts": [{"name": "real", "context": {"cluster": "real", "user": "real", "namespace": "default"}}],
    });
    let file = user.replace([':', '/'], "_");
    let port = url.rsplit(':').next().unwrap_or("0");
    let path = dir.join(format!("kubeconfig-{port}-{file}.json"));
    std::fs::write(&path, kubeconfig.to_string()).unwrap();
    path
}
