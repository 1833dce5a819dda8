//! spiffe-tls: SPIFFE peers over rustls, in one place for the whole workspace.
//!
//! An X.509-SVID names its holder by one URI SAN (its SPIFFE ID, read by
//! [`signer_core::spiffe::svid_id`], the workspace's one reading of it), not by a DNS name, so
//! rustls' stock verifiers do not fit. [`SpiffeVerifier`] verifies a peer's chain against the
//! bundle of the trust domain its SPIFFE ID names and accepts only allowed IDs, as a client
//! (server certificates) and as a server (client certificates). The signer's federation fetch
//! (the `https_spiffe` profile), the `examples/mtls` workload and the tests use it.

mod verify;

pub use signer_core::spiffe::{SpiffeError, SpiffeId, svid_id};
pub use verify::{BundleError, SpiffeVerifier};
