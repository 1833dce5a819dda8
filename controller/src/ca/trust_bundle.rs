//! Publishing the CA roots in ClusterTrustBundles, through CA rotations.
//!
//! Two bundles, one per [`Channel`] of the SPIFFE Filesystem Delivery draft: the `live` one,
//! named `<signer-name with / as :>:<suffix>` (contract §6), which most pods select, and the
//! `preview` one, named `<live name>.preview`, which canary pods select to trust a rotation's
//! next root before the rest of the fleet does. Both carry `spec.signerName` and the draft's
//! labels ([`trust_domain_labels`]); only the live one also carries our older labels, so a
//! pod selecting those keeps getting exactly the live roots. Each holds the current
//! roots of its channel ([`Channel::current_roots`]: the next root joins the preview bundle
//! when it is prepared, the live one only after the preview delay) plus every *retired* root
//! that may still have valid leaves: when a root stops signing, it stays until the last leaf
//! that chains to it has expired (the longest leaf lifetime plus a deposed leader's overlap).
//! Outside a rotation the two hold the same roots. That state lives in each bundle itself —
//! the annotation [`RETAINED_ANNOTATION`] records each root it publishes by SHA-256 (see
//! [`desired`]) — so any leader, after any restart, honours it. The controller publishes
//! before it signs with a new CA ([`TrustBundle::sync`] must succeed first, preview before
//! live) and repairs drift periodically. When the cluster serves no ClusterTrustBundle API
//! the controller says so once and keeps signing.

use std::collections::BTreeMap;

use k8s_openapi::api::certificates::v1beta1::ClusterTrustBundleSpec;
use kube::api::PostParams;
use kube::core::{ApiResource, NotUsed, Object};
use kube::{Api, Client};
use signer_core::time::Clock;
use signer_core::x509::certificate_pem;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::secret::LoadedCa;
use crate::runtime::retry;

/// The roots a leader publishes as current: our CA's (the next root too during a rotation, per
/// [`Channel::current_roots`]), or an upstream authority's (the same in both bundles).
#[derive(Debug, Clone, Copy)]
pub enum Roots<'a> {
    Ours(&'a LoadedCa),
    Upstream(&'a str),
}

impl Roots<'_> {
    fn current(self, channel: Channel) -> String {
        match self {
            Roots::Ours(ca) => channel.current_roots(ca),
            Roots::Upstream(pem) => pem.to_owned(),
        }
    }
}

/// Which of the draft's two bundles: `live` for most pods, `preview` for canaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Live,
    Preview,
}

impl Channel {
    /// The value of [`LABEL_CANARYING`].
    pub fn label_value(self) -> &'static str {
        match self {
            Channel::Live => "live",
            Channel::Preview => "preview",
        }
    }

    /// The roots this channel's bundle must publish as current for `ca`: the active root(s),
    /// and the next root while a rotation is under way — in the preview bundle from when it
    /// is prepared, in the live one once the rotation has published it there.
    pub fn current_roots(self, ca: &LoadedCa) -> String {
        let mut pem = ca.active.ca.trust_bundle_pem().to_owned();
        if let Some(next) = &ca.next
            && (self == Channel::Preview || next.published_at.is_some())
        {
            pem.push_str(next.root.ca.trust_bundle_pem());
        }
        pem
    }
}

/// A ClusterTrustBundle of any served version (the spec is the same in all).
pub type Ctb = Object<ClusterTrustBundleSpec, NotUsed>;

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_TRUST_DOMAIN: &str = "podcert-signer/trust-domain";
/// The SPIFFE Filesystem Delivery draft's labels (spiffe/spiffe#376, Appendix B): `live` for
/// the bundles most pods select, `preview` for what canary pods may trust early.
pub const LABEL_CANARYING: &str = "k8s.spiffe.io/canarying";
/// The trust domain of the workloads that should load the bundle.
pub const LABEL_WORKLOAD_TRUST_DOMAIN: &str = "k8s.spiffe.io/workload-trust-domain";
/// The trust domain whose peers the bundle verifies.
pub const LABEL_PEER_TRUST_DOMAIN: &str = "k8s.spiffe.io/peer-trust-domain";
/// JSON object: SHA-256 (hex) of each root we publish → 0 while current, else the Unix time
/// until which the retired root is kept.
pub const RETAINED_ANNOTATION: &str = "podcert-signer/retained-roots";
/// The bundle's SPIFFE sequence number (`spiffe_sequence` of the SPIFFE bundle served to
/// federated trust domains): changed with every change of the roots, never going back — kept
/// in the bundle itself, like the retention record, so every leader after any restart
/// continues it (see [`next_sequence`]).
pub const SEQUENCE_ANNOTATION: &str = "podcert-signer/spiffe-sequence";

