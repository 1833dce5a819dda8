//! Upstream's own validation cases, re-expressed against the test API server over HTTP.
//!
//! Every row names the case of `pkg/apis/certificates/validation/validation_test.go`
//! (kubernetes/kubernetes) it mirrors: `TestValidatePodCertificateRequestCreate`, `…Update`,
//! `…StatusUpdate`, `TestValidateClusterTrustBundle` and `…Update`. A row sends what the Go
//! case builds — through the REST API, with the admin's credentials — and expects the same
//! outcome: accepted, or refused 422 with the same `(field, reason)` causes (and, where the
//! row gives one, the same message). Upstream's status cases run on a fake clock at the Unix
//! epoch; here every time is shifted to the server's now. One upstream case is not mirrored:
//! "maxExpirationSeconds missing" — over REST the versioned API defaults the field to 86400
//! before validation, so it cannot be reached.

use std::time::{Duration, SystemTime};

use base64::Engine;
use podcert_tests::against_both;
use podcert_tests::fixtures::kubelet_keys;
use podcert_tests::oracles::go_prove;
use podcert_tests::rule_server::RuleServer;
use serde_json::{Value, json};
use signer_core::time::unix_seconds;

const NS: &str = "foo";
const UID1: &str = "pod-uid-1";

/// What a row expects: `None` accepted, else the causes as (field, reason, message fragment).
type Expect = Option<Vec<(&'static str, &'static str, &'static str)>>;

/// The verdicts of one upstream test's rows on one server. Every row is sent; the test fails
/// at the end naming each row whose verdict is not upstream's, so one run counts them all.
struct Verdicts {
    server: String,
    rows: usize,
    wrong: Vec<String>,
}

impl Verdicts {
    fn new(f: &RuleServer) -> Self {
        Verdicts {
            server: f.name(),
            rows: 0,
            wrong: Vec::new(),
        }
    }

    fn check(&mut self, row: &str, (code, body): (u16, Value), expect: &Expect) {
        self.rows += 1;
        if let Err(why) = verdict(code, &body, expect) {
            self.wrong.push(format!("{row}: {why}"));
        }
    }

    /// A row whose starting state this server refuses to store (only the double stores an
    /// object without validation): it cannot be run here; the reason is printed.
    fn cannot_set_up(&mut self, row: &str, why: &str) {
        eprintln!("{}: row {row:?} cannot be set up: {why}", self.server);
    }

    fn finish(self) {
        eprintln!(
            "{}: {} rows, {} not as upstream",
            self.server,
            self.rows,
            self.wrong.len()
        );
        assert!(
            self.wrong.is_empty(),
            "{}: {} of {} rows differ from upstream:\n{}",
            self.server,
            self.wrong.len(),
            self.rows,
            self.wrong.join("\n")
        );
    }
}

/// Whether `code` and `body` are what `expect` says.
fn verdict(code: u16, body: &Value, expect: &Expect) -> Result<(), String> {
    match expect {
        None if (200..300).contains(&code) => Ok(()),
        None => Err(format!("refused {code}: {}", body["message"])),
        Some(want) => {
            if code != 422 {
                return Err(format!("answered {code}, want 422: {body}"));
            }
            let got: Vec<(String, String, String)> = body["details"]["causes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    (
                        c["field"].as_str().unwrap_or("").to_string(),
                        c["reason"].as_str().unwrap_or("").to_string(),
                        c["message"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            let got_pairs: Vec<(&str, &str)> = got
                .iter()
                .map(|(f, r, _)| (f.as_str(), r.as_str()))
                .collect();
            let want_pairs: Vec<(&str, &str)> = want.iter().map(|(f, r, _)| (*f, *r)).collect();
            if got_pairs != want_pairs {
                return Err(format!("causes {got:?}, want {want_pairs:?}"));
            }
            for ((_, _, message), (_, _, fragment)) in got.iter().zip(want) {
                if !message.contains(fragment) {
                    return Err(format!("{message:?} lacks {fragment:?}"));
                }
            }
            Ok(())
        }
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The keys and proofs upstream's create cases generate, from Go (the kubelet's own code).
struct Keys {
    /// (spki, proof) by name.
    pairs: std::collections::HashMap<&'static str, (Vec<u8>, Vec<u8>)>,
}

fn keys() -> Keys {
    let fixtures = kubelet_keys();
    let key = |t: &str| fixtures.iter().find(|k| k.key_type == t).unwrap();
    let other_ed25519 = aws_lc_rs::signature::Ed25519KeyPair::generate_pkcs8v1(
        &aws_lc_rs::rand::SystemRandom::new(),
    )
    .unwrap();
    let wanted: Vec<(&'static str, &str, &[u8], &str)> = vec![
        ("ed25519", "ED25519", &key("ED25519").pkcs8_der, UID1),
        (
            "ed25519-other-message",
            "ED25519",
            &key("ED25519").pkcs8_der,
            "other-value",
        ),
        (
            "ed25519-empty-uid",
            "ED25519",
            &key("ED25519").pkcs8_der,
            "",
        ),
        ("ed25519-other-key", "ED25519", other_ed25519.as_ref(), UID1),
        ("p224", "ECDSAP224", &key("ECDSAP224").pkcs8_der, UID1),
        ("p256", "ECDSAP256", &key("ECDSAP256").pkcs8_der, UID1),
        ("p384", "ECDSAP384", &key("ECDSAP384").pkcs8_der, UID1),
        ("p521", "ECDSAP521", &key("ECDSAP521").pkcs8_der, UID1),
        (
            "p384-other-message",
            "ECDSAP384",
            &key("ECDSAP384").pkcs8_der,
            "other-value",
        ),
        ("rsa2048", "RSA2048", &key("RSA2048").pkcs8_der, UID1),
        ("rsa3072", "RSA3072", &key("RSA3072").pkcs8_der, UID1),
        ("rsa4096", "RSA4096", &key("RSA4096").pkcs8_der, UID1),
        (
            "rsa3072-other-message",
            "RSA3072",
            &key("RSA3072").pkcs8_der,
            "other-value",
        ),
    ];
    let proofs = go_prove(
        &wanted
            .iter()
            .map(|(_, _, pkcs8, uid)| (*pkcs8, *uid))
            .collect::<Vec<_>>(),
    );
    Keys {
        pairs: wanted
            .iter()
            .zip(proofs)
            .map(|((name, kt, _, _), proof)| (*name, (key(kt).spki_der.clone(), proof)))
            .collect(),
    }
}

fn pcr(name: &str, keys: &Keys, pair: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let (spki, proof) = &keys.pairs[pair];
    let mut obj = json!({
        "apiVersion": "certificates.k8s.io/v1beta1", "kind": "PodCertificateRequest",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "signerName": "foo.com/abc", "podName": "pod-1", "podUID": UID1,
            "serviceAccountName": "sa-1", "serviceAccountUID": "sa-uid-1",
            "nodeName": "node-1", "nodeUID": "node-uid-1", "maxExpirationSeconds": 86400,
            "pkixPublicKey": b64(spki), "proofOfPossession": b64(proof),
        }
    });
    edit(&mut obj["spec"]);
    obj
}

const PCRS: &str = "/apis/certificates.k8s.io/v1beta1/namespaces/foo/podcertificaterequests";

against_both!(test_validate_pod_certificate_request_create);
async fn test_validate_pod_certificate_request_create(f: &RuleServer) {
    let mut v = Verdicts::new(f);
    let k = keys();
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let rows: Vec<(&str, &str, Edit, Expect)> = vec![
        ("valid Ed25519 PCR", "ed25519", Box::new(|_| {}), None),
        (
            "invalid Ed25519 proof of possession (correct key signed wrong message)",
            "ed25519-other-message",
            Box::new(|_| {}),
            Some(vec![(
                "spec.proofOfPossession",
                "FieldValueInvalid",
                "could not verify proof-of-possession signature",
            )]),
        ),
        (
            "invalid Ed25519 proof of possession (signed by different key)",
            "ed25519-other-key",
            Box::new(|_| {}),
            Some(vec![(
                "spec.proofOfPossession",
                "FieldValueInvalid",
                "could not verify proof-of-possession signature",
            )]),
        ),
        (
            "invalid ECDSA P224 PCR",
            "p224",
            Box::new(|_| {}),
            Some(vec![(
                "spec.pkixPublicKey",
                "FieldValueInvalid",
                "elliptic public keys must use curve P256 or P384",
            )]),
        ),
        ("valid ECDSA P256 PCR", "p256", Box::new(|_| {}), None),
        ("valid ECDSA P384 PCR", "p384", Box::new(|_| {}), None),
        ("valid ECDSA P521 PCR", "p521", Box::new(|_| {}), None),
        (
            "invalid ECDSA proof of possession (correct key signed wrong message)",
            "p384-other-message",
            Box::new(|_| {}),
            Some(vec![(
                "spec.proofOfPossession",
                "FieldValueInvalid",
                "could not verify proof-of-possession signature",
            )]),
        ),
        (
            "invalid RSA 2048 PCR",
            "rsa2048",
            Box::new(|_| {}),
            Some(vec![(
                "spec.pkixPublicKey",
                "FieldValueInvalid",
                "RSA keys must have modulus size 3072 or 4096",
            )]),
        ),
        ("valid RSA 3072 PCR", "rsa3072", Box::new(|_| {}), None),
        ("valid RSA 4096 PCR", "rsa4096", Box::new(|_| {}), None),
        (
            "invalid RSA proof of possession (correct key signed wrong message)",
            "rsa3072-other-message",
            Box::new(|_| {}),
            Some(vec![(
                "spec.proofOfPossession",
                "FieldValueInvalid",
                "could not verify proof-of-possession signature",
            )]),
        ),
        (
            "bad signer name",
            "ed25519",
            Box::new(|s| s["signerName"] = "not-valid-signername".into()),
            Some(vec![(
                "spec.signerName",
                "FieldValueInvalid",
                "must be a fully qualified domain and path of the form 'example.com/signer-name'",
            )]),
        ),
        (
            "bad pod name",
            "ed25519",
            Box::new(|s| s["podName"] = "pod-1-bad!!!!!".into()),
            Some(vec![(
                "spec.podName",
                "FieldValueInvalid",
                "a lowercase RFC 1123 subdomain must consist of",
            )]),
        ),
        (
            "bad pod uid",
            "ed25519-empty-uid",
            Box::new(|s| s["podUID"] = "".into()),
            Some(vec![(
                "spec.podUID",
                "FieldValueInvalid",
                "must not be empty",
            )]),
        ),
        (
            "bad service account name",
            "ed25519",
            Box::new(|s| s["serviceAccountName"] = "sa-1-bad!!!!!".into()),
            Some(vec![(
                "spec.serviceAccountName",
                "FieldValueInvalid",
                "a lowercase RFC 1123 subdomain",
            )]),
        ),
        (
            "bad service account uid",
            "ed25519",
            Box::new(|s| s["serviceAccountUID"] = "".into()),
            Some(vec![(
                "spec.serviceAccountUID",
                "FieldValueInvalid",
                "must not be empty",
            )]),
        ),
        (
            "bad node name",
            "ed25519",
            Box::new(|s| s["nodeName"] = "node-1-bad!!!!!".into()),
            Some(vec![(
                "spec.nodeName",
                "FieldValueInvalid",
                "a lowercase RFC 1123 subdomain",
            )]),
        ),
        (
            "bad node uid",
            "ed25519",
            Box::new(|s| s["nodeUID"] = "".into()),
            Some(vec![(
                "spec.nodeUID",
                "FieldValueInvalid",
                "must not be empty",
            )]),
        ),
        (
            "maxExpirationSeconds too large",
            "ed25519",
            Box::new(|s| s["maxExpirationSeconds"] = (91 * 86400 + 1).into()),
            Some(vec![(
                "spec.maxExpirationSeconds",
                "FieldValueInvalid",
                "must be in the range [3600, 7862400]",
            )]),
        ),
        (
            "maxExpirationSeconds too large (Kubernetes signer)",
            "ed25519",
            Box::new(|s| {
                s["signerName"] = "kubernetes.io/abc".into();
                s["maxExpirationSeconds"] = 86401.into();
            }),
            Some(vec![(
                "spec.maxExpirationSeconds",
                "FieldValueInvalid",
                "must be in the range [3600, 86400]",
            )]),
        ),
        (
            "maxExpirationSeconds too small",
            "ed25519",
            Box::new(|s| s["maxExpirationSeconds"] = 3599.into()),
            Some(vec![(
                "spec.maxExpirationSeconds",
                "FieldValueInvalid",
                "must be in the range [3600, 7862400]",
            )]),
        ),
        (
            "pkixPublicKey too long",
            "ed25519",
            Box::new(|s| {
                s["pkixPublicKey"] = b64(&vec![0; 10 * 1024 + 1]).into();
                s["proofOfPossession"] = b64(b"abc").into();
            }),
            Some(vec![("spec.pkixPublicKey", "FieldValueTooLong", "10240")]),
        ),
        (
            "proofOfPossession too long",
            "ed25519",
            Box::new(|s| {
                s["proofOfPossession"] = b64(&vec![0; 10 * 1024 + 1]).into();
            }),
            Some(vec![(
                "spec.proofOfPossession",
                "FieldValueTooLong",
                "10240",
            )]),
        ),
    ];
    let count = rows.len();
    for (i, (row, pair, edit, expect)) in rows.into_iter().enumerate() {
        let body = pcr(&format!("bar-{i}"), &k, pair, edit);
        v.check(row, f.send("POST", PCRS, &body).await, &expect);
    }
    assert_eq!(count, 24, "one row per mirrored upstream case");
    v.finish();
}

against_both!(test_validate_pod_certificate_request_update);
async fn test_validate_pod_certificate_request_update(f: &RuleServer) {
    let mut v = Verdicts::new(f);
    let k = keys();
    let (code, created) = f
        .send("POST", PCRS, &pcr("bar", &k, "ed25519", |_| {}))
        .await;
    assert_eq!(code, 201, "{created}");
    let mut changed = created.clone();
    for (field, value) in [
        ("signerName", json!("foo.com/new")),
        ("podName", json!("new")),
        ("podUID", json!("new")),
        ("serviceAccountName", json!("new")),
        ("serviceAccountUID", json!("new")),
        ("nodeName", json!("new")),
        ("nodeUID", json!("new")),
        ("maxExpirationSeconds", json!(86401)),
    ] {
        changed["spec"][field] = value;
    }
    v.check(
        "changing spec fields disallowed",
        f.send("PUT", &format!("{PCRS}/bar"), &changed).await,
        &Some(vec![("spec", "FieldValueInvalid", "field is immutable")]),
    );
    v.finish();
}

/// An issuing CA (Ed25519, as upstream's `mustMakeCA`) and, below it, an intermediate.
struct Cas {
    root: rcgen::Issuer<'static, rcgen::KeyPair>,
    intermediate: rcgen::Issuer<'static, rcgen::KeyPair>,
    intermediate_pem: String,
}

fn cas() -> Cas {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca = || {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
        p
    };
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let root = Issuer::new(ca(), root_key);
    let int_key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let int_cert = ca().signed_by(&int_key, &root).unwrap();
    Cas {
        root,
        intermediate_pem: int_cert.pem(),
        intermediate: Issuer::new(ca(), int_key),
    }
}

/// `mustSignCertForPublicKey`: a leaf for `spki` valid from `not_before` for `validity`.
fn leaf(
    spki: &[u8],
    not_before: i64,
    validity: Duration,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> String {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose};
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, "foo");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let at = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).unwrap();
    p.not_before = at(not_before);
    p.not_after = at(not_before + validity.as_secs() as i64);
    let public = rcgen::SubjectPublicKeyInfo::from_der(spki).unwrap();
    p.signed_by(&public, issuer).unwrap().pem()
}

fn rfc3339(t: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(t)
        .unwrap()
        .to_string()
}

fn condition(type_: &str, status: &str) -> Value {
    json!({"type": type_, "status": status, "reason": "Whatever", "message": "Foo message",
           "lastTransitionTime": rfc3339(unix_seconds(SystemTime::now()))})
}

against_both!(test_validate_pod_certificate_request_status_update);
async fn test_validate_pod_certificate_request_status_update(f: &RuleServer) {
    let mut v = Verdicts::new(f);
    let k = keys();
    let cas = cas();
    let spki = k.pairs["ed25519"].0.clone();
    // Upstream's epoch, moved to now: every certificate starts at T0.
    let t0 = unix_seconds(SystemTime::now());
    let hour = 3600;
    let cert1 = leaf(&spki, t0, Duration::from_secs(24 * 3600), &cas.root);
    let cert2 = leaf(&spki, t0, Duration::from_secs(18 * 3600), &cas.root);
    let too_short = leaf(&spki, t0, Duration::from_secs(50 * 60), &cas.root);
    let too_long = leaf(&spki, t0, Duration::from_secs(25 * 3600), &cas.root);
    let from_intermediate = leaf(&spki, t0, Duration::from_secs(24 * 3600), &cas.intermediate);
    let issued = |chain: &str, nb: i64, refresh: i64, na: i64| {
        json!({"conditions": [condition("Issued", "True")], "certificateChain": chain,
               "notBefore": rfc3339(nb), "beginRefreshAt": rfc3339(refresh), "notAfter": rfc3339(na)})
    };
    let good = issued(&cert1, t0, t0 + 12 * hour, t0 + 24 * hour);
    let only = |c: Value| json!({"conditions": [c]});
    let denied = only(condition("Denied", "True"));
    let failed = only(condition("Failed", "True"));
    let status = "status";
    let not_after_immutable: &'static str =
        "immutable after PodCertificateRequest is issued, denied, or failed";
    let rows: Vec<(&str, Option<Value>, Value, Expect)> = vec![
        ("changing nothing is allowed", None, json!({}), None),
        (
            "adding unknown condition types is not allowed",
            None,
            only(condition("Unknown", "False")),
            Some(vec![(
                "status.conditions.[0].type",
                "FieldValueNotSupported",
                "",
            )]),
        ),
        (
            "Issued must have status True",
            None,
            only(condition("Issued", "False")),
            Some(vec![(
                "status.conditions.[0].status",
                "FieldValueNotSupported",
                "",
            )]),
        ),
        (
            "Denied must have status True",
            None,
            only(condition("Denied", "False")),
            Some(vec![(
                "status.conditions.[0].status",
                "FieldValueNotSupported",
                "",
            )]),
        ),
        (
            "Failed must have status True",
            None,
            only(condition("Failed", "False")),
            Some(vec![(
                "status.conditions.[0].status",
                "FieldValueNotSupported",
                "",
            )]),
        ),
        (
            "transitioning to Denied status is allowed",
            None,
            denied.clone(),
            None,
        ),
        (
            "you can't issue a certificate if you set Denied status",
            None,
            json!({"conditions": [condition("Denied", "True")], "certificateChain": cert1}),
            Some(vec![(
                status,
                "FieldValueInvalid",
                "non-condition status fields must be empty when denying or failing the PodCertificateRequest",
            )]),
        ),
        (
            "transitioning to Failed status is allowed",
            None,
            failed.clone(),
            None,
        ),
        (
            "you can't issue a certificate if you set Failed status",
            None,
            json!({"conditions": [condition("Failed", "True")], "certificateChain": cert1}),
            Some(vec![(
                status,
                "FieldValueInvalid",
                "non-condition status fields must be empty when denying or failing the PodCertificateRequest",
            )]),
        ),
        ("valid issuance", None, good.clone(), None),
        (
            "valid issuance with intermediate CA",
            None,
            issued(
                &format!("{from_intermediate}\n{}", cas.intermediate_pem),
                t0,
                t0 + 12 * hour,
                t0 + 24 * hour,
            ),
            None,
        ),
        (
            "Once issued, the certificate cannot be changed to a different valid certificate",
            Some(good.clone()),
            issued(&cert2, t0, t0 + 12 * hour, t0 + 18 * hour),
            Some(vec![(status, "FieldValueInvalid", not_after_immutable)]),
        ),
        (
            "a request cannot be both Denied and Failed",
            None,
            json!({"conditions": [condition("Denied", "True"), condition("Failed", "True")]}),
            Some(vec![(
                "status.conditions.[1].type",
                "FieldValueInvalid",
                "There may be at most one condition with type \"Issued\", \"Denied\", or \"Failed\"",
            )]),
        ),
        (
            "certificate cannot be issued and denied",
            None,
            {
                let mut s = good.clone();
                s["conditions"] = json!([condition("Issued", "True"), condition("Denied", "True")]);
                s
            },
            Some(vec![(
                "status.conditions.[1].type",
                "FieldValueInvalid",
                "There may be at most one condition",
            )]),
        ),
        (
            "certificate cannot be issued and failed",
            None,
            {
                let mut s = good.clone();
                s["conditions"] = json!([condition("Issued", "True"), condition("Failed", "True")]);
                s
            },
            Some(vec![(
                "status.conditions.[1].type",
                "FieldValueInvalid",
                "There may be at most one condition",
            )]),
        ),
        (
            "a request cannot change from Denied to Failed",
            Some(denied.clone()),
            failed.clone(),
            Some(vec![(status, "FieldValueInvalid", not_after_immutable)]),
        ),
        (
            "a request cannot change from Failed to Denied",
            Some(failed.clone()),
            denied.clone(),
            Some(vec![(status, "FieldValueInvalid", not_after_immutable)]),
        ),
        (
            "a request cannot change from Denied to pending",
            Some(denied.clone()),
            json!({"conditions": []}),
            Some(vec![(status, "FieldValueInvalid", not_after_immutable)]),
        ),
        (
            "a request cannot change from Failed to pending",
            Some(failed.clone()),
            json!({"conditions": []}),
            Some(vec![(status, "FieldValueInvalid", not_after_immutable)]),
        ),
        (
            "a request cannot change from issued to pending",
            Some(good.clone()),
            json!({}),
            Some(vec![(status, "FieldValueInvalid", not_after_immutable)]),
        ),
        (
            "a request cannot change from issued to Failed",
            Some(good.clone()),
            failed.clone(),
            Some(vec![(status, "FieldValueInvalid", not_after_immutable)]),
        ),
        (
            "a request cannot change from issued to Denied",
            Some(good.clone()),
            denied.clone(),
            Some(vec![(status, "FieldValueInvalid", not_after_immutable)]),
        ),
        (
            "notbefore must be consistent with leaf certificate",
            None,
            issued(&cert1, t0 + 60, t0 + 12 * hour, t0 + 24 * hour),
            Some(vec![(
                "status.notBefore",
                "FieldValueInvalid",
                "must be set to the NotBefore time encoded in the leaf certificate",
            )]),
        ),
        (
            "notAfter must be consistent with leaf certificate",
            None,
            issued(&cert1, t0, t0 + 12 * hour, t0 + 365 * 24 * hour),
            Some(vec![(
                "status.notAfter",
                "FieldValueInvalid",
                "must be set to the NotAfter time encoded in the leaf certificate",
            )]),
        ),
        (
            "beginRefreshAt must be >= notBefore + 10 min",
            None,
            issued(&cert1, t0, t0 + 5 * 60, t0 + 24 * hour),
            Some(vec![(
                "status.beginRefreshAt",
                "FieldValueInvalid",
                "must be at least 10 minutes after status.notBefore",
            )]),
        ),
        (
            "beginRefreshAt must be <= notAfter - 10 min",
            None,
            issued(&cert1, t0, t0 + 24 * hour - 5 * 60, t0 + 24 * hour),
            Some(vec![(
                "status.beginRefreshAt",
                "FieldValueInvalid",
                "must be at least 10 minutes before status.notAfter",
            )]),
        ),
        (
            "timestamps must be set",
            None,
            json!({"conditions": [condition("Issued", "True")], "certificateChain": cert1}),
            Some(vec![
                (
                    "status.notBefore",
                    "FieldValueRequired",
                    "must be present and consistent with the issued certificate",
                ),
                (
                    "status.notAfter",
                    "FieldValueRequired",
                    "must be present and consistent with the issued certificate",
                ),
                (
                    "status.beginRefreshAt",
                    "FieldValueRequired",
                    "must be present and in the range [notbefore+10min, notafter-10min]",
                ),
            ]),
        ),
        (
            "certs shorter than one hour are rejected",
            None,
            issued(&too_short, t0, t0 + 25 * 60, t0 + 50 * 60),
            Some(vec![(
                "status.certificateChain",
                "FieldValueInvalid",
                "leaf certificate lifetime must be >= 1 hour",
            )]),
        ),
        (
            "certs longer than maxExpirationSeconds are rejected",
            None,
            issued(&too_long, t0, t0 + 12 * hour, t0 + 25 * hour),
            Some(vec![(
                "status.certificateChain",
                "FieldValueInvalid",
                "leaf certificate lifetime must be <= spec.maxExpirationSeconds (86400)",
            )]),
        ),
    ];
    let count = rows.len();
    for (i, (row, old_status, new_status, expect)) in rows.into_iter().enumerate() {
        let name = format!("bar-{i}");
        let (code, created) = f
            .send("POST", PCRS, &pcr(&name, &k, "ed25519", |_| {}))
            .await;
        assert_eq!(code, 201, "{row}: {created}");
        let mut current = created;
        if let Some(old) = old_status {
            // The old object's status, as stored (upstream's oldPCR).
            current["status"] = old;
            current = match f.store(PCRS, current).await {
                Ok(stored) => stored,
                Err(why) => {
                    v.cannot_set_up(row, &why);
                    continue;
                }
            };
        }
        let mut update = current.clone();
        update["status"] = new_status;
        v.check(
            row,
            f.send("PUT", &format!("{PCRS}/{name}/status"), &update)
                .await,
            &expect,
        );
    }
    assert_eq!(count, 29, "one row per upstream case");
    v.finish();
}

/// A CA certificate as upstream's `mustMakeCertificate` makes one.
fn ca_cert(cn: &str, is_ca: bool) -> Vec<u8> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = if is_ca {
        IsCa::Ca(BasicConstraints::Unconstrained)
    } else {
        IsCa::NoCa
    };
    p.self_signed(&key).unwrap().der().to_vec()
}

