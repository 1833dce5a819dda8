//! Tests of SPIFFE identities: trust domains, SPIFFE IDs and the identity template.

use super::*;

fn td() -> TrustDomain {
    TrustDomain::new("cluster.local").unwrap()
}

#[test]
fn default_template_renders_the_kubernetes_convention() {
    let t = SpiffeIdTemplate::new(SpiffeIdTemplate::DEFAULT, &td()).unwrap();
    assert_eq!(
        t.render("default", "web").unwrap().as_str(),
        "spiffe://cluster.local/ns/default/sa/web"
    );
}

#[test]
fn names_that_would_change_the_path_are_refused() {
    let t = SpiffeIdTemplate::new(SpiffeIdTemplate::DEFAULT, &td()).unwrap();
    for (ns, sa) in [
        ("a/b", "x"),
        ("x", "a/../b"),
        ("", "x"),
        ("x", ""),
        ("X", "x"),
        ("x", "a..b"),
        ("x", "."),
    ] {
        assert!(t.render(ns, sa).is_err(), "{ns:?} {sa:?}");
    }
    assert!(t.render("x", "a.b-c").is_ok());
}

#[test]
fn trust_domain_rules() {
    for bad in ["", "Example.org", "a/b", "a:1", "é.org"] {
        assert!(TrustDomain::new(bad).is_err(), "{bad}");
    }
    assert!(TrustDomain::new(&"a".repeat(256)).is_err());
    assert!(TrustDomain::new("prod_1.example-org").is_ok());
}

#[test]
fn spiffe_id_rules() {
    for bad in [
        "spiffe://td/",
        "spiffe://td//a",
        "spiffe://td/a/./b",
        "spiffe://td/a/..",
        "spiffe://td/a%20b",
        "spiffe://td/a?q",
        "spiffe://td/a#f",
        "spiffe://TD/a",
        "https://td/a",
        "spiffe://",
    ] {
        assert!(SpiffeId::parse(bad).is_err(), "{bad}");
    }
    assert!(SpiffeId::parse(&format!("spiffe://td/{}", "a".repeat(2040))).is_err());
    assert!(SpiffeId::parse("spiffe://td").is_ok());
    assert!(SpiffeId::parse("spiffe://td/Ns/a.b_c-d").is_ok());
}

#[test]
fn templates_are_checked_at_configuration_time() {
    for bad in [
        "spiffe://other.org/ns/{namespace}/sa/{service_account}",
        "spiffe://{trust_domain}",
        "spiffe://{trust_domain}/sa/{service_account}",
        "spiffe://{trust_domain}/ns/{namespace}",
        "spiffe://{trust_domain}/ns/{namespace}/sa/{pod}",
        "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account",
        "spiffe://{trust_domain}/ns/{namespace}//sa/{service_account}",
        "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}/",
        "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}?x",
        "spiffe://{trust_domain}/ns/{namespace}/}/{service_account}",
    ] {
        assert!(SpiffeIdTemplate::new(bad, &td()).is_err(), "{bad}");
    }
    let t = SpiffeIdTemplate::new(
        "spiffe://{trust_domain}/k8s/{namespace}_{service_account}",
        &td(),
    )
    .unwrap();
    assert_eq!(
        t.render("a", "b").unwrap().as_str(),
        "spiffe://cluster.local/k8s/a_b"
    );
}

/// `{namespace}-{service_account}` renders (a-b, c) and (a, b-c) alike: refused.
#[test]
fn templates_whose_renderings_can_collide_are_refused() {
    for bad in [
        "spiffe://{trust_domain}/{namespace}-{service_account}",
        "spiffe://{trust_domain}/{namespace}.{service_account}",
        "spiffe://{trust_domain}/{namespace}{service_account}",
        "spiffe://{trust_domain}/{service_account}-x-{namespace}",
        "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}.{namespace}",
    ] {
        let e = SpiffeIdTemplate::new(bad, &td()).unwrap_err();
        assert!(e.to_string().contains("ambiguous"), "{bad}: {e}");
    }
    for good in [
        SpiffeIdTemplate::DEFAULT,
        "spiffe://{trust_domain}/{namespace}/{service_account}",
        "spiffe://{trust_domain}/{namespace}_{service_account}",
        "spiffe://{trust_domain}/{service_account}-X-{namespace}",
        "spiffe://{trust_domain}/{namespace}/{service_account}/{namespace}",
    ] {
        assert!(SpiffeIdTemplate::new(good, &td()).is_ok(), "{good}");
    }
}
