//! Requests still waiting: how many, how old the oldest, a word on each that waits too long,
//! and a second chance for any that nothing brings back.
//!
//! The leader's term runs [`watch`]: every [`EVERY`] it reads the request cache, sets
//! `podcert_pending_requests` and `podcert_oldest_pending_request_seconds`, and puts a Warning
//! Event `StillPending` on each request still without a status after
//! `--pending-warning-after` — once per request per term, at most [`MAX_EVENTS_PER_LOOK`] at a
//! time — saying whether the signer is retrying it after errors or has not reached it yet. That is what `kubectl describe
//! podcertificaterequest` and `podcert-signer status` show an operator whose pod waits. Both
//! gauges drop to 0 when the term ends: only a leader knows.
//!
//! The safety net: a request the cache holds but nothing will reconcile — its watch event's
//! trigger lost, or a wake-up missed, with the real API server's next event a minute away —
//! would wait indefinitely. So a request waiting [`STRANDED_AFTER`] with no backoff pending
//! and not left waiting on purpose is reconciled again ([`stranded`]), at most once per
//! [`STRANDED_AFTER`], counted in `podcert_stranded_requests_total` (0 in a healthy signer; a nudge for a request
//! already queued is merged into it by the runner).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::requests::reconcile::{Context, RequestKey, publish};
use crate::runtime::supervisor::Ticks;

/// How often the cache is read.
pub const EVERY: Duration = Duration::from_secs(2);

/// At most this many `StillPending` Events per look: a signer far behind is already loading
/// the API server, and the rest are warned about at the next looks.
pub const MAX_EVENTS_PER_LOOK: usize = 10;

/// How long a request waits, with nothing bringing it back, before it is reconciled again.
pub const STRANDED_AFTER: Duration = Duration::from_secs(15);

/// At most this many requests reconciled again per look.
pub const MAX_NUDGES_PER_LOOK: usize = 100;

/// One look's memory: the requests warned about, and when each was last reconciled again.
#[derive(Debug, Default)]
struct Looked {
    warned: HashSet<String>,
    nudged: HashMap<RequestKey, Instant>,
}

/// The waiting requests (key, age) to reconcile again at `now`: waiting at least
/// [`STRANDED_AFTER`], not in a backoff (`failing`) nor left waiting on purpose (`parked`),
/// and not reconciled again within [`STRANDED_AFTER`]; at most [`MAX_NUDGES_PER_LOOK`].
pub fn stranded(
    waiting: impl IntoIterator<Item = (RequestKey, Duration)>,
    failing: impl Fn(&RequestKey) -> bool,
    parked: impl Fn(&RequestKey) -> bool,
    nudged: &HashMap<RequestKey, Instant>,
    now: Instant,
) -> Vec<RequestKey> {
    waiting
        .into_iter()
        .filter(|(key, age)| {
            *age >= STRANDED_AFTER
                && !failing(key)
                && !parked(key)
                && nudged
                    .get(key)
                    .is_none_or(|at| now.duration_since(*at) >= STRANDED_AFTER)
        })
        .map(|(key, _)| key)
        .take(MAX_NUDGES_PER_LOOK)
        .collect()
}
/// Runs until `token` is cancelled.
pub async fn watch(ctx: Arc<Context>, warn_after: Duration, token: CancellationToken) {
    let mut looked = Looked::default();
    let mut ticks = Ticks::every(EVERY);
    while ticks.next(&token).await {
        // Publishing may wait on a slow API server: the term's end must not.
        if token
            .run_until_cancelled(look(&ctx, warn_after, &mut looked))
            .await
            .is_none()
        {
            break;
        }
    }
    ctx.metrics.backlog(0, 0);
}

