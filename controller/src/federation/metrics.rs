//! Federation's metrics: fetches of each federated trust domain's bundle by result, whether the
//! last one succeeded and is published, and when — recorded per domain through
//! [`DomainMetrics`] (docs/operations.md describes each).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::runtime::metrics::{IntGauge, Registrar};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabels {
    trust_domain: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    trust_domain: String,
    result: &'static str,
}

/// What the federation importer records.
#[derive(Debug, Clone, Default)]
pub struct FederationMetrics {
    fetches: Family<FetchLabels, Counter>,
    current: Family<DomainLabels, IntGauge>,
    updated: Family<DomainLabels, IntGauge>,
}

impl FederationMetrics {
    pub fn register(r: &mut Registrar) -> Self {
        FederationMetrics {
            fetches: r.add(
                "federation_fetches",
                "Fetches of federated trust domains' bundles, by domain and result",
                Family::default(),
            ),
            current: r.add(
                "federation_bundle_current",
                "1 while the last fetch of a federated domain's bundle succeeded and is published",
                Family::default(),
            ),
            updated: r.add(
                "federation_bundle_updated_seconds",
                "Unix time of the last successful fetch of a federated domain's bundle",
                Family::default(),
            ),
        }
    }

    /// The figures of one federated trust domain.
    pub fn domain(&self, trust_domain: &signer_core::TrustDomain) -> DomainMetrics {
        DomainMetrics {
            trust_domain: trust_domain.as_str().to_owned(),
            metrics: self.clone(),
        }
    }
}

/// One federated trust domain's figures.
#[derive(Debug, Clone)]
pub struct DomainMetrics {
    trust_domain: String,
    metrics: FederationMetrics,
}

impl DomainMetrics {
    fn count(&self, result: &'static str) {
        self.metrics
            .fetches
            .get_or_create(&FetchLabels {
                trust_domain: self.trust_domain.clone(),
                result,
            })
            .inc();
    }

    fn current(&self) -> DomainLabels {
        DomainLabels {
            trust_domain: self.trust_domain.clone(),
        }
    }

    /// A fetch failed with `result` (connect, tls, http, timeout, bundle): the last good
    /// bundle is kept.
    pub fn fetch_failed(&self, result: &'static str) {
        self.count(result);
        self.metrics.current.get_or_create(&self.current()).set(0);
    }

    /// A good bundle could not be published; the next fetch tries again.
    pub fn publish_failed(&self) {
        self.count("publish");
    }

    /// The fetched bundle is the one published, as of `unix` (seconds).
    pub fn current_at(&self, unix: i64) {
        self.count("ok");
        self.metrics.current.get_or_create(&self.current()).set(1);
        self.metrics
            .updated
            .get_or_create(&self.current())
            .set(unix);
    }
}
