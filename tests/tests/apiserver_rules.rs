//! The test API server's own tests: for each rule of contract §4 (PCR status) and §6
//! (ClusterTrustBundle), a write the real API server rejects is rejected here with the same
//! HTTP code and field path, and a correct write is accepted. A test server that accepted
//! what kube-apiserver refuses would let signer bugs through.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use podcert_tests::against_both;
use podcert_tests::kubelet::{Format, Kubelet, PodRequest};
use podcert_tests::rule_server::{ADMIN, RuleServer};
use serde_json::{Value, json};
use signer_core::time::unix_seconds;
use signer_core::*;

type Fixture = RuleServer;

async fn send(client: &kube::Client, method: &str, path: &str, body: &Value) -> (u16, Value) {
    podcert_tests::send_json(client, method, path, body).await
}

fn signer(max_lifetime: Duration) -> Signer {
    podcert_tests::fixtures::signer_with(&PolicyConfig {
        default_lifetime: max_lifetime,
        ..Default::default()
    })
}

fn time(t: SystemTime) -> Value {
    k8s_openapi::jiff::Timestamp::from_second(unix_seconds(t))
        .unwrap()
        .to_string()
        .into()
}

/// Creates a PCR (maxExpirationSeconds `max`) and returns (path of its status, the PCR
/// object, a valid Issued status for it made by `signer` as of `now`).
async fn pcr_with_status(
    f: &Fixture,
    max: i64,
    signer: &Signer,
    now: SystemTime,
) -> (String, Value, Value) {
    pcr_of_key(f, "ECDSAP256", max, signer, now).await
}