/// The labels naming the trust domains of a bundle of `channel` that verifies `peer`'s peers
/// for `workload`'s workloads (the same domain for our own bundle): the SPIFFE Filesystem
/// Delivery draft's, and for a live bundle ours (`podcert-signer/trust-domain: <peer>`). A
/// trust domain that is not a valid label value (over 63 characters) is not labelled, and
/// neither is the bundle by the draft's.
pub fn trust_domain_labels(
    workload: &str,
    peer: &str,
    channel: Channel,
) -> BTreeMap<String, String> {
    let valid = |td: &str| {
        td.len() <= 63
            && td.starts_with(|c: char| c.is_ascii_alphanumeric())
            && td.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    let mut labels = BTreeMap::new();
    if valid(peer) {
        if channel == Channel::Live {
            labels.insert(LABEL_TRUST_DOMAIN.to_string(), peer.to_string());
        }
        if valid(workload) {
            labels.insert(
                LABEL_CANARYING.to_string(),
                channel.label_value().to_string(),
            );
            labels.insert(
                LABEL_WORKLOAD_TRUST_DOMAIN.to_string(),
                workload.to_string(),
            );
            labels.insert(LABEL_PEER_TRUST_DOMAIN.to_string(), peer.to_string());
        }
    }
    labels
}

/// One of the two bundles: its name and labels.
#[derive(Debug, Clone)]
struct Published {
    channel: Channel,
    name: String,
    labels: BTreeMap<String, String>,
}

#[derive(Clone)]
pub struct TrustBundle {
    api: Api<Ctb>,
    resource: ApiResource,
    /// The live bundle's name.
    pub name: String,
    signer_name: String,
    /// Preview first: the live bundle never holds a root the preview one lacks.
    bundles: [Published; 2],
    /// How long a root stays after it stopped being current (see [`desired`]).
    retain_for: std::time::Duration,
    /// The certificate clock retention is measured on.
    clock: Clock,
    /// Where a refusal to publish (no `attest` grant) is reported.
    refusals: Option<Refusals>,
}

impl std::fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundle")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// How a refused publication is made visible: a Warning Event about the CA whose roots cannot
/// be published, and the error counter an alert watches.
#[derive(Clone)]
pub struct Refusals {
    pub recorder: kube::runtime::events::Recorder,
    pub regarding: k8s_openapi::api::core::v1::ObjectReference,
    pub metrics: crate::ca::metrics::CaMetrics,
}

impl std::fmt::Debug for Refusals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refusals")
            .field("regarding", &self.regarding)
            .finish_non_exhaustive()
    }
}

/// What [`TrustBundle::sync`] did (to either bundle: created one, else updated one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Synced {
    Unchanged,
    Updated,
    Created,
}

/// The preview bundle's name beside the live bundle `live_name`.
pub fn preview_name(live_name: &str) -> String {
    format!("{live_name}.preview")
}

fn sha256_hex(der: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn ders(pem_text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(pem_text)
        .unwrap_or_default()
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect()
}

/// The bundle to publish and its annotation, given what is published now (`published_pem`
/// and its annotation), the current CA's roots and the clock.
///
/// The annotation records every root we publish: current ones as `0`, retired ones with the
/// Unix time until which they are kept. A recorded root that is no longer current is retired
/// until `now + retain_for` (the longest leaf lifetime); a retired root is dropped once its
/// time has passed; a root in the bundle that we never recorded is someone else's edit and is
/// dropped at once. Current roots come first, retired ones after.
pub fn desired(
    published_pem: Option<&str>,
    published_annotation: Option<&str>,
    current_roots_pem: &str,
    now: i64,
    retain_for: i64,
) -> (String, String) {
    let current = ders(current_roots_pem);
    let recorded: BTreeMap<String, i64> = published_annotation
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default();
    let mut record: BTreeMap<String, i64> = current.iter().map(|d| (sha256_hex(d), 0)).collect();
    let mut retired = Vec::new();
    for der in published_pem.map(ders).unwrap_or_default() {
        let hash = sha256_hex(&der);
        if record.contains_key(&hash) {
            continue;
        }
        let until = match recorded.get(&hash) {
            Some(0) => now + retain_for,
            Some(until) => *until,
            None => continue,
        };
        if until > now {
            record.insert(hash, until);
            retired.push(der);
        }
    }
    let mut bundle: String = current.iter().map(|d| certificate_pem(d)).collect();
    bundle.extend(retired.iter().map(|d| certificate_pem(d)));
    (
        bundle,
        serde_json::to_string(&record).expect("a map serialises"),
    )
}

/// The sequence number to publish: `recorded` (the annotation's, if any) while the roots
/// are unchanged; when they change (or nothing was recorded), the Unix time now, or one more
/// than `recorded` if the clock reads earlier — so it only ever grows, whichever replica
/// writes, and a recreated bundle starts above a deleted one's.
pub fn next_sequence(recorded: Option<&str>, roots_changed: bool, now: i64) -> String {
    let recorded: Option<u64> = recorded.and_then(|r| r.parse().ok());
    let now = u64::try_from(now).unwrap_or(0);
    match recorded {
        Some(r) if !roots_changed => r,
        Some(r) => now.max(r.saturating_add(1)),
        None => now,
    }
    .to_string()
}

/// A ClusterTrustBundle read as a SPIFFE bundle of `trust_domain`: its roots and its
/// sequence ([`SEQUENCE_ANNOTATION`]), no refresh hint. Ours and imported ones alike.
pub fn spiffe_bundle_of(
    ctb: &Ctb,
    trust_domain: &signer_core::TrustDomain,
) -> signer_core::bundle::SpiffeBundle {
    signer_core::bundle::SpiffeBundle {
        trust_domain: trust_domain.clone(),
        sequence: ctb
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SEQUENCE_ANNOTATION))
            .and_then(|s| s.parse().ok()),
        refresh_hint: None,
        x509_authorities: ders(&ctb.spec.trust_bundle),
    }
}

