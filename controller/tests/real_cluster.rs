//! The end-to-end check against a real cluster, when `PODCERT_E2E_KUBECONFIG` names one;
//! skipped with a message otherwise (these machines have no cluster).
//!
//! It needs cluster-admin. It creates a namespace `podcert-e2e-<n>` with a service account and
//! a pause pod, runs the signer binary for the signer `example.com/podcert-e2e-<n>`, and files
//! PodCertificateRequests for that pod *as its node* (impersonating `system:node:<node>`, as
//! NodeRestriction requires), in the format the cluster's kubelets use (pkix + proof before
//! 1.36, stub CSR from 1.36). Each request must be issued with a chain that verifies to the
//! published ClusterTrustBundle and names the pod's service account. Everything it created is
//! deleted at the end.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ServiceAccount};
use kube::api::{DeleteParams, DynamicObject, PostParams};
use kube::{Api, Client};
use podcert_tests::kubelet::{Format, Kubelet, PodRequest, Tracker, check_issued};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_a_real_cluster() {
    let Some(path) = std::env::var_os("PODCERT_E2E_KUBECONFIG") else {
        eprintln!(
            "real-cluster e2e skipped: set PODCERT_E2E_KUBECONFIG to the kubeconfig of a cluster that serves \
             PodCertificateRequests (cluster-admin needed; it creates and deletes a namespace, a pod and a signer)"
        );
        return;
    };
    let config = podcert_tests::kube_config(std::path::Path::new(&path)).await;
    let client = Client::try_from(config.clone()).unwrap();
    let n = std::process::id();
    let ns = format!("podcert-e2e-{n}");
    let signer_name = format!("example.com/podcert-e2e-{n}");

    let version = podcert_signer::pcr::discover(
        &client,
        "podcertificaterequests",
        &podcert_signer::pcr::PCR_VERSIONS,
    )
    .await
    .unwrap()
    .expect("the cluster serves PodCertificateRequests")
    .version;
    let minor: u32 = client
        .apiserver_version()
        .await
        .unwrap()
        .minor
        .trim_end_matches('+')
        .parse()
        .unwrap_or(37);
    let format = if minor < 36 {
        Format::Pkix
    } else {
        Format::Csr
    };

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let result = run(&client, &config, &path, &ns, &signer_name, &version, format).await;
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    result.unwrap();
}

async fn run(
    client: &Client,
    config: &kube::Config,
    kubeconfig: &std::ffi::OsStr,
    ns: &str,
    signer_name: &str,
    version: &str,
    format: Format,
) -> Result<(), String> {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let sa = sas
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "web"}, "automountServiceAccountToken": false}),
            )
            .unwrap(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web-0"},
        "spec": {"serviceAccountName": "web", "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
            "securityContext": {"allowPrivilegeEscalation": false, "runAsNonRoot": true, "runAsUser": 65535, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .map_err(|e| e.to_string())?;
    let mut scheduled = None;
    for _ in 0..240 {
        let p = pods.get("web-0").await.map_err(|e| e.to_string())?;
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            scheduled = Some((p, node));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (pod, node_name) = scheduled.ok_or("the pod was not scheduled within 2 minutes")?;
    let node = Api::<Node>::all(client.clone())
        .get(&node_name)
        .await
        .map_err(|e| e.to_string())?;

    let admin_port = podcert_tests::free_port();
    let mut signer = std::process::Command::new(env!("CARGO_BIN_EXE_podcert-signer"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "--signer-name",
            signer_name,
            "--trust-domain",
            "example.org",
        ])
        .args([
            "--ca-secret",
            &format!("{ns}/ca"),
            "--lease-namespace",
            ns,
            "--trust-bundle-suffix",
            "e2e",
        ])
        .args([
            "--admin-addr",
            &format!("127.0.0.1:{admin_port}"),
            "--trust-bundle-resync",
            "5s",
        ])
        .spawn()
        .map_err(|e| e.to_string())?;

    // The kubelet's identity, as NodeRestriction demands.
    let mut node_config = config.clone();
    node_config.auth_info.impersonate = Some(format!("system:node:{node_name}"));
    node_config.auth_info.impersonate_groups =
        Some(vec!["system:nodes".into(), "system:authenticated".into()]);
    let mut kubelet = Kubelet::new(Client::try_from(node_config).unwrap(), version, signer_name);
    kubelet.node_name = node_name.clone();
    kubelet.node_uid = node.metadata.uid.clone().unwrap_or_default();
    let requests: Vec<PodRequest> = ["ECDSAP256", "ED25519", "RSA3072"]
        .iter()
        .map(|kt| {
            let mut p = PodRequest::new(ns, "web-0", "web", kt, format);
            p.pod_uid = pod.metadata.uid.clone();
            p.service_account_uid = sa.metadata.uid.clone();
            p
        })
        .collect();
    let tracker = Tracker::start(client.clone(), version);
    let outcome = async {
        let created = kubelet
            .create_all(&requests, 3)
            .await
            .map_err(|e| format!("creating requests as the node: {e}"))?;
        let outcomes = tracker.wait_all(&created, Duration::from_secs(60)).await;
        let ctb_name = format!("{}:e2e", signer_name.replace('/', ":"));
        let ctb_version = podcert_signer::pcr::discover(
            client,
            "clustertrustbundles",
            &podcert_signer::pcr::CTB_VERSIONS,
        )
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the cluster serves no ClusterTrustBundle API")?;
        let ctbs: Api<DynamicObject> = Api::all_with(client.clone(), &ctb_version);
        let bundle =
            ctbs.get(&ctb_name).await.map_err(|e| e.to_string())?.data["spec"]["trustBundle"]
                .as_str()
                .unwrap_or("")
                .to_string();
        for (c, o) in created.iter().zip(&outcomes) {
            let t = o.as_ref().ok_or(format!("{} still pending", c.name))?;
            if t.condition() != "Issued" {
                return Err(format!("{}: {:?}", c.name, t.status));
            }
            check_issued(
                &t.status,
                &c.spki_der,
                &format!("spiffe://example.org/ns/{ns}/sa/web"),
                &bundle,
            )?;
        }
        let _ = ctbs.delete(&ctb_name, &DeleteParams::default()).await;
        Ok(())
    }
    .await;
    let _ = signer.kill();
    let _ = signer.wait();
    outcome
}
