//! One leadership term: the CA to sign with, its roots published, then the controller — all
//! as supervised tasks that end together.
//!
//! [`run`] first settles the CA: the root this process holds, or — on a fresh install only —
//! a new one it generates and stores create-only (see [`crate::ca`]). It publishes the roots
//! in the trust bundle before anything is signed under them, makes the term's own signing
//! intermediate in memory ([`SigningCa`]), then runs four tasks: `ca` (renew the
//! intermediate half-way through its life; follow the [`CaView`]: publish new roots and then
//! sign under them, put a missing Secret back from memory; take the root rotation's steps
//! ([`crate::ca::rotation`]); repair trust-bundle drift), `readiness` (report ready once the
//! request cache has synced), `pending` (count the requests waiting and warn on those waiting
//! too long, [`crate::requests::backlog`]) and `controller` (kube-runtime's `Controller` driving
//! [`crate::requests::reconcile`]). The term ends when its token is cancelled (leadership lost, or
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
use signer_core::Signer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::ca::rotation;
use crate::ca::{
    CaView, Created, LoadedCa, Root, Rotator, SecretState, SecretStore, SigningCa, Step, Synced,
    TrustBundle,
};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::requests::pcr::Pcr;
use crate::requests::reconcile::{self, Context};
use crate::runtime::admin::{Health, Loop};
use crate::runtime::metrics::{Metrics, RoleLabels};
use crate::runtime::retry::{self, Failures};
use crate::runtime::supervisor::{Ended, Lifetime, Supervisor};

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
    /// The identity policy in use, when `--identity-policy` is set.
    pub identity: Option<watch::Receiver<Arc<signer_core::IdentityPolicy>>>,
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
    // Only a leader has a signing intermediate.
    parts.metrics.ca_not_after.remove(&RoleLabels::INTERMEDIATE);
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
    let signing = match signing_ca(parts, &ca.active) {
        Ok(signing) => signing,
        Err(e) => {
            error!(error = %e, "cannot make a signing CA under the root");
            return stopped_or(TermEnd::CannotSign);
        }
    };
    let (signer_tx, signer_rx) = watch::channel(Arc::new(Signer::new(
        parts.config.policy.clone(),
        signing.ca.clone(),
    )));

    let Parts {
        cluster, config, ..
    } = parts.as_ref();
    let api = Api::<Pcr>::all_with(cluster.client.clone(), &cluster.pcr);
    let (cache, waiting) = crate::requests::cache::watch(api, &cluster.pcr, &config.signer_name);
    let (nudge, nudged) = futures::channel::mpsc::unbounded();
    let controller = Controller::for_stream_with(waiting, cache.clone(), cluster.pcr.clone())
        .reconcile_on(nudged)
        .with_config(ControllerConfig::default().concurrency(config.concurrency));
    let context = Arc::new(Context {
        client: cluster.client.clone(),
        pcr_resource: cluster.pcr.clone(),
        signer_name: config.signer_name.clone(),
        signer: signer_rx.clone(),
        metrics: parts.metrics.clone(),
        recorder: parts.recorder.clone(),
        failures: Failures::default(),
        cache: cache.clone(),
        clock: parts.config.clock,
        identity: parts.identity.clone(),
        lookups: crate::requests::lookups::Lookups::new(
            cluster.client.clone(),
            config.cluster_domain.clone(),
            token.clone(),
        ),
        parked: Default::default(),
        nudge,
    });

    let mut tasks = Supervisor::new("term", token.clone(), parts.metrics.clone())
        .with_heartbeat(parts.health.clone(), Loop::Leadership);
    tasks.spawn(
        "ca",
        Lifetime::UntilCancelled,
        keep_ca(parts.clone(), ca, signing, signer_tx, token.clone()),
    );
    tasks.spawn(
        "readiness",
        Lifetime::OneShot,
        report_ready(cache, parts.health.clone(), token.clone()),
    );
    tasks.spawn(
        "pending",
        Lifetime::UntilCancelled,
        crate::requests::backlog::watch(
            context.clone(),
            config.pending_warning_after,
            token.clone(),
        ),
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
    if let Some(crate::config::EndpointTls::Svid { secret, identity }) =
        config.bundle_endpoint.as_ref().map(|e| &e.tls)
    {
        tasks.spawn(
            "endpoint-svid",
            Lifetime::UntilCancelled,
            crate::federation::svid::keep(
                Api::namespaced(cluster.client.clone(), &secret.namespace),
                secret.clone(),
                identity.clone(),
                signer_rx.clone(),
                config.clock,
                token.clone(),
            ),
        );
    }
    if let (Some(file), Some(ctb)) = (&config.federation, &cluster.ctb) {
        let importer = Arc::new(crate::federation::import::Importer {
            published: crate::federation::import::Published::new(
                cluster.client.clone(),
                ctb.clone(),
                config.signer_name.clone(),
            ),
            recorder: parts.recorder.clone(),
            metrics: parts.metrics.clone(),
            clock: config.clock,
        });
        tasks.spawn(
            "federation",
            Lifetime::UntilCancelled,
            crate::federation::import::run(importer, file.peers.clone(), token.clone()),
        );
    }
    match tasks.watch(GRACE).await {
        Ended::Cancelled => TermEnd::Stopped,
        failed => TermEnd::Failed(failed),
    }
}

