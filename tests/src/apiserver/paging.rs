//! Paged lists: a list's first page fixes a snapshot, later pages continue from it by a
//! `continue` token, and old snapshots are forgotten as etcd compacts old revisions.

use std::sync::Arc;

use serde_json::Value;

/// One list result, fixed at its first page so that later pages continue from it.
#[derive(Debug)]
pub struct Snapshot {
    pub resource_version: u64,
    pub items: Vec<Value>,
}

/// The snapshots that paged lists may still continue from: the newest few, forgotten on
/// compaction as etcd forgets old revisions.
#[derive(Debug, Default)]
pub struct Snapshots {
    next_id: u64,
    pub(super) kept: std::collections::VecDeque<(String, Arc<Snapshot>)>,
}

impl Snapshots {
    const KEPT: usize = 64;

    pub(super) fn keep(&mut self, snapshot: Arc<Snapshot>) -> String {
        if let Some((id, _)) = self.kept.iter().find(|(_, s)| Arc::ptr_eq(s, &snapshot)) {
            return id.clone();
        }
        self.next_id += 1;
        let id = format!("s{}", self.next_id);
        self.kept.push_back((id.clone(), snapshot));
        while self.kept.len() > Self::KEPT {
            self.kept.pop_front();
        }
        id
    }

    pub(super) fn get(&self, id: &str) -> Option<Arc<Snapshot>> {
        self.kept
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, s)| s.clone())
    }
}
