//! podcert-signer: the controller that signs Kubernetes PodCertificateRequests.
//!
//! All PKI decisions live in `signer-core`; this crate does the Kubernetes I/O, in wings:
//! [`cli`] turns flags into a validated [`config::Config`]; [`cluster`] connects and
//! discovers the served API versions; [`runtime`] holds what every part shares (supervised
//! tasks, the one retry, the admin server, the metrics registry, logs, the certificate clock,
//! Events); [`ca`] is the CA's whole life (every replica follows it, the leader's steward
//! settles, publishes and renews it); [`leadership`] elects a leader and runs one term at a
//! time while elected; [`requests`] is one request's way from the watch to its status;
//! [`federation`] serves our bundle and imports others'; [`identity_policy`] follows the
//! policy file. [`run`] wires them: it registers every part's metrics ([`Metrics`]), then
//! supervises the process tasks — the admin server, the CA keeper, the election and the
//! leadership loop — until SIGTERM.

pub(crate) mod ca;
pub mod cli;
pub(crate) mod cluster;
pub(crate) mod config;
pub(crate) mod federation;
pub(crate) mod identity_policy;
pub(crate) mod leadership;
mod metrics;
pub(crate) mod requests;
pub(crate) mod runtime;

// What reaches outside: main.rs (`run`, `cli::Args`), the fuzz targets (the request adapter),
// the PKCS#11 bench and tests (root keys in a token), and the tests' few direct calls.
pub use ca::pkcs11::{Pin, Token, TokenConfig, TokenError};
pub use ca::{RootKeys, StoredKey, Unusable};
pub use cluster::connect;
pub use config::{ClusterConfig, ObjectName};
pub use federation::svid::secret_name as endpoint_svid_secret_name;
pub use requests::backlog::EVERY as BACKLOG_LOOK_EVERY;
pub use requests::pcr::{Pcr, PcrVersion, Unreadable, status_for, to_request};

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::ca::{CaKeeper, CaView, SecretStore, TrustBundle};
use crate::cli::Args;
use crate::cluster::{Cluster, StartError};
use crate::config::Config;
use crate::leadership::election::Elector;
use crate::metrics::Metrics;
use crate::runtime::admin::Health;
use crate::runtime::supervisor::{Ended, Lifetime, Supervisor};

/// Why the signer stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("the {0} task ended unexpectedly")]
    TaskFailed(&'static str),
}

/// Parses, validates and runs; the exit code is 2 for a bad flag, 1 for a failure.
pub async fn run(args: Args) -> ExitCode {
    if let Some(cli::Command::Status(query)) = &args.command {
        return status(&args, query).await;
    }
    let config = match args
        .config()
        .and_then(|c| runtime::telemetry::init_logging(&c.log).map(|()| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("podcert-signer: {e}");
            return ExitCode::from(2);
        }
    };
    let no_cluster_named = config.cluster.kubeconfig.is_none() && config.cluster.context.is_none();
    match run_with(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "podcert-signer stopped");
            eprintln!("podcert-signer: {e}");
            if matches!(e, Error::Start(StartError::Client(_))) && no_cluster_named {
                eprintln!(
                    "podcert-signer: no cluster is configured here; `scripts/demo` shows the signer at work against an in-process API server"
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// `podcert-signer status`: prints the report; 1 if the cluster cannot be read.
async fn status(args: &Args, query: &cli::status::Query) -> ExitCode {
    let config = match args.config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("podcert-signer: {e}");
            return ExitCode::from(2);
        }
    };
    match cli::status::report(&config, query).await {
        Ok(report) => {
            print!("{}", report.render());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("podcert-signer status: {e}");
            ExitCode::FAILURE
        }
    }
}

fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down"),
        }
        t.cancel();
    });
    token
}

