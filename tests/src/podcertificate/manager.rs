//! The [`Manager`]: one credential per pod, each request filed with a new key, refreshed at
//! `beginRefreshAt` plus jitter, replaced by the error on `Denied` or `Failed`, filed again when
//! unseen for 10 minutes, and all requested again on a restart, as `podcertificatemanager.go`
//! does.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use kube::api::{DynamicObject, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Mutex;

use super::{Pod, RefreshReport, Release, fresh_key_material};
use crate::kubelet::{check_issued, pcr_resource};

#[derive(Debug, Clone)]
struct InFlight {
    name: String,
    spki: Vec<u8>,
    /// Virtual time it was filed, and last seen in the informer's cache.
    filed_v: f64,
    seen_v: f64,
    is_refresh: bool,
}

#[derive(Debug, Clone)]
enum Credential {
    None,
    Valid {
        expires_v: f64,
        refresh_v: f64,
    },
    /// A Denied or Failed answer replaced the credential.
    Lost,
}

#[derive(Debug, Clone)]
struct PodState {
    pod: Pod,
    credential: Credential,
    in_flight: Option<InFlight>,
    refreshes: usize,
}

/// The kubelet's pod certificate manager on a scaled clock.
pub struct Manager {
    client: Client,
    release: Release,
    signer_name: String,
    scale: f64,
    started: Instant,
    state: Mutex<Vec<PodState>>,
    store: Store<DynamicObject>,
    report: Mutex<RefreshReport>,
    latencies: Mutex<Vec<f64>>,
    _watch: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("release", &self.release)
            .finish_non_exhaustive()
    }
}

const JITTER_S: f64 = 300.0;
const UNSEEN_REFILE_S: f64 = 600.0;

impl Manager {
    /// A manager for `pods`, whose clock runs `scale` times faster than the wall clock.
    pub fn start(
        client: Client,
        release: Release,
        signer_name: &str,
        pods: Vec<Pod>,
        scale: f64,
    ) -> Arc<Manager> {
        let ar = pcr_resource(release.api_version());
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        let writer = reflector::store::Writer::new(ar.clone());
        let store = writer.as_reader();
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .for_each(|_| async {});
        let watch = tokio::spawn(stream);
        let mut report = RefreshReport {
            pods: pods.len(),
            min_remaining_at_refresh_s: f64::INFINITY,
            ..Default::default()
        };
        report.refreshes_per_virtual_hour = Vec::new();
        Arc::new(Manager {
            client,
            release,
            signer_name: signer_name.into(),
            scale,
            started: Instant::now(),
            state: Mutex::new(
                pods.into_iter()
                    .map(|pod| PodState {
                        pod,
                        credential: Credential::None,
                        in_flight: None,
                        refreshes: 0,
                    })
                    .collect(),
            ),
            store,
            report: Mutex::new(report),
            latencies: Mutex::new(Vec::new()),
            _watch: watch,
        })
    }

    fn now_v(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * self.scale
    }

