//! The reconciler: one PodCertificateRequest in, at most one status write out.
//!
//! A request that is already terminal is left alone. Otherwise signer-core decides, and the
//! status is written once with `replace_status` carrying the cached `resourceVersion`, so a
//! racing replica gets 409 Conflict instead of issuing twice. 404 (the request was garbage
//! collected) ends quietly; 409 looks again two seconds later, when the cache has caught up. Transient
//! failures — signing failed, an API error — are [`Error`]s: [`error_policy`] retries them
//! with the controller's one backoff ([`crate::runtime::retry`]) and they are never written as
//! `Failed`. The per-request backoff state is dropped on every terminal path: issued,
//! denied, deleted, or decided by another replica. Denials are outcomes: a `Denied`
//! condition, a Warning Event, a metric.

use std::sync::Arc;
use std::time::Duration;

use kube::api::PostParams;
use kube::core::ApiResource;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, Resource, ResourceExt};
use signer_core::{Decision, IdentityPolicy, IssueError, KeyType, Placement, Signer, Subject};
use tokio::sync::watch;
use tracing::{debug, info, instrument, warn};

use crate::requests::lookups::{Lookups, Wait};
use crate::requests::metrics::RequestMetrics;
use crate::requests::pcr::{Pcr, Unreadable, is_terminal, status_for, to_request};
use crate::runtime::metrics::Errors;
use crate::runtime::retry::Failures;

/// A request as the per-request backoff knows it: namespace, name and UID (a request
/// deleted and filed again under the same name is another request).
pub type RequestKey = (String, String, String);

/// Everything a reconcile needs, built once per term and shared.
pub struct Context {
    pub client: Client,
    pub pcr_resource: ApiResource,
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

    /// Whether `key` is still a request waiting for an answer: the cache holds only those
    /// ([`crate::requests::cache`]).
    fn is_waiting(&self, (namespace, name, uid): &RequestKey) -> bool {
        let at = ObjectRef::new_with(name, self.pcr_resource.clone()).within(namespace);
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
            Error::Issue(_) => Errors::ISSUE,
            Error::Lookup(_) => Errors::LOOKUP,
            Error::WriteStatus(_) => Errors::WRITE_STATUS,
            Error::SignForbidden { .. } => Errors::SIGN_FORBIDDEN,
        }
    }
}

