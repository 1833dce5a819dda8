//! Time as certificates and the Kubernetes API carry it: whole seconds since the Unix epoch.
//!
//! X.509 validity and the PodCertificateRequest status times have one-second resolution, so
//! every time signer-core computes is a Unix second ([`unix_seconds`]); these helpers convert
//! to and from `SystemTime` and to the `time` crate's type that rcgen takes.
//!
//! [`Clock`] is the wall clock certificates are issued by: the system's in production, or
//! compressed for tests (a CA's whole life in a minute). Scaled time is `origin + (system
//! time − origin) × scale`, computed from the system clock, so every process given the same
//! origin and scale (the signer, the test API server, the test kubelet) agrees on it without
//! talking. Only certificate times, the CA's schedule and the trust bundle's retention follow
//! it; leader election, retries and timeouts stay on real time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whole seconds since the Unix epoch (0 for times before it).
pub fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The inverse of [`unix_seconds`] for non-negative values.
pub fn from_unix_seconds(secs: i64) -> SystemTime {
    // Every non-negative i64 second is a representable SystemTime on the platforms we build for.
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs.max(0).unsigned_abs()))
        .unwrap_or(UNIX_EPOCH)
}

/// A Unix second as rcgen's validity type.
pub(crate) fn to_offset(unix: i64) -> time::OffsetDateTime {
    // Clamped to the years 0001..=9999 that X.509 times (and the `time` crate) can carry.
    const FIRST: i64 = -62_135_596_800;
    const LAST: i64 = 253_402_300_799;
    time::OffsetDateTime::from_unix_timestamp(unix.clamp(FIRST, LAST))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

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
            Ok(elapsed) => self
                .origin
                .checked_add(elapsed.saturating_mul(self.scale))
                .unwrap_or(real),
            Err(_) => real,
        }
    }

    /// Whole Unix seconds now.
    pub fn unix_now(&self) -> i64 {
        unix_seconds(self.now())
    }

    /// The real time that `d` of this clock's time takes.
    pub fn real(&self, d: Duration) -> Duration {
        d.checked_div(self.scale).unwrap_or(d)
    }

    /// This clock's time that `d` of real time is.
    pub fn scaled_duration(&self, d: Duration) -> Duration {
        d.saturating_mul(self.scale)
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
        assert_eq!(
            clock.real(Duration::from_secs(3600)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn unix_seconds_round_trip_and_truncate() {
        let t = UNIX_EPOCH + Duration::from_millis(1_800_000_000_999);
        assert_eq!(unix_seconds(t), 1_800_000_000);
        assert_eq!(
            from_unix_seconds(1_800_000_000),
            UNIX_EPOCH + Duration::from_secs(1_800_000_000)
        );
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(5)), 0);
    }
}