impl TrustBundle {
    pub fn new(
        client: Client,
        resource: ApiResource,
        name: String,
        signer_name: String,
        trust_domain: &str,
        retain_for: std::time::Duration,
        clock: Clock,
    ) -> Self {
        let labels = |channel| {
            let mut labels =
                BTreeMap::from([(LABEL_MANAGED_BY.to_string(), "podcert-signer".to_string())]);
            if channel == Channel::Live {
                labels.insert(LABEL_NAME.to_string(), "podcert-signer".to_string());
            }
            labels.extend(trust_domain_labels(trust_domain, trust_domain, channel));
            labels
        };
        let bundles = [
            Published {
                channel: Channel::Preview,
                name: preview_name(&name),
                labels: labels(Channel::Preview),
            },
            Published {
                channel: Channel::Live,
                name: name.clone(),
                labels: labels(Channel::Live),
            },
        ];
        TrustBundle {
            api: Api::all_with(client, &resource),
            resource,
            name,
            signer_name,
            bundles,
            retain_for,
            clock,
            refusals: None,
        }
    }

    /// Reports each refusal to publish for want of the `attest` grant through `refusals`.
    pub fn reporting_refusals(mut self, refusals: Refusals) -> Self {
        self.refusals = Some(refusals);
        self
    }

    /// kube-apiserver answers 403 to a ClusterTrustBundle write naming a signer the writer may
    /// not `attest` for (contract §6): named in the log, an Event and a metric, since nothing
    /// is signed under roots that are not published.
    async fn report_refusal(&self, name: &str, status: &kube::core::Status) {
        tracing::error!(%name, signer = %self.signer_name, message = %status.message,
            "the API server refuses to publish the trust bundle: grant the verb \"attest\" on certificates.k8s.io signers for this signer name");
        let Some(r) = &self.refusals else { return };
        r.metrics.attest_forbidden();
        let note = format!(
            "the API server refuses to publish ClusterTrustBundle {name}: the signer's identity lacks the verb \"attest\" on certificates.k8s.io \"signers\" \"{}\" (manifests/clusterrole.yaml grants it); nothing is signed under roots that are not published",
            self.signer_name
        );
        if let Err(e) = crate::runtime::events::publish(
            &r.recorder,
            &r.regarding,
            kube::runtime::events::EventType::Warning,
            "Publish",
            "AttestForbidden",
            note,
        )
        .await
        {
            tracing::warn!(error = %e, "could not publish the AttestForbidden Event");
        }
    }

