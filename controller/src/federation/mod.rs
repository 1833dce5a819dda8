//! SPIFFE federation: other trust domains trust ours through our bundle endpoint
//! ([`endpoint`]), serving the bundle this signer publishes in its ClusterTrustBundle in the
//! SPIFFE bundle format (`signer_core::bundle`).

pub mod endpoint;
