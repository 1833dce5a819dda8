//! Prometheus metrics, served on the admin port at `/metrics` (OpenMetrics text).
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `podcert_requests_total` | `outcome` (issued, denied), `key_type`, `reason` | status writes that landed; `key_type` is the requested key's type, for denials too (`unknown` only when the key cannot be read) |
//! | `podcert_request_latency_seconds` | `outcome` | from the PCR's creationTimestamp to our status write landing |
//! | `podcert_pending_requests` | | requests for our signer still waiting for a status (leader only; 0 elsewhere) |
//! | `podcert_oldest_pending_request_seconds` | | age of the oldest of them (0 when none waits) |
//! | `podcert_reconcile_errors_total` | `error` (issue, write_status, sign_forbidden, lookup, attest_forbidden) | transient failures, retried; `sign_forbidden`: status writes refused for lack of the `sign` grant; `attest_forbidden`: the trust bundle's publication refused for lack of the `attest` grant (nothing is signed until it is published); `lookup`: what the identity policy needs could not be read yet (the namespace, the pod, a Service that selects it) |
//! | `podcert_ca_not_after_seconds` | `role` (root, next_root, intermediate) | each CA's notAfter, Unix seconds: the active root, the root prepared to replace it (during a rotation), the signing intermediate (on the leader) |
//! | `podcert_ca_rotations_total` | `role` (root, intermediate) | roots activated and intermediates made by this process |
//! | `podcert_leader` | | 1 while this replica holds the Lease |
//! | `podcert_ca_loaded` | | 1 while this process holds a usable CA |
//! | `podcert_ca_secret_usable` | | 1 while the CA Secret holds a usable CA (0: missing or unusable) |
//! | `podcert_stranded_requests_total` | | waiting requests reconciled again because nothing had for 15 s (a missed event or wake-up; 0 in a healthy signer) |
//! | `podcert_unreadable_requests_total` | `reason` (KeyMaterialNotServed) | requests left pending because the served version lacks their key material |
//! | `podcert_identity_policy_loaded` | | with `--identity-policy`: 1 while the policy in use is the file's current content, 0 after a reload failed (the last good policy stays in use) |
//! | `podcert_identity_policy_reloads_total` | `result` (ok, error) | reloads of the identity policy file after it changed |
//! | `podcert_federation_fetches_total` | `trust_domain`, `result` (ok, connect, tls, http, timeout, bundle, publish) | fetches of a federated domain's bundle (leader only); anything but `ok` kept the last good bundle |
//! | `podcert_federation_bundle_current` | `trust_domain` | 1 while the last fetch of the domain's bundle succeeded and is published; 0 while the last good one is kept after a failure |
//! | `podcert_federation_bundle_updated_seconds` | `trust_domain` | Unix time of the last successful fetch (alert on `time() - …` above a few refresh hints) |
//! | `podcert_task_failures_total` | `group` (process, term), `task` | supervised tasks that ended unexpectedly or panicked |

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
    pub key_type: &'static str,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: &'static str,
}

impl ErrorLabels {
    pub const ISSUE: &'static str = "issue";
    pub const WRITE_STATUS: &'static str = "write_status";
    pub const SIGN_FORBIDDEN: &'static str = "sign_forbidden";
    pub const LOOKUP: &'static str = "lookup";
    /// The trust bundle could not be published for want of `attest` (nothing is signed then).
    pub const ATTEST_FORBIDDEN: &'static str = "attest_forbidden";
    /// Every `error` label value ([`crate::requests::reconcile::Error::metric_label`] names the first
    /// four; the trust bundle's refusals the last).
    pub const ALL: [&'static str; 5] = [
        Self::ISSUE,
        Self::WRITE_STATUS,
        Self::SIGN_FORBIDDEN,
        Self::LOOKUP,
        Self::ATTEST_FORBIDDEN,
    ];
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

impl ResultLabels {
    pub const OK: ResultLabels = ResultLabels { result: "ok" };
    pub const ERROR: ResultLabels = ResultLabels { result: "error" };
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    pub role: &'static str,
}

impl RoleLabels {
    pub const ROOT: RoleLabels = RoleLabels { role: "root" };
    pub const NEXT_ROOT: RoleLabels = RoleLabels { role: "next_root" };
    pub const INTERMEDIATE: RoleLabels = RoleLabels {
        role: "intermediate",
    };
}

/// One federated trust domain.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DomainLabels {
    pub trust_domain: String,
}

impl DomainLabels {
    pub fn new(trust_domain: &signer_core::TrustDomain) -> Self {
        DomainLabels {
            trust_domain: trust_domain.as_str().to_owned(),
        }
    }

