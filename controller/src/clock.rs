//! Wall-clock time for everything a certificate or the CA's life depends on.
//!
//! In production the [`Clock`] is the system clock. For time-compressed tests (a CA's whole
//! life in a minute) it can run `scale` times faster from an `origin` instant: scaled time is
//! `origin + (system time − origin) × scale`, computed from the system clock, so every process
//! given the same origin and scale (the signer, the test API server, the test kubelet) agrees
//! on the time without talking. Only certificate times, the CA's rotation schedule and the
//! trust bundle's retention follow it; leader election, retries and timeouts stay on real
//! time, as they would in a cluster where the certificates are long-lived.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The wall clock, possibly compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    origin: SystemTime,
    scale: u32,
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock {
            origin: UNIX_EPOCH,
            scale: 1,
        }
    }

    /// A clock running `scale` times faster than the system clock from `origin`.
    pub fn scaled(origin: SystemTime, scale: u32) -> Self {
        Clock {
            origin,
            scale: scale.max(1),
        }
    }

    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// The time now.
    pub fn now(&self) -> SystemTime {
        let real = SystemTime::now();
        if self.scale == 1 {
            return real;
        }
        match real.duration_since(self.origin) {
            Ok(elapsed) => self.origin + elapsed.saturating_mul(self.scale),
            Err(_) => real,
        }
    }

    /// Whole Unix seconds now.
    pub fn unix_now(&self) -> i64 {
        signer_core::time::unix_seconds(self.now())
    }

    /// The real time that `d` of this clock's time takes.
    pub fn real(&self, d: Duration) -> Duration {
        d / self.scale
    }

    /// Sleeps until this clock reads `t` (at once if it has passed).
    pub async fn sleep_until(&self, t: SystemTime) {
        loop {
            let Ok(left) = t.duration_since(self.now()) else {
                return;
            };
            if left.is_zero() {
                return;
            }
            // Re-read after waking: the system clock may have been stepped meanwhile.
            tokio::time::sleep(self.real(left).max(Duration::from_millis(1))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_is_the_system_clock() {
        let before = SystemTime::now();
        let now = Clock::system().now();
        assert!(now >= before && now <= SystemTime::now());
    }

    #[test]
    fn a_scaled_clock_runs_faster_from_its_origin() {
        let origin = SystemTime::now() - Duration::from_secs(10);
        let clock = Clock::scaled(origin, 3600);
        let elapsed = clock.now().duration_since(origin).unwrap();
        // Ten real seconds are ten hours of this clock.
        assert!(
            elapsed >= Duration::from_secs(36_000) && elapsed < Duration::from_secs(36_000 + 3600),
            "{elapsed:?}"
        );
        assert_eq!(clock.real(Duration::from_secs(3600)), Duration::from_secs(1));
    }
}
