//! What the identity policy needs to know live about a request: its namespace's labels, and
//! for a rule that asks for names, its pod and the Services that select it.
//!
//! Nothing here trusts the request beyond its verified fields: the pod is read by name and
//! must have the request's UID, service account and node (otherwise the request is denied:
//! it does not describe a live pod), and Service names come from Services whose selector
//! matches the pod's labels — never from annotations. Each cache is an [`Index`] that starts
//! the first time a policy needs it and lives for the term, holding only what decisions read,
//! by namespace (a request looks only at its own namespace's Services):
//! - namespaces: name → labels (a metadata-only read of each);
//! - Services: namespace → name → selector;
//! - pods: not cached; one GET per request whose rule asks for names (a cache of every pod
//!   would grow with the cluster, and a pod asks for a certificate about twice a day).
//!
//! A lookup that cannot answer yet — a cache not synced, a namespace not seen yet, no
//! Service selecting the pod yet — is a [`Wait`]: the request is retried with the
//! controller's backoff, never denied. A pod without an IP yet (the kubelet mounts volumes
//! before the pod's network exists) gets a certificate without IP SANs; its refresh has them.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use signer_core::{Denial, DenyReason, Grant, Placement};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::requests::pcr::Pcr;

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
    /// Namespace labels, under the namespace "" (namespaces are cluster-scoped).
    namespaces: OnceLock<Arc<Index<Labels>>>,
    /// Service selectors.
    services: OnceLock<Arc<Index<Selector>>>,
}

type Labels = BTreeMap<String, String>;

/// A Service's selector as kept: its pairs in one allocation (a `BTreeMap` node holds room for
/// eleven pairs, most of it empty for the usual one or two).
type Selector = Box<[(String, String)]>;

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
        let index = self.namespaces.get_or_init(|| {
            // Metadata only: name and labels, whatever else a namespace carries.
            let api = Api::<PartialObjectMeta<Namespace>>::all(self.client.clone());
            Index::follow(api, |ns| Some(ns.labels().clone()), &self.token)
        });
        index.synced("namespace").await?;
        index
            .read("", |names| names.get(namespace).cloned())
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
            let labels = pod.labels();
            let index = self.services.get_or_init(|| {
                let api = Api::<Service>::all(self.client.clone());
                Index::follow(
                    api,
                    |svc| {
                        svc.spec
                            .as_ref()?
                            .selector
                            .clone()
                            .map(|s| s.into_iter().collect())
                    },
                    &self.token,
                )
            });
            index.synced("Service").await?;
            // In name order: the names go into the certificate in a stable order.
            let selecting: Vec<String> = index.read(&namespace, |services| {
                services
                    .iter()
                    .filter(|(_, selector)| selects(selector, labels))
                    .map(|(name, _)| name.clone())
                    .collect()
            });
            if selecting.is_empty() {
                return Err(Wait::NoService {
                    namespace,
                    pod: spec.pod_name.clone(),
                    rule: grant.rule.clone(),
                });
            }
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
}

/// Whether a Service with `selector` selects a pod with `labels`: an empty selector selects
/// nothing (a Service without one has its endpoints managed by hand).
fn selects(selector: &[(String, String)], labels: &Labels) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
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

/// One watched resource, kept as only what decisions read: namespace → name → `V`, for the
/// objects `project` keeps (a Service without a selector selects nothing and is not kept).
///
/// Ready once the first list is complete. Every waiter sees that at once, through a `watch`
/// channel: kube's `Store::wait_until_ready` wakes only the last of several concurrent
/// waiters (a `futures` oneshot holds one waker), so the others slept until their timeout.
#[derive(Debug)]
pub struct Index<V> {
    objects: RwLock<HashMap<String, BTreeMap<String, V>>>,
    ready: watch::Sender<bool>,
}

impl<V: Send + Sync + 'static> Index<V> {
    fn new() -> Self {
        Index {
            objects: RwLock::default(),
            ready: watch::Sender::new(false),
        }
    }

    /// Starts following `api` until `token` is cancelled. A watch recovers by itself (kube's
    /// watcher lists again after errors, with backoff); it ends only with the term.
    fn follow<K>(
        api: Api<K>,
        project: fn(&K) -> Option<V>,
        token: &CancellationToken,
    ) -> Arc<Index<V>>
    where
        K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
        K::DynamicType: Default,
    {
        let index = Arc::new(Index::new());
        let events = watcher(
            api,
            watcher::Config::default().page_size(crate::requests::cache::LIST_PAGE),
        )
        .default_backoff();
        let (writer, token) = (index.clone(), token.clone());
        tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            let mut relisted = None;
            loop {
                let event = tokio::select! {
                    e = events.next() => e,
                    _ = token.cancelled() => return,
                };
                match event {
                    Some(Ok(event)) => writer.apply(event, project, &mut relisted),
                    Some(Err(_)) => {} // retried by the watcher's backoff
                    None => return,
                }
            }
        });
        index
    }

    /// Applies one watch event. A (re)list builds a fresh map in `relisted` and swaps it in
    /// whole when done, so a lookup never sees half a list.
    fn apply<K: kube::Resource>(
        &self,
        event: watcher::Event<K>,
        project: fn(&K) -> Option<V>,
        relisted: &mut Option<HashMap<String, BTreeMap<String, V>>>,
    ) {
        let key = |o: &K| {
            (
                o.meta().namespace.clone().unwrap_or_default(),
                o.meta().name.clone().unwrap_or_default(),
            )
        };
        let insert = |map: &mut HashMap<String, BTreeMap<String, V>>, o: &K| {
            let (ns, name) = key(o);
            match project(o) {
                Some(v) => {
                    map.entry(ns).or_default().insert(name, v);
                }
                None => {
                    if let Some(names) = map.get_mut(&ns) {
                        names.remove(&name);
                    }
                }
            }
        };
        match event {
            watcher::Event::Init => *relisted = Some(HashMap::new()),
            watcher::Event::InitApply(o) => insert(relisted.get_or_insert_default(), &o),
            watcher::Event::InitDone => {
                *self.objects.write().unwrap() = relisted.take().unwrap_or_default();
                self.ready.send_replace(true);
            }
            watcher::Event::Apply(o) => insert(&mut self.objects.write().unwrap(), &o),
            watcher::Event::Delete(o) => {
                let (ns, name) = key(&o);
                let mut objects = self.objects.write().unwrap();
                if let Some(names) = objects.get_mut(&ns) {
                    names.remove(&name);
                    if names.is_empty() {
                        objects.remove(&ns);
                    }
                }
            }
        }
    }

    /// Waits (at most [`SYNC_WAIT`]) for the first list to complete.
    async fn synced(&self, what: &'static str) -> Result<(), Wait> {
        let mut ready = self.ready.subscribe();
        match tokio::time::timeout(SYNC_WAIT, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Wait::NotSynced(what)),
        }
    }

    /// `f` over what is kept for `namespace` (empty if nothing is).
    fn read<R>(&self, namespace: &str, f: impl FnOnce(&BTreeMap<String, V>) -> R) -> R {
        let objects = self.objects.read().unwrap();
        match objects.get(namespace) {
            Some(names) => f(names),
            None => f(&BTreeMap::new()),
        }
    }
}

#[cfg(test)]
#[path = "lookups_tests.rs"]
mod tests;
