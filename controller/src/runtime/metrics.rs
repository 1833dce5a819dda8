//! Prometheus metrics: the registry every part registers its own metrics in, and the
//! exposition the admin server serves at `/metrics` (OpenMetrics text).
//!
//! A metric belongs to the part that records it — the requests' in `requests::metrics`, the
//! CA's in `ca::metrics`, federation's, the identity policy's, the leader gauge — and is
//! recorded through that part's methods, never through label sets built at call sites. Each
//! part registers itself through a [`Registrar`] when the process starts (`crate::Metrics`);
//! what every part shares lives here: the counter of transient errors ([`Errors`]) and the
//! supervised tasks' failures ([`Tasks`]). docs/operations.md lists every metric, and a test
//! holds the page to the registry.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
#[cfg(test)]
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::TypedMetric;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

/// A gauge of whole numbers (counts, Unix seconds, 0/1 flags).
pub type IntGauge = Gauge<i64, AtomicI64>;

/// Where the parts register their metrics at start, under the `podcert_` prefix.
#[derive(Debug)]
pub struct Registrar {
    registry: Registry,
    /// Names and types as registered, for the test that holds docs/operations.md to them.
    #[cfg(test)]
    registered: Vec<(String, &'static str)>,
}

impl Default for Registrar {
    fn default() -> Self {
        Registrar {
            registry: Registry::with_prefix("podcert"),
            #[cfg(test)]
            registered: Vec::new(),
        }
    }
}

impl Registrar {
    /// Registers `metric` as `podcert_<name>` and hands it back to the part that records it.
    pub fn add<M: Metric + TypedMetric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        #[cfg(test)]
        {
            let kind = M::TYPE;
            let suffix = if matches!(kind, MetricType::Counter) {
                "_total"
            } else {
                ""
            };
            self.registered
                .push((format!("podcert_{name}{suffix}"), kind.as_str_static()));
        }
        self.registry.register(name, help, metric.clone());
        metric
    }

    /// The registry, complete, as the admin server serves it.
    pub fn finish(self) -> Exposition {
        Exposition {
            registry: self.registry,
            #[cfg(test)]
            registered: self.registered,
        }
    }
}

/// The `type` name of a metric kind, as the exposition writes it.
#[cfg(test)]
trait StaticName {
    fn as_str_static(&self) -> &'static str;
}

#[cfg(test)]
impl StaticName for MetricType {
    fn as_str_static(&self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Info => "info",
            _ => "unknown",
        }
    }
}

/// Every registered metric, ready to serve.
#[derive(Debug)]
pub struct Exposition {
    registry: Registry,
    #[cfg(test)]
    registered: Vec<(String, &'static str)>,
}

impl Exposition {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    /// Every metric as a query names it (`_total` on counters) with its type.
    #[cfg(test)]
    pub fn registered(&self) -> &[(String, &'static str)] {
        &self.registered
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: &'static str,
}

/// Transient failures, retried, by kind: `podcert_reconcile_errors_total{error}`. Every kind
/// has a series from the start, so rates and alerts see a zero, not nothing.
#[derive(Debug, Clone, Default)]
pub struct Errors(Family<ErrorLabels, Counter>);

impl Errors {
    /// A status write or issuance failed for a reason the next try may not have.
    pub const ISSUE: &'static str = "issue";
    pub const WRITE_STATUS: &'static str = "write_status";
    /// A status write refused for want of `sign`.
    pub const SIGN_FORBIDDEN: &'static str = "sign_forbidden";
    /// What the identity policy needs could not be read yet.
    pub const LOOKUP: &'static str = "lookup";
    /// The trust bundle could not be published for want of `attest` (nothing is signed then).
    pub const ATTEST_FORBIDDEN: &'static str = "attest_forbidden";
    /// A signed leaf was not what was decided (signer-core's self-check): a bug, never
    /// written.
    pub const SELF_CHECK: &'static str = "self_check";
    /// A reconcile panicked (a bug): that request is retried, the others go on.
    pub const PANIC: &'static str = "panic";
    const ALL: [&'static str; 7] = [
        Self::ISSUE,
        Self::WRITE_STATUS,
        Self::SIGN_FORBIDDEN,
        Self::LOOKUP,
        Self::ATTEST_FORBIDDEN,
        Self::SELF_CHECK,
        Self::PANIC,
    ];

    pub fn register(r: &mut Registrar) -> Self {
        let errors = Errors::default();
        for error in Self::ALL {
            let _ = errors.0.get_or_create(&ErrorLabels { error });
        }
        r.add(
            "reconcile_errors",
            "Transient failures, retried, by kind",
            errors.0.clone(),
        );
        errors
    }

    /// One failure of `kind` (one of the constants above).
    pub fn count(&self, kind: &'static str) {
        self.0.get_or_create(&ErrorLabels { error: kind }).inc();
    }

    #[cfg(test)]
    pub fn counted(&self, kind: &'static str) -> u64 {
        self.0.get_or_create(&ErrorLabels { error: kind }).get()
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    group: &'static str,
    task: &'static str,
}

/// Supervised tasks that ended unexpectedly or panicked:
/// `podcert_task_failures_total{group,task}`.
#[derive(Debug, Clone, Default)]
pub struct Tasks(Family<TaskLabels, Counter>);

impl Tasks {
    pub fn register(r: &mut Registrar) -> Self {
        Tasks(r.add(
            "task_failures",
            "Supervised tasks that ended unexpectedly or panicked",
            Family::default(),
        ))
    }

    /// The task `task` of the group `group` (process, term) failed.
    pub fn failed(&self, group: &'static str, task: &'static str) {
        self.0.get_or_create(&TaskLabels { group, task }).inc();
    }

    #[cfg(test)]
    pub fn get(&self, group: &'static str, task: &'static str) -> u64 {
        self.0.get_or_create(&TaskLabels { group, task }).get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_are_exposed_under_their_names_with_zeroes_for_every_error() {
        let mut r = Registrar::default();
        let errors = Errors::register(&mut r);
        let tasks = Tasks::register(&mut r);
        errors.count(Errors::WRITE_STATUS);
        tasks.failed("term", "ca");
        let exposition = r.finish();
        let text = exposition.encode();
        for line in [
            "podcert_reconcile_errors_total{error=\"sign_forbidden\"} 0",
            "podcert_reconcile_errors_total{error=\"write_status\"} 1",
            "podcert_task_failures_total{group=\"term\",task=\"ca\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert_eq!(
            exposition.registered(),
            [
                ("podcert_reconcile_errors_total".to_string(), "counter"),
                ("podcert_task_failures_total".to_string(), "counter"),
            ]
        );
    }
}
