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
