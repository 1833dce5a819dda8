//! Runs the reconciler for each waiting request the moment something triggers it.
//!
//! [`run`] reads the cache's watch events ([`crate::requests::cache::watch`]) and the backlog's
//! nudges: each waiting request they name is reconciled at once, on a task of its own, with
//! the cached object as it is then; at most `concurrency` at a time, never two reconciles of
//! one request at once (a trigger that arrives while one runs makes it run once more after),
//! and again after the delay a reconcile asks for ([`Next::RetryAfter`]: a conflict, a
//! transient error's backoff), unless a trigger comes sooner. Runs are held while the cache
//! (re)lists, because the cache shows a list only once it is complete. A request the cache no
//! longer holds (decided or deleted) is not run. A reconcile that panics (a bug) is one
//! request's failure, not the runner's: [`Reconciler::panicked`] says when to try it again,
//! and the others go on. On cancellation nothing new starts and the running reconciles
//! finish; the term's grace bounds them. This replaces kube-runtime's
//! `Controller`, whose scheduler put every trigger on a timer rounded up to the next
//! millisecond, 1–2 ms per request (docs/performance.md).

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::time::{DelayQueue, delay_queue};
use tracing::debug;

use crate::requests::pcr::{Pcr, PcrVersion};

/// What a reconcile asks of the runner for its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing until the request changes (decided, or waiting on purpose).
    AwaitChange,
    /// Reconcile it again after this long, unless something triggers it sooner.
    RetryAfter(Duration),
}

type Key = ObjectRef<Pcr>;

/// What the runner runs for each request.
pub trait Reconciler {
    /// One reconcile of `pcr`, as the cache holds it now.
    fn reconcile(&self, pcr: Arc<Pcr>) -> impl Future<Output = Next> + Send + 'static;
    /// A reconcile of `pcr` panicked with `message`: what to do next.
    fn panicked(&self, pcr: &Pcr, message: &str) -> Next;
}

/// Runs `reconciler` for the requests `events` and `nudges` trigger until `token` is cancelled
/// (or the watch ends, which it does only on a bug: the caller's supervisor notices).
pub async fn run(
    events: impl Stream<Item = Result<Event<Pcr>, watcher::Error>>,
    nudges: impl Stream<Item = Key>,
    cache: Store<Pcr>,
    version: PcrVersion,
    concurrency: u16,
    reconciler: impl Reconciler,
    token: CancellationToken,
) {
    let mut events = std::pin::pin!(events);
    let mut nudges = std::pin::pin!(nudges.fuse());
    let mut queue = Queue::new(usize::from(concurrency.max(1)));
    let mut running = JoinSet::new();
    loop {
        while let Some(key) = queue.next_to_start() {
            match cache.get(&key) {
                Some(pcr) => {
                    let run = AssertUnwindSafe(reconciler.reconcile(pcr.clone())).catch_unwind();
                    running.spawn(async move {
                        let ended = run.await.map_err(|panic| (pcr, panic_message(&*panic)));
                        (key, ended)
                    });
                }
                None => queue.finished(&key, Next::AwaitChange),
            }
        }
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            Some(done) = running.join_next(), if !running.is_empty() => {
                // Each task catches its reconcile's panic, and is aborted only with the runner.
                let (key, ended) = done.expect("a reconcile's task ends with its request");
                let next = ended.unwrap_or_else(|(pcr, message)| reconciler.panicked(&pcr, &message));
                queue.finished(&key, next);
            }
            event = events.next() => match event {
                Some(Ok(Event::Apply(pcr) | Event::InitApply(pcr))) => {
                    queue.trigger(ObjectRef::from_obj_with(&pcr, version));
                }
                Some(Ok(Event::Init)) => queue.listing = true,
                Some(Ok(Event::InitDone)) => queue.listing = false,
                Some(Ok(Event::Delete(_))) => {}
                Some(Err(e)) => debug!(error = %e, "request watch"),
                None => break,
            },
            Some(key) = nudges.next() => queue.trigger(key),
            Some(expired) = queue.later.next(), if !queue.later.is_empty() => {
                let key = expired.into_inner();
                queue.later_keys.remove(&key);
                queue.trigger(key);
            }
        }
    }
    // Let what runs finish; starting nothing new.
    while running.join_next().await.is_some() {}
}

/// A panic's message, when it has one (`panic!` with a literal or a format).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".to_string(),
    }
}

/// Which requests run, wait for a slot, wait for their run to end, or wait for a time.
struct Queue {
    concurrency: usize,
    /// While the cache (re)lists, nothing starts.
    listing: bool,
    /// Triggered and not running: in order, each once.
    ready: VecDeque<Key>,
    queued: HashSet<Key>,
    running: HashSet<Key>,
    /// Triggered while running: run once more when the run ends.
    again: HashSet<Key>,
    /// Asked to run again later, each once at its earliest time.
    later: DelayQueue<Key>,
    later_keys: HashMap<Key, delay_queue::Key>,
}

impl Queue {
    fn new(concurrency: usize) -> Self {
        Queue {
            concurrency,
            listing: true,
            ready: VecDeque::new(),
            queued: HashSet::new(),
            running: HashSet::new(),
            again: HashSet::new(),
            later: DelayQueue::new(),
            later_keys: HashMap::new(),
        }
    }

    /// `key` should run now: at once if a slot is free, after its run if it runs.
    fn trigger(&mut self, key: Key) {
        if let Some(at) = self.later_keys.remove(&key) {
            self.later.remove(&at);
        }
        if self.running.contains(&key) {
            self.again.insert(key);
        } else if self.queued.insert(key.clone()) {
            self.ready.push_back(key);
        }
    }

    /// The next request to start, now counted as running; none while listing or when every
    /// slot is taken.
    fn next_to_start(&mut self) -> Option<Key> {
        if self.listing || self.running.len() >= self.concurrency {
            return None;
        }
        let key = self.ready.pop_front()?;
        self.queued.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    /// `key`'s run ended (or never began, its request gone) asking for `next`.
    fn finished(&mut self, key: &Key, next: Next) {
        self.running.remove(key);
        if self.again.remove(key) {
            self.trigger(key.clone());
        } else if let Next::RetryAfter(delay) = next {
            self.retry_after(key.clone(), delay);
        }
    }

    fn retry_after(&mut self, key: Key, delay: Duration) {
        if self.queued.contains(&key) {
            return;
        }
        match self.later_keys.get(&key) {
            Some(at) => {
                let when = tokio::time::Instant::now() + delay;
                if when < self.later.deadline(at) {
                    self.later.reset_at(at, when);
                }
            }
            None => {
                let at = self.later.insert(key.clone(), delay);
                self.later_keys.insert(key, at);
            }
        }
    }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
