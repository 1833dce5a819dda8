//! The reconciler against a scripted API (`tower_test`): each test states which requests
//! the reconciler must make and what the API answers.

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};
use signer_core::PolicyConfig;
use tower_test::mock::{self, Handle};

use super::*;
use crate::requests::pcr::PcrVersion;

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn signer() -> Signer {
    podcert_tests::fixtures::signer_with(&PolicyConfig::default())
}

fn context(signer: Signer) -> (Arc<Context>, ApiHandle) {
    context_for(PcrVersion::V1beta1, signer)
}

fn context_for(version: PcrVersion, signer: Signer) -> (Arc<Context>, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
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
        pcr_version: version,
        signer_name: "example.com/spiffe".into(),
        signer: watch::channel(Arc::new(signer)).1,
        metrics: RequestMetrics::default(),
        failures: Default::default(),
        cache: kube::runtime::reflector::store::Writer::<Pcr>::new(version).as_reader(),
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

fn respond(handle_send: tower_test::mock::SendResponse<Response<Body>>, code: u16, body: Value) {
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
    assert_eq!(action, Next::AwaitChange);
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
    assert_eq!(task.await.unwrap().unwrap(), Next::AwaitChange);
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
        Next::RetryAfter(Duration::from_secs(2))
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
        Next::RetryAfter(Duration::from_millis(500))
    );
    assert_eq!(
        error_policy(p.clone(), &err, ctx.clone()),
        Next::RetryAfter(Duration::from_secs(1))
    );
    assert_eq!(
        error_policy(p, &err, ctx),
        Next::RetryAfter(Duration::from_secs(2))
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
    let (ctx, mut handle) = context_for(PcrVersion::V1, signer());
    let task = tokio::spawn(reconcile(pcr(json!({}), None), ctx.clone()));
    let note = expect_event(&mut handle, "KeyMaterialNotServed").await;
    assert!(note.contains("v1beta1"), "{note}");
    assert_eq!(task.await.unwrap().unwrap(), Next::AwaitChange);
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

#[tokio::test]
async fn a_panic_is_counted_and_retried_with_the_requests_backoff() {
    let (ctx, _api) = context(signer());
    let p = pcr(json!({}), None);
    assert_eq!(
        ctx.panicked(&p, "boom"),
        Next::RetryAfter(Duration::from_millis(500))
    );
    assert_eq!(
        ctx.panicked(&p, "boom"),
        Next::RetryAfter(Duration::from_secs(1))
    );
    assert_eq!(ctx.metrics.error_count(Errors::PANIC), 2);
}
