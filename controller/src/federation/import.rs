//! Importing foreign trust domains' bundles (`--federation-config`): each is fetched from its
//! bundle endpoint ([`super::fetch`]), checked, and published as a ClusterTrustBundle of our
//! signer name labelled with its trust domain, so a pod mounts it with a `clusterTrustBundle`
//! projection selecting `podcert-signer/trust-domain: <domain>`.
//!
//! The leader runs one loop per domain in its term ([`run`]). A loop starts from the domain's
//! *last good* bundle — the one its ClusterTrustBundle holds (roots and sequence, so any
//! leader after any restart continues from it), else the bootstrap bundle of an
//! `https_spiffe` entry — and fetches again after the refresh hint the domain gives (clamped
//! to [`MIN_REFRESH`]..[`MAX_REFRESH`], [`DEFAULT_REFRESH`] without one). A fetched bundle
//! replaces the last good one only if it is a valid bundle of that domain (only CA
//! certificates, all of the domain; see `SpiffeBundle::parse`) and its sequence does not go
//! back (`SpiffeBundle::may_replace`). Anything else — no connection, a TLS failure, an HTTP
//! error, garbage, a wrong domain, a lower sequence — keeps the last good bundle published,
//! counts in `podcert_federation_fetches_total{result=<why>}`, sets
//! `podcert_federation_bundle_current` to 0 and says why in a Warning Event on the domain's
//! ClusterTrustBundle; the next try follows the controller's one backoff, never later than
//! the refresh interval.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1beta1::ClusterTrustBundleSpec;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::PostParams;
use kube::core::ApiResource;
use kube::runtime::events::{EventType, Recorder};
use kube::{Api, Client};
use rustls::ClientConfig;
use signer_core::bundle::SpiffeBundle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::fetch::{self, FetchError};
use crate::ca::trust_bundle::{
    Channel, Ctb, LABEL_MANAGED_BY, LABEL_NAME, SEQUENCE_ANNOTATION, spiffe_bundle_of,
    trust_domain_labels,
};
use crate::config::{Peer, Profile};
use crate::federation::metrics::{DomainMetrics, FederationMetrics};
use crate::runtime::clock::Clock;
use crate::runtime::retry;

/// Without a refresh hint, a bundle is fetched again after this long.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
/// A hint below this is read as this (a peer cannot make us fetch in a loop).
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// A hint above this is read as this (a rotation must reach us within a day at worst).
pub const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// Marks a ClusterTrustBundle that carries an imported bundle (value `"true"`).
pub const LABEL_FEDERATED: &str = "podcert-signer/federated";
/// The bundle endpoint an imported bundle was fetched from.
pub const ENDPOINT_ANNOTATION: &str = "podcert-signer/bundle-endpoint";

/// The ClusterTrustBundles imported bundles are published in.
#[derive(Debug, Clone)]
pub struct Published {
    pub api: Api<Ctb>,
    pub resource: ApiResource,
    pub signer_name: String,
    /// Our own trust domain: the workloads that load the imported bundles.
    pub trust_domain: String,
}

impl Published {
    pub fn new(
        client: Client,
        resource: ApiResource,
        signer_name: String,
        trust_domain: String,
    ) -> Self {
        Published {
            api: Api::all_with(client, &resource),
            resource,
            signer_name,
            trust_domain,
        }
    }

    /// The bundle published for `peer`, if any (its roots and sequence).
    pub async fn read(&self, peer: &Peer) -> Result<Option<SpiffeBundle>, kube::Error> {
        Ok(self
            .api
            .get_opt(&peer.bundle_name)
            .await?
            .map(|ctb| spiffe_bundle_of(&ctb, &peer.trust_domain)))
    }

