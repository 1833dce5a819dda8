//! Time as certificates and the Kubernetes API carry it: whole seconds since the Unix epoch.
//!
//! X.509 validity and the PodCertificateRequest status times have one-second resolution, so
//! every time signer-core computes is a Unix second ([`unix_seconds`]); these helpers convert
//! to and from `SystemTime` and to the `time` crate's type that rcgen takes.

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

#[cfg(test)]
mod tests {
    use super::*;

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
