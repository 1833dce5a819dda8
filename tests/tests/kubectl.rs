//! `kubectl` against the standalone test API server (`podcert-apiserver`): the rules a user
//! meets on a real cluster, seen through the ordinary client. The double serves no OpenAPI
//! document, so `kubectl create` runs with `--validate=false` (the server validates).

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use podcert_tests::fixtures::kubelet_keys;
use podcert_tests::oracles::{go_prove, kubectl_binary};
use serde_json::{Value, json};

struct Server {
    child: Child,
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(release: &str) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let port = podcert_tests::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_podcert-apiserver"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--release",
            release,
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("podcert-apiserver starts");
    for _ in 0..100 {
        if kubeconfig.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(kubeconfig.exists(), "no kubeconfig written");
    Server {
        child,
        kubeconfig,
        _dir: dir,
    }
}

fn kubectl(server: &Server, args: &[&str], stdin_json: Option<&Value>) -> Output {
    let mut cmd = Command::new(kubectl_binary());
    cmd.arg("--kubeconfig")
        .arg(&server.kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(body) = stdin_json {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.to_string().as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn refused_with(o: &Output, fragment: &str) {
    assert!(!o.status.success(), "accepted: {}", text(o));
    assert!(
        text(o).contains(fragment),
        "{fragment:?} not in: {}",
        text(o)
    );
}

/// A 1.35 kubelet's request (pkix + proof, through v1beta1), named `name` in `ns`.
fn request_from_a_1_35_kubelet(name: &str) -> Value {
    use base64::Engine;
    let keys = kubelet_keys();
    let key = keys.iter().find(|k| k.key_type == "ECDSAP256").unwrap();
    let uid = podcert_tests::random_uid();
    let proof = go_prove(&[(key.pkcs8_der.as_slice(), uid.as_str())]).remove(0);
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    json!({"apiVersion": "certificates.k8s.io/v1beta1", "kind": "PodCertificateRequest",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {"signerName": "example.com/spiffe", "podName": "pod-1", "podUID": uid,
            "serviceAccountName": "sa-1", "serviceAccountUID": "sa-uid-1", "nodeName": "node-1",
            "nodeUID": "node-uid-1", "maxExpirationSeconds": 86400,
            "pkixPublicKey": b64(&key.spki_der), "proofOfPossession": b64(&proof)}})
}

const STATUS: &str =
    "/apis/certificates.k8s.io/v1beta1/namespaces/ns/podcertificaterequests/req-a/status";

#[test]
fn kubectl_meets_kube_apiservers_rules() {
    let server = serve("1.37");
    let created = kubectl(
        &server,
        &["create", "--validate=false", "-o", "json", "-f", "-"],
        Some(&request_from_a_1_35_kubelet("req-a")),
    );
    assert!(created.status.success(), "{}", text(&created));
    let created: Value = serde_json::from_slice(&created.stdout).unwrap();

    // Read through v1: no key material, and no invented annotations carrying it.
    let through_v1 = kubectl(
        &server,
        &[
            "get",
            "podcertificaterequests.v1.certificates.k8s.io",
            "req-a",
            "-n",
            "ns",
            "-o",
            "json",
        ],
        None,
    );
    assert!(through_v1.status.success(), "{}", text(&through_v1));
    let v1: Value = serde_json::from_slice(&through_v1.stdout).unwrap();
    assert_eq!(v1["apiVersion"], "certificates.k8s.io/v1");
    assert!(
        v1["spec"].get("pkixPublicKey").is_none() && v1["spec"].get("proofOfPossession").is_none(),
        "{v1:#}"
    );
    assert!(
        !v1["metadata"]["annotations"]
            .as_object()
            .is_some_and(|a| a.keys().any(|k| k.contains("initial-"))),
        "{v1:#}"
    );

    // A status PUT without resourceVersion: 422, no unconditional update.
    let denied = json!({"conditions": [{"type": "Denied", "status": "True", "reason": "UnsupportedKeyType",
        "message": "no", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    let mut unconditional = created.clone();
    unconditional["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    unconditional["status"] = denied.clone();
    let o = kubectl(
        &server,
        &["replace", "--raw", STATUS, "-f", "-"],
        Some(&unconditional),
    );
    refused_with(&o, "must be specified for an update");

    // A status write by an identity that may update the status but not "sign": 422 with
    // the Forbidden cause on spec.signerName.
    let rbac = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "status-writer"},
         "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["podcertificaterequests/status"], "verbs": ["update"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "status-writer"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "status-writer"},
         "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "writer"}]}]});
    let o = kubectl(
        &server,
        &["create", "--validate=false", "-f", "-"],
        Some(&rbac),
    );
    assert!(o.status.success(), "{}", text(&o));
    let mut conditional = created.clone();
    conditional["status"] = denied;
    let o = kubectl(
        &server,
        &["--as", "writer", "replace", "--raw", STATUS, "-f", "-"],
        Some(&conditional),
    );
    refused_with(
        &o,
        "spec.signerName: Forbidden: User \"writer\" is not permitted to \"sign\" for signer \"example.com/spiffe\"",
    );

    // A ClusterTrustBundle whose name suffix is not a DNS-1123 subdomain.
    let ctb = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "ClusterTrustBundle",
        "metadata": {"name": "example.com:spiffe:-ca"},
        "spec": {"signerName": "example.com/spiffe", "trustBundle": podcert_tests::fixtures::intermediate_ca_pem("ctb").2}});
    let o = kubectl(
        &server,
        &["create", "--validate=false", "-f", "-"],
        Some(&ctb),
    );
    refused_with(&o, "a lowercase RFC 1123 subdomain");
}
