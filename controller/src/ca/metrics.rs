//! The CA's metrics: each CA's notAfter by role, rotations, whether this process holds a CA
//! and whether the Secret holds a usable one, and the trust bundle's refusals for want of
//! `attest` — recorded through the methods below (docs/operations.md describes each).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::runtime::metrics::{Errors, IntGauge, Registrar};

/// Which CA a figure is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The root that signs now.
    Root,
    /// The root prepared to replace it, during a rotation.
    NextRoot,
    /// The leader's signing intermediate.
    Intermediate,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: &'static str,
}

impl From<Role> for RoleLabels {
    fn from(role: Role) -> Self {
        RoleLabels {
            role: match role {
                Role::Root => "root",
                Role::NextRoot => "next_root",
                Role::Intermediate => "intermediate",
            },
        }
    }
}

/// What the CA's life records.
#[derive(Debug, Clone, Default)]
pub struct CaMetrics {
    not_after: Family<RoleLabels, IntGauge>,
    rotations: Family<RoleLabels, Counter>,
    loaded: IntGauge,
    secret_usable: IntGauge,
    upstream: Family<OutcomeLabels, Counter>,
    errors: Errors,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

impl CaMetrics {
    /// Registers the CA's metrics; `errors` is the process's transient-error counter.
    pub fn register(r: &mut Registrar, errors: Errors) -> Self {
        let rotations = Family::<RoleLabels, Counter>::default();
        for role in [Role::Root, Role::Intermediate] {
            let _ = rotations.get_or_create(&role.into());
        }
        CaMetrics {
            not_after: r.add(
                "ca_not_after_seconds",
                "notAfter of each CA by role: root, next_root, intermediate (Unix seconds)",
                Family::default(),
            ),
            rotations: r.add(
                "ca_rotations",
                "Roots activated and signing intermediates made, by role",
                rotations,
            ),
            loaded: r.add(
                "ca_loaded",
                "1 while this process holds a usable CA",
                IntGauge::default(),
            ),
            secret_usable: r.add(
                "ca_secret_usable",
                "1 while the CA Secret holds a usable CA",
                IntGauge::default(),
            ),
            upstream: r.add(
                "upstream_requests",
                "Requests to the upstream authority to certify a signing intermediate, by outcome: issued, denied, failed, invalidrequest, unusable (refused by our checks), error (not reached)",
                Family::default(),
            ),
            errors,
        }
    }

    /// A request to the upstream authority ended with `outcome`.
    pub fn upstream_outcome(&self, outcome: &str) {
        self.upstream
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The CA of `role` is valid until `unix` (seconds).
    pub fn not_after(&self, role: Role, unix: i64) {
        self.not_after.get_or_create(&role.into()).set(unix);
    }

    /// There is no CA of `role` here (no rotation under way; not the leader).
    pub fn none(&self, role: Role) {
        self.not_after.remove(&role.into());
    }

    /// A root was activated, or a signing intermediate made.
    pub fn rotated(&self, role: Role) {
        self.rotations.get_or_create(&role.into()).inc();
    }

    /// What this process holds, and what the CA Secret holds.
    pub fn holds(&self, process_has_ca: bool, secret_usable: bool) {
        self.loaded.set(i64::from(process_has_ca));
        self.secret_usable.set(i64::from(secret_usable));
    }

    /// The trust bundle's publication was refused for want of `attest`.
    pub fn attest_forbidden(&self) {
        self.errors.count(Errors::ATTEST_FORBIDDEN);
    }
}