async fn run_with(config: Config) -> Result<(), Error> {
    let shutdown = shutdown_on_signal();
    // The token first: a wrong module, label or PIN stops the process before it touches
    // the cluster.
    // The token holds the root keys, or — with an upstream authority, when there is no root
    // of ours — the signing intermediates' keys, under a label of their own.
    let (root_keys, intermediate_keys) = match (&config.ca.pkcs11, &config.ca.upstream) {
        (None, _) => (RootKeys::Secret, None),
        (Some(token), None) => (
            RootKeys::Token(Token::open(token.clone()).map_err(StartError::Token)?),
            None,
        ),
        (Some(token), Some(_)) => {
            let intermediates = crate::config::TokenConfig {
                key_label: format!("{}.intermediate", token.key_label),
                ..token.clone()
            };
            let token = Token::open(intermediates).map_err(StartError::Token)?;
            (RootKeys::Secret, Some(token))
        }
    };
    let client = cluster::connect(&config.cluster).await?;
    let cluster = Cluster::discover(client.clone(), &shutdown).await?;
    let metrics = Metrics::register();
    // A loop that has not made progress for three lease durations is stuck, not idle.
    let health = Arc::new(Health::new(
        (config.lease.duration * 3).max(Duration::from_secs(30)),
    ));
    let admin = runtime::admin::bind(config.admin_addr)
        .await
        .map_err(StartError::Admin)?;
    let secure_metrics = match &config.secure_metrics {
        None => None,
        Some(m) => Some((
            runtime::secure_metrics::bind(m.addr)
                .await
                .map_err(StartError::SecureMetrics)?,
            m.tls.clone(),
        )),
    };
    if config.federation.is_some() && cluster.ctb.is_none() {
        return Err(StartError::FederationWithoutCtb.into());
    }
    let bundle_endpoint = match &config.bundle_endpoint {
        None => None,
        Some(e) => {
            if cluster.ctb.is_none() {
                return Err(StartError::BundleEndpointWithoutCtb.into());
            }
            let listener = federation::endpoint::bind(e)
                .await
                .map_err(StartError::BundleEndpoint)?;
            Some((listener, e.clone()))
        }
    };

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "podcert-signer".into(),
            instance: Some(config.lease.identity.clone()),
        },
    );
    let ca_secret = SecretStore::new(client.clone(), config.ca.secret.clone(), root_keys);
    let trust_bundle = cluster.ctb.as_ref().map(|ar| {
        TrustBundle::new(
            client.clone(),
            ar.clone(),
            config.ca.trust_bundle_name.clone(),
            config.signer_name.clone(),
            config.policy.trust_domain().as_str(),
            config.ca.lifecycle.retain_retired_roots,
            config.clock,
        )
        .reporting_refusals(ca::Refusals {
            recorder: recorder.clone(),
            regarding: ca_secret.object_ref(),
            metrics: metrics.ca.clone(),
        })
    });
    let trust_domain = config.policy.trust_domain().clone();
    let keeper = CaKeeper::new(
        ca_secret.clone(),
        trust_bundle.clone(),
        recorder.clone(),
        metrics.ca.clone(),
    );
    let ca_view = keeper.subscribe();
    let elector = Elector::new(client.clone(), config.lease.clone());
    let identity_file = config.identity_policy.clone();
    let identity = identity_file
        .as_ref()
        .map(|file| watch::channel(file.initial.clone()));
    let authority = match &config.ca.upstream {
        None => ca::authority::Authority::Own(Arc::new(ca::steward::Steward {
            store: ca_secret,
            trust_bundle: trust_bundle.clone(),
            view: ca_view.clone(),
            ca: config.ca.clone(),
            policy: config.policy.clone(),
            clock: config.clock,
            recorder: recorder.clone(),
            metrics: metrics.ca.clone(),
        })),
        Some(upstream) => {
            ca::authority::Authority::Upstream(Arc::new(ca::upstream::UpstreamSteward {
                upstream: ca::upstream::Upstream::new(
                    client.clone(),
                    &upstream.authority,
                    &config.lease.identity,
                    config.ca.lifecycle.intermediate_validity,
                    config.clock,
                )
                .map_err(StartError::UpstreamTls)?,
                trust_anchors: upstream.trust_anchors.clone(),
                trust_bundle: trust_bundle.clone(),
                token: intermediate_keys,
                ca: config.ca.clone(),
                policy: config.policy.clone(),
                clock: config.clock,
                recorder: recorder.clone(),
                metrics: metrics.ca.clone(),
                ready: watch::Sender::new(None),
            }))
        }
    };
    let term_parts = Arc::new(leadership::term::Parts {
        cluster,
        config,
        metrics: leadership::term::TermMetrics {
            requests: metrics.requests.clone(),
            federation: metrics.federation.clone(),
            tasks: metrics.tasks.clone(),
            leader: metrics.leader.clone(),
        },
        health: health.clone(),
        authority: authority.clone(),
        recorder,
        identity: identity.as_ref().map(|(_, rx)| rx.clone()),
    });

    let mut tasks = Supervisor::new("process", shutdown.clone(), metrics.tasks.clone());
    tasks.spawn(
        "admin",
        Lifetime::UntilCancelled,
        runtime::admin::serve(
            admin,
            health.clone(),
            secure_metrics.is_none().then(|| metrics.exposition.clone()),
            shutdown.clone(),
        ),
    );
    if let Some((listener, tls)) = secure_metrics {
        tasks.spawn(
            "secure-metrics",
            Lifetime::UntilCancelled,
            runtime::secure_metrics::serve(
                listener,
                tls,
                Arc::new(runtime::secure_metrics::Reviewer::new(client.clone())),
                metrics.exposition.clone(),
                shutdown.clone(),
            ),
        );
    }
    if let (Some((listener, endpoint)), Some(bundle)) = (bundle_endpoint, trust_bundle) {
        tasks.spawn(
            "bundle-endpoint",
            Lifetime::UntilCancelled,
            federation::endpoint::serve(
                listener,
                endpoint,
                bundle,
                trust_domain,
                client.clone(),
                shutdown.clone(),
            ),
        );
    }
    if let (Some(file), Some((tx, _))) = (identity_file, identity) {
        tasks.spawn(
            "identity-policy",
            Lifetime::UntilCancelled,
            identity_policy::follow(file, tx, metrics.policy.clone(), shutdown.clone()),
        );
    }
    // A replica campaigns for the Lease only while it could sign: with our own root, while
    // it holds the CA or may create it (the keeper follows the CA Secret); with an upstream
    // authority, once it holds a certified intermediate (its keeper asks the upstream).
    let leading = Leading {
        elector,
        health,
        term_parts,
        shutdown: shutdown.clone(),
    };
    match authority {
        ca::authority::Authority::Own(_) => {
            tasks.spawn(
                "ca-keeper",
                Lifetime::UntilCancelled,
                keeper.run(shutdown.clone()),
            );
            leading.spawn(&mut tasks, ca_view, CaView::can_sign);
        }
        ca::authority::Authority::Upstream(steward) => {
            drop(keeper);
            let ready = steward.ready.subscribe();
            tasks.spawn(
                "upstream-keeper",
                Lifetime::UntilCancelled,
                steward.run_keeper(shutdown.clone()),
            );
            leading.spawn(&mut tasks, ready, ca::upstream::Certified::held);
        }
    }
    match tasks.watch(leadership::term::GRACE * 2).await {
        Ended::Cancelled => {
            info!("stopped");
            Ok(())
        }
        Ended::TaskFailed { task, .. } => Err(Error::TaskFailed(task)),
    }
}

/// The election and the leadership loop, and what they share.
struct Leading {
    elector: Elector,
    health: Arc<Health>,
    term_parts: Arc<leadership::term::Parts>,
    shutdown: CancellationToken,
}

impl Leading {
    /// Spawns both, campaigning while `may_lead` holds for what `eligibility` says.
    fn spawn<V: Send + Sync + 'static>(
        self,
        tasks: &mut Supervisor,
        eligibility: watch::Receiver<V>,
        may_lead: fn(&V) -> bool,
    ) {
        let Leading {
            elector,
            health,
            term_parts,
            shutdown,
        } = self;
        let (leader_tx, leader_rx) = watch::channel(false);
        tasks.spawn(
            "election",
            Lifetime::UntilCancelled,
            elector.run(
                leader_tx,
                eligibility.clone(),
                may_lead,
                health.clone(),
                shutdown.clone(),
            ),
        );
        tasks.spawn(
            "leadership",
            Lifetime::UntilCancelled,
            leadership::standby::lead_while_elected(
                leader_rx,
                eligibility,
                may_lead,
                health,
                shutdown,
                move |token| leadership::term::run(term_parts.clone(), token),
            ),
        );
    }
}