    /// Publishes `bundle` as `peer`'s ClusterTrustBundle.
    pub async fn write(&self, peer: &Peer, bundle: &SpiffeBundle) -> Result<(), kube::Error> {
        // Not `app.kubernetes.io/name`: pods select our own bundle by it (examples/), and a
        // foreign root merged into the own-domain file would let that domain mint our IDs.
        // The draft's labels name our workloads' domain and the peer's, so a pod selecting
        // its own domain's bundle (peer-trust-domain: ours) never gets a foreign root.
        let mut labels = BTreeMap::from([
            (LABEL_MANAGED_BY.to_string(), "podcert-signer".to_string()),
            (LABEL_FEDERATED.to_string(), "true".to_string()),
        ]);
        labels.extend(trust_domain_labels(
            &self.trust_domain,
            peer.trust_domain.as_str(),
            Channel::Live,
        ));
        let mut annotations =
            BTreeMap::from([(ENDPOINT_ANNOTATION.to_string(), peer.url.to_string())]);
        if let Some(s) = bundle.sequence {
            annotations.insert(SEQUENCE_ANNOTATION.to_string(), s.to_string());
        }
        let spec = ClusterTrustBundleSpec {
            signer_name: Some(self.signer_name.clone()),
            trust_bundle: bundle.to_pem(),
        };
        match self.api.get_opt(&peer.bundle_name).await? {
            None => {
                let mut ctb = Ctb::new(&peer.bundle_name, &self.resource, spec);
                ctb.metadata.labels = Some(labels);
                ctb.metadata.annotations = Some(annotations);
                self.api.create(&PostParams::default(), &ctb).await?;
            }
            Some(mut ctb) => {
                let l = ctb.metadata.labels.get_or_insert_with(BTreeMap::new);
                l.remove(LABEL_NAME);
                l.extend(labels);
                let a = ctb.metadata.annotations.get_or_insert_with(BTreeMap::new);
                a.remove(SEQUENCE_ANNOTATION);
                a.extend(annotations);
                ctb.spec = spec;
                ctb.metadata.managed_fields = None;
                self.api
                    .replace(&peer.bundle_name, &PostParams::default(), &ctb)
                    .await?;
            }
        }
        Ok(())
    }

    fn reference(&self, peer: &Peer) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.resource.api_version.clone()),
            kind: Some(self.resource.kind.clone()),
            name: Some(peer.bundle_name.clone()),
            ..Default::default()
        }
    }
}

/// What one domain's loop needs.
pub struct Importer {
    pub published: Published,
    pub recorder: Recorder,
    pub metrics: FederationMetrics,
    /// The certificate clock endpoints' certificates are checked on.
    pub clock: Clock,
}

/// Follows every peer until `token` is cancelled.
pub async fn run(importer: Arc<Importer>, peers: Vec<Peer>, token: CancellationToken) {
    futures::future::join_all(
        peers
            .into_iter()
            .map(|peer| follow(importer.clone(), peer, token.clone())),
    )
    .await;
}

/// How long to wait for the next fetch after a good one.
pub fn refresh_interval(hint: Option<Duration>) -> Duration {
    hint.unwrap_or(DEFAULT_REFRESH)
        .clamp(MIN_REFRESH, MAX_REFRESH)
}

async fn follow(importer: Arc<Importer>, peer: Peer, token: CancellationToken) {
    let what = format!("reading the imported bundle of {}", peer.trust_domain);
    let Some(published) = retry::retry(&what, &token, || importer.published.read(&peer)).await
    else {
        return;
    };
    let mut domain = Domain::new(peer, published, importer.clock, &importer.metrics);
    let mut backoff = retry::backoff();
    loop {
        let Some(fetched) = token.run_until_cancelled(domain.fetch()).await else {
            return;
        };
        let wait = match importer.take(&mut domain, fetched).await {
            Ok(()) => {
                backoff = retry::backoff();
                domain.interval
            }
            Err(()) => backoff
                .next()
                .unwrap_or(domain.interval)
                .min(domain.interval),
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = token.cancelled() => return,
        }
    }
}

/// The bundle a fetched one must not go back from, and that authenticates an `https_spiffe`
/// endpoint: the published one, else the bootstrap.
fn last_good<'a>(peer: &'a Peer, published: Option<&'a SpiffeBundle>) -> Option<&'a SpiffeBundle> {
    published.or(match &peer.profile {
        Profile::HttpsSpiffe { bootstrap, .. } => Some(bootstrap),
        Profile::HttpsWeb { .. } => None,
    })
}

/// How `peer`'s endpoint is authenticated, given what is published.
fn client_config(
    peer: &Peer,
    published: Option<&SpiffeBundle>,
    clock: Clock,
) -> Result<Arc<ClientConfig>, String> {
    fetch::client_config(peer, last_good(peer, published), clock).map(Arc::new)
}

/// One foreign domain as its loop knows it.
struct Domain {
    peer: Peer,
    metrics: DomainMetrics,
    /// What its ClusterTrustBundle holds (roots and sequence).
    published: Option<SpiffeBundle>,
    /// How its endpoint is authenticated: made again only when the bundle it trusts changes.
    tls: Result<Arc<ClientConfig>, String>,
    clock: Clock,
    /// The wait after a good fetch: the domain's refresh hint, clamped.
    interval: Duration,
}