async fn pcr_of_key(
    f: &Fixture,
    key_type: &str,
    max: i64,
    signer: &Signer,
    now: SystemTime,
) -> (String, Value, Value) {
    let kubelet = Kubelet::new(f.client().clone(), "v1beta1", "example.com/spiffe");
    let mut pod = PodRequest::new("ns", "pod", "sa", key_type, Format::Csr);
    pod.max_expiration_seconds = max;
    let (body, _) = kubelet.bodies(&[pod]).remove(0);
    let (code, created) = send(
        f.client(),
        "POST",
        "/apis/certificates.k8s.io/v1beta1/namespaces/ns/podcertificaterequests",
        &body,
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let name = created["metadata"]["name"].as_str().unwrap().to_string();
    use base64::Engine;
    let csr = base64::engine::general_purpose::STANDARD
        .decode(created["spec"]["stubPKCS10Request"].as_str().unwrap())
        .unwrap();
    let request = Request {
        namespace: "ns".into(),
        pod_uid: created["spec"]["podUID"].as_str().unwrap().into(),
        service_account_name: "sa".into(),
        max_expiration_seconds: 86_400,
        unverified_user_annotations: BTreeMap::new(),
        key_material: KeyMaterial::StubCsr { der: csr },
    };
    let Decision::Issue(i) = signer.decide(&request, now).unwrap() else {
        panic!("denied")
    };
    let status = json!({
        "certificateChain": i.chain_pem, "notBefore": time(i.not_before), "notAfter": time(i.not_after),
        "beginRefreshAt": time(i.begin_refresh_at),
        "conditions": [{"type": "Issued", "status": "True", "reason": "Issued", "message": "ok", "lastTransitionTime": time(now)}],
    });
    (
        format!(
            "/apis/certificates.k8s.io/v1beta1/namespaces/ns/podcertificaterequests/{name}/status"
        ),
        created,
        status,
    )
}

/// Writes `status` onto `pcr` and returns (code, field paths of the causes).
async fn write_status(f: &Fixture, path: &str, pcr: &Value, status: Value) -> (u16, Vec<String>) {
    let mut obj = pcr.clone();
    obj["status"] = status;
    let (code, body) = send(f.client(), "PUT", path, &obj).await;
    let fields = body["details"]["causes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["field"].as_str().unwrap_or("").to_string())
        .collect();
    (code, fields)
}

against_both!(every_pcr_status_rule_is_enforced_with_the_real_code_and_field);
async fn every_pcr_status_rule_is_enforced_with_the_real_code_and_field(f: &Fixture) {
    let signer = signer(Duration::from_secs(86_400));
    let now = SystemTime::now();

    type Edit = fn(&mut Value);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "an unknown condition type",
            |s| s["conditions"][0]["type"] = "Progressing".into(),
            "status.conditions.[0].type",
        ),
        (
            "two terminal conditions",
            |s| {
                let c = s["conditions"][0].clone();
                let mut d = c.clone();
                d["type"] = "Denied".into();
                s["conditions"] = json!([c, d]);
            },
            "status.conditions.[1].type",
        ),
        (
            "status False",
            |s| s["conditions"][0]["status"] = "False".into(),
            "status.conditions.[0].status",
        ),
        (
            "a malformed reason",
            |s| s["conditions"][0]["reason"] = "not a reason!".into(),
            "status.conditions[0].reason",
        ),
        (
            "no lastTransitionTime",
            |s| {
                s["conditions"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("lastTransitionTime");
            },
            "status.conditions[0].lastTransitionTime",
        ),
        (
            "a message over 32 KiB",
            |s| s["conditions"][0]["message"] = "x".repeat(32 * 1024 + 1).into(),
            "status.conditions[0].message",
        ),
        (
            "Denied with a chain",
            |s| s["conditions"][0]["type"] = "Denied".into(),
            "status",
        ),
        (
            "Issued without a chain",
            |s| {
                s.as_object_mut().unwrap().remove("certificateChain");
            },
            "status.certificateChain",
        ),
        (
            "a non-CERTIFICATE block",
            |s| {
                let chain = s["certificateChain"].as_str().unwrap().to_string();
                s["certificateChain"] = format!(
                    "{chain}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
                )
                .into();
            },
            "status.certificateChain",
        ),
        (
            "notBefore not the leaf's",
            |s| s["notBefore"] = "2020-01-01T00:00:00Z".into(),
            "status.notBefore",
        ),
        (
            "notAfter not the leaf's",
            |s| s["notAfter"] = "2099-01-01T00:00:00Z".into(),
            "status.notAfter",
        ),
        (
            "beginRefreshAt outside the window",
            |s| s["beginRefreshAt"] = s["notBefore"].clone(),
            "status.beginRefreshAt",
        ),
        (
            "beginRefreshAt missing",
            |s| {
                s.as_object_mut().unwrap().remove("beginRefreshAt");
            },
            "status.beginRefreshAt",
        ),
    ];
    for (what, edit, field) in cases {
        let (path, pcr, mut status) = pcr_with_status(f, 86_400, &signer, now).await;
        edit(&mut status);
        let (code, fields) = write_status(f, &path, &pcr, status).await;
        assert_eq!(code, 422, "{what}");
        assert!(
            fields.iter().any(|x| x == field),
            "{what}: causes {fields:?}, want {field}"
        );
    }

    // The leaf's key must be the requested key.
    let (path, pcr, _) = pcr_of_key(f, "ECDSAP256", 86_400, &signer, now).await;
    let (_, _, other_key_status) = pcr_of_key(f, "ED25519", 86_400, &signer, now).await;
    let (code, fields) = write_status(f, &path, &pcr, other_key_status).await;
    assert_eq!(
        (code, fields),
        (422, vec!["status.certificateChain".to_string()])
    );

    // Lifetime at most maxExpirationSeconds (a 24 h certificate for a 1 h request).
    let (path, pcr, status) = pcr_with_status(f, 3600, &signer, now).await;
    let (code, fields) = write_status(f, &path, &pcr, status).await;
    assert_eq!(
        (code, fields),
        (422, vec!["status.certificateChain".to_string()])
    );

    // notBefore within 5 minutes of the server's clock.
    let (path, pcr, status) =
        pcr_with_status(f, 86_400, &signer, now - Duration::from_secs(600)).await;
    let (code, fields) = write_status(f, &path, &pcr, status).await;
    assert_eq!((code, fields), (422, vec!["status.notBefore".to_string()]));

    // A correct status is accepted; then the status is frozen.
    let (path, pcr, status) = pcr_with_status(f, 86_400, &signer, now).await;
    let (code, fields) = write_status(f, &path, &pcr, status.clone()).await;
    assert_eq!((code, fields), (200, vec![]));
    let stored = f.get(&path.replace("/status", "")).await.unwrap();
    let mut changed = status.clone();
    changed["conditions"][0]["message"] = "again".into();
    let (code, fields) = write_status(f, &path, &stored, changed).await;
    assert_eq!((code, fields), (422, vec!["status".to_string()]));

    // A stale resourceVersion is a 409 Conflict, whatever the status.
    let (code, _) = write_status(f, &path, &pcr, status).await;
    assert_eq!(code, 409);

    // A Denied status with only its condition is accepted.
    let (path, pcr, _) = pcr_with_status(f, 86_400, &signer, now).await;
    let denied = json!({"conditions": [{"type": "Denied", "status": "True", "reason": "UnsupportedKeyType", "message": "no", "lastTransitionTime": time(now)}]});
    assert_eq!(write_status(f, &path, &pcr, denied).await, (200, vec![]));
}

against_both!(every_cluster_trust_bundle_rule_is_enforced);
async fn every_cluster_trust_bundle_rule_is_enforced(f: &Fixture) {
    let ca = |cn: &str, is_ca: bool| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        if is_ca {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        p.self_signed(&key).unwrap().pem()
    };
    let root = ca("root", true);
    let ctb = |name: &str, bundle: String| {
        json!({"apiVersion": "certificates.k8s.io/v1beta1", "kind": "ClusterTrustBundle",
        "metadata": {"name": name}, "spec": {"signerName": "example.com/spiffe", "trustBundle": bundle}})
    };
    let path = "/apis/certificates.k8s.io/v1beta1/clustertrustbundles";
    let cases = [
        (ctb("wrong-name", root.clone()), "metadata.name"),
        (ctb("example.com:spiffe:", root.clone()), "metadata.name"),
        (
            ctb("example.com:spiffe:a", String::new()),
            "spec.trustBundle",
        ),
        (
            ctb("example.com:spiffe:b", ca("leaf", false)),
            "spec.trustBundle",
        ),
        (
            ctb("example.com:spiffe:c", format!("{root}{root}")),
            "spec.trustBundle",
        ),
        (
            ctb(
                "example.com:spiffe:d",
                format!("{root}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            ),
            "spec.trustBundle",
        ),
    ];
    for (body, field) in cases {
        let (code, resp) = send(f.client(), "POST", path, &body).await;
        assert_eq!(code, 422, "{body}");
        assert!(
            resp["details"]["causes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["field"] == field),
            "{resp}"
        );
    }
    let (code, _) = send(
        f.client(),
        "POST",
        path,
        &ctb("example.com:spiffe:ok", root),
    )
    .await;
    assert_eq!(code, 201);
}

against_both!(watches_from_a_compacted_resource_version_get_410_gone);
async fn watches_from_a_compacted_resource_version_get_410_gone(f: &Fixture) {
    let secret =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {}});
    let (code, created) = send(f.client(), "POST", "/api/v1/namespaces/ns/secrets", &secret).await;
    assert_eq!(code, 201);
    let rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let second =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s2"}, "data": {}});
    assert_eq!(
        send(f.client(), "POST", "/api/v1/namespaces/ns/secrets", &second)
            .await
            .0,
        201
    );
    // Once the history is gone, the change to s2 (after `rv`) is no longer in it.
    f.forget_history().await;
    let (code, body) = send(
        f.client(),
        "GET",
        &format!("/api/v1/namespaces/ns/secrets?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        &Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        (body["type"].as_str(), body["object"]["code"].as_i64()),
        (Some("ERROR"), Some(410)),
        "{body}"
    );
}

against_both!(paged_lists_continue_from_one_snapshot_with_one_resource_version);

/// kube-apiserver pages a list from one snapshot: every page reports the snapshot's
/// resourceVersion, and a watch from it sees whatever changed after the first page. An
/// object created mid-list that sorts before the cursor must show up in one or the other.
async fn paged_lists_continue_from_one_snapshot_with_one_resource_version(f: &Fixture) {
    let base = "/api/v1/namespaces/ns/secrets";
    for i in 0..5 {
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("s{i}")}, "data": {}});
        assert_eq!(send(f.client(), "POST", base, &s).await.0, 201);
    }
    let (code, first) = send(f.client(), "GET", &format!("{base}?limit=2"), &Value::Null).await;
    assert_eq!(code, 200);
    let snapshot_rv = first["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    assert_eq!(first["metadata"]["remainingItemCount"], 3);
    // Created during the list, sorting before the cursor ("s0" < "s1"...).
    let late =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a-late"}, "data": {}});
    assert_eq!(send(f.client(), "POST", base, &late).await.0, 201);
    let mut names: Vec<String> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut token = Some(token);
    while let Some(t) = token.take() {
        let (code, page) = send(
            f.client(),
            "GET",
            &format!("{base}?limit=2&continue={t}"),
            &Value::Null,
        )
        .await;
        assert_eq!(code, 200, "{page}");
        assert_eq!(
            page["metadata"]["resourceVersion"],
            snapshot_rv.as_str(),
            "every page reports the snapshot's resourceVersion"
        );
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string()),
        );
        token = page["metadata"]["continue"].as_str().map(str::to_string);
    }
    assert_eq!(
        names,
        ["s0", "s1", "s2", "s3", "s4"],
        "the snapshot, exactly"
    );
    let (code, watched) = send(
        f.client(),
        "GET",
        &format!("{base}?watch=true&resourceVersion={snapshot_rv}&timeoutSeconds=1"),
        &Value::Null,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        (
            watched["type"].as_str(),
            watched["object"]["metadata"]["name"].as_str()
        ),
        (Some("ADDED"), Some("a-late")),
        "{watched}"
    );

    // A continue token whose snapshot has since been compacted away is too old. (Compaction
    // keeps the newest revision readable, so something is written after the token's.)
    f.forget_history().await;
    let (_, again) = send(f.client(), "GET", &format!("{base}?limit=2"), &Value::Null).await;
    let stale = again["metadata"]["continue"].as_str().unwrap().to_string();
    let later =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "z-later"}, "data": {}});
    assert_eq!(send(f.client(), "POST", base, &later).await.0, 201);
    f.forget_history().await;
    let (code, body) = send(
        f.client(),
        "GET",
        &format!("{base}?limit=2&continue={stale}"),
        &Value::Null,
    )
    .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (410, Some("Expired")),
        "{body}"
    );
}

