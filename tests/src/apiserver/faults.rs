//! Faults a test injects: 429/500 storms, refused writes, slow answers, failing lists, stalled
//! or dropped watches, 409s on status writes, and restarts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Which requests to one resource (by plural) fail while a [`Faults::fail_resource`] is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceFault {
    /// Lists (not watches).
    Lists(&'static str),
    /// Creates, updates, patches and deletes.
    Writes(&'static str),
}

/// Faults to inject. Counters (`*_next`) are consumed one per request by whoever asks next, so
/// how long they last depends on how busy the clients are: a scenario in which a fault may end
/// a leader's term (its Lease renewal fails, and it then asks once per renew interval) uses the
/// windows, [`Faults::throttle_for`] and [`Faults::fail_for`].
#[derive(Debug)]
pub struct Faults {
    /// Answer the next N requests 429 Too Many Requests with Retry-After: 1 (`system:masters`
    /// is exempt, as API Priority and Fairness exempts it).
    pub throttle_next: AtomicU32,
    /// Answer the next N non-watch requests 500.
    pub error_next: AtomicU32,
    /// Answer the next N PCR status writes 409 Conflict.
    pub conflict_next_status_writes: AtomicU32,
    /// Refuse every write with 503 while set.
    pub refuse_writes: AtomicBool,
    /// Hold back watch events while set (delivered when cleared).
    pub stall_watches: AtomicBool,
    /// Delay every answer by this many milliseconds.
    pub delay_ms: AtomicU64,
    /// Collect no PodCertificateRequests while set (`pcr_gc_after` counts whole seconds of
    /// creationTimestamp, so a short window can collect a request within 100 ms of its
    /// creation).
    pub pcr_gc_paused: AtomicBool,
    /// Answer 500 to one kind of request on one resource while set, as an API server whose
    /// storage times out on one resource does.
    pub fail_resource: Mutex<Option<ResourceFault>>,
    pub(super) down_until: Mutex<Option<Instant>>,
    throttled_until: Mutex<Option<Instant>>,
    failing_until: Mutex<Option<Instant>>,
    pub(super) watch_epoch: tokio::sync::watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            throttle_next: AtomicU32::new(0),
            error_next: AtomicU32::new(0),
            conflict_next_status_writes: AtomicU32::new(0),
            refuse_writes: AtomicBool::new(false),
            stall_watches: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            pcr_gc_paused: AtomicBool::new(false),
            fail_resource: Mutex::new(None),
            down_until: Mutex::new(None),
            throttled_until: Mutex::new(None),
            failing_until: Mutex::new(None),
            watch_epoch: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Faults {
    pub(super) fn take(&self, counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    pub(super) fn is_down(&self) -> bool {
        Self::before(&self.down_until)
    }

    fn before(until: &Mutex<Option<Instant>>) -> bool {
        until.lock().unwrap().is_some_and(|t| Instant::now() < t)
    }

    /// Whether this request is throttled: one of [`Faults::throttle_next`], or within a
    /// [`Faults::throttle_for`] window.
    pub(super) fn throttles(&self) -> bool {
        self.take(&self.throttle_next) || Self::before(&self.throttled_until)
    }

    /// Whether this (non-watch) request fails 500: one of [`Faults::error_next`], or within a
    /// [`Faults::fail_for`] window.
    pub(super) fn fails(&self) -> bool {
        self.take(&self.error_next) || Self::before(&self.failing_until)
    }

    /// Throttles (as [`Faults::throttle_next`] does) every request for `period` from now, however
    /// many arrive: a fault whose length does not depend on how busy the clients are.
    pub fn throttle_for(&self, period: Duration) {
        *self.throttled_until.lock().unwrap() = Some(Instant::now() + period);
    }

    /// Answers 500 (as [`Faults::error_next`] does) to every non-watch request for `period`.
    pub fn fail_for(&self, period: Duration) {
        *self.failing_until.lock().unwrap() = Some(Instant::now() + period);
    }

    /// Ends every open watch (clients re-watch from their last resourceVersion).
    pub fn drop_watches(&self) {
        self.watch_epoch.send_modify(|e| *e += 1);
    }
}