    fn jitter_v() -> f64 {
        let mut b = [0u8; 4];
        aws_lc_rs::rand::fill(&mut b).expect("rng");
        f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX) * JITTER_S
    }

    async fn file(&self, pod: &Pod) -> Result<(String, Vec<u8>), kube::Error> {
        let (spki, material) = fresh_key_material(&pod.key_type, self.release.format(), &pod.uid);
        let mut spec = json!({
            "signerName": self.signer_name, "podName": pod.name, "podUID": pod.uid,
            "serviceAccountName": pod.service_account, "serviceAccountUID": format!("sa-{}", pod.service_account),
            "nodeName": "node-1", "nodeUID": "node-uid-1", "maxExpirationSeconds": 86400,
        });
        spec.as_object_mut()
            .unwrap()
            .extend(material.as_object().unwrap().clone());
        let ar = pcr_resource(self.release.api_version());
        let body = json!({
            "apiVersion": ar.api_version, "kind": "PodCertificateRequest",
            "metadata": {"generateName": "req-", "namespace": pod.namespace,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod.name, "uid": pod.uid, "controller": true}]},
            "spec": spec,
        });
        let obj: DynamicObject = serde_json::from_value(body).expect("valid body");
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &pod.namespace, &ar);
        let created = api.create(&PostParams::default(), &obj).await?;
        Ok((created.name_any(), spki))
    }

    /// One pass over every pod: file what is due, take in what was answered, check validity.
    pub async fn tick(&self, trust_bundle: &str) {
        let now = self.now_v();
        let mut state = self.state.lock().await;
        let mut report = self.report.lock().await;
        for s in state.iter_mut() {
            let id = format!("{}/{}", s.pod.namespace, s.pod.name);
            // Take in the answer to the request in flight, if any.
            if let Some(f) = s.in_flight.clone() {
                let at = reflector::ObjectRef::new_with(
                    &f.name,
                    pcr_resource(self.release.api_version()),
                )
                .within(&s.pod.namespace);
                match self.store.get(&at) {
                    None if now - f.seen_v > UNSEEN_REFILE_S => {
                        // Not seen for 10 minutes: assumed deleted, filed again.
                        s.in_flight = None;
                        report.refiled += 1;
                    }
                    None => {}
                    Some(obj) => {
                        if let Some(inf) = s.in_flight.as_mut() {
                            inf.seen_v = now;
                        }
                        let status = &obj.data["status"];
                        let condition = status["conditions"][0]["type"].as_str().unwrap_or("");
                        match condition {
                            "Issued" => {
                                let spiffe = format!(
                                    "spiffe://example.org/ns/{}/sa/{}",
                                    s.pod.namespace, s.pod.service_account
                                );
                                if let Err(e) = check_issued(status, &f.spki, &spiffe, trust_bundle)
                                {
                                    report.lapses.push(format!(
                                        "{id}: an issued chain does not verify: {e}"
                                    ));
                                }
                                let real_now =
                                    k8s_openapi::jiff::Timestamp::now().as_second() as f64;
                                let t = |k: &str| {
                                    status[k]
                                        .as_str()
                                        .and_then(|v| {
                                            v.parse::<k8s_openapi::jiff::Timestamp>().ok()
                                        })
                                        .map(|t| t.as_second() as f64)
                                        .unwrap_or(real_now)
                                };
                                let expires_v = now + (t("notAfter") - real_now);
                                let refresh_v =
                                    now + (t("beginRefreshAt") - real_now) + Self::jitter_v();
                                if let Credential::Valid { expires_v: old, .. } = s.credential {
                                    report.min_remaining_at_refresh_s =
                                        report.min_remaining_at_refresh_s.min(old - now);
                                    if old < now {
                                        report.lapses.push(format!(
                                            "{id}: the refresh landed {:.0}s after the old credential expired",
                                            now - old
                                        ));
                                    }
                                }
                                if f.is_refresh {
                                    s.refreshes += 1;
                                }
                                report.issued += 1;
                                self.latencies.lock().await.push(now - f.filed_v);
                                s.credential = Credential::Valid {
                                    expires_v,
                                    refresh_v,
                                };
                                s.in_flight = None;
                            }
                            "Denied" | "Failed" => {
                                // Even a refresh's failure replaces the still-valid credential.
                                let reason = status["conditions"][0]["reason"]
                                    .as_str()
                                    .unwrap_or("")
                                    .to_string();
                                if matches!(s.credential, Credential::Valid { .. }) {
                                    report
                                        .lost_to_denial
                                        .push(format!("{id}: {condition} {reason}"));
                                }
                                s.credential = Credential::Lost;
                                s.in_flight = None;
                            }
                            _ => {}
                        }
                    }
                }
            }
            // A pod that held a credential must hold a valid one now.
            if let Credential::Valid { expires_v, .. } = s.credential
                && now > expires_v
            {
                report.lapses.push(format!(
                    "{id}: credential expired at virtual {expires_v:.0}s, now {now:.0}s"
                ));
                s.credential = Credential::None;
            }
        }
        // File what is due — a first credential, or a refresh — for every pod at once, as
        // the kubelet handles each pod on its own (one slow or throttled request must not
        // hold the others back).
        let due: Vec<(usize, Pod, bool)> = state
            .iter()
            .enumerate()
            .filter(|(_, s)| s.in_flight.is_none())
            .filter_map(|(i, s)| match s.credential {
                Credential::None => Some((i, s.pod.clone(), false)),
                Credential::Valid { refresh_v, .. } if now >= refresh_v => {
                    Some((i, s.pod.clone(), true))
                }
                _ => None,
            })
            .collect();
        drop(state);
        drop(report);
        let filed: Vec<_> = futures::stream::iter(due)
            .map(|(i, pod, is_refresh)| async move {
                let filed_v = self.now_v();
                (i, is_refresh, filed_v, self.file(&pod).await)
            })
            .buffer_unordered(64)
            .collect()
            .await;
        let mut state = self.state.lock().await;
        let mut report = self.report.lock().await;
        for (i, is_refresh, filed_v, result) in filed {
            // The API is down or throttling: the kubelet tries again on its next pass.
            let Ok((name, spki)) = result else { continue };
            if is_refresh {
                let hour = (filed_v / 3600.0) as usize;
                if report.refreshes_per_virtual_hour.len() <= hour {
                    report.refreshes_per_virtual_hour.resize(hour + 1, 0);
                }
                report.refreshes_per_virtual_hour[hour] += 1;
            }
            state[i].in_flight = Some(InFlight {
                name,
                spki,
                filed_v,
                seen_v: filed_v,
                is_refresh,
            });
        }
        report.min_refreshes_per_pod = state.iter().map(|s| s.refreshes).min().unwrap_or(0);
    }

    /// A kubelet restart: every credential is requested again at once (the mounted files
    /// stay until replaced).
    pub async fn restart(&self) {
        let now = self.now_v();
        for s in self.state.lock().await.iter_mut() {
            s.in_flight = None;
            if let Credential::Valid { refresh_v, .. } = &mut s.credential {
                *refresh_v = now;
            }
        }
    }

    pub async fn min_refreshes(&self) -> usize {
        self.state
            .lock()
            .await
            .iter()
            .map(|s| s.refreshes)
            .min()
            .unwrap_or(0)
    }

    pub async fn report(&self) -> RefreshReport {
        let mut r = self.report.lock().await.clone();
        let mut l = self.latencies.lock().await.clone();
        l.sort_by(f64::total_cmp);
        r.issuance_p50_s = l.get(l.len() / 2).copied().unwrap_or(0.0);
        r.issuance_max_s = l.last().copied().unwrap_or(0.0);
        r
    }
}
