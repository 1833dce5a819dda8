//! podcert-signer: the controller that signs Kubernetes PodCertificateRequests.
//!
//! All PKI decisions live in `signer-core`; this crate does the Kubernetes I/O and wires it:
//! [`cli`] (flags → validated config), [`pcr`] (every served PCR version ↔ signer-core),
//! [`reconcile`] (decide and write status), [`ca_store`] (the CA Secret), [`trust_bundle`]
//! (the ClusterTrustBundle), [`leader`] (Lease election), [`admin`] and [`metrics`]
//! (operations). [`run`] starts it all: discover the served API versions, serve the admin
//! port, and for each term as leader: load or create the CA, publish the trust bundle, and
//! run the kube-runtime `Controller` — until SIGTERM.

pub mod admin;
pub mod ca_store;
pub mod cli;
pub mod leader;
pub mod metrics;
pub mod pcr;
pub mod reconcile;
pub mod trust_bundle;

use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};
use signer_core::policy::{ConfigError, unix_seconds};
use signer_core::{Ca, Signer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::admin::Health;
use crate::ca_store::{CaSecretData, CaStore, CaStoreError};
use crate::cli::{Args, Config, LogFormat};
use crate::leader::Elector;
use crate::metrics::Metrics;
use crate::pcr::{CTB_VERSIONS, PCR_VERSIONS, Pcr};
use crate::reconcile::{Context, error_policy, reconcile};
use crate::trust_bundle::{Synced, TrustBundle};

/// Why the signer stopped other than by a signal.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build a Kubernetes client: {0}")]
    Client(String),
    #[error("API discovery failed: {0}")]
    Discovery(#[source] kube::Error),
    #[error(
        "the cluster serves no PodCertificateRequest API (certificates.k8s.io v1, v1beta1 or v1alpha1). \
         On Kubernetes 1.35/1.36 enable the feature gate PodCertificateRequest=true (kube-apiserver, \
         kubelet, kube-controller-manager) and --runtime-config=certificates.k8s.io/v1beta1/podcertificaterequests=true \
         on kube-apiserver; on 1.34 use certificates.k8s.io/v1alpha1; from 1.37 it is served by default"
    )]
    PcrNotServed,
    #[error("cannot listen on the admin address: {0}")]
    Admin(#[source] std::io::Error),
    #[error(transparent)]
    Ca(#[from] CaStoreError),
}

/// Parses, validates and runs; the exit code is 2 for a bad flag, 1 for a failure.
pub async fn run(args: Args) -> ExitCode {
    let config = match args
        .config()
        .and_then(|c| init_logging(&args.log_level, args.log_format).map(|()| c))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("podcert-signer: {e}");
            return ExitCode::from(2);
        }
    };
    match run_with(config, &args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!(error = %e, "podcert-signer stopped");
            eprintln!("podcert-signer: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str, format: LogFormat) -> Result<(), ConfigError> {
    let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| ConfigError {
        setting: "log-level",
        message: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    // Already initialised (tests running several instances) is fine.
    drop(result);
    Ok(())
}

async fn kube_client(args: &Args) -> Result<Client, StartError> {
    let client_err = |e: &dyn std::fmt::Display| StartError::Client(e.to_string());
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..Default::default()
    };
    let config = match &args.kubeconfig {
        Some(paths) => {
            // KUBECONFIG may list several files, as kubectl allows.
            let mut merged: Option<Kubeconfig> = None;
            for path in std::env::split_paths(paths) {
                let kc = Kubeconfig::read_from(&path).map_err(|e| {
                    StartError::Client(format!("--kubeconfig {}: {e}", path.display()))
                })?;
                merged = Some(match merged {
                    None => kc,
                    Some(m) => m.merge(kc).map_err(|e| client_err(&e))?,
                });
            }
            let kc = merged.ok_or_else(|| StartError::Client("--kubeconfig is empty".into()))?;
            kube::Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| client_err(&e))?
        }
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| client_err(&e))?,
        None => kube::Config::infer().await.map_err(|e| client_err(&e))?,
    };
    Client::try_from(config).map_err(|e| client_err(&e))
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

