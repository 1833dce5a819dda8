//! The CA's life, in one place: what this process knows of the CA, how the Secret is kept,
//! and how the trust bundle follows.
//!
//! Every replica runs one [`CaKeeper`] for its whole life. It follows the CA Secret (reads
//! only) and publishes a [`CaView`]: what the Secret holds as last (re)listed, and the last
//! good CA this process has seen — kept when the Secret is deleted or turns unusable, so a
//! replica that ever held the CA can always put it back and never needs a new one. The leader
//! acts on the view in its term ([`crate::leadership::term`]): it publishes the CA's roots before signing
//! with it, recreates a missing Secret from memory, and generates a CA only on a fresh install.
//!
//! A new CA is generated only when all of these hold: the Secret is absent (after a full
//! list, not merely unseen), this process holds no CA, and the ClusterTrustBundle does not
//! publish a root of ours as current. Otherwise the CA is *lost* to this process: it reports
//! it (not ready, an Event on the Secret, `podcert_ca_loaded 0`) and does not lead, so a
//! replica that still holds the CA can take over and put it back.

pub mod authority;
pub mod metrics;
pub mod pkcs11;
pub mod root_keys;
pub mod rotation;
pub mod secret;
pub mod signing;
pub mod steward;
pub mod trust_bundle;
pub mod upstream;

