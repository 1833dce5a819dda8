//! The mechanisms every part of the controller shares, and nothing else: supervised tasks
//! ([`supervisor`]), the one backoff ([`retry`]), the admin server ([`admin`]: `/live`,
//! `/ready`, `/metrics`), serving HTTP to untrusted clients within limits ([`http_server`],
//! for the admin server and the bundle endpoint), one bounded HTTPS exchange with a server we
//! do not control ([`https_client`], for federation and Vault), `/metrics` over HTTPS for authorized
//! callers ([`secure_metrics`]), the metrics registry ([`metrics`]), logging ([`telemetry`]), the
//! certificate clock ([`clock`]), the one way Events are written ([`events`]) and Secrets
//! that hold key material, wiped when dropped ([`wiped`]). Nothing
//! here knows about requests, leadership or the CA; the wings above import it.
//!
//! ```text
//!   leadership/   requests/   ca/   federation/      (the wings)
//!        │            │        │         │
//!        └────────────┴────┬───┴─────────┘
//!                          ▼
//!   runtime:  supervisor  retry  admin ─► http_server, metrics  telemetry  clock  events  wiped
//!             https_client
//! ```

pub mod admin;
pub mod clock;
pub mod events;
pub mod http_server;
pub mod https_client;
pub mod metrics;
pub mod retry;
pub mod secure_metrics;
pub mod supervisor;
pub mod telemetry;
pub mod wiped;
