//! One request's way from the watch to its status: the PodCertificateRequest adapter for
//! every served version ([`pcr`]), the leader's cache that holds only requests still waiting
//! ([`cache`]), the runner that starts a reconcile the moment a request is triggered, one at
//! a time per request ([`runner`]), the reconciler that decides with signer-core and writes
//! the status once ([`reconcile`]), the backlog report — gauges, `StillPending` Events, and
//! a second chance for a request nothing brings back ([`backlog`]) — and the live lookups an
//! identity policy asks for ([`lookups`]: namespace labels, the pod, the Services that
//! select it).
//!
//! ```text
//!   watch (spec.signerName=…) ─► cache (waiting only) ─► runner ─► reconcile ─► replace_status
//!                                   │        │              ▲             ▲
//!                                   │        └─► backlog ───┘ (nudges)    └─ lookups (policy)
//!                                   ▼
//!                                 pcr: version ⇄ signer-core Request / Decision ⇄ status
//! ```

pub mod backlog;
pub mod cache;
pub mod lookups;
pub mod metrics;
pub mod pcr;
pub mod reconcile;
pub mod runner;
