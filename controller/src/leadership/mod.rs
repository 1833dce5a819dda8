//! Who leads, and what a leader does while it leads: the Lease election ([`election`]),
//! every replica's standby loop that turns being elected into one term at a time
//! ([`standby`]), and one leadership term ([`term`]): the CA's leader part settled and kept
//! ([`crate::ca::steward`]), then the request controller ([`crate::requests`]), all as
//! supervised tasks that end together when leadership does.
//!
//! ```text
//!   election ──elected?──► standby ──one at a time──► term
//!   (Lease, every replica)   (ready, backoff)           ├─ ca::Steward: settle, publish, keep
//!                                                       ├─ requests: cache → reconcile
//!                                                       ├─ requests::backlog
//!                                                       └─ federation (import, endpoint SVID)
//! ```

pub mod election;
pub mod standby;
pub mod term;

/// `podcert_leader`: 1 while this replica's term runs.
#[derive(Debug, Clone, Default)]
pub struct LeaderGauge(crate::runtime::metrics::IntGauge);

impl LeaderGauge {
    pub fn register(r: &mut crate::runtime::metrics::Registrar) -> Self {
        LeaderGauge(r.add(
            "leader",
            "1 while this replica holds the leader Lease",
            Default::default(),
        ))
    }

    pub fn set(&self, leading: bool) {
        self.0.set(i64::from(leading));
    }
}
