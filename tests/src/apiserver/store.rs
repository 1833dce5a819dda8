//! The test API server's storage: objects as JSON, one resourceVersion counter, and a bounded
//! history of changes for watches.
//!
//! Like etcd behind kube-apiserver, every change bumps a global resourceVersion and is kept in
//! a history; a watch from a resourceVersion older than the oldest kept change gets 410 Gone.
//! [`Store::compact`] drops the history (what an API server restart or etcd compaction does)
//! while keeping the data.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

/// (resource plural, namespace or "", name)
pub type Key = (String, String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub plural: String,
    pub kind: EventType,
    pub object: Value,
}

#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// Changes before this resourceVersion are gone (410 for watches from older ones).
    oldest_watchable: u64,
    pub changes: broadcast::Sender<Arc<Change>>,
}

/// A parsed field or label selector: (path or label, wanted value, equal?) terms, all ANDed.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    terms: Vec<(String, Option<String>, bool)>,
}

impl Selector {
    /// Parses `a=b,c!=d,e` (an `e` alone means "label exists").
    pub fn parse(s: Option<&str>) -> Selector {
        let mut terms = Vec::new();
        for part in s
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            if let Some((k, v)) = part.split_once("!=") {
                terms.push((k.trim().to_string(), Some(v.trim().to_string()), false));
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                terms.push((k.trim().to_string(), Some(v.trim().to_string()), true));
            } else {
                terms.push((part.to_string(), None, true));
            }
        }
        Selector { terms }
    }

    /// Field selector: dotted JSON paths (`spec.signerName`, `metadata.name`).
    pub fn matches_fields(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(path, want, eq)| {
            let got = path
                .split('.')
                .try_fold(obj, |v, k| v.get(k))
                .and_then(Value::as_str)
                .unwrap_or("");
            (Some(got) == want.as_deref()) == *eq
        })
    }

    /// Label selector over `metadata.labels`.
    pub fn matches_labels(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        self.terms.iter().all(|(k, want, eq)| {
            let got = labels.and_then(|l| l.get(k)).and_then(Value::as_str);
            match want {
                None => got.is_some(),
                Some(w) => (got == Some(w.as_str())) == *eq,
            }
        })
    }
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        let (changes, _) = broadcast::channel(65_536);
        Store {
            objects: BTreeMap::new(),
            rv: 1,
            history: VecDeque::new(),
            history_limit,
            oldest_watchable: 1,
            changes,
        }
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn oldest_watchable(&self) -> u64 {
        self.oldest_watchable
    }

    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of `plural` (in `namespace` if given), in key order.
    pub fn list<'a>(
        &'a self,
        plural: &'a str,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        self.objects
            .iter()
            .filter(move |((p, ns, _), _)| p == plural && namespace.is_none_or(|n| n == ns))
    }

    /// Stores `obj` under `key` with a new resourceVersion and records the change.
    pub fn put(&mut self, key: Key, mut obj: Value) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        let kind = if self.objects.contains_key(&key) {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.objects.insert(key.clone(), obj.clone());
        self.record(key, kind, obj.clone());
        obj
    }

    pub fn delete(&mut self, key: &Key) -> Option<Value> {
        let mut obj = self.objects.remove(key)?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = Value::String(self.rv.to_string());
        self.record(key.clone(), EventType::Deleted, obj.clone());
        Some(obj)
    }

    fn record(&mut self, key: Key, kind: EventType, object: Value) {
        let change = Arc::new(Change {
            rv: self.rv,
            plural: key.0,
            kind,
            object,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            let dropped = self.history.pop_front().expect("non-empty");
            self.oldest_watchable = dropped.rv + 1;
        }
        let _ = self.changes.send(change);
    }

    /// Changes after `rv`, or None if some of them are no longer kept (410 Gone).
    pub fn changes_since(&self, rv: u64) -> Option<Vec<Arc<Change>>> {
        if rv + 1 < self.oldest_watchable {
            return None;
        }
        Some(self.history.iter().filter(|c| c.rv > rv).cloned().collect())
    }

    /// Forgets the change history, as a restarted API server does: watches from any older
    /// resourceVersion now get 410 Gone and must relist.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest_watchable = self.rv + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors() {
        let obj = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"signerName": "e.com/s"}});
        assert!(
            Selector::parse(Some("spec.signerName=e.com/s,metadata.name=a")).matches_fields(&obj)
        );
        assert!(!Selector::parse(Some("spec.signerName=other/s")).matches_fields(&obj));
        assert!(Selector::parse(Some("spec.signerName!=other/s")).matches_fields(&obj));
        assert!(Selector::parse(Some("x=1")).matches_labels(&obj));
        assert!(Selector::parse(Some("x")).matches_labels(&obj));
        assert!(!Selector::parse(Some("y")).matches_labels(&obj));
        assert!(Selector::parse(None).matches_labels(&obj));
    }

    #[test]
    fn history_is_bounded_and_compaction_forces_410() {
        let mut s = Store::new(2);
        let k = |n: &str| ("things".to_string(), "ns".to_string(), n.to_string());
        s.put(k("a"), json!({"metadata": {}}));
        s.put(k("b"), json!({"metadata": {}}));
        s.put(k("c"), json!({"metadata": {}}));
        assert!(s.changes_since(1).is_none(), "the first change was dropped");
        assert_eq!(s.changes_since(2).unwrap().len(), 2);
        s.compact();
        assert!(s.changes_since(3).is_none());
        assert_eq!(s.changes_since(s.resource_version()).unwrap().len(), 0);
    }
}
