//! Shared pieces of podcert-signer's cross-implementation and end-to-end tests.
//!
//! [`fixtures`] loads keys, proofs and stub CSRs that Go's standard library made exactly as the
//! kubelet does; [`oracles`] runs independent verifiers over what we issue — Go's
//! `crypto/x509` (the API server's and kubelet's parser), `openssl verify` and py-spiffe.

pub mod apiserver;
pub mod fixtures;
pub mod kubelet;
pub mod oracles;
