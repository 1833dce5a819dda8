//! The reconciler: one PodCertificateRequest in, at most one status write out.
//!
//! A request that is already terminal is left alone. Otherwise signer-core decides, and the
//! status is written once with `replace_status` carrying the cached `resourceVersion`, so a
//! racing replica gets 409 Conflict instead of issuing twice. 404 (the request was garbage
//! collected) ends quietly; 409 looks again two seconds later, when the cache has caught up. Transient
//! failures — signing failed, an API error — are [`Error`]s: [`error_policy`] retries them
//! with the signer's one backoff ([`crate::runtime::retry`]) and they are never written as
//! `Failed`. The per-request backoff state is dropped on every terminal path: issued,
//! denied, deleted, or decided by another replica. Denials are outcomes: a `Denied`
//! condition, a Warning Event, a metric.

use std::sync::Arc;
use std::time::Duration;

use kube::api::PostParams;
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use signer_core::{Decision, IdentityPolicy, IssueError, KeyType, Placement, Signer, Subject};
use tokio::sync::watch;
use tracing::{debug, info, instrument, warn};

use crate::requests::lookups::{Lookups, Wait};
use crate::requests::metrics::RequestMetrics;
use crate::requests::pcr::{Pcr, PcrVersion, Unreadable, is_terminal, status_for, to_request};
use crate::requests::runner::{Next, Reconciler};
use crate::runtime::metrics::Errors;
use crate::runtime::retry::Failures;

/// A request as the per-request backoff knows it: namespace, name and UID (a request
/// deleted and filed again under the same name is another request).
pub type RequestKey = (String, String, String);

/// Everything a reconcile needs, built once per term and shared.
pub struct Context {
    pub client: Client,
    pub pcr_version: PcrVersion,
    pub signer_name: String,
    /// The signer in use; the term's `ca` task swaps it for each new signing intermediate,
    /// and once new roots are published.
    pub signer: watch::Receiver<Arc<Signer>>,
    pub metrics: RequestMetrics,
    pub recorder: Recorder,
    /// Backoff state of requests whose last reconcile failed transiently.
    pub failures: Failures<RequestKey>,
    /// The controller's cache of waiting requests, to tell which failing ones still wait.
    pub cache: Store<Pcr>,
    /// The time certificates are issued at.
    pub clock: crate::runtime::clock::Clock,
    /// The identity policy in use (`--identity-policy`), if any.
    pub identity: Option<watch::Receiver<Arc<IdentityPolicy>>>,
    /// What the policy reads live: namespace labels, the pod, the Services selecting it.
    pub lookups: Lookups,
    /// Requests left waiting on purpose (their key material is not served): nothing but a
    /// change to them can help, so [`crate::requests::backlog`] does not reconcile them again.
    pub parked: std::sync::Mutex<std::collections::HashSet<RequestKey>>,
    /// Reconciles a waiting request again ([`crate::requests::backlog`]'s safety net).
    pub nudge: futures::channel::mpsc::UnboundedSender<ObjectRef<Pcr>>,
}

impl Context {
    pub fn key(pcr: &Pcr) -> RequestKey {
        (
            pcr.namespace().unwrap_or_default(),
            pcr.name_any(),
            pcr.uid().unwrap_or_default(),
        )
    }

    /// `pcr` failed, of `kind` (an [`Errors`] label): counted, and its next backoff.
    fn failed(&self, pcr: &Pcr, kind: &'static str) -> Duration {
        self.metrics.error(kind);
        self.failures
            .failed(&Context::key(pcr), |key| self.is_waiting(key))
    }

    /// Whether `key` is still a request waiting for an answer: the cache holds only those
    /// ([`crate::requests::cache`]).
    fn is_waiting(&self, (namespace, name, uid): &RequestKey) -> bool {
        let at = ObjectRef::new_with(name, self.pcr_version).within(namespace);
        self.cache
            .get(&at)
            .is_some_and(|p| p.uid().as_deref() == Some(uid.as_str()))
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("signer_name", &self.signer_name)
            .finish_non_exhaustive()
    }
}

/// A transient failure; the request is retried and never marked `Failed`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot issue now: {0}")]
    Issue(#[from] IssueError),
    /// What the identity policy needs cannot be read yet.
    #[error("cannot decide yet: {0}")]
    Lookup(#[from] Wait),
    #[error("writing the status failed: {0}")]
    WriteStatus(#[source] kube::Error),
    /// The API server refused the status write because this signer's identity lacks the
    /// `sign` verb for the signer name: a configuration error, retried in case it is fixed.
    #[error(
        "the API server refused the status write: {message}. Grant the signer's identity the verb \"sign\" on certificates.k8s.io resource \"signers\" with resourceName {signer_name:?} (or \"<domain>/*\") in a ClusterRole (manifests/clusterrole.yaml does)"
    )]
    SignForbidden {
        signer_name: String,
        message: String,
    },
}

