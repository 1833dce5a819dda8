//! Following requests to their end: a watch that records each request's terminal condition
//! ([`Terminal`]) as the kubelet sees it, and waits for a set of them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::DynamicObject;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use super::{Created, pcr_resource};

/// The terminal outcome of one request as the kubelet sees it.
#[derive(Debug, Clone)]
pub struct Terminal {
    pub at: Instant,
    pub status: Value,
}

impl Terminal {
    /// The terminal condition type (Issued, Denied, Failed).
    pub fn condition(&self) -> &str {
        self.status["conditions"][0]["type"].as_str().unwrap_or("")
    }

    pub fn reason(&self) -> &str {
        self.status["conditions"][0]["reason"]
            .as_str()
            .unwrap_or("")
    }

    /// The issued leaf's subject alternative names: (URIs, DNS names, IPv4 addresses).
    pub fn sans(&self) -> (Vec<String>, Vec<String>, Vec<String>) {
        let chain = self.status["certificateChain"].as_str().expect("a chain");
        let leaf = pem::parse_many(chain).expect("PEM").remove(0);
        let (_, cert) = X509Certificate::from_der(leaf.contents()).expect("a certificate");
        let san = cert.subject_alternative_name().expect("one SAN extension");
        let (mut uris, mut dns, mut ips) = (vec![], vec![], vec![]);
        for n in san
            .map(|s| s.value.general_names.clone())
            .unwrap_or_default()
        {
            match n {
                GeneralName::URI(u) => uris.push(u.to_string()),
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    ips.push(format!("{}.{}.{}.{}", b[0], b[1], b[2], b[3]))
                }
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        (uris, dns, ips)
    }
}

/// Follows every PCR (a watch, as the kubelet has) and records when each became terminal.
#[derive(Debug, Clone)]
pub struct Tracker {
    seen: Arc<Mutex<HashMap<(String, String), Terminal>>>,
    changed: Arc<tokio::sync::Notify>,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if Arc::strong_count(&self.task) == 1 {
            self.task.abort();
        }
    }
}

impl Tracker {
    pub fn start(client: Client, version: &str) -> Tracker {
        let api: Api<DynamicObject> = Api::all_with(client, &pcr_resource(version));
        let seen: Arc<Mutex<HashMap<(String, String), Terminal>>> = Arc::default();
        let changed = Arc::new(tokio::sync::Notify::new());
        let (s, c) = (seen.clone(), changed.clone());
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(ev) = stream.next().await {
                let Ok(obj) = ev else { continue };
                let status = obj.data.get("status").cloned().unwrap_or(Value::Null);
                if crate::apiserver::validate::is_terminal(&status) {
                    let key = (obj.namespace().unwrap_or_default(), obj.name_any());
                    s.lock().unwrap().entry(key).or_insert(Terminal {
                        at: Instant::now(),
                        status,
                    });
                    c.notify_waiters();
                }
            }
        });
        Tracker {
            seen,
            changed,
            task: Arc::new(task),
        }
    }

    pub fn get(&self, c: &Created) -> Option<Terminal> {
        self.seen
            .lock()
            .unwrap()
            .get(&(c.namespace.clone(), c.name.clone()))
            .cloned()
    }

    /// Waits until every request in `created` is terminal or `timeout` passes; returns the
    /// outcome of each (None: still pending).
    pub async fn wait_all(&self, created: &[Created], timeout: Duration) -> Vec<Option<Terminal>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            let outcomes: Vec<_> = created.iter().map(|c| self.get(c)).collect();
            if outcomes.iter().all(Option::is_some) || tokio::time::Instant::now() >= deadline {
                return outcomes;
            }
            let _ = tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(200)),
                notified,
            )
            .await;
        }
    }
}
