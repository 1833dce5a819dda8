//! A kubelet emulator: files PodCertificateRequests as kubelets do and judges the answers.
//!
//! Requests carry `generateName: req-`, an owner reference to the pod and the pod's
//! `maxExpirationSeconds`, with key material in either format: pkix key + proof of possession
//! (1.35 kubelets; the proof made by Go via [`crate::oracles::go_prove`]) or a stub PKCS#10
//! request (1.36+, Go-made). [`Tamper`] makes the bad requests a privileged user or a
//! compromised API path could create. [`Tracker`] follows every request to a terminal
//! condition; [`check_issued`] validates an issued chain as the kubelet and API server would;
//! [`Report`] sums a run up as JSON with latency percentiles.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{DynamicObject, PostParams};
use kube::core::ApiResource;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde_json::{Value, json};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

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
        }
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

/// The terminal outcome of one request as the kubelet sees it.
#[derive(Debug, Clone)]
pub struct Terminal {
    pub at: Instant,
    pub status: Value,
}

impl Terminal {
    /// The terminal condition type (Issued, Denied, Failed).
    pub fn condition(&self) -> &str {
        self.status["conditions"][0]["type"].as_str().unwrap_or("")
    }

    pub fn reason(&self) -> &str {
        self.status["conditions"][0]["reason"]
            .as_str()
            .unwrap_or("")
    }

    /// The issued leaf's subject alternative names: (URIs, DNS names, IPv4 addresses).
    pub fn sans(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        let chain = self.status["certificateChain"].as_str().expect("a chain");
        let leaf = pem::parse_many(chain).expect("PEM").remove(0);
        let (_, cert) = X509Certificate::from_der(leaf.contents()).expect("a certificate");
        let san = cert.subject_alternative_name().expect("one SAN extension");
        let (mut uris, mut dns, mut ips) = (vec![], vec![], vec![]);
        for n in san
            .map(|s| s.value.general_names.clone())
            .unwrap_or_default()
        {
            match n {
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    ips.push(format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]))
                }
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        (uris, dns, ips)
    }
}

/// Follows every PCR (a watch, as the kubelet has) and records when each became terminal.
#[derive(Debug, Clone)]
pub struct Tracker {
    seen: Arc<Mutex<HashMap<(String, String), Terminal>>>,
    changed: Arc<tokio::sync::Notify>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

impl Tracker {
    pub fn start(client: Client, version: &str) -> Tracker {
        let api: Api<DynamicObject> = Api::all_with(client, &pcr_resource(version));
        let seen: Arc<Mutex<HashMap<(String, String), Terminal>>> = Arc::default();
        let changed = Arc::new(tokio::sync::Notify::new());
        let (s, c) = (seen.clone(), changed.clone());
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(ev) = stream.next().await {
                let Ok(obj) = ev else { continue };
                let status = obj.data.get("status").cloned().unwrap_or(Value::Null);
                if crate::apiserver::validate::is_terminal(&status) {
                    let key = (obj.namespace().unwrap_or_default(), obj.name_any());
                    s.lock().unwrap().entry(key).or_insert(Terminal {
                        at: Instant::now(),
                        status,
                    });
                    c.notify_waiters();
                }
            }
        });
        Tracker {
            seen,
            changed,
            task: Arc::new(task),
        }
    }

    pub fn get(&self, c: &Created) -> Option<Terminal> {
        self.seen
            .lock()
            .unwrap()
            .get(&(c.namespace.clone(), c.name.clone()))
            .cloned()
    }

    /// Waits until every request in `created` is terminal or `timeout` passes; returns the
    /// outcome of each (None: still pending).
    pub async fn wait_all(&self, created: &[Created], timeout: Duration) -> Vec<Option<Terminal>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let outcomes: Vec<_> = created.iter().map(|c| self.get(c)).collect();
            if outcomes.iter().all(Option::is_some) || tokio::time::Instant::now() >= deadline {
                return outcomes;
            }
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(200)),
                notified,
            )
            .await;
        }
    }
}

