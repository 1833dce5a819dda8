//! What the identity policy needs to know live about a request: its namespace's labels, and
//! for a rule that asks for names, its pod and the Services that select it.
//!
//! Nothing here trusts the request beyond its verified fields: the pod is read by name and
//! must have the request's UID, service account and node (otherwise the request is denied:
//! it does not describe a live pod), and Service names come from Services whose selector
//! matches the pod's labels — never from annotations. Each cache starts the first time a
//! policy needs it and lives for the term, holding only what decisions read:
//! - namespaces: a metadata-only watch (name and labels);
//! - Services: name, namespace and selector;
//! - pods: not cached; one GET per request whose rule asks for names (a cache of every pod
//!   would grow with the cluster, and a pod asks for a certificate about twice a day).
//!
//! A lookup that cannot answer yet — a cache not synced, a namespace not seen yet, no
//! Service selecting the pod yet — is a [`Wait`]: the request is retried with the
//! controller's backoff, never denied. A pod without an IP yet (the kubelet mounts volumes
//! before the pod's network exists) gets a certificate without IP SANs; its refresh has them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceSpec};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use signer_core::{Denial, DenyReason, Grant, Placement};
use tokio_util::sync::CancellationToken;

use crate::pcr::Pcr;

/// How long a lookup waits for a cache that has just started to sync.
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// Why a lookup cannot answer yet; the request is retried.
#[derive(Debug, thiserror::Error)]
pub enum Wait {
    #[error("the {0} cache has not synced yet")]
    NotSynced(&'static str),
    #[error("namespace {0:?} is not in the namespace cache yet")]
    NamespaceUnknown(String),
    #[error("pod {0} was not found")]
    PodNotFound(String),
    #[error("reading pod {pod} failed: {source}")]
    Pod {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "no Service in namespace {namespace:?} selects pod {pod:?} yet; rule {rule:?} of the identity policy asks for Service DNS names, so the request waits for one"
    )]
    NoService {
        namespace: String,
        pod: String,
        rule: String,
    },
}

/// The term's lookups; caches start on first use and stop with the term.
pub struct Lookups {
    client: Client,
    cluster_domain: String,
    token: CancellationToken,
    namespaces: OnceLock<Store<PartialObjectMeta<Namespace>>>,
    services: OnceLock<Store<Service>>,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups")
            .field("cluster_domain", &self.cluster_domain)
            .finish_non_exhaustive()
    }
}

impl Lookups {
    pub fn new(client: Client, cluster_domain: String, token: CancellationToken) -> Self {
        Lookups {
            client,
            cluster_domain,
            token,
            namespaces: OnceLock::new(),
            services: OnceLock::new(),
        }
    }

    /// The labels of `namespace`.
    pub async fn namespace_labels(
        &self,
        namespace: &str,
    ) -> Result<BTreeMap<String, String>, Wait> {
        let store = self.namespaces.get_or_init(|| {
            // Metadata-only: name and labels, whatever else a namespace carries.
            let api = Api::<PartialObjectMeta<Namespace>>::all(self.client.clone());
            let stream = watcher(api, watcher::Config::default())
                .map_ok(|e| e.modify(|ns| ns.metadata.managed_fields = None));
            run_cache(stream, (), &self.token)
        });
        synced(store, "namespace").await?;
        store
            .get(&ObjectRef::new(namespace))
            .map(|ns| ns.metadata.labels.clone().unwrap_or_default())
            .ok_or_else(|| Wait::NamespaceUnknown(namespace.to_owned()))
    }

    /// The names `grant` asks for, for the pod `pcr` names; a Denial if the pod is not the
    /// one the request was made for.
    pub async fn placement(
        &self,
        pcr: &Pcr,
        grant: &Grant,
    ) -> Result<Result<Placement, Denial>, Wait> {
        let namespace = pcr.metadata.namespace.clone().unwrap_or_default();
        let spec = &pcr.spec;
        let who = format!("{namespace}/{}", spec.pod_name);
        let pod = Api::<Pod>::namespaced(self.client.clone(), &namespace)
            .get_opt(&spec.pod_name)
            .await
            .map_err(|source| Wait::Pod {
                pod: who.clone(),
                source,
            })?
            .ok_or_else(|| Wait::PodNotFound(who.clone()))?;
        if let Some(denial) = mismatch(&pod, pcr) {
            return Ok(Err(denial));
        }
        let mut placement = Placement::default();
        if grant.dns_names.services {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let store = self.services();
            synced(store, "Service").await?;
            let mut selecting: Vec<String> = store
                .state()
                .iter()
                .filter(|svc| svc.metadata.namespace.as_deref() == Some(namespace.as_str()))
                .filter(|svc| selects(svc, &labels))
                .filter_map(|svc| svc.metadata.name.clone())
                .collect();
            if selecting.is_empty() {
                return Err(Wait::NoService {
                    namespace,
                    pod: spec.pod_name.clone(),
                    rule: grant.rule.clone(),
                });
            }
            selecting.sort();
            for svc in selecting {
                placement
                    .service_dns_names
                    .push(format!("{svc}.{namespace}.svc"));
                placement
                    .service_dns_names
                    .push(format!("{svc}.{namespace}.svc.{}", self.cluster_domain));
            }
        }
        if grant.dns_names.pod_ip {
            placement.pod_ips = pod
                .status
                .iter()
                .flat_map(|s| s.pod_ips.iter().flatten())
                .filter_map(|ip| ip.ip.parse::<IpAddr>().ok())
                .collect();
        }
        Ok(Ok(placement))
    }