use futures::StreamExt;
use kube::runtime::events::{EventType, Recorder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::ca::metrics::{CaMetrics, Role};
use crate::runtime::retry;
pub use root_keys::{Root, RootKeys, StoredKey, Unusable};
pub use secret::{Created, LoadedCa, SecretState, SecretStore};
pub use signing::SigningCa;
pub use trust_bundle::{Refusals, Roots, TrustBundle};

/// The first and the longest wait before a Secret that may mend by itself is read again.
const RE_READ_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const RE_READ_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// What this process knows of the CA.
#[derive(Debug, Clone, Default)]
pub struct CaView {
    /// What the Secret holds, as last seen; None until the first list completes.
    pub secret: Option<SecretState>,
    /// The last good CA this process has seen, from the Secret or created by it.
    pub known: Option<LoadedCa>,
    /// The Secret is absent, this process holds no CA, and the trust bundle still publishes
    /// a root of ours: generating a new CA would abandon the one in use.
    pub lost: bool,
}

impl CaView {
    /// A fresh install: the leader may generate the CA.
    pub fn fresh_install(&self) -> bool {
        self.known.is_none() && matches!(self.secret, Some(SecretState::Absent)) && !self.lost
    }

    /// Whether this process could sign if it led: it holds a CA or may create one.
    pub fn can_sign(&self) -> bool {
        self.known.is_some() || self.fresh_install()
    }

    /// The Secret is known to be missing while this process holds the CA.
    pub fn needs_restore(&self) -> Option<&LoadedCa> {
        match self.secret {
            Some(SecretState::Absent) => self.known.as_ref(),
            _ => None,
        }
    }
}

/// Follows the CA Secret for the life of the process and owns the [`CaView`].
pub struct CaKeeper {
    store: SecretStore,
    trust_bundle: Option<TrustBundle>,
    recorder: Recorder,
    metrics: CaMetrics,
    view: watch::Sender<CaView>,
}

impl std::fmt::Debug for CaKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaKeeper")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl CaKeeper {
    pub fn new(
        store: SecretStore,
        trust_bundle: Option<TrustBundle>,
        recorder: Recorder,
        metrics: CaMetrics,
    ) -> Self {
        CaKeeper {
            store,
            trust_bundle,
            recorder,
            metrics,
            view: watch::Sender::new(CaView::default()),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<CaView> {
        self.view.subscribe()
    }

    /// Follows the Secret until `shutdown`. A Secret whose root key is looked up in a token
    /// and not found (yet) is read again, at growing intervals, until it loads or changes.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut secrets = self.store.secrets().boxed();
        let mut last: Option<crate::runtime::wiped::WipedSecret> = None;
        let mut reread = RE_READ_FIRST;
        let mut reread_at: Option<tokio::time::Instant> = None;
        loop {
            let wake = async {
                match reread_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let state = tokio::select! {
                item = secrets.next() => match item {
                    Some(Ok(secret)) => {
                        last = secret;
                        reread = RE_READ_FIRST;
                        self.store.state_of(last.as_deref())
                    }
                    Some(Err(e)) => {
                        warn!(secret = %self.store.name, error = %e, "watching the CA Secret failed; retrying");
                        continue;
                    }
                    None => return,
                },
                () = wake => {
                    reread = (reread * 2).min(RE_READ_MAX);
                    self.store.state_of(last.as_deref())
                }
                _ = shutdown.cancelled() => return,
            };
            reread_at = SecretStore::may_mend(&state).then(|| tokio::time::Instant::now() + reread);
            self.observe(state, &shutdown).await;
        }
    }

    async fn observe(&self, state: SecretState, shutdown: &CancellationToken) {
        let mut view = self.view.borrow().clone();
        let before_known = view.known.clone();
        let before_problem = problem(&view);
        let secret = &self.store.name;
        match &state {
            SecretState::Usable(loaded) => {
                if view.known.as_ref() != Some(loaded) {
                    info!(%secret, subject = loaded.active.ca.subject(), next = ?loaded.next.as_ref().map(|n| n.root.ca.subject().to_owned()), "loaded the CA from its Secret");
                    view.known = Some(loaded.clone());
                }
                view.lost = false;
            }
            SecretState::Unusable(message) => match &view.known {
                Some(_) => {
                    error!(%secret, %message, "the CA Secret holds no usable CA; still signing with the last good CA")
                }
                None => {
                    error!(%secret, %message, "the CA Secret holds no usable CA and this replica holds none; not signing until it is fixed")
                }
            },
            SecretState::Absent => {
                if view.known.is_some() {
                    warn!(%secret, "the CA Secret is missing; the leader puts it back from the CA in memory");
                } else {
                    view.lost = self.bundle_publishes_a_root(shutdown).await;
                    if view.lost {
                        error!(%secret, "the CA Secret is missing, this replica never held the CA, and the trust bundle still publishes its root: not generating a new CA. Restore the Secret from a backup (a replica that still holds the CA puts it back by itself), or delete the ClusterTrustBundle as well to start over with a new CA");
                    }
                }
            }
        }
        view.secret = Some(state);
        self.metrics.holds(
            view.known.is_some(),
            matches!(view.secret, Some(SecretState::Usable(_))),
        );
        if view.known != before_known
            && let Some(k) = &view.known
        {
            self.metrics
                .not_after(Role::Root, k.active.ca.not_after_unix());
            match &k.next {
                Some(next) => self
                    .metrics
                    .not_after(Role::NextRoot, next.root.ca.not_after_unix()),
                None => self.metrics.none(Role::NextRoot),
            }
        }
        if let Some((reason, note)) = problem(&view).filter(|p| Some(p) != before_problem.as_ref())
        {
            self.report(reason, note).await;
        }
        self.view.send_replace(view);
    }

    async fn bundle_publishes_a_root(&self, shutdown: &CancellationToken) -> bool {
        let Some(tb) = &self.trust_bundle else {
            return false;
        };
        retry::retry("reading the trust bundle", shutdown, || {
            tb.publishes_a_current_root()
        })
        .await
        .unwrap_or(false)
    }

    async fn report(&self, reason: &'static str, note: String) {
        self.store
            .report(&self.recorder, EventType::Warning, "LoadCA", reason, note)
            .await;
    }
}

/// The problem a view shows, as an Event reason and note; None when all is well.
fn problem(view: &CaView) -> Option<(&'static str, String)> {
    match (&view.secret, &view.known) {
        (Some(SecretState::Unusable(m)), Some(_)) => Some((
            "CASecretUnusable",
            format!("the CA Secret holds no usable CA ({m}); still signing with the last good CA"),
        )),
        (Some(SecretState::Unusable(m)), None) => Some((
            "CASecretUnusable",
            format!("the CA Secret holds no usable CA ({m}); this replica cannot sign until it is fixed"),
        )),
        (Some(SecretState::Absent), None) if view.lost => Some((
            "CALost",
            "the CA Secret is missing and the trust bundle still publishes its root; restore the Secret, or delete the ClusterTrustBundle too to start over".into(),
        )),
        _ => None,
    }
}