/// The CA this term signs under: the one this process holds, or a new root on a fresh
/// install. None if the term ended first or this process cannot sign.
async fn settle_ca(parts: &Parts, token: &CancellationToken) -> Option<LoadedCa> {
    let mut view_rx = parts.ca_view.clone();
    let ca = &parts.config.ca;
    let keys = &parts.ca_secret.keys;
    // Set once another replica's CA was stored first: nothing more is made, its CA comes
    // through the view. The root this process made, if its key is new, is then discarded.
    let mut raced = false;
    let mut unstored: Option<Root> = None;
    loop {
        let view = view_rx.borrow_and_update().clone();
        if let Some(known) = view.known {
            if let Some(lost) = unstored.take() {
                let in_use = known.active.key == lost.key
                    || known.next.as_ref().is_some_and(|n| n.root.key == lost.key);
                if !in_use {
                    keys.discard(&lost);
                }
            }
            return Some(known);
        }
        if view.fresh_install() && !raced {
            let first = keys.first_root(
                &ca.profile,
                ca.lifecycle.root_validity,
                parts.config.clock.now(),
            );
            let first = match first {
                Ok(first) => first,
                Err(e) => {
                    error!(error = %e, "making the first root CA failed");
                    return None;
                }
            };
            let generated = LoadedCa::generated(first.root);
            match retry::retry("creating the CA Secret", token, || {
                parts.ca_secret.create(&generated)
            })
            .await?
            {
                Created::Created => {
                    let subject = generated.active.ca.subject();
                    if first.new_key {
                        info!(secret = %parts.ca_secret.name, subject, "generated a new root CA and stored it");
                    } else {
                        info!(secret = %parts.ca_secret.name, subject, "made a root CA for the key found in the token and stored it");
                    }
                    return Some(generated);
                }
                // Another replica created it first: its CA arrives through the view.
                Created::AlreadyExists => {
                    raced = true;
                    if first.new_key {
                        unstored = Some(generated.active);
                    }
                    info!(secret = %parts.ca_secret.name, "another replica created the CA first; waiting for it")
                }
            }
        } else if view.secret.is_some() && !(raced && view.fresh_install()) {
            // The Secret is unusable, so this process cannot sign. (After a lost race, the
            // winner's Secret, not yet seen, is waited for instead.)
            return None;
        }
        tokio::select! {
            changed = view_rx.changed() => changed.ok()?,
            _ = token.cancelled() => return None,
        }
    }
}

/// The signing CA under `root` (an intermediate made now, or the root itself), counted and
/// reported.
fn signing_ca(parts: &Parts, root: &Root) -> Result<SigningCa, signer_core::CaError> {
    let ca = &parts.config.ca;
    let signing = SigningCa::new(
        root,
        &ca.profile,
        ca.lifecycle.intermediate_validity,
        parts.config.policy.max_leaf_lifetime(),
        parts.config.clock.now(),
    )?;
    if signing.is_intermediate() {
        let unix = signing.ca.not_after_unix();
        parts
            .metrics
            .ca_not_after
            .get_or_create(&RoleLabels::INTERMEDIATE)
            .set(unix);
        parts
            .metrics
            .ca_rotations
            .get_or_create(&RoleLabels::INTERMEDIATE)
            .inc();
        info!(root = root.ca.subject(), not_after = %humantime::format_rfc3339_seconds(signing.ca.not_after()), "made a new signing intermediate");
    } else {
        warn!(
            root = root.ca.subject(),
            "the root CA's path-length constraint leaves no room for a signing intermediate; it signs leaves itself"
        );
    }
    Ok(signing)
}

