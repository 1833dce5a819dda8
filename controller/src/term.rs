//! One leadership term: the CA to sign with, its roots published, then the controller — all
//! as supervised tasks that end together.
//!
//! [`run`] first settles the CA: the one this process holds, or — on a fresh install only —
//! a new one it generates and stores create-only (see [`crate::ca`]). It publishes the CA's
//! roots in the trust bundle before anything is signed under it, then runs three tasks:
//! `ca` (follow the [`CaView`]: publish a new CA's roots and then sign with it, put a missing
//! Secret back from memory, repair trust-bundle drift), `readiness` (report ready once the
//! request cache has synced) and `controller` (kube-runtime's `Controller` driving
//! [`crate::reconcile`]). The term ends when its token is cancelled (leadership lost, or
//! shutdown) or when a task fails; either way every task stops within [`GRACE`], so a term
//! can never outlive its leadership.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::Api;
use kube::runtime::Controller;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use signer_core::{CaPem, Signer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::admin::{Health, Loop};
use crate::ca::{CaView, Created, LoadedCa, SecretStore, Synced, TrustBundle};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pcr::Pcr;
use crate::reconcile::{self, Context};
use crate::retry::{self, Failures};
use crate::supervisor::{Ended, Lifetime, Supervisor};

/// How long a term's tasks get to stop once the term ends, before they are aborted.
pub const GRACE: Duration = Duration::from_secs(5);

/// Everything a term needs; built once per process.
pub struct Parts {
    pub cluster: Cluster,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub ca_view: watch::Receiver<CaView>,
    pub ca_secret: SecretStore,
    pub trust_bundle: Option<TrustBundle>,
    pub recorder: Recorder,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parts")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// How a term ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TermEnd {
    /// Its token was cancelled: leadership lost, or shutdown.
    Stopped,
    /// This process cannot sign (it holds no CA and may not create one).
    CannotSign,
    /// A task of the term failed.
    Failed(Ended),
}

/// Runs one term until `token` is cancelled or it fails.
pub async fn run(parts: Arc<Parts>, token: CancellationToken) -> TermEnd {
    parts.health.set_ready(false);
    parts.metrics.leader.set(1);
    let end = run_term(&parts, &token).await;
    token.cancel();
    parts.metrics.leader.set(0);
    end
}

async fn run_term(parts: &Arc<Parts>, token: &CancellationToken) -> TermEnd {
    let stopped_or = |otherwise| {
        if token.is_cancelled() {
            TermEnd::Stopped
        } else {
            otherwise
        }
    };
    let Some(ca) = settle_ca(parts, token).await else {
        return stopped_or(TermEnd::CannotSign);
    };
    if publish(parts, &ca, token).await.is_none() {
        return TermEnd::Stopped;
    }
    let (signer_tx, signer_rx) = watch::channel(Arc::new(Signer::new(
        parts.config.policy.clone(),
        ca.ca.clone(),
    )));

    let Parts {
        cluster, config, ..
    } = parts.as_ref();
    let api = Api::<Pcr>::all_with(cluster.client.clone(), &cluster.pcr);
    let watch_config =
        watcher::Config::default().fields(&format!("spec.signerName={}", config.signer_name));
    let controller = Controller::new_with(api, watch_config, cluster.pcr.clone())
        .with_config(ControllerConfig::default().concurrency(config.concurrency));
    let cache = controller.store();
    let context = Arc::new(Context {
        client: cluster.client.clone(),
        pcr_resource: cluster.pcr.clone(),
        signer_name: config.signer_name.clone(),
        signer: signer_rx,
        metrics: parts.metrics.clone(),
        recorder: parts.recorder.clone(),
        failures: Failures::default(),
        cache: cache.clone(),
    });

    let mut tasks = Supervisor::new("term", token.clone(), parts.metrics.clone())
        .with_heartbeat(parts.health.clone(), Loop::Leadership);
    tasks.spawn(
        "ca",
        Lifetime::UntilCancelled,
        keep_ca(parts.clone(), ca, signer_tx, token.clone()),
    );
    tasks.spawn(
        "readiness",
        Lifetime::OneShot,
        report_ready(cache, parts.health.clone(), token.clone()),
    );
    tasks.spawn(
        "controller",
        Lifetime::UntilCancelled,
        controller
            .graceful_shutdown_on(token.clone().cancelled_owned())
            .run(reconcile::reconcile, reconcile::error_policy, context)
            .for_each(|result| async move {
                if let Err(e) = result {
                    debug!(error = %e, "controller event");
                }
            }),
    );
    match tasks.watch(GRACE).await {
        Ended::Cancelled => TermEnd::Stopped,
        failed => TermEnd::Failed(failed),
    }
}

/// The CA this term signs with: the one this process holds, or a new one on a fresh install.
/// None if the term ended first or this process cannot sign.
async fn settle_ca(parts: &Parts, token: &CancellationToken) -> Option<LoadedCa> {
    let mut view_rx = parts.ca_view.clone();
    loop {
        let view = view_rx.borrow_and_update().clone();
        if let Some(known) = view.known {
            return Some(known);
        }
        if view.fresh_install() {
            let ca = &parts.config.ca;
            let pem = match CaPem::generate(
                ca.key_type,
                parts.config.policy.trust_domain(),
                ca.validity,
                std::time::SystemTime::now(),
            )
            .and_then(LoadedCa::load)
            {
                Ok(loaded) => loaded,
                Err(e) => {
                    error!(error = %e, "generating a CA failed");
                    return None;
                }
            };
            match retry::retry("creating the CA Secret", token, || {
                parts.ca_secret.create(&pem.pem)
            })
            .await?
            {
                Created::Created => {
                    info!(secret = %parts.ca_secret.name, subject = pem.ca.subject(), "generated a new CA and stored it");
                    return Some(pem);
                }
                // Another replica created it first: its CA arrives through the view.
                Created::AlreadyExists => {
                    info!(secret = %parts.ca_secret.name, "another replica created the CA first; waiting for it")
                }
            }
        } else if view.secret.is_some() {
            return None;
        }
        tokio::select! {
            changed = view_rx.changed() => changed.ok()?,
            _ = token.cancelled() => return None,
        }
    }
}

/// Publishes `ca`'s roots (keeping retired ones), retrying until done; None if the term
/// ended first. Without a ClusterTrustBundle API there is nothing to publish.
async fn publish(parts: &Parts, ca: &LoadedCa, token: &CancellationToken) -> Option<()> {
    let Some(tb) = &parts.trust_bundle else {
        return Some(());
    };
    let retain_for = parts.config.policy.max_leaf_lifetime();
    let done = retry::retry(
        "publishing the trust bundle (not signing with this CA until it is published)",
        token,
        || tb.sync(ca.ca.trust_bundle_pem(), retain_for),
    )
    .await?;
    if done != Synced::Unchanged {
        info!(name = %tb.name, ?done, "published the trust bundle");
    }
    Some(())
}

/// For the rest of the term: act on the CA view, and repair trust-bundle drift.
async fn keep_ca(
    parts: Arc<Parts>,
    mut current: LoadedCa,
    signer: watch::Sender<Arc<Signer>>,
    token: CancellationToken,
) {
    let mut view_rx = parts.ca_view.clone();
    let mut resync = tokio::time::interval(parts.config.ca.trust_bundle_resync);
    resync.tick().await;
    loop {
        let view = view_rx.borrow_and_update().clone();
        if let Some(known) = view.needs_restore() {
            warn!(secret = %parts.ca_secret.name, "the CA Secret is missing; recreating it from the CA in memory");
            match retry::retry("recreating the CA Secret", &token, || {
                parts.ca_secret.create(&known.pem)
            })
            .await
            {
                Some(Created::Created) => {
                    info!(secret = %parts.ca_secret.name, "recreated the CA Secret")
                }
                Some(Created::AlreadyExists) => {}
                None => return,
            }
        }
        if let Some(known) = view.known.filter(|k| *k != current) {
            if publish(&parts, &known, &token).await.is_none() {
                return;
            }
            signer.send_replace(Arc::new(Signer::new(
                parts.config.policy.clone(),
                known.ca.clone(),
            )));
            info!(subject = known.ca.subject(), "signing with the new CA");
            current = known;
        }
        tokio::select! {
            changed = view_rx.changed() => if changed.is_err() { return },
            _ = resync.tick() => {
                if let Some(tb) = &parts.trust_bundle {
                    match tb.sync(current.ca.trust_bundle_pem(), parts.config.policy.max_leaf_lifetime()).await {
                        Ok(Synced::Unchanged) => {}
                        Ok(done) => info!(name = %tb.name, ?done, "repaired the trust bundle"),
                        Err(e) => warn!(name = %tb.name, error = %e, "checking the trust bundle failed; will retry"),
                    }
                }
            }
            _ = token.cancelled() => return,
        }
    }
}

/// Reports ready once the request cache has synced.
async fn report_ready(cache: Store<Pcr>, health: Arc<Health>, token: CancellationToken) {
    // kube-runtime's readiness signal wakes only the last task that polled it, and the
    // controller's own runner waits on it too: so poll again now and then (the value is
    // memoised once anyone has seen it).
    while !token.is_cancelled() {
        match tokio::time::timeout(Duration::from_millis(100), cache.wait_until_ready()).await {
            Ok(Ok(())) => {
                info!("PodCertificateRequest watch synced; ready");
                health.set_ready(true);
                return;
            }
            Ok(Err(_)) => return,
            Err(_) => {}
        }
    }
}