    fn services(&self) -> &Store<Service> {
        self.services.get_or_init(|| {
            let api = Api::<Service>::all(self.client.clone());
            let stream =
                watcher(api, watcher::Config::default()).map_ok(|e| e.modify(trim_service));
            run_cache(stream, (), &self.token)
        })
    }
}

/// A Service as the decision needs it: name, namespace, selector.
fn trim_service(svc: &mut Service) {
    let selector = svc.spec.as_ref().and_then(|s| s.selector.clone());
    svc.metadata.managed_fields = None;
    svc.metadata.annotations = None;
    svc.metadata.labels = None;
    svc.spec = Some(ServiceSpec {
        selector,
        ..ServiceSpec::default()
    });
    svc.status = None;
}

/// Whether `svc` selects a pod with `labels`: a Service without a selector selects nothing.
fn selects(svc: &Service, labels: &BTreeMap<String, String>) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Why the pod named by the request is not the pod it was made for, if it is not.
fn mismatch(pod: &Pod, pcr: &Pcr) -> Option<Denial> {
    let spec = &pcr.spec;
    let pod_spec = pod.spec.as_ref();
    let checks = [
        ("UID", pod.metadata.uid.as_deref(), spec.pod_uid.as_str()),
        (
            "service account",
            pod_spec.and_then(|s| s.service_account_name.as_deref()),
            spec.service_account_name.as_str(),
        ),
        (
            "node",
            pod_spec.and_then(|s| s.node_name.as_deref()),
            spec.node_name.as_str(),
        ),
    ];
    checks.into_iter().find(|(_, live, asked)| *live != Some(*asked)).map(|(what, live, asked)| {
        Denial::new(
            DenyReason::InvalidIdentity,
            format!(
                "pod {:?} has {what} {:?}, not the request's {asked:?}: the request is not for the live pod",
                spec.pod_name,
                live.unwrap_or("")
            ),
        )
    })
}

/// Runs a reflector over `stream` until `token` is cancelled; its store.
fn run_cache<K, S>(stream: S, dyntype: K::DynamicType, token: &CancellationToken) -> Store<K>
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Send + Sync,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let writer = reflector::store::Writer::new(dyntype);
    let store = writer.as_reader();
    let token = token.clone();
    // A watch recovers by itself (kube's watcher relists after errors, with backoff); it ends
    // only with the term.
    let drive = reflector::reflector(writer, stream)
        .default_backoff()
        .for_each(|_| future::ready(()));
    tokio::spawn(async move {
        tokio::select! {
            _ = drive => {}
            _ = token.cancelled() => {}
        }
    });
    store
}

async fn synced<K>(store: &Store<K>, what: &'static str) -> Result<(), Wait>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    match tokio::time::timeout(SYNC_WAIT, store.wait_until_ready()).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(Wait::NotSynced(what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(selector: &[(&str, &str)]) -> Service {
        Service {
            spec: Some(ServiceSpec {
                selector: Some(
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_service_selects_a_pod_only_when_every_selector_pair_matches() {
        let labels: BTreeMap<String, String> = [("app", "api"), ("tier", "web")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        assert!(selects(&svc(&[("app", "api")]), &labels));
        assert!(selects(&svc(&[("app", "api"), ("tier", "web")]), &labels));
        assert!(!selects(&svc(&[("app", "api"), ("tier", "db")]), &labels));
        assert!(
            !selects(&svc(&[]), &labels),
            "an empty selector selects nothing"
        );
        assert!(
            !selects(&Service::default(), &labels),
            "no selector selects nothing"
        );
    }

    #[test]
    fn a_trimmed_service_keeps_only_its_selector() {
        let mut s = svc(&[("app", "api")]);
        s.metadata.name = Some("api".into());
        s.metadata.annotations = Some([("a".to_string(), "b".to_string())].into());
        s.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.1".into());
        trim_service(&mut s);
        assert_eq!(s.metadata.name.as_deref(), Some("api"));
        assert_eq!(s.metadata.annotations, None);
        assert_eq!(
            s.spec,
            Some(ServiceSpec {
                selector: svc(&[("app", "api")]).spec.unwrap().selector,
                ..Default::default()
            })
        );
    }
}
