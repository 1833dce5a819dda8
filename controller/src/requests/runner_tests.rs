//! The runner against a cache fed as the reflector feeds it, with a reconcile that records when
//! each run starts and ends only when the test lets it. Time is paused: a wait for a timer
//! shows as time passing.

use std::collections::HashMap;
use std::sync::Mutex;

use futures::channel::mpsc;
use kube::runtime::reflector::store::Writer;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::*;
use crate::requests::pcr::tests_support;

const VERSION: PcrVersion = PcrVersion::V1beta1;
/// Longer than anything the runner may take to start a run.
const PATIENCE: Duration = Duration::from_secs(3600);

struct Harness {
    cache: Writer<Pcr>,
    events: mpsc::UnboundedSender<Result<Event<Pcr>, watcher::Error>>,
    nudges: mpsc::UnboundedSender<Key>,
    /// The name of each run as it starts, and when.
    starts: tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    /// One permit lets one run end.
    release: Arc<Semaphore>,
    /// What a request's runs ask for next (`AwaitChange` unless set).
    next: Arc<Mutex<HashMap<String, Next>>>,
    /// Runs that have ended.
    ended: Arc<Mutex<Vec<String>>>,
    /// The panics the runner reported: request, message.
    panics: Arc<Mutex<Vec<(String, String)>>>,
    token: CancellationToken,
    runner: tokio::task::JoinHandle<()>,
}

fn start(concurrency: u16) -> Harness {
    let cache = Writer::new(VERSION);
    let (events, events_rx) = mpsc::unbounded();
    let (nudges, nudges_rx) = mpsc::unbounded();
    let (starts_tx, starts) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let next = Arc::new(Mutex::new(HashMap::new()));
    let ended = Arc::new(Mutex::new(Vec::new()));
    let panics = Arc::new(Mutex::new(Vec::new()));
    let token = CancellationToken::new();
    let reconciler = Recorder {
        starts: starts_tx,
        release: release.clone(),
        next: next.clone(),
        ended: ended.clone(),
        at_once: Default::default(),
        panics: panics.clone(),
    };
    let runner = tokio::spawn(run(
        events_rx,
        nudges_rx,
        cache.as_reader(),
        VERSION,
        concurrency,
        reconciler,
        token.clone(),
    ));
    Harness {
        cache,
        events,
        nudges,
        starts,
        release,
        next,
        ended,
        panics,
        token,
        runner,
    }
}

/// A reconcile that records its start, ends when the test lets it, and asks for what the
/// test set; a request named `panics` panics instead.
struct Recorder {
    starts: tokio::sync::mpsc::UnboundedSender<(String, Instant)>,
    release: Arc<Semaphore>,
    next: Arc<Mutex<HashMap<String, Next>>>,
    ended: Arc<Mutex<Vec<String>>>,
    at_once: Arc<Mutex<HashMap<String, usize>>>,
    panics: Arc<Mutex<Vec<(String, String)>>>,
}

impl Reconciler for Recorder {
    fn reconcile(&self, pcr: Arc<Pcr>) -> impl Future<Output = Next> + Send + 'static {
        let name = pcr.metadata.name.clone().unwrap();
        let (release, next, ended, at_once) = (
            self.release.clone(),
            self.next.clone(),
            self.ended.clone(),
            self.at_once.clone(),
        );
        let _ = self.starts.send((name.clone(), Instant::now()));
        async move {
            let running = {
                let mut at_once = at_once.lock().unwrap();
                let n = at_once.entry(name.clone()).or_default();
                *n += 1;
                *n
            };
            assert_eq!(running, 1, "two reconciles of {name} at once");
            release.acquire().await.unwrap().forget();
            *at_once.lock().unwrap().get_mut(&name).unwrap() -= 1;
            ended.lock().unwrap().push(name.clone());
            assert_ne!(name, "panics", "a bug met on {name}");
            next.lock()
                .unwrap()
                .get(&name)
                .copied()
                .unwrap_or(Next::AwaitChange)
        }
    }

    fn panicked(&self, pcr: &Pcr, message: &str) -> Next {
        let name = pcr.metadata.name.clone().unwrap();
        // Any other panic is a failed assertion: ending the runner fails the test (the starts
        // channel closes, so `next_start` and `no_start` fail).
        assert_eq!(name, "panics", "a reconcile's assertion failed: {message}");
        self.panics
            .lock()
            .unwrap()
            .push((name, message.to_string()));
        Next::RetryAfter(Duration::from_secs(5))
    }
}

impl Harness {
    /// A watch event, as the reflector passes it on: applied to the cache first.
    fn event(&mut self, event: Event<Pcr>) {
        self.cache.apply_watcher_event(&event);
        self.events.unbounded_send(Ok(event)).unwrap();
    }

    /// The initial list, done, with these requests waiting.
    fn listed(&mut self, names: &[&str]) {
        self.event(Event::Init);
        for name in names {
            self.event(Event::InitApply(tests_support::pcr(name)));
        }
        self.event(Event::InitDone);
    }

    /// A request filed or changed.
    fn applied(&mut self, name: &str) {
        self.event(Event::Apply(tests_support::pcr(name)));
    }

    fn nudge(&self, name: &str) {
        let key = ObjectRef::new_with(name, VERSION).within("ns");
        self.nudges.unbounded_send(key).unwrap();
    }

