//! The objects a real-cluster test creates, as JSON a user would write: namespaces, service
//! accounts, nodes, and pods bound to a node with `podCertificate` and `clusterTrustBundle`
//! projected volumes (the kubelet files requests only for sources a pod mounts, and
//! NodeRestriction admits a node's request only for such a pod).

use serde_json::{Value, json};

pub fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

pub fn namespace_labelled(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

pub fn service_account(namespace: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": name, "namespace": namespace}})
}

pub fn node(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})
}

/// One `podCertificate` source: the key type the kubelet generates, written as one
/// `credentialBundlePath` file (key, then chain).
#[derive(Debug, Clone)]
pub struct CertificateSource {
    pub signer_name: String,
    pub key_type: String,
    pub max_expiration_seconds: Option<i64>,
    pub user_annotations: Option<Value>,
    pub path: String,
}

impl CertificateSource {
    pub fn new(signer_name: &str, key_type: &str) -> Self {
        CertificateSource {
            signer_name: signer_name.into(),
            key_type: key_type.into(),
            max_expiration_seconds: None,
            user_annotations: None,
            path: "credentialbundle.pem".into(),
        }
    }

    fn projection(&self) -> Value {
        let mut pc = json!({"signerName": self.signer_name, "keyType": self.key_type,
            "credentialBundlePath": self.path});
        if let Some(s) = self.max_expiration_seconds {
            pc["maxExpirationSeconds"] = s.into();
        }
        if let Some(a) = &self.user_annotations {
            pc["userAnnotations"] = a.clone();
        }
        json!({"podCertificate": pc})
    }
}

/// A pod bound to `node` (no scheduler runs) whose volume `svid-<i>` holds source `i`, and, when
/// `trust_bundle` names a signer, a volume `trust` with its ClusterTrustBundles selected by
/// `selector` at `bundle.pem`.
pub fn pod(
    namespace: &str,
    name: &str,
    service_account: &str,
    node: &str,
    sources: &[CertificateSource],
    trust_bundle: Option<(&str, Value)>,
) -> Value {
    let mut volumes: Vec<Value> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"name": format!("svid-{i}"), "projected": {"sources": [s.projection()]}}))
        .collect();
    if let Some((signer, selector)) = trust_bundle {
        volumes.push(
            json!({"name": "trust", "projected": {"sources": [{"clusterTrustBundle": {
            "signerName": signer, "labelSelector": selector, "path": "bundle.pem"}}]}}),
        );
    }
    let mounts: Vec<Value> = volumes
        .iter()
        .map(|v| json!({"name": v["name"], "mountPath": format!("/var/run/{}", v["name"].as_str().unwrap())}))
        .collect();
    json!({"apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": name, "namespace": namespace, "labels": {"app": name}},
    "spec": {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": false,
        "nodeName": node,
        "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10", "volumeMounts": mounts}],
        "volumes": volumes,
    }})
}
