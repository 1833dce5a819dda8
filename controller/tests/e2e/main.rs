//! End to end: the real podcert-signer binary against the test API server, with requests
//! filed by the kubelet emulator, one file per theme. Every scenario ends with the same
//! checks ([`support::assert_scenario_invariants`]): nothing left pending that should be
//! issued, no `Failed` for a transient cause, no status the API server rejected, no
//! certificate issued twice, and the CA Secret intact.

#[path = "../support/mod.rs"]
mod support;

mod ca;
mod chaos;
mod demo;
mod faults;
mod federation;
mod federation_domains;
mod federation_import;
mod hostile_clients;
mod hsm;
mod identity;
mod issuance;
mod leadership;
mod lifecycle;
mod observability;
mod refresh;
mod reliability;
mod versions;