async fn run_with(config: Config, args: &Args) -> Result<(), StartError> {
    let client = kube_client(args).await?;
    let pcr_resource = pcr::discover(&client, "podcertificaterequests", &PCR_VERSIONS)
        .await
        .map_err(StartError::Discovery)?
        .ok_or(StartError::PcrNotServed)?;
    info!(api_version = %pcr_resource.api_version, signer_name = %config.signer_name, "watching PodCertificateRequests");
    let ctb_resource = pcr::discover(&client, "clustertrustbundles", &CTB_VERSIONS)
        .await
        .map_err(StartError::Discovery)?;
    match &ctb_resource {
        Some(ar) => {
            info!(api_version = %ar.api_version, name = %config.trust_bundle_name, "publishing the trust bundle")
        }
        None => warn!(
            "the cluster serves no ClusterTrustBundle API: the trust bundle is not published (enable the ClusterTrustBundle \
             feature gate and certificates.k8s.io/v1beta1/clustertrustbundles runtime config); signing goes on"
        ),
    }

    let shutdown = shutdown_on_signal();
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    admin::bind(
        config.admin_addr,
        health.clone(),
        metrics.clone(),
        shutdown.clone(),
    )
    .await
    .map_err(StartError::Admin)?;

    // Leader election runs for the whole process; a standby is ready (it is doing its job)
    // but signs nothing. Each time this replica leads, it runs one term.
    let (leader_tx, mut leader_rx) = watch::channel(false);
    let elector = tokio::spawn(
        Elector::new(client.clone(), config.lease.clone()).run(leader_tx, shutdown.clone()),
    );
    let parts = Parts {
        client,
        config,
        pcr_resource,
        ctb_resource,
        metrics,
        health,
        known_ca: Arc::default(),
    };
    loop {
        parts.health.set_ready(true);
        info!(identity = %parts.config.lease.identity, lease = %parts.config.lease.name, "standing by for the leader Lease");
        while !*leader_rx.borrow_and_update() {
            tokio::select! {
                changed = leader_rx.changed() => if changed.is_err() { return Ok(()); },
                _ = shutdown.cancelled() => { let _ = elector.await; return Ok(()); }
            }
        }
        let term = shutdown.child_token();
        let result = lead(&parts, leader_rx.clone(), term.clone()).await;
        term.cancel();
        parts.metrics.leader.set(0);
        result?;
        if shutdown.is_cancelled() {
            // The elector releases the Lease on its way out.
            let _ = elector.await;
            info!("stopped");
            return Ok(());
        }
        warn!("no longer the leader; stopped signing");
    }
}

/// What every leadership term needs.
struct Parts {
    client: Client,
    config: Config,
    pcr_resource: kube::core::ApiResource,
    ctb_resource: Option<kube::core::ApiResource>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    /// The CA Secret's contents as last seen by this process, kept across terms so that a
    /// term finding the Secret deleted puts this CA back instead of generating a new one.
    known_ca: Arc<std::sync::Mutex<Option<CaSecretData>>>,
}

/// One leadership term: load (or create) the CA, follow it, publish the trust bundle, and run
/// the controller until `term` is cancelled or leadership ends.
async fn lead(
    parts: &Parts,
    mut leader_rx: watch::Receiver<bool>,
    term: CancellationToken,
) -> Result<(), StartError> {
    let Parts {
        client,
        config,
        pcr_resource,
        ctb_resource,
        metrics,
        health,
        known_ca,
    } = parts;
    health.set_ready(false);
    metrics.leader.set(1);

    // The CA: loaded or created once; any later change is followed.
    let store = CaStore::new(client.clone(), config.ca_secret.clone());
    let remembered = known_ca.lock().expect("known CA lock").clone();
    let (data, ca) = store
        .load_or_create(
            config.ca_key_type,
            config.policy.trust_domain(),
            config.ca_validity,
            remembered.as_ref(),
        )
        .await?;
    *known_ca.lock().expect("known CA lock") = Some(data.clone());
    let policy = Arc::new(config.policy.clone());
    metrics.ca_not_after.set(unix_seconds(ca.not_after()));
    // The trust bundle is published before anything is signed with a CA: first now, then
    // at every rotation (the new CA is used only once its root is published).
    let trust_bundle = ctb_resource.as_ref().map(|ar| {
        TrustBundle::new(
            client.clone(),
            ar.clone(),
            config.trust_bundle_name.clone(),
            config.signer_name.clone(),
            config.policy.trust_domain().as_str(),
        )
    });
    let retain_for = config.policy.max_leaf_lifetime();
    if let Some(tb) = &trust_bundle
        && !publish_until_done(tb, ca.trust_bundle_pem(), retain_for, &term).await
    {
        return Ok(());
    }
    let roots = ca.trust_bundle_pem().to_string();
    let signer = Arc::new(RwLock::new(Some(Signer::new(policy.clone(), Arc::new(ca)))));
    let (new_cas, new_ca_rx) = tokio::sync::mpsc::unbounded_channel::<Ca>();
    {
        let (term, known_ca) = (term.clone(), known_ca.clone());
        tokio::spawn(async move {
            let follow = store.follow(data, move |data, ca: Ca| {
                *known_ca.lock().expect("known CA lock") = Some(data.clone());
                let _ = new_cas.send(ca);
            });
            tokio::select! {
                _ = follow => {}
                _ = term.cancelled() => {}
            }
        });
    }
    tokio::spawn(keep_trust_bundle_and_signer(KeepParts {
        trust_bundle,
        roots,
        new_cas: new_ca_rx,
        signer: signer.clone(),
        policy,
        metrics: metrics.clone(),
        resync: config.trust_bundle_resync,
        retain_for,
        term: term.clone(),
    }));

    // The controller, until the term ends.
    let api = Api::<Pcr>::all_with(client.clone(), pcr_resource);
    let watch_config =
        watcher::Config::default().fields(&format!("spec.signerName={}", config.signer_name));
    let controller = Controller::new_with(api, watch_config, pcr_resource.clone())
        .with_config(ControllerConfig::default().concurrency(config.concurrency));
    let cache = controller.store();
    {
        let (health, term) = (health.clone(), term.clone());
        tokio::spawn(async move {
            // kube-runtime's readiness signal wakes only the last task that polled it, and the
            // controller's own runner waits on it too: so poll again now and then (the value is
            // memoised once anyone has seen it).
            while !term.is_cancelled() {
                match tokio::time::timeout(
                    std::time::Duration::from_millis(100),
                    cache.wait_until_ready(),
                )
                .await
                {
                    Ok(Ok(())) => {
                        info!("PodCertificateRequest watch synced; ready");
                        health.set_ready(true);
                        return;
                    }
                    Ok(Err(_)) => return,
                    Err(_) => {}
                }
            }
        });
    }
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "podcert-signer".into(),
                instance: Some(config.lease.identity.clone()),
            },
        ),
        client: client.clone(),
        pcr_resource: pcr_resource.clone(),
        signer_name: config.signer_name.clone(),
        signer,
        metrics: metrics.clone(),
        failures: Default::default(),
    });
    let stop = async move {
        tokio::select! {
            _ = term.cancelled() => {}
            _ = async { while leader_rx.changed().await.is_ok() && *leader_rx.borrow() {} } => {}
        }
    };
    controller
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "controller event");
            }
        })
        .await;
    Ok(())
}

