//! `--services N`: a cluster of N Services and 2N pods in ten labelled namespaces, and the
//! identity policy that gives each request's pod the DNS name of the one Service selecting it.

use podcert_tests::apiserver::TestApiServer;

pub(crate) const NAMESPACES: usize = 10;

/// Request `i`'s namespace, pod and service account.
pub(crate) fn names(i: usize) -> (String, String, String) {
    (
        format!("ns-{}", i % NAMESPACES),
        format!("pod-{i}"),
        format!("sa-{}", i % 20),
    )
}

pub(crate) fn pod_uid(i: usize) -> String {
    format!("00000000-0000-4000-8000-{i:012}")
}

/// The identity policy of a `--services` run.
pub(crate) const POLICY: &str = "\
rules:
  - name: load
    namespaces:
      selector: {matchLabels: {podcert: enabled}}
    dnsNames: {services: true, podIP: true}
";

/// Stores `services` Services and twice as many pods (pod `i` as [`names`] says, labelled
/// `app: app-<i mod services>`, so exactly the Service of that number selects it) in ten
/// labelled namespaces, straight into the API server's storage. Objects carry what real
/// ones carry that the signer must not keep: ports, cluster IPs, a last-applied annotation.
pub(crate) fn populate(server: &TestApiServer, services: usize) {
    let applied = "x".repeat(600);
    for n in 0..NAMESPACES {
        server.put(
            "namespaces",
            "",
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": format!("ns-{n}"), "uid": format!("ns-uid-{n}"),
                             "labels": {"podcert": "enabled", "kubernetes.io/metadata.name": format!("ns-{n}")}}}),
        );
    }
    for j in 0..services {
        let ns = format!("ns-{}", j % NAMESPACES);
        server.put(
            "services",
            &ns,
            serde_json::json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("svc-{j}"), "namespace": ns, "uid": format!("svc-uid-{j}"),
                             "labels": {"app": format!("app-{j}")},
                             "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied}},
                "spec": {"selector": {"app": format!("app-{j}")}, "type": "ClusterIP",
                         "clusterIP": format!("10.96.{}.{}", j / 250, j % 250),
                         "ports": [{"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]}}),
        );
    }
    for i in 0..2 * services {
        let (ns, pod, sa) = names(i);
        server.put(
            "pods",
            &ns,
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "uid": pod_uid(i),
                             "labels": {"app": format!("app-{}", i % services)}},
                "spec": {"serviceAccountName": sa, "nodeName": "node-1",
                         "containers": [{"name": "app", "image": "registry.example/app:1"}]},
                "status": {"phase": "Running", "podIP": format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256),
                           "podIPs": [{"ip": format!("10.{}.{}.{}", 1 + i / 65536, (i / 256) % 256, i % 256)}]}}),
        );
    }
}
