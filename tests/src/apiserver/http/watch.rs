//! Watch: events from a resourceVersion on, bookmarks when asked, `timeoutSeconds`, and a
//! resourceVersion older than the store keeps answered with 410 Gone as an ERROR event.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use serde_json::{Value, json};

use super::super::Shared;
use super::super::store::{Change, Selector};
use super::{Body, Route, full, query_param};

impl Shared {
    pub(super) async fn watch(self: Arc<Self>, route: &Route<'_>, query: &str) -> Response<Body> {
        let fields = Selector::parse(query_param(query, "fieldSelector").as_deref());
        let labels = Selector::parse(query_param(query, "labelSelector").as_deref());
        let bookmarks = query_param(query, "allowWatchBookmarks").as_deref() == Some("true");
        let timeout = Duration::from_secs(
            query_param(query, "timeoutSeconds")
                .and_then(|t| t.parse().ok())
                .unwrap_or(1800),
        );
        let since = query_param(query, "resourceVersion")
            .and_then(|rv| rv.parse::<u64>().ok())
            .filter(|rv| *rv > 0);
        let rt = route.rt.clone();
        let (version, namespace) = (route.version.clone(), route.namespace.clone());

        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1024);
        let (initial, mut live, last_rv) = {
            let store = self.store.lock().unwrap();
            let live = store.changes.subscribe();
            let initial: Option<Vec<Value>> = match since {
                Some(rv) => store.changes_since(rv).map(|cs| {
                    cs.iter()
                        .filter(|c| c.plural == rt.plural)
                        .map(|c| json!({"type": c.kind.as_str(), "object": c.object}))
                        .collect()
                }),
                None => Some(
                    store
                        .list(rt.plural, namespace.as_deref())
                        .map(|(_, o)| json!({"type": "ADDED", "object": o}))
                        .collect(),
                ),
            };
            (initial, live, store.resource_version())
        };
        let Some(initial) = initial else {
            let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {} ({})", since.unwrap_or(0), self.store.lock().unwrap().oldest_watchable()),
                "reason": "Expired", "code": 410}});
            return full(StatusCode::OK, gone);
        };
        let shared = self.clone();
        let mut epoch = self.faults.watch_epoch.subscribe();
        tokio::spawn(async move {
            let matches = |obj: &Value| {
                namespace
                    .as_deref()
                    .is_none_or(|ns| obj["metadata"]["namespace"] == ns)
                    && fields.matches_fields(obj)
                    && labels.matches_labels(obj)
            };
            let line = |kind: &str, obj: &Value| {
                let mut s =
                    json!({"type": kind, "object": shared.present(&rt, &version, obj)}).to_string();
                s.push('\n');
                Bytes::from(s)
            };
            let mut sent_rv = since.unwrap_or(last_rv).max(last_rv);
            // Every change up to `read_rv` has been taken from the stream by this watch (sent,
            // filtered out, or held while stalled): the furthest a bookmark may point. The store's
            // current resourceVersion may be further, with this watch's changes still queued; a
            // bookmark there would let a client resume past them, which kube-apiserver never does.
            let mut read_rv = last_rv;
            for ev in initial {
                let presented = shared.present(&rt, &version, &ev["object"]);
                if matches(&presented)
                    && tx
                        .send(line(ev["type"].as_str().unwrap(), &ev["object"]))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut ticker = tokio::time::interval(Duration::from_millis(500));
            let mut held: Vec<Arc<Change>> = Vec::new();
            loop {
                tokio::select! {
                    change = live.recv() => match change.inspect(|c| read_rv = read_rv.max(c.rv)) {
                        Ok(c) if c.plural == rt.plural && c.rv > sent_rv => {
                            if shared.faults.stall_watches.load(Ordering::Relaxed) {
                                held.push(c);
                                continue;
                            }
                            for c in held.drain(..).chain(std::iter::once(c)) {
                                sent_rv = c.rv;
                                let presented = shared.present(&rt, &version, &c.object);
                                if matches(&presented) && tx.send(line(c.kind.as_str(), &c.object)).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(_) => {}
                        // Too slow a reader: end the watch; the client re-watches or relists.
                        Err(_) => return,
                    },
                    _ = ticker.tick() => {
                        if !shared.faults.stall_watches.load(Ordering::Relaxed) {
                            for c in held.drain(..) {
                                sent_rv = c.rv;
                                let presented = shared.present(&rt, &version, &c.object);
                                if matches(&presented) && tx.send(line(c.kind.as_str(), &c.object)).await.is_err() {
                                    return;
                                }
                            }
                            if bookmarks {
                                let rv = read_rv.max(sent_rv);
                                let bm = json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version(&version), "metadata": {"resourceVersion": rv.to_string()}}});
                                if tx.send(Bytes::from(format!("{bm}\n"))).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    _ = epoch.changed() => return,
                    _ = &mut deadline => return,
                }
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
        });
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("transfer-encoding", "chunked")
            .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
            .expect("valid response")
    }
}
