//! The leader's cache holds only the requests still waiting for a decision, slimmed.
//!
//! A real API server keeps every request for about 30 minutes, so a large cluster has tens
//! of thousands of them, nearly all decided. None of those needs anything from us again, so
//! [`watch`] keeps them out of the cache: a request seen with a terminal status (ours, or
//! another replica's) is removed from the cache as if deleted, and one already decided when
//! listed is never stored. A waiting request is stored without `managedFields` and
//! annotations, which the reconciler never reads. Only waiting requests trigger reconciles,
//! so the watch event our own status write causes costs one parse and one removal, and
//! memory follows the backlog rather than the number of requests the API server keeps.
//! Everything that reads the cache — the reconciler, the backoff's garbage collection
//! ([`crate::requests::reconcile::Context`]) and [`crate::requests::backlog`] — asks only about waiting requests.

use futures::{Stream, StreamExt, future};
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, Event};

use crate::requests::pcr::{Pcr, PcrVersion, is_terminal};

/// Objects per page of a cache's initial (and any re-) list — requests here, Services and
/// namespaces in `placement`. kube's default is 500: a page is read whole and then parsed,
/// so a smaller one keeps the transient memory of listing tens of thousands of objects
/// small, at the price of more round trips (measured in docs/performance.md: a list of 5,000
/// Services peaks 5 MiB lower).
pub const LIST_PAGE: u32 = 100;

/// Watches `signer_name`'s requests through `api`: the cache of waiting requests, and its
/// events once applied to it (what [`crate::requests::runner`] runs from; the cache is kept
/// only while they are read). A failed watch is retried with kube's default backoff (0.8 s
/// doubling to 30 s, jittered), its error passed on.
pub fn watch(
    api: Api<Pcr>,
    version: PcrVersion,
    signer_name: &str,
) -> (
    Store<Pcr>,
    impl Stream<Item = Result<Event<Pcr>, watcher::Error>> + Send + 'static,
) {
    let config = watcher::Config::default()
        .fields(&format!("spec.signerName={signer_name}"))
        .page_size(LIST_PAGE);
    let writer = reflector::store::Writer::new(version);
    let cache = writer.as_reader();
    let events = watcher::watcher(api, config).filter_map(|event| future::ready(keep(event)));
    let applied = reflector::reflector(writer, events).default_backoff();
    (cache, applied)
}

/// What the cache does with one watch event: decided requests leave it (or never enter), and
/// waiting ones enter slimmed. Errors pass through to the watch's backoff.
fn keep(event: Result<Event<Pcr>, watcher::Error>) -> Option<Result<Event<Pcr>, watcher::Error>> {
    let event = match event {
        Ok(event) => event,
        Err(e) => return Some(Err(e)),
    };
    Some(Ok(match event {
        Event::Apply(pcr) if is_terminal(&pcr) => Event::Delete(pcr),
        Event::InitApply(pcr) if is_terminal(&pcr) => return None,
        Event::Apply(pcr) => Event::Apply(slim(pcr)),
        Event::InitApply(pcr) => Event::InitApply(slim(pcr)),
        other => other,
    }))
}

/// A waiting request as the reconciler needs it.
fn slim(mut pcr: Pcr) -> Pcr {
    pcr.metadata.managed_fields = None;
    pcr.metadata.annotations = None;
    pcr
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ManagedFieldsEntry, Time};
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::requests::pcr::tests_support;

    fn waiting(name: &str) -> Pcr {
        let mut pcr = tests_support::pcr(name);
        pcr.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubelet".into()),
            ..Default::default()
        }]);
        pcr.metadata.annotations = Some(
            [(
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            )]
            .into(),
        );
        pcr
    }

    fn decided(name: &str, type_: &str) -> Pcr {
        let mut pcr = waiting(name);
        pcr.status = Some(
            k8s_openapi::api::certificates::v1beta1::PodCertificateRequestStatus {
                conditions: Some(vec![Condition {
                    type_: type_.into(),
                    status: "True".into(),
                    reason: type_.into(),
                    message: String::new(),
                    last_transition_time: Time(Timestamp::now()),
                    observed_generation: None,
                }]),
                ..Default::default()
            },
        );
        pcr
    }

    fn kept(event: Event<Pcr>) -> Option<Event<Pcr>> {
        keep(Ok(event)).map(Result::unwrap)
    }

    #[test]
    fn a_waiting_request_is_cached_without_managed_fields_or_annotations() {
        for event in [Event::Apply(waiting("a")), Event::InitApply(waiting("a"))] {
            let (Some(Event::Apply(pcr)) | Some(Event::InitApply(pcr))) = kept(event) else {
                panic!("a waiting request must be kept");
            };
            assert_eq!(pcr.metadata.managed_fields, None);
            assert_eq!(pcr.metadata.annotations, None);
            assert_eq!(
                pcr.spec,
                waiting("a").spec,
                "the spec is what the reconciler reads"
            );
        }
    }

    #[test]
    fn a_request_decided_while_watched_leaves_the_cache() {
        for type_ in ["Issued", "Denied", "Failed"] {
            let Some(Event::Delete(pcr)) = kept(Event::Apply(decided("a", type_))) else {
                panic!("a {type_} request must leave the cache");
            };
            assert_eq!(pcr.metadata.name.as_deref(), Some("a"));
        }
    }

    #[test]
    fn a_request_decided_before_the_list_is_never_cached() {
        assert!(kept(Event::InitApply(decided("a", "Issued"))).is_none());
        assert!(matches!(kept(Event::Init), Some(Event::Init)));
        assert!(matches!(kept(Event::InitDone), Some(Event::InitDone)));
    }

    #[test]
    fn a_condition_that_is_not_true_leaves_the_request_waiting() {
        let mut pcr = decided("a", "Issued");
        pcr.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        assert!(matches!(kept(Event::Apply(pcr)), Some(Event::Apply(_))));
    }
}
