//! A kubelet emulator: files PodCertificateRequests as kubelets do and judges the answers.
//!
//! Requests carry `generateName: req-`, an owner reference to the pod and the pod's
//! `maxExpirationSeconds`, with key material in either format: pkix key + proof of possession
//! (1.35 kubelets; the proof made by Go via [`crate::oracles::go_prove`]) or a stub PKCS#10
//! request (1.36+, Go-made). [`Tamper`] makes the bad requests a privileged user or a
//! compromised API path could create. [`Tracker`] follows every request to a terminal
//! condition; [`check_issued`] validates an issued chain as the kubelet and API server would;
//! [`Report`] sums a run up as JSON with latency percentiles.

mod judge;
mod tracker;

pub use judge::{Report, check_issued};
pub use tracker::{Terminal, Tracker};

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{DynamicObject, PostParams};
use kube::core::ApiResource;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};

use crate::fixtures::{KubeletKey, kubelet_keys};
use crate::oracles::go_prove;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Format {
    /// pkixPublicKey + proofOfPossession (1.35 kubelets).
    Pkix,
    /// stubPKCS10Request (1.36+ kubelets).
    Csr,
}

/// How a request is made bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    None,
    /// One byte of the proof flipped.
    ForgedProof,
    /// A valid proof, but for another pod's UID.
    OtherPodUid,
    /// A validly signed CSR with a subject and SANs.
    NonEmptyCsr,
    /// An unverifiedUserAnnotations key.
    UnknownAnnotation,
}

/// One podCertificate projected-volume source of one pod.
#[derive(Debug, Clone)]
pub struct PodRequest {
    pub namespace: String,
    pub pod_name: String,
    pub service_account: String,
    /// The kubelet's keyType name (also RSA2048/ECDSAP224 for refused types).
    pub key_type: String,
    pub format: Format,
    pub max_expiration_seconds: i64,
    pub tamper: Tamper,
    /// The real pod's and service account's UIDs (a real cluster checks them); random if None.
    pub pod_uid: Option<String>,
    pub service_account_uid: Option<String>,
    /// The volume's `userAnnotations`, sent as `unverifiedUserAnnotations`.
    pub user_annotations: Vec<(String, String)>,
}

impl PodRequest {
    pub fn new(
        namespace: &str,
        pod_name: &str,
        service_account: &str,
        key_type: &str,
        format: Format,
    ) -> Self {
        PodRequest {
            namespace: namespace.into(),
            pod_name: pod_name.into(),
            service_account: service_account.into(),
            key_type: key_type.into(),
            format,
            max_expiration_seconds: 86_400,
            tamper: Tamper::None,
            pod_uid: None,
            service_account_uid: None,
            user_annotations: Vec::new(),
        }
    }

    /// The request with `userAnnotations` set on its volume.
    pub fn with_user_annotations(mut self, annotations: &[(&str, &str)]) -> Self {
        self.user_annotations = annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }
}

/// A request that was created.
#[derive(Debug, Clone)]
pub struct Created {
    pub namespace: String,
    pub name: String,
    pub request: PodRequest,
    pub spki_der: Vec<u8>,
    pub sent_at: Instant,
}

/// The emulator; `version` is the PCR API version it creates requests through.
#[derive(Clone)]
pub struct Kubelet {
    client: Client,
    resource: ApiResource,
    pub signer_name: String,
    pub node_name: String,
    pub node_uid: String,
    keys: Arc<Vec<KubeletKey>>,
}

impl std::fmt::Debug for Kubelet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kubelet")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

pub fn pcr_resource(version: &str) -> ApiResource {
    ApiResource {
        group: "certificates.k8s.io".into(),
        version: version.into(),
        api_version: format!("certificates.k8s.io/{version}"),
        kind: "PodCertificateRequest".into(),
        plural: "podcertificaterequests".into(),
    }
}

impl Kubelet {
    pub fn new(client: Client, version: &str, signer_name: &str) -> Self {
        Kubelet {
            client,
            resource: pcr_resource(version),
            signer_name: signer_name.into(),
            node_name: "node-1".into(),
            node_uid: "node-uid-1".into(),
            keys: Arc::new(kubelet_keys()),
        }
    }

    fn key(&self, key_type: &str) -> &KubeletKey {
        self.keys
            .iter()
            .find(|k| k.key_type == key_type)
            .unwrap_or_else(|| panic!("no fixture key {key_type}"))
    }