    /// The next run to start, and how long after now it started.
    async fn next_start(&mut self) -> (String, Duration) {
        let now = Instant::now();
        let (name, at) = tokio::time::timeout(PATIENCE, self.starts.recv())
            .await
            .expect("a run starts")
            .unwrap();
        (name, at - now)
    }

    /// Asserts no run starts (for as long as the test's clock can tell).
    async fn no_start(&mut self) {
        let started = tokio::time::timeout(PATIENCE, self.starts.recv()).await;
        assert!(started.is_err(), "nothing should start: {started:?}");
    }

    fn let_one_end(&self) {
        self.release.add_permits(1);
    }

    fn retry_after(&self, name: &str, delay: Duration) {
        self.next
            .lock()
            .unwrap()
            .insert(name.into(), Next::RetryAfter(delay));
    }
}

#[tokio::test(start_paused = true)]
async fn a_filed_request_starts_at_once_with_no_timer_between() {
    let mut h = start(4);
    h.listed(&[]);
    h.applied("a");
    assert_eq!(h.next_start().await, ("a".into(), Duration::ZERO));
    h.nudge("a");
    h.let_one_end();
    assert_eq!(h.next_start().await, ("a".into(), Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn nothing_starts_while_the_cache_lists_and_every_listed_request_starts_after() {
    let mut h = start(4);
    h.event(Event::Init);
    h.event(Event::InitApply(tests_support::pcr("a")));
    h.event(Event::InitApply(tests_support::pcr("b")));
    h.no_start().await;
    h.event(Event::InitDone);
    assert_eq!(h.next_start().await.0, "a");
    assert_eq!(h.next_start().await.0, "b");
}

#[tokio::test(start_paused = true)]
async fn triggers_while_a_request_runs_run_it_once_more_after_never_beside() {
    let mut h = start(4);
    h.listed(&["a"]);
    assert_eq!(h.next_start().await.0, "a");
    h.applied("a");
    h.nudge("a");
    h.applied("a");
    h.no_start().await;
    h.let_one_end();
    assert_eq!(h.next_start().await, ("a".into(), Duration::ZERO));
    h.let_one_end();
    h.no_start().await;
    assert_eq!(*h.ended.lock().unwrap(), ["a", "a"]);
}

#[tokio::test(start_paused = true)]
async fn at_most_concurrency_requests_run_at_once() {
    let mut h = start(2);
    h.listed(&["a", "b", "c"]);
    assert_eq!(h.next_start().await.0, "a");
    assert_eq!(h.next_start().await.0, "b");
    h.no_start().await;
    h.let_one_end();
    assert_eq!(h.next_start().await, ("c".into(), Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn a_retry_starts_after_its_delay_unless_something_triggers_it_sooner() {
    let mut h = start(4);
    h.retry_after("a", Duration::from_secs(8));
    h.listed(&["a"]);
    h.next_start().await;
    h.let_one_end();
    assert_eq!(h.next_start().await, ("a".into(), Duration::from_secs(8)));

    // Again asked for in 8 s, but changed after 1 s: it runs then, and not again at 8 s.
    h.let_one_end();
    tokio::time::sleep(Duration::from_secs(1)).await;
    h.next.lock().unwrap().clear();
    h.applied("a");
    assert_eq!(h.next_start().await, ("a".into(), Duration::ZERO));
    h.let_one_end();
    h.no_start().await;
}

#[tokio::test(start_paused = true)]
async fn a_request_the_cache_no_longer_holds_is_not_run() {
    let mut h = start(4);
    h.listed(&[]);
    h.nudge("never-filed");
    h.applied("a");
    h.event(Event::Delete(tests_support::pcr("a")));
    h.no_start().await;
    h.applied("b");
    assert_eq!(h.next_start().await.0, "b");
}

#[tokio::test(start_paused = true)]
async fn on_cancellation_the_running_reconciles_finish_and_nothing_new_starts() {
    let mut h = start(4);
    h.listed(&["a"]);
    assert_eq!(h.next_start().await.0, "a");
    h.token.cancel();
    tokio::task::yield_now().await;
    h.applied("b");
    assert!(
        !h.runner.is_finished(),
        "it waits for the running reconcile"
    );
    h.let_one_end();
    tokio::time::timeout(PATIENCE, &mut h.runner)
        .await
        .expect("the runner ends")
        .unwrap();
    assert_eq!(*h.ended.lock().unwrap(), ["a"]);
    assert_eq!(h.starts.recv().await, None, "b never started");
}

#[tokio::test(start_paused = true)]
async fn a_reconcile_that_panics_is_that_requests_retry_and_the_others_go_on() {
    let mut h = start(4);
    h.listed(&["panics", "b"]);
    assert_eq!(h.next_start().await.0, "panics");
    assert_eq!(h.next_start().await.0, "b");
    h.let_one_end();
    h.let_one_end();
    // Retried when `panicked` asks, and the runner still serves new requests.
    assert_eq!(
        h.next_start().await,
        ("panics".into(), Duration::from_secs(5))
    );
    let panics = h.panics.lock().unwrap().clone();
    assert_eq!(panics.len(), 1);
    assert_eq!(panics[0].0, "panics");
    assert!(panics[0].1.contains("a bug met on panics"), "{panics:?}");
    h.applied("c");
    assert_eq!(h.next_start().await, ("c".into(), Duration::ZERO));
    assert!(!h.runner.is_finished());
}
