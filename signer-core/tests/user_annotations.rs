//! What a workload may ask for with user annotations (issue 30; docs/identity-policy.md,
//! "What a workload may ask for"): only the keys its rule lists, under the signer's domain,
//! each within the grant — a shorter lifetime, a narrower usage, some of its Service names.
//! Everything else is denied `InvalidUnverifiedUserAnnotations`, and no annotation ever
//! changes the identity. The policy and pod of the documentation are run as written.

#![allow(clippy::disallowed_macros)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use signer_core::*;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::*;

/// docs/identity-policy.md, whose examples these tests run.
fn page() -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/identity-policy.md"),
    )
    .unwrap()
}

/// The two YAML blocks of the documentation's section: the policy, then the pod's volumes.
fn documented() -> (String, BTreeMap<String, String>) {
    let page = page();
    let section = page
        .split("## What a workload may ask for")
        .nth(1)
        .expect("the section");
    let blocks: Vec<&str> = section
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    let pod: serde_json::Value = serde_saphyr::from_str(blocks[1]).unwrap();
    let annotations =
        &pod["volumes"][0]["projected"]["sources"][0]["podCertificate"]["userAnnotations"];
    let annotations = annotations
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    (blocks[0].to_string(), annotations)
}

/// The documented policy, and a rule for client-only workloads that lists only `usage`.
fn policy() -> IdentityPolicy {
    let (yaml, _) = documented();
    common::identity(&format!(
        "{yaml}  - name: batch\n    namespaces: {{names: [batch]}}\n    usage: client\n    userAnnotations: [usage]\n"
    ))
}

fn signer() -> Signer {
    common::signer(PolicyConfig {
        signer_name: "example.com/spiffe".into(),
        ..PolicyConfig::default()
    })
}

/// The Services that select the pod: `api` and `api-internal`.
fn placement() -> Placement {
    Placement {
        service_dns_names: [
            "api.payments.svc",
            "api.payments.svc.cluster.local",
            "api-internal.payments.svc",
            "api-internal.payments.svc.cluster.local",
        ]
        .map(String::from)
        .to_vec(),
        pod_ips: vec![],
    }
}

fn decide_in(namespace: &str, annotations: &[(&str, &str)], with_policy: bool) -> Decision {
    let request = common::request(namespace, &rcgen::PKCS_ECDSA_P256_SHA256, annotations);
    let identity = policy();
    let grant = common::grant(&identity, namespace);
    signer()
        .decide_under(
            with_policy.then_some(grant),
            &request,
            &placement(),
            SystemTime::now(),
        )
        .unwrap()
}

fn decide(annotations: &[(&str, &str)]) -> Decision {
    decide_in("payments", annotations, true)
}

