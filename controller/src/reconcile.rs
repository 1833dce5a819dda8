//! The reconciler: one PodCertificateRequest in, at most one status write out.
//!
//! A request that is already terminal is left alone. Otherwise signer-core decides, and the
//! status is written once with `replace_status` carrying the cached `resourceVersion`, so a
//! racing replica gets 409 Conflict instead of issuing twice. 404 (the request was garbage
//! collected) ends quietly; 409 looks again two seconds later, when the cache has caught up. Transient
//! failures — the CA not loaded, an API error — are [`Error`]s: [`error_policy`] retries them
//! and they are never written as `Failed`. Denials are outcomes: a `Denied` condition, a
//! Warning Event, a metric.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use kube::api::PostParams;
use kube::core::ApiResource;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Client, Resource, ResourceExt};
use signer_core::{Decision, IssueError, Signer};
use tracing::{debug, info, instrument, warn};

use crate::metrics::{ErrorLabels, Metrics, OutcomeLabels};
use crate::pcr::{Pcr, is_terminal, status_for, to_request};

/// Everything a reconcile needs, built once and shared.
pub struct Context {
    pub client: Client,
    pub pcr_resource: ApiResource,
    pub signer_name: String,
    /// The current signer; None until the CA is loaded. Swapped when the CA Secret changes.
    pub signer: Arc<RwLock<Option<Signer>>>,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("signer_name", &self.signer_name)
            .finish_non_exhaustive()
    }
}

/// A transient failure; the request is retried and never marked `Failed`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the CA is not loaded yet")]
    CaNotLoaded,
    #[error("cannot issue now: {0}")]
    Issue(#[from] IssueError),
    #[error("writing the status failed: {0}")]
    WriteStatus(#[source] kube::Error),
}

impl Error {
    /// The `error` label of `podcert_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::CaNotLoaded => "ca_not_loaded",
            Error::Issue(_) => "issue",
            Error::WriteStatus(_) => "write_status",
        }
    }
}

#[instrument(skip_all, fields(namespace = pcr.namespace().unwrap_or_default(), pcr = pcr.name_any(), pod = pcr.spec.pod_name))]
pub async fn reconcile(pcr: Arc<Pcr>, ctx: Arc<Context>) -> Result<Action, Error> {
    if is_terminal(&pcr) || pcr.spec.signer_name != ctx.signer_name {
        return Ok(Action::await_change());
    }
    let signer = ctx
        .signer
        .read()
        .expect("signer lock")
        .clone()
        .ok_or(Error::CaNotLoaded)?;
    let now = SystemTime::now();
    let decision = match to_request(&pcr) {
        Ok(request) => signer.decide(&request, now)?,
        Err(denial) => Decision::Deny(denial),
    };
    let status = status_for(&decision, &pcr, now);

    let api: Api<Pcr> = Api::namespaced_with(
        ctx.client.clone(),
        &pcr.namespace().unwrap_or_default(),
        &ctx.pcr_resource,
    );
    let mut updated = (*pcr).clone();
    updated.status = Some(status);
    match api
        .replace_status(&pcr.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {
            debug!("the request was deleted before its status was written");
            return Ok(Action::await_change());
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            // Someone else changed it: usually another replica's status, which the watch
            // brings and the next reconcile sees as terminal. Look again shortly in case the
            // change was something else.
            debug!("the request changed under us; looking again");
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
        Err(e) => return Err(Error::WriteStatus(e)),
    }

    let age = pcr
        .creation_timestamp()
        .map(|t| (k8s_openapi::jiff::Timestamp::now() - t.0).get_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0);
    ctx.metrics.request_age.observe(age.max(0.0));
    match &decision {
        Decision::Issue(i) => {
            ctx.metrics
                .requests
                .get_or_create(&OutcomeLabels {
                    outcome: "issued",
                    key_type: i.key_type.as_str(),
                    reason: "Issued",
                })
                .inc();
            info!(key_type = %i.key_type, spiffe_id = %i.spiffe_id, serial = %i.serial_hex, outcome = "issued", "issued");
        }
        Decision::Deny(d) => {
            ctx.metrics
                .requests
                .get_or_create(&OutcomeLabels {
                    outcome: "denied",
                    key_type: "unknown",
                    reason: d.reason.as_str(),
                })
                .inc();
            info!(reason = %d.reason, message = %d.message, outcome = "denied", "denied");
            let event = Event {
                type_: EventType::Warning,
                reason: d.reason.as_str().into(),
                note: Some(d.message.clone()),
                action: "Sign".into(),
                secondary: None,
            };
            if let Err(e) = ctx
                .recorder
                .publish(&event, &pcr.object_ref(&ctx.pcr_resource))
                .await
            {
                debug!(error = %e, "could not publish the denial Event");
            }
        }
    }
    Ok(Action::await_change())
}

pub fn error_policy(pcr: Arc<Pcr>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels {
            error: error.metric_label(),
        })
        .inc();
    warn!(namespace = pcr.namespace().unwrap_or_default(), pcr = pcr.name_any(), %error, "will retry");
    Action::requeue(match error {
        Error::CaNotLoaded => Duration::from_secs(1),
        _ => Duration::from_secs(3),
    })
}
