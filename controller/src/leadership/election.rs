//! Leader election with a coordination.k8s.io Lease: only the leader signs and publishes.
//!
//! The algorithm is client-go's: every renew interval the replica reads the Lease; it takes
//! or renews it when it is the holder, when there is no holder, or when the record has not
//! changed for a whole lease duration as measured on *this* replica's monotonic clock (so
//! clock skew between nodes cannot make two leaders). Every write carries the
//! `resourceVersion` it read, so of two replicas racing for the Lease one gets 409 Conflict.
//! A leader that cannot renew within the lease duration less one renew interval steps down
//! (and campaigns again as a standby) before any other replica may take over; on shutdown it releases the
//! Lease so a standby takes over at once. A replica that could not sign if it led (it holds
//! no CA and may not create one) does not campaign, and gives the Lease up if it holds it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::LeaseConfig;
use crate::runtime::admin::{Health, Loop};

#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The last record seen (holder, resourceVersion) and when it was first seen.
    observed: Option<(String, String, Instant)>,
    /// When this replica last renewed successfully as leader.
    last_renewed: Option<Instant>,
}

impl Elector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.name.namespace),
            config,
            observed: None,
            last_renewed: None,
        }
    }

    fn lease(&self, rv: Option<String>, acquire_time: MicroTime, transitions: i32) -> Lease {
        let now = MicroTime(Timestamp::now());
        Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.name.clone()),
                namespace: Some(self.config.name.namespace.clone()),
                resource_version: rv,
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(self.config.duration.as_secs().max(1) as i32),
                acquire_time: Some(acquire_time),
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    /// One round: returns whether this replica holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let name = &self.config.name.name;
        let Some(current) = self.api.get_opt(name).await? else {
            let lease = self.lease(None, MicroTime(Timestamp::now()), 0);
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let rv = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let now = Instant::now();
        let seen_since = match &self.observed {
            Some((h, r, since)) if *h == holder && *r == rv => *since,
            _ => {
                self.observed = Some((holder.clone(), rv.clone(), now));
                now
            }
        };
        let duration = spec
            .lease_duration_seconds
            .map(|s| Duration::from_secs(s.max(1) as u64))
            .unwrap_or(self.config.duration);
        let mine = holder == self.config.identity;
        let expired = holder.is_empty() || now.duration_since(seen_since) >= duration;
        if !mine && !expired {
            return Ok(false);
        }
        let (acquire, transitions) = if mine {
            (
                spec.acquire_time.unwrap_or(MicroTime(Timestamp::now())),
                spec.lease_transitions.unwrap_or(0),
            )
        } else {
            (
                MicroTime(Timestamp::now()),
                spec.lease_transitions.unwrap_or(0) + 1,
            )
        };
        let lease = self.lease(Some(rv), acquire, transitions);
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Releases the Lease if this replica holds it, so a standby need not wait it out.
    pub async fn release(&mut self) {
        self.last_renewed = None;
        let Ok(Some(mut current)) = self.api.get_opt(&self.config.name.name).await else {
            return;
        };
        let Some(spec) = current.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.config.name.name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => info!(lease = %self.config.name, "released the leader Lease"),
            Err(e) => {
                warn!(lease = %self.config.name, error = %e, "could not release the leader Lease")
            }
        }
    }

    /// Runs rounds until `shutdown`, publishing leadership on `leader`. A replica that loses
    /// the Lease (to another replica, or by failing to renew in time) publishes false and
    /// keeps campaigning as a standby; while `may_lead` says no, it does not campaign and
    /// releases the Lease if it holds it.
    pub async fn run<T: Send + Sync>(
        mut self,
        leader: watch::Sender<bool>,
        mut eligibility: watch::Receiver<T>,
        may_lead: impl Fn(&T) -> bool + Send,
        health: Arc<Health>,
        shutdown: CancellationToken,
    ) {
        let mut is_leader = false;
        loop {
            health.beat(Loop::Election);
            let eligible = may_lead(&eligibility.borrow_and_update());
            let round = if eligible {
                // A round may not outlast the renew interval, so a hung API cannot delay stepping down.
                tokio::select! {
                    r = tokio::time::timeout(self.config.renew_interval, self.try_acquire_or_renew()) => {
                        r.unwrap_or_else(|_| Err(kube::Error::Service("leader election round timed out".into())))
                    }
                    _ = shutdown.cancelled() => break,
                }
            } else {
                if is_leader {
                    warn!(lease = %self.config.name, "this replica cannot sign; giving up the leader Lease");
                    is_leader = false;
                    leader.send_replace(false);
                    self.release().await;
                }
                Ok(false)
            };
            let now = Instant::now();
            match round {
                Ok(true) => {
                    self.last_renewed = Some(now);
                    if !is_leader {
                        info!(lease = %self.config.name, identity = %self.config.identity, "became the leader");
                        is_leader = true;
                        leader.send_replace(true);
                    }
                    health.set_campaigned();
                }
                Ok(false) if is_leader => {
                    warn!(lease = %self.config.name, "lost the leader Lease to another replica; standing by");
                    is_leader = false;
                    leader.send_replace(false);
                }
                Ok(false) if eligible => {
                    health.set_campaigned();
                    debug!(lease = %self.config.name, "another replica leads")
                }
                Ok(false) => {
                    debug!(lease = %self.config.name, "this replica cannot sign; not campaigning")
                }
                Err(e) => {
                    warn!(lease = %self.config.name, error = %e, "leader election round failed");
                    // Step down before a standby may take over: it waits a full lease duration
                    // from when it last saw the record change; we stop one renew interval sooner.
                    let deadline = self
                        .config
                        .duration
                        .saturating_sub(self.config.renew_interval);
                    if is_leader
                        && self
                            .last_renewed
                            .is_none_or(|t| now.duration_since(t) >= deadline)
                    {
                        warn!(lease = %self.config.name, "could not renew the Lease in time; stepping down and standing by");
                        is_leader = false;
                        leader.send_replace(false);
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.renew_interval) => {}
                // Able to sign now (or no longer): campaign (or give up) at once.
                changed = eligibility.changed(), if !is_leader || !eligible => {
                    if changed.is_err() { break }
                }
                _ = shutdown.cancelled() => break,
            }
        }
        if is_leader {
            leader.send_replace(false);
            self.release().await;
        }
    }
}

#[cfg(test)]
#[path = "election_tests.rs"]
mod tests;
