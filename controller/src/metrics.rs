//! The process's metrics: every part's, registered once at start through one
//! [`Registrar`], and the exposition `/metrics` serves. Each part defines and records its own
//! (`requests::metrics`, `ca::metrics`, `federation::metrics`, the identity policy's, the
//! leader gauge, the supervised tasks'); this is the one place that knows them all, and its
//! tests hold docs/operations.md, the dashboard and the alerts to what is registered.

use std::sync::Arc;

use crate::runtime::metrics::{Errors, Exposition, Registrar, Tasks};
use crate::{ca, federation, identity_policy, leadership, requests};

/// Every part's metrics, registered once at start; each part records through its own.
pub struct Metrics {
    pub requests: requests::metrics::RequestMetrics,
    pub ca: ca::metrics::CaMetrics,
    pub federation: federation::metrics::FederationMetrics,
    pub policy: identity_policy::PolicyMetrics,
    pub leader: leadership::LeaderGauge,
    pub tasks: Tasks,
    /// What `/metrics` serves.
    pub exposition: Arc<Exposition>,
}

impl Metrics {
    pub fn register() -> Self {
        let mut r = Registrar::default();
        let errors = Errors::register(&mut r);
        let requests = requests::metrics::RequestMetrics::register(&mut r, errors.clone());
        let ca = ca::metrics::CaMetrics::register(&mut r, errors);
        let federation = federation::metrics::FederationMetrics::register(&mut r);
        let policy = identity_policy::PolicyMetrics::register(&mut r);
        let leader = leadership::LeaderGauge::register(&mut r);
        let tasks = Tasks::register(&mut r);
        Metrics {
            requests,
            ca,
            federation,
            policy,
            leader,
            tasks,
            exposition: Arc::new(r.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_file(path: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn every_metric_is_in_the_operations_page_with_its_type() {
        let metrics = Metrics::register();
        let registered = metrics.exposition.registered();
        assert!(registered.len() >= 18, "{registered:?}");
        let page = repo_file("docs/operations.md");
        for (name, kind) in registered {
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
                registered.iter().any(|(n, _)| n == name),
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
        let metrics = Metrics::register();
        let registered = metrics.exposition.registered();
        let known = |name: &str| {
            registered.iter().any(|(n, kind)| {
                n == name
                    || (*kind == "histogram"
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
    fn the_exposition_shows_what_the_parts_record() {
        let m = Metrics::register();
        m.requests.decided("issued", "ECDSAP256", "Issued", 0.3);
        m.requests.error(Errors::WRITE_STATUS);
        m.tasks.failed("term", "ca");
        m.ca.not_after(ca::metrics::Role::Root, 7);
        m.ca.rotated(ca::metrics::Role::Intermediate);
        let text = m.exposition.encode();
        for line in [
            "podcert_requests_total{outcome=\"issued\",key_type=\"ECDSAP256\",reason=\"Issued\"} 1",
            "podcert_request_latency_seconds_bucket",
            "podcert_pending_requests 0",
            "podcert_oldest_pending_request_seconds 0",
            "podcert_reconcile_errors_total{error=\"attest_forbidden\"} 0",
            "podcert_reconcile_errors_total{error=\"write_status\"} 1",
            "podcert_ca_not_after_seconds{role=\"root\"} 7",
            "podcert_ca_rotations_total{role=\"intermediate\"} 1",
            "podcert_ca_rotations_total{role=\"root\"} 0",
            "podcert_leader 0",
            "podcert_ca_loaded 0",
            "podcert_ca_secret_usable 0",
            "podcert_task_failures_total{group=\"term\",task=\"ca\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
