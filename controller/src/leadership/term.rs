//! One leadership term: the CA to sign with, its roots published, then the controller — all
//! as supervised tasks that end together.
//!
//! [`run`] asks the CA's [`Authority`] to begin (settle the CA, publish its roots, make or
//! have certified the term's signing intermediate; see [`crate::ca::steward`] and
//! [`crate::ca::upstream`]), then runs the term's tasks: `ca`
//! (the steward keeping the CA for the rest of the term), `readiness` (report ready once the
//! request cache has synced), `pending` (the backlog report and its safety net,
//! [`crate::requests::backlog`]) and `controller` ([`crate::requests::runner`] running
//! [`crate::requests::reconcile`] for each waiting request), and with federation the
//! endpoint's SVID and the imports. The term ends when its token is cancelled (leadership
//! lost, or shutdown) or when a task fails; either way every task stops within [`GRACE`], so
//! a term can never outlive its leadership.

use std::sync::Arc;
use std::time::Duration;

use kube::Api;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::ca::authority::Authority;
use crate::ca::steward::NotBegun;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::federation::metrics::FederationMetrics;
use crate::leadership::LeaderGauge;
use crate::requests::metrics::RequestMetrics;
use crate::requests::pcr::Pcr;
use crate::requests::reconcile::Context;
use crate::runtime::admin::{Health, Loop};
use crate::runtime::metrics::Tasks;
use crate::runtime::retry::Failures;
use crate::runtime::supervisor::{Ended, Lifetime, Supervisor};

/// How long a term's tasks get to stop once the term ends, before they are aborted.
pub const GRACE: Duration = Duration::from_secs(5);

/// Everything a term needs; built once per process.
pub struct Parts {
    pub cluster: Cluster,
    pub config: Config,
    /// What a term records: its requests, its federation imports, its tasks, that it leads.
    pub metrics: TermMetrics,
    pub health: Arc<Health>,
    /// The leader's part of the CA's life: our own root's steward, or the upstream's.
    pub authority: Authority,
    pub recorder: Recorder,
    /// The identity policy in use, when `--identity-policy` is set.
    pub identity: Option<watch::Receiver<Arc<signer_core::IdentityPolicy>>>,
}

/// The metrics a term records into.
#[derive(Debug, Clone)]
pub struct TermMetrics {
    pub requests: RequestMetrics,
    pub federation: FederationMetrics,
    pub tasks: Tasks,
    pub leader: LeaderGauge,
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
    parts.metrics.leader.set(true);
    let end = run_term(&parts, &token).await;
    token.cancel();
    parts.metrics.leader.set(false);
    parts.authority.end_term();
    end
}

async fn run_term(parts: &Arc<Parts>, token: &CancellationToken) -> TermEnd {
    let begun = match parts.authority.begin(token).await {
        Ok(begun) => begun,
        Err(NotBegun::Stopped) => return TermEnd::Stopped,
        Err(NotBegun::CannotSign) => return TermEnd::CannotSign,
    };
    let (signer_tx, signer_rx) = watch::channel(parts.authority.signer(begun.signing()));

    let Parts {
        cluster, config, ..
    } = parts.as_ref();
    let api = Api::<Pcr>::all_with(cluster.client.clone(), &cluster.pcr_version);
    let (cache, applied) =
        crate::requests::cache::watch(api, cluster.pcr_version, &config.signer_name);
    let (nudge, nudged) = futures::channel::mpsc::unbounded();
    let context = Arc::new(Context {
        client: cluster.client.clone(),
        pcr_version: cluster.pcr_version,
        signer_name: config.signer_name.clone(),
        signer: signer_rx.clone(),
        metrics: parts.metrics.requests.clone(),
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

    let mut tasks = Supervisor::new("term", token.clone(), parts.metrics.tasks.clone())
        .with_heartbeat(parts.health.clone(), Loop::Leadership);
    tasks.spawn(
        "ca",
        Lifetime::UntilCancelled,
        begun.keep(signer_tx, token.clone()),
    );
    tasks.spawn(
        "readiness",
        Lifetime::OneShot,
        report_ready(cache.clone(), parts.health.clone(), token.clone()),
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
        crate::requests::runner::run(
            applied,
            nudged,
            cache,
            cluster.pcr_version,
            config.concurrency,
            context,
            token.clone(),
        ),
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
                config.policy.trust_domain().to_string(),
            ),
            recorder: parts.recorder.clone(),
            metrics: parts.metrics.federation.clone(),
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

/// Reports ready once the request cache has synced.
async fn report_ready(cache: Store<Pcr>, health: Arc<Health>, token: CancellationToken) {
    // The one task that waits on the cache's readiness: kube-runtime's signal wakes only the
    // last of several waiters (the runner follows the list on its own event stream instead).
    if let Some(Ok(())) = token.run_until_cancelled(cache.wait_until_ready()).await {
        info!("PodCertificateRequest watch synced; ready");
        health.set_ready(true);
    }
}
