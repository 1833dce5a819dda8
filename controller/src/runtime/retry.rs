//! The one retry mechanism of the controller: exponential backoff from 0.5 s doubling to 60 s.
//!
//! Every retry — a failed reconcile of one request, a CA Secret write, a trust-bundle publish,
//! discovery at start — waits by [`BACKOFF`] (backon's exponential builder, no retry limit:
//! the controller retries what is transient until it succeeds or its task ends), so a long
//! API outage never becomes a retry storm. [`retry`] runs an operation until it succeeds or a
//! cancellation token fires; [`Failures`] keeps the per-request backoff state of the
//! reconciler, removed on every terminal path and swept of requests that left the cache.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// 0.5 s, 1 s, 2 s, … capped at 60 s, forever.
pub const BACKOFF: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(500))
    .with_factor(2.0)
    .with_max_delay(Duration::from_secs(60))
    .without_max_times();

/// A fresh backoff sequence.
pub fn backoff() -> ExponentialBackoff {
    BACKOFF.build()
}

/// Runs `op` until it succeeds, waiting by [`BACKOFF`] between attempts and logging each
/// failure as `what`; `None` if `cancel` fires first.
pub async fn retry<T, E: Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    cancel: &CancellationToken,
    mut op: impl FnMut() -> F,
) -> Option<T> {
    let mut delays = backoff();
    loop {
        let attempt = tokio::select! {
            r = op() => r,
            _ = cancel.cancelled() => return None,
        };
        match attempt {
            Ok(v) => return Some(v),
            Err(e) => {
                let delay = delays.next().expect("the backoff never ends");
                warn!(error = %e, retry_in = ?delay, "{what} failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return None,
                }
            }
        }
    }
}

/// Per-key backoff state for keys that failed transiently (the reconciler's requests).
#[derive(Debug, Default)]
pub struct Failures<K> {
    state: Mutex<FailureMap<K>>,
}

#[derive(Debug)]
struct FailureMap<K> {
    backoffs: HashMap<K, ExponentialBackoff>,
    /// The size at which the next sweep runs: twice the size after the last one, so sweeping
    /// costs amortised O(1) per failure.
    sweep_at: usize,
}

impl<K> Default for FailureMap<K> {
    fn default() -> Self {
        FailureMap {
            backoffs: HashMap::new(),
            sweep_at: 64,
        }
    }
}

impl<K: Hash + Eq + Clone> Failures<K> {
    /// Records a failure of `key` and returns how long to wait before retrying it. When the
    /// map has doubled since the last sweep, keys for which `alive` is false are dropped
    /// first (requests deleted, or finished by another replica, while they were failing).
    pub fn failed(&self, key: &K, alive: impl Fn(&K) -> bool) -> Duration {
        let mut s = self.state.lock().expect("failures lock");
        if s.backoffs.len() >= s.sweep_at {
            s.backoffs.retain(|k, _| alive(k));
            s.sweep_at = (s.backoffs.len() * 2).max(64);
        }
        s.backoffs
            .entry(key.clone())
            .or_insert_with(backoff)
            .next()
            .expect("the backoff never ends")
    }

    /// Forgets `key`: it reached a terminal state or is gone.
    pub fn forget(&self, key: &K) {
        self.state
            .lock()
            .expect("failures lock")
            .backoffs
            .remove(key);
    }

    /// Whether `key` failed and has not succeeded or been forgotten since.
    pub fn contains(&self, key: &K) -> bool {
        self.state
            .lock()
            .expect("failures lock")
            .backoffs
            .contains_key(key)
    }

    /// How many keys are in a backoff (tests count them).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state.lock().expect("failures lock").backoffs.len()
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_half_a_second_and_is_capped_at_a_minute() {
        let delays: Vec<_> = backoff().take(10).collect();
        assert_eq!(delays[0], Duration::from_millis(500));
        assert_eq!(delays[3], Duration::from_secs(4));
        assert_eq!(delays[7], Duration::from_secs(60));
        assert_eq!(delays[9], Duration::from_secs(60));
        assert_eq!(backoff().nth(10_000), Some(Duration::from_secs(60)));
    }

    #[test]
    fn failures_back_off_per_key_and_are_forgotten() {
        let f = Failures::default();
        let live = |_: &&str| true;
        assert_eq!(f.failed(&"a", live), Duration::from_millis(500));
        assert_eq!(f.failed(&"a", live), Duration::from_secs(1));
        assert_eq!(f.failed(&"b", live), Duration::from_millis(500));
        f.forget(&"a");
        assert_eq!(f.failed(&"a", live), Duration::from_millis(500));
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn keys_that_left_are_swept_when_the_map_doubles() {
        let f = Failures::default();
        for i in 0..64 {
            f.failed(&i, |_| true);
        }
        assert_eq!(f.len(), 64);
        // The 65th failure sweeps: only even keys are still alive.
        f.failed(&1000, |k| k % 2 == 0);
        assert_eq!(f.len(), 33);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_runs_until_success_and_stops_when_cancelled() {
        let cancel = CancellationToken::new();
        let mut calls = 0;
        let started = tokio::time::Instant::now();
        let v = retry("op", &cancel, || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err("no") } else { Ok(n) } }
        })
        .await;
        assert_eq!(v, Some(3));
        assert_eq!(started.elapsed(), Duration::from_millis(1500));
        cancel.cancel();
        let never = retry("op", &cancel, || async { Err::<(), _>("no") }).await;
        assert_eq!(never, None);
    }
}