    /// PCR bodies for `pods`; proofs for the whole batch come from one Go oracle run.
    ///
    /// # Panics
    /// For a pkix request through `v1`: v1 has no such fields, no kubelet files one.
    pub fn bodies(&self, pods: &[PodRequest]) -> Vec<(Value, Vec<u8>)> {
        assert!(
            !(self.resource.version == "v1" && pods.iter().any(|p| p.format == Format::Pkix)),
            "a pkix request through certificates.k8s.io/v1 is impossible upstream"
        );
        let uids: Vec<String> = pods
            .iter()
            .map(|p| p.pod_uid.clone().unwrap_or_else(crate::random_uid))
            .collect();
        let to_prove: Vec<(&[u8], &str)> = pods
            .iter()
            .zip(&uids)
            .filter(|(p, _)| p.format == Format::Pkix)
            .map(|(p, uid)| {
                let signed_uid = if p.tamper == Tamper::OtherPodUid {
                    "00000000-0000-4000-8000-000000000000"
                } else {
                    uid.as_str()
                };
                (self.key(&p.key_type).pkcs8_der.as_slice(), signed_uid)
            })
            .collect();
        let mut proofs = if to_prove.is_empty() {
            Vec::new()
        } else {
            go_prove(&to_prove)
        }
        .into_iter();
        pods.iter()
            .zip(uids)
            .map(|(p, uid)| {
                let key = self.key(&p.key_type);
                let b64 = |b: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b);
                let mut spec = json!({
                    "signerName": self.signer_name, "podName": p.pod_name, "podUID": uid,
                    "serviceAccountName": p.service_account, "serviceAccountUID": p.service_account_uid.clone().unwrap_or_else(|| format!("sa-{}", p.service_account)),
                    "nodeName": self.node_name, "nodeUID": self.node_uid, "maxExpirationSeconds": p.max_expiration_seconds,
                });
                match p.format {
                    Format::Pkix => {
                        let mut proof = proofs.next().expect("a proof per pkix request");
                        if p.tamper == Tamper::ForgedProof {
                            let mid = proof.len() / 2;
                            proof[mid] ^= 1;
                        }
                        spec["pkixPublicKey"] = b64(&key.spki_der).into();
                        spec["proofOfPossession"] = b64(&proof).into();
                    }
                    Format::Csr => {
                        let csr = if p.tamper == Tamper::NonEmptyCsr { &key.non_empty_csr_der } else { &key.stub_csr_der };
                        spec["stubPKCS10Request"] = b64(csr).into();
                    }
                }
                if !p.user_annotations.is_empty() {
                    let map: serde_json::Map<String, Value> = p.user_annotations.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
                    spec["unverifiedUserAnnotations"] = Value::Object(map);
                }
                if p.tamper == Tamper::UnknownAnnotation {
                    spec["unverifiedUserAnnotations"] = json!({"example.com/spiffe-id": "spiffe://evil/ns/kube-system/sa/admin"});
                }
                let body = json!({
                    "apiVersion": self.resource.api_version, "kind": "PodCertificateRequest",
                    "metadata": {
                        "generateName": "req-", "namespace": p.namespace,
                        "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": p.pod_name, "uid": uid, "controller": true}],
                    },
                    "spec": spec,
                });
                (body, key.spki_der.clone())
            })
            .collect()
    }

    /// Creates the requests with at most `concurrency` in flight.
    pub async fn create_all(
        &self,
        pods: &[PodRequest],
        concurrency: usize,
    ) -> Result<Vec<Created>, kube::Error> {
        let bodies = self.bodies(pods);
        let results: Vec<Result<Created, kube::Error>> =
            futures::stream::iter(pods.iter().cloned().zip(bodies))
                .map(|(pod, (body, spki))| {
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(self.client.clone(), &pod.namespace, &self.resource);
                    async move {
                        let obj: DynamicObject = serde_json::from_value(body).expect("valid body");
                        let sent_at = Instant::now();
                        // Retry transient API errors as the kubelet does.
                        let mut attempt = 0;
                        let created = loop {
                            match api.create(&PostParams::default(), &obj).await {
                                Ok(c) => break c,
                                Err(kube::Error::Api(s))
                                    if (s.code == 429 || s.code >= 500) && attempt < 50 =>
                                {
                                    attempt += 1;
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                }
                                Err(e) => return Err(e),
                            }
                        };
                        Ok(Created {
                            namespace: pod.namespace.clone(),
                            name: created.name_any(),
                            request: pod,
                            spki_der: spki,
                            sent_at,
                        })
                    }
                })
                .buffered(concurrency.max(1))
                .collect()
                .await;
        results.into_iter().collect()
    }
}