fn pem_block(kind: &str, headers: &str, der: &[u8]) -> String {
    let body = b64(der)
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    format!("-----BEGIN {kind}-----\n{headers}{body}\n-----END {kind}-----\n")
}

const CTBS: &str = "/apis/certificates.k8s.io/v1beta1/clustertrustbundles";

fn ctb(name: &str, signer: Option<&str>, bundle: &str) -> Value {
    let mut spec = json!({"trustBundle": bundle});
    if let Some(s) = signer {
        spec["signerName"] = s.into();
    }
    json!({"apiVersion": "certificates.k8s.io/v1beta1", "kind": "ClusterTrustBundle", "metadata": {"name": name}, "spec": spec})
}

against_both!(test_validate_cluster_trust_bundle);
async fn test_validate_cluster_trust_bundle(f: &RuleServer) {
    let mut v = Verdicts::new(f);
    let good1 = pem_block("CERTIFICATE", "", &ca_cert("root1", true));
    let good2 = pem_block("CERTIFICATE", "", &ca_cert("root2", true));
    let good1_alternate = good1.replace('\n', "\n\t\n");
    let not_ca = pem_block("CERTIFICATE", "", &ca_cert("root3", false));
    let headers = pem_block("CERTIFICATE", "key: value\n\n", &ca_cert("root1", true));
    let bad_type = pem_block("NOTACERTIFICATE", "", &ca_cert("root1", true));
    let unparseable = pem_block("CERTIFICATE", "", b"this is not a certificate");
    let too_big = format!("{good1}\n").repeat(1024 * 1024 / good1.len() + 1);
    let invalid = "FieldValueInvalid";
    let rows: Vec<(&str, &str, Option<&str>, String, Expect)> = vec![
        ("valid, no signer name", "foo", None, good1.clone(), None),
        (
            "invalid, too big",
            "foo",
            None,
            too_big,
            Some(vec![("spec.trustBundle", "FieldValueTooLong", "")]),
        ),
        (
            "invalid, no signer name, invalid name",
            "k8s.io:bar:foo",
            None,
            good1.clone(),
            Some(vec![(
                "metadata.name",
                invalid,
                "ClusterTrustBundle without signer name must not have \":\" in its name",
            )]),
        ),
        (
            "valid, with signer name",
            "k8s.io:foo:bar",
            Some("k8s.io/foo"),
            good1.clone(),
            None,
        ),
        (
            "invalid, with signer name, missing name prefix",
            "look-ma-no-prefix",
            Some("k8s.io/foo"),
            good1.clone(),
            Some(vec![(
                "metadata.name",
                invalid,
                "ClusterTrustBundle for signerName k8s.io/foo must be named with prefix k8s.io:foo:",
            )]),
        ),
        (
            "invalid, with signer name, empty name suffix",
            "k8s.io:foo:",
            Some("k8s.io/foo"),
            good1.clone(),
            Some(vec![(
                "metadata.name",
                invalid,
                "a lowercase RFC 1123 subdomain must consist of",
            )]),
        ),
        (
            "invalid, with signer name, bad name suffix",
            "k8s.io:foo:123notvalidDNSSubdomain",
            Some("k8s.io/foo"),
            good1.clone(),
            Some(vec![(
                "metadata.name",
                invalid,
                "a lowercase RFC 1123 subdomain must consist of",
            )]),
        ),
        (
            "valid, with signer name, with inter-block garbage",
            "k8s.io:foo:abc",
            Some("k8s.io/foo"),
            format!("garbage\n{good1}\ngarbage\n{good2}"),
            None,
        ),
        (
            "invalid, no signer name, no trust anchors",
            "foo",
            None,
            String::new(),
            Some(vec![(
                "spec.trustBundle",
                invalid,
                "at least one trust anchor must be provided",
            )]),
        ),
        (
            "invalid, no trust anchors",
            "k8s.io:foo:abc",
            Some("k8s.io/foo"),
            String::new(),
            Some(vec![(
                "spec.trustBundle",
                invalid,
                "at least one trust anchor must be provided",
            )]),
        ),
        (
            "invalid, bad signer name",
            "invalid:foo",
            Some("invalid"),
            good1.clone(),
            Some(vec![(
                "spec.signerName",
                invalid,
                "must be a fully qualified domain and path of the form 'example.com/signer-name'",
            )]),
        ),
        (
            "invalid, no blocks",
            "foo",
            None,
            "non block garbage".into(),
            Some(vec![(
                "spec.trustBundle",
                invalid,
                "at least one trust anchor must be provided",
            )]),
        ),
        (
            "invalid, bad block type",
            "foo",
            None,
            format!("{good1}\n{bad_type}"),
            Some(vec![(
                "spec.trustBundle",
                invalid,
                "entry 1 has bad block type: NOTACERTIFICATE",
            )]),
        ),
        (
            "invalid, block with headers",
            "foo",
            None,
            format!("{good1}\n{headers}"),
            Some(vec![(
                "spec.trustBundle",
                invalid,
                "entry 1 has PEM block headers",
            )]),
        ),
        (
            "invalid, cert is not a CA cert",
            "foo",
            None,
            not_ca,
            Some(vec![(
                "spec.trustBundle",
                invalid,
                "entry 0 does not have the CA bit set",
            )]),
        ),
        (
            "invalid, duplicated blocks",
            "foo",
            None,
            format!("{good1}\n{good1_alternate}"),
            Some(vec![(
                "spec.trustBundle",
                invalid,
                "duplicate trust anchor (indices [0 1])",
            )]),
        ),
        (
            "invalid, non-certificate entry",
            "foo",
            None,
            format!("{good1}\n{unparseable}"),
            Some(vec![(
                "spec.trustBundle",
                invalid,
                "entry 1 does not parse as X.509",
            )]),
        ),
    ];
    let count = rows.len();
    for (row, name, signer, bundle, expect) in rows {
        v.check(
            row,
            f.send("POST", CTBS, &ctb(name, signer, &bundle)).await,
            &expect,
        );
        // Clean up what was created, so names can repeat.
        f.delete(&format!("{CTBS}/{name}")).await;
    }
    // "allow any old garbage in the PEM field if we suppress parsing": over REST, parsing is
    // suppressed on an update that leaves trustBundle unchanged.
    let row = "allow any old garbage in the PEM field if we suppress parsing";
    match f.store(CTBS, ctb("foo", None, "garbage")).await {
        Ok(mut stored) => {
            stored["metadata"]["labels"] = json!({"touched": "yes"});
            v.check(
                row,
                f.send("PUT", &format!("{CTBS}/foo"), &stored).await,
                &None,
            );
        }
        Err(why) => v.cannot_set_up(row, &why),
    }
    assert_eq!(count + 1, 18, "one row per upstream case");
    v.finish();
}