/// Publishes `roots_pem` (with retained roots), retrying with backoff until it succeeds;
/// false if the term ended first.
async fn publish_until_done(
    tb: &TrustBundle,
    roots_pem: &str,
    retain_for: std::time::Duration,
    term: &CancellationToken,
) -> bool {
    let mut attempt = 0;
    loop {
        match tb.sync(roots_pem, retain_for).await {
            Ok(Synced::Unchanged) => return true,
            Ok(done) => {
                info!(name = %tb.name, ?done, "published the trust bundle");
                return true;
            }
            Err(e) => {
                attempt += 1;
                warn!(name = %tb.name, error = %e, "publishing the trust bundle failed; not signing with this CA until it is published");
                tokio::select! {
                    _ = tokio::time::sleep(reconcile::backoff(attempt)) => {}
                    _ = term.cancelled() => return false,
                }
            }
        }
    }
}

struct KeepParts {
    trust_bundle: Option<TrustBundle>,
    roots: String,
    new_cas: tokio::sync::mpsc::UnboundedReceiver<Ca>,
    signer: Arc<RwLock<Option<Signer>>>,
    policy: Arc<signer_core::Policy>,
    metrics: Arc<Metrics>,
    resync: std::time::Duration,
    retain_for: std::time::Duration,
    term: CancellationToken,
}

/// For the rest of the term: when the CA changes, publish its roots, then sign with it; every
/// `resync`, repair drift in the published bundle.
async fn keep_trust_bundle_and_signer(mut p: KeepParts) {
    loop {
        tokio::select! {
            ca = p.new_cas.recv() => {
                let Some(ca) = ca else { return };
                if let Some(tb) = &p.trust_bundle
                    && !publish_until_done(tb, ca.trust_bundle_pem(), p.retain_for, &p.term).await
                {
                    return;
                }
                p.roots = ca.trust_bundle_pem().to_string();
                p.metrics.ca_not_after.set(unix_seconds(ca.not_after()));
                *p.signer.write().expect("signer lock") = Some(Signer::new(p.policy.clone(), Arc::new(ca)));
                info!("signing with the new CA");
            }
            _ = tokio::time::sleep(p.resync) => {
                if let Some(tb) = &p.trust_bundle {
                    match tb.sync(&p.roots, p.retain_for).await {
                        Ok(Synced::Unchanged) => {}
                        Ok(done) => info!(name = %tb.name, ?done, "repaired the trust bundle"),
                        Err(e) => warn!(name = %tb.name, error = %e, "checking the trust bundle failed; will retry"),
                    }
                }
            }
            _ = p.term.cancelled() => return,
        }
    }
}
