//! The requests' metrics: decisions by outcome, key type and reason, their latency, the
//! backlog the leader reports, stranded requests nudged, requests unreadable through the
//! served version, and the transient errors of reconciling — recorded through the methods
//! below (docs/operations.md describes each).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::runtime::metrics::{Errors, IntGauge, Registrar};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
    key_type: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// What the request controller records.
#[derive(Debug, Clone)]
pub struct RequestMetrics {
    decisions: Family<OutcomeLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    pending: IntGauge,
    oldest_pending: IntGauge,
    stranded: Counter,
    unreadable: Family<ReasonLabels, Counter>,
    errors: Errors,
}

fn latency_family() -> Family<LatencyLabels, Histogram> {
    // creationTimestamp has whole-second resolution; buckets from 0.25 s to ~17 min.
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.25, 2.0, 13)))
}

impl Default for RequestMetrics {
    /// Unregistered (for unit tests): records, serves nowhere.
    fn default() -> Self {
        RequestMetrics {
            decisions: Family::default(),
            latency: latency_family(),
            pending: IntGauge::default(),
            oldest_pending: IntGauge::default(),
            stranded: Counter::default(),
            unreadable: Family::default(),
            errors: Errors::default(),
        }
    }
}

impl RequestMetrics {
    /// Registers the requests' metrics; `errors` is the process's transient-error counter.
    pub fn register(r: &mut Registrar, errors: Errors) -> Self {
        RequestMetrics {
            decisions: r.add(
                "requests",
                "Status writes that landed, by outcome",
                Family::default(),
            ),
            latency: r.add(
                "request_latency_seconds",
                "From the request's creationTimestamp to its status write landing, by outcome",
                latency_family(),
            ),
            pending: r.add(
                "pending_requests",
                "Requests for this signer waiting for a status (reported by the leader)",
                IntGauge::default(),
            ),
            oldest_pending: r.add(
                "oldest_pending_request_seconds",
                "Age of the oldest request waiting for a status (reported by the leader)",
                IntGauge::default(),
            ),
            stranded: r.add(
                "stranded_requests",
                "Waiting requests reconciled again because nothing had for 15 s (a missed event or wake-up)",
                Counter::default(),
            ),
            unreadable: r.add(
                "unreadable_requests",
                "Requests left pending because the served API version lacks their key material",
                Family::default(),
            ),
            errors,
        }
    }

    /// A status write landed: `outcome` (issued, denied) for a key of `key_type` (`unknown`
    /// when it could not be read), with the condition's `reason`, `age_seconds` after the
    /// request was created.
    pub fn decided(
        &self,
        outcome: &'static str,
        key_type: &'static str,
        reason: &'static str,
        age_seconds: f64,
    ) {
        self.latency
            .get_or_create(&LatencyLabels { outcome })
            .observe(age_seconds.max(0.0));
        self.decisions
            .get_or_create(&OutcomeLabels {
                outcome,
                key_type,
                reason,
            })
            .inc();
    }

    /// The leader's look at the backlog: how many wait, and the oldest's age.
    pub fn backlog(&self, waiting: i64, oldest_seconds: i64) {
        self.pending.set(waiting);
        self.oldest_pending.set(oldest_seconds);
    }

    /// A waiting request nothing had reconciled for a while was nudged.
    pub fn stranded(&self) {
        self.stranded.inc();
    }

    /// A request left pending because the served version lacks its key material.
    pub fn unreadable(&self, reason: &'static str) {
        self.unreadable
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// A transient failure of reconciling, of `kind` (see [`Errors`]).
    pub fn error(&self, kind: &'static str) {
        self.errors.count(kind);
    }

    #[cfg(test)]
    pub fn error_count(&self, kind: &'static str) -> u64 {
        self.errors.counted(kind)
    }

    #[cfg(test)]
    pub fn unreadable_count(&self, reason: &'static str) -> u64 {
        self.unreadable
            .get_or_create(&ReasonLabels { reason })
            .get()
    }
}
