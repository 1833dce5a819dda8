//! Supervised tasks: every long-running task has a handle and a name, and one that ends when
//! it should not — returns early or panics — is noticed, logged, counted and ends its group.
//!
//! A [`Supervisor`] holds a group of tasks (the tasks of one leadership term, or the
//! process's own). [`Supervisor::watch`] waits until the group's token is cancelled or a task
//! ends unexpectedly; either way it then cancels the token and gives the rest a bounded grace
//! to stop before aborting them, so no group can hang its owner (the zombie-leader bug: a
//! term whose controller waited forever for a cache that could never sync). [`Ticks`] is the
//! one shape of a periodic task's loop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::runtime::admin::{Health, Loop};
use crate::runtime::metrics::Tasks;

/// The ticks of a periodic task: `while ticks.next(&token).await { … }` runs its body every
/// period — the first at once, a late one delayed rather than bunched — until `token` is
/// cancelled. A body that may wait on a slow API server runs under
/// `token.run_until_cancelled`, so it cannot hold up its group's end.
#[derive(Debug)]
pub struct Ticks(tokio::time::Interval);

impl Ticks {
    pub fn every(period: Duration) -> Self {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticks(tick)
    }

    /// Waits for the next tick: true, or false once `token` is cancelled.
    pub async fn next(&mut self, token: &CancellationToken) -> bool {
        token.run_until_cancelled(self.0.tick()).await.is_some()
    }
}

/// How a supervised task is expected to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Runs until the group is cancelled; ending earlier is a failure.
    UntilCancelled,
    /// Does one job and may finish (it must not panic).
    OneShot,
}

/// Why a group ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Its token was cancelled.
    Cancelled,
    /// A task ended unexpectedly (returned early, or panicked).
    TaskFailed { task: &'static str, panicked: bool },
}

pub struct Supervisor {
    group: &'static str,
    tasks: JoinSet<()>,
    names: HashMap<Id, (&'static str, Lifetime)>,
    token: CancellationToken,
    metrics: Tasks,
    heartbeat: Option<(Arc<Health>, Loop)>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("group", &self.group)
            .field("tasks", &self.names.values().collect::<Vec<_>>())
            .finish()
    }
}

impl Supervisor {
    /// A group named `group` (a metric label) whose tasks stop when `token` is cancelled.
    pub fn new(group: &'static str, token: CancellationToken, metrics: Tasks) -> Self {
        Supervisor {
            group,
            tasks: JoinSet::new(),
            names: HashMap::new(),
            token,
            metrics,
            heartbeat: None,
        }
    }

    /// Beats `which` every second while the group runs normally, so `/live` sees a group
    /// that is waiting as alive and one that is stuck stopping as stuck.
    pub fn with_heartbeat(mut self, health: Arc<Health>, which: Loop) -> Self {
        self.heartbeat = Some((health, which));
        self
    }

    pub fn spawn(
        &mut self,
        name: &'static str,
        lifetime: Lifetime,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let handle = self.tasks.spawn(task);
        self.names.insert(handle.id(), (name, lifetime));
    }

    /// Waits for the token or for a task to fail, then stops the group within `grace`.
    pub async fn watch(mut self, grace: Duration) -> Ended {
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        let ended = loop {
            let joined = tokio::select! {
                _ = self.token.cancelled() => break Ended::Cancelled,
                joined = self.tasks.join_next_with_id() => joined,
                _ = ticker.tick() => {
                    if let Some((health, which)) = &self.heartbeat {
                        health.beat(*which);
                    }
                    continue;
                }
            };
            let Some(joined) = joined else {
                // Nothing left to supervise: only one-shot tasks were here.
                self.token.cancelled().await;
                break Ended::Cancelled;
            };
            let (id, panicked) = match &joined {
                Ok((id, ())) => (*id, false),
                Err(e) => (e.id(), e.is_panic()),
            };
            let (task, lifetime) = self
                .names
                .remove(&id)
                .unwrap_or(("unknown", Lifetime::UntilCancelled));
            if !panicked && lifetime == Lifetime::OneShot {
                continue;
            }
            if self.token.is_cancelled() {
                break Ended::Cancelled;
            }
            error!(
                group = self.group,
                task, panicked, "a supervised task ended unexpectedly; stopping its group"
            );
            self.metrics.failed(self.group, task);
            break Ended::TaskFailed { task, panicked };
        };
        self.token.cancel();
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                group = self.group,
                ?grace,
                "tasks did not stop in time; aborting them"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failures(m: &Tasks, task: &'static str) -> u64 {
        m.get("term", task)
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_ends_the_group_and_is_counted() {
        let metrics = Tasks::default();
        let token = CancellationToken::new();
        let mut s = Supervisor::new("term", token.clone(), metrics.clone());
        let t = token.clone();
        s.spawn("steady", Lifetime::UntilCancelled, async move {
            t.cancelled().await
        });
        s.spawn("boom", Lifetime::UntilCancelled, async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            panic!("injected");
        });
        let ended = s.watch(Duration::from_secs(5)).await;
        assert_eq!(
            ended,
            Ended::TaskFailed {
                task: "boom",
                panicked: true
            }
        );
        assert!(
            token.is_cancelled(),
            "the rest of the group is told to stop"
        );
        assert_eq!(failures(&metrics, "boom"), 1);
        assert_eq!(failures(&metrics, "steady"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_returning_early_is_a_failure_but_a_one_shot_is_not() {
        let metrics = Tasks::default();
        let token = CancellationToken::new();
        let mut s = Supervisor::new("term", token.clone(), metrics.clone());
        s.spawn("ready", Lifetime::OneShot, async {});
        s.spawn("follow", Lifetime::UntilCancelled, async {
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let ended = s.watch(Duration::from_secs(5)).await;
        assert_eq!(
            ended,
            Ended::TaskFailed {
                task: "follow",
                panicked: false
            }
        );
        assert_eq!(failures(&metrics, "ready"), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_cancellation_is_aborted_after_the_grace() {
        let metrics = Tasks::default();
        let token = CancellationToken::new();
        let mut s = Supervisor::new("term", token.clone(), metrics);
        // Like a controller waiting forever for a cache that cannot sync.
        s.spawn("stuck", Lifetime::UntilCancelled, std::future::pending());
        let started = tokio::time::Instant::now();
        token.cancel();
        assert_eq!(s.watch(Duration::from_secs(5)).await, Ended::Cancelled);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