    /// The labels of one fetch's result.
    pub fn result(&self, result: &'static str) -> FetchLabels {
        FetchLabels {
            trust_domain: self.trust_domain.clone(),
            result,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    pub trust_domain: String,
    pub result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub group: &'static str,
    pub task: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<OutcomeLabels, Counter>,
    pub request_latency: Family<LatencyLabels, Histogram>,
    pub pending: Gauge<i64, AtomicI64>,
    pub oldest_pending: Gauge<i64, AtomicI64>,
    pub stranded: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub ca_not_after: Family<RoleLabels, Gauge<i64, AtomicI64>>,
    pub ca_rotations: Family<RoleLabels, Counter>,
    pub leader: Gauge<i64, AtomicI64>,
    pub ca_loaded: Gauge<i64, AtomicI64>,
    pub ca_secret_usable: Gauge<i64, AtomicI64>,
    pub task_failures: Family<TaskLabels, Counter>,
    pub unreadable: Family<ReasonLabels, Counter>,
    pub identity_policy_loaded: Gauge<i64, AtomicI64>,
    pub identity_policy_reloads: Family<ResultLabels, Counter>,
    pub federation_fetches: Family<FetchLabels, Counter>,
    pub federation_current: Family<DomainLabels, Gauge<i64, AtomicI64>>,
    pub federation_updated: Family<DomainLabels, Gauge<i64, AtomicI64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("podcert");
        let requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "requests",
            "Status writes that landed, by outcome",
            requests.clone(),
        );
        // creationTimestamp has whole-second resolution; buckets from 0.25 s to ~17 min.
        let request_latency =
            Family::<LatencyLabels, Histogram>::new_with_constructor(|| -> Histogram {
                Histogram::new(exponential_buckets(0.25, 2.0, 13))
            });
        registry.register(
            "request_latency_seconds",
            "From the request's creationTimestamp to its status write landing, by outcome",
            request_latency.clone(),
        );
        let pending = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "pending_requests",
            "Requests for this signer waiting for a status (reported by the leader)",
            pending.clone(),
        );
        let oldest_pending = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "oldest_pending_request_seconds",
            "Age of the oldest request waiting for a status (reported by the leader)",
            oldest_pending.clone(),
        );
        let stranded = Counter::default();
        registry.register(
            "stranded_requests",
            "Waiting requests reconciled again because nothing had for 15 s (a missed event or wake-up)",
            stranded.clone(),
        );
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        // Every error series exists from the start, so rates and alerts see a zero, not nothing.
        for error in ErrorLabels::ALL {
            let _ = reconcile_errors.get_or_create(&ErrorLabels { error });
        }
        registry.register(
            "reconcile_errors",
            "Transient reconcile failures (retried)",
            reconcile_errors.clone(),
        );
        let ca_not_after = Family::<RoleLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "ca_not_after_seconds",
            "notAfter of each CA by role: root, next_root, intermediate (Unix seconds)",
            ca_not_after.clone(),
        );
        let ca_rotations = Family::<RoleLabels, Counter>::default();
        for role in [RoleLabels::ROOT, RoleLabels::INTERMEDIATE] {
            let _ = ca_rotations.get_or_create(&role);
        }
        registry.register(
            "ca_rotations",
            "Roots activated and signing intermediates made, by role",
            ca_rotations.clone(),
        );
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        let ca_loaded = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "ca_loaded",
            "1 while this process holds a usable CA",
            ca_loaded.clone(),
        );
        let ca_secret_usable = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "ca_secret_usable",
            "1 while the CA Secret holds a usable CA",
            ca_secret_usable.clone(),
        );
        let task_failures = Family::<TaskLabels, Counter>::default();
        registry.register(
            "task_failures",
            "Supervised tasks that ended unexpectedly or panicked",
            task_failures.clone(),
        );
        let unreadable = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "unreadable_requests",
            "Requests left pending because the served API version lacks their key material",
            unreadable.clone(),
        );
        let identity_policy_loaded = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "identity_policy_loaded",
            "1 while the identity policy in use is the file's current content",
            identity_policy_loaded.clone(),
        );
        let identity_policy_reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "identity_policy_reloads",
            "Reloads of the identity policy file after it changed, by result",
            identity_policy_reloads.clone(),
        );
        let federation_fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "federation_fetches",
            "Fetches of federated trust domains' bundles, by domain and result",
            federation_fetches.clone(),
        );
        let federation_current = Family::<DomainLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "federation_bundle_current",
            "1 while the last fetch of a federated domain's bundle succeeded and is published",
            federation_current.clone(),
        );
        let federation_updated = Family::<DomainLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "federation_bundle_updated_seconds",
            "Unix time of the last successful fetch of a federated domain's bundle",
            federation_updated.clone(),
        );
        Metrics {
            registry,
            federation_fetches,
            federation_current,
            federation_updated,
            unreadable,
            identity_policy_loaded,
            identity_policy_reloads,
            ca_loaded,
            ca_secret_usable,
            task_failures,
            requests,
            request_latency,
            pending,
            oldest_pending,
            stranded,
            reconcile_errors,
            ca_not_after,
            ca_rotations,
            leader,
        }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every family the registry exposes, as a query names it: `name_total` for a counter,
    /// the bare name otherwise (a histogram's series add `_bucket`, `_sum`, `_count`).
    fn exposed() -> Vec<(String, String)> {
        Metrics::default()
            .encode()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| {
                let (name, kind) = l.split_once(' ').unwrap();
                let named = if kind == "counter" {
                    format!("{name}_total")
                } else {
                    name.to_string()
                };
                (named, kind.to_string())
            })
            .collect()
    }

    fn repo_file(path: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn every_metric_is_in_the_operations_page_with_its_type() {
        let page = repo_file("docs/operations.md");
        let exposed = exposed();
        assert!(exposed.len() >= 19, "{exposed:?}");
        for (name, kind) in &exposed {
            let row = page
                .lines()
                .find(|l| l.starts_with(&format!("| `{name}` |")))
                .unwrap_or_else(|| panic!("docs/operations.md has no row for {name}"));
            assert!(
                row.contains(&format!("| {kind} |")),
                "{name} is a {kind}: {row}"
            );
        }
        // And nothing documented that the process does not register.
        for row in page.lines().filter(|l| l.starts_with("| `podcert_")) {
            let name = row.split('`').nth(1).unwrap();
            assert!(
                exposed.iter().any(|(n, _)| n == name),
                "documented but not registered: {name}"
            );
        }
    }

    /// Every `podcert_…` name in `text` (a PromQL expression or a rule file).
    fn named_metrics(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("podcert_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[i + name.len()..];
            out.push(name);
        }
        out
    }

    #[test]
    fn every_metric_the_dashboard_and_alerts_query_is_registered() {
        let exposed = exposed();
        let known = |name: &str| {
            exposed.iter().any(|(n, kind)| {
                n == name
                    || (kind == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name.strip_suffix(s) == Some(n.as_str())))
            })
        };
        for file in [
            "monitoring/dashboard.json",
            "monitoring/alerts.yaml",
            "monitoring/alerts_test.yaml",
        ] {
            let names = named_metrics(&repo_file(file));
            assert!(!names.is_empty(), "{file} names no metric");
            for name in names {
                assert!(
                    known(&name),
                    "{file} queries {name}, which the signer does not register"
                );
            }
        }
    }

    #[test]
    fn every_metric_is_exposed() {
        let m = Metrics::default();
        m.requests
            .get_or_create(&OutcomeLabels {
                outcome: "issued",
                key_type: "ECDSAP256",
                reason: "Issued",
            })
            .inc();
        m.reconcile_errors
            .get_or_create(&ErrorLabels {
                error: "write_status",
            })
            .inc();
        m.task_failures
            .get_or_create(&TaskLabels {
                group: "term",
                task: "ca",
            })
            .inc();
        m.ca_not_after.get_or_create(&RoleLabels::ROOT).set(7);
        m.request_latency
            .get_or_create(&LatencyLabels { outcome: "issued" })
            .observe(0.3);
        m.ca_rotations
            .get_or_create(&RoleLabels::INTERMEDIATE)
            .inc();
        let text = m.encode();
        for name in [
            "podcert_requests_total{outcome=\"issued\",key_type=\"ECDSAP256\",reason=\"Issued\"} 1",
            "podcert_request_latency_seconds_bucket",
            "podcert_pending_requests 0",
            "podcert_oldest_pending_request_seconds 0",
            "podcert_reconcile_errors_total{error=\"sign_forbidden\"} 0",
            "podcert_reconcile_errors_total{error=\"write_status\"} 1",
            "podcert_ca_not_after_seconds{role=\"root\"} 7",
            "podcert_ca_rotations_total{role=\"intermediate\"} 1",
            "podcert_leader",
            "podcert_ca_loaded",
            "podcert_ca_secret_usable",
            "podcert_task_failures_total{group=\"term\",task=\"ca\"} 1",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}