/// One look at the cache: the gauges, an Event for each request newly waiting too long, and
/// the stranded ones reconciled again.
async fn look(ctx: &Context, warn_after: Duration, looked: &mut Looked) {
    let Looked { warned, nudged } = looked;
    let now = Timestamp::now();
    let mut waiting = 0;
    let mut oldest = Duration::ZERO;
    let mut overdue = Vec::new();
    let mut seen = HashSet::new();
    let mut ages = Vec::new();
    for pcr in ctx.cache.state() {
        // The cache holds only waiting requests, all this signer's (crate::requests::cache).
        waiting += 1;
        let age = pcr
            .creation_timestamp()
            .and_then(|t| Duration::try_from(now - t.0).ok())
            .unwrap_or_default();
        oldest = oldest.max(age);
        ages.push((Context::key(&pcr), age));
        let uid = pcr.uid().unwrap_or_default();
        if age >= warn_after && !warned.contains(&uid) && overdue.len() < MAX_EVENTS_PER_LOOK {
            overdue.push((pcr, age));
        }
        seen.insert(uid);
    }
    ctx.metrics
        .backlog(waiting, i64::try_from(oldest.as_secs()).unwrap_or(i64::MAX));
    // Requests that were answered or deleted are forgotten.
    warned.retain(|uid| seen.contains(uid));
    let waiting_keys: HashSet<&RequestKey> = ages.iter().map(|(k, _)| k).collect();
    nudged.retain(|key, _| waiting_keys.contains(key));
    {
        let mut parked = ctx.parked.lock().unwrap_or_else(|e| e.into_inner());
        parked.retain(|key| waiting_keys.contains(key));
        let now = Instant::now();
        let again = stranded(
            ages.iter().cloned(),
            |k| ctx.failures.contains(k),
            |k| parked.contains(k),
            nudged,
            now,
        );
        for key in again {
            let (namespace, name, _) = &key;
            debug!(%namespace, pcr = %name, "nothing reconciled this waiting request for a while; reconciling it again");
            let _ = ctx.nudge.unbounded_send(
                kube::runtime::reflector::ObjectRef::new_with(name, ctx.pcr_version)
                    .within(namespace),
            );
            ctx.metrics.stranded();
            nudged.insert(key, now);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> RequestKey {
        ("shop".into(), name.into(), format!("uid-{name}"))
    }

    const LONG: Duration = STRANDED_AFTER;
    const SHORT: Duration = Duration::from_secs(1);

    #[test]
    fn a_request_waiting_long_with_nothing_to_bring_it_back_is_reconciled_again() {
        let now = Instant::now();
        let waiting = [(key("old"), LONG), (key("young"), SHORT)];
        let again = stranded(waiting, |_| false, |_| false, &HashMap::new(), now);
        assert_eq!(again, [key("old")]);
    }

    #[test]
    fn not_one_in_a_backoff_nor_one_left_waiting_on_purpose() {
        let now = Instant::now();
        let waiting = [
            (key("failing"), LONG),
            (key("parked"), LONG),
            (key("lost"), LONG),
        ];
        let again = stranded(
            waiting,
            |k| k.1 == "failing",
            |k| k.1 == "parked",
            &HashMap::new(),
            now,
        );
        assert_eq!(again, [key("lost")]);
    }

    #[test]
    fn at_most_once_per_period_each_and_a_bounded_number_per_look() {
        let now = Instant::now();
        let mut nudged = HashMap::new();
        nudged.insert(key("just"), now - SHORT);
        nudged.insert(key("long-ago"), now - LONG);
        let waiting = [(key("just"), LONG * 3), (key("long-ago"), LONG * 3)];
        assert_eq!(
            stranded(waiting, |_| false, |_| false, &nudged, now),
            [key("long-ago")]
        );
        let many = (0..MAX_NUDGES_PER_LOOK + 50).map(|i| (key(&i.to_string()), LONG));
        let again = stranded(many, |_| false, |_| false, &HashMap::new(), now);
        assert_eq!(again.len(), MAX_NUDGES_PER_LOOK);
    }
}