#[instrument(skip_all, fields(namespace = pcr.namespace().unwrap_or_default(), pcr = pcr.name_any(), pod = pcr.spec.pod_name))]
pub async fn reconcile(pcr: Arc<Pcr>, ctx: Arc<Context>) -> Result<Action, Error> {
    if is_terminal(&pcr) || pcr.spec.signer_name != ctx.signer_name {
        // Decided (perhaps by another replica), or not ours: nothing to retry.
        ctx.failures.forget(&Context::key(&pcr));
        return Ok(Action::await_change());
    }
    let signer = ctx.signer.borrow().clone();
    let now = ctx.clock.now();
    // The requested key's type labels the decision's metric, denials included: an issued
    // certificate knows it; only a denial reads it again from the request.
    let (decision, key_type) = match to_request(&pcr, &ctx.pcr_resource.version) {
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
            return Ok(Action::await_change());
        }
    };
    let status = status_for(&decision, &pcr, now);

    let api: Api<Pcr> = Api::namespaced_with(
        ctx.client.clone(),
        &pcr.namespace().unwrap_or_default(),
        &ctx.pcr_resource,
    );
    let mut updated = (*pcr).clone();
    updated.status = Some(status);
    match api
        .replace_status(&pcr.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {
            debug!("the request was deleted before its status was written");
            ctx.failures.forget(&Context::key(&pcr));
            return Ok(Action::await_change());
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Someone else changed it: usually another replica's status, which the watch
            // brings and the next reconcile sees as terminal. Look again shortly in case the
            // change was something else.
            debug!("the request changed under us; looking again");
            return Ok(Action::requeue(Duration::from_secs(2)));
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
    Ok(Action::await_change())
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
    let regarding = pcr.object_ref(&ctx.pcr_resource);
    if let Err(e) =
        crate::runtime::events::publish(&ctx.recorder, &regarding, type_, "Sign", reason, note)
            .await
    {
        debug!(error = %e, reason, "could not publish an Event");
    }
}

pub fn error_policy(pcr: Arc<Pcr>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.error(error.metric_label());
    let delay = ctx
        .failures
        .failed(&Context::key(&pcr), |key| ctx.is_waiting(key));
    warn!(namespace = pcr.namespace().unwrap_or_default(), pcr = pcr.name_any(), %error, retry_in = ?delay, "will retry");
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    //! The reconciler against a scripted API (`tower_test`): each test states which requests
    //! the reconciler must make and what the API answers.

    use std::time::Duration;

    use http::{Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};
    use signer_core::PolicyConfig;
    use tower_test::mock::{self, Handle};

    use super::*;
    use crate::cluster::PCR_VERSIONS;

    type ApiHandle = Handle<Request<Body>, Response<Body>>;

    fn signer() -> Signer {
        podcert_tests::fixtures::signer_with(&PolicyConfig::default())
    }

    fn context(signer: Signer) -> (Arc<Context>, ApiHandle) {
        context_for(PCR_VERSIONS[0], signer)
    }

    fn context_for(version: &str, signer: Signer) -> (Arc<Context>, ApiHandle) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let resource = crate::requests::pcr::tests_support::resource(version);
        let ctx = Context {
            recorder: Recorder::new(
                client.clone(),
                kube::runtime::events::Reporter {
                    controller: "test".into(),
                    instance: None,
                },
            ),
            lookups: crate::requests::lookups::Lookups::new(
                client.clone(),
                "cluster.local".into(),
                tokio_util::sync::CancellationToken::new(),
            ),
            identity: None,
            client,
            pcr_resource: resource.clone(),
            signer_name: "example.com/spiffe".into(),
            signer: watch::channel(Arc::new(signer)).1,
            metrics: RequestMetrics::default(),
            failures: Default::default(),
            cache: kube::runtime::reflector::store::Writer::<Pcr>::new(resource).as_reader(),
            clock: crate::runtime::clock::Clock::system(),
            parked: Default::default(),
            nudge: futures::channel::mpsc::unbounded().0,
        };
        (Arc::new(ctx), handle)
    }

    /// An empty-template P-256 CSR, as the 1.36 kubelet sends.
    fn stub_csr() -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let der = params.serialize_request(&key).unwrap().der().to_vec();
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der)
    }

    fn pcr(spec_extra: Value, status: Option<Value>) -> Arc<Pcr> {
        let mut spec = json!({
            "signerName": "example.com/spiffe", "podName": "web-0", "podUID": "uid-1",
            "serviceAccountName": "web", "serviceAccountUID": "sa-uid", "nodeName": "n1", "nodeUID": "n1-uid",
            "maxExpirationSeconds": 86400,
        });
        spec.as_object_mut()
            .unwrap()
            .extend(spec_extra.as_object().unwrap().clone());
        let mut obj = json!({
            "apiVersion": "certificates.k8s.io/v1beta1", "kind": "PodCertificateRequest",
            "metadata": {"name": "req-abc", "namespace": "shop", "resourceVersion": "42", "uid": "pcr-uid", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec,
        });
        if let Some(s) = status {
            obj["status"] = s;
        }
        Arc::new(serde_json::from_value(obj).unwrap())
    }

    fn respond(
        handle_send: tower_test::mock::SendResponse<Response<Body>>,
        code: u16,
        body: Value,
    ) {
        handle_send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(body.to_string().into_bytes()))
                .unwrap(),
        );
    }

    fn api_status(code: u16, reason: &str) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reason, "reason": reason, "code": code})
    }

    async fn json_body(req: Request<Body>) -> Value {
        let bytes = http_body_util::BodyExt::collect(req.into_body())
            .await
            .unwrap()
            .to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Expects the status write; answers `code`; returns the status that was written.
    async fn expect_status_write(handle: &mut ApiHandle, code: u16) -> Value {
        let (req, send) = handle.next_request().await.expect("a status write");
        assert_eq!(req.method(), "PUT");
        assert_eq!(
            req.uri().path(),
            "/apis/certificates.k8s.io/v1beta1/namespaces/shop/podcertificaterequests/req-abc/status"
        );
        let body = json_body(req).await;
        assert_eq!(
            body["metadata"]["resourceVersion"], "42",
            "the cached resourceVersion is carried"
        );
        let answer = if code == 200 {
            body.clone()
        } else {
            api_status(code, "x")
        };
        respond(send, code, answer);
        body["status"].clone()
    }

    #[tokio::test]
    async fn a_valid_request_is_issued_with_one_status_write() {
        let (ctx, mut handle) = context(signer());
        let task = tokio::spawn(reconcile(
            pcr(json!({"stubPKCS10Request": stub_csr()}), None),
            ctx,
        ));
        let status = expect_status_write(&mut handle, 200).await;
        assert_eq!(status["conditions"][0]["type"], "Issued");
        assert!(
            status["certificateChain"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(task.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_bad_request_is_denied_and_an_event_published() {
        let (ctx, mut handle) = context(signer());
        let task = tokio::spawn(reconcile(
            pcr(json!({"stubPKCS10Request": "AAAA"}), None),
            ctx,
        ));
        let status = expect_status_write(&mut handle, 200).await;
        assert_eq!(status["conditions"][0]["type"], "Denied");
        assert_eq!(
            status["conditions"][0]["reason"],
            "InvalidStubPKCS10Request"
        );
        assert!(status.get("certificateChain").is_none());
        let (req, send) = handle.next_request().await.expect("the denial Event");
        assert_eq!(req.method(), "POST");
        assert!(
            req.uri().path().ends_with("/namespaces/shop/events"),
            "{}",
            req.uri()
        );
        respond(
            send,
            201,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "shop"}, "eventTime": null}),
        );
        assert!(task.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn an_already_terminal_request_is_left_alone() {
        let (ctx, mut handle) = context(signer());
        let denied = json!({"conditions": [{"type": "Denied", "status": "True", "reason": "X", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        let action = reconcile(
            pcr(json!({"stubPKCS10Request": stub_csr()}), Some(denied)),
            ctx,
        )
        .await
        .unwrap();
        assert_eq!(action, Action::await_change());
        // The context (and every client) is gone: the API saw no request at all.
        assert!(handle.next_request().await.is_none());
    }

    #[tokio::test]
    async fn a_request_deleted_before_the_write_ends_quietly() {
        let (ctx, mut handle) = context(signer());
        let task = tokio::spawn(reconcile(
            pcr(json!({"stubPKCS10Request": stub_csr()}), None),
            ctx,
        ));
        expect_status_write(&mut handle, 404).await;
        assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    }

    #[tokio::test]
    async fn a_conflict_looks_again_shortly_without_an_error() {
        let (ctx, mut handle) = context(signer());
        let task = tokio::spawn(reconcile(
            pcr(json!({"stubPKCS10Request": stub_csr()}), None),
            ctx,
        ));
        expect_status_write(&mut handle, 409).await;
        assert_eq!(
            task.await.unwrap().unwrap(),
            Action::requeue(Duration::from_secs(2))
        );
    }

    #[tokio::test]
    async fn a_server_error_is_retried_never_written_as_failed() {
        let (ctx, mut handle) = context(signer());
        let task = tokio::spawn(reconcile(
            pcr(json!({"stubPKCS10Request": stub_csr()}), None),
            ctx.clone(),
        ));
        expect_status_write(&mut handle, 500).await;
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::WriteStatus(_)), "{err}");
        // Retries back off per request: 0.5 s, 1 s, 2 s, ...
        let p = pcr(json!({}), None);
        assert_eq!(
            error_policy(p.clone(), &err, ctx.clone()),
            Action::requeue(Duration::from_millis(500))
        );
        assert_eq!(
            error_policy(p.clone(), &err, ctx.clone()),
            Action::requeue(Duration::from_secs(1))
        );
        assert_eq!(
            error_policy(p, &err, ctx),
            Action::requeue(Duration::from_secs(2))
        );
    }

    #[tokio::test]
    async fn backoff_state_is_dropped_when_another_replica_decides_or_the_request_goes() {
        let (ctx, mut handle) = context(signer());
        let csr = json!({"stubPKCS10Request": stub_csr()});
        let task = tokio::spawn(reconcile(pcr(csr.clone(), None), ctx.clone()));
        expect_status_write(&mut handle, 500).await;
        let err = task.await.unwrap().unwrap_err();
        error_policy(pcr(csr.clone(), None), &err, ctx.clone());
        assert_eq!(ctx.failures.len(), 1);
        // Another replica issued it meanwhile: the next reconcile sees it terminal.
        let issued = json!({"certificateChain": "-----BEGIN CERTIFICATE-----", "conditions": [{"type": "Issued", "status": "True", "reason": "Issued", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
        reconcile(pcr(csr.clone(), Some(issued)), ctx.clone())
            .await
            .unwrap();
        assert!(ctx.failures.is_empty());
        // Deleted while failing: the 404 on the write forgets it too.
        error_policy(pcr(csr.clone(), None), &err, ctx.clone());
        let task = tokio::spawn(reconcile(pcr(csr, None), ctx.clone()));
        expect_status_write(&mut handle, 404).await;
        task.await.unwrap().unwrap();
        assert!(ctx.failures.is_empty());
    }

    /// Expects a Warning Event with `reason`; returns its note.
    async fn expect_event(handle: &mut ApiHandle, reason: &str) -> String {
        let (req, send) = handle.next_request().await.expect("an Event");
        assert_eq!(req.method(), "POST");
        let body = json_body(req).await;
        assert_eq!(
            (body["type"].as_str(), body["reason"].as_str()),
            (Some("Warning"), Some(reason)),
            "{body}"
        );
        respond(
            send,
            201,
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e", "namespace": "shop"}, "eventTime": null}),
        );
        body["note"].as_str().unwrap_or_default().to_string()
    }

    /// A 1.35 kubelet's request read through v1 has no key material (conversion drops it):
    /// not the requester's fault, so no status is written; a Warning Event says what to serve.
    #[tokio::test]
    async fn a_request_without_key_material_through_v1_stays_pending_and_is_reported() {
        let (ctx, mut handle) = context_for("v1", signer());
        let task = tokio::spawn(reconcile(pcr(json!({}), None), ctx.clone()));
        let note = expect_event(&mut handle, "KeyMaterialNotServed").await;
        assert!(note.contains("v1beta1"), "{note}");
        assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
        let counted = ctx.metrics.unreadable_count("KeyMaterialNotServed");
        assert_eq!(counted, 1);
    }

    /// kube-apiserver answers a status write without the sign grant with 422 and a Forbidden
    /// cause on spec.signerName: reported by name, as an Event and a metric label.
    #[tokio::test]
    async fn a_status_write_refused_for_want_of_sign_is_reported_specifically() {
        let (ctx, mut handle) = context(signer());
        let task = tokio::spawn(reconcile(
            pcr(json!({"stubPKCS10Request": stub_csr()}), None),
            ctx.clone(),
        ));
        let (_, send) = handle.next_request().await.expect("the status write");
        respond(
            send,
            422,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422,
                   "message": "PodCertificateRequest.certificates.k8s.io \"req-abc\" is invalid: spec.signerName: Forbidden: User \"x\" is not permitted to \"sign\" for signer \"example.com/spiffe\"",
                   "details": {"causes": [{"reason": "FieldValueForbidden", "field": "spec.signerName", "message": "Forbidden: not permitted to sign"}]}}),
        );
        let note = expect_event(&mut handle, "SignForbidden").await;
        assert!(
            note.contains("\"sign\"") && note.contains("example.com/spiffe"),
            "{note}"
        );
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.metric_label(), "sign_forbidden");
    }
}
