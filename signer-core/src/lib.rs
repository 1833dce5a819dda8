//! signer-core: the pure PKI and policy core of podcert-signer.
//!
//! It knows nothing of Kubernetes. It takes a plain [`Request`] — namespace, pod, service
//! account, key material, maximum lifetime, unverified annotations — and a [`Signer`] (a
//! validated [`Policy`] and a loaded [`Ca`]) returns a [`Decision`]: an issued SPIFFE
//! X.509-SVID chain with the times the PodCertificateRequest status must carry, or a denial
//! with the reason the API defines. Modules, in the order a request meets them:
//! [`request`] (the model), [`policy`] (operator settings, lifetimes), [`identity`] (the
//! identity policy's rules), [`annotations`] (what a workload may ask within its rule),
//! [`spiffe`] (identities), [`key`] and [`proof`] (subject keys and proof of possession),
//! [`usage`] (client and server), [`ca`] (the signing CA) and [`signer`] (the decision, and
//! the check of every leaf before it leaves).
//!
//! ```
//! use std::{sync::Arc, time::{Duration, SystemTime}};
//! use signer_core::*;
//!
//! let policy = Policy::new(&PolicyConfig::default()).unwrap();
//! let pem = CaPem::generate(CaKeyType::EcdsaP256, policy.trust_domain(),
//!                           Duration::from_secs(86_400 * 365), SystemTime::now()).unwrap();
//! let ca = Ca::from_pem(&pem.cert_pem, &pem.key_pem, None).unwrap();
//! let signer = Signer::new(Arc::new(policy), Arc::new(ca));
//! # let _ = signer;
//! ```

// Attacker bytes reach this crate: nothing in its non-test code may panic on them — no
// unwrap, expect, panic, assertion (clippy.toml), indexing or arithmetic that can overflow.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented,
        clippy::indexing_slicing,
        clippy::string_slice,
        clippy::arithmetic_side_effects,
        clippy::disallowed_macros
    )
)]
#![cfg_attr(test, allow(clippy::disallowed_macros))]

pub mod annotations;
pub mod bundle;
pub mod ca;
mod csr;
pub mod identity;
pub mod key;
pub mod names;
mod pem_reader;
pub mod policy;
pub mod proof;
pub mod request;
mod rsa;
pub mod selector;
mod self_check;
pub mod signature;
pub mod signer;
pub mod spiffe;
pub mod time;
pub mod usage;
pub mod x509;

pub use ca::{Ca, CaError, CaKey, CaKeyType, CaPem, CaProfile, CertSummary, KeyDevice};
pub use identity::{DnsNames, Grant, IdentityPolicy, PolicyError, Subject};
pub use key::{KeyType, SubjectKey};
pub use pem_reader::PemProblem;
pub use policy::{ConfigError, Policy, PolicyConfig, Validity};
pub use request::{Decision, Denial, DenyReason, Issued, KeyMaterial, Request};
pub use signer::{IssueError, Placement, Signer};
pub use spiffe::{SpiffeId, SpiffeIdTemplate, TrustDomain};
pub use usage::Usage;
