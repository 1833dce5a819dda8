//! SPIFFE federation: other trust domains trust ours through our bundle endpoint
//! ([`endpoint`]), serving the bundle this signer publishes in its ClusterTrustBundle in the
//! SPIFFE bundle format (`signer_core::bundle`); and we trust theirs by importing their
//! bundles ([`import`]) as listed in the federation file ([`peers`]), each fetched from its
//! endpoint and authenticated by its profile ([`fetch`]).

pub mod endpoint;
pub mod fetch;
pub mod import;
pub mod metrics;
pub mod peers;
pub mod svid;
