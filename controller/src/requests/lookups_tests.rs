//! Tests of the live lookups: namespace labels, the pod, and the Services that select it, as
//! the cache sees them through relists and deletes.

use super::*;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn svc(ns: &str, name: &str, selector: Option<&[(&str, &str)]>) -> Service {
    let mut s = Service::default();
    s.metadata.namespace = Some(ns.into());
    s.metadata.name = Some(name.into());
    s.spec = Some(k8s_openapi::api::core::v1::ServiceSpec {
        selector: selector.map(labels),
        cluster_ip: Some("10.0.0.1".into()),
        ..Default::default()
    });
    s
}

fn selector(svc: &Service) -> Option<Selector> {
    Some(svc.spec.as_ref()?.selector.clone()?.into_iter().collect())
}

fn pairs(p: &[(&str, &str)]) -> Selector {
    labels(p).into_iter().collect()
}

#[test]
fn a_service_selects_a_pod_only_when_every_selector_pair_matches() {
    let pod = labels(&[("app", "api"), ("tier", "web")]);
    assert!(selects(&pairs(&[("app", "api")]), &pod));
    assert!(selects(&pairs(&[("app", "api"), ("tier", "web")]), &pod));
    assert!(!selects(&pairs(&[("app", "api"), ("tier", "db")]), &pod));
    assert!(
        !selects(&pairs(&[]), &pod),
        "an empty selector selects nothing"
    );
}

fn names(index: &Index<Selector>, ns: &str) -> Vec<String> {
    index.read(ns, |m| m.keys().cloned().collect())
}

#[test]
fn the_index_keeps_selectors_by_namespace_and_swaps_a_relist_in_whole() {
    use watcher::Event::*;
    let index = Index::new();
    let mut relisted = None;
    for e in [
        Init,
        InitApply(svc("shop", "api", Some(&[("app", "api")]))),
        InitApply(svc("shop", "manual", None)),
        InitApply(svc("bank", "db", Some(&[("app", "db")]))),
    ] {
        index.apply(e, selector, &mut relisted);
    }
    assert!(
        names(&index, "shop").is_empty(),
        "half a list is never seen"
    );
    index.apply(InitDone, selector, &mut relisted);
    assert_eq!(names(&index, "shop"), ["api"], "no selector, not kept");
    assert_eq!(names(&index, "bank"), ["db"]);
    assert_eq!(
        index.read("shop", |m| m["api"].clone()),
        pairs(&[("app", "api")]),
        "only the selector is kept"
    );
    index.apply(
        Apply(svc("shop", "web", Some(&[("tier", "web")]))),
        selector,
        &mut relisted,
    );
    index.apply(Delete(svc("bank", "db", None)), selector, &mut relisted);
    // A selector removed: the Service selects nothing any more.
    index.apply(Apply(svc("shop", "api", None)), selector, &mut relisted);
    assert_eq!(names(&index, "shop"), ["web"]);
    assert!(names(&index, "bank").is_empty());
    // A relist replaces everything: what it no longer has is gone.
    for e in [
        Init,
        InitApply(svc("bank", "ledger", Some(&[("app", "ledger")]))),
        InitDone,
    ] {
        index.apply(e, selector, &mut relisted);
    }
    assert!(names(&index, "shop").is_empty());
    assert_eq!(names(&index, "bank"), ["ledger"]);
}

/// Every request waiting for the first list goes on the moment it completes: none sleeps
/// until its own timeout (as with kube's `Store::wait_until_ready`, which wakes only the
/// last of several waiters).
#[tokio::test(start_paused = true)]
async fn every_waiter_goes_on_when_the_first_list_completes() {
    let index = Arc::new(Index::<Selector>::new());
    let started = tokio::time::Instant::now();
    let waiters: Vec<_> = (0..16)
        .map(|_| {
            let index = index.clone();
            tokio::spawn(async move { index.synced("Service").await.map(|()| started.elapsed()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut relisted = None;
    for e in [watcher::Event::Init, watcher::Event::InitDone] {
        index.apply::<Service>(e, selector, &mut relisted);
    }
    for w in waiters {
        let waited = w.await.unwrap().expect("synced");
        assert_eq!(waited, Duration::from_millis(100));
    }
}