against_both!(test_validate_cluster_trust_bundle_update);
async fn test_validate_cluster_trust_bundle_update(f: &RuleServer) {
    let mut v = Verdicts::new(f);
    let good1 = pem_block("CERTIFICATE", "", &ca_cert("root1", true));
    let good2 = pem_block("CERTIFICATE", "", &ca_cert("root2", true));
    let rows: Vec<(&str, Value, Expect)> = vec![
        (
            "changing signer name disallowed",
            ctb("k8s.io:foo:bar", Some("k8s.io/bar"), &good1),
            Some(vec![
                (
                    "metadata.name",
                    "FieldValueInvalid",
                    "ClusterTrustBundle for signerName k8s.io/bar must be named with prefix k8s.io:bar:",
                ),
                ("spec.signerName", "FieldValueInvalid", "field is immutable"),
            ]),
        ),
        (
            "adding certificate allowed",
            ctb(
                "k8s.io:foo:bar",
                Some("k8s.io/foo"),
                &format!("{good1}\n{good2}"),
            ),
            None,
        ),
        (
            "emptying trustBundle disallowed",
            ctb("k8s.io:foo:bar", Some("k8s.io/foo"), ""),
            Some(vec![(
                "spec.trustBundle",
                "FieldValueInvalid",
                "at least one trust anchor must be provided",
            )]),
        ),
        (
            "emptying trustBundle (replace with non-block garbage) disallowed",
            ctb("k8s.io:foo:bar", Some("k8s.io/foo"), "non block garbage"),
            Some(vec![(
                "spec.trustBundle",
                "FieldValueInvalid",
                "at least one trust anchor must be provided",
            )]),
        ),
    ];
    for (row, new, expect) in rows {
        f.delete(&format!("{CTBS}/k8s.io:foo:bar")).await;
        let (code, old) = f
            .send(
                "POST",
                CTBS,
                &ctb("k8s.io:foo:bar", Some("k8s.io/foo"), &good1),
            )
            .await;
        assert_eq!(code, 201, "{old}");
        let mut update = new;
        update["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        v.check(
            row,
            f.send("PUT", &format!("{CTBS}/k8s.io:foo:bar"), &update)
                .await,
            &expect,
        );
    }
    v.finish();
}
