//! The election against an in-memory Lease API (optimistic concurrency as the API server
//! does it), on a paused clock: each test states what a replica may and must do, when.

use std::sync::Mutex;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;
use crate::config::ObjectName;

/// The stored Lease (JSON) and whether the API answers at all.
#[derive(Default)]
struct LeaseApi {
    lease: Option<Value>,
    rv: u64,
    down: bool,
}

type Shared = Arc<Mutex<LeaseApi>>;

fn reply(code: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .body(Body::from(body.to_string().into_bytes()))
        .unwrap()
}

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason})
}

async fn serve(api: Shared, req: Request<Body>) -> Response<Body> {
    let method = req.method().clone();
    let bytes = http_body_util::BodyExt::collect(req.into_body())
        .await
        .unwrap()
        .to_bytes();
    let mut api = api.lock().unwrap();
    if api.down {
        return reply(500, status(500, "InternalError"));
    }
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    match method.as_str() {
        "GET" => match &api.lease {
            Some(l) => reply(200, l.clone()),
            None => reply(404, status(404, "NotFound")),
        },
        "POST" if api.lease.is_some() => reply(409, status(409, "AlreadyExists")),
        "PUT" if body["metadata"]["resourceVersion"].as_str() != Some(&api.rv.to_string()) => {
            reply(409, status(409, "Conflict"))
        }
        "POST" | "PUT" => {
            api.rv += 1;
            let mut lease = body;
            lease["metadata"]["resourceVersion"] = api.rv.to_string().into();
            api.lease = Some(lease.clone());
            reply(200, lease)
        }
        m => panic!("unexpected {m}"),
    }
}

fn client(api: &Shared) -> Client {
    let api = api.clone();
    let service = tower::service_fn(move |req| {
        let api = api.clone();
        async move { Ok::<_, std::convert::Infallible>(serve(api, req).await) }
    });
    Client::new(service, "default")
}

fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: ObjectName {
            namespace: "ns".into(),
            name: "lease".into(),
        },
        identity: identity.into(),
        duration: Duration::from_secs(3),
        renew_interval: Duration::from_secs(1),
    }
}

fn holder(api: &Shared) -> Option<String> {
    api.lock()
        .unwrap()
        .lease
        .as_ref()
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

struct Replica {
    leader: watch::Receiver<bool>,
    may_lead: watch::Sender<bool>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn replica(api: &Shared, identity: &str) -> Replica {
    let (tx, leader) = watch::channel(false);
    let (may_lead, eligibility) = watch::channel(true);
    let shutdown = CancellationToken::new();
    let elector = Elector::new(client(api), config(identity));
    let health = Arc::new(Health::new(Duration::from_secs(60)));
    let task = tokio::spawn(elector.run(
        tx,
        eligibility,
        |eligible: &bool| *eligible,
        health,
        shutdown.clone(),
    ));
    Replica {
        leader,
        may_lead,
        shutdown,
        task,
    }
}

async fn advance(d: Duration) {
    tokio::time::sleep(d).await;
}

#[tokio::test(start_paused = true)]
async fn the_first_replica_acquires_and_keeps_renewing() {
    let api = Shared::default();
    let a = replica(&api, "a");
    advance(Duration::from_millis(100)).await;
    assert!(*a.leader.borrow());
    assert_eq!(holder(&api).as_deref(), Some("a"));
    let rv = api.lock().unwrap().rv;
    advance(Duration::from_secs(10)).await;
    assert!(*a.leader.borrow(), "a renewing leader stays leader");
    assert!(api.lock().unwrap().rv >= rv + 9, "it renewed every second");
    assert_eq!(
        api.lock().unwrap().lease.as_ref().unwrap()["spec"]["leaseTransitions"],
        0
    );
}

#[tokio::test(start_paused = true)]
async fn a_standby_waits_while_the_leader_renews() {
    let api = Shared::default();
    let a = replica(&api, "a");
    advance(Duration::from_millis(100)).await;
    let b = replica(&api, "b");
    advance(Duration::from_secs(20)).await;
    assert!(*a.leader.borrow());
    assert!(!*b.leader.borrow());
    assert_eq!(holder(&api).as_deref(), Some("a"));
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_cannot_renew_steps_down_before_anyone_may_take_over() {
    let api = Shared::default();
    let mut a = replica(&api, "a");
    advance(Duration::from_millis(100)).await;
    assert!(*a.leader.borrow());
    api.lock().unwrap().down = true;
    let outage = tokio::time::Instant::now();
    a.leader.wait_for(|l| !*l).await.unwrap();
    // A standby may take over only a full lease duration (3 s) after it last saw the
    // record change; the leader stops signing before that.
    assert!(
        outage.elapsed() < Duration::from_secs(3),
        "{:?}",
        outage.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_lease_is_stolen_after_one_lease_duration() {
    let api = Shared::default();
    api.lock().unwrap().rv = 7;
    api.lock().unwrap().lease = Some(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "lease", "namespace": "ns", "resourceVersion": "7"},
        "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 3, "leaseTransitions": 4,
                 "renewTime": "2020-01-01T00:00:00.000000Z"}
    }));
    let mut b = replica(&api, "b");
    let started = tokio::time::Instant::now();
    b.leader.wait_for(|l| *l).await.unwrap();
    // Measured on b's own clock from when it first saw the record, not from renewTime.
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let lease = api.lock().unwrap().lease.clone().unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 5);
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_the_lease_and_a_standby_takes_over_at_once() {
    let api = Shared::default();
    let a = replica(&api, "a");
    advance(Duration::from_millis(100)).await;
    let mut b = replica(&api, "b");
    advance(Duration::from_secs(2)).await;
    a.shutdown.cancel();
    a.task.await.unwrap();
    assert_eq!(holder(&api), None, "released");
    let released = tokio::time::Instant::now();
    b.leader.changed().await.unwrap();
    assert!(*b.leader.borrow());
    assert!(
        released.elapsed() <= Duration::from_secs(1),
        "{:?}",
        released.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_cannot_sign_gives_the_lease_up_and_does_not_campaign() {
    let api = Shared::default();
    let mut a = replica(&api, "a");
    advance(Duration::from_millis(100)).await;
    assert!(*a.leader.borrow());
    a.may_lead.send_replace(false);
    a.leader.wait_for(|l| !*l).await.unwrap();
    assert_eq!(holder(&api), None, "released for another replica");
    advance(Duration::from_secs(10)).await;
    assert_eq!(holder(&api), None, "and not taken again");
    let eligible_again = tokio::time::Instant::now();
    a.may_lead.send_replace(true);
    a.leader.wait_for(|l| *l).await.unwrap();
    assert!(
        eligible_again.elapsed() < Duration::from_millis(100),
        "it campaigns at once"
    );
}
