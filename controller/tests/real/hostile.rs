//! Hostile requests through the real server: what a cluster admin (or a compromised API path)
//! can create — requests naming pods, nodes and service accounts that do not exist, as
//! upstream's own conformance test creates them, with key material the kubelet never makes.
//! Each row says what kube-apiserver answers (its admission verifies proofs and key types)
//! and, for what it admits, the signer's decision: the reason the API defines, never a crash,
//! never `Failed`.

use std::time::Duration;

use base64::Engine;
use podcert_tests::control_plane::Release;
use podcert_tests::kubelet::{Format, Kubelet, PodRequest, Tamper};
use serde_json::Value;

use crate::cluster::{RealCluster, terminal};
use crate::support::SIGNER;

/// What the server answers to a create.
#[derive(Debug)]
enum Server {
    Admits,
    /// Refused 422, the message containing this.
    Refuses(&'static str),
}

/// What the signer writes on an admitted request: the condition type and reason.
type Decided = Option<(&'static str, &'static str)>;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_an_admin_creates_are_refused_by_the_server_or_denied_by_the_signer() {
    let rc = RealCluster::start(Release::V1_37).await;
    let signer = rc.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(60)).await;
    rc.namespace("hostile", &[]).await;
    let admin = Kubelet::new(rc.cp.admin.client.clone(), "v1beta1", SIGNER);
    let request = |name: &str, kt: &str, format, tamper| {
        let mut p = PodRequest::new("hostile", name, "ghost", kt, format);
        p.tamper = tamper;
        p
    };
    let uid = podcert_tests::random_uid();
    let (e3_spki, e3_proof) = podcert_tests::oracles::openssl_rsa(3072, "3", &uid);
    let (big_e_spki, big_e_proof) = podcert_tests::oracles::openssl_rsa(3072, "4294967297", &uid);
    type Edit = Box<dyn Fn(&mut Value)>;
    let pkix = |spki: Vec<u8>, proof: Vec<u8>, uid: String| -> Edit {
        Box::new(move |spec: &mut Value| {
            spec["pkixPublicKey"] = b64(&spki).into();
            spec["proofOfPossession"] = b64(&proof).into();
            spec["podUID"] = uid.clone().into();
        })
    };
    let rows: Vec<(&str, PodRequest, Edit, Server, Decided)> = vec![
        (
            "a pod, node and service account that do not exist (an admin may name them)",
            request("ghost-pod", "ECDSAP256", Format::Csr, Tamper::None),
            Box::new(|_| {}),
            Server::Admits,
            Some(("Issued", "")),
        ),
        (
            "an unverifiedUserAnnotations key the signer does not know",
            request(
                "annotated",
                "ED25519",
                Format::Csr,
                Tamper::UnknownAnnotation,
            ),
            Box::new(|_| {}),
            Server::Admits,
            Some(("Denied", "InvalidUnverifiedUserAnnotations")),
        ),
        (
            "a validly signed stub CSR that is not empty (a subject and SANs)",
            request("non-empty", "ECDSAP256", Format::Csr, Tamper::NonEmptyCsr),
            Box::new(|_| {}),
            Server::Admits,
            Some(("Denied", "InvalidStubPKCS10Request")),
        ),
        (
            "an RSA-3072 key with public exponent 3 and a valid proof",
            request("rsa-e3", "RSA3072", Format::Pkix, Tamper::None),
            pkix(e3_spki, e3_proof, uid.clone()),
            Server::Admits,
            Some(("Denied", "UnsupportedKeyType")),
        ),
        (
            "an RSA-3072 key with public exponent 2^32+1 and a valid proof",
            request("rsa-big-e", "RSA3072", Format::Pkix, Tamper::None),
            pkix(big_e_spki, big_e_proof, uid.clone()),
            // Go's crypto/rsa refuses an exponent over 2^31-1 when it verifies the proof.
            Server::Refuses("could not verify proof-of-possession signature"),
            None,
        ),
        (
            "a proof of possession over another pod's UID",
            request("other-uid", "ECDSAP256", Format::Pkix, Tamper::OtherPodUid),
            Box::new(|_| {}),
            Server::Refuses("could not verify proof-of-possession signature"),
            None,
        ),
        (
            "a forged proof of possession",
            request("forged", "ED25519", Format::Pkix, Tamper::ForgedProof),
            Box::new(|_| {}),
            Server::Refuses("could not verify proof-of-possession signature"),
            None,
        ),
        (
            "an RSA-2048 key (a type the API does not admit)",
            request("rsa2048", "RSA2048", Format::Pkix, Tamper::None),
            Box::new(|_| {}),
            Server::Refuses("RSA keys must have modulus size 3072 or 4096"),
            None,
        ),
        (
            "both forms of key material",
            request("both", "ECDSAP256", Format::Pkix, Tamper::None),
            Box::new(|spec: &mut Value| {
                let key = podcert_tests::fixtures::kubelet_keys()
                    .into_iter()
                    .find(|k| k.key_type == "ECDSAP256")
                    .unwrap();
                spec["stubPKCS10Request"] = b64(&key.stub_csr_der).into();
            }),
            Server::Refuses("spec"),
            None,
        ),
    ];

