//! Kubernetes Events, the one way the controller writes them.
//!
//! Every Event we publish — a denial or a `StillPending` on a request, a rotation step or a
//! lost CA on the CA Secret — goes through [`publish`] with kube's `Recorder`, which turns a
//! recurring Event into a series. Publishing never fails the work it reports on: the caller
//! logs a failure at the level its Event deserves.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

/// Publishes an Event of `type_` about `regarding`.
pub async fn publish(
    recorder: &Recorder,
    regarding: &ObjectReference,
    type_: EventType,
    action: &str,
    reason: &str,
    note: String,
) -> Result<(), kube::Error> {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    recorder.publish(&event, regarding).await
}
