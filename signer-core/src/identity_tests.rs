//! Tests of the identity policy: its rules, their order, and every mistake the file format names.

use super::*;

const DAY: Duration = Duration::from_secs(86_400);

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn policy(yaml: &str) -> IdentityPolicy {
    IdentityPolicy::parse(yaml, &td(), DAY).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn decide<'p>(
    p: &'p IdentityPolicy,
    namespace: &str,
    namespace_labels: &[(&str, &str)],
    service_account: &str,
) -> Result<&'p Grant, Denial> {
    p.decide(&Subject {
        namespace,
        namespace_labels: &labels(namespace_labels),
        service_account,
    })
}

const POLICY: &str = "\
rules:
  - name: payments
    namespaces:
      selector: {matchLabels: {team: payments}}
    serviceAccounts: {deny: [default]}
    spiffeIdTemplate: spiffe://{trust_domain}/pay/{namespace}/{service_account}
    lifetime: 6h
    keyTypes: [ECDSAP256]
    dnsNames: {services: true}
  - name: web
    namespaces: {names: [web]}
    serviceAccounts: {allow: [frontend, api]}
";

#[test]
fn a_namespace_selected_by_label_gets_its_rules_settings() {
    let p = policy(POLICY);
    let g = decide(&p, "checkout", &[("team", "payments")], "api").unwrap();
    assert_eq!(g.rule, "payments");
    assert_eq!(g.lifetime, Some(Duration::from_secs(6 * 3600)));
    assert_eq!(g.key_types, Some(vec![KeyType::EcdsaP256]));
    assert!(g.dns_names.services && !g.dns_names.pod_ip);
    let id = g
        .template
        .as_ref()
        .unwrap()
        .render("checkout", "api")
        .unwrap();
    assert_eq!(id.as_str(), "spiffe://example.org/pay/checkout/api");
}

#[test]
fn a_namespace_without_the_label_is_denied() {
    let p = policy(POLICY);
    let d = decide(&p, "checkout", &[("team", "search")], "api").unwrap_err();
    assert_eq!(d.reason, DenyReason::NotAllowedByPolicy);
    assert!(d.message.contains("no rule of the identity policy allows service account \"api\" in namespace \"checkout\""), "{}", d.message);
}

#[test]
fn a_denied_service_account_is_refused_and_not_passed_to_later_rules() {
    let p = policy(&format!(
        "{POLICY}  - name: fallback\n    namespaces: {{selector: {{}}}}\n"
    ));
    let d = decide(&p, "checkout", &[("team", "payments")], "default").unwrap_err();
    assert_eq!(d.reason, DenyReason::NotAllowedByPolicy);
    assert!(
        d.message.contains("denied by rule \"payments\""),
        "{}",
        d.message
    );
    // Another namespace's default service account falls through to the fallback rule.
    assert_eq!(decide(&p, "misc", &[], "default").unwrap().rule, "fallback");
}

#[test]
fn an_allow_list_admits_only_its_service_accounts() {
    let p = policy(POLICY);
    assert_eq!(decide(&p, "web", &[], "frontend").unwrap().rule, "web");
    let d = decide(&p, "web", &[], "batch").unwrap_err();
    assert_eq!(d.reason, DenyReason::NotAllowedByPolicy);
    // Names select namespaces exactly.
    assert!(decide(&p, "web2", &[], "frontend").is_err());
}

#[test]
fn names_and_selector_together_must_both_hold() {
    let p = policy(
        "rules:\n  - name: r\n    namespaces:\n      names: [a, b]\n      selector: {matchLabels: {env: prod}}\n",
    );
    assert!(decide(&p, "a", &[("env", "prod")], "sa").is_ok());
    assert!(decide(&p, "a", &[("env", "dev")], "sa").is_err());
    assert!(decide(&p, "c", &[("env", "prod")], "sa").is_err());
}

#[test]
fn a_rule_without_settings_keeps_the_signers() {
    let p = policy("rules:\n  - name: all\n    namespaces: {selector: {}}\n");
    let g = decide(&p, "x", &[], "y").unwrap();
    assert_eq!(
        (g.template.as_ref(), g.lifetime, g.key_types.as_ref()),
        (None, None, None)
    );
    assert!(!g.dns_names.any());
    assert!(
        !p.reads_namespace_labels(),
        "selector: {{}} selects every namespace without reading labels"
    );
}

#[test]
fn what_the_controller_must_watch_follows_the_rules() {
    let p = policy(POLICY);
    assert!(p.reads_namespace_labels());
    let p =
        policy("rules:\n  - name: r\n    namespaces: {names: [a]}\n    dnsNames: {podIP: true}\n");
    assert!(!p.reads_namespace_labels());
    assert!(decide(&p, "a", &[], "s").unwrap().dns_names.pod_ip);
}

#[test]
fn every_mistake_names_its_line() {
    for (yaml, line, says) in [
        (
            "rules:\n  - name: a\n    namespaces: {names: [x]}\n    lifetime: 2d\n",
            4,
            "longer than the signer's --default-lifetime",
        ),
        (
            "rules:\n  - name: a\n    namespaces: {names: [x]}\n  - name: b\n    namespaces: {names: [x]}\n    lifetime: 30m\n",
            6,
            "shorter than the 3600s",
        ),
        (
            "rules:\n  - name: a\n    namespaces: {names: [x]}\n    lifetime: soon\n",
            4,
            "not a duration",
        ),
        (
            "rules:\n  - name: a\n    namespaces: {names: [x]}\n    keyTypes: [DSA]\n",
            4,
            "unknown key type \"DSA\"",
        ),
        (
            "rules:\n  - name: a\n    namespaces: {names: [x]}\n    spiffeIdTemplate: spiffe://{trust_domain}/{namespace}\n",
            4,
            "must use both",
        ),
        (
            "rules:\n  - name: a\n    namespaces: {}\n",
            2,
            "namespaces needs names, a selector or both",
        ),
        (
            "rules:\n  - name: a\n    namespaces: {selector: {matchExpressions: [{key: k, operator: In}]}}\n",
            3,
            "needs at least one value",
        ),
        (
            "rules:\n  - name: a\n    namespaces: {names: [x]}\n  - name: a\n    namespaces: {names: [y]}\n",
            4,
            "another rule has this name",
        ),
        (
            "rules:\n  - name: a\n    namespaces: {names: [x]}\n    dnsNames: {service: true}\n",
            4,
            "service",
        ),
        (
            "rules:\n  - name: a\n    namespace: {names: [x]}\n",
            3,
            "namespace",
        ),
        ("rules: []\n", 1, "no rules"),
    ] {
        let e = IdentityPolicy::parse(yaml, &td(), DAY).unwrap_err();
        assert_eq!(e.line, line, "{yaml}: {e}");
        assert!(e.to_string().contains(says), "{yaml}: {e}");
    }
}

#[test]
fn durations_read_as_written() {
    for (text, secs) in [
        ("3600s", 3600),
        ("90m", 5400),
        ("6h", 21_600),
        ("1d", 86_400),
        ("1h 30m", 5400),
    ] {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_secs(secs)),
            "{text}"
        );
    }
    for text in ["", "6", "h", "6x", "-1h", "99999999999999999999d"] {
        assert!(parse_duration(text).is_err(), "{text}");
    }
}