against_both!(authorization_and_update_rules_are_kube_apiservers);

/// kube-apiserver's authorization on the paths a signer and a kubelet use: RBAC from the
/// roles stored in the server, `sign` on status writes (422 with a Forbidden cause, not 403,
/// and only when the status changes), `attest` on trust bundles (403), impersonation only for
/// those allowed to impersonate, and no unconditional status update.
async fn authorization_and_update_rules_are_kube_apiservers(f: &Fixture) {
    let signer = signer(Duration::from_secs(86_400));
    let now = SystemTime::now();
    let (path, pcr, status) = pcr_with_status(f, 86_400, &signer, now).await;
    let mut write = pcr.clone();
    write["status"] = status.clone();

    // No grant at all: 403 with kube-apiserver's message.
    let nobody = f.client_as("nobody", None).await;
    let (code, body) = send(&nobody, "PUT", &path, &write).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot update resource \"podcertificaterequests/status\""),
        "{body}"
    );

    // The status subresource but not sign: 422 Invalid with a Forbidden cause.
    let status_rule = json!([{"apiGroups": ["certificates.k8s.io"], "resources": ["podcertificaterequests/status"], "verbs": ["update"]}]);
    f.grant("writer", "writer", status_rule.clone()).await;
    let writer = f.client_as("writer", None).await;
    let (code, body) = send(&writer, "PUT", &path, &write).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "spec.signerName");
    assert_eq!(
        body["details"]["causes"][0]["reason"],
        "FieldValueForbidden"
    );
    // ...but a write that changes nothing needs no sign.
    let (code, body) = send(&writer, "PUT", &path, &pcr).await;
    assert_eq!(code, 200, "{body}");

    // sign for "<domain>/*" is enough, as IsAuthorizedForSignerName asks for it too.
    f.grant(
        "signer",
        "signer",
        json!([status_rule[0], {"apiGroups": ["certificates.k8s.io"], "resources": ["signers"], "resourceNames": ["example.com/*"], "verbs": ["sign"]}]),
    ).await;
    let allowed = f.client_as("signer", None).await;
    let stored = f.get(&path.replace("/status", "")).await.unwrap();
    let mut write = stored.clone();
    write["status"] = status;
    // Without a resourceVersion the update is refused: no unconditional updates.
    let mut unconditional = write.clone();
    unconditional["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let (code, body) = send(&allowed, "PUT", &path, &unconditional).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["details"]["causes"][0]["field"],
        "metadata.resourceVersion"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("must be specified for an update")
    );
    let (code, body) = send(&allowed, "PUT", &path, &write).await;
    assert_eq!(code, 200, "{body}");

    // ClusterTrustBundles naming a signer need attest: 403 without it.
    let ca = signer.ca().trust_bundle_pem().to_string();
    let bundle = json!({"apiVersion": "certificates.k8s.io/v1beta1", "kind": "ClusterTrustBundle",
        "metadata": {"name": "example.com:spiffe:ca"}, "spec": {"signerName": "example.com/spiffe", "trustBundle": ca}});
    let ctbs = "/apis/certificates.k8s.io/v1beta1/clustertrustbundles";
    let ctb_rule = json!({"apiGroups": ["certificates.k8s.io"], "resources": ["clustertrustbundles"], "verbs": ["create"]});
    f.grant("publisher", "publisher", json!([ctb_rule])).await;
    let publisher = f.client_as("publisher", None).await;
    let (code, body) = send(&publisher, "POST", ctbs, &bundle).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("user not permitted to attest for signerName \"example.com/spiffe\""),
        "{body}"
    );
    f.grant(
        "publisher",
        "publisher",
        json!([ctb_rule, {"apiGroups": ["certificates.k8s.io"], "resources": ["signers"], "resourceNames": ["example.com/spiffe"], "verbs": ["attest"]}]),
    ).await;
    let (code, body) = send(&publisher, "POST", ctbs, &bundle).await;
    assert_eq!(code, 201, "{body}");

    // Impersonation: only for those allowed; the impersonated user's own grants apply.
    let (code, body) = send(
        &f.client_as("nobody", Some("signer")).await,
        "PUT",
        &path,
        &write,
    )
    .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot impersonate"),
        "{body}"
    );
    let admin_as_nobody = f.client_as(ADMIN, Some("nobody")).await;
    let (code, body) = send(
        &admin_as_nobody,
        "GET",
        "/apis/certificates.k8s.io/v1beta1/namespaces/ns/podcertificaterequests",
        &Value::Null,
    )
    .await;
    assert_eq!(
        code, 403,
        "the admin acting as nobody has nobody's grants: {body}"
    );
}

