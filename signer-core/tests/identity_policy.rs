//! Decisions under an identity policy: the applicable rule's template, lifetime and key types
//! shape the certificate, and the names found live for the pod sit beside the one URI SAN —
//! only the kinds the rule asks for.

#![allow(clippy::disallowed_macros)]

mod common;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use signer_core::*;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

const POLICY: &str = "\
rules:
  - name: payments
    namespaces: {names: [payments]}
    spiffeIdTemplate: spiffe://{trust_domain}/pay/{namespace}/{service_account}
    lifetime: 6h
    keyTypes: [ED25519]
    dnsNames: {services: true, podIP: true}
  - name: plain
    namespaces: {selector: {}}
";

fn signer() -> Signer {
    signer_allowing(KeyType::ALL.to_vec())
}

fn signer_allowing(allowed_key_types: Vec<KeyType>) -> Signer {
    common::signer(PolicyConfig {
        allowed_key_types,
        ..PolicyConfig::default()
    })
}

fn identity() -> IdentityPolicy {
    common::identity(POLICY)
}

fn placement() -> Placement {
    Placement {
        service_dns_names: vec![
            "api.payments.svc".into(),
            "api.payments.svc.cluster.local".into(),
        ],
        pod_ips: vec!["10.1.2.3".parse().unwrap(), "fd00::7".parse().unwrap()],
    }
}

fn decide(
    namespace: &str,
    alg: &'static rcgen::SignatureAlgorithm,
    placement: &Placement,
) -> Decision {
    let policy = identity();
    let grant = common::grant(&policy, namespace);
    signer()
        .decide_under(
            Some(grant),
            &common::request(namespace, alg, &[]),
            placement,
            SystemTime::now(),
        )
        .unwrap()
}

/// (URIs, DNS names, IPs) of the leaf of an issued chain.
fn sans(issued: &Issued) -> (Vec<String>, Vec<String>, Vec<IpAddr>) {
    let pem = ::pem::parse(issued.chain_pem.as_bytes()).unwrap();
    let (_, cert) = X509Certificate::from_der(pem.contents()).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert!(
        san.critical,
        "an empty subject makes the SAN extension critical"
    );
    let (mut uris, mut dns, mut ips) = (vec![], vec![], vec![]);
    for name in &san.value.general_names {
        match name {
            GeneralName::URI(u) => uris.push(u.to_string()),
            GeneralName::DNSName(d) => dns.push(d.to_string()),
            GeneralName::IPAddress(b) => ips.push(match b.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()),
                _ => IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()),
            }),
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    (uris, dns, ips)
}

#[test]
fn the_rules_template_lifetime_and_names_shape_the_certificate() {
    let Decision::Issue(issued) = decide("payments", &rcgen::PKCS_ED25519, &placement()) else {
        panic!("expected an issued certificate");
    };
    assert_eq!(
        issued.spiffe_id.as_str(),
        "spiffe://example.org/pay/payments/api"
    );
    let lifetime = issued.not_after.duration_since(issued.not_before).unwrap();
    assert_eq!(lifetime, Duration::from_secs(6 * 3600));
    let (uris, dns, ips) = sans(&issued);
    assert_eq!(
        uris,
        ["spiffe://example.org/pay/payments/api"],
        "exactly one URI SAN"
    );
    assert_eq!(dns, ["api.payments.svc", "api.payments.svc.cluster.local"]);
    assert_eq!(ips, placement().pod_ips);
}

#[test]
fn a_key_type_outside_the_rules_list_is_denied_and_told_which_it_takes() {
    let Decision::Deny(d) = decide("payments", &rcgen::PKCS_ECDSA_P256_SHA256, &placement()) else {
        panic!("expected a denial");
    };
    assert_eq!(d.reason, DenyReason::UnsupportedKeyType);
    assert!(d.message.contains("ED25519"), "{}", d.message);
}

#[test]
fn a_rule_that_asks_for_no_names_gets_none_whatever_is_found() {
    let Decision::Issue(issued) = decide("web", &rcgen::PKCS_ECDSA_P256_SHA256, &placement())
    else {
        panic!("expected an issued certificate");
    };
    let (uris, dns, ips) = sans(&issued);
    assert_eq!(uris, ["spiffe://example.org/ns/web/sa/api"]);
    assert!(dns.is_empty() && ips.is_empty(), "{dns:?} {ips:?}");
    let lifetime = issued.not_after.duration_since(issued.not_before).unwrap();
    assert_eq!(
        lifetime,
        Duration::from_secs(86_400),
        "the signer's lifetime"
    );
}

#[test]
fn without_a_policy_no_names_are_added() {
    let request = common::request("payments", &rcgen::PKCS_ED25519, &[]);
    let Ok(Decision::Issue(issued)) =
        signer().decide_under(None, &request, &placement(), SystemTime::now())
    else {
        panic!("expected an issued certificate");
    };
    let (uris, dns, ips) = sans(&issued);
    assert_eq!(uris.len(), 1);
    assert!(dns.is_empty() && ips.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever name the controller hands over, the signer issues only valid DNS names.
    #[test]
    fn a_service_name_is_issued_only_when_it_is_a_valid_dns_name(name in "\\PC{0,80}|[a-z0-9.-]{1,80}") {
        let p = Placement { service_dns_names: vec![name.clone()], pod_ips: vec![] };
        match decide("payments", &rcgen::PKCS_ED25519, &p) {
            Decision::Issue(issued) => {
                prop_assert!(names::is_dns1123_subdomain(&name), "issued {name:?}");
                prop_assert_eq!(sans(&issued).1, vec![name]);
            }
            Decision::Deny(d) => {
                prop_assert_eq!(d.reason, DenyReason::InvalidIdentity);
                prop_assert!(!names::is_dns1123_subdomain(&name));
            }
        }
    }
}

#[test]
fn a_rules_key_types_never_widen_the_signers() {
    let signer = signer_allowing(vec![KeyType::EcdsaP256]);
    // The payments rule lists ED25519; the signer does not issue for it.
    let identity = identity();
    let grant = common::grant(&identity, "payments");
    let request = common::request("payments", &rcgen::PKCS_ED25519, &[]);
    let decision = signer
        .decide_under(Some(grant), &request, &placement(), SystemTime::now())
        .unwrap();
    let Decision::Deny(d) = decision else {
        panic!("a rule must not widen --allowed-key-types");
    };
    assert_eq!(d.reason, DenyReason::UnsupportedKeyType);
}