    /// Whether the published bundle records a root of ours as current: then a CA is in use,
    /// and a missing CA Secret means the CA was lost, not that this is a fresh install.
    pub async fn publishes_a_current_root(&self) -> Result<bool, kube::Error> {
        let Some(ctb) = self.api.get_opt(&self.name).await? else {
            return Ok(false);
        };
        let recorded: BTreeMap<String, i64> = ctb
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RETAINED_ANNOTATION))
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        Ok(recorded.values().any(|until| *until == 0))
    }

    /// The published bundle as a SPIFFE bundle of `trust_domain` (its roots and sequence),
    /// for federated domains; None while nothing is published.
    pub async fn spiffe_bundle(
        &self,
        trust_domain: &signer_core::TrustDomain,
        refresh_hint: std::time::Duration,
    ) -> Result<Option<signer_core::bundle::SpiffeBundle>, kube::Error> {
        Ok(self.api.get_opt(&self.name).await?.map(|ctb| {
            let mut bundle = spiffe_bundle_of(&ctb, trust_domain);
            bundle.refresh_hint = Some(refresh_hint);
            bundle
        }))
    }

    /// Makes each bundle — preview, then live — hold `roots` as current in its channel plus
    /// the retired roots still within their retention, with our signer name and labels.
    pub async fn sync(&self, roots: Roots<'_>) -> Result<Synced, kube::Error> {
        self.sync_with(|channel| roots.current(channel)).await
    }

    /// [`TrustBundle::sync`] until it succeeds — a leader signs under roots only once they are
    /// published; None if `token` fires first.
    pub async fn publish(&self, roots: Roots<'_>, token: &CancellationToken) -> Option<()> {
        let done = retry::retry(
            "publishing the trust bundle (not signing under these roots until it is published)",
            token,
            || self.sync(roots),
        )
        .await?;
        if done != Synced::Unchanged {
            info!(name = %self.name, ?done, "published the trust bundle");
        }
        Some(())
    }

    /// One [`TrustBundle::sync`] to repair drift: logged, and retried at the next repair if
    /// it fails.
    pub async fn repair(&self, roots: Roots<'_>) {
        match self.sync(roots).await {
            Ok(Synced::Unchanged) => {}
            Ok(done) => info!(name = %self.name, ?done, "repaired the trust bundle"),
            Err(e) => {
                warn!(name = %self.name, error = %e, "checking the trust bundle failed; will retry")
            }
        }
    }

    async fn sync_with(&self, current: impl Fn(Channel) -> String) -> Result<Synced, kube::Error> {
        let mut done = Synced::Unchanged;
        for bundle in &self.bundles {
            let result = self.sync_one(bundle, &current(bundle.channel)).await;
            if let Err(kube::Error::Api(status)) = &result
                && status.code == 403
            {
                self.report_refusal(&bundle.name, status).await;
            }
            done = done.max(result?);
        }
        Ok(done)
    }

    async fn sync_one(&self, target: &Published, roots_pem: &str) -> Result<Synced, kube::Error> {
        let now = self.clock.unix_now();
        let retain_for = i64::try_from(self.retain_for.as_secs()).unwrap_or(i64::MAX / 2);
        match self.api.get_opt(&target.name).await? {
            None => {
                let (bundle, annotation) = desired(None, None, roots_pem, now, retain_for);
                let spec = ClusterTrustBundleSpec {
                    signer_name: Some(self.signer_name.clone()),
                    trust_bundle: bundle,
                };
                let mut ctb = Ctb::new(&target.name, &self.resource, spec);
                ctb.metadata.labels = Some(target.labels.clone());
                ctb.metadata.annotations = Some(BTreeMap::from([
                    (RETAINED_ANNOTATION.to_string(), annotation),
                    (
                        SEQUENCE_ANNOTATION.to_string(),
                        next_sequence(None, true, now),
                    ),
                ]));
                match self.api.create(&PostParams::default(), &ctb).await {
                    Ok(_) => Ok(Synced::Created),
                    // Created meanwhile (by another leader): the next sync reconciles it.
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(Synced::Unchanged),
                    Err(e) => Err(e),
                }
            }
            Some(mut ctb) => {
                let annotations = ctb.metadata.annotations.get_or_insert_with(BTreeMap::new);
                let (bundle, annotation) = desired(
                    Some(&ctb.spec.trust_bundle),
                    annotations.get(RETAINED_ANNOTATION).map(String::as_str),
                    roots_pem,
                    now,
                    retain_for,
                );
                let labels = ctb.metadata.labels.get_or_insert_with(BTreeMap::new);
                let labels_ok = target.labels.iter().all(|(k, v)| labels.get(k) == Some(v));
                let spec = ClusterTrustBundleSpec {
                    signer_name: Some(self.signer_name.clone()),
                    trust_bundle: bundle,
                };
                let sequence = next_sequence(
                    annotations.get(SEQUENCE_ANNOTATION).map(String::as_str),
                    ctb.spec.trust_bundle != spec.trust_bundle,
                    now,
                );
                if ctb.spec == spec
                    && labels_ok
                    && annotations.get(RETAINED_ANNOTATION) == Some(&annotation)
                    && annotations.get(SEQUENCE_ANNOTATION) == Some(&sequence)
                {
                    return Ok(Synced::Unchanged);
                }
                labels.extend(target.labels.clone());
                annotations.insert(RETAINED_ANNOTATION.to_string(), annotation);
                annotations.insert(SEQUENCE_ANNOTATION.to_string(), sequence);
                ctb.spec = spec;
                ctb.metadata.managed_fields = None;
                self.api
                    .replace(&target.name, &PostParams::default(), &ctb)
                    .await?;
                Ok(Synced::Updated)
            }
        }
    }
}

#[cfg(test)]
#[path = "trust_bundle_tests.rs"]
mod tests;