impl Error {
    /// The `error` label of `podcert_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Issue(IssueError::SelfCheck(_)) => Errors::SELF_CHECK,
            Error::Issue(_) => Errors::ISSUE,
            Error::Lookup(_) => Errors::LOOKUP,
            Error::WriteStatus(_) => Errors::WRITE_STATUS,
            Error::SignForbidden { .. } => Errors::SIGN_FORBIDDEN,
        }
    }
}

#[instrument(skip_all, fields(namespace = pcr.namespace().unwrap_or_default(), pcr = pcr.name_any(), pod = pcr.spec.pod_name))]
pub async fn reconcile(pcr: Arc<Pcr>, ctx: Arc<Context>) -> Result<Next, Error> {
    if is_terminal(&pcr) || pcr.spec.signer_name != ctx.signer_name {
        // Decided (perhaps by another replica), or not ours: nothing to retry.
        ctx.failures.forget(&Context::key(&pcr));
        return Ok(Next::AwaitChange);
    }
    let signer = ctx.signer.borrow().clone();
    let now = ctx.clock.now();
    // The requested key's type labels the decision's metric, denials included: an issued
    // certificate knows it; only a denial reads it again from the request.
    let (decision, key_type) = match to_request(&pcr, ctx.pcr_version) {
        Ok(request) => {
            let decision = match &ctx.identity {
                None => signer.decide(&request, now)?,
                Some(identity) => {
                    let identity = identity.borrow().clone();
                    decide_under_policy(&ctx, &identity, &signer, &pcr, &request, now).await?
                }
            };
            let key_type = match &decision {
                Decision::Issue(i) => Some(i.key_type),
                Decision::Deny(_) => request.key_material.claimed_key_type(),
            };
            (decision, key_type)
        }
        Err(Unreadable::Deny(denial)) => (Decision::Deny(denial), None),
        Err(Unreadable::KeyMaterialNotServed) => {
            not_served(&pcr, &ctx).await;
            return Ok(Next::AwaitChange);
        }
    };
    let status = status_for(&decision, &pcr, now);

    match write_status(&ctx, &pcr, status).await {
        Ok(()) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {
            debug!("the request was deleted before its status was written");
            ctx.failures.forget(&Context::key(&pcr));
            return Ok(Next::AwaitChange);
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Someone else changed it: usually another replica's status, which the watch
            // brings and the next reconcile sees as terminal. Look again shortly in case the
            // change was something else.
            debug!("the request changed under us; looking again");
            return Ok(Next::RetryAfter(Duration::from_secs(2)));
        }
        Err(kube::Error::Api(s)) if is_sign_forbidden(&s) => {
            let error = Error::SignForbidden {
                signer_name: ctx.signer_name.clone(),
                message: s.message.clone(),
            };
            tracing::error!(%error, "status write refused: missing the sign grant");
            publish(
                &ctx,
                &pcr,
                EventType::Warning,
                "SignForbidden",
                error.to_string(),
            )
            .await;
            return Err(error);
        }
        Err(e) => return Err(Error::WriteStatus(e)),
    }

    ctx.failures.forget(&Context::key(&pcr));
    let age = pcr
        .creation_timestamp()
        .map(|t| (k8s_openapi::jiff::Timestamp::now() - t.0).get_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0);
    let (outcome, reason) = match &decision {
        Decision::Issue(_) => ("issued", "Issued"),
        Decision::Deny(d) => ("denied", d.reason.as_str()),
    };
    ctx.metrics.decided(
        outcome,
        key_type.map_or("unknown", KeyType::as_str),
        reason,
        age,
    );
    match &decision {
        Decision::Issue(i) => {
            info!(key_type = %i.key_type, spiffe_id = %i.spiffe_id, serial = %i.serial_hex, outcome = "issued", "issued");
        }
        Decision::Deny(d) => {
            info!(reason = %d.reason, message = %d.message, outcome = "denied", "denied");
            publish(
                &ctx,
                &pcr,
                EventType::Warning,
                d.reason.as_str(),
                d.message.clone(),
            )
            .await;
        }
    }
    Ok(Next::AwaitChange)
}

/// The decision under the identity policy: the rule that applies (or its denial), the names
/// it asks for, looked up live, then signer-core.
async fn decide_under_policy(
    ctx: &Context,
    identity: &IdentityPolicy,
    signer: &Signer,
    pcr: &Pcr,
    request: &signer_core::Request,
    now: std::time::SystemTime,
) -> Result<Decision, Error> {
    let labels = if identity.reads_namespace_labels() {
        ctx.lookups.namespace_labels(&request.namespace).await?
    } else {
        Default::default()
    };
    let subject = Subject {
        namespace: &request.namespace,
        namespace_labels: &labels,
        service_account: &request.service_account_name,
    };
    let grant = match identity.decide(&subject) {
        Ok(grant) => grant,
        Err(denial) => return Ok(Decision::Deny(denial)),
    };
    let placement = if grant.dns_names.any() {
        match ctx.lookups.placement(pcr, grant).await? {
            Ok(placement) => placement,
            Err(denial) => return Ok(Decision::Deny(denial)),
        }
    } else {
        Placement::default()
    };
    Ok(signer.decide_under(Some(grant), request, &placement, now)?)
}

