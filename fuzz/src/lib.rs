//! What must hold for any input to the signer's four hostile-input entry points; the fuzz
//! targets (`fuzz_targets/`, run with `cargo fuzz`) and the property tests
//! (`tests/properties.rs`, run by the normal test command) call these same functions.
//!
//! - [`stub_csr`]: any bytes as `spec.stubPKCS10Request` — a decision, never a panic, and an
//!   issued leaf certifies exactly the CSR's key.
//! - [`pkix`]: any bytes as (pod UID, `pkixPublicKey`, `proofOfPossession`) — a decision, and
//!   an issued leaf certifies exactly the requested key.
//! - [`ca_pem`]: any text as the CA Secret's `tls.crt`, `tls.key`, `ca.crt` — a CA or an error
//!   that quotes no run of base64 from the input (which may be a private key).
//! - [`status_builder`]: any PodCertificateRequest JSON the API server would store — the
//!   status we write for it is one the API server accepts (upstream's status-update rules, as
//!   ported in the test API server).

use std::time::SystemTime;

use podcert_signer::{Pcr, PcrVersion, Unreadable, status_for, to_request};
use podcert_tests::fixtures::{decide, test_signer};
use signer_core::{Ca, Decision, KeyMaterial};

/// The leaf's SubjectPublicKeyInfo in an issued chain.
fn leaf_spki(chain_pem: &str) -> Vec<u8> {
    use x509_parser::prelude::FromDer;
    let first = pem::parse_many(chain_pem).expect("issued chains are PEM");
    let leaf = first.first().expect("an issued chain has a leaf");
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf.contents())
        .expect("issued leaves parse");
    cert.public_key().raw.to_vec()
}

/// Any bytes as a stub CSR: a decision, never a panic; an issued leaf certifies exactly the
/// key that another parser (x509-parser) reads from the CSR.
pub fn stub_csr(data: &[u8]) {
    use x509_parser::prelude::FromDer;
    if let Decision::Issue(issued) = decide("uid", KeyMaterial::StubCsr { der: data.to_vec() }) {
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(data)
            .expect("x509-parser reads a CSR we issued for");
        assert_eq!(
            leaf_spki(&issued.chain_pem),
            csr.certification_request_info.subject_pki.raw,
            "the leaf certifies another key than the CSR's"
        );
    }
}

/// Input: `[uid length: u8][uid][spki length: u16 BE][spki][proof]`. A decision, never a
/// panic; an issued leaf carries exactly the requested key.
pub fn pkix(data: &[u8]) {
    let Some((&uid_len, rest)) = data.split_first() else {
        return;
    };
    let Some((uid, rest)) = rest.split_at_checked(usize::from(uid_len)) else {
        return;
    };
    let Some(([hi, lo], rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let Some((spki, proof)) = rest.split_at_checked(usize::from(u16::from_be_bytes([*hi, *lo])))
    else {
        return;
    };
    let uid = String::from_utf8_lossy(uid);
    let material = KeyMaterial::Pkix {
        spki_der: spki.to_vec(),
        proof: proof.to_vec(),
    };
    if let Decision::Issue(issued) = decide(&uid, material) {
        assert_eq!(
            leaf_spki(&issued.chain_pem),
            spki,
            "the leaf certifies another key"
        );
    }
}

/// Encodes a pkix input for [`pkix`] (seed corpora and tests).
pub fn pkix_input(uid: &str, spki: &[u8], proof: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(uid.len()).expect("short uid")];
    out.extend_from_slice(uid.as_bytes());
    out.extend_from_slice(&u16::try_from(spki.len()).expect("short spki").to_be_bytes());
    out.extend_from_slice(spki);
    out.extend_from_slice(proof);
    out
}

/// Runs of at least 16 base64 characters in `text`: what a quoted key line looks like.
fn base64_runs(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/'))
        .filter(|r| r.len() >= 16)
}

/// Input: `tls.crt`, `tls.key` and `ca.crt` text separated by NUL bytes. A CA or an error,
/// never a panic; the error quotes no run of base64 from any of the three.
pub fn ca_pem(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\0');
    let (cert, key, roots) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next(),
    );
    match Ca::from_pem(cert, key, roots) {
        Ok(ca) => assert!(!ca.trust_bundle_pem().is_empty()),
        Err(e) => {
            let shown = format!("{e} {e:?}");
            for run in base64_runs(&text) {
                assert!(
                    !shown.contains(run),
                    "the error quotes input {run:?}: {shown}"
                );
            }
        }
    }
}

/// Input: a PodCertificateRequest as JSON. If the API server would store it (the test API
/// server's port of upstream create validation, without the proof checks a privileged writer
/// cannot bypass anyway), the status we build for it passes upstream's status-update rules.
/// Returns whether the input got that far (the property tests check the seeds do).
pub fn status_builder(data: &[u8]) -> bool {
    use podcert_tests::apiserver::validate::{pcr_create, pcr_status_update};
    let Ok(mut obj) = serde_json::from_slice::<serde_json::Value>(data) else {
        return false;
    };
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
    let Some(version) = obj["apiVersion"]
        .as_str()
        .and_then(|v| v.strip_prefix("certificates.k8s.io/"))
        .map(str::to_owned)
    else {
        return false;
    };
    if !pcr_create(&obj, &version, false).is_empty() {
        return false;
    }
    let (Ok(pcr), Some(served)) = (
        serde_json::from_value::<Pcr>(obj.clone()),
        PcrVersion::named(&version),
    ) else {
        return false;
    };
    // Decided twice: with the signer's plain settings, and under an identity-policy rule
    // that lets workloads set every user annotation, so annotations reach every path.
    let decisions = match to_request(&pcr, served) {
        Ok(request) => {
            let grant = granting_rule();
            let placement = signer_core::Placement {
                service_dns_names: vec!["api.ns.svc".into(), "api.ns.svc.cluster.local".into()],
                pod_ips: vec![],
            };
            let signer = test_signer();
            [None, Some(grant)].map(|grant| {
                signer
                    .decide_under(grant, &request, &placement, SystemTime::now())
                    .expect("a healthy CA decides every request")
            })
        }
        Err(Unreadable::Deny(d)) => [Decision::Deny(d.clone()), Decision::Deny(d)],
        Err(Unreadable::KeyMaterialNotServed) => return false,
    };
    for decision in decisions {
        let now = SystemTime::now();
        let status =
            serde_json::to_value(status_for(&decision, &pcr, now)).expect("status serialises");
        let at = k8s_openapi::jiff::Timestamp::try_from(now).expect("now is a timestamp");
        let causes = pcr_status_update(&obj, &status, at);
        assert!(
            causes.is_empty(),
            "the API server refuses our status {status}: {causes:?}"
        );
    }
    true
}

/// A rule for every namespace that lets workloads set all three user annotations.
fn granting_rule() -> &'static signer_core::Grant {
    static POLICY: std::sync::OnceLock<signer_core::IdentityPolicy> = std::sync::OnceLock::new();
    let policy = POLICY.get_or_init(|| {
        signer_core::IdentityPolicy::parse(
            "rules:\n  - name: all\n    namespaces: {selector: {}}\n    lifetime: 12h\n    dnsNames: {services: true}\n    userAnnotations: [lifetime, usage, dns-names]\n",
            test_signer().policy().trust_domain(),
            std::time::Duration::from_secs(86_400),
        )
        .expect("the fuzz policy parses")
    });
    let labels = Default::default();
    policy
        .decide(&signer_core::Subject {
            namespace: "any",
            namespace_labels: &labels,
            service_account: "any",
        })
        .expect("the rule applies to every request")
}