/// Checks an issued status as the kubelet and API server would: the leaf holds the requested
/// key, the status times equal the leaf's, the single URI SAN is `spiffe_id`, and the chain
/// verifies up to a root of `trust_bundle_pem`.
pub fn check_issued(
    status: &Value,
    spki_der: &[u8],
    spiffe_id: &str,
    trust_bundle_pem: &str,
) -> Result<(), String> {
    let chain = status["certificateChain"]
        .as_str()
        .ok_or("no certificateChain")?;
    let blocks = pem::parse_many(chain).map_err(|e| e.to_string())?;
    let certs: Vec<X509Certificate<'_>> = blocks
        .iter()
        .map(|b| {
            X509Certificate::from_der(b.contents())
                .map(|(_, c)| c)
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let leaf = certs.first().ok_or("empty chain")?;
    if leaf.public_key().raw != spki_der {
        return Err("the leaf's key is not the requested key".into());
    }
    let ts = |k: &str| -> Result<i64, String> {
        status[k]
            .as_str()
            .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
            .map(|t| t.as_second())
            .ok_or(format!("no {k}"))
    };
    if ts("notBefore")? != leaf.validity().not_before.timestamp()
        || ts("notAfter")? != leaf.validity().not_after.timestamp()
    {
        return Err("status times differ from the leaf's".into());
    }
    let id = signer_core::spiffe::svid_id(blocks[0].contents()).map_err(|e| e.to_string())?;
    if id.as_str() != spiffe_id {
        return Err(format!("SPIFFE ID {id}, expected {spiffe_id}"));
    }
    let roots: Vec<Vec<u8>> = pem::parse_many(trust_bundle_pem)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|p| p.into_contents())
        .collect();
    let roots: Vec<X509Certificate<'_>> = roots
        .iter()
        .filter_map(|r| X509Certificate::from_der(r).ok().map(|(_, c)| c))
        .collect();
    for pair in certs.windows(2) {
        pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .map_err(|e| format!("chain link does not verify: {e}"))?;
    }
    let top = certs.last().expect("non-empty");
    if !roots
        .iter()
        .any(|r| top.verify_signature(Some(r.public_key())).is_ok())
    {
        return Err("the chain does not verify up to the trust bundle".into());
    }
    Ok(())
}

/// A run summed up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub requested: usize,
    pub issued: usize,
    pub denied: BTreeMap<String, usize>,
    pub failed: usize,
    pub pending: usize,
    pub seconds: f64,
    pub requests_per_second: f64,
    pub latency_ms: BTreeMap<String, f64>,
}

impl Report {
    pub fn new(created: &[Created], outcomes: &[Option<Terminal>], started: Instant) -> Report {
        let mut r = Report {
            requested: created.len(),
            ..Default::default()
        };
        let mut latencies: Vec<f64> = Vec::new();
        let mut last = started;
        for (c, o) in created.iter().zip(outcomes) {
            match o {
                None => r.pending += 1,
                Some(t) => {
                    latencies
                        .push(t.at.saturating_duration_since(c.sent_at).as_secs_f64() * 1000.0);
                    last = last.max(t.at);
                    match t.condition() {
                        "Issued" => r.issued += 1,
                        "Denied" => *r.denied.entry(t.reason().to_string()).or_default() += 1,
                        _ => r.failed += 1,
                    }
                }
            }
        }
        r.seconds = last.saturating_duration_since(started).as_secs_f64();
        r.requests_per_second = if r.seconds > 0.0 {
            (r.requested - r.pending) as f64 / r.seconds
        } else {
            0.0
        };
        latencies.sort_by(f64::total_cmp);
        for (name, q) in [("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0)] {
            if !latencies.is_empty() {
                let i =
                    ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
                r.latency_ms
                    .insert(name.into(), (latencies[i] * 10.0).round() / 10.0);
            }
        }
        r
    }
}