/// API Priority and Fairness: a saturated priority level answers 429 with Retry-After, but
/// `system:masters` is in the mandatory `exempt` FlowSchema and is never throttled
/// (apiserver/pkg/apis/flowcontrol/bootstrap/default.go, `MandatoryFlowSchemaExempt`). The
/// double only: saturating a real priority level on demand is not something a test can do.
#[tokio::test]
async fn throttling_falls_on_limited_flows_never_on_system_masters() {
    let f = RuleServer::double().await;
    let RuleServer::Double(served) = &f else {
        unreachable!()
    };
    let sa = "system:serviceaccount:podcert-signer:podcert-signer";
    f.grant(
        "read-namespaces",
        sa,
        json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list"]}]),
    )
    .await;
    let limited = f.client_as(sa, None).await;
    served
        .server
        .faults()
        .throttle_next
        .store(2, std::sync::atomic::Ordering::SeqCst);
    let path = "/api/v1/namespaces";
    let (admin, _) = send(f.client(), "GET", path, &Value::Null).await;
    // kube's client waits out Retry-After and tries again, as client-go does.
    let (service_account, _) = send(&limited, "GET", path, &Value::Null).await;
    assert_eq!((admin, service_account), (200, 200));
    let throttled: Vec<(String, u16)> = served
        .server
        .requests()
        .into_iter()
        .filter(|r| r.path == path)
        .map(|r| (r.user, r.status))
        .collect();
    assert_eq!(
        throttled,
        [
            (ADMIN.to_string(), 200),
            (sa.to_string(), 429),
            (sa.to_string(), 429),
            (sa.to_string(), 200),
        ]
    );
}