    let mut admitted = Vec::new();
    for (row, pod, edit, server, decided) in &rows {
        let (mut body, _) = admin.bodies(std::slice::from_ref(pod)).remove(0);
        edit(&mut body["spec"]);
        let path = "/apis/certificates.k8s.io/v1beta1/namespaces/hostile/podcertificaterequests";
        let (code, answer) =
            podcert_tests::send_json(&rc.cp.admin.client, "POST", path, &body).await;
        match server {
            Server::Admits => {
                assert_eq!(code, 201, "{row}: the server refused {answer:#}");
                admitted.push((
                    row,
                    answer["metadata"]["name"].as_str().unwrap().to_string(),
                    decided,
                ));
            }
            Server::Refuses(says) => {
                assert_eq!(code, 422, "{row}: the server answered {code} {answer:#}");
                let message = answer["message"].as_str().unwrap_or("");
                assert!(message.contains(says), "{row}: {message}");
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for (row, name, decided) in admitted {
        let (want_type, want_reason) = decided.unwrap();
        let pcr = loop {
            let pcr = rc
                .cp
                .get(
                    "certificates.k8s.io/v1beta1",
                    "PodCertificateRequest",
                    "hostile",
                    &name,
                )
                .await
                .unwrap();
            if terminal(&pcr).is_some() {
                break pcr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{row}: never decided; the signer's log:\n{}",
                signer.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let (got_type, got_reason) = terminal(&pcr).unwrap();
        assert_eq!(got_type, want_type, "{row}: {:#}", pcr["status"]);
        if want_type == "Denied" {
            assert_eq!(got_reason, want_reason, "{row}: {:#}", pcr["status"]);
        }
    }
    // The signer lived through all of it, and is still ready.
    assert!(signer.admin("/ready").await.is_some_and(|(c, _)| c == 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_asking_with_user_annotations_is_denied_and_its_kubelet_records_it() {
    let rc = RealCluster::start(Release::V1_37).await;
    let signer = rc.signer("a", &[]);
    signer.wait_ready(Duration::from_secs(60)).await;
    rc.namespace("shop", &["web"]).await;
    let (_, kubelet) = rc.node_with_kubelet("node-a", Release::V1_37).await;
    let mut source =
        podcert_tests::control_plane::objects::CertificateSource::new(SIGNER, "ECDSAP256");
    source.user_annotations = Some(
        serde_json::json!({"example.com/spiffe-id": "spiffe://cluster.local/ns/kube-system/sa/admin"}),
    );
    rc.pod_with("shop", "web-0", "web", "node-a", &[source])
        .await;
    let pcrs = rc
        .terminal_pcrs("shop", "web-0", 1, Duration::from_secs(60), &signer)
        .await;
    assert_eq!(
        terminal(&pcrs[0]),
        Some(("Denied".into(), "InvalidUnverifiedUserAnnotations".into()))
    );
    // The kubelet's code takes Denied as final for this volume, and says so on the pod.
    let event = kubelet
        .wait_line("the kubelet's Denied Event", Duration::from_secs(30), |l| {
            l["kind"] == "event" && l["reason"] == "Denied"
        })
        .await;
    assert_eq!(event["pod"], "web-0");
    assert_eq!(event["type"], "Warning");
    // Upstream passes the condition's reason as the format string (docs/pcr-contract.md §8).
    let message = event["message"].as_str().unwrap();
    assert!(
        message.starts_with("InvalidUnverifiedUserAnnotations%!(EXTRA string="),
        "{message}"
    );
    let states = kubelet.states().await;
    assert_eq!(
        states.get(&format!("{SIGNER} denied")),
        Some(&1),
        "{states:?}"
    );
    assert!(
        kubelet
            .read_volume("shop", "web-0", "svid-0")
            .files
            .is_empty()
    );
}
