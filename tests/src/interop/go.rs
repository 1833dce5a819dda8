//! Go's crypto/tls: the Go oracle's `handshake` mode (`tests/oracle/handshake.go`), peers
//! verified as go-spiffe does.

use super::Case;
use crate::oracles::{Verdict, run_oracle};

/// Runs every case as a mutual handshake in one oracle process.
pub fn handshakes(cases: &[Case]) -> Vec<Verdict> {
    run_oracle("handshake", &cases)
}
