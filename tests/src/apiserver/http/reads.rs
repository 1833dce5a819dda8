//! Reads: get one object, list a collection with `limit`/`continue` and field and label
//! selectors, each object presented in the version asked for.

use std::sync::Arc;

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::super::store::{Key, Selector};
use super::super::{Shared, Snapshot};
use super::{Body, Route, full, not_found, query_param, status_error};

impl Shared {
    pub(super) fn key(&self, route: &Route<'_>, name: &str) -> Key {
        (
            route.rt.plural.to_string(),
            route.namespace.clone().unwrap_or_default(),
            name.to_string(),
        )
    }

    pub(super) fn get(&self, route: &Route<'_>) -> Response<Body> {
        let name = route.name.as_deref().unwrap();
        let store = self.store.lock().unwrap();
        match store.get(&self.key(route, name)) {
            Some(obj) => full(StatusCode::OK, self.present(route.rt, &route.version, obj)),
            None => not_found(&format!("{} {name:?}", route.rt.plural)),
        }
    }

    /// A list, paged as kube-apiserver pages it: the first page fixes a snapshot (the objects
    /// and the resourceVersion at that moment) and every later page continues from that same
    /// snapshot, reporting its resourceVersion; a watch from it then sees every change since.
    /// A continue token that outlived its snapshot (compaction, restart) is 410 Expired.
    pub(super) fn list(&self, route: &Route<'_>, query: &str) -> Response<Body> {
        let limit = query_param(query, "limit")
            .and_then(|l| l.parse::<usize>().ok())
            .filter(|l| *l > 0);
        let (snapshot, offset) = match query_param(query, "continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let found = token.split_once(':').and_then(|(id, offset)| {
                    let snapshot = self.snapshots.lock().unwrap().get(id)?;
                    Some((snapshot, offset.parse::<usize>().ok()?))
                });
                match found {
                    Some(f) => f,
                    None => {
                        return status_error(
                            410,
                            "Expired",
                            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                            &[],
                        );
                    }
                }
            }
            None => {
                let fields = Selector::parse(query_param(query, "fieldSelector").as_deref());
                let labels = Selector::parse(query_param(query, "labelSelector").as_deref());
                let store = self.store.lock().unwrap();
                let items: Vec<Value> = store
                    .list(route.rt.plural, route.namespace.as_deref())
                    .map(|(_, o)| self.present(route.rt, &route.version, o))
                    .filter(|o| fields.matches_fields(o) && labels.matches_labels(o))
                    .collect();
                let snapshot = Arc::new(Snapshot {
                    resource_version: store.resource_version(),
                    items,
                });
                (snapshot, 0)
            }
        };
        let total = snapshot.items.len();
        let end = limit.map(|l| (offset + l).min(total)).unwrap_or(total);
        let page = snapshot
            .items
            .get(offset.min(total)..end)
            .unwrap_or(&[])
            .to_vec();
        let mut metadata = json!({"resourceVersion": snapshot.resource_version.to_string()});
        if end < total {
            let id = self.snapshots.lock().unwrap().keep(snapshot.clone());
            metadata["continue"] = Value::String(format!("{id}:{end}"));
            metadata["remainingItemCount"] = json!(total - end);
        }
        full(
            StatusCode::OK,
            json!({"kind": format!("{}List", route.rt.kind), "apiVersion": route.rt.api_version(&route.version), "metadata": metadata, "items": page}),
        )
    }
}