/// A status write refused with `Forbidden` on `spec.signerName`: kube-apiserver's answer
/// (422 Invalid, not 403) when the writer lacks `sign` for the signer.
fn is_sign_forbidden(s: &kube::core::Status) -> bool {
    s.code == 422
        && s.details.as_ref().is_some_and(|d| {
            d.causes
                .iter()
                .any(|c| c.field == "spec.signerName" && c.reason == "FieldValueForbidden")
        })
}

/// A request read through `v1` with no key material: left pending, and said so.
async fn not_served(pcr: &Pcr, ctx: &Context) {
    ctx.parked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(Context::key(pcr));
    warn!(
        "the request has no key material as served through certificates.k8s.io/v1 (a 1.35 kubelet's pkixPublicKey and proofOfPossession do not exist in v1); left pending. Serve certificates.k8s.io/v1beta1 podcertificaterequests so the signer can read it"
    );
    ctx.metrics.unreadable("KeyMaterialNotServed");
    publish(
        ctx,
        pcr,
        EventType::Warning,
        "KeyMaterialNotServed",
        "this request's pkixPublicKey and proofOfPossession are not served through certificates.k8s.io/v1; the signer leaves it pending. Enable certificates.k8s.io/v1beta1 podcertificaterequests on kube-apiserver".into(),
    )
    .await;
}

pub(crate) async fn publish(
    ctx: &Context,
    pcr: &Pcr,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let regarding = pcr.object_ref(&ctx.pcr_version);
    if let Err(e) =
        crate::runtime::events::publish(&ctx.recorder, &regarding, type_, "Sign", reason, note)
            .await
    {
        debug!(error = %e, reason, "could not publish an Event");
    }
}

impl Reconciler for Arc<Context> {
    /// One reconcile; a transient failure becomes its retry ([`error_policy`]).
    fn reconcile(&self, pcr: Arc<Pcr>) -> impl Future<Output = Next> + Send + 'static {
        let ctx = self.clone();
        async move {
            match reconcile(pcr.clone(), ctx.clone()).await {
                Ok(next) => next,
                Err(error) => error_policy(pcr, &error, ctx),
            }
        }
    }

    /// A bug met on this request: logged and counted, retried with the request's backoff
    /// like a transient failure, while every other request goes on.
    fn panicked(&self, pcr: &Pcr, message: &str) -> Next {
        let delay = self.failed(pcr, Errors::PANIC);
        tracing::error!(namespace = pcr.namespace().unwrap_or_default(), pcr = pcr.name_any(), panic = message, retry_in = ?delay, "reconciling this request panicked (a bug: please report it); will retry");
        Next::RetryAfter(delay)
    }
}

/// A transient failure's retry: counted, logged, and after the request's next backoff.
pub fn error_policy(pcr: Arc<Pcr>, error: &Error, ctx: Arc<Context>) -> Next {
    let delay = ctx.failed(&pcr, error.metric_label());
    warn!(namespace = pcr.namespace().unwrap_or_default(), pcr = pcr.name_any(), %error, retry_in = ?delay, "will retry");
    Next::RetryAfter(delay)
}

/// Writes `status` on `pcr` with one PUT of the status subresource, conditioned on the cached
/// resourceVersion. Only what a status write reads is sent: the object's identity, its
/// resourceVersion and the status — for a status write the API server keeps the stored spec
/// and metadata whatever it is sent (kube-apiserver's PodCertificateRequest StatusStrategy:
/// `newReq.Spec = oldReq.Spec` and `ResetObjectMetaForStatus`, 1.35 to 1.37). The echoed object is not parsed:
/// nothing reads it, and the watch brings the change. Errors are kube's, the API's Status
/// among them.
async fn write_status(
    ctx: &Context,
    pcr: &Pcr,
    status: k8s_openapi::api::certificates::v1beta1::PodCertificateRequestStatus,
) -> Result<(), kube::Error> {
    let meta = &pcr.metadata;
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": ctx.pcr_version.api_version(),
        "kind": Pcr::kind(&ctx.pcr_version),
        "metadata": {
            "name": meta.name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
        },
        "status": status,
    }))
    .map_err(kube::Error::SerdeError)?;
    let url = Pcr::url_path(&ctx.pcr_version, pcr.namespace().as_deref());
    let request = kube::core::Request::new(url)
        .replace_subresource("status", &pcr.name_any(), &PostParams::default(), body)
        .map_err(kube::Error::BuildRequest)?;
    ctx.client.request_text(request).await.map(drop)
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
