//! Requests still waiting: how many, how old the oldest, and a word on each that waits too long.
//!
//! The leader's term runs [`watch`]: every [`EVERY`] it reads the request cache, sets
//! `podcert_pending_requests` and `podcert_oldest_pending_request_seconds`, and puts a Warning
//! Event `StillPending` on each request still without a status after
//! `--pending-warning-after` — once per request per term, at most [`MAX_EVENTS_PER_LOOK`] at a
//! time — saying whether the signer is retrying it after errors or has not reached it yet. That is what `kubectl describe
//! podcertificaterequest` and `podcert-signer status` show an operator whose pod waits. Both
//! gauges drop to 0 when the term ends: only a leader knows.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tokio_util::sync::CancellationToken;

use crate::reconcile::{Context, publish};
use crate::supervisor::Ticks;

/// How often the cache is read.
pub const EVERY: Duration = Duration::from_secs(2);

/// At most this many `StillPending` Events per look: a signer far behind is already loading
/// the API server, and the rest are warned about at the next looks.
pub const MAX_EVENTS_PER_LOOK: usize = 10;

/// Runs until `token` is cancelled.
pub async fn watch(ctx: Arc<Context>, warn_after: Duration, token: CancellationToken) {
    let mut warned = HashSet::new();
    let mut ticks = Ticks::every(EVERY);
    while ticks.next(&token).await {
        // Publishing may wait on a slow API server: the term's end must not.
        if token
            .run_until_cancelled(look(&ctx, warn_after, &mut warned))
            .await
            .is_none()
        {
            break;
        }
    }
    ctx.metrics.pending.set(0);
    ctx.metrics.oldest_pending.set(0);
}

/// One look at the cache: the gauges, and an Event for each request newly waiting too long.
async fn look(ctx: &Context, warn_after: Duration, warned: &mut HashSet<String>) {
    let now = Timestamp::now();
    let mut waiting = 0;
    let mut oldest = Duration::ZERO;
    let mut overdue = Vec::new();
    let mut seen = HashSet::new();
    for pcr in ctx.cache.state() {
        // The cache holds only waiting requests, all this signer's (crate::waiting).
        waiting += 1;
        let age = pcr
            .creation_timestamp()
            .and_then(|t| Duration::try_from(now - t.0).ok())
            .unwrap_or_default();
        oldest = oldest.max(age);
        let uid = pcr.uid().unwrap_or_default();
        if age >= warn_after && !warned.contains(&uid) && overdue.len() < MAX_EVENTS_PER_LOOK {
            overdue.push((pcr, age));
        }
        seen.insert(uid);
    }
    ctx.metrics.pending.set(waiting);
    ctx.metrics
        .oldest_pending
        .set(i64::try_from(oldest.as_secs()).unwrap_or(i64::MAX));
    // Requests that were answered or deleted are forgotten.
    warned.retain(|uid| seen.contains(uid));
    for (pcr, age) in overdue {
        let why = if ctx.failures.contains(&Context::key(&pcr)) {
            "the signer is retrying it after transient errors (see podcert_reconcile_errors_total and the signer's log)"
        } else {
            "the leader has it queued but has not decided it yet (a backlog: see podcert_pending_requests)"
        };
        let note = format!("no status after {}s: {why}", age.as_secs());
        publish(ctx, &pcr, EventType::Warning, "StillPending", note).await;
        warned.insert(pcr.uid().unwrap_or_default());
    }
}