/// The leaf's lifetime (s), (serverAuth, clientAuth) and DNS names.
fn leaf(issued: &Issued) -> (u64, (bool, bool), Vec<String>) {
    let pem = ::pem::parse(issued.chain_pem.as_bytes()).unwrap();
    let (_, cert) = X509Certificate::from_der(pem.contents()).unwrap();
    let lifetime = issued
        .not_after
        .duration_since(issued.not_before)
        .unwrap()
        .as_secs();
    let (mut usage, mut dns) = ((false, false), vec![]);
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::ExtendedKeyUsage(e) => usage = (e.server_auth, e.client_auth),
            ParsedExtension::SubjectAlternativeName(s) => {
                for n in &s.general_names {
                    if let GeneralName::DNSName(d) = n {
                        dns.push(d.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    (lifetime, usage, dns)
}

fn issued(d: Decision) -> Issued {
    match d {
        Decision::Issue(i) => i,
        Decision::Deny(d) => panic!("denied: {}", d.message),
    }
}

fn denied(d: Decision) -> String {
    match d {
        Decision::Deny(d) => {
            assert_eq!(d.reason, DenyReason::InvalidUnverifiedUserAnnotations);
            d.message
        }
        Decision::Issue(_) => panic!("issued"),
    }
}

#[test]
fn every_policy_on_the_documentation_page_is_one_the_signer_reads() {
    let page = page();
    let policies: Vec<&str> = page
        .split("```yaml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .filter(|b| b.starts_with("rules:"))
        .collect();
    assert!(
        policies.len() >= 2,
        "{} policies on the page",
        policies.len()
    );
    for yaml in policies {
        IdentityPolicy::parse(
            yaml,
            &TrustDomain::new("example.org").unwrap(),
            Duration::from_secs(86_400),
        )
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    }
}

#[test]
fn the_documented_pod_gets_a_client_only_leaf_for_two_hours_with_the_names_it_chose() {
    let (_, annotations) = documented();
    let pairs: Vec<(&str, &str)> = annotations
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let i = issued(decide(&pairs));
    assert_eq!(
        i.spiffe_id.as_str(),
        "spiffe://example.org/ns/payments/sa/api"
    );
    let (lifetime, usage, dns) = leaf(&i);
    assert_eq!(lifetime, 2 * 3600);
    assert_eq!(usage, (false, true), "clientAuth only");
    assert_eq!(dns, ["api.payments.svc", "api.payments.svc.cluster.local"]);
}

#[test]
fn without_annotations_the_rule_grants_all_it_says() {
    let (lifetime, usage, dns) = leaf(&issued(decide(&[])));
    assert_eq!(lifetime, 6 * 3600);
    assert_eq!(usage, (true, true));
    assert_eq!(dns, placement().service_dns_names);
}

#[test]
fn a_lifetime_within_the_rule_and_the_api_is_taken_and_one_outside_denied() {
    assert_eq!(
        leaf(&issued(decide(&[("example.com/lifetime", "6h")]))).0,
        6 * 3600
    );
    assert_eq!(
        leaf(&issued(decide(&[("example.com/lifetime", "1h")]))).0,
        3600
    );
    let m = denied(decide(&[("example.com/lifetime", "7h")]));
    assert_eq!(
        m,
        "unverifiedUserAnnotations: example.com/lifetime: 7h is longer than rule \"payments\" allows (6h)"
    );
    let m = denied(decide(&[("example.com/lifetime", "59m")]));
    assert!(
        m.contains("59m is shorter than the 1h every certificate must last"),
        "{m}"
    );
    let m = denied(decide(&[("example.com/lifetime", "two hours")]));
    assert!(m.contains("is not a duration"), "{m}");
}

#[test]
fn a_usage_within_the_rule_is_taken_and_a_wider_one_denied() {
    assert_eq!(
        leaf(&issued(decide(&[("example.com/usage", "server")]))).1,
        (true, false)
    );
    assert_eq!(
        leaf(&issued(decide(&[("example.com/usage", "both")]))).1,
        (true, true)
    );
    // The batch rule grants client only.
    let batch = |u| decide_in("batch", &[("example.com/usage", u)], true);
    assert_eq!(leaf(&issued(batch("client"))).1, (false, true));
    for wider in ["server", "both"] {
        let m = denied(batch(wider));
        assert_eq!(
            m,
            format!(
                "unverifiedUserAnnotations: example.com/usage: {wider} is outside what rule \"batch\" grants (client)"
            )
        );
    }
}

#[test]
fn dns_names_must_be_names_the_policy_would_give_this_pod() {
    let chosen = decide(&[("example.com/dns-names", "api-internal.payments.svc")]);
    assert_eq!(leaf(&issued(chosen)).2, ["api-internal.payments.svc"]);
    // Another pod's Service: the forgery the signers we are compared with once let through.
    let m = denied(decide(&[(
        "example.com/dns-names",
        "api.payments.svc,web.payments.svc",
    )]));
    assert!(
        m.starts_with("unverifiedUserAnnotations: example.com/dns-names: \"web.payments.svc\" is not a name of a Service that selects this pod; rule \"payments\" gives api.payments.svc, "),
        "{m}"
    );
}

#[test]
fn a_key_the_rule_does_not_list_of_any_domain_is_denied_naming_what_is_allowed() {
    let allowed =
        "rule \"payments\" allows example.com/lifetime, example.com/usage, example.com/dns-names";
    for key in [
        "example.com/spiffe-id",
        "example.com/Lifetime",
        "other.example/lifetime",
        "lifetime",
    ] {
        let m = denied(decide(&[(key, "6h")]));
        assert_eq!(
            m,
            format!("unverifiedUserAnnotations: the key {key:?} is not allowed: {allowed}")
        );
    }
    // The batch rule lists only usage.
    let m = denied(decide_in("batch", &[("example.com/lifetime", "2h")], true));
    assert!(
        m.ends_with("rule \"batch\" allows example.com/usage"),
        "{m}"
    );
}

#[test]
fn without_an_identity_policy_every_annotation_is_denied() {
    let m = denied(decide_in(
        "payments",
        &[("example.com/lifetime", "2h")],
        false,
    ));
    assert!(m.contains("allows none without an identity policy"), "{m}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever a workload writes, it is denied with the API's reason or issued under the
    /// identity its namespace and service account give: never another.
    #[test]
    fn no_annotation_ever_changes_the_identity(
        name in "(lifetime|usage|dns-names|spiffe-id|[a-z-]{1,12})",
        domain in "(example\\.com|other\\.io|)",
        value in "\\PC{0,40}|[0-9]{1,3}[hm]|client|server|both|api\\.payments\\.svc",
    ) {
        let key = if domain.is_empty() { name } else { format!("{domain}/{name}") };
        match decide(&[(key.as_str(), value.as_str())]) {
            Decision::Issue(i) => {
                prop_assert_eq!(i.spiffe_id.as_str(), "spiffe://example.org/ns/payments/sa/api");
            }
            Decision::Deny(d) => {
                prop_assert_eq!(d.reason, DenyReason::InvalidUnverifiedUserAnnotations);
            }
        }
    }
}
