//! The interop matrix: our SVIDs in a real mutual TLS handshake with each TLS stack workloads
//! use, under each CA profile we ship, for each key type the kubelet makes.
//!
//! A [`Case`] is two SVIDs issued by signer-core — a server's and a client's, of one key type
//! under one [`Profile`] — and the trust bundle a workload would mount. Each [`Stack`] runs
//! every case as one handshake in which the server requires a client certificate, both sides
//! verify the peer's chain against the bundle for the peer's role (serverAuth, clientAuth) with
//! no host name (SVIDs carry none), and each reads the peer's SPIFFE ID from its single URI SAN
//! and compares it with the one expected, as a SPIFFE library of that stack does. The stacks:
//! Go's `crypto/tls` (the oracle's `handshake` mode), OpenSSL (Python's `ssl`, which is
//! libssl, with `cryptography` reading the ID as py-spiffe does), BoringSSL (gRPC's stock TLS
//! credentials in Python's `grpcio`, which checks the server's host name: see
//! [`boringssl`]), rustls (`examples/mtls` itself:
//! its server and client over loopback) and Java's JSSE (`tests/jsse/Handshake.java` on the
//! machine's JDK); NSS verifies both chains for their usages with `vfychain` instead of a
//! handshake. Two controls make sure each stack's harness can say no: a client whose root
//! the bundle does not hold, and a server whose SPIFFE ID is not the expected one.

mod boringssl;
mod go;
mod jsse;
mod nss;
mod openssl;
mod profiles;
mod rustls;

use std::fmt;

use serde::Serialize;

use crate::oracles::{Verdict, python_batch};

pub use profiles::{
    CONTROL_UNTRUSTED_CLIENT, CONTROL_WRONG_SERVER_ID, Profile, cases, usage_cases,
};

/// One side of a handshake: its chain (leaf first) and PKCS#8 key as PEM, and the SPIFFE ID
/// its peer must see.
#[derive(Debug, Clone, Serialize)]
pub struct Party {
    pub chain_pem: String,
    pub key_pem: String,
    pub spiffe_id: String,
}

/// One cell of the matrix (or a control).
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    /// `<profile>/<key type>`, or `control/<what>`.
    pub name: String,
    /// The cell's profile and key type; None for a control, which every stack must refuse.
    #[serde(skip)]
    pub cell: Option<(Profile, String)>,
    pub server: Party,
    /// The server's key with an SVID that also carries a Service DNS name, for stacks that
    /// check the host name they dial (gRPC); and that name, as the client expects it.
    pub server_named: Party,
    pub server_name: String,
    pub client: Party,
    /// The trust bundle both sides verify against.
    pub roots_pem: String,
}

/// A TLS implementation in the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stack {
    Go,
    OpenSsl,
    BoringSsl,
    Rustls,
    Jsse,
    Nss,
}

impl Stack {
    pub const ALL: [Stack; 6] = [
        Stack::Go,
        Stack::OpenSsl,
        Stack::BoringSsl,
        Stack::Rustls,
        Stack::Jsse,
        Stack::Nss,
    ];

    /// Runs every case on this stack: one verdict per case, in order ("" = both sides accepted).
    pub fn run(self, cases: &[Case]) -> Vec<Verdict> {
        match self {
            Stack::Go => go::handshakes(cases),
            Stack::OpenSsl => openssl::handshakes(cases),
            Stack::BoringSsl => boringssl::handshakes(cases),
            Stack::Rustls => rustls::handshakes(cases),
            Stack::Jsse => jsse::handshakes(cases),
            Stack::Nss => nss::verifications(cases),
        }
    }
}

impl fmt::Display for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stack::Go => "Go crypto/tls",
            Stack::OpenSsl => "OpenSSL",
            Stack::BoringSsl => "BoringSSL (gRPC)",
            Stack::Rustls => "rustls",
            Stack::Jsse => "Java JSSE",
            Stack::Nss => "NSS",
        })
    }
}

/// Runs a Python harness over every case (its `check(case)` returns on acceptance, raises on
/// refusal; see [`python_batch`]): one verdict per case, in order. `missing` says what to
/// install if the script cannot run.
fn python_handshakes(script: &str, cases: &[Case], missing: &str) -> Vec<Verdict> {
    let results = python_batch(script, &serde_json::to_vec(cases).unwrap(), missing);
    cases
        .iter()
        .zip(results)
        .map(|(case, r)| Verdict {
            name: case.name.clone(),
            error: r.err().unwrap_or_default(),
        })
        .collect()
}
