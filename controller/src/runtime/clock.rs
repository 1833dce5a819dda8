//! Waiting on the wall clock certificates are issued by ([`Clock`], from signer-core), which
//! may run compressed in tests: a wait for a certificate time is a real wait `scale` times
//! shorter.

use std::time::{Duration, SystemTime};

pub use signer_core::time::Clock;

/// Sleeps until `clock` reads `t` (at once if it has passed).
pub async fn sleep_until(clock: &Clock, t: SystemTime) {
    loop {
        let Ok(left) = t.duration_since(clock.now()) else {
            return;
        };
        if left.is_zero() {
            return;
        }
        // Re-read after waking: the system clock may have been stepped meanwhile.
        tokio::time::sleep(clock.real(left).max(Duration::from_millis(1))).await;
    }
}