/// Publishes the roots of `ca` (keeping retired ones), retrying until done; None if the
/// term ended first. Without a ClusterTrustBundle API there is nothing to publish.
async fn publish(parts: &Parts, ca: &LoadedCa, token: &CancellationToken) -> Option<()> {
    let Some(tb) = &parts.trust_bundle else {
        return Some(());
    };
    let done = retry::retry(
        "publishing the trust bundle (not signing under these roots until it is published)",
        token,
        || tb.sync(ca),
    )
    .await?;
    if done != Synced::Unchanged {
        info!(name = %tb.name, ?done, "published the trust bundle");
    }
    Some(())
}

/// How long to wait after a rotation step failed before planning it again.
const STEP_RETRY: Duration = Duration::from_secs(5);

/// For the rest of the term: renew the signing intermediate, act on the CA view (publish a
/// changed set of roots before signing under it, put a missing Secret back), take the root
/// rotation's next step when it is due, and repair trust-bundle drift.
async fn keep_ca(
    parts: Arc<Parts>,
    mut current: LoadedCa,
    mut signing: SigningCa,
    signer: watch::Sender<Arc<Signer>>,
    token: CancellationToken,
) {
    let clock = parts.config.clock;
    let lifecycle = parts.config.ca.lifecycle;
    let rotator = Rotator {
        store: parts.ca_secret.clone(),
        trust_bundle: parts.trust_bundle.clone(),
        profile: parts.config.ca.profile.clone(),
        lifecycle,
        clock,
        recorder: parts.recorder.clone(),
        metrics: parts.metrics.clone(),
    };
    let sign_with = |signing: &SigningCa| {
        signer.send_replace(Arc::new(Signer::new(
            parts.config.policy.clone(),
            signing.ca.clone(),
        )));
    };
    let mut view_rx = parts.ca_view.clone();
    let mut resync = tokio::time::interval(parts.config.ca.trust_bundle_resync);
    resync.tick().await;
    loop {
        let view = view_rx.borrow_and_update().clone();
        if let Some(known) = view.needs_restore() {
            warn!(secret = %parts.ca_secret.name, "the CA Secret is missing; recreating it from the CA in memory");
            match retry::retry("recreating the CA Secret", &token, || {
                parts.ca_secret.create(known)
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
        if let Some(known) = view.known.as_ref().filter(|k| **k != current) {
            if publish(&parts, known, &token).await.is_none() {
                return;
            }
            if known.active != current.active {
                match signing_ca(&parts, &known.active) {
                    Ok(new) => {
                        sign_with(&new);
                        info!(
                            root = known.active.ca.subject(),
                            "signing under the new root"
                        );
                        signing = new;
                    }
                    Err(e) => {
                        error!(error = %e, "cannot sign under the new root; still signing under the old one")
                    }
                }
            }
            current = known.clone();
        }
        // When to look again: the earliest of the intermediate's renewal, the rotation's next
        // step, and a retry of whatever just failed.
        let mut wake = signing.renew_at;
        let retry_at = || Some(clock.now() + clock.scaled_duration(STEP_RETRY));
        if signing.due(clock.now()) {
            match signing_ca(&parts, &current.active) {
                Ok(new) => {
                    sign_with(&new);
                    signing = new;
                    wake = signing.renew_at;
                }
                Err(e) => {
                    error!(error = %e, "making a new signing intermediate failed; will retry");
                    wake = retry_at();
                }
            }
        }
        // The rotation acts only on the Secret as this term holds it, at its resourceVersion.
        if let Some(SecretState::Usable(stored)) = &view.secret
            && *stored == current
        {
            let next_look =
                match rotation::plan(stored, &lifecycle, &rotator.store.keys, clock.unix_now()) {
                    Step::Wait(at) => at.map(signer_core::time::from_unix_seconds),
                    step => match rotator.perform(step, stored).await {
                        // The watch brings what the write did.
                        Ok(_) => None,
                        Err(e) => {
                            warn!(?step, error = %e, "a root rotation step failed; will retry");
                            retry_at()
                        }
                    },
                };
            wake = wake.into_iter().chain(next_look).min();
        }
        let sleep = async {
            match wake {
                Some(t) => crate::runtime::clock::sleep_until(&clock, t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = view_rx.changed() => if changed.is_err() { return },
            _ = sleep => {}
            _ = resync.tick() => {
                if let Some(tb) = &parts.trust_bundle {
                    match tb.sync(&current).await {
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