impl Domain {
    fn new(
        peer: Peer,
        published: Option<SpiffeBundle>,
        clock: Clock,
        metrics: &FederationMetrics,
    ) -> Self {
        let tls = client_config(&peer, published.as_ref(), clock);
        Domain {
            metrics: metrics.domain(&peer.trust_domain),
            peer,
            published,
            tls,
            clock,
            interval: refresh_interval(None),
        }
    }

    fn last_good(&self) -> Option<&SpiffeBundle> {
        last_good(&self.peer, self.published.as_ref())
    }

    /// A fetched bundle that may replace the last good one.
    async fn fetch(&self) -> Result<SpiffeBundle, FetchError> {
        let tls = self
            .tls
            .clone()
            .map_err(|e| FetchError::from(crate::runtime::https_client::HttpsError::Tls(e)))?;
        let bundle = fetch::fetch(&self.peer, tls).await?;
        if let Some(last) = self.last_good() {
            bundle.may_replace(last)?;
        }
        Ok(bundle)
    }

    /// Whether `bundle` is what is published (its roots and sequence).
    fn publishes(&self, bundle: &SpiffeBundle) -> bool {
        self.published.as_ref().is_some_and(|p| {
            p.x509_authorities == bundle.x509_authorities && p.sequence == bundle.sequence
        })
    }
}

impl Importer {
    /// Publishes a fetched bundle if it is new, or says why there is none; Err: try again
    /// by the backoff.
    async fn take(
        &self,
        domain: &mut Domain,
        fetched: Result<SpiffeBundle, FetchError>,
    ) -> Result<(), ()> {
        let (peer, metrics) = (&domain.peer, &domain.metrics);
        let bundle = match fetched {
            Ok(bundle) => bundle,
            Err(e) => {
                warn!(trust_domain = %peer.trust_domain, endpoint = %peer.url, error = %e, "fetching the federated bundle failed; keeping the last good one");
                metrics.fetch_failed(e.reason());
                let kept = if domain.published.is_some() {
                    "the last good bundle stays published"
                } else {
                    "nothing is published for it yet"
                };
                let note = format!(
                    "fetching the bundle of {} from {} failed: {e}; {kept}",
                    peer.trust_domain, peer.url
                );
                self.event(peer, EventType::Warning, "FederatedBundleFetchFailed", note)
                    .await;
                return Err(());
            }
        };
        domain.interval = refresh_interval(bundle.refresh_hint);
        if !domain.publishes(&bundle) {
            if let Err(e) = self.published.write(peer, &bundle).await {
                // Fetched and good, but not published: try again soon.
                warn!(trust_domain = %peer.trust_domain, error = %e, "publishing the federated bundle failed");
                metrics.publish_failed();
                return Err(());
            }
            info!(trust_domain = %peer.trust_domain, sequence = ?bundle.sequence, roots = bundle.x509_authorities.len(), bundle = %peer.bundle_name, "published the federated trust domain's bundle");
            let note = format!(
                "published the bundle of {} from {} (sequence {}, {} authorities)",
                peer.trust_domain,
                peer.url,
                bundle.sequence.map_or("none".into(), |s| s.to_string()),
                bundle.x509_authorities.len()
            );
            self.event(peer, EventType::Normal, "FederatedBundleUpdated", note)
                .await;
            domain.published = Some(bundle);
            domain.tls = client_config(&domain.peer, domain.published.as_ref(), domain.clock);
        }
        domain
            .metrics
            .current_at(signer_core::time::unix_seconds(std::time::SystemTime::now()));
        Ok(())
    }

    async fn event(&self, peer: &Peer, type_: EventType, reason: &str, note: String) {
        let regarding = self.published.reference(peer);
        if let Err(e) = crate::runtime::events::publish(
            &self.recorder,
            &regarding,
            type_,
            "ImportBundle",
            reason,
            note,
        )
        .await
        {
            warn!(error = %e, bundle = %peer.bundle_name, "could not publish an Event");
        }
    }
}

impl std::fmt::Debug for Importer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Importer")
            .field("published", &self.published)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_cannot_make_us_fetch_in_a_loop_nor_forget_it_for_days() {
        assert_eq!(refresh_interval(None), DEFAULT_REFRESH);
        assert_eq!(refresh_interval(Some(Duration::ZERO)), MIN_REFRESH);
        assert_eq!(
            refresh_interval(Some(Duration::from_secs(90))),
            Duration::from_secs(90)
        );
        assert_eq!(
            refresh_interval(Some(Duration::from_secs(u64::MAX / 2))),
            MAX_REFRESH
        );
    }
}
